//! One step per phase. Each does its phase's work and records the next phase in the
//! control schema itself (with the work that completes the phase, where there is one), then
//! returns it.

use std::collections::HashSet;
use std::sync::Arc;

use pgferry_config::TargetTablePrepMode;
use pgferry_pg::{PgClient, Side};

use super::RunContext;
use crate::control::cutover::Switch;
use crate::control::{self, Level, Phase};
use crate::error::{EngineError, Result};
use crate::load::copy::{ChunkJob, LoadContext, TableJob};
use crate::load::graph::{BuildInput, BuildOutcome};
use crate::load::snapshot::SnapshotHolder;
use crate::load::{copy, finish as finishing, graph, schema};
use crate::progress::{TableProgress, TableState};
use crate::reverse;

/// A load pass is repeated at most this many times in one run: after a lost snapshot, or
/// post-data marks a target restart lost.
const MAX_PASSES: u32 = 4;

/// Planned: the pre-data schema, in one target transaction that also records Loading.
pub(super) async fn pre_data(ctx: &mut RunContext<'_>) -> Result<Phase> {
    ctx.progress.set_phase("schema");
    let existing = control::load_task(&ctx.control, &ctx.task.name)
        .await?
        .map(|t| t.existing_tables)
        .unwrap_or_default();
    let notes = schema::restore_pre_data(
        &mut ctx.control,
        &ctx.task.name,
        &ctx.preamble,
        ctx.task.full_load.target_table_prep_mode,
        &existing,
    )
    .await?;
    ctx.warnings.extend(notes);
    // Restoring may have changed what the tables' rows say; the load reads them afresh.
    ctx.tables = table_jobs(&ctx.control, &ctx.task.name).await?;
    ctx.progress
        .set_tables(ctx.tables.iter().map(|t| t.progress.clone()).collect());
    Ok(Phase::Loading)
}

/// Loading and PostData: every chunk and post-data object as one graph, in passes until
/// the control schema says all of them are done; then Finishing.
pub(super) async fn load(ctx: &mut RunContext<'_>, mut phase: Phase) -> Result<Phase> {
    // One pass normally. Another when the target lost post-data steps' asynchronous
    // commits in a restart: the control schema, not this process, says what is done.
    let mut passes = 0;
    loop {
        passes += 1;
        let mut chunks = if phase == Phase::Loading {
            copy::pending_chunks(&ctx.control, &ctx.task.name, &ctx.tables).await?
        } else {
            Vec::new()
        };
        // A load that is not recorded done needs its snapshot even with every chunk copied:
        // the large objects are copied from it before the load ends (`graph::load_done`).
        let snapshot = if chunks.is_empty() && phase != Phase::Loading {
            None
        } else {
            ctx.progress.set_phase("load");
            Some(snapshot_for_pass(ctx, &mut chunks).await?)
        };
        drop(ctx.snapshot.take());
        let input = build_input(ctx, chunks, snapshot).await?;
        let outcome = match graph::run(input, ctx.progress.clone()).await {
            // The source restarted (or the exporting session died): the same run goes on
            // from a new snapshot, as a new run would.
            Err(EngineError::SnapshotLost) if passes < MAX_PASSES => {
                let message = "the load's snapshot on the source is gone (the source \
                               restarted?); the load goes on from a new snapshot";
                tracing::warn!("{message}");
                ctx.reconnect_control().await?;
                control::warn(&ctx.control, &ctx.task.name, "load", message).await?;
                phase = Phase::Loading;
                continue;
            }
            result => result?,
        };
        // The workers ride through a target restart; the control connection did not.
        ctx.reconnect_control().await?;
        if let Some(again) = settle(ctx, outcome, passes).await? {
            phase = again;
            continue;
        }
        control::advance_phase(&mut ctx.control, &ctx.task.name, Phase::Finishing).await?;
        return Ok(Phase::Finishing);
    }
}

/// The snapshot a load pass reads: the one planning exported if it is still alive, else a
/// new one (waiting for a source that is coming back). With CDC, a new snapshot resyncs
/// the tables it no longer fits and the chunks left to copy change.
async fn snapshot_for_pass(
    ctx: &mut RunContext<'_>,
    chunks: &mut Vec<ChunkJob>,
) -> Result<SnapshotHolder> {
    if let Some(h) = ctx.snapshot.take().filter(SnapshotHolder::is_alive) {
        return Ok(h);
    }
    let source = &ctx.endpoints.source;
    let holder =
        crate::retry::retried("exporting a snapshot", || SnapshotHolder::export(source)).await?;
    let task = &ctx.task.name;
    let message = if ctx.task.migration_type.needs_cdc() {
        let visibility = holder.visibility().unwrap_or_default();
        let notes =
            crate::load::resume::resync_for_new_snapshot(&mut ctx.control, task, visibility)
                .await?;
        // Resets change which chunks remain.
        ctx.tables = table_jobs(&ctx.control, task).await?;
        ctx.progress
            .set_tables(ctx.tables.iter().map(|t| t.progress.clone()).collect());
        *chunks = copy::pending_chunks(&ctx.control, task, &ctx.tables).await?;
        format!("the load resumes from a new snapshot (the slot's was lost); {notes}")
    } else {
        "the load resumes from a new snapshot: chunks copied before the restart reflect the \
         source at that earlier time"
            .to_owned()
    };
    control::warn(&ctx.control, task, "load", &message).await?;
    Ok(holder)
}

/// Everything one pass of the graph needs, read from the control schema.
async fn build_input(
    ctx: &mut RunContext<'_>,
    chunks: Vec<ChunkJob>,
    snapshot: Option<SnapshotHolder>,
) -> Result<BuildInput> {
    let task = ctx.task;
    let load = Arc::new(LoadContext {
        task: task.name.clone(),
        source: ctx.endpoints.source.clone(),
        target: ctx.endpoints.target.clone(),
        snapshot: snapshot
            .as_ref()
            .map(|s| s.name().to_owned())
            .unwrap_or_default(),
    });
    let steps = schema::pending_steps(&ctx.control, &task.name, "post-data").await?;
    let post_ids: HashSet<i32> = steps.iter().map(|s| s.dump_id).collect();
    let unfinished = schema::unfinished_steps(&ctx.control, &task.name)
        .await?
        .difference(&post_ids)
        .copied()
        .collect();
    Ok(BuildInput {
        ctx: load,
        tables: ctx.tables.clone(),
        chunks,
        steps,
        table_dump_ids: schema::table_step_ids(&ctx.control, &task.name).await?,
        unfinished,
        preamble: ctx.preamble.clone(),
        skip_duplicates: task.full_load.target_table_prep_mode != TargetTablePrepMode::Fail,
        jobs: task.full_load.jobs,
        index_memory: task.full_load.index_memory,
        snapshot,
    })
}

/// Judges a finished pass: an error for what failed, `Some(PostData)` when post-data
/// objects counted as created are not recorded (a target restart lost their asynchronous
/// commits) and another pass may create them, `None` when everything is done.
async fn settle(
    ctx: &mut RunContext<'_>,
    outcome: BuildOutcome,
    passes: u32,
) -> Result<Option<Phase>> {
    ctx.warnings.extend(outcome.skipped);
    ctx.schema_objects = outcome.steps_done;
    if !outcome.failed_tables.is_empty() {
        return Err(EngineError::LoadFailed {
            failed: outcome.failed_tables.len(),
            total: ctx.tables.len(),
            tables: outcome.failed_tables,
        });
    }
    if !outcome.failed_steps.is_empty() {
        return Err(EngineError::PostDataFailed {
            steps: outcome.failed_steps,
        });
    }
    let lost = schema::pending_steps(&ctx.control, &ctx.task.name, "post-data").await?;
    if lost.is_empty() {
        return Ok(None);
    }
    if passes < MAX_PASSES {
        let message = format!(
            "{} schema object(s) counted as created are not recorded on the target (it \
             restarted and lost their asynchronous commits); creating them again",
            lost.len()
        );
        control::warn(&ctx.control, &ctx.task.name, "post-data", &message).await?;
        return Ok(Some(Phase::PostData));
    }
    Err(EngineError::PostDataFailed {
        steps: lost
            .iter()
            .map(|s| format!("{} (never recorded as created)", s.label))
            .collect(),
    })
}

/// Finishing: sequences from the source and statistics; then Cdc or Done.
pub(super) async fn finish(ctx: &mut RunContext<'_>) -> Result<Phase> {
    ctx.progress.set_phase("sequences and statistics");
    let task = ctx.task;
    // A source that restarted during the load took this session with it.
    let source = match ctx.source.take() {
        Some(s) if !s.is_closed() => s,
        _ => pgferry_pg::connect(Side::Source, &ctx.endpoints.source, "pgferry").await?,
    };
    ctx.sequences =
        finishing::sync_sequences(&source, &ctx.control, &ctx.schemas, &task.mapping).await?;
    ctx.source = Some(source);
    finishing::analyze(&ctx.endpoints.target, &task.name, task.full_load.jobs).await?;
    let next = if task.migration_type.needs_cdc() {
        Phase::Cdc
    } else {
        Phase::Done
    };
    control::advance_phase(&mut ctx.control, &task.name, next).await?;
    let message = format!("full load complete; {} sequences set", ctx.sequences);
    control::event(
        ctx.control.raw(),
        &task.name,
        Level::Info,
        "run",
        &message,
        None,
    )
    .await?;
    Ok(next)
}

/// Cdc: streams until stopped, then sets the target's sequences to the source's (they do
/// not replicate). The task stays in this phase.
pub(super) async fn stream(ctx: &mut RunContext<'_>) -> Result<()> {
    for w in &ctx.warnings {
        tracing::warn!("{w}");
    }
    // Streaming needs no ordinary source session; the task may stream for weeks.
    ctx.source = None;
    let route = crate::route::Route::forward(ctx.endpoints);
    let fresh = !ctx.handed_over;
    let outcome = crate::cdc::run(ctx.task, &route, &mut ctx.control, ctx.progress, fresh).await?;
    ctx.cdc = Some(outcome);
    let source = pgferry_pg::connect(Side::Source, &ctx.endpoints.source, "pgferry").await?;
    ctx.sequences =
        finishing::sync_sequences(&source, &ctx.control, &ctx.schemas, &ctx.task.mapping).await?;
    control::mark_stopped(&ctx.control, &ctx.task.name).await?;
    Ok(())
}

/// CutOver: streams the target's changes back to the source until stopped, with the
/// reverse stream's state (and the lock that keeps a second run out) on the source.
pub(super) async fn stream_back(ctx: &mut RunContext<'_>) -> Result<()> {
    let task = ctx.task;
    let Some(mut source_control) = reverse::source_control(ctx.endpoints, &task.name).await? else {
        // Cut over with cutover.reverse = false: nothing streams any more.
        return Err(EngineError::CutOver {
            task: task.name.clone(),
        });
    };
    control::lock_task(&source_control, &task.name, "run").await?;
    ctx.source = None;
    let reversed = reverse::reversed_task(task, &ctx.control).await?;
    let route = crate::route::Route::reverse(ctx.endpoints);
    let fresh = !ctx.handed_over;
    let outcome =
        crate::cdc::run(&reversed, &route, &mut source_control, ctx.progress, fresh).await?;
    ctx.cdc = Some(outcome);
    Ok(())
}

/// After a stream stopped: when `kind` (a cutover, a rollback) stopped it at its open
/// step, lets the task go, waits for the switch to turn it round, and returns the phase to
/// stream in next. `None` when the stream was stopped for good.
pub(super) async fn hand_over(ctx: &mut RunContext<'_>, kind: Switch) -> Result<Option<Phase>> {
    let task = &ctx.task.name;
    // A rollback's fence on the target ended this connection (and its lock).
    ctx.reconnect_control().await?;
    let opening = control::cutover::step_state(&ctx.control, task, kind, "open")
        .await?
        .is_some_and(|(state, _)| state == "running");
    if !opening {
        return Ok(None);
    }
    let want = match kind {
        Switch::Cutover => Phase::CutOver,
        Switch::Rollback => Phase::Cdc,
    };
    ctx.progress
        .set_phase(&format!("{}: handing over", kind.as_str()));
    let deadline = std::time::Instant::now() + HAND_OVER_WAIT;
    loop {
        let phase = control::load_task(&ctx.control, task)
            .await?
            .map(|t| t.phase);
        if phase == Some(want) {
            break;
        }
        let still = control::cutover::cutover(&ctx.control, task, kind)
            .await?
            .is_some_and(|c| c.state == "running");
        if !still || std::time::Instant::now() >= deadline {
            tracing::info!(
                "the {} did not turn the task round; the run ends",
                kind.as_str()
            );
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if want == Phase::CutOver
        && reverse::source_control(ctx.endpoints, task)
            .await?
            .is_none()
    {
        tracing::info!("cut over without a reverse stream (cutover.reverse = false); the run ends");
        return Ok(None);
    }
    control::event(
        ctx.control.raw(),
        task,
        Level::Info,
        "run",
        &format!(
            "the {} turned the task round: streaming {}",
            kind.as_str(),
            if want == Phase::Cdc {
                "forward"
            } else {
                "back to the source"
            }
        ),
        None,
    )
    .await?;
    ctx.handed_over = true;
    Ok(Some(want))
}

/// How long a run waits for a switch to turn the task round after it stopped its stream.
const HAND_OVER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The task's tables with their progress so far.
pub(super) async fn table_jobs(client: &PgClient, task: &str) -> Result<Vec<Arc<TableJob>>> {
    Ok(control::stored_tables(client, task)
        .await?
        .into_iter()
        .map(|t| {
            let progress = TableProgress::new(
                t.table_id,
                t.source.clone(),
                t.estimated_rows,
                t.estimated_bytes,
                t.chunks_total as u32,
            );
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            progress.chunks_done.store(t.chunks_done as u32, relaxed);
            progress.rows_done.store(t.rows_copied, relaxed);
            progress.bytes_done.store(t.bytes_copied, relaxed);
            if t.loaded {
                progress.set_state(TableState::Loaded);
            }
            Arc::new(TableJob {
                table_id: t.table_id,
                source: t.source,
                target: t.target,
                columns: t.columns,
                target_columns: t.target_columns,
                filter: t.filter,
                format: t.format,
                existed_before: t.existed_before,
                analyzed: t.analyzed,
                dump_id: t.dump_id,
                reload: t.post_data_built,
                split_key: t.split_key,
                progress: Arc::new(progress),
            })
        })
        .collect())
}
