//! `pgferry cutover`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use pgferry_engine::{CutoverOptions, CutoverReport};

use crate::cli::CutoverArgs;
use crate::{commands, exit, output};

pub async fn cutover(args: CutoverArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task.task)?;
    let options = CutoverOptions {
        dry_run: args.dry_run,
        abort: args.abort,
        drain_wait: Duration::from_secs(args.drain_wait),
        validation_jobs: task.validation_jobs.unwrap_or(task.full_load.jobs),
    };
    let report = pgferry_engine::cutover(&task, options).await?;
    let markdown = markdown_path(&args.task.task);
    if !args.dry_run {
        std::fs::write(&markdown, report.to_markdown())
            .with_context(|| format!("writing the report to {}", markdown.display()))?;
    }
    if args.task.json {
        output::print_json(&report)?;
    } else {
        print_report(&report, (!args.dry_run).then_some(markdown.as_path()));
    }
    Ok(exit::OK)
}

/// `task.toml` → `task.cutover.md`, beside it.
fn markdown_path(task_file: &Path) -> PathBuf {
    let stem = task_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "task".to_owned());
    task_file.with_file_name(format!("{stem}.cutover.md"))
}

fn print_report(report: &CutoverReport, markdown: Option<&Path>) {
    match report.state.as_str() {
        "planned" => {
            println!(
                "Cutover plan for task \"{}\" (nothing changed):",
                report.task
            );
            for p in &report.plan {
                println!("  - {p}");
            }
            return;
        }
        "aborted" => println!(
            "Cutover of task \"{}\" aborted: the fence is lifted and forward streaming goes on.",
            report.task
        ),
        _ => println!("Task \"{}\" is cut over.", report.task),
    }
    for s in &report.steps {
        println!(
            "  {:<10} {:<8} {}",
            s.step,
            s.state,
            s.seconds.map(|x| format!("{x:.2} s")).unwrap_or_default()
        );
    }
    if let Some(lsn) = &report.fence_lsn {
        println!(
            "Fence LSN {lsn}; drained to {}",
            report.drained_lsn.as_deref().unwrap_or("-")
        );
    }
    if let Some(d) = report.downtime_seconds {
        println!("Downtime (fence to write probe): {d:.1} s");
    }
    if let Some(path) = markdown {
        println!("Report for the change ticket: {}", path.display());
    }
}
