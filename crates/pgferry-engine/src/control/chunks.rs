//! Chunk marks: a chunk is done exactly when its row says so, written in the transaction
//! that holds its rows.

use pgferry_pg::PgClient;
use tokio_postgres::GenericClient;

use super::target_err;
use crate::error::Result;

/// Marks a chunk done and adds its counts to its table, inside the transaction that
/// copied its rows.
pub async fn finish_chunk(
    tx: &impl GenericClient,
    task: &str,
    table_id: i32,
    chunk_no: i32,
    rows: i64,
    bytes: i64,
    seconds: f64,
) -> Result<()> {
    tx.execute(
        "WITH c AS (
             UPDATE pgferry.chunk SET state = 'done', rows = $4, bytes = $5, seconds = $6,
                    finished_at = clock_timestamp(), attempts = attempts + 1
             WHERE task = $1 AND table_id = $2 AND chunk_no = $3 AND state <> 'done'
             RETURNING 1)
         UPDATE pgferry.table_state t
            SET rows_copied = rows_copied + $4, bytes_copied = bytes_copied + $5,
                chunks_done = chunks_done + 1,
                state = CASE WHEN chunks_done + 1 >= chunks_total THEN 'loaded' ELSE 'loading' END,
                started_at = coalesce(started_at, now()),
                finished_at = CASE WHEN chunks_done + 1 >= chunks_total THEN clock_timestamp() END,
                last_error = NULL
          WHERE t.task = $1 AND t.table_id = $2 AND EXISTS (SELECT 1 FROM c)",
        &[&task, &table_id, &chunk_no, &rows, &bytes, &seconds],
    )
    .await
    .map_err(target_err("recording a finished chunk"))?;
    Ok(())
}

/// Records a failed chunk attempt on its table, outside the failed transaction.
pub async fn fail_chunk(
    client: &PgClient,
    task: &str,
    table_id: i32,
    chunk_no: i32,
    message: &str,
) -> Result<()> {
    client
        .execute(
            "recording a failed chunk",
            "WITH c AS (UPDATE pgferry.chunk SET attempts = attempts + 1
                        WHERE task = $1 AND table_id = $2 AND chunk_no = $3 RETURNING 1)
             UPDATE pgferry.table_state SET state = 'failed', last_error = $4
             WHERE task = $1 AND table_id = $2",
            &[&task, &table_id, &chunk_no, &message],
        )
        .await?;
    Ok(())
}
