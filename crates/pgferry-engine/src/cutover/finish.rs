//! `pgferry finish`: after the confidence period, ends the way back and cleans up both
//! sides. The reverse stream is drained and stopped (refused if changes on the target are
//! still unapplied on the source, unless forced); its slot and publication are dropped on
//! the target and its control schema on the source; the forward slot and publication are
//! dropped on the source and replica identities pgferry changed are restored. The task is
//! then `done`.
//!
//! Every part is safe to repeat, so a crash half-way is finished by running it again. The
//! source stays fenced unless `--unfence-source` says otherwise: it is the old copy now,
//! and a write that reached it by mistake would be lost.

use std::time::Duration;

use pgferry_config::Task;
use pgferry_pg::{PgClient, Side};
use serde::Serialize;

use super::{fence, recorded_fence};
use crate::cdc::source::Cleaned;
use crate::control::cutover::Switch;
use crate::control::{self, Level, Phase};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::reverse::{self, TornDown};

/// How `pgferry finish` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct FinishOptions {
    /// Finish even with changes on the target that the source has not received.
    pub force: bool,
    /// Keep the reverse stream's control schema on the source.
    pub keep_control: bool,
    /// Lift the cutover's fence on the source.
    pub unfence_source: bool,
    /// The longest the reverse stream may take to catch up before it stops.
    pub drain_wait: Option<Duration>,
}

/// What `pgferry finish` did.
#[derive(Debug, Clone, Serialize)]
pub struct FinishReport {
    pub task: String,
    /// Changes on the target the source had not received when it finished (forced).
    pub unapplied_changes: i64,
    pub reverse: TornDown,
    pub forward: Cleaned,
    pub source_unfenced: bool,
}

pub async fn finish(task: &Task, options: FinishOptions) -> Result<FinishReport> {
    let endpoints = Endpoints::resolve(task)?;
    let control = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry finish").await?;
    let Some(row) = control::find_task(&control, &task.name).await? else {
        return Err(EngineError::UnknownTask {
            task: task.name.clone(),
        });
    };
    control::lock_task(&control, &format!("{}/cutover", task.name), "finish").await?;
    if !matches!(row.phase, Phase::CutOver | Phase::Done) {
        return Err(refused(
            task,
            format!(
                "the task is in phase {}: finish comes after a cutover (`pgferry cleanup` \
                 drops a task's slot and publication without one)",
                row.phase.as_str()
            ),
        ));
    }
    let unapplied = stop_reverse(task, &endpoints, &control, options).await?;
    if unapplied > 0 && !options.force {
        return Err(refused(
            task,
            format!(
                "{unapplied} change(s) made on the target are not applied on the source yet; \
                 start `pgferry run` so the reverse stream applies them, or finish with \
                 --force to give them up on the source"
            ),
        ));
    }
    let torn = reverse::teardown(task, &endpoints, options.keep_control).await?;
    let source = pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry finish").await?;
    let forward = crate::cdc::source::cleanup(&source, &control, &task.name).await?;
    let mut unfenced = false;
    if options.unfence_source
        && let Some(plan) = recorded_fence(&control, &task.name, Switch::Cutover).await?
    {
        fence::lift(&source, &plan).await?;
        unfenced = true;
    }
    control::set_phase(control.raw(), &task.name, Phase::Done).await?;
    let message = format!(
        "finished: reverse slot {}, forward slot {} dropped{}",
        torn.slot_dropped.as_deref().unwrap_or("(none)"),
        forward.slot_dropped.as_deref().unwrap_or("(none)"),
        if unfenced { "; source unfenced" } else { "" }
    );
    control::event(
        control.raw(),
        &task.name,
        Level::Info,
        "finish",
        &message,
        None,
    )
    .await?;
    Ok(FinishReport {
        task: task.name.clone(),
        unapplied_changes: unapplied,
        reverse: torn,
        forward,
        source_unfenced: unfenced,
    })
}

fn refused(task: &Task, problem: String) -> EngineError {
    EngineError::CutoverRefused {
        what: "finish",
        task: task.name.clone(),
        problems: vec![problem],
    }
}

/// Drains a running reverse stream to the target's position now and stops it; then counts
/// the changes its slot still holds. Zero when there is no reverse stream.
async fn stop_reverse(
    task: &Task,
    endpoints: &Endpoints,
    control: &PgClient,
    options: FinishOptions,
) -> Result<i64> {
    let Some(reverse_control) = reverse::source_control(endpoints, &task.name).await? else {
        return Ok(0);
    };
    // A run that holds the task on the target is about to stream back (right after a
    // cutover): wait for it, so that it is stopped rather than raced.
    if reverse::wait_for_run(control, &reverse_control, &task.name).await? {
        let wait = options.drain_wait.unwrap_or(Duration::from_secs(120));
        let drained = crate::cdc::drain(task, None, wait).await;
        if let Err(e) = &drained
            && !options.force
        {
            return Err(refused(
                task,
                format!("the reverse stream did not catch up: {e}; wait, or use --force"),
            ));
        }
        crate::cdc::request_stop(task, Duration::from_secs(120)).await?;
    }
    let Some(objects) = control::stream_objects(&reverse_control, &task.name).await? else {
        return Ok(0);
    };
    let target = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry finish").await?;
    pending_changes(&target, &objects.slot, &objects.publication).await
}

/// Row changes a slot holds that were not confirmed, read without consuming them.
async fn pending_changes(target: &PgClient, slot: &str, publication: &str) -> Result<i64> {
    let exists = target
        .query_one(
            "looking for the reverse slot",
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await?
        .get::<_, bool>(0);
    if !exists {
        return Ok(0);
    }
    // pgoutput's message types: I(nsert), U(pdate), D(elete), T(runcate). The walsender of
    // the stream just stopped may hold the slot a moment longer (55006, object in use).
    let mut attempts = 0;
    loop {
        let counted = target
            .query_one(
                "counting the reverse stream's unapplied changes",
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
                     'proto_version', '1', 'publication_names', $2)
                 WHERE get_byte(data, 0) IN (73, 85, 68, 84)",
                &[&slot, &publication],
            )
            .await;
        match counted {
            Err(e) if e.sqlstate() == Some("55006") && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return Ok(other?.get(0)),
        }
    }
}
