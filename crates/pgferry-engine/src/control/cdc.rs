//! A task's change stream as the control schema records it (`pgferry.cdc_state` and
//! `pgferry.cdc_table`): its slot and publication, positions and lag, the stop request,
//! and tables excluded from it. The applied position itself commits with the changes it
//! covers ([`crate::cdc`]'s applier), on the side the stream applies to.

use pgferry_pg::{Lsn, PgClient, QualifiedName};

use crate::error::Result;

/// What the stream was set up with.
#[derive(Debug, Clone)]
pub struct CdcState {
    pub slot: String,
    pub publication: String,
    pub binary: bool,
}

/// The task's stream setup, `None` for a task without one.
pub async fn cdc_state(client: &PgClient, task: &str) -> Result<Option<CdcState>> {
    let row = client
        .query_opt(
            "reading the CDC state",
            "SELECT slot_name, publication, coalesce(binary_mode, false)
             FROM pgferry.cdc_state WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(row.map(|r| CdcState {
        slot: r.get(0),
        publication: r.get(1),
        binary: r.get(2),
    }))
}

/// Tables a policy took out of the stream.
pub async fn excluded_tables(client: &PgClient, task: &str) -> Result<Vec<QualifiedName>> {
    let rows = client
        .query(
            "reading excluded tables",
            "SELECT schema_name, table_name FROM pgferry.cdc_table
             WHERE task = $1 AND excluded",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// When an unfinished start-over began, as text for messages.
pub async fn start_over_began(client: &PgClient, task: &str) -> Result<Option<String>> {
    Ok(client
        .query_one(
            "reading the CDC state",
            "SELECT to_char(start_over_since, 'YYYY-MM-DD HH24:MI:SS TZ')
             FROM pgferry.cdc_state WHERE task = $1",
            &[&task],
        )
        .await?
        .get(0))
}

/// When `cleanup` last ran for the task, as text for messages.
pub async fn cleaned_up_at(client: &PgClient, task: &str) -> Result<Option<String>> {
    Ok(client
        .query_one(
            "reading the event log",
            "SELECT to_char(max(at), 'YYYY-MM-DD HH24:MI:SS TZ') FROM pgferry.event
             WHERE task = $1 AND kind = 'cleanup'",
            &[&task],
        )
        .await?
        .get(0))
}

/// Forgets the WAL figure of a slot that is gone, so `status` does not claim it holds WAL.
pub async fn forget_retained_wal(client: &PgClient, task: &str) -> Result<()> {
    client
        .execute(
            "forgetting the lost slot's WAL figure",
            "UPDATE pgferry.cdc_state SET wal_retained_bytes = NULL WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(())
}

/// A stream starts: an earlier run's error and stop request are history.
pub async fn streaming_started(client: &PgClient, task: &str) -> Result<()> {
    client
        .execute(
            "clearing the last error",
            "UPDATE pgferry.task SET last_error = NULL WHERE name = $1",
            &[&task],
        )
        .await?;
    client
        .execute(
            "starting CDC",
            "UPDATE pgferry.cdc_state SET stop_requested = false, streaming_since = now()
             WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(())
}

/// Saves the lag figures alone, while the stream waits out an outage.
pub async fn save_lag(
    client: &PgClient,
    task: &str,
    source_ms: Option<i64>,
    target_ms: Option<i64>,
) -> Result<()> {
    client
        .execute(
            "saving the lag",
            "UPDATE pgferry.cdc_state SET source_latency_ms = $2,
                 target_latency_ms = $3, updated_at = now() WHERE task = $1",
            &[&task, &source_ms, &target_ms],
        )
        .await?;
    Ok(())
}

/// The stream's figures of the last second.
#[derive(Debug, Clone, Copy)]
pub struct StreamFigures {
    pub received: Lsn,
    pub source_ms: Option<i64>,
    pub target_ms: Option<i64>,
    pub wal_retained: Option<i64>,
}

/// Saves the stream's figures; returns whether a stop was requested.
pub async fn save_progress(client: &PgClient, task: &str, f: StreamFigures) -> Result<bool> {
    Ok(client
        .query_one(
            "saving CDC progress",
            "UPDATE pgferry.cdc_state SET received_lsn = $2::text::pg_lsn,
                 source_latency_ms = $3, target_latency_ms = coalesce($4,
                 target_latency_ms), wal_retained_bytes = coalesce($5,
                 wal_retained_bytes), updated_at = now()
             WHERE task = $1 RETURNING stop_requested",
            &[
                &task,
                &f.received.to_string(),
                &f.source_ms,
                &f.target_ms,
                &f.wal_retained,
            ],
        )
        .await?
        .get(0))
}

/// Asks the streaming run to stop; it reads the flag once a second.
pub async fn request_stop(client: &PgClient, task: &str) -> Result<()> {
    client
        .execute(
            "requesting a stop",
            "UPDATE pgferry.cdc_state SET stop_requested = true WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(())
}

/// Where applying resumes: the last applied position, or the slot's consistent point.
pub async fn checkpoint(client: &PgClient, task: &str) -> Result<Lsn> {
    let row = client
        .query_one(
            "reading the CDC checkpoint",
            "SELECT coalesce(applied_lsn, consistent_lsn)::text FROM pgferry.cdc_state
             WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(row.get::<_, String>(0).parse().unwrap_or(Lsn::ZERO))
}

/// One table's stream state: suspended, or filtered by the snapshot it was copied from.
#[derive(Debug, Clone)]
pub struct StreamTable {
    pub name: QualifiedName,
    pub suspended: bool,
    /// `xmin:xmax:xip@lsn` of a later snapshot the table was copied from.
    pub snapshot_filter: Option<String>,
}

/// Every table with a stream state of its own.
pub async fn stream_tables(client: &PgClient, task: &str) -> Result<Vec<StreamTable>> {
    let rows = client
        .query(
            "reading CDC table state",
            "SELECT schema_name, table_name, suspended, snapshot_filter
             FROM pgferry.cdc_table WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StreamTable {
            name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            suspended: r.get(2),
            snapshot_filter: r.get(3),
        })
        .collect())
}

/// What one committed apply batch did.
#[derive(Debug, Clone, Copy)]
pub struct AppliedBatch {
    pub end: Lsn,
    pub commit_time: Option<chrono::DateTime<chrono::Utc>>,
    pub counts: crate::cdc::live::OpCounts,
    pub target_ms: i64,
}

/// Moves the checkpoint, inside the transaction that applied the batch: the changes and
/// the position they reach commit together, or neither does.
pub async fn save_checkpoint(client: &PgClient, task: &str, b: AppliedBatch) -> Result<()> {
    let c = b.counts;
    client
        .execute(
            "writing the CDC checkpoint",
            "UPDATE pgferry.cdc_state SET applied_lsn = $2::text::pg_lsn,
                 applied_commit_time = $3, inserts = inserts + $4,
                 updates = updates + $5, deletes = deletes + $6,
                 truncates = truncates + $7, transactions = transactions + $8,
                 exceptions = exceptions + $9, target_latency_ms = $10,
                 updated_at = now()
             WHERE task = $1",
            &[
                &task,
                &b.end.to_string(),
                &b.commit_time,
                &c.inserts,
                &c.updates,
                &c.deletes,
                &c.truncates,
                &c.transactions,
                &c.exceptions,
                &b.target_ms,
            ],
        )
        .await?;
    Ok(())
}

/// A change an error policy kept out, as `pgferry.apply_exceptions` records it.
#[derive(Debug)]
pub struct ApplyException<'a> {
    pub commit_lsn: Lsn,
    pub xid: u32,
    pub table: &'a QualifiedName,
    pub operation: &'a str,
    pub policy: &'a str,
    pub error: &'a str,
    pub change: serde_json::Value,
}

/// Records an exception, inside the apply transaction.
pub async fn record_exception(client: &PgClient, task: &str, e: ApplyException<'_>) -> Result<()> {
    client
        .execute(
            "recording an apply exception",
            "INSERT INTO pgferry.apply_exceptions
                 (task, commit_lsn, xid, schema_name, table_name, operation, policy,
                  error, change)
             VALUES ($1, $2::text::pg_lsn, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &task,
                &e.commit_lsn.to_string(),
                &i64::from(e.xid),
                &e.table.schema,
                &e.table.name,
                &e.operation,
                &e.policy,
                &e.error,
                &e.change,
            ],
        )
        .await?;
    Ok(())
}

/// Takes a table out of the stream until someone resumes it.
pub async fn suspend_table(
    client: &PgClient,
    task: &str,
    table: &QualifiedName,
    reason: &str,
) -> Result<()> {
    client
        .execute(
            "suspending a table",
            "INSERT INTO pgferry.cdc_table (task, schema_name, table_name, suspended,
                                            suspended_reason)
             VALUES ($1, $2, $3, true, $4)
             ON CONFLICT (task, schema_name, table_name)
             DO UPDATE SET suspended = true, suspended_reason = excluded.suspended_reason",
            &[&task, &table.schema, &table.name, &reason],
        )
        .await?;
    Ok(())
}
