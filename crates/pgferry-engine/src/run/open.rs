//! Opening a run: connect to both servers, check them, take the task's run lock, and
//! either plan a new task (one target transaction: a crash before its commit leaves
//! nothing, after it the whole plan) or find the phase an existing one stands in.

use std::sync::Arc;

use pgferry_config::Task;
use pgferry_pg::catalog::ServerInfo;
use pgferry_pg::dump::PgTools;
use pgferry_pg::{PgClient, Side};

use super::{RunContext, RunOptions};
use crate::assess;
use crate::control::{self, Level, Phase};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::progress::RunProgress;

/// Where an opened run stands.
pub(super) enum Opened<'a> {
    /// The task finished in an earlier run.
    AlreadyDone(RunContext<'a>),
    /// The task is in this phase (a new task: `Planned`, or `Cdc` for CDC-only tasks).
    At(RunContext<'a>, Phase),
}

pub(super) async fn open<'a>(
    task: &'a Task,
    endpoints: &'a Endpoints,
    progress: &'a Arc<RunProgress>,
    options: RunOptions,
) -> Result<Opened<'a>> {
    progress.set_phase("connecting");
    let source = pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry").await?;
    let mut control_client = pgferry_pg::connect(
        Side::Target,
        &endpoints.target,
        &control::control_application_name(),
    )
    .await?;
    let source_info = ServerInfo::load(&source).await?;
    let target_info = ServerInfo::load(&control_client).await?;
    let schemas = crate::load::plan::scope_schemas(&source, task).await?;
    let infos = (&source_info, &target_info);
    let assessment = assess::preflight(task, &source, &control_client, infos, &schemas).await?;
    let warnings = assessment
        .findings
        .iter()
        .filter(|f| f.severity == assess::Severity::Warning)
        .map(|f| f.message.clone())
        .collect();
    progress.set_assessment(assessment);
    control::ensure_schema(&mut control_client).await?;
    control::lock_task(&control_client, &task.name, "run").await?;

    let mut ctx = RunContext {
        task,
        endpoints,
        progress,
        source: None,
        control: control_client,
        schemas,
        snapshot: None,
        preamble: String::new(),
        tables: Vec::new(),
        warnings,
        schema_objects: 0,
        sequences: 0,
        cdc: None,
        handed_over: false,
    };
    let existing = control::load_task(&ctx.control, &task.name).await?;
    if options.start_over && existing.is_none() {
        return Err(EngineError::CannotStartOver {
            task: task.name.clone(),
            problem: "it has never run: a plain `pgferry run` starts it".to_owned(),
        });
    }
    match &existing {
        Some(row) => {
            if row.migration_type != task.migration_type.as_str() {
                return Err(EngineError::TaskChanged {
                    task: task.name.clone(),
                    was: row.migration_type.clone(),
                    now: task.migration_type.as_str().to_owned(),
                });
            }
            if row.phase == Phase::Done {
                return Ok(Opened::AlreadyDone(ctx));
            }
            tracing::info!(phase = row.phase.as_str(), "resuming task");
            let message = format!("run resumed in phase {}", row.phase.as_str());
            control::event(
                ctx.control.raw(),
                &task.name,
                Level::Info,
                "run",
                &message,
                None,
            )
            .await?;
        }
        None => plan(&mut ctx, &source, &source_info, &target_info).await?,
    }
    if options.start_over {
        progress.set_phase("starting over");
        let (holder, note) =
            crate::startover::start_over(task, endpoints, &source, &source_info, &mut ctx.control)
                .await?;
        tracing::info!("{note}");
        ctx.snapshot = Some(holder);
    }
    let row = control::load_task(&ctx.control, &task.name)
        .await?
        .ok_or_else(|| EngineError::UnknownTask {
            task: task.name.clone(),
        })?;
    ctx.preamble = row.schema_preamble.unwrap_or_default();
    ctx.source = Some(source);
    // Progress displays and metrics show the tables in every phase, streaming included.
    // (A task about to restore its pre-data schema reads them after that.)
    if row.phase != Phase::Planned {
        ctx.tables = super::steps::table_jobs(&ctx.control, &task.name).await?;
        progress.set_tables(ctx.tables.iter().map(|t| t.progress.clone()).collect());
    }
    Ok(Opened::At(ctx, row.phase))
}

/// Plans a new task: its tables, chunks, schema and CDC setup, stored in one transaction.
async fn plan(
    ctx: &mut RunContext<'_>,
    source: &PgClient,
    source_info: &ServerInfo,
    target_info: &ServerInfo,
) -> Result<()> {
    ctx.progress.set_phase("planning");
    let task = ctx.task;
    if task.migration_type.needs_full_load() {
        let tools = PgTools::locate(source_info.major()).await?;
        let (holder, notes) = crate::load::planning::plan_task(
            task,
            &tools,
            ctx.endpoints,
            source,
            source_info,
            target_info,
            &mut ctx.control,
        )
        .await?;
        ctx.warnings.extend(notes);
        ctx.snapshot = Some(holder);
    } else {
        let notes = crate::load::planning::plan_cdc_only(
            task,
            ctx.endpoints,
            source,
            source_info,
            &mut ctx.control,
        )
        .await?;
        ctx.warnings.extend(notes);
    }
    Ok(())
}
