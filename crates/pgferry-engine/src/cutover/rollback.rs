//! `pgferry rollback`: back to the source after a cutover, with every write the application
//! made on the target since (runbook scenario 2, without its loss).
//!
//! ```text
//!   checks ──► fence ──► drain ──► sequences ──► validate ──► open
//!   reverse    target     reverse   set on the    rows and     stop reverse, forward
//!   streams    read-only  stream to source from   checksums    stream restarts, source
//!                         the fence the target                 fence lifted, probe
//! ```
//!
//! The cutover's step machine, the other way round, recorded as `kind = 'rollback'`. What
//! a crash leaves at each point:
//! * before the fence is recorded: nothing changed;
//! * fence to validate: a fenced target, and a source that holds everything the reverse
//!   stream applied; a rerun goes on, `--abort` lifts the target's fence and the reverse
//!   stream goes on;
//! * during the open, while the phase is still `cut-over`: the reverse stream may be
//!   stopped and the forward checkpoint moved; a rerun does both again (the source is
//!   still fenced, so the position it reads is past every reverse write and before any
//!   application write);
//! * after the phase is back to `cdc`: the reverse stream's objects are gone and the
//!   forward stream owns the task again; a rerun lifts the source's fence, runs the
//!   commands and probes again.
//!
//! The target stays fenced after a rollback (the application is back on the source); the
//! next cutover lifts that fence when it opens the target.

use std::time::Duration;

use pgferry_config::Task;
use pgferry_pg::{PgClient, PgError, Side};

use super::steps::{self, Steps};
use super::{CutoverOptions, CutoverReport, Switching, fence, recorded_fence, switch};
use crate::control::cutover::Switch;
use crate::control::{self, Phase};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::finish as finishing;
use crate::reverse;

/// Runs (or resumes, or aborts) the task's rollback.
pub async fn rollback(task: &Task, options: CutoverOptions) -> Result<CutoverReport> {
    let endpoints = Endpoints::resolve(task)?;
    let control = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry rollback").await?;
    let Some(row) = control::find_task(&control, &task.name).await? else {
        return Err(EngineError::UnknownTask {
            task: task.name.clone(),
        });
    };
    control::lock_task(&control, &format!("{}/cutover", task.name), "rollback").await?;
    let existing = control::cutover::cutover(&control, &task.name, Switch::Rollback).await?;
    let running = existing.as_ref().is_some_and(|c| c.state == "running");
    if options.abort {
        return super::abort(task, &endpoints, &control, Switch::Rollback).await;
    }
    if !running {
        check(task, &endpoints, &control, row.phase).await?;
    }
    if options.dry_run {
        return Ok(dry_run_report(task, running));
    }
    let r = Rollback(Switching {
        task,
        endpoints: &endpoints,
        control: &control,
        options,
    });
    steps::run_all(&r, &control, &task.name).await?;
    steps::end(&task.name, &control, Switch::Rollback, "done").await
}

fn refused(task: &Task, problems: Vec<String>) -> EngineError {
    EngineError::CutoverRefused {
        what: "rollback",
        task: task.name.clone(),
        problems,
    }
}

/// The pre-checks: cut over, the reverse stream running and caught up, nothing suspended.
async fn check(task: &Task, endpoints: &Endpoints, control: &PgClient, phase: Phase) -> Result<()> {
    if phase != Phase::CutOver {
        return Err(refused(
            task,
            vec![format!(
                "the task is in phase {}, not cut over: there is nothing to roll back",
                phase.as_str()
            )],
        ));
    }
    let Some(source) = reverse::source_control(endpoints, &task.name).await? else {
        return Err(refused(
            task,
            vec![
                "the cutover set up no reverse stream (cutover.reverse = false): the writes \
                 made on the target since the cutover exist only there, and a rollback would \
                 lose them"
                    .to_owned(),
            ],
        ));
    };
    let mut problems = Vec::new();
    if !reverse::wait_for_run(control, &source, &task.name).await? {
        problems.push(
            "no `pgferry run` streams the target's changes back to the source; start it first"
                .to_owned(),
        );
    }
    let max = task.cutover.max_lag.as_secs_f64();
    if let Some((ms, age)) = control::cutover::stream_lag(&source, &task.name).await? {
        let measured = ms.unwrap_or(0) as f64 / 1000.0;
        let lag = if age > 2.0 {
            measured.max(age)
        } else {
            measured
        };
        if lag > max {
            problems.push(format!(
                "the reverse stream lags {lag:.1} s, more than cutover.max_lag_s = {max}"
            ));
        }
    }
    let suspended = control::cutover::suspended_tables(&source, &task.name).await?;
    if !suspended.is_empty() {
        problems.push(format!(
            "{} table(s) are suspended from the reverse stream: {}",
            suspended.len(),
            suspended.join(", ")
        ));
    }
    let exceptions = control::cutover::exception_count(&source, &task.name).await?;
    if exceptions > 0 {
        problems.push(format!(
            "{exceptions} change(s) of the reverse stream were not applied \
             (pgferry.apply_exceptions on the source)"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(refused(task, problems))
    }
}

fn dry_run_report(task: &Task, resuming: bool) -> CutoverReport {
    let first = if resuming {
        "resume the rollback that is running, from its first step not done".to_owned()
    } else {
        "checks passed: cut over, the reverse stream runs and is caught up".to_owned()
    };
    let plan = vec![
        first,
        "fence the target: default_transaction_read_only = on for the database, end every \
         other session, record the WAL position"
            .to_owned(),
        "drain: apply on the source every transaction the target committed before the fence"
            .to_owned(),
        "set the sequences on the source from the fenced target".to_owned(),
        "validate every table (row count and checksum) on the fenced target".to_owned(),
        format!(
            "open the source: stop the reverse stream, restart the forward stream after its \
             writes, lift the source's fence, run {} rollback command(s), write probe",
            task.cutover.on_rollback.len()
        ),
    ];
    CutoverReport {
        task: task.name.clone(),
        kind: "rollback".to_owned(),
        state: "planned".to_owned(),
        steps: Vec::new(),
        fence_lsn: None,
        drained_lsn: None,
        downtime_seconds: None,
        sequences: None,
        validation: Vec::new(),
        reverse: None,
        plan,
    }
}

/// The rollback's steps.
struct Rollback<'a>(Switching<'a>);

impl<'a> std::ops::Deref for Rollback<'a> {
    type Target = Switching<'a>;
    fn deref(&self) -> &Switching<'a> {
        &self.0
    }
}

impl Steps for Rollback<'_> {
    const KIND: Switch = Switch::Rollback;
    const NAMES: &'static [&'static str] =
        &["checks", "fence", "drain", "sequences", "validate", "open"];

    async fn step(&self, step: &str) -> Result<serde_json::Value> {
        let (task, control) = (&self.task.name, self.control);
        match step {
            "checks" => Ok(serde_json::json!({})),
            // The control session fences the target itself: the fence ends every other
            // session that began before it.
            "fence" => {
                super::fence_side(control, control, task, Switch::Rollback, &self.task.cutover)
                    .await
            }
            "drain" => {
                super::drain_to_fence(self.task, control, Switch::Rollback, self.options).await
            }
            "sequences" => {
                let (target, source) = (
                    self.session(Side::Target).await?,
                    self.session(Side::Source).await?,
                );
                let reversed = reverse::reversed_task(self.task, control).await?;
                let schemas = crate::load::plan::scope_schemas(&target, &reversed).await?;
                let n = finishing::sync_sequences(&target, &source, &schemas, &reversed.mapping)
                    .await?;
                Ok(serde_json::json!({ "sequences": n }))
            }
            "validate" => {
                super::validate(
                    self.task,
                    self.endpoints,
                    control,
                    Switch::Rollback,
                    self.options,
                )
                .await
            }
            _ => self.open().await,
        }
    }
}

impl Rollback<'_> {
    async fn session(&self, side: Side) -> Result<PgClient> {
        let info = match side {
            Side::Source => &self.endpoints.source,
            Side::Target => &self.endpoints.target,
        };
        let client = pgferry_pg::connect(side, info, "pgferry rollback").await?;
        Ok(client)
    }

    /// Hands the task back to the forward stream and opens the source.
    async fn open(&self) -> Result<serde_json::Value> {
        let (task, control) = (&self.task.name, self.control);
        let phase = control::load_task(control, task).await?.map(|t| t.phase);
        let mut restart = None;
        if phase == Some(Phase::CutOver) {
            if let Some(reverse_control) = reverse::source_control(self.endpoints, task).await?
                && control::is_running(&reverse_control, task).await?
            {
                crate::cdc::request_stop(self.task, Duration::from_secs(120)).await?;
            }
            // Only pgferry writes on the fenced source: this position is past every change
            // the reverse stream applied and before any the application will make.
            let source = self.session(Side::Source).await?;
            let at = crate::cdc::current_wal_lsn(&source).await?;
            control::restart_stream_at(control, task, at).await?;
            advance_forward_slot(&source, control, task, at).await;
            reverse::teardown(self.task, self.endpoints, false).await?;
            control::set_phase(control.raw(), task, Phase::Cdc).await?;
            restart = Some(at.to_string());
        }
        if let Some(plan) = recorded_fence(control, task, Switch::Cutover).await? {
            fence::lift(&self.session(Side::Source).await?, &plan).await?;
        }
        let switched = switch::run_all(&self.task.cutover.on_rollback, task).await?;
        probe_source(self.endpoints).await?;
        control::cutover::record_opened(control, task, Switch::Rollback).await?;
        Ok(serde_json::json!({
            "switch": switched,
            "write_probe": true,
            "forward_restarts_at": restart,
        }))
    }
}

/// Lets the forward slot on the source release the WAL the reverse stream wrote (the
/// stream would skip it anyway). Best effort: a slot that cannot move now moves when the
/// stream confirms.
async fn advance_forward_slot(
    source: &PgClient,
    control: &PgClient,
    task: &str,
    at: pgferry_pg::Lsn,
) {
    let Ok(Some(objects)) = control::stream_objects(control, task).await else {
        return;
    };
    let moved = source
        .query(
            "advancing the forward slot",
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&objects.slot, &at.to_string()],
        )
        .await;
    if let Err(e) = moved {
        tracing::warn!(error = %e, "could not advance the forward slot after the rollback");
    }
}

/// A session as the application opens one (no pgferry settings) writes, reads back and
/// drops a temporary table: the source takes writes again.
async fn probe_source(endpoints: &Endpoints) -> Result<()> {
    let client =
        pgferry_pg::connect_as_application(Side::Source, &endpoints.source, "pgferry probe")
            .await?;
    client
        .batch(
            "the write probe on the source",
            "BEGIN; CREATE TEMPORARY TABLE pgferry_write_probe (x integer) ON COMMIT DROP; \
             INSERT INTO pgferry_write_probe VALUES (1); COMMIT;",
        )
        .await
        .map_err(|e| {
            EngineError::Pg(PgError::Prerequisite {
                side: Side::Source,
                problem: format!("the source does not take writes after the rollback: {e}"),
                fix: "look for a read-only setting on the source database or role, fix it, then \
                      run `pgferry rollback` again"
                    .to_owned(),
            })
        })?;
    Ok(())
}
