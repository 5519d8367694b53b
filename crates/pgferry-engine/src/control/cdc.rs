//! A task's change stream as the control schema records it (`pgferry.cdc_state` and
//! `pgferry.cdc_table`): its slot and publication, positions and lag, the stop request,
//! and tables excluded from it. The applied position itself commits with the changes it
//! covers ([`crate::cdc`]'s applier), on the side the stream applies to.

use pgferry_pg::{Lsn, PgClient, QualifiedName};

use tokio_postgres::GenericClient;

use super::target_err;
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
pub async fn streaming_started(client: &PgClient, task: &str, clear_orders: bool) -> Result<()> {
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
            "UPDATE pgferry.cdc_state SET stop_requested = stop_requested AND NOT $2,
                 streaming_since = now(), stopped_at = NULL
             WHERE task = $1",
            &[&task, &clear_orders],
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

/// What the control schema asks of the stream, read five times a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOrders {
    /// Stop at the next transaction boundary.
    pub stop: bool,
    /// Stop once everything committed on the source before this position is applied.
    pub drain_to: Option<Lsn>,
}

/// What is asked of the stream, read between two saves of its figures.
pub async fn stream_orders(client: &PgClient, task: &str) -> Result<StreamOrders> {
    let row = client
        .query_one(
            "reading the stream's orders",
            "SELECT stop_requested, drain_to::text FROM pgferry.cdc_state WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(StreamOrders {
        stop: row.get(0),
        drain_to: row.get::<_, Option<&str>>(1).and_then(|s| s.parse().ok()),
    })
}

/// Saves the stream's figures; returns what is asked of the stream.
pub async fn save_progress(
    client: &PgClient,
    task: &str,
    f: StreamFigures,
) -> Result<StreamOrders> {
    let row = client
        .query_one(
            "saving CDC progress",
            "UPDATE pgferry.cdc_state SET received_lsn = $2::text::pg_lsn,
                 source_latency_ms = $3, target_latency_ms = coalesce($4,
                 target_latency_ms), wal_retained_bytes = coalesce($5,
                 wal_retained_bytes), updated_at = now()
             WHERE task = $1 RETURNING stop_requested, drain_to::text",
            &[
                &task,
                &f.received.to_string(),
                &f.source_ms,
                &f.target_ms,
                &f.wal_retained,
            ],
        )
        .await?;
    Ok(StreamOrders {
        stop: row.get(0),
        drain_to: row.get::<_, Option<&str>>(1).and_then(|s| s.parse().ok()),
    })
}

/// Asks the stream to drain: to apply everything the source committed before `to`, then
/// stop. Survives a restart of the run, which goes on draining.
pub async fn request_drain(client: &PgClient, task: &str, to: Lsn) -> Result<()> {
    client
        .execute(
            "requesting a drain",
            "UPDATE pgferry.cdc_state SET drain_to = $2::text::pg_lsn, drained_lsn = NULL
             WHERE task = $1",
            &[&task, &to.to_string()],
        )
        .await?;
    Ok(())
}

/// Records a finished drain at `at` (at least its target) and clears the request.
pub async fn mark_drained(client: &PgClient, task: &str, at: Lsn) -> Result<()> {
    client
        .execute(
            "recording a finished drain",
            "UPDATE pgferry.cdc_state SET drained_lsn = $2::text::pg_lsn, drain_to = NULL
             WHERE task = $1",
            &[&task, &at.to_string()],
        )
        .await?;
    Ok(())
}

/// Where the last drain ended, if one finished since the last request.
pub async fn drained(client: &PgClient, task: &str) -> Result<Option<Lsn>> {
    let row = client
        .query_opt(
            "reading the drain",
            "SELECT drained_lsn::text FROM pgferry.cdc_state WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|s| s.parse().ok()))
}

/// Asks the streaming run to stop; it reads the flag five times a second.
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

/// Records that the run stopped streaming (it may go on streaming the other way). A
/// stream that starts clears it ([`streaming_started`]), so it says whether the stream is
/// stopped now: a stop requested again of a stream that stopped already (a cutover run
/// again after a kill) is answered at once.
pub async fn mark_stopped(client: &PgClient, task: &str) -> Result<()> {
    client
        .execute(
            "recording the stream stopped",
            "UPDATE pgferry.cdc_state SET stopped_at = now() WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(())
}

/// Whether the stream is stopped (it stopped and has not started again).
pub async fn stopped(client: &PgClient, task: &str) -> Result<bool> {
    Ok(client
        .query_opt(
            "reading whether the stream stopped",
            "SELECT stopped_at IS NOT NULL FROM pgferry.cdc_state WHERE task = $1",
            &[&task],
        )
        .await?
        .is_some_and(|r| r.get(0)))
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

/// What CDC set up on the source while planning.
pub struct CdcSetup {
    pub slot: String,
    pub publication: String,
    pub publication_created: bool,
    pub consistent_point: pgferry_pg::Lsn,
    /// Left out of both the load and the stream (`no_key_tables = "exclude"`).
    pub excluded: Vec<QualifiedName>,
    /// Loaded, but left out of the stream: unlogged tables write no WAL.
    pub unlogged: Vec<QualifiedName>,
    pub binary: bool,
}

/// Records a slot as where the task's stream starts, inside the caller's transaction: at
/// planning, or when a start-over replaces a lost slot (then the old checkpoint, figures,
/// snapshot filters and exclusions go with the old slot).
pub async fn store_cdc_setup(
    tx: &tokio_postgres::Transaction<'_>,
    task: &str,
    setup: &CdcSetup,
) -> Result<()> {
    tx.execute(
        "INSERT INTO pgferry.cdc_state (task, slot_name, publication, publication_created,
                                        consistent_lsn, binary_mode)
         VALUES ($1, $2, $3, $4, $5::text::pg_lsn, $6)
         ON CONFLICT (task) DO UPDATE SET slot_name = excluded.slot_name,
             publication = excluded.publication,
             publication_created = cdc_state.publication_created OR excluded.publication_created,
             consistent_lsn = excluded.consistent_lsn, binary_mode = excluded.binary_mode,
             applied_lsn = NULL, applied_commit_time = NULL, received_lsn = NULL,
             wal_retained_bytes = NULL, start_over_since = NULL, updated_at = now()",
        &[
            &task,
            &setup.slot,
            &setup.publication,
            &setup.publication_created,
            &setup.consistent_point.to_string(),
            &setup.binary,
        ],
    )
    .await
    .map_err(target_err("storing the CDC setup"))?;
    tx.execute("DELETE FROM pgferry.cdc_table WHERE task = $1", &[&task])
        .await
        .map_err(target_err("storing the CDC setup"))?;
    // Both are left out of the stream; only `excluded` tables are left out of the load.
    for t in setup.excluded.iter().chain(&setup.unlogged) {
        tx.execute(
            "INSERT INTO pgferry.cdc_table (task, schema_name, table_name, excluded)
             VALUES ($1, $2, $3, true)",
            &[&task, &t.schema, &t.name],
        )
        .await
        .map_err(target_err("storing the CDC setup"))?;
    }
    Ok(())
}

/// Records, in the caller's transaction, that the task's slot is about to be replaced.
pub async fn mark_start_over(tx: &impl GenericClient, task: &str) -> Result<()> {
    tx.execute(
        "UPDATE pgferry.cdc_state SET start_over_since = coalesce(start_over_since, now())
         WHERE task = $1",
        &[&task],
    )
    .await
    .map_err(target_err("starting over"))?;
    Ok(())
}

/// Makes a relation's rows, as copied from a new snapshot, skip the changes that snapshot
/// already holds (`visibility` is its `xmin:xmax:xip`).
pub async fn set_snapshot_filter(
    tx: &impl GenericClient,
    task: &str,
    relation: &QualifiedName,
    visibility: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO pgferry.cdc_table (task, schema_name, table_name, snapshot_filter)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (task, schema_name, table_name)
         DO UPDATE SET snapshot_filter = excluded.snapshot_filter",
        &[&task, &relation.schema, &relation.name, &visibility],
    )
    .await
    .map_err(target_err("recording a snapshot filter"))?;
    Ok(())
}

/// Tables pgferry set to `REPLICA IDENTITY FULL`, with the identity each had (`d`, `n`).
pub async fn identity_changes(
    client: &PgClient,
    task: &str,
) -> Result<Vec<(QualifiedName, String)>> {
    let rows = client
        .query(
            "reading replica identity changes",
            "SELECT schema_name, table_name, original FROM pgferry.replica_identity_change
             WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                r.get(2),
            )
        })
        .collect())
}

/// Records a replica identity about to be changed, before the change, so `cleanup` can
/// always restore it.
pub async fn record_identity_change(
    client: &impl GenericClient,
    task: &str,
    table: &QualifiedName,
    original: &str,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO pgferry.replica_identity_change (task, schema_name, table_name, original)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&task, &table.schema, &table.name, &original],
        )
        .await
        .map_err(target_err("recording a replica identity change"))?;
    Ok(())
}

/// Forgets a replica identity change once it is restored.
pub async fn forget_identity_change(
    client: &PgClient,
    task: &str,
    table: &QualifiedName,
) -> Result<()> {
    client
        .execute(
            "recording a restored replica identity",
            "DELETE FROM pgferry.replica_identity_change
             WHERE task = $1 AND schema_name = $2 AND table_name = $3",
            &[&task, &table.schema, &table.name],
        )
        .await?;
    Ok(())
}

/// The objects on the source a task's stream created, for `cleanup`.
#[derive(Debug, Clone)]
pub struct StreamObjects {
    pub slot: String,
    pub publication: String,
    /// pgferry created the publication (else it was the user's, and stays).
    pub publication_created: bool,
}

pub async fn stream_objects(client: &PgClient, task: &str) -> Result<Option<StreamObjects>> {
    let row = client
        .query_opt(
            "reading the CDC state",
            "SELECT slot_name, publication, publication_created FROM pgferry.cdc_state
             WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(row.map(|r| StreamObjects {
        slot: r.get(0),
        publication: r.get(1),
        publication_created: r.get(2),
    }))
}

/// Withdraws a drain request and forgets the last drain (a cutover that was aborted).
pub async fn cancel_drain(client: &PgClient, task: &str) -> Result<()> {
    client
        .execute(
            "withdrawing the drain",
            "UPDATE pgferry.cdc_state SET drain_to = NULL, drained_lsn = NULL WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(())
}

/// Moves the stream's checkpoint to `at`, after a rollback: the reverse stream wrote
/// everything the source holds before `at` (it came from the target), so the forward
/// stream goes on from there. Clears the figures and orders of the stream before.
pub async fn restart_stream_at(client: &PgClient, task: &str, at: Lsn) -> Result<()> {
    client
        .execute(
            "moving the stream's checkpoint",
            "UPDATE pgferry.cdc_state SET applied_lsn = $2::text::pg_lsn, received_lsn = NULL,
                 drain_to = NULL, drained_lsn = NULL, stop_requested = false,
                 updated_at = now()
             WHERE task = $1",
            &[&task, &at.to_string()],
        )
        .await?;
    Ok(())
}
