//! The summary a run prints and returns.

use std::time::{Duration, Instant};

use pgferry_pg::QualifiedName;

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
        schema_objects: ctx.schema_objects,
        sequences: ctx.sequences,
        phases: ctx.progress.phase_times(),
        cdc: ctx.cdc.clone(),
        warnings: ctx.warnings.clone(),
    })
}
