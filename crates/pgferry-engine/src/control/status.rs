//! `pgferry status`: a task's state, read from the control schema by any process. Reads
//! only; a crash or a concurrent `run` leaves nothing to clean up.

use chrono::{DateTime, Utc};
use pgferry_pg::{PgClient, QualifiedName};
use serde::Serialize;

use crate::control::{self, Event};
use crate::error::{EngineError, Result};

/// One table's load state.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub table: String,
    pub target: String,
    pub state: String,
    pub copy_format: String,
    pub rows: i64,
    pub bytes: i64,
    pub estimated_rows: Option<i64>,
    pub estimated_bytes: i64,
    pub percent: f64,
    pub chunks_done: i32,
    pub chunks_total: i32,
    pub seconds: Option<f64>,
    pub error: Option<String>,
    /// How chunks split the table: `blocks`, `key <column>`, or `whole`.
    pub split: String,
    /// Why a table bigger than one chunk is copied in one piece.
    pub split_note: Option<String>,
    /// A `full-load-and-cdc` load that loses its snapshot keeps this table's finished
    /// chunks (split by a key in its replica identity, not a partition); otherwise a partly
    /// copied table
    /// is copied again whole.
    pub resumes_by_chunk: bool,
}

/// Counts over all tables.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub tables: usize,
    pub tables_loaded: usize,
    pub tables_failed: usize,
    pub rows: i64,
    pub bytes: i64,
    pub chunks_done: i64,
    pub chunks_total: i64,
}

/// A schema step that did not succeed.
#[derive(Debug, Clone, Serialize)]
pub struct StepProblem {
    pub object: String,
    pub state: String,
    pub note: Option<String>,
}

/// Progress of the schema restore.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SchemaStatus {
    pub pre_data_total: i64,
    pub pre_data_done: i64,
    pub post_data_total: i64,
    pub post_data_done: i64,
    pub skipped: i64,
    pub failed: i64,
    pub problems: Vec<StepProblem>,
}

/// The latest validation of a table.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationStatus {
    pub table: String,
    pub outcome: String,
    pub checked_at: DateTime<Utc>,
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
}

/// An apply exception, as `status` shows it (without the row's values).
#[derive(Debug, Clone, Serialize)]
pub struct ExceptionSummary {
    pub at: DateTime<Utc>,
    pub table: String,
    pub operation: String,
    pub policy: String,
    pub error: String,
}

/// Change data capture, for tasks that stream.
#[derive(Debug, Clone, Serialize)]
pub struct CdcStatus {
    pub slot: String,
    pub publication: String,
    /// Binary tuple data (else text).
    pub binary: bool,
    /// Where the stream started: the end of the full load's snapshot.
    pub consistent_lsn: String,
    /// The checkpoint: end of the last source transaction committed on the target.
    pub applied_lsn: Option<String>,
    /// The newest source position seen.
    pub received_lsn: Option<String>,
    /// Source commit time of the last transaction applied.
    pub applied_commit_time: Option<DateTime<Utc>>,
    /// Milliseconds from a change's commit on the source to its arrival at pgferry.
    pub source_latency_ms: Option<i64>,
    /// Milliseconds from a change's commit on the source to its commit on the target.
    pub target_latency_ms: Option<i64>,
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub truncates: i64,
    pub transactions: i64,
    pub exceptions: i64,
    /// WAL the slot holds back on the source, when last measured.
    pub wal_retained_bytes: Option<i64>,
    pub stop_requested: bool,
    pub streaming_since: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub suspended_tables: Vec<String>,
    pub excluded_tables: Vec<String>,
    /// Tables pgferry set to REPLICA IDENTITY FULL; `cleanup` restores them.
    pub replica_identity_changed: Vec<String>,
    pub recent_exceptions: Vec<ExceptionSummary>,
    /// The last schema changes the stream carried (`[cdc] ddl`), newest first.
    pub recent_ddl: Vec<super::DdlRecord>,
    /// Schema changes the target refused, in all.
    pub ddl_failed: i64,
}

async fn cdc_status(client: &PgClient, task: &str) -> Result<Option<CdcStatus>> {
    let has = client
        .query_one(
            "looking for CDC state",
            "SELECT to_regclass('pgferry.cdc_state') IS NOT NULL",
            &[],
        )
        .await?
        .get::<_, bool>(0);
    if !has {
        return Ok(None);
    }
    let Some(r) = client
        .query_opt(
            "reading the CDC state",
            "SELECT slot_name, publication, coalesce(binary_mode, false), consistent_lsn::text,
                    applied_lsn::text, received_lsn::text, applied_commit_time,
                    source_latency_ms, target_latency_ms, inserts, updates, deletes,
                    truncates, transactions, exceptions, wal_retained_bytes, stop_requested,
                    streaming_since, updated_at
             FROM pgferry.cdc_state WHERE task = $1",
            &[&task],
        )
        .await?
    else {
        return Ok(None);
    };
    let suspended = table_names(
        client,
        "reading suspended tables",
        "SELECT schema_name, table_name FROM pgferry.cdc_table
         WHERE task = $1 AND suspended ORDER BY 1, 2",
        task,
    )
    .await?;
    let excluded = table_names(
        client,
        "reading excluded tables",
        "SELECT schema_name, table_name FROM pgferry.cdc_table
         WHERE task = $1 AND excluded ORDER BY 1, 2",
        task,
    )
    .await?;
    let changed = table_names(
        client,
        "reading replica identity changes",
        "SELECT schema_name, table_name FROM pgferry.replica_identity_change
         WHERE task = $1 ORDER BY 1, 2",
        task,
    )
    .await?;
    let recent = client
        .query(
            "reading apply exceptions",
            "SELECT at, schema_name, table_name, operation, policy, error FROM (
                 SELECT * FROM pgferry.apply_exceptions WHERE task = $1 ORDER BY id DESC LIMIT 10
             ) e ORDER BY id",
            &[&task],
        )
        .await?
        .iter()
        .map(|e| ExceptionSummary {
            at: e.get(0),
            table: QualifiedName::new(e.get::<_, String>(1), e.get::<_, String>(2)).to_string(),
            operation: e.get(3),
            policy: e.get(4),
            error: e.get(5),
        })
        .collect();
    let (recent_ddl, ddl_failed) = super::recent_ddl(client, task, 10).await?;
    Ok(Some(CdcStatus {
        slot: r.get(0),
        publication: r.get(1),
        binary: r.get(2),
        consistent_lsn: r.get(3),
        applied_lsn: r.get(4),
        received_lsn: r.get(5),
        applied_commit_time: r.get(6),
        source_latency_ms: r.get(7),
        target_latency_ms: r.get(8),
        inserts: r.get(9),
        updates: r.get(10),
        deletes: r.get(11),
        truncates: r.get(12),
        transactions: r.get(13),
        exceptions: r.get(14),
        wal_retained_bytes: r.get(15),
        stop_requested: r.get(16),
        streaming_since: r.get(17),
        updated_at: r.get(18),
        suspended_tables: suspended,
        excluded_tables: excluded,
        replica_identity_changed: changed,
        recent_exceptions: recent,
        recent_ddl,
        ddl_failed,
    }))
}

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    pub task: String,
    pub migration_type: String,
    pub phase: String,
    pub source: String,
    pub target: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub load_started_at: Option<DateTime<Utc>>,
    pub load_finished_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Whether a `run` holds the task right now.
    pub running: bool,
    pub totals: Totals,
    pub tables: Vec<TableStatus>,
    pub schema: SchemaStatus,
    pub validation: Vec<ValidationStatus>,
    /// For tasks that stream changes.
    pub cdc: Option<CdcStatus>,
    /// The cutover: its state (`running`, `done`, `aborted`) and, once it ended, its report.
    pub cutover: Option<CutoverStatus>,
    /// The last rollback, like the cutover.
    pub rollback: Option<CutoverStatus>,
    /// After a cutover: the stream of the target's changes back to the source, as the
    /// source's control schema records it ([`reverse_status`]; `status` leaves it out).
    pub reverse: Option<ReverseStatus>,
    pub events: Vec<Event>,
}

/// The reverse stream, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReverseStatus {
    /// Whether a `run` streams it right now.
    pub running: bool,
    pub stream: Option<CdcStatus>,
}

/// The reverse stream's state from the source's control schema (a read-write session is
/// not needed); `None` when the source has none.
pub async fn reverse_status(source: &PgClient, task: &str) -> Result<Option<ReverseStatus>> {
    if control::find_task(source, task).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(ReverseStatus {
        running: control::is_running(source, task).await?,
        stream: cdc_status(source, task).await?,
    }))
}

/// A task's cutover, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverStatus {
    pub state: String,
    pub report: Option<serde_json::Value>,
}

/// How many recent events `status` shows.
const EVENTS_SHOWN: i64 = 20;

pub async fn status(client: &PgClient, task: &str) -> Result<TaskStatus> {
    let unknown = || EngineError::UnknownTask {
        task: task.to_owned(),
    };
    if !control::schema_exists(client).await? {
        return Err(unknown());
    }
    let row = control::load_task(client, task)
        .await?
        .ok_or_else(unknown)?;
    let tables = table_states(client, task).await?;
    let totals = Totals {
        tables: tables.len(),
        tables_loaded: tables.iter().filter(|t| t.state == "loaded").count(),
        tables_failed: tables.iter().filter(|t| t.state == "failed").count(),
        rows: tables.iter().map(|t| t.rows).sum(),
        bytes: tables.iter().map(|t| t.bytes).sum(),
        chunks_done: tables.iter().map(|t| i64::from(t.chunks_done)).sum(),
        chunks_total: tables.iter().map(|t| i64::from(t.chunks_total)).sum(),
    };
    let schema = schema_status(client, task).await?;
    let validation = validations(client, task).await?;
    let running = control::is_running(client, task).await?;
    Ok(TaskStatus {
        task: row.name,
        migration_type: row.migration_type,
        phase: row.phase.as_str().to_owned(),
        source: row.source,
        target: row.target,
        created_at: row.created_at,
        updated_at: row.updated_at,
        load_started_at: row.load_started_at,
        load_finished_at: row.load_finished_at,
        finished_at: row.finished_at,
        last_error: row.last_error,
        running,
        totals,
        tables,
        schema,
        validation,
        cdc: cdc_status(client, task).await?,
        cutover: cutover_status(client, task, control::cutover::Switch::Cutover).await?,
        rollback: cutover_status(client, task, control::cutover::Switch::Rollback).await?,
        reverse: None,
        events: control::recent_events(client, task, EVENTS_SHOWN).await?,
    })
}

async fn table_states(client: &PgClient, task: &str) -> Result<Vec<TableStatus>> {
    let tables: Vec<TableStatus> = client
        .query(
            "reading table states",
            "SELECT source_schema, source_table, target_schema, target_table, state, copy_format,
                    rows_copied, bytes_copied, estimated_rows, estimated_bytes, chunks_done,
                    chunks_total, extract(epoch FROM finished_at - started_at)::float8, last_error,
                    split_key->>'column', split_note,
                    coalesce((split_key->>'identity')::boolean, false)
                    AND root_table IS NULL
             FROM pgferry.table_state WHERE task = $1 ORDER BY table_id",
            &[&task],
        )
        .await?
        .iter()
        .map(|r| {
            let state: String = r.get(4);
            let rows: i64 = r.get(6);
            let estimated_rows: Option<i64> = r.get(8);
            let chunks_done: i32 = r.get(10);
            let chunks_total: i32 = r.get(11);
            let percent = if state == "loaded" {
                100.0
            } else {
                match estimated_rows {
                    Some(e) if e > 0 => (rows as f64 * 100.0 / e as f64).min(99.9),
                    _ => chunks_done as f64 * 100.0 / chunks_total.max(1) as f64,
                }
            };
            TableStatus {
                table: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)).to_string(),
                target: QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3))
                    .to_string(),
                state,
                copy_format: r.get(5),
                rows,
                bytes: r.get(7),
                estimated_rows,
                estimated_bytes: r.get(9),
                percent,
                chunks_done,
                chunks_total,
                seconds: r.get(12),
                error: r.get(13),
                split: match r.get::<_, Option<String>>(14) {
                    Some(column) => format!("key {column}"),
                    None if chunks_total > 1 => "blocks".to_owned(),
                    None => "whole".to_owned(),
                },
                split_note: r.get(15),
                resumes_by_chunk: r.get(16),
            }
        })
        .collect();
    Ok(tables)
}

async fn schema_status(client: &PgClient, task: &str) -> Result<SchemaStatus> {
    let counts = client
        .query_one(
            "reading schema steps",
            "SELECT count(*) FILTER (WHERE section = 'pre-data'),
                    count(*) FILTER (WHERE section = 'pre-data' AND state = 'done'),
                    count(*) FILTER (WHERE section = 'post-data'),
                    count(*) FILTER (WHERE section = 'post-data' AND state = 'done'),
                    count(*) FILTER (WHERE state = 'skipped'),
                    count(*) FILTER (WHERE state = 'failed')
             FROM pgferry.schema_step WHERE task = $1",
            &[&task],
        )
        .await?;
    let problems = client
        .query(
            "reading schema problems",
            "SELECT label, state, note FROM pgferry.schema_step
             WHERE task = $1 AND state IN ('failed', 'skipped') ORDER BY ordinal LIMIT 50",
            &[&task],
        )
        .await?
        .iter()
        .map(|r| StepProblem {
            object: r.get(0),
            state: r.get(1),
            note: r.get(2),
        })
        .collect();
    let schema = SchemaStatus {
        pre_data_total: counts.get(0),
        pre_data_done: counts.get(1),
        post_data_total: counts.get(2),
        post_data_done: counts.get(3),
        skipped: counts.get(4),
        failed: counts.get(5),
        problems,
    };
    Ok(schema)
}

async fn validations(client: &PgClient, task: &str) -> Result<Vec<ValidationStatus>> {
    let validation = client
        .query(
            "reading validation results",
            "SELECT source_schema, source_table, outcome, checked_at, source_rows, target_rows
             FROM pgferry.validation WHERE task = $1 ORDER BY source_schema, source_table",
            &[&task],
        )
        .await?
        .iter()
        .map(|r| ValidationStatus {
            table: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)).to_string(),
            outcome: r.get(2),
            checked_at: r.get(3),
            source_rows: r.get(4),
            target_rows: r.get(5),
        })
        .collect();
    Ok(validation)
}

/// Runs a control query for a task that returns (schema, table) rows, as display names.
async fn table_names(
    client: &PgClient,
    context: &str,
    sql: &str,
    task: &str,
) -> Result<Vec<String>> {
    let rows = client.query(context, sql, &[&task]).await?;
    Ok(rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)).to_string())
        .collect())
}

async fn cutover_status(
    client: &PgClient,
    task: &str,
    kind: control::cutover::Switch,
) -> Result<Option<CutoverStatus>> {
    let has = client
        .query_one(
            "looking for a cutover",
            "SELECT to_regclass('pgferry.cutover') IS NOT NULL",
            &[],
        )
        .await?
        .get::<_, bool>(0);
    if !has {
        return Ok(None);
    }
    Ok(control::cutover::cutover(client, task, kind)
        .await?
        .map(|c| CutoverStatus {
            state: c.state,
            report: c.report,
        }))
}
