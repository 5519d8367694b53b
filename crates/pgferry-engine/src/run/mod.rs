//! `pgferry run`: a task from wherever it stands to done, as a phase machine.
//!
//! ```text
//!   Planned ──► Loading ◄─► PostData ──► Finishing ──► Cdc ◄──────► CutOver ──► Done
//!   pre-data    chunks and post-data     sequences,    streaming  cutover   streaming   finish
//!   (one txn)   as one graph             ANALYZE       forward    rollback  back
//!                  Done ◄──────────────────┘ (full-load tasks)
//! ```
//!
//! A run that streams when a cutover (or a rollback) reaches its open step lets the task
//! go, waits for the switch to turn the task round, and streams on the other way.
//!
//! [`open`] connects, checks both servers, takes the task's run lock and plans a new task
//! (or finds where an existing one stands). Then each phase is one step in [`steps`]: it
//! does its work and records the next phase in the control schema itself, in the same
//! transaction as the work that completes the phase where there is one. A crash between
//! two steps leaves the phase of the last one recorded, and the next run continues there;
//! work already recorded done is never repeated. New phases (a cutover, reverse streaming)
//! are new arms of [`drive`], not new conditions.
//!
//! Consistency: planning and the copy read one exported snapshot, so a load that runs
//! through without a restart copies the source as of one instant. A load resumed after a
//! crash copies its remaining chunks from a new snapshot; with CDC (a later phase), the
//! change stream reconciles that difference.

mod open;
mod steps;
mod summary;

use std::sync::Arc;
use std::time::Instant;

use pgferry_config::Task;
use pgferry_pg::{ConnInfo, PgClient, Side};
use serde::Serialize;

use crate::control::cutover::Switch;
use crate::control::{self, Level, Phase};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::copy::TableJob;
use crate::load::snapshot::SnapshotHolder;
use crate::progress::{PhaseTime, RunProgress};

/// One table in the final summary.
#[derive(Debug, Clone, Serialize)]
pub struct TableSummary {
    pub table: String,
    pub rows: i64,
    pub bytes: i64,
    pub seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub task: String,
    /// The task was already done when this run started.
    pub already_done: bool,
    pub tables: Vec<TableSummary>,
    pub rows: i64,
    pub bytes: i64,
    /// Wall time of the load phase, across runs.
    pub load_seconds: f64,
    /// Wall time of this run.
    pub run_seconds: f64,
    pub schema_objects: usize,
    pub sequences: usize,
    /// Time spent in each phase by this run.
    pub phases: Vec<PhaseTime>,
    /// What streaming did, for tasks with CDC (they run until stopped).
    pub cdc: Option<crate::cdc::CdcOutcome>,
    pub warnings: Vec<String>,
}

/// How a run begins.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Replace a lost slot and resynchronise the tables first ([`crate::startover`]).
    pub start_over: bool,
}

/// Runs the task to completion. On failure the error is also recorded with the task, for
/// `status`.
pub async fn run(task: &Task, progress: Arc<RunProgress>) -> Result<RunSummary> {
    run_with(task, progress, RunOptions::default()).await
}

/// [`run`], with options.
pub async fn run_with(
    task: &Task,
    progress: Arc<RunProgress>,
    options: RunOptions,
) -> Result<RunSummary> {
    let endpoints = Endpoints::resolve(task)?;
    let result = drive(task, &endpoints, &progress, options).await;
    if let Err(e) = &result {
        record_error(&endpoints.target, &task.name, e).await;
    }
    result
}

/// Everything the steps share: the task, both servers, and what the run has found so far.
pub(super) struct RunContext<'a> {
    pub task: &'a Task,
    pub endpoints: &'a Endpoints,
    pub progress: &'a Arc<RunProgress>,
    /// A session on the source for planning and finishing; closed while streaming, which
    /// needs none.
    pub source: Option<PgClient>,
    /// The target session that holds the run lock and writes the control schema.
    pub control: PgClient,
    /// The source schemas in scope.
    pub schemas: Vec<String>,
    /// The snapshot planning exported, until the load takes it.
    pub snapshot: Option<SnapshotHolder>,
    /// Session settings of the stored schema script.
    pub preamble: String,
    pub tables: Vec<Arc<TableJob>>,
    pub warnings: Vec<String>,
    pub schema_objects: usize,
    pub sequences: usize,
    pub cdc: Option<crate::cdc::CdcOutcome>,
    /// A switch turned the task round within this run: a stop requested meanwhile holds.
    pub handed_over: bool,
}

impl RunContext<'_> {
    /// A new control connection that holds the task's lock again, after the target went
    /// away (a restart, a failover, a rollback's fence); nothing while it is alive.
    pub async fn reconnect_control(&mut self) -> Result<()> {
        control::reconnect(
            &self.task.name,
            Side::Target,
            &self.endpoints.target,
            &mut self.control,
        )
        .await
    }
}

/// Opens the run, then takes one step per phase until the task is done or its stream
/// stops.
async fn drive(
    task: &Task,
    endpoints: &Endpoints,
    progress: &Arc<RunProgress>,
    options: RunOptions,
) -> Result<RunSummary> {
    let started = Instant::now();
    let (mut ctx, mut phase) = match open::open(task, endpoints, progress, options).await? {
        open::Opened::AlreadyDone(mut ctx) => {
            return summary::summarize(&mut ctx, true, started).await;
        }
        open::Opened::At(ctx, phase) => (ctx, phase),
    };
    loop {
        phase = match phase {
            Phase::Planned => steps::pre_data(&mut ctx).await?,
            Phase::Loading | Phase::PostData => steps::load(&mut ctx, phase).await?,
            Phase::Finishing => steps::finish(&mut ctx).await?,
            // Streaming runs until it is stopped; a cutover that stops it turns it round.
            Phase::Cdc => {
                steps::stream(&mut ctx).await?;
                match steps::hand_over(&mut ctx, Switch::Cutover).await? {
                    Some(next) => next,
                    None => break,
                }
            }
            // The application writes to the target: its changes stream back to the
            // source until a rollback turns the stream round again, or `finish` ends it.
            Phase::CutOver => {
                steps::stream_back(&mut ctx).await?;
                match steps::hand_over(&mut ctx, Switch::Rollback).await? {
                    Some(next) => next,
                    None => break,
                }
            }
            Phase::Done => break,
        };
    }
    progress.set_phase("done");
    for w in &ctx.warnings {
        tracing::warn!("{w}");
    }
    summary::summarize(&mut ctx, false, started).await
}

async fn record_error(target: &ConnInfo, task: &str, error: &EngineError) {
    if matches!(error, EngineError::TaskBusy { .. }) {
        return;
    }
    let Ok(client) = pgferry_pg::connect(Side::Target, target, "pgferry").await else {
        return;
    };
    if control::schema_exists(&client).await.unwrap_or(false)
        && control::load_task(&client, task)
            .await
            .ok()
            .flatten()
            .is_some()
    {
        let message = error.to_string();
        let _ = control::set_last_error(&client, task, &message).await;
        let _ = control::event(client.raw(), task, Level::Error, "run", &message, None).await;
    }
}
