//! Chunk marks: a chunk is done exactly when its row says so, written in the transaction
//! that holds its rows.
//!
//! A worker claims a chunk in that same transaction before it copies anything: the claim
//! is a row lock (`FOR UPDATE SKIP LOCKED`), so two workers, on one host or several, never
//! copy one chunk at once, and it ends with the transaction. A crash releases it with
//! nothing to clean up. A claim refused because an earlier attempt's transaction still
//! holds the row (a commit whose outcome the client never heard) waits for that attempt to
//! end, and a chunk it finds done is not copied again.

use pgferry_pg::{PgClient, QualifiedName};
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

/// Keeps a table's finished chunks across a new snapshot, in the caller's transaction:
/// each keeps the snapshot filter it was copied under (a table-wide one from an earlier
/// resume moves onto it), and the rest read `visibility`, the new snapshot.
pub async fn keep_finished_chunks(
    tx: &impl GenericClient,
    task: &str,
    table_id: i32,
    relation: &QualifiedName,
    visibility: &str,
) -> Result<()> {
    let err = target_err("keeping finished chunks");
    tx.execute(
        "UPDATE pgferry.chunk c SET snapshot_filter = CASE WHEN c.state = 'done'
             THEN coalesce(c.snapshot_filter, (SELECT t.snapshot_filter
                  FROM pgferry.cdc_table t WHERE t.task = $1 AND t.schema_name = $3
                    AND t.table_name = $4))
             ELSE $5 END
         WHERE c.task = $1 AND c.table_id = $2",
        &[
            &task,
            &table_id,
            &relation.schema,
            &relation.name,
            &visibility,
        ],
    )
    .await
    .map_err(err)?;
    tx.execute(
        "UPDATE pgferry.cdc_table SET snapshot_filter = NULL
         WHERE task = $1 AND schema_name = $2 AND table_name = $3",
        &[&task, &relation.schema, &relation.name],
    )
    .await
    .map_err(target_err("keeping finished chunks"))?;
    Ok(())
}

/// A chunk not recorded as done: what is left to copy, whatever any process believes.
#[derive(Debug, Clone)]
pub struct UnfinishedChunk {
    pub table_id: i32,
    pub chunk_no: i32,
    pub start_block: Option<i64>,
    pub end_block: Option<i64>,
    pub key_lo: Option<String>,
    pub key_hi: Option<String>,
}

pub async fn unfinished_chunks(client: &PgClient, task: &str) -> Result<Vec<UnfinishedChunk>> {
    let rows = client
        .query(
            "reading pending chunks",
            "SELECT table_id, chunk_no, start_block, end_block, key_lo, key_hi
             FROM pgferry.chunk
             WHERE task = $1 AND state <> 'done' ORDER BY table_id, chunk_no",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| UnfinishedChunk {
            table_id: r.get(0),
            chunk_no: r.get(1),
            start_block: r.get(2),
            end_block: r.get(3),
            key_lo: r.get(4),
            key_hi: r.get(5),
        })
        .collect())
}

/// The chunks of a table split by a key in its replica identity, with the snapshot each
/// was copied under, for tables where any chunk has one (a load resumed from a new
/// snapshot).
#[derive(Debug, Clone)]
pub struct KeyChunks {
    pub table: QualifiedName,
    /// The split key's column.
    pub column: String,
    /// The split key's type, as `pg_catalog."name"`.
    pub type_name: String,
    /// Whether the key is an integer (its bounds are numbers).
    pub integer: bool,
    /// Per chunk, in order: its low and high key bounds and its snapshot filter.
    pub chunks: Vec<(Option<String>, Option<String>, Option<String>)>,
}

pub async fn key_chunks_with_filters(client: &PgClient, task: &str) -> Result<Vec<KeyChunks>> {
    let rows = client
        .query(
            "reading chunk filters",
            "SELECT t.source_schema, t.source_table, t.split_key->>'column',
                    array_agg(c.key_lo ORDER BY c.chunk_no),
                    array_agg(c.key_hi ORDER BY c.chunk_no),
                    array_agg(c.snapshot_filter ORDER BY c.chunk_no),
                    t.split_key->>'type_name', (t.split_key->>'integer')::boolean
             FROM pgferry.table_state t JOIN pgferry.chunk c USING (task, table_id)
             WHERE t.task = $1 AND (t.split_key->>'identity')::boolean
               AND t.root_table IS NULL
             GROUP BY t.source_schema, t.source_table, t.split_key
             HAVING bool_or(c.snapshot_filter IS NOT NULL)",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let los: Vec<Option<String>> = r.get(3);
            let his: Vec<Option<String>> = r.get(4);
            let filters: Vec<Option<String>> = r.get(5);
            KeyChunks {
                table: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                column: r.get(2),
                type_name: r.get(6),
                integer: r.get(7),
                chunks: los
                    .into_iter()
                    .zip(his)
                    .zip(filters)
                    .map(|((lo, hi), f)| (lo, hi, f))
                    .collect(),
            }
        })
        .collect())
}

/// Claims a chunk that is not done for the caller's transaction, skipping chunks other
/// transactions hold: `which` names one (table id, chunk number), or `None` takes the
/// next in plan order. Returns the chunk claimed, or `None` when there is none to claim.
pub async fn claim_chunk(
    tx: &impl GenericClient,
    task: &str,
    which: Option<(i32, i32)>,
) -> Result<Option<(i32, i32)>> {
    let (table_id, chunk_no) = which.unzip();
    let row = tx
        .query_opt(
            "SELECT table_id, chunk_no FROM pgferry.chunk
             WHERE task = $1 AND state <> 'done'
               AND ($2::int IS NULL OR table_id = $2) AND ($3::int IS NULL OR chunk_no = $3)
             ORDER BY table_id, chunk_no
             LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&task, &table_id, &chunk_no],
        )
        .await
        .map_err(target_err("claiming a chunk"))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Whether a chunk is recorded as done, as the caller's transaction sees it.
pub async fn chunk_done(
    tx: &impl GenericClient,
    task: &str,
    table_id: i32,
    chunk_no: i32,
) -> Result<bool> {
    let row = tx
        .query_opt(
            "SELECT state = 'done' FROM pgferry.chunk
             WHERE task = $1 AND table_id = $2 AND chunk_no = $3",
            &[&task, &table_id, &chunk_no],
        )
        .await
        .map_err(target_err("reading a chunk's state"))?;
    Ok(row.is_some_and(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use pgferry_pg::{ConnInfo, PgClient, Side};
    use pgferry_testkit::Cluster;

    use super::{chunk_done, claim_chunk, finish_chunk};

    async fn control(c: &Cluster) -> PgClient {
        let info = ConnInfo::resolve(&c.url("postgres"), None).unwrap();
        let mut client = pgferry_pg::connect(Side::Target, &info, "test")
            .await
            .unwrap();
        crate::control::ensure_schema(&mut client).await.unwrap();
        client
            .batch(
                "",
                "INSERT INTO pgferry.task (name, migration_type, settings, phase, source, target)
                 VALUES ('t', 'full-load', '{}', 'loading', '', '');
                 INSERT INTO pgferry.table_state (task, table_id, source_schema,
                     source_table, target_schema, target_table, copy_format, columns,
                     estimated_bytes, chunks_total)
                 VALUES ('t', 1, 's', 'a', 's', 'a', 'text', '[]', 0, 3);
                 INSERT INTO pgferry.chunk (task, table_id, chunk_no)
                 SELECT 't', 1, n FROM generate_series(0, 2) n;",
            )
            .await
            .unwrap();
        client
    }

    #[tokio::test]
    async fn two_workers_never_claim_one_chunk_and_a_done_chunk_is_never_claimed() {
        let c = Cluster::start().unwrap();
        let mut a = control(&c).await;
        let info = ConnInfo::resolve(&c.url("postgres"), None).unwrap();
        let mut b = pgferry_pg::connect(Side::Target, &info, "test")
            .await
            .unwrap();

        let ta = a.raw_mut().transaction().await.unwrap();
        let tb = b.raw_mut().transaction().await.unwrap();
        assert_eq!(claim_chunk(&ta, "t", None).await.unwrap(), Some((1, 0)));
        // The second worker skips the held chunk and takes the next one.
        assert_eq!(claim_chunk(&tb, "t", None).await.unwrap(), Some((1, 1)));
        // A named chunk another transaction holds cannot be claimed, and it is not done.
        assert_eq!(claim_chunk(&tb, "t", Some((1, 0))).await.unwrap(), None);
        assert!(!chunk_done(&tb, "t", 1, 0).await.unwrap());
        finish_chunk(&ta, "t", 1, 0, 10, 100, 0.1).await.unwrap();
        ta.commit().await.unwrap();
        tb.rollback().await.unwrap();

        // Once done, a chunk is never claimed again; the released one is.
        let tb = b.raw_mut().transaction().await.unwrap();
        assert_eq!(claim_chunk(&tb, "t", Some((1, 0))).await.unwrap(), None);
        assert!(chunk_done(&tb, "t", 1, 0).await.unwrap());
        assert_eq!(claim_chunk(&tb, "t", None).await.unwrap(), Some((1, 1)));
        tb.rollback().await.unwrap();
    }
}
