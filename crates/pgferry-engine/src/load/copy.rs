//! Copying one chunk.
//!
//! The build stage ([`crate::load::graph`]) hands chunks to workers, biggest tables first. For
//! each chunk a worker:
//!
//! 1. starts a read-only transaction on the source that imports the load's snapshot;
//! 2. starts a transaction on the target;
//! 3. pipes `COPY ... TO STDOUT` into `COPY ... FROM STDIN` (binary where safe);
//! 4. marks the chunk done in `pgferry.chunk` and commits the target transaction.
//!
//! A chunk is therefore done exactly when its rows are committed. A worker killed at any
//! point leaves an uncommitted transaction that the server rolls back, and the next run
//! copies that chunk again from the start. Lost connections and lock conflicts are retried
//! with backoff; a definite error (a type the target rejects, a missing column) fails the
//! table, the other tables go on, and the run reports it at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use pgferry_pg::copy::{
    BlockRange, ChunkRange, CopyCounters, CopyFormat, CopyOutcome, CopySpec, CopyStatements,
    copy_statements, pipe,
};
use pgferry_pg::dump::set_snapshot_sql;
use pgferry_pg::split::KeyRange;
use pgferry_pg::{ConnInfo, PgClient, PgError, QualifiedName, Side};

use crate::control;
use crate::error::{EngineError, Result};
use crate::progress::TableProgress;

/// A table as the workers see it.
#[derive(Debug)]
pub struct TableJob {
    pub table_id: i32,
    pub source: QualifiedName,
    pub target: QualifiedName,
    pub columns: Vec<String>,
    /// The target column each of `columns` goes into.
    pub target_columns: Vec<String>,
    /// The rows to copy, as a predicate over the source's columns.
    pub filter: Option<String>,
    pub format: CopyFormat,
    /// The table existed on the target before the load (and may hold rows to keep).
    pub existed_before: bool,
    /// Statistics were gathered after the load.
    pub analyzed: bool,
    /// The dump id of the table's TABLE entry, linking it to its post-data steps.
    pub dump_id: Option<i32>,
    /// The column of key-range chunks, for tables split by key.
    pub split_key: Option<pgferry_pg::split::SplitKey>,
    /// Copied again after the task's post-data objects were built (a start-over): its
    /// foreign keys exist, and a referenced table cannot be truncated alone.
    pub reload: bool,
    pub progress: Arc<TableProgress>,
}

impl TableJob {
    /// A table pgferry created and copies in one chunk is truncated and loaded with
    /// `COPY FREEZE` in one transaction: its rows arrive frozen and all-visible, so the
    /// index builds and foreign-key checks that follow read it without first rewriting
    /// every page to set hint bits.
    pub fn loads_frozen(&self) -> bool {
        self.progress.chunks_total == 1 && !self.existed_before && !self.reload
    }
}

/// One chunk to copy.
#[derive(Debug, Clone)]
pub struct ChunkJob {
    pub table: Arc<TableJob>,
    pub chunk_no: i32,
    pub range: Option<ChunkRange>,
}

/// What every worker shares.
#[derive(Debug)]
pub struct LoadContext {
    pub task: String,
    pub source: ConnInfo,
    pub target: ConnInfo,
    /// The snapshot chunks read; empty when no chunk is left to copy.
    pub snapshot: String,
}

/// Copies one chunk in one target transaction that also marks it done, reading the
/// source through `ctx.snapshot`. Progress counters move as rows flow; on failure the
/// chunk's counts are taken back out.
pub async fn copy_chunk(
    ctx: &LoadContext,
    source: &PgClient,
    target: &mut PgClient,
    job: &ChunkJob,
) -> Result<()> {
    let table = &job.table;
    let started = Instant::now();
    let freeze = table.loads_frozen();
    let statements = copy_statements(&CopySpec {
        source_table: &table.source,
        target_table: &table.target,
        source_columns: &table.columns,
        target_columns: &table.target_columns,
        filter: table.filter.as_deref(),
        format: table.format,
        range: job.range.as_ref(),
        freeze,
    });
    source
        .batch(
            "importing the load's snapshot",
            &format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {};{}",
                set_snapshot_sql(&ctx.snapshot),
                // A key range is read through the key's index, never by a scan of the
                // whole table per chunk.
                if matches!(job.range, Some(ChunkRange::Key(_))) {
                    " SET LOCAL enable_seqscan = off;"
                } else {
                    ""
                }
            ),
        )
        .await
        .map_err(|e| match e.sqlstate() {
            // The exporting session is gone: no retry can bring it back (`run` goes on from
            // a new snapshot).
            Some("22023") => EngineError::SnapshotLost,
            _ => e.into(),
        })?;
    let chunk = CopyCounters::default();
    let source = source.raw();
    let result = copy_in_target(ctx, source, target, job, &statements, &chunk, started).await;
    // Whatever happened, the snapshot's transaction ends: the connection serves the next
    // chunk.
    let _ = source.batch_execute("COMMIT").await;
    // The chunk's live counts leave the in-flight tally; on success they join the totals.
    let messages = chunk.messages.load(Ordering::Relaxed);
    let bytes = chunk.bytes.load(Ordering::Relaxed);
    table
        .progress
        .in_flight
        .messages
        .fetch_sub(messages, Ordering::Relaxed);
    table
        .progress
        .in_flight
        .bytes
        .fetch_sub(bytes, Ordering::Relaxed);
    let outcome = result?;
    table
        .progress
        .rows_done
        .fetch_add(outcome.rows as i64, Ordering::Relaxed);
    table
        .progress
        .bytes_done
        .fetch_add(outcome.bytes as i64, Ordering::Relaxed);
    Ok(())
}

/// The target side of one chunk: claims the chunk, copies its rows and marks it done, in
/// one transaction. A chunk found done (an earlier attempt whose commit's answer was lost)
/// is not copied again.
async fn copy_in_target(
    ctx: &LoadContext,
    source: &tokio_postgres::Client,
    target: &mut PgClient,
    job: &ChunkJob,
    statements: &CopyStatements,
    chunk: &CopyCounters,
    started: Instant,
) -> Result<CopyOutcome> {
    let table = &job.table;
    let freeze = table.loads_frozen();
    let tx = target
        .raw_mut()
        .transaction()
        .await
        .map_err(|e| PgError::query(Side::Target, "starting a chunk transaction", e))?;
    let this = Some((table.table_id, job.chunk_no));
    if control::claim_chunk(&tx, &ctx.task, this).await?.is_none() {
        let done = control::chunk_done(&tx, &ctx.task, table.table_id, job.chunk_no).await?;
        let _ = tx.rollback().await;
        return match done {
            true => Ok(CopyOutcome { rows: 0, bytes: 0 }),
            false => Err(EngineError::ChunkBusy {
                table: table.source.to_string(),
                chunk_no: job.chunk_no,
            }),
        };
    }
    if freeze {
        // Empty already (pgferry created it); TRUNCATE makes FREEZE legal in this
        // transaction.
        tx.batch_execute(&format!("TRUNCATE ONLY {}", table.target.quoted()))
            .await
            .map_err(|e| PgError::query(Side::Target, "preparing a frozen load", e))?;
    }
    let piped = pipe(
        source,
        tx.client(),
        statements,
        &[chunk, &table.progress.in_flight],
    )
    .await;
    match piped {
        Ok(outcome) => {
            control::finish_chunk(
                &tx,
                &ctx.task,
                table.table_id,
                job.chunk_no,
                outcome.rows as i64,
                outcome.bytes as i64,
                started.elapsed().as_secs_f64(),
            )
            .await?;
            tx.commit()
                .await
                .map_err(|e| PgError::query(Side::Target, "committing a chunk", e))?;
            Ok(outcome)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(EngineError::from(e))
        }
    }
}

/// The chunks of `tables` that the control schema does not record as done: what is left
/// to copy, whatever any process believes.
pub async fn pending_chunks(
    client: &PgClient,
    task: &str,
    tables: &[Arc<TableJob>],
) -> Result<Vec<ChunkJob>> {
    let by_id: HashMap<i32, &Arc<TableJob>> = tables.iter().map(|t| (t.table_id, t)).collect();
    Ok(crate::control::unfinished_chunks(client, task)
        .await?
        .into_iter()
        .filter_map(|c| {
            let table = by_id.get(&c.table_id)?;
            let range = match (&table.split_key, c.start_block) {
                (Some(key), _) => Some(ChunkRange::Key(KeyRange {
                    key: key.clone(),
                    lo: c.key_lo,
                    hi: c.key_hi,
                })),
                (None, Some(start)) => Some(ChunkRange::Blocks(BlockRange {
                    start,
                    end: c.end_block,
                })),
                (None, None) => None,
            };
            Some(ChunkJob {
                table: (*table).clone(),
                chunk_no: c.chunk_no,
                range,
            })
        })
        .collect())
}
