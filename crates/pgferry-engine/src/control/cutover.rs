//! A task's cutover as the control schema records it (`pgferry.cutover` and
//! `pgferry.cutover_step`), on the target.
//!
//! Each step is marked `running` before it starts and `done` in the statement that ends
//! it; a rerun skips what is done and does a running step again, so every step is written
//! to be repeated. The fence is recorded before it is put up (what it changes, so it can
//! be lifted exactly even after a crash half-way), and its WAL position after it is
//! verified.

use pgferry_pg::{Lsn, PgClient};

use crate::error::Result;

/// Which switch a record is: the cutover (source fenced, target opened) or a rollback
/// after it (target fenced, source reopened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Cutover,
    Rollback,
}

impl Switch {
    pub fn as_str(self) -> &'static str {
        match self {
            Switch::Cutover => "cutover",
            Switch::Rollback => "rollback",
        }
    }
}

/// The task's cutover, as far as it went.
#[derive(Debug, Clone)]
pub struct CutoverRow {
    /// `running`, `done` or `aborted`.
    pub state: String,
    /// What the fence changed on the source (see `cutover::fence`), once recorded.
    pub fence: Option<serde_json::Value>,
    pub fence_lsn: Option<Lsn>,
    /// The report of a cutover that ended (done or aborted).
    pub report: Option<serde_json::Value>,
}

pub async fn cutover(client: &PgClient, task: &str, kind: Switch) -> Result<Option<CutoverRow>> {
    let row = client
        .query_opt(
            "reading the cutover",
            "SELECT state, fence, fence_lsn::text, report
             FROM pgferry.cutover WHERE task = $1 AND kind = $2",
            &[&task, &kind.as_str()],
        )
        .await?;
    Ok(row.map(|r| CutoverRow {
        state: r.get(0),
        fence: r.get(1),
        fence_lsn: r.get::<_, Option<&str>>(2).and_then(|s| s.parse().ok()),
        report: r.get(3),
    }))
}

/// Starts a cutover, or goes on with the one that is running; one that was aborted or
/// done before starts afresh.
pub async fn begin_cutover(client: &PgClient, task: &str, kind: Switch) -> Result<()> {
    client
        .execute(
            "starting the cutover",
            "DELETE FROM pgferry.cutover_step WHERE task = $1 AND kind = $2
             AND (SELECT state FROM pgferry.cutover WHERE task = $1 AND kind = $2)
                 <> 'running'",
            &[&task, &kind.as_str()],
        )
        .await?;
    client
        .execute(
            "starting the cutover",
            "INSERT INTO pgferry.cutover (task, kind) VALUES ($1, $2)
             ON CONFLICT (task, kind) DO UPDATE SET state = 'running', started_at = now(),
                 finished_at = NULL, fence = NULL, fence_lsn = NULL, fenced_at = NULL,
                 opened_at = NULL, report = NULL
             WHERE cutover.state <> 'running'",
            &[&task, &kind.as_str()],
        )
        .await?;
    Ok(())
}

/// A step's state: `None` (not begun), `running` or `done`, with its detail.
pub async fn step_state(
    client: &PgClient,
    task: &str,
    kind: Switch,
    step: &str,
) -> Result<Option<(String, Option<serde_json::Value>)>> {
    let row = client
        .query_opt(
            "reading a cutover step",
            "SELECT state, detail FROM pgferry.cutover_step
             WHERE task = $1 AND kind = $3 AND step = $2",
            &[&task, &step, &kind.as_str()],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

pub async fn start_step(
    client: &PgClient,
    task: &str,
    kind: Switch,
    step: &str,
    ordinal: i32,
) -> Result<()> {
    client
        .execute(
            "recording a cutover step",
            "INSERT INTO pgferry.cutover_step (task, kind, step, ordinal, state)
             VALUES ($1, $4, $2, $3, 'running')
             ON CONFLICT (task, kind, step) DO UPDATE SET state = 'running',
                 started_at = clock_timestamp(), finished_at = NULL",
            &[&task, &step, &ordinal, &kind.as_str()],
        )
        .await?;
    Ok(())
}

pub async fn finish_step(
    client: &PgClient,
    task: &str,
    kind: Switch,
    step: &str,
    detail: &serde_json::Value,
) -> Result<()> {
    client
        .execute(
            "recording a finished cutover step",
            "UPDATE pgferry.cutover_step SET state = 'done', finished_at = clock_timestamp(),
                 detail = $3
             WHERE task = $1 AND kind = $4 AND step = $2",
            &[&task, &step, detail, &kind.as_str()],
        )
        .await?;
    Ok(())
}

/// One step as recorded, for the report.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub step: String,
    pub state: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub detail: Option<serde_json::Value>,
}

pub async fn steps(client: &PgClient, task: &str, kind: Switch) -> Result<Vec<StepRecord>> {
    let rows = client
        .query(
            "reading the cutover steps",
            "SELECT step, state, started_at, finished_at, detail FROM pgferry.cutover_step
             WHERE task = $1 AND kind = $2 ORDER BY ordinal",
            &[&task, &kind.as_str()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StepRecord {
            step: r.get(0),
            state: r.get(1),
            started_at: r.get(2),
            finished_at: r.get(3),
            detail: r.get(4),
        })
        .collect())
}

/// Records what the fence is about to change, before it changes it. Kept as first
/// written: a rerun that finds the source already fenced must not take the fenced state
/// for the one to restore.
pub async fn record_fence_plan(
    client: &PgClient,
    task: &str,
    kind: Switch,
    fence: &serde_json::Value,
) -> Result<()> {
    client
        .execute(
            "recording the fence",
            "UPDATE pgferry.cutover SET fence = coalesce(fence, $2)
             WHERE task = $1 AND kind = $3",
            &[&task, fence, &kind.as_str()],
        )
        .await?;
    Ok(())
}

/// Records the verified fence and the source's WAL position after it.
pub async fn record_fenced(client: &PgClient, task: &str, kind: Switch, lsn: Lsn) -> Result<()> {
    client
        .execute(
            "recording the fence",
            "UPDATE pgferry.cutover SET fence_lsn = $2::text::pg_lsn,
                 fenced_at = coalesce(fenced_at, now())
             WHERE task = $1 AND kind = $3",
            &[&task, &lsn.to_string(), &kind.as_str()],
        )
        .await?;
    Ok(())
}

/// Records the side opened: the write probe succeeded.
pub async fn record_opened(client: &PgClient, task: &str, kind: Switch) -> Result<()> {
    client
        .execute(
            "recording the opened side",
            "UPDATE pgferry.cutover SET opened_at = coalesce(opened_at, clock_timestamp())
             WHERE task = $1 AND kind = $2",
            &[&task, &kind.as_str()],
        )
        .await?;
    Ok(())
}

/// Ends the cutover: `done` with its report, or `aborted`.
pub async fn end_cutover(
    client: &PgClient,
    task: &str,
    kind: Switch,
    state: &str,
    report: Option<&serde_json::Value>,
) -> Result<()> {
    client
        .execute(
            "ending the cutover",
            "UPDATE pgferry.cutover SET state = $2, finished_at = now(),
                 report = coalesce($3, report)
             WHERE task = $1 AND kind = $4",
            &[&task, &state, &report, &kind.as_str()],
        )
        .await?;
    Ok(())
}

/// Writes a row into a pgferry table on the opened target, reads it back and removes it:
/// the runbook's "post-cutover write test". Returns whether the row came back.
pub async fn write_probe(client: &PgClient, task: &str, token: &str) -> Result<bool> {
    let row = client
        .query_one(
            "writing the probe row",
            "WITH w AS (INSERT INTO pgferry.write_probe (task, token) VALUES ($1, $2)
                        RETURNING token)
             SELECT token FROM w",
            &[&task, &token],
        )
        .await?;
    let back: String = row.get(0);
    client
        .execute(
            "removing the probe row",
            "DELETE FROM pgferry.write_probe WHERE task = $1 AND token = $2",
            &[&task, &token],
        )
        .await?;
    Ok(back == token)
}

/// How many apply exceptions the task has recorded.
pub async fn exception_count(client: &PgClient, task: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "counting apply exceptions",
            "SELECT count(*) FROM pgferry.apply_exceptions WHERE task = $1",
            &[&task],
        )
        .await?
        .get(0))
}

/// The stream's last measured lag to the target, in milliseconds, and how old that
/// measurement is, in seconds.
pub async fn stream_lag(client: &PgClient, task: &str) -> Result<Option<(Option<i64>, f64)>> {
    let row = client
        .query_opt(
            "reading the lag",
            "SELECT target_latency_ms, extract(epoch FROM now() - updated_at)::float8
             FROM pgferry.cdc_state WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Tables a policy suspended from the stream.
pub async fn suspended_tables(client: &PgClient, task: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "reading suspended tables",
            "SELECT format('%I.%I', schema_name, table_name) FROM pgferry.cdc_table
             WHERE task = $1 AND suspended ORDER BY 1",
            &[&task],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
