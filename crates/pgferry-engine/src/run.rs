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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgferry_config::{TargetTablePrepMode, Task};
use pgferry_pg::catalog::{self, ServerInfo};
use pgferry_pg::copy::{ChunkRange, CopyFormat};
use pgferry_pg::dump::{PgTools, RenderOptions};
use pgferry_pg::replication::ReplicationClient;
use pgferry_pg::{ConnInfo, PgClient, PgError, QualifiedName, Side};
use serde::Serialize;

use crate::control::{self, Level, Phase};
use crate::error::{EngineError, Result};
use crate::load::{LoadContext, TableJob};
use crate::plan::{self, PlanSettings};
use crate::progress::{PhaseTime, RunProgress, TableProgress, TableState};
use crate::snapshot::{self, SnapshotHolder};
use crate::{build, cdc, finish, load, preflight, schema, transform};

/// Both sides' connection details, resolved from the task.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub source: ConnInfo,
    pub target: ConnInfo,
}

impl Endpoints {
    pub fn resolve(task: &Task) -> Result<Self> {
        let resolve = |side, endpoint: &pgferry_config::Endpoint| {
            let info = ConnInfo::resolve(&endpoint.url, endpoint.password.as_ref())
                .map_err(|source| EngineError::Pg(PgError::ConnInfo { side, source }))?;
            for ignored in &info.ignored {
                tracing::warn!(side = %side, option = %ignored, "connection option ignored");
            }
            Ok::<_, EngineError>(info)
        };
        Ok(Endpoints {
            source: resolve(Side::Source, &task.source)?,
            target: resolve(Side::Target, &task.target)?,
        })
    }
}

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
        let (holder, planned) = plan_task(
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
            plan_cdc_only(task, endpoints, &source, &source_info, &mut control_client).await?,
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
            load::pending_chunks(&control_client, &task.name, &tables).await?
        } else {
            Vec::new()
        };
        // A load that is not recorded done needs its snapshot even with every chunk copied:
        // the large objects are copied from it before the load ends (`build::load_done`).
        let snapshot = if chunks.is_empty() && phase != Phase::Loading {
            None
        } else {
            progress.set_phase("load");
            Some(match snapshot_holder.take() {
                Some(h) if h.is_alive() => h,
                _ => {
                    // Waiting for a source that is coming back.
                    let holder = load::retried("exporting a snapshot", || {
                        SnapshotHolder::export(&endpoints.source)
                    })
                    .await?;
                    let message = if task.migration_type.needs_cdc() {
                        let notes = crate::resume::resync_for_new_snapshot(
                            &mut control_client,
                            &task.name,
                            holder.visibility().unwrap_or_default(),
                        )
                        .await?;
                        // Resets change which chunks remain.
                        tables = table_jobs(&control_client, &task.name).await?;
                        progress.set_tables(tables.iter().map(|t| t.progress.clone()).collect());
                        chunks = load::pending_chunks(&control_client, &task.name, &tables).await?;
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
        let input = build::BuildInput {
            ctx,
            tables: tables.clone(),
            chunks,
            steps,
            table_dump_ids: schema::table_step_ids(&control_client, &task.name).await?,
            unfinished,
            preamble: preamble.clone(),
            skip_duplicates: task.full_load.target_table_prep_mode != TargetTablePrepMode::Fail,
            jobs: task.full_load.jobs,
            snapshot,
        };
        let outcome = match build::run(input, progress.clone()).await {
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
        cdc_outcome = Some(cdc::run(task, endpoints, &mut control_client, progress).await?);
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

/// What CDC set up on the source while planning.
pub(crate) struct CdcSetup {
    pub slot: String,
    pub publication: String,
    pub publication_created: bool,
    pub consistent_point: pgferry_pg::Lsn,
    /// Left out of both the load and the stream (`no_key_tables = "exclude"`).
    pub excluded: Vec<QualifiedName>,
    /// Loaded, but left out of the stream: unlogged tables write no WAL.
    pub unlogged: Vec<QualifiedName>,
    pub binary: bool,
}

/// Sets up CDC on the source before the snapshot exists: tables without a key (so the
/// publication never breaks the application), then the publication, then the slot, whose
/// snapshot the full load uses (`export`) or not (CDC only).
pub(crate) async fn setup_cdc(
    task: &Task,
    endpoints: &Endpoints,
    source: &PgClient,
    source_info: &ServerInfo,
    control_client: &PgClient,
    export: bool,
) -> Result<(CdcSetup, Option<SnapshotHolder>, Vec<String>)> {
    let live = catalog::list_tables(source).await?;
    let selected = plan::select_tables(&live, &task.selection);
    if selected.tables.is_empty() && selected.parents.is_empty() {
        return Err(EngineError::NothingSelected);
    }
    preflight::check_source_tables(source_info, &selected.tables)?;
    // Unlogged tables write no WAL, so no publication can carry their changes: they are
    // full-loaded like any other table and left out of the stream.
    let (unlogged, logged): (Vec<catalog::Table>, Vec<catalog::Table>) =
        selected.tables.iter().cloned().partition(|t| t.unlogged);
    let no_key =
        cdc::source::handle_tables_without_key(source, control_client, task, &logged).await?;
    let kept: Vec<catalog::Table> = logged
        .into_iter()
        .filter(|t| !no_key.excluded.contains(&t.name))
        .collect();
    let (publication, publication_created) = cdc::source::ensure_publication(
        source,
        task,
        &kept,
        &selected.parents,
        source_info.version_num >= 130000,
    )
    .await?;
    let slot = task
        .cdc
        .slot_name
        .clone()
        .unwrap_or_else(|| cdc::source::default_name(&task.name));
    // A slot of this name without a task row is the leftover of a planning that died
    // before it was recorded: it was never used, so it is dropped and made again.
    if cdc::source::slot_info(source, &slot).await?.is_some() {
        cdc::source::free_slot(source, &slot).await?;
        source
            .execute(
                "dropping an unused replication slot",
                "SELECT pg_drop_replication_slot($1)",
                &[&slot],
            )
            .await?;
    }
    let mut repl =
        ReplicationClient::connect(Side::Source, &endpoints.source, "pgferry slot").await?;
    let created = repl.create_slot(&slot, export).await?;
    let holder = match (export, created.snapshot.clone()) {
        (true, Some(name)) => Some(SnapshotHolder::from_slot(repl, name)),
        (true, None) => {
            return Err(EngineError::Pg(PgError::Protocol {
                side: Side::Source,
                message: "the new replication slot exported no snapshot".to_owned(),
            }));
        }
        (false, _) => None,
    };
    // Binary tuple data (PostgreSQL 14+) when every column can travel in binary between
    // two servers.
    let binary = task.cdc.binary
        && source_info.version_num >= 140000
        && kept
            .iter()
            .chain(&selected.parents)
            .all(|t| t.binary_copy_safe);
    let mut warnings = Vec::new();
    for t in &no_key.changed {
        warnings.push(format!(
            "set REPLICA IDENTITY FULL on {t}; `pgferry cleanup` restores it"
        ));
    }
    for t in &no_key.excluded {
        warnings.push(format!(
            "{t} has no key and is left out (no_key_tables = \"exclude\")"
        ));
    }
    for t in &unlogged {
        warnings.push(format!(
            "{} is UNLOGGED: it is copied by the full load, but its later changes write no \
             WAL and cannot be streamed. Make it logged (ALTER TABLE ... SET LOGGED) before \
             planning if its changes matter",
            t.name
        ));
    }
    Ok((
        CdcSetup {
            slot,
            publication,
            publication_created,
            consistent_point: created.consistent_point,
            excluded: no_key.excluded,
            unlogged: unlogged.iter().map(|t| t.name.clone()).collect(),
            binary,
        },
        holder,
        warnings,
    ))
}

/// Records a slot as where the task's stream starts, inside the caller's transaction: at
/// planning, or when a start-over replaces a lost slot (then the old checkpoint, figures,
/// snapshot filters and exclusions go with the old slot).
pub(crate) async fn store_cdc_setup(
    tx: &tokio_postgres::Transaction<'_>,
    task: &str,
    setup: &CdcSetup,
) -> Result<()> {
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "storing the CDC setup", e));
    tx.execute(
        "INSERT INTO pgferry.cdc_state (task, slot_name, publication, publication_created,
                                        consistent_lsn, binary_mode)
         VALUES ($1, $2, $3, $4, $5::text::pg_lsn, $6)
         ON CONFLICT (task) DO UPDATE SET slot_name = excluded.slot_name,
             publication = excluded.publication,
             publication_created = cdc_state.publication_created OR excluded.publication_created,
             consistent_lsn = excluded.consistent_lsn, binary_mode = excluded.binary_mode,
             applied_lsn = NULL, applied_commit_time = NULL, received_lsn = NULL,
             wal_retained_bytes = NULL, start_over_since = NULL, updated_at = now()",
        &[
            &task,
            &setup.slot,
            &setup.publication,
            &setup.publication_created,
            &setup.consistent_point.to_string(),
            &setup.binary,
        ],
    )
    .await
    .map_err(err)?;
    tx.execute("DELETE FROM pgferry.cdc_table WHERE task = $1", &[&task])
        .await
        .map_err(err)?;
    // Both are left out of the stream; only `excluded` tables are left out of the load.
    for t in setup.excluded.iter().chain(&setup.unlogged) {
        tx.execute(
            "INSERT INTO pgferry.cdc_table (task, schema_name, table_name, excluded)
             VALUES ($1, $2, $3, true)",
            &[&task, &t.schema, &t.name],
        )
        .await
        .map_err(err)?;
    }
    Ok(())
}

/// Plans a CDC-only task: the target already holds the tables (loaded some other way), and
/// the stream starts when the slot is created.
async fn plan_cdc_only(
    task: &Task,
    endpoints: &Endpoints,
    source: &PgClient,
    source_info: &ServerInfo,
    control_client: &mut PgClient,
) -> Result<Vec<String>> {
    let live = catalog::list_tables(source).await?;
    let selected = plan::select_tables(&live, &task.selection);
    let names: Vec<QualifiedName> = selected
        .tables
        .iter()
        .filter(|t| t.partition_root.is_none())
        .chain(&selected.parents)
        .map(|t| t.name.clone())
        .collect();
    let present = catalog::existing_relations(control_client, &names).await?;
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !present.contains(n))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(EngineError::Pg(PgError::Prerequisite {
            side: Side::Target,
            problem: format!(
                "migration_type = \"cdc\" streams changes into existing tables, and {} are \
                 missing on the target: {}",
                missing.len(),
                missing.join(", ")
            ),
            fix: "create and load them first, or use migration_type = \"full-load-and-cdc\", \
                  which does both without a gap"
                .to_owned(),
        }));
    }
    let (setup, _, warnings) =
        setup_cdc(task, endpoints, source, source_info, control_client, false).await?;
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "storing the plan", e));
    let tx = control_client.raw_mut().transaction().await.map_err(err)?;
    tx.execute(
        "INSERT INTO pgferry.task (name, migration_type, settings, phase, source, target)
         VALUES ($1, $2, $3, 'cdc', $4, $5)",
        &[
            &task.name,
            &task.migration_type.as_str(),
            &task.settings_json(),
            &endpoints.source.describe(),
            &endpoints.target.describe(),
        ],
    )
    .await
    .map_err(err)?;
    store_cdc_setup(&tx, &task.name, &setup).await?;
    control::event(
        &tx,
        &task.name,
        Level::Info,
        "plan",
        &format!(
            "CDC starts at {} (slot {}, publication {})",
            setup.consistent_point, setup.slot, setup.publication
        ),
        None,
    )
    .await?;
    tx.commit().await.map_err(err)?;
    Ok(warnings)
}

/// Plans a new task and stores the plan, the schema and the task row in one target
/// transaction. Returns the snapshot the load reads, and warnings for the user.
async fn plan_task(
    task: &Task,
    tools: &PgTools,
    endpoints: &Endpoints,
    source: &PgClient,
    source_info: &ServerInfo,
    target_info: &ServerInfo,
    control_client: &mut PgClient,
) -> Result<(SnapshotHolder, Vec<String>)> {
    let mut warnings = Vec::new();
    if task.mapping.has_expressions() {
        let live = catalog::list_tables(source).await?;
        let selected = plan::select_tables(&live, &task.selection);
        let tables = || selected.tables.iter().chain(&selected.parents);
        let maps = transform::table_maps(&task.mapping, tables())?;
        transform::check_expressions_on_source(source, tables(), &maps).await?;
    }
    let (holder, cdc_setup) = if task.migration_type.needs_cdc() {
        // Fail on tables in the way before anything is created on the source.
        let live = catalog::list_tables(source).await?;
        let selected = plan::select_tables(&live, &task.selection);
        let maps = transform::table_maps(
            &task.mapping,
            selected.tables.iter().chain(&selected.parents),
        )?;
        let names: Vec<QualifiedName> = selected
            .tables
            .iter()
            .chain(&selected.parents)
            .map(|t| transform::target_of(&maps, t))
            .collect();
        let existing = catalog::existing_relations(control_client, &names).await?;
        if !existing.is_empty()
            && task.full_load.target_table_prep_mode == TargetTablePrepMode::Fail
        {
            return Err(EngineError::TablesInTheWay { tables: existing });
        }
        let (setup, holder, w) =
            setup_cdc(task, endpoints, source, source_info, control_client, true).await?;
        warnings.extend(w);
        let holder = holder.ok_or_else(|| {
            EngineError::Pg(PgError::Protocol {
                side: Side::Source,
                message: "the replication slot exported no snapshot".to_owned(),
            })
        })?;
        (holder, Some(setup))
    } else {
        (SnapshotHolder::export(&endpoints.source).await?, None)
    };
    let snapshot = holder.name().to_owned();
    let reader = snapshot::reader(&endpoints.source, &snapshot, "pgferry plan").await?;
    let all = catalog::list_tables(&reader).await?;
    let large_objects = crate::blobs::count(&reader).await?;
    if large_objects > 0 && task.migration_type.needs_cdc() {
        warnings.push(format!(
            "the source has {large_objects} large object(s): they are copied as of the load's \
             snapshot, and logical decoding does not carry their later changes; copy them \
             again at cutover if the application changes them"
        ));
    }
    let mut selected = plan::select_tables(&all, &task.selection);
    if let Some(setup) = &cdc_setup {
        selected
            .tables
            .retain(|t| !setup.excluded.contains(&t.name));
    }
    warnings.extend(selected.warnings.iter().cloned());
    if selected.tables.is_empty() && selected.parents.is_empty() {
        return Err(EngineError::NothingSelected);
    }
    preflight::check_source_tables(source_info, &selected.tables)?;
    let maps = transform::table_maps(
        &task.mapping,
        selected.tables.iter().chain(&selected.parents),
    )?;

    let names: Vec<QualifiedName> = selected
        .tables
        .iter()
        .chain(&selected.parents)
        .map(|t| transform::target_of(&maps, t))
        .collect();
    let existing = catalog::existing_relations(control_client, &names).await?;
    let prep = task.full_load.target_table_prep_mode;
    if !existing.is_empty() && prep == TargetTablePrepMode::Fail {
        return Err(EngineError::TablesInTheWay { tables: existing });
    }
    let existing_set: HashSet<&QualifiedName> = existing.iter().collect();
    let kept_existing: HashSet<u32> = match prep {
        TargetTablePrepMode::Truncate | TargetTablePrepMode::DoNothing => selected
            .tables
            .iter()
            .chain(&selected.parents)
            .filter(|t| existing_set.contains(&transform::target_of(&maps, t)))
            .map(|t| t.oid)
            .collect(),
        _ => HashSet::new(),
    };

    let settings = PlanSettings {
        chunk_size: task.full_load.chunk_size,
        block_size: source_info.block_size,
        tid_range_scan: source_info.has_tid_range_scan(),
        force_text: source_info.encoding != target_info.encoding,
        prefer_integer_keys: task.migration_type.needs_cdc(),
    };
    if settings.force_text {
        warnings.push(format!(
            "the source's encoding is {} and the target's {}: every table is copied as text, \
             which converts it",
            source_info.encoding, target_info.encoding
        ));
    }
    let keys = crate::keysplit::read(&reader, &selected.tables, &maps, &settings).await?;
    let planned = plan::plan_tables(&selected.tables, &maps, &keys, &settings);
    for t in &planned {
        if let Some(why) = &t.split_note {
            warnings.push(format!(
                "{} ({} MB) is copied in one piece: {why}",
                t.source,
                t.estimated_bytes / (1024 * 1024)
            ));
        }
    }
    let roots: HashMap<u32, QualifiedName> = selected
        .tables
        .iter()
        .filter_map(|t| Some((t.oid, t.partition_root.clone()?)))
        .collect();

    let archive = tempfile::NamedTempFile::new().map_err(|e| PgError::Io {
        context: "creating a file for the schema dump".to_owned(),
        source: e,
    })?;
    tools
        .dump_schema(&endpoints.source, Some(&snapshot), archive.path())
        .await?;
    let all_oids: HashSet<u32> = all.iter().map(|t| t.oid).collect();
    let selected_oids: HashSet<u32> = selected
        .tables
        .iter()
        .chain(&selected.parents)
        .map(|t| t.oid)
        .collect();
    let schema_plan = schema::plan_schema(
        tools,
        archive.path(),
        &reader,
        &task.selection,
        &all_oids,
        &selected_oids,
        &kept_existing,
        &all.iter().map(|t| (t.oid, t.table_bytes)).collect(),
        &RenderOptions {
            keep_owners: task.full_load.keep_owners,
            keep_privileges: task.full_load.keep_privileges,
        },
    )
    .await?;
    let mut schema_plan = schema_plan;
    // A pg_dump newer than the target writes settings the target does not know.
    let known: HashSet<String> = control_client
        .query(
            "reading the target's settings",
            "SELECT name FROM pg_settings",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0).to_ascii_lowercase())
        .collect();
    schema_plan.preamble = pgferry_pg::dump::drop_unknown_settings(&schema_plan.preamble, &known);
    for step in &mut schema_plan.steps {
        step.sql = pgferry_pg::dump::drop_unknown_settings(&step.sql, &known);
    }
    transform::apply_to_schema(
        &mut schema_plan,
        &selected
            .tables
            .iter()
            .chain(&selected.parents)
            .collect::<Vec<_>>(),
        &maps,
        &kept_existing,
    );
    warnings.extend(schema_plan.warnings.iter().cloned());
    let archive_bytes = std::fs::read(archive.path()).map_err(|e| PgError::Io {
        context: "reading the schema dump".to_owned(),
        source: e,
    })?;

    let err =
        |context: &'static str| move |e| EngineError::Pg(PgError::query(Side::Target, context, e));
    let existing_json = serde_json::to_value(&existing).unwrap_or_default();
    let tx = control_client
        .raw_mut()
        .transaction()
        .await
        .map_err(err("storing the plan"))?;
    tx.execute(
        "INSERT INTO pgferry.task (name, migration_type, settings, phase, source, target,
                                   schema_archive, schema_preamble, existing_tables)
         VALUES ($1, $2, $3, 'planned', $4, $5, $6, $7, $8)",
        &[
            &task.name,
            &task.migration_type.as_str(),
            &task.settings_json(),
            &endpoints.source.describe(),
            &endpoints.target.describe(),
            &archive_bytes,
            &schema_plan.preamble,
            &existing_json,
        ],
    )
    .await
    .map_err(err("storing the plan"))?;
    let insert_table = tx
        .prepare(
            "INSERT INTO pgferry.table_state (task, table_id, source_schema, source_table,
                 target_schema, target_table, copy_format, columns, estimated_rows,
                 estimated_bytes, chunks_total, existed_before, dump_id, root_schema,
                 root_table, target_columns, row_filter, split_key, split_note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $19)",
        )
        .await
        .map_err(err("storing the plan"))?;
    let insert_chunk = tx
        .prepare(
            "INSERT INTO pgferry.chunk (task, table_id, chunk_no, start_block, end_block,
                                        key_lo, key_hi)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(err("storing the plan"))?;
    let mut chunk_count = 0;
    for t in &planned {
        let columns = serde_json::to_value(&t.columns).unwrap_or_default();
        tx.execute(
            &insert_table,
            &[
                &task.name,
                &t.table_id,
                &t.source.schema,
                &t.source.name,
                &t.target.schema,
                &t.target.name,
                &t.format.as_str(),
                &columns,
                &t.estimated_rows,
                &t.estimated_bytes,
                &(t.chunks.len() as i32),
                &existing_set.contains(&t.target),
                &schema_plan.table_entries.get(&t.source_oid),
                &roots.get(&t.source_oid).map(|r| r.schema.clone()),
                &roots.get(&t.source_oid).map(|r| r.name.clone()),
                &serde_json::to_value(&t.target_columns).unwrap_or_default(),
                &t.filter,
                &t.split_key
                    .as_ref()
                    .and_then(|k| serde_json::to_value(k).ok()),
                &t.split_note,
            ],
        )
        .await
        .map_err(err("storing the plan"))?;
        for (i, range) in t.chunks.iter().enumerate() {
            let (start, end, lo, hi) = match range {
                Some(ChunkRange::Blocks(b)) => (Some(b.start), b.end, None, None),
                Some(ChunkRange::Key(k)) => (None, None, k.lo.clone(), k.hi.clone()),
                None => (None, None, None, None),
            };
            tx.execute(
                &insert_chunk,
                &[&task.name, &t.table_id, &(i as i32), &start, &end, &lo, &hi],
            )
            .await
            .map_err(err("storing the plan"))?;
            chunk_count += 1;
        }
    }
    schema::store_steps(&tx, &task.name, &schema_plan.steps).await?;
    if let Some(setup) = &cdc_setup {
        store_cdc_setup(&tx, &task.name, setup).await?;
    }
    control::event(
        &tx,
        &task.name,
        Level::Info,
        "plan",
        &format!(
            "planned {} tables in {chunk_count} chunks and {} schema objects",
            planned.len(),
            schema_plan.steps.len()
        ),
        None,
    )
    .await?;
    for w in &warnings {
        control::event(&tx, &task.name, Level::Warning, "plan", w, None).await?;
    }
    tx.commit().await.map_err(err("storing the plan"))?;
    Ok((holder, warnings))
}

/// Marks tables (emptied by the caller, in the same transaction) as not copied yet: all
/// their chunks pending, their counters at zero.
pub(crate) async fn mark_pending(
    tx: &tokio_postgres::Transaction<'_>,
    task: &str,
    table_ids: &[i32],
) -> Result<()> {
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "resetting tables", e));
    tx.execute(
        "UPDATE pgferry.chunk SET state = 'pending', rows = NULL, bytes = NULL,
                seconds = NULL, finished_at = NULL
         WHERE task = $1 AND table_id = ANY($2)",
        &[&task, &table_ids],
    )
    .await
    .map_err(err)?;
    tx.execute(
        "UPDATE pgferry.table_state SET chunks_done = 0, rows_copied = 0,
                bytes_copied = 0, state = 'pending', analyzed = false,
                started_at = NULL, finished_at = NULL, last_error = NULL
         WHERE task = $1 AND table_id = ANY($2)",
        &[&task, &table_ids],
    )
    .await
    .map_err(err)?;
    Ok(())
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
