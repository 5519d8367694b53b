//! The full load's workers.
//!
//! `jobs` workers each hold one source and one target connection and take chunks from a
//! shared queue, biggest tables first. For each chunk a worker:
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

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pgferry_pg::copy::{BlockRange, CopyCounters, CopyFormat, copy_statements, pipe};
use pgferry_pg::dump::set_snapshot_sql;
use pgferry_pg::{ConnInfo, PgClient, PgError, QualifiedName, Side};

use crate::control::{self, Level};
use crate::error::{EngineError, Result};
use crate::progress::{TableProgress, TableState};
use crate::session;

/// Attempts per chunk before its table is given up for this run. With the backoff below
/// a chunk rides out about a minute of network or server trouble.
const CHUNK_ATTEMPTS: u32 = 6;

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A table as the workers see it.
#[derive(Debug)]
pub struct TableJob {
    pub table_id: i32,
    pub source: QualifiedName,
    pub target: QualifiedName,
    pub columns: Vec<String>,
    pub format: CopyFormat,
    pub progress: Arc<TableProgress>,
}

/// One chunk to copy.
#[derive(Debug, Clone)]
pub struct ChunkJob {
    pub table: Arc<TableJob>,
    pub chunk_no: i32,
    pub range: Option<BlockRange>,
}

/// What every worker shares.
#[derive(Debug)]
pub struct LoadContext {
    pub task: String,
    pub source: ConnInfo,
    pub target: ConnInfo,
    pub snapshot: String,
}

/// The load's outcome.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub chunks_copied: usize,
    /// `(table, error)` for each table that could not be loaded.
    pub failed: Vec<(QualifiedName, String)>,
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(10).saturating_sub(1))
        .min(MAX_BACKOFF)
}

/// Copies `chunks` with `jobs` workers.
pub async fn run(ctx: Arc<LoadContext>, chunks: Vec<ChunkJob>, jobs: usize) -> Result<LoadOutcome> {
    let queue = Arc::new(crate::queue::WorkQueue::new(
        chunks
            .into_iter()
            .map(|c| ((c.table.table_id, c.chunk_no), c, Vec::new()))
            .collect(),
    ));
    let mut workers = tokio::task::JoinSet::new();
    for n in 0..jobs.max(1) {
        let ctx = ctx.clone();
        let queue = queue.clone();
        workers.spawn(async move { worker(n, &ctx, &queue).await });
    }
    let mut outcome = LoadOutcome::default();
    let mut fatal = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(w)) => {
                outcome.chunks_copied += w.chunks_copied;
                outcome.failed.extend(w.failed);
            }
            Ok(Err(e)) => {
                queue.close();
                fatal.get_or_insert(e);
            }
            Err(join) => {
                queue.close();
                fatal.get_or_insert(EngineError::Pg(PgError::Protocol {
                    side: Side::Target,
                    message: format!("a load worker stopped unexpectedly: {join}"),
                }));
            }
        }
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

struct Connections {
    source: PgClient,
    target: PgClient,
}

async fn open(ctx: &LoadContext, n: usize) -> Result<Connections> {
    let name = format!("pgferry load {n}");
    let source = pgferry_pg::connect(Side::Source, &ctx.source, &name).await?;
    source
        .batch("setting up a source session", &session::source_reader())
        .await?;
    let target = pgferry_pg::connect(Side::Target, &ctx.target, &name).await?;
    target
        .batch("setting up a target session", &session::target_loader())
        .await?;
    // Triggers and foreign keys of tables that existed before the load stay quiet, as DMS
    // does; it needs a superuser, and tables pgferry creates have neither until post-data.
    if target
        .batch("", "SET session_replication_role = replica")
        .await
        .is_err()
    {
        tracing::debug!("target user may not set session_replication_role; continuing");
    }
    Ok(Connections { source, target })
}

async fn worker(
    n: usize,
    ctx: &LoadContext,
    queue: &crate::queue::WorkQueue<(i32, i32), ChunkJob>,
) -> Result<LoadOutcome> {
    let mut outcome = LoadOutcome::default();
    let mut conns: Option<Connections> = None;
    while let Some((key, job)) = queue.next().await {
        let table = &job.table;
        if table.progress.state() == TableState::Failed {
            // Another chunk of this table failed for good; its remaining chunks would too.
            queue.complete(&key, false);
            continue;
        }
        table.progress.set_state(TableState::Loading);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match conns.as_mut() {
                Some(c) => copy_chunk(ctx, c, &job).await,
                None => match open(ctx, n).await {
                    Ok(c) => {
                        let c = conns.insert(c);
                        copy_chunk(ctx, c, &job).await
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    outcome.chunks_copied += 1;
                    let done = table.progress.chunks_done.fetch_add(1, Ordering::Relaxed) + 1;
                    if done >= table.progress.chunks_total {
                        table.progress.set_state(TableState::Loaded);
                        tracing::info!(
                            table = %table.source,
                            rows = table.progress.rows(),
                            bytes = table.progress.bytes(),
                            "table loaded"
                        );
                    }
                    queue.complete(&key, true);
                    break;
                }
                Err(e) if e.is_retryable() && attempt < CHUNK_ATTEMPTS => {
                    let wait = backoff(attempt);
                    tracing::warn!(
                        table = %table.source,
                        chunk = job.chunk_no,
                        attempt,
                        error = %e,
                        "chunk failed; retrying in {} s",
                        wait.as_secs()
                    );
                    // Connections may be broken or mid-transaction: start afresh.
                    conns = None;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::error!(table = %table.source, chunk = job.chunk_no, error = %message,
                        "chunk failed");
                    table.progress.set_state(TableState::Failed);
                    *table
                        .progress
                        .error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                    if let Some(c) = conns.as_ref().filter(|c| !c.target.is_closed()) {
                        control::fail_chunk(
                            &c.target,
                            &ctx.task,
                            table.table_id,
                            job.chunk_no,
                            &message,
                        )
                        .await?;
                        control::event(
                            c.target.raw(),
                            &ctx.task,
                            Level::Error,
                            "load",
                            &format!("loading {} failed: {message}", table.source),
                            None,
                        )
                        .await?;
                    }
                    outcome.failed.push((table.source.clone(), message));
                    queue.complete(&key, false);
                    break;
                }
            }
        }
    }
    Ok(outcome)
}

async fn copy_chunk(ctx: &LoadContext, conns: &mut Connections, job: &ChunkJob) -> Result<()> {
    let table = &job.table;
    let started = Instant::now();
    let statements = copy_statements(
        &table.source,
        &table.target,
        table.columns.iter().map(String::as_str),
        table.format,
        job.range,
    );
    conns
        .source
        .batch(
            "importing the load's snapshot",
            &format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {};",
                set_snapshot_sql(&ctx.snapshot)
            ),
        )
        .await
        .map_err(|e| match e.sqlstate() {
            // The exporting session is gone: this run cannot continue consistently, and the
            // next one resumes with a new snapshot.
            Some("22023") => EngineError::Pg(PgError::Protocol {
                side: Side::Source,
                message: "the load's snapshot is gone (its session ended); run again to resume \
                          with a new snapshot"
                    .to_owned(),
            }),
            _ => e.into(),
        })?;
    let chunk = CopyCounters::default();
    let source = conns.source.raw();
    let tx = conns
        .target
        .raw_mut()
        .transaction()
        .await
        .map_err(|e| PgError::query(Side::Target, "starting a chunk transaction", e))?;
    let piped = pipe(
        source,
        tx.client(),
        &statements,
        &[&chunk, &table.progress.in_flight],
    )
    .await;
    let result = match piped {
        Ok(outcome) => {
            let recorded = control::finish_chunk(
                &tx,
                &ctx.task,
                table.table_id,
                job.chunk_no,
                outcome.rows as i64,
                outcome.bytes as i64,
                started.elapsed().as_secs_f64(),
            )
            .await;
            match recorded {
                Ok(()) => tx
                    .commit()
                    .await
                    .map_err(|e| PgError::query(Side::Target, "committing a chunk", e).into())
                    .map(|()| outcome),
                Err(e) => Err(e),
            }
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e.into())
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(9), MAX_BACKOFF);
    }
}
