//! `pgferry cutover`: the riskiest hour of a migration as one command that can be checked,
//! resumed and undone.
//!
//! ```text
//!   checks ──► fence ──► drain ──► sequences ──► validate ──► open
//!   lag,       source     to the    set from the  rows and     stop forward stream,
//!   exceptions read-only  fence LSN fenced source checksums    set up the reverse one,
//!                                                              switch commands, probe
//! ```
//!
//! [`rollback`] is the same machine the other way round, after a cutover; [`finish`] ends
//! the way back and cleans up both sides.
//!
//! `pgferry run` keeps streaming through the cutover, in another process; the cutover
//! steers it through the control schema (a drain position, then a stop).
//!
//! Every step is recorded (`control::cutover`) as running before it starts and done when
//! it ends; a rerun skips what is done and repeats a running step, and every step is safe
//! to repeat. What a crash leaves at each point:
//! * before the fence is recorded: nothing changed on the source;
//! * during the fence: the plan (what the fence changes, as it was before) is recorded
//!   first, so a rerun finishes the fence and `--abort` lifts it exactly;
//! * during the drain, sequences or validation: a fenced source and a target that holds
//!   everything applied so far; a rerun goes on, `--abort` lifts the fence and streaming
//!   goes on as before;
//! * during the open: the forward stream may be stopped, the reverse stream set up (its
//!   setup is stored on the source before the target takes a write, and never made
//!   again), and switch commands may have run; a rerun goes on from there (the commands
//!   run again, so they must be safe to repeat), and `--abort` is refused since the
//!   application may already write to the target.
//!
//! A validation that finds a difference aborts the cutover by itself: the fence is lifted
//! and the stream goes on, so nothing is lost while the difference is looked into.

pub(crate) mod fence;
mod finish;
mod report;
mod rollback;
mod steps;
mod switch;

use std::time::Duration;

use pgferry_config::Task;
use pgferry_pg::{PgClient, Side};

pub use finish::{FinishOptions, FinishReport, finish};
pub use report::{CutoverReport, StepReport};
pub use rollback::rollback;

use crate::control::cutover::Switch;
use crate::control::{self, Phase};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::finish as finishing;
use fence::FencePlan;
use steps::Steps;

/// How `pgferry cutover` runs.
#[derive(Debug, Clone, Copy)]
pub struct CutoverOptions {
    /// Check and print the plan; change nothing.
    pub dry_run: bool,
    /// Lift the fence and let forward streaming go on (before the target opens).
    pub abort: bool,
    /// The longest the drain may take.
    pub drain_wait: Duration,
    /// Tables compared at the same time in the final validation.
    pub validation_jobs: usize,
}

impl Default for CutoverOptions {
    fn default() -> Self {
        CutoverOptions {
            dry_run: false,
            abort: false,
            drain_wait: Duration::from_secs(600),
            validation_jobs: 2,
        }
    }
}

/// Runs (or resumes, or aborts) the task's cutover.
pub async fn cutover(task: &Task, options: CutoverOptions) -> Result<CutoverReport> {
    let endpoints = Endpoints::resolve(task)?;
    let control = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry cutover").await?;
    let Some(row) = control::find_task(&control, &task.name).await? else {
        return Err(EngineError::UnknownTask {
            task: task.name.clone(),
        });
    };
    control::lock_task(&control, &format!("{}/cutover", task.name), "cutover").await?;
    let existing = control::cutover::cutover(&control, &task.name, Switch::Cutover).await?;
    let running = existing.as_ref().is_some_and(|c| c.state == "running");
    if options.abort {
        return abort(task, &endpoints, &control, Switch::Cutover).await;
    }
    if !running {
        if row.phase == Phase::CutOver {
            return Err(EngineError::CutOver {
                task: task.name.clone(),
            });
        }
        check(task, &control, row.phase).await?;
    }
    if options.dry_run {
        return Ok(dry_run_report(task, running));
    }
    let c = Cutover(Switching {
        task,
        endpoints: &endpoints,
        control: &control,
        options,
    });
    steps::run_all(&c, &control, &task.name).await?;
    steps::end(&task.name, &control, Switch::Cutover, "done").await
}

/// The pre-checks: streaming, lag under the limit, no suspended table, no exception.
async fn check(task: &Task, control: &PgClient, phase: Phase) -> Result<()> {
    let mut problems = Vec::new();
    if phase != Phase::Cdc {
        problems.push(format!(
            "the task is in phase {}, not streaming; `pgferry run` first",
            phase.as_str()
        ));
    } else if !control::is_running(control, &task.name).await? {
        problems.push("no `pgferry run` is streaming the task; start it first".to_owned());
    }
    let max = task.cutover.max_lag;
    match control::cutover::stream_lag(control, &task.name).await? {
        Some((ms, age)) => {
            // The run saves its figures every second; one that has not for a while is
            // stuck (applying into a lock, say) and lags at least that long.
            let measured = ms.unwrap_or(0) as f64 / 1000.0;
            let lag = if age > 2.0 {
                measured.max(age)
            } else {
                measured
            };
            if lag > max.as_secs_f64() {
                problems.push(format!(
                    "the stream lags {lag:.1} s, more than cutover.max_lag_s = {}",
                    max.as_secs_f64()
                ));
            }
        }
        None => problems.push("the task has no stream".to_owned()),
    }
    let suspended = control::cutover::suspended_tables(control, &task.name).await?;
    if !suspended.is_empty() {
        problems.push(format!(
            "{} table(s) are suspended from the stream: {}",
            suspended.len(),
            suspended.join(", ")
        ));
    }
    let schema = crate::schema_compare::compare_schema(task).await?;
    if !schema.matches() {
        let shown: Vec<String> = schema
            .differences
            .iter()
            .take(5)
            .map(|d| format!("{} {} {}", d.kind, d.object, d.problem))
            .collect();
        problems.push(format!(
            "the schema differs in {} object(s) (`pgferry validate --schema` lists them): {}",
            schema.differences.len(),
            shown.join("; ")
        ));
    }
    if task.cutover.reverse
        && let Err(EngineError::CutoverRefused { problems: why, .. }) =
            crate::reverse::reversed_task(task, control).await
    {
        problems.extend(why);
    }
    let exceptions = control::cutover::exception_count(control, &task.name).await?;
    if exceptions > 0 {
        problems.push(format!(
            "{exceptions} change(s) were not applied (pgferry.apply_exceptions); resolve them \
             and delete their rows"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::CutoverRefused {
            what: "cutover",
            task: task.name.clone(),
            problems,
        })
    }
}

fn dry_run_report(task: &Task, resuming: bool) -> CutoverReport {
    let mut plan = vec![if resuming {
        "resume the cutover that is running, from its first step not done".to_owned()
    } else {
        format!(
            "checks passed: streaming, lag under {} s, no suspended table, no exception",
            task.cutover.max_lag.as_secs_f64()
        )
    }];
    let roles = if task.cutover.fence_roles.is_empty() {
        String::new()
    } else {
        format!(", make {} NOLOGIN", task.cutover.fence_roles.join(", "))
    };
    plan.push(format!(
        "fence the source: default_transaction_read_only = on for the database{roles}, end \
         every other session, record the WAL position"
    ));
    plan.push("drain: apply every transaction committed before the fence".to_owned());
    plan.push("set the sequences on the target from the fenced source".to_owned());
    plan.push("validate every table (row count and checksum) on the fenced source".to_owned());
    let reverse = if task.cutover.reverse {
        "set up the reverse stream (target to source), "
    } else {
        ""
    };
    plan.push(format!(
        "open the target: stop forward streaming, {reverse}run {} switch command(s), write \
         probe",
        task.cutover.on_switch.len()
    ));
    CutoverReport {
        task: task.name.clone(),
        kind: "cutover".to_owned(),
        reverse: None,
        state: "planned".to_owned(),
        steps: Vec::new(),
        fence_lsn: None,
        drained_lsn: None,
        downtime_seconds: None,
        sequences: None,
        validation: Vec::new(),
        plan,
    }
}

/// One switch's task, servers, control session and settings, for its steps.
struct Switching<'a> {
    task: &'a Task,
    endpoints: &'a Endpoints,
    control: &'a PgClient,
    options: CutoverOptions,
}

/// The cutover's steps.
struct Cutover<'a>(Switching<'a>);

impl<'a> std::ops::Deref for Cutover<'a> {
    type Target = Switching<'a>;
    fn deref(&self) -> &Switching<'a> {
        &self.0
    }
}

impl Steps for Cutover<'_> {
    const KIND: Switch = Switch::Cutover;
    const NAMES: &'static [&'static str] =
        &["checks", "fence", "drain", "sequences", "validate", "open"];

    async fn step(&self, step: &str) -> Result<serde_json::Value> {
        let (task, control) = (&self.task.name, self.control);
        match step {
            "checks" => Ok(serde_json::json!({})),
            "fence" => {
                let source = self.source().await?;
                fence_side(&source, control, task, Switch::Cutover, &self.task.cutover).await
            }
            "drain" => drain_to_fence(self.task, control, Switch::Cutover, self.options).await,
            "sequences" => {
                let source = self.source().await?;
                let schemas = crate::load::plan::scope_schemas(&source, self.task).await?;
                let n = finishing::sync_sequences(&source, control, &schemas, &self.task.mapping)
                    .await?;
                Ok(serde_json::json!({ "sequences": n }))
            }
            "validate" => {
                validate(
                    self.task,
                    self.endpoints,
                    control,
                    Switch::Cutover,
                    self.options,
                )
                .await
            }
            _ => self.open().await,
        }
    }
}

impl Cutover<'_> {
    async fn source(&self) -> Result<PgClient> {
        let source =
            pgferry_pg::connect(Side::Source, &self.endpoints.source, "pgferry cutover").await?;
        Ok(source)
    }

    /// Stops the forward stream, sets up the reverse one, runs the switch commands, and
    /// proves the target takes writes. Each part is safe to repeat: the phase says whether
    /// the forward stream was stopped already.
    async fn open(&self) -> Result<serde_json::Value> {
        let (task, control) = (&self.task.name, self.control);
        let phase = control::load_task(control, task).await?.map(|t| t.phase);
        if phase == Some(Phase::Cdc) {
            crate::cdc::request_stop(self.task, Duration::from_secs(120)).await?;
        }
        let reverse = if self.task.cutover.reverse {
            let prepared = crate::reverse::prepare(self.task, self.endpoints, control).await?;
            Some(serde_json::to_value(prepared).unwrap_or_default())
        } else {
            None
        };
        // A rollback left the target fenced; it takes writes again once the reverse slot
        // is there to see them.
        if let Some(plan) = recorded_fence(control, task, Switch::Rollback).await? {
            fence::lift(control, &plan).await?;
        }
        control::set_phase(control.raw(), task, Phase::CutOver).await?;
        let switched = switch::run_all(&self.task.cutover.on_switch, task).await?;
        let token = format!("{}-{}", task, std::process::id());
        if !control::cutover::write_probe(control, task, &token).await? {
            return Err(EngineError::CutoverRefused {
                what: "cutover",
                task: task.clone(),
                problems: vec!["the write probe on the target did not read back".to_owned()],
            });
        }
        control::cutover::record_opened(control, task, Switch::Cutover).await?;
        Ok(serde_json::json!({ "switch": switched, "write_probe": true, "reverse": reverse }))
    }
}

/// The fence step on either side: records the plan first (kept as first written), puts
/// the fence up, records the WAL position after it.
async fn fence_side(
    fenced: &PgClient,
    control: &PgClient,
    task: &str,
    kind: Switch,
    settings: &pgferry_config::CutoverSettings,
) -> Result<serde_json::Value> {
    let plan = match recorded_fence(control, task, kind).await? {
        Some(plan) => plan,
        // Roles are not migrated: the target may lack some of the source's.
        None => fence::plan(fenced, &settings.fence_roles, kind == Switch::Rollback).await?,
    };
    let json = serde_json::to_value(&plan).unwrap_or_default();
    control::cutover::record_fence_plan(control, task, kind, &json).await?;
    let lsn = fence::put_up(fenced, &plan).await?;
    control::cutover::record_fenced(control, task, kind, lsn).await?;
    Ok(serde_json::json!({ "fence_lsn": lsn.to_string(), "roles": plan.roles }))
}

/// The drain step on either route: the running stream applies everything committed before
/// the fence recorded by `kind`.
async fn drain_to_fence(
    task: &Task,
    control: &PgClient,
    kind: Switch,
    options: CutoverOptions,
) -> Result<serde_json::Value> {
    let fence_lsn = control::cutover::cutover(control, &task.name, kind)
        .await?
        .and_then(|c| c.fence_lsn);
    let drained = crate::cdc::drain(task, fence_lsn, options.drain_wait).await?;
    Ok(serde_json::json!({ "drained_lsn": drained.to_string() }))
}

/// The fence a switch recorded, if it got that far.
async fn recorded_fence(control: &PgClient, task: &str, kind: Switch) -> Result<Option<FencePlan>> {
    Ok(control::cutover::cutover(control, task, kind)
        .await?
        .and_then(|c| c.fence)
        .and_then(|f| serde_json::from_value::<FencePlan>(f).ok()))
}

/// Rows and checksums of every table, and the schema, with one side fenced; a difference
/// aborts the switch.
async fn validate(
    task: &Task,
    endpoints: &Endpoints,
    control: &PgClient,
    kind: Switch,
    options: CutoverOptions,
) -> Result<serde_json::Value> {
    let report = crate::validate::validate(task, options.validation_jobs).await?;
    let schema = crate::schema_compare::compare_schema(task).await?;
    if !report.all_match() || !schema.matches() {
        let differing: Vec<String> = report
            .tables
            .iter()
            .filter(|t| t.outcome != crate::validate::Outcome::Match)
            .map(|t| format!("{} ({})", t.table, t.outcome.as_str()))
            .chain(
                schema
                    .differences
                    .iter()
                    .map(|d| format!("{} {} ({})", d.kind, d.object, d.problem)),
            )
            .collect();
        abort(task, endpoints, control, kind).await?;
        return Err(EngineError::CutoverRefused {
            what: kind.as_str(),
            task: task.name.clone(),
            problems: vec![format!(
                "the final validation found {} difference(s): {}; the {} is aborted (fence \
                 lifted, streaming goes on)",
                differing.len(),
                differing.join(", "),
                kind.as_str()
            )],
        });
    }
    let tables: Vec<report::CheckedTable> = report
        .tables
        .iter()
        .map(report::CheckedTable::from)
        .collect();
    Ok(serde_json::json!({
        "tables": tables,
        "matched": report.matched,
        "schema_objects": schema.objects,
    }))
}

/// Lifts the switch's fence and lets the stream go on; refused once the other side may be
/// open. For a cutover the fence is on the source; for a rollback, on the target.
async fn abort(
    task: &Task,
    endpoints: &Endpoints,
    control: &PgClient,
    kind: Switch,
) -> Result<CutoverReport> {
    let what = kind.as_str();
    let existing = control::cutover::cutover(control, &task.name, kind).await?;
    if existing.is_none_or(|c| c.state != "running") {
        return Err(EngineError::CutoverRefused {
            what,
            task: task.name.clone(),
            problems: vec![format!(
                "no {what} is running, so there is nothing to abort"
            )],
        });
    }
    if control::cutover::step_state(control, &task.name, kind, "open")
        .await?
        .is_some()
    {
        return Err(EngineError::CutoverRefused {
            what,
            task: task.name.clone(),
            problems: vec![format!(
                "the {what} is opening the other side (switch commands may have run, the \
                 application may write to it); abort is only possible before that. Run \
                 `pgferry {what}` again to finish"
            )],
        });
    }
    if let Some(plan) = recorded_fence(control, &task.name, kind).await? {
        let (side, info) = match kind {
            Switch::Cutover => (Side::Source, &endpoints.source),
            Switch::Rollback => (Side::Target, &endpoints.target),
        };
        let fenced = pgferry_pg::connect(side, info, "pgferry abort").await?;
        fence::lift(&fenced, &plan).await?;
    }
    let route = crate::route::Route::current(task).await?;
    control::cancel_drain(&route.connect_to("pgferry abort").await?, &task.name).await?;
    steps::end(&task.name, control, kind, "aborted").await
}
