//! The summary a run prints and returns.

use std::time::{Duration, Instant};

use super::{RunContext, RunSummary, TableSummary};
use crate::control;
use crate::error::Result;

/// What the run did, from the control schema and the context.
pub(super) async fn summarize(
    ctx: &mut RunContext<'_>,
    already_done: bool,
    started: Instant,
) -> Result<RunSummary> {
    let (client, task) = (&ctx.control, ctx.task);
    let tables: Vec<TableSummary> = control::stored_tables(client, &task.name)
        .await?
        .into_iter()
        .map(|t| TableSummary {
            table: t.target.to_string(),
            rows: t.rows_copied,
            bytes: t.bytes_copied,
            seconds: t.copy_seconds,
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
        schema_objects: ctx.schema_objects,
        sequences: ctx.sequences,
        phases: ctx.progress.phase_times(),
        cdc: ctx.cdc.clone(),
        warnings: ctx.warnings.clone(),
    })
}
