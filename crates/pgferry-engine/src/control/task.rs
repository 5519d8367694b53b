//! The task's row: its phase, the times it reached each, and its last error.

use pgferry_pg::{PgClient, QualifiedName};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::target_err;
use crate::error::Result;

/// Where a task is. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The plan and schema are stored; the pre-data schema is not restored yet.
    Planned,
    /// Tables exist on the target; chunks are being copied.
    Loading,
    /// All rows are copied; indexes, constraints and the rest are being built.
    PostData,
    /// Sequences and statistics.
    Finishing,
    /// Streaming changes (full-load-and-cdc, cdc).
    Cdc,
    /// Cut over: the target is open for the application's writes and the source stays
    /// fenced.
    CutOver,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Loading => "loading",
            Phase::PostData => "post-data",
            Phase::Finishing => "finishing",
            Phase::Cdc => "cdc",
            Phase::CutOver => "cut-over",
            Phase::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "planned" => Phase::Planned,
            "loading" => Phase::Loading,
            "post-data" => Phase::PostData,
            "finishing" => Phase::Finishing,
            "cdc" => Phase::Cdc,
            "cut-over" => Phase::CutOver,
            "done" => Phase::Done,
            _ => return None,
        })
    }
}

/// The stored row of a task.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub name: String,
    pub migration_type: String,
    pub phase: Phase,
    pub schema_preamble: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub load_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub load_finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub source: String,
    pub target: String,
    /// Selected tables that were on the target before the load.
    pub existing_tables: Vec<QualifiedName>,
}

pub async fn load_task(client: &PgClient, task: &str) -> Result<Option<TaskRow>> {
    let row = client
        .query_opt(
            "reading the task",
            "SELECT name, migration_type, phase, schema_preamble, created_at, updated_at,
                    load_started_at, load_finished_at, finished_at, last_error, source, target,
                    existing_tables
             FROM pgferry.task WHERE name = $1",
            &[&task],
        )
        .await?;
    Ok(row.map(|r| TaskRow {
        name: r.get(0),
        migration_type: r.get(1),
        phase: Phase::parse(r.get::<_, &str>(2)).unwrap_or(Phase::Planned),
        schema_preamble: r.get(3),
        created_at: r.get(4),
        updated_at: r.get(5),
        load_started_at: r.get(6),
        load_finished_at: r.get(7),
        finished_at: r.get(8),
        last_error: r.get(9),
        source: r.get(10),
        target: r.get(11),
        existing_tables: serde_json::from_value(r.get(12)).unwrap_or_default(),
    }))
}

/// Moves the task to `phase` and commits at once, synchronously. Chunks and schema steps
/// commit asynchronously (their rows and their done mark together, so a crash loses both
/// or neither); a synchronous commit flushes the WAL up to itself, which makes every
/// earlier commit durable with it. So once a phase change is acknowledged, everything the
/// phase before it recorded as done survives any crash of the target. Callers check the
/// control schema, never their memory, before they call this (`graph::load_done`).
pub async fn advance_phase(client: &mut PgClient, task: &str, phase: Phase) -> Result<()> {
    let tx = client
        .raw_mut()
        .transaction()
        .await
        .map_err(target_err("recording the task's phase"))?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(target_err("recording the task's phase"))?;
    set_phase(&tx, task, phase).await?;
    tx.commit()
        .await
        .map_err(target_err("recording the task's phase"))
}

/// Moves the task to `phase` inside the caller's transaction, stamping the matching times.
/// The caller commits, synchronously (see [`advance_phase`]).
pub async fn set_phase(client: &impl GenericClient, task: &str, phase: Phase) -> Result<()> {
    client
        .execute(
            "UPDATE pgferry.task SET phase = $2, updated_at = now(),
                    load_started_at = CASE WHEN $2 = 'loading'
                        THEN coalesce(load_started_at, now()) ELSE load_started_at END,
                    load_finished_at = CASE WHEN $2 = 'post-data'
                        THEN coalesce(load_finished_at, now()) ELSE load_finished_at END,
                    finished_at = CASE WHEN $2 = 'done' THEN now() ELSE finished_at END,
                    last_error = NULL
             WHERE name = $1",
            &[&task, &phase.as_str()],
        )
        .await
        .map_err(target_err("recording the task's phase"))?;
    Ok(())
}

/// Records the error that stopped a run, for `status`.
pub async fn set_last_error(client: &PgClient, task: &str, message: &str) -> Result<()> {
    client
        .execute(
            "recording the task's error",
            "UPDATE pgferry.task SET last_error = $2, updated_at = now() WHERE name = $1",
            &[&task, &message],
        )
        .await?;
    Ok(())
}

/// A task's row as planning stores it.
#[derive(Debug)]
pub struct NewTask<'a> {
    pub name: &'a str,
    pub migration_type: &'a str,
    pub settings: serde_json::Value,
    pub source: String,
    pub target: String,
    /// The source schema's dump; `None` for a CDC-only task, which restores no schema.
    pub schema_archive: Option<&'a [u8]>,
    pub schema_preamble: Option<&'a str>,
    pub existing_tables: serde_json::Value,
    /// `planned` for a task that loads, `cdc` for one that only streams.
    pub phase: Phase,
}

/// Stores a new task, in the planning transaction.
pub async fn insert_task(
    tx: &impl GenericClient,
    t: &NewTask<'_>,
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO pgferry.task (name, migration_type, settings, phase, source, target,
                                   schema_archive, schema_preamble, existing_tables)
         VALUES ($1, $2, $3, $9, $4, $5, $6, $7, $8)",
        &[
            &t.name,
            &t.migration_type,
            &t.settings,
            &t.source,
            &t.target,
            &t.schema_archive,
            &t.schema_preamble,
            &t.existing_tables,
            &t.phase.as_str(),
        ],
    )
    .await?;
    Ok(())
}

/// Clears the load's times, in a start-over's transaction: the second load's become the
/// task's.
pub async fn forget_load_times(tx: &impl GenericClient, task: &str) -> Result<()> {
    tx.execute(
        "UPDATE pgferry.task SET load_started_at = NULL, load_finished_at = NULL WHERE name = $1",
        &[&task],
    )
    .await
    .map_err(target_err("starting over"))?;
    Ok(())
}

/// The task's row, or `None` when the target has no control schema or no such task.
pub async fn find_task(client: &PgClient, task: &str) -> Result<Option<TaskRow>> {
    if !super::schema_exists(client).await? {
        return Ok(None);
    }
    load_task(client, task).await
}
