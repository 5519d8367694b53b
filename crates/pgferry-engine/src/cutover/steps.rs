//! The step machine a cutover and a rollback share: each step is recorded `running` before
//! it starts and `done` when it ends; a rerun skips what is done and does a running step
//! again, so every step is written to be repeated. The report is assembled from the
//! records, never from memory, so a rerun after a crash reports the whole switch.

use pgferry_pg::PgClient;

use super::report::{self, CutoverReport, StepReport};
use crate::control::cutover::Switch;
use crate::control::{self, Level};
use crate::error::Result;

/// One switch's steps.
pub(super) trait Steps {
    const KIND: Switch;
    const NAMES: &'static [&'static str];
    /// Does one step (safe to repeat) and returns what the report keeps of it.
    async fn step(&self, step: &str) -> Result<serde_json::Value>;
}

/// Runs every step not done yet, in order.
pub(super) async fn run_all<S: Steps>(s: &S, control: &PgClient, task: &str) -> Result<()> {
    let kind = S::KIND;
    control::cutover::begin_cutover(control, task, kind).await?;
    for (ordinal, step) in S::NAMES.iter().enumerate() {
        if let Some((state, _)) = control::cutover::step_state(control, task, kind, step).await?
            && state == "done"
        {
            continue;
        }
        control::cutover::start_step(control, task, kind, step, ordinal as i32).await?;
        control::event(
            control.raw(),
            task,
            Level::Info,
            kind.as_str(),
            &format!("{} step {step} begins", kind.as_str()),
            None,
        )
        .await?;
        let detail = s.step(step).await?;
        control::cutover::finish_step(control, task, kind, step, &detail).await?;
    }
    Ok(())
}

/// Ends the switch (`done` or `aborted`) and stores its report.
pub(super) async fn end(
    task: &str,
    control: &PgClient,
    kind: Switch,
    state: &str,
) -> Result<CutoverReport> {
    let report = assemble(task, control, kind, state).await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    control::cutover::end_cutover(control, task, kind, state, Some(&json)).await?;
    let message = match (state, report.downtime_seconds) {
        ("done", Some(d)) => format!("{} done; downtime {d:.1} s", kind.as_str()),
        _ => format!("{} {state}", kind.as_str()),
    };
    let level = if state == "done" {
        Level::Info
    } else {
        Level::Warning
    };
    control::event(control.raw(), task, level, kind.as_str(), &message, None).await?;
    Ok(report)
}

/// The report from what the control schema recorded.
pub(super) async fn assemble(
    task: &str,
    control: &PgClient,
    kind: Switch,
    state: &str,
) -> Result<CutoverReport> {
    let steps: Vec<StepReport> = control::cutover::steps(control, task, kind)
        .await?
        .into_iter()
        .map(StepReport::from)
        .collect();
    let detail = |step: &str, key: &str| {
        steps
            .iter()
            .find(|s| s.step == step)
            .and_then(|s| s.detail.as_ref())
            .and_then(|d| d.get(key))
            .cloned()
    };
    let fence_started = steps
        .iter()
        .find(|s| s.step == "fence")
        .map(|s| s.started_at);
    let opened = steps
        .iter()
        .find(|s| s.step == "open")
        .and_then(|s| s.finished_at);
    Ok(CutoverReport {
        task: task.to_owned(),
        kind: kind.as_str().to_owned(),
        state: state.to_owned(),
        fence_lsn: detail("fence", "fence_lsn").and_then(|v| v.as_str().map(str::to_owned)),
        drained_lsn: detail("drain", "drained_lsn").and_then(|v| v.as_str().map(str::to_owned)),
        downtime_seconds: fence_started
            .zip(opened)
            .map(|(f, o)| (o - f).num_milliseconds() as f64 / 1000.0),
        sequences: detail("sequences", "sequences").and_then(|v| v.as_i64()),
        validation: detail("validate", "tables")
            .and_then(|v| serde_json::from_value::<Vec<report::CheckedTable>>(v).ok())
            .unwrap_or_default(),
        reverse: detail("open", "reverse").filter(|v| !v.is_null()),
        plan: Vec::new(),
        steps,
    })
}
