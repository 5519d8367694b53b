//! `pgferry run`: a task from wherever it stands to done.
//!
//! ```text
//!   plan ──► pre-data ──► load chunks ──► post-data ──► sequences, ANALYZE ──► done
//!   (one target txn)  (one txn)   (txn per chunk)  (txn per step)
//! ```
//!
//! Each arrow is a phase change recorded in the control schema, in the same transaction as
//! the work that completes the phase where there is one. A run that starts finds the task's
//! phase there and continues from it; work already recorded done is never repeated.
//!
//! Consistency: planning and the copy read one exported snapshot, so a load that runs
//! through without a restart copies the source as of one instant. A load resumed after a
//! crash copies its remaining chunks from a new snapshot; with CDC (a later phase), the
//! change stream reconciles that difference.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgferry_config::{TargetTablePrepMode, Task};
use pgferry_pg::catalog::{self, ServerInfo};
use pgferry_pg::copy::CopyFormat;
use pgferry_pg::dump::PgTools;
use pgferry_pg::{ConnInfo, PgClient, QualifiedName, Side};
use serde::Serialize;

use crate::control::{self, Level, Phase};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::copy::{LoadContext, TableJob};
use crate::load::snapshot::SnapshotHolder;
use crate::load::{copy, finish, graph, schema};
use crate::progress::{PhaseTime, RunProgress, TableProgress, TableState};
use crate::{cdc, preflight};

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
    let result = run_phases(task, &endpoints, &progress, options).await;
    if let Err(e) = &result {
        record_error(&endpoints.target, &task.name, e).await;
    }
    result
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

/// The in-scope schemas of the source.
async fn scope_schemas(source: &PgClient, task: &Task) -> Result<Vec<String>> {
    Ok(catalog::list_schemas(source)
        .await?
        .into_iter()
        .filter(|s| task.selection.includes_schema(s))
        .collect())
}

async fn run_phases(
    task: &Task,
    endpoints: &Endpoints,
    progress: &Arc<RunProgress>,
    options: RunOptions,
) -> Result<RunSummary> {
    let started = Instant::now();
    let mut warnings = Vec::new();
    progress.set_phase("connecting");
    let mut source = pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry").await?;
    let mut control_client = pgferry_pg::connect(
        Side::Target,
        &endpoints.target,
        &control::control_application_name(),
    )
    .await?;
    let source_info = ServerInfo::load(&source).await?;
    let target_info = ServerInfo::load(&control_client).await?;
    preflight::check_source(task, &source_info)?;
    let schemas = scope_schemas(&source, task).await?;
    preflight::check_target(&control_client, &target_info, &schemas).await?;
    if target_info.major() < source_info.major() {
        warnings.push(format!(
            "the target runs PostgreSQL {} and the source {}: objects using newer syntax may \
             fail to restore",
            target_info.version, source_info.version
        ));
    }
    control::ensure_schema(&mut control_client).await?;
    control::lock_task(&control_client, &task.name, "run").await?;

    let mut snapshot_holder: Option<SnapshotHolder> = None;
    let existing = control::load_task(&control_client, &task.name).await?;
    if options.start_over && existing.is_none() {
        return Err(EngineError::CannotStartOver {
            task: task.name.clone(),
            problem: "it has never run: a plain `pgferry run` starts it".to_owned(),
        });
    }
    if let Some(row) = &existing {
        if row.migration_type != task.migration_type.as_str() {
            return Err(EngineError::TaskChanged {
                task: task.name.clone(),
                was: row.migration_type.clone(),
                now: task.migration_type.as_str().to_owned(),
            });
        }
        if row.phase == Phase::Done {
            return summarize(
                &control_client,
                task,
                true,
                started,
                0,
                0,
                warnings,
                progress,
            )
            .await;
        }
        tracing::info!(phase = row.phase.as_str(), "resuming task");
        control::event(
            control_client.raw(),
            &task.name,
            Level::Info,
            "run",
            &format!("run resumed in phase {}", row.phase.as_str()),
            None,
        )
        .await?;
    } else if task.migration_type.needs_full_load() {
        progress.set_phase("planning");
        let tools = PgTools::locate(source_info.major()).await?;
        let (holder, planned) = crate::load::planning::plan_task(
            task,
            &tools,
            endpoints,
            &source,
            &source_info,
            &target_info,
            &mut control_client,
        )
        .await?;
        warnings.extend(planned);
        snapshot_holder = Some(holder);
    } else {
        progress.set_phase("planning");
        warnings.extend(
            crate::load::planning::plan_cdc_only(
                task,
                endpoints,
                &source,
                &source_info,
                &mut control_client,
            )
            .await?,
        );
    }
    if options.start_over {
        progress.set_phase("starting over");
        let (holder, note) = crate::startover::start_over(
            task,
            endpoints,
            &source,
            &source_info,
            &mut control_client,
        )
        .await?;
        tracing::info!("{note}");
        snapshot_holder = Some(holder);
    }
    let row = control::load_task(&control_client, &task.name)
        .await?
        .ok_or_else(|| EngineError::UnknownTask {
            task: task.name.clone(),
        })?;
    let mut phase = row.phase;
    let preamble = row.schema_preamble.clone().unwrap_or_default();

    if phase == Phase::Planned {
        progress.set_phase("schema");
        let existing: Vec<QualifiedName> = existing_tables(&control_client, &task.name).await?;
        let notes = schema::restore_pre_data(
            &mut control_client,
            &task.name,
            &preamble,
            task.full_load.target_table_prep_mode,
            &existing,
        )
        .await?;
        warnings.extend(notes);
        phase = Phase::Loading;
    }

    let tables = table_jobs(&control_client, &task.name).await?;
    progress.set_tables(tables.iter().map(|t| t.progress.clone()).collect());

    let mut schema_objects = 0;
    let mut tables = tables;
    // One pass normally. Another when the target lost post-data steps' asynchronous
    // commits in a restart: the control schema, not this process, says what is done.
    let mut passes = 0;
    while phase == Phase::Loading || phase == Phase::PostData {
        passes += 1;
        let mut chunks = if phase == Phase::Loading {
            copy::pending_chunks(&control_client, &task.name, &tables).await?
        } else {
            Vec::new()
        };
        // A load that is not recorded done needs its snapshot even with every chunk copied:
        // the large objects are copied from it before the load ends (`graph::load_done`).
        let snapshot = if chunks.is_empty() && phase != Phase::Loading {
            None
        } else {
            progress.set_phase("load");
            Some(match snapshot_holder.take() {
                Some(h) if h.is_alive() => h,
                _ => {
                    // Waiting for a source that is coming back.
                    let holder = crate::retry::retried("exporting a snapshot", || {
                        SnapshotHolder::export(&endpoints.source)
                    })
                    .await?;
                    let message = if task.migration_type.needs_cdc() {
                        let notes = crate::load::resume::resync_for_new_snapshot(
                            &mut control_client,
                            &task.name,
                            holder.visibility().unwrap_or_default(),
                        )
                        .await?;
                        // Resets change which chunks remain.
                        tables = table_jobs(&control_client, &task.name).await?;
                        progress.set_tables(tables.iter().map(|t| t.progress.clone()).collect());
                        chunks = copy::pending_chunks(&control_client, &task.name, &tables).await?;
                        format!(
                            "the load resumes from a new snapshot (the slot's was lost); {notes}"
                        )
                    } else {
                        "the load resumes from a new snapshot: chunks copied before the \
                         restart reflect the source at that earlier time"
                            .to_owned()
                    };
                    control::warn(&control_client, &task.name, "load", &message).await?;
                    holder
                }
            })
        };
        drop(snapshot_holder.take());
        let ctx = Arc::new(LoadContext {
            task: task.name.clone(),
            source: endpoints.source.clone(),
            target: endpoints.target.clone(),
            snapshot: snapshot
                .as_ref()
                .map(|s| s.name().to_owned())
                .unwrap_or_default(),
        });
        let steps = schema::pending_steps(&control_client, &task.name, "post-data").await?;
        let post_ids: HashSet<i32> = steps.iter().map(|s| s.dump_id).collect();
        let unfinished = schema::unfinished_steps(&control_client, &task.name)
            .await?
            .difference(&post_ids)
            .copied()
            .collect();
        let input = graph::BuildInput {
            ctx,
            tables: tables.clone(),
            chunks,
            steps,
            table_dump_ids: schema::table_step_ids(&control_client, &task.name).await?,
            unfinished,
            preamble: preamble.clone(),
            skip_duplicates: task.full_load.target_table_prep_mode != TargetTablePrepMode::Fail,
            jobs: task.full_load.jobs,
            index_memory: task.full_load.index_memory,
            snapshot,
        };
        let outcome = match graph::run(input, progress.clone()).await {
            // The source restarted (or the exporting session died): the same run goes on
            // from a new snapshot, as a new run would.
            Err(EngineError::SnapshotLost) if passes < 4 => {
                let message = "the load's snapshot on the source is gone (the source \
                               restarted?); the load goes on from a new snapshot";
                tracing::warn!("{message}");
                control::reconnect(&task.name, &endpoints.target, &mut control_client).await?;
                control::warn(&control_client, &task.name, "load", message).await?;
                phase = Phase::Loading;
                continue;
            }
            result => result?,
        };
        // The workers ride through a target restart; the control connection did not.
        control::reconnect(&task.name, &endpoints.target, &mut control_client).await?;
        warnings.extend(outcome.skipped);
        schema_objects = outcome.steps_done;
        if !outcome.failed_tables.is_empty() {
            return Err(EngineError::LoadFailed {
                failed: outcome.failed_tables.len(),
                total: tables.len(),
                tables: outcome
                    .failed_tables
                    .iter()
                    .map(|(t, e)| format!("{t} ({e})"))
                    .collect(),
            });
        }
        if !outcome.failed_steps.is_empty() {
            return Err(EngineError::PostDataFailed {
                steps: outcome.failed_steps,
            });
        }
        let lost = schema::pending_steps(&control_client, &task.name, "post-data").await?;
        if !lost.is_empty() && passes < 4 {
            let message = format!(
                "{} schema object(s) counted as created are not recorded on the target (it \
                 restarted and lost their asynchronous commits); creating them again",
                lost.len()
            );
            control::warn(&control_client, &task.name, "post-data", &message).await?;
            phase = Phase::PostData;
            continue;
        }
        if !lost.is_empty() {
            return Err(EngineError::PostDataFailed {
                steps: lost
                    .iter()
                    .map(|s| format!("{} (never recorded as created)", s.label))
                    .collect(),
            });
        }
        control::advance_phase(&mut control_client, &task.name, Phase::Finishing).await?;
        phase = Phase::Finishing;
    }

    let mut sequences = 0;
    if phase == Phase::Finishing {
        progress.set_phase("sequences and statistics");
        // A source that restarted during the load took this session with it.
        if source.is_closed() {
            source = pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry").await?;
        }
        sequences =
            finish::sync_sequences(&source, &control_client, &schemas, &task.mapping).await?;
        finish::analyze(&endpoints.target, &task.name, task.full_load.jobs).await?;
        let next = if task.migration_type.needs_cdc() {
            Phase::Cdc
        } else {
            Phase::Done
        };
        control::advance_phase(&mut control_client, &task.name, next).await?;
        control::event(
            control_client.raw(),
            &task.name,
            Level::Info,
            "run",
            &format!("full load complete; {sequences} sequences set"),
            None,
        )
        .await?;
        phase = next;
    }
    let mut cdc_outcome = None;
    if phase == Phase::Cdc {
        for w in &warnings {
            tracing::warn!("{w}");
        }
        drop(source);
        let route = crate::route::Route::forward(endpoints);
        cdc_outcome = Some(cdc::run(task, &route, &mut control_client, progress).await?);
        // Sequences do not replicate; a clean stop leaves the target's at the source's.
        let source = pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry").await?;
        sequences =
            finish::sync_sequences(&source, &control_client, &schemas, &task.mapping).await?;
    }
    progress.set_phase("done");
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let mut summary = summarize(
        &control_client,
        task,
        false,
        started,
        schema_objects,
        sequences,
        warnings,
        progress,
    )
    .await?;
    summary.cdc = cdc_outcome;
    Ok(summary)
}

async fn existing_tables(client: &PgClient, task: &str) -> Result<Vec<QualifiedName>> {
    let row = client
        .query_one(
            "reading the tables in the way",
            "SELECT existing_tables FROM pgferry.task WHERE name = $1",
            &[&task],
        )
        .await?;
    Ok(serde_json::from_value(row.get(0)).unwrap_or_default())
}

/// The task's tables with their progress so far.
async fn table_jobs(client: &PgClient, task: &str) -> Result<Vec<Arc<TableJob>>> {
    let rows = client
        .query(
            "reading the table plan",
            "SELECT table_id, source_schema, source_table, target_schema, target_table,
                    copy_format, columns, estimated_rows, estimated_bytes, chunks_total,
                    chunks_done, rows_copied, bytes_copied, state, existed_before, analyzed,
                    dump_id, coalesce(target_columns, columns), row_filter,
                    EXISTS (SELECT FROM pgferry.schema_step s WHERE s.task = $1
                            AND s.section = 'post-data' AND s.state = 'done'),
                    split_key
             FROM pgferry.table_state WHERE task = $1 ORDER BY table_id",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let source = QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2));
            let progress = TableProgress::new(
                r.get(0),
                source.clone(),
                r.get(7),
                r.get(8),
                r.get::<_, i32>(9) as u32,
            );
            progress.chunks_done.store(
                r.get::<_, i32>(10) as u32,
                std::sync::atomic::Ordering::Relaxed,
            );
            progress
                .rows_done
                .store(r.get(11), std::sync::atomic::Ordering::Relaxed);
            progress
                .bytes_done
                .store(r.get(12), std::sync::atomic::Ordering::Relaxed);
            if r.get::<_, &str>(13) == "loaded" {
                progress.set_state(TableState::Loaded);
            }
            Arc::new(TableJob {
                table_id: r.get(0),
                source,
                target: QualifiedName::new(r.get::<_, String>(3), r.get::<_, String>(4)),
                columns: serde_json::from_value(r.get(6)).unwrap_or_default(),
                target_columns: serde_json::from_value(r.get(17)).unwrap_or_default(),
                filter: r.get(18),
                format: CopyFormat::parse(r.get(5)).unwrap_or(CopyFormat::Text),
                existed_before: r.get(14),
                analyzed: r.get(15),
                dump_id: r.get(16),
                reload: r.get(19),
                split_key: r
                    .get::<_, Option<serde_json::Value>>(20)
                    .and_then(|v| serde_json::from_value(v).ok()),
                progress: Arc::new(progress),
            })
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
async fn summarize(
    client: &PgClient,
    task: &Task,
    already_done: bool,
    started: Instant,
    schema_objects: usize,
    sequences: usize,
    warnings: Vec<String>,
    progress: &RunProgress,
) -> Result<RunSummary> {
    let rows = client
        .query(
            "summarizing",
            "SELECT target_schema, target_table, rows_copied, bytes_copied,
                    coalesce((SELECT sum(seconds) FROM pgferry.chunk c
                              WHERE c.task = t.task AND c.table_id = t.table_id), 0)
             FROM pgferry.table_state t WHERE task = $1 ORDER BY table_id",
            &[&task.name],
        )
        .await?;
    let tables: Vec<TableSummary> = rows
        .iter()
        .map(|r| TableSummary {
            table: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)).to_string(),
            rows: r.get(2),
            bytes: r.get(3),
            seconds: r.get(4),
        })
        .collect();
    let task_row = control::load_task(client, &task.name).await?;
    let load_seconds = task_row
        .and_then(|t| (t.load_finished_at? - t.load_started_at?).to_std().ok())
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    Ok(RunSummary {
        task: task.name.clone(),
        already_done,
        rows: tables.iter().map(|t| t.rows).sum(),
        bytes: tables.iter().map(|t| t.bytes).sum(),
        tables,
        load_seconds,
        run_seconds: started.elapsed().as_secs_f64(),
        schema_objects,
        sequences,
        phases: progress.phase_times(),
        cdc: None,
        warnings,
    })
}
