//! `pgferry cutover`: the riskiest hour of a migration as one command that can be checked,
//! resumed and undone.
//!
//! ```text
//!   checks ──► fence ──► drain ──► sequences ──► validate ──► open
//!   lag,       source     to the    set from the  rows and     stop forward
//!   exceptions read-only  fence LSN fenced source checksums    stream, switch
//!                                                              commands, write probe
//! ```
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
//! * during the open: the forward stream may be stopped and switch commands may have run;
//!   a rerun runs them again (they must be safe to repeat), and `--abort` is refused since
//!   the application may already write to the target.
//!
//! A validation that finds a difference aborts the cutover by itself: the fence is lifted
//! and the stream goes on, so nothing is lost while the difference is looked into.

mod fence;
mod report;
mod switch;

use std::time::Duration;

use pgferry_config::Task;
use pgferry_pg::{PgClient, Side};

pub use report::{CutoverReport, StepReport};

use crate::control::{self, Level, Phase};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::finish as finishing;
use fence::FencePlan;

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

/// The steps, in order.
const STEPS: [&str; 6] = ["checks", "fence", "drain", "sequences", "validate", "open"];

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
    let existing = control::cutover::cutover(&control, &task.name).await?;
    let running = existing.as_ref().is_some_and(|c| c.state == "running");
    if options.abort {
        return abort(task, &endpoints, &control).await;
    }
    if row.phase == Phase::CutOver {
        // Opened, but killed before the report was stored: only the report is left to do.
        if running {
            let open = control::cutover::step_state(&control, &task.name, "open").await?;
            if open.is_some_and(|(state, _)| state != "done") {
                let detail = serde_json::json!({ "write_probe": true });
                control::cutover::finish_step(&control, &task.name, "open", &detail).await?;
            }
            return finish(task, &control).await;
        }
        return Err(EngineError::CutOver {
            task: task.name.clone(),
        });
    }
    if !running {
        check(task, &control, row.phase).await?;
    }
    if options.dry_run {
        return Ok(dry_run_report(task, running));
    }
    control::cutover::begin_cutover(&control, &task.name).await?;
    let c = Cutover {
        task,
        endpoints: &endpoints,
        control: &control,
        options,
    };
    for (ordinal, step) in STEPS.iter().enumerate() {
        if let Some((state, _)) = control::cutover::step_state(&control, &task.name, step).await?
            && state == "done"
        {
            continue;
        }
        control::cutover::start_step(&control, &task.name, step, ordinal as i32).await?;
        control::event(
            control.raw(),
            &task.name,
            Level::Info,
            "cutover",
            &format!("cutover step {step} begins"),
            None,
        )
        .await?;
        let detail = c.step(step).await?;
        control::cutover::finish_step(&control, &task.name, step, &detail).await?;
    }
    finish(task, &control).await
}

/// Stores the report of a cutover whose target is open, and ends it.
async fn finish(task: &Task, control: &PgClient) -> Result<CutoverReport> {
    let report = report(task, control, "done").await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    control::cutover::end_cutover(control, &task.name, "done", Some(&json)).await?;
    control::event(
        control.raw(),
        &task.name,
        Level::Info,
        "cutover",
        &format!(
            "cut over; downtime {:.1} s",
            report.downtime_seconds.unwrap_or_default()
        ),
        None,
    )
    .await?;
    Ok(report)
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
    plan.push(format!(
        "open the target: stop forward streaming, run {} switch command(s), write probe",
        task.cutover.on_switch.len()
    ));
    CutoverReport {
        task: task.name.clone(),
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

/// One cutover's connections and settings, for its steps.
struct Cutover<'a> {
    task: &'a Task,
    endpoints: &'a Endpoints,
    control: &'a PgClient,
    options: CutoverOptions,
}

impl Cutover<'_> {
    async fn step(&self, step: &str) -> Result<serde_json::Value> {
        let (task, control) = (&self.task.name, self.control);
        match step {
            "checks" => Ok(serde_json::json!({})),
            "fence" => {
                let source = self.source().await?;
                let plan = match control::cutover::cutover(control, task)
                    .await?
                    .and_then(|c| c.fence)
                    .and_then(|f| serde_json::from_value::<FencePlan>(f).ok())
                {
                    Some(plan) => plan,
                    None => fence::plan(&source, &self.task.cutover.fence_roles).await?,
                };
                let json = serde_json::to_value(&plan).unwrap_or_default();
                control::cutover::record_fence_plan(control, task, &json).await?;
                let lsn = fence::put_up(&source, &plan).await?;
                control::cutover::record_fenced(control, task, lsn).await?;
                Ok(serde_json::json!({ "fence_lsn": lsn.to_string(), "roles": plan.roles }))
            }
            "drain" => {
                let fence_lsn = control::cutover::cutover(control, task)
                    .await?
                    .and_then(|c| c.fence_lsn);
                let drained =
                    crate::cdc::drain(self.task, fence_lsn, self.options.drain_wait).await?;
                Ok(serde_json::json!({ "drained_lsn": drained.to_string() }))
            }
            "sequences" => {
                let source = self.source().await?;
                let schemas = crate::load::plan::scope_schemas(&source, self.task).await?;
                let n = finishing::sync_sequences(&source, control, &schemas, &self.task.mapping)
                    .await?;
                Ok(serde_json::json!({ "sequences": n }))
            }
            "validate" => self.validate().await,
            _ => self.open().await,
        }
    }

    async fn source(&self) -> Result<PgClient> {
        let source =
            pgferry_pg::connect(Side::Source, &self.endpoints.source, "pgferry cutover").await?;
        fence::writable(&source).await?;
        Ok(source)
    }

    /// Rows and checksums of every table, and the schema, on the fenced source; a
    /// difference aborts.
    async fn validate(&self) -> Result<serde_json::Value> {
        let report = crate::validate::validate(self.task, self.options.validation_jobs).await?;
        let schema = crate::schema_compare::compare_schema(self.task).await?;
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
            abort(self.task, self.endpoints, self.control).await?;
            return Err(EngineError::CutoverRefused {
                task: self.task.name.clone(),
                problems: vec![format!(
                    "the final validation found {} difference(s): {}; the cutover is aborted \
                     (fence lifted, streaming goes on)",
                    differing.len(),
                    differing.join(", ")
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

    /// Stops the forward stream, runs the switch commands, and proves the target takes
    /// writes.
    async fn open(&self) -> Result<serde_json::Value> {
        let (task, control) = (&self.task.name, self.control);
        crate::cdc::request_stop(self.task, Duration::from_secs(120)).await?;
        let switched = switch::run_all(&self.task.cutover.on_switch, task).await?;
        let token = format!("{}-{}", task, std::process::id());
        if !control::cutover::write_probe(control, task, &token).await? {
            return Err(EngineError::CutoverRefused {
                task: task.clone(),
                problems: vec!["the write probe on the target did not read back".to_owned()],
            });
        }
        control::cutover::record_opened(control, task).await?;
        Ok(serde_json::json!({ "switch": switched, "write_probe": true }))
    }
}

/// Lifts the fence and lets forward streaming go on; refused once the target may be open.
async fn abort(task: &Task, endpoints: &Endpoints, control: &PgClient) -> Result<CutoverReport> {
    let existing = control::cutover::cutover(control, &task.name).await?;
    let Some(c) = existing.filter(|c| c.state == "running") else {
        return Err(EngineError::CutoverRefused {
            task: task.name.clone(),
            problems: vec!["no cutover is running, so there is nothing to abort".to_owned()],
        });
    };
    if control::cutover::step_state(control, &task.name, "open")
        .await?
        .is_some()
    {
        return Err(EngineError::CutoverRefused {
            task: task.name.clone(),
            problems: vec![
                "the target is being opened (switch commands may have run, the application \
                 may write to it); abort is only possible before that. Run `pgferry cutover` \
                 again to finish"
                    .to_owned(),
            ],
        });
    }
    if let Some(plan) = c
        .fence
        .and_then(|f| serde_json::from_value::<FencePlan>(f).ok())
    {
        let source =
            pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry cutover").await?;
        fence::writable(&source).await?;
        fence::lift(&source, &plan).await?;
    }
    control::cancel_drain(control, &task.name).await?;
    let report = report(task, control, "aborted").await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    control::cutover::end_cutover(control, &task.name, "aborted", Some(&json)).await?;
    control::event(
        control.raw(),
        &task.name,
        Level::Warning,
        "cutover",
        "cutover aborted: the fence is lifted and forward streaming goes on",
        None,
    )
    .await?;
    Ok(report)
}

/// The report from what the control schema recorded.
async fn report(task: &Task, control: &PgClient, state: &str) -> Result<CutoverReport> {
    let steps: Vec<StepReport> = control::cutover::steps(control, &task.name)
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
        task: task.name.clone(),
        state: state.to_owned(),
        fence_lsn: detail("fence", "fence_lsn").and_then(|v| v.as_str().map(str::to_owned)),
        drained_lsn: detail("drain", "drained_lsn").and_then(|v| v.as_str().map(str::to_owned)),
        downtime_seconds: fence_started
            .zip(opened)
            .map(|(f, o)| (o - f).num_milliseconds() as f64 / 1000.0),
        sequences: detail("sequences", "sequences").and_then(|v| v.as_i64()),
        validation: detail("validate", "tables")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        plan: Vec::new(),
        steps,
    })
}
