//! `pgferry run`.

use std::sync::Arc;

use pgferry_config::Task;
use pgferry_engine::{EngineError, RunProgress, RunSummary};

use crate::cli::RunArgs;
use crate::output::{self, bytes, num, right};
use crate::progress::{self, Display};
use crate::{commands, exit};

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let mut task = commands::load_task(&args.task.task)?;
    if let Some(jobs) = args.jobs {
        task.full_load.jobs = jobs.max(1);
    }
    let summary = run_with_progress(&task, progress::interactive(args.no_progress)).await?;
    if args.task.json {
        output::print_json(&summary)?;
    } else {
        print_summary(&summary);
    }
    Ok(exit::OK)
}

/// Runs a task while drawing its progress; Ctrl-C and SIGTERM stop it cleanly (every
/// open transaction rolls back, and the next run resumes).
pub async fn run_with_progress(task: &Task, interactive: bool) -> anyhow::Result<RunSummary> {
    let progress = Arc::new(RunProgress::default());
    let display = Display::start(progress.clone(), interactive);
    let result = tokio::select! {
        r = pgferry_engine::run(task, progress) => r.map_err(anyhow::Error::from),
        _ = commands::shutdown_signal() => Err(EngineError::Interrupted.into()),
    };
    display.finish().await;
    result
}

pub fn print_summary(summary: &RunSummary) {
    if summary.already_done {
        println!(
            "Task \"{}\" is already complete; nothing to do. (`pgferry status` shows its \
             history.)",
            summary.task
        );
        return;
    }
    let mut t = output::table(&["Table", "Rows", "Size", "Copy time", "Rows/s", "Throughput"]);
    for table in &summary.tables {
        let (rps, bps) = output::rates(table.rows, table.bytes, table.seconds);
        t.add_row(vec![
            comfy_table::Cell::new(&table.table),
            num(table.rows),
            bytes(table.bytes),
            right(output::duration(table.seconds)),
            right(rps),
            right(bps),
        ]);
    }
    let (rps, bps) = output::rates(summary.rows, summary.bytes, summary.load_seconds);
    t.add_row(vec![
        comfy_table::Cell::new(format!("total ({} tables)", summary.tables.len())),
        num(summary.rows),
        bytes(summary.bytes),
        right(output::duration(summary.load_seconds)),
        right(rps),
        right(bps),
    ]);
    println!("{t}");
    if summary.cdc.is_some() {
        println!(
            "Task \"{}\" ran for {}: full load with {} schema objects built after the data, \
             then streaming; {} sequences set to the source's values.",
            summary.task,
            output::duration(summary.run_seconds),
            summary.schema_objects,
            summary.sequences
        );
    } else {
        println!(
            "Full load of task \"{}\" complete in {}: {} schema objects built after the data, \
             {} sequences set.",
            summary.task,
            output::duration(summary.run_seconds),
            summary.schema_objects,
            summary.sequences
        );
    }
    if let Some(c) = &summary.cdc {
        println!(
            "Streaming stopped at {}: {} inserts, {} updates, {} deletes, {} truncates in {} \
             transactions ({} exceptions). `pgferry run` resumes from there.",
            c.applied_lsn,
            c.totals.inserts,
            c.totals.updates,
            c.totals.deletes,
            c.totals.truncates,
            c.totals.transactions,
            c.totals.exceptions
        );
    }
    println!(
        "Phases: {}",
        summary
            .phases
            .iter()
            .map(|p| format!("{} {}", p.phase, output::duration(p.seconds)))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    if !summary.warnings.is_empty() {
        println!("Warnings:");
        for w in &summary.warnings {
            println!("  - {w}");
        }
    }
}
