//! The plan's tables and chunks as stored in one transaction, and their state afterwards.

use pgferry_pg::copy::{ChunkRange, CopyFormat};
use pgferry_pg::split::SplitKey;
use pgferry_pg::{PgClient, PgError, QualifiedName, Side};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::target_err;
use crate::error::{EngineError, Result};

/// One table to copy.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTable {
    /// Stable within a task; orders tables in the control schema.
    pub table_id: i32,
    pub source_oid: u32,
    pub source: QualifiedName,
    pub target: QualifiedName,
    /// Columns COPY moves, in source order; generated and removed columns are left out.
    pub columns: Vec<String>,
    /// The target column each of `columns` goes into.
    pub target_columns: Vec<String>,
    /// The rows to copy, as a predicate over the source's columns; `None` for all.
    pub filter: Option<String>,
    /// Tables with a higher order load first (DMS's `load-order`).
    pub load_order: i64,
    pub format: CopyFormat,
    pub estimated_rows: Option<i64>,
    pub estimated_bytes: i64,
    /// `None` for a whole-table chunk.
    pub chunks: Vec<Option<ChunkRange>>,
    /// The column key-range chunks split on.
    pub split_key: Option<SplitKey>,
    /// Why a table bigger than one chunk is copied in one piece.
    pub split_note: Option<String>,
}

/// Marks tables (emptied by the caller, in the same transaction) as not copied yet: all
/// their chunks pending, their counters at zero.
pub async fn mark_pending(tx: &impl GenericClient, task: &str, table_ids: &[i32]) -> Result<()> {
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "resetting tables", e));
    tx.execute(
        "UPDATE pgferry.chunk SET state = 'pending', rows = NULL, bytes = NULL,
                seconds = NULL, finished_at = NULL
         WHERE task = $1 AND table_id = ANY($2)",
        &[&task, &table_ids],
    )
    .await
    .map_err(err)?;
    tx.execute(
        "UPDATE pgferry.table_state SET chunks_done = 0, rows_copied = 0,
                bytes_copied = 0, state = 'pending', analyzed = false,
                started_at = NULL, finished_at = NULL, last_error = NULL
         WHERE task = $1 AND table_id = ANY($2)",
        &[&task, &table_ids],
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Records the planned tables and their chunks, inside the planning transaction. Returns
/// how many chunks. `existing` are the targets that were there before the load, `dump_ids`
/// the TABLE entries of the schema dump, `roots` the partitioned table of each partition.
pub async fn store_tables(
    tx: &impl GenericClient,
    task: &str,
    planned: &[PlannedTable],
    existing: &std::collections::HashSet<&pgferry_pg::QualifiedName>,
    dump_ids: &std::collections::HashMap<u32, i32>,
    roots: &std::collections::HashMap<u32, pgferry_pg::QualifiedName>,
) -> Result<usize> {
    const CONTEXT: &str = "storing the plan";
    let insert_table = tx
        .prepare(
            "INSERT INTO pgferry.table_state (task, table_id, source_schema, source_table,
                 target_schema, target_table, copy_format, columns, estimated_rows,
                 estimated_bytes, chunks_total, existed_before, dump_id, root_schema,
                 root_table, target_columns, row_filter, split_key, split_note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $19)",
        )
        .await
        .map_err(target_err(CONTEXT))?;
    let insert_chunk = tx
        .prepare(
            "INSERT INTO pgferry.chunk (task, table_id, chunk_no, start_block, end_block,
                                        key_lo, key_hi)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(target_err(CONTEXT))?;
    let mut chunk_count = 0;
    for t in planned {
        let columns = serde_json::to_value(&t.columns).unwrap_or_default();
        tx.execute(
            &insert_table,
            &[
                &task,
                &t.table_id,
                &t.source.schema,
                &t.source.name,
                &t.target.schema,
                &t.target.name,
                &t.format.as_str(),
                &columns,
                &t.estimated_rows,
                &t.estimated_bytes,
                &(t.chunks.len() as i32),
                &existing.contains(&t.target),
                &dump_ids.get(&t.source_oid),
                &roots.get(&t.source_oid).map(|r| r.schema.clone()),
                &roots.get(&t.source_oid).map(|r| r.name.clone()),
                &serde_json::to_value(&t.target_columns).unwrap_or_default(),
                &t.filter,
                &t.split_key
                    .as_ref()
                    .and_then(|k| serde_json::to_value(k).ok()),
                &t.split_note,
            ],
        )
        .await
        .map_err(target_err(CONTEXT))?;
        for (i, range) in t.chunks.iter().enumerate() {
            let (start, end, lo, hi) = match range {
                Some(pgferry_pg::copy::ChunkRange::Blocks(b)) => (Some(b.start), b.end, None, None),
                Some(pgferry_pg::copy::ChunkRange::Key(k)) => {
                    (None, None, k.lo.clone(), k.hi.clone())
                }
                None => (None, None, None, None),
            };
            tx.execute(
                &insert_chunk,
                &[&task, &t.table_id, &(i as i32), &start, &end, &lo, &hi],
            )
            .await
            .map_err(target_err(CONTEXT))?;
            chunk_count += 1;
        }
    }
    Ok(chunk_count)
}

/// A table as the load recorded it: where it goes, how far its copy got, and how it is
/// split. Read back by every phase that follows the plan.
#[derive(Debug, Clone)]
pub struct StoredTable {
    pub table_id: i32,
    pub source: QualifiedName,
    /// The partitioned table a partition belongs to, else the table itself: the relation
    /// the stream names.
    pub relation: QualifiedName,
    pub target: QualifiedName,
    pub format: CopyFormat,
    pub columns: Vec<String>,
    pub target_columns: Vec<String>,
    pub filter: Option<String>,
    pub estimated_rows: Option<i64>,
    pub estimated_bytes: i64,
    pub chunks_total: i32,
    pub chunks_done: i32,
    pub rows_copied: i64,
    pub bytes_copied: i64,
    pub loaded: bool,
    pub existed_before: bool,
    pub analyzed: bool,
    pub dump_id: Option<i32>,
    pub split_key: Option<SplitKey>,
    /// Split by a key in the replica identity, and not a partition: its finished
    /// chunks survive a new snapshot.
    pub resumes_by_chunk: bool,
    /// The task's post-data objects were built already (a start-over reloads it).
    pub post_data_built: bool,
    pub copy_seconds: f64,
}

/// The task's tables in plan order.
pub async fn stored_tables(client: &PgClient, task: &str) -> Result<Vec<StoredTable>> {
    let rows = client
        .query(
            "reading the table plan",
            "SELECT table_id, source_schema, source_table,
                    coalesce(root_schema, source_schema), coalesce(root_table, source_table),
                    target_schema, target_table, copy_format, columns,
                    coalesce(target_columns, columns), row_filter, estimated_rows,
                    estimated_bytes, chunks_total, chunks_done, rows_copied, bytes_copied,
                    state = 'loaded', existed_before, analyzed, dump_id, split_key,
                    coalesce((split_key->>'identity')::boolean, false)
                        AND root_table IS NULL,
                    EXISTS (SELECT FROM pgferry.schema_step s WHERE s.task = $1
                            AND s.section = 'post-data' AND s.state = 'done'),
                    coalesce((SELECT sum(seconds) FROM pgferry.chunk c
                              WHERE c.task = t.task AND c.table_id = t.table_id), 0)::float8
             FROM pgferry.table_state t WHERE task = $1 ORDER BY table_id",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredTable {
            table_id: r.get(0),
            source: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            relation: QualifiedName::new(r.get::<_, String>(3), r.get::<_, String>(4)),
            target: QualifiedName::new(r.get::<_, String>(5), r.get::<_, String>(6)),
            format: CopyFormat::parse(r.get(7)).unwrap_or(CopyFormat::Text),
            columns: serde_json::from_value(r.get(8)).unwrap_or_default(),
            target_columns: serde_json::from_value(r.get(9)).unwrap_or_default(),
            filter: r.get(10),
            estimated_rows: r.get(11),
            estimated_bytes: r.get(12),
            chunks_total: r.get(13),
            chunks_done: r.get(14),
            rows_copied: r.get(15),
            bytes_copied: r.get(16),
            loaded: r.get(17),
            existed_before: r.get(18),
            analyzed: r.get(19),
            dump_id: r.get(20),
            split_key: r
                .get::<_, Option<serde_json::Value>>(21)
                .and_then(|v| serde_json::from_value(v).ok()),
            resumes_by_chunk: r.get(22),
            post_data_built: r.get(23),
            copy_seconds: r.get(24),
        })
        .collect())
}

/// Target tables not analyzed since their load, biggest first.
pub async fn unanalyzed_tables(client: &PgClient, task: &str) -> Result<Vec<(i32, QualifiedName)>> {
    let rows = client
        .query(
            "listing tables to analyze",
            "SELECT table_id, target_schema, target_table FROM pgferry.table_state
             WHERE task = $1 AND NOT analyzed ORDER BY estimated_bytes DESC",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            )
        })
        .collect())
}

/// Records that a table's statistics were gathered, in the transaction that ran `ANALYZE`
/// or after it (a repeated `ANALYZE` is harmless).
pub async fn mark_analyzed(client: &impl GenericClient, task: &str, table_id: i32) -> Result<()> {
    client
        .execute(
            "UPDATE pgferry.table_state SET analyzed = true WHERE task = $1 AND table_id = $2",
            &[&task, &table_id],
        )
        .await
        .map_err(target_err("recording ANALYZE"))?;
    Ok(())
}
