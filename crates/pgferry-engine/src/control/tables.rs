//! The plan's tables and chunks as stored in one transaction, and their state afterwards.

use pgferry_pg::copy::{ChunkRange, CopyFormat};
use pgferry_pg::split::SplitKey;
use pgferry_pg::{PgError, QualifiedName, Side};
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
