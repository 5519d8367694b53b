//! `pgferry cutover`, `pgferry rollback` and `pgferry finish`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use pgferry_engine::{CutoverOptions, CutoverReport, FinishOptions};

use crate::cli::{CutoverArgs, FinishArgs};
use crate::{commands, exit, output};

pub async fn cutover(args: CutoverArgs) -> anyhow::Result<u8> {
    switch(args, false).await
}

pub async fn rollback(args: CutoverArgs) -> anyhow::Result<u8> {
    switch(args, true).await
}

async fn switch(args: CutoverArgs, back: bool) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task.task)?;
    let options = CutoverOptions {
        dry_run: args.dry_run,
        abort: args.abort,
        drain_wait: Duration::from_secs(args.drain_wait),
        validation_jobs: task.validation_jobs.unwrap_or(task.full_load.jobs),
    };
    let report = if back {
        pgferry_engine::rollback(&task, options).await?
    } else {
        pgferry_engine::cutover(&task, options).await?
    };
    let markdown = markdown_path(&args.task.task, &report.kind);
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

/// `pgferry finish`.
pub async fn finish(args: FinishArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task.task)?;
    let options = FinishOptions {
        force: args.force,
        keep_control: args.keep_control_schema,
        unfence_source: args.unfence_source,
        drain_wait: Some(Duration::from_secs(args.drain_wait)),
    };
    let report = pgferry_engine::finish(&task, options).await?;
    if args.task.json {
        output::print_json(&report)?;
        return Ok(exit::OK);
    }
    println!("Task \"{}\" is finished.", report.task);
    let none = || "(none)".to_owned();
    println!(
        "  reverse stream: slot {}, publication {} dropped on the target; control schema on \
         the source {}",
        report.reverse.slot_dropped.clone().unwrap_or_else(none),
        report
            .reverse
            .publication_dropped
            .clone()
            .unwrap_or_else(none),
        if report.reverse.control_schema_dropped {
            "dropped"
        } else {
            "kept"
        }
    );
    println!(
        "  forward stream: slot {}, publication {} dropped on the source; {} replica \
         identities restored",
        report.forward.slot_dropped.clone().unwrap_or_else(none),
        report
            .forward
            .publication_dropped
            .clone()
            .unwrap_or_else(none),
        report.forward.identities_restored.len() + report.reverse.identities_restored.len()
    );
    if report.unapplied_changes > 0 {
        println!(
            "  {} change(s) on the target were given up on the source (--force)",
            report.unapplied_changes
        );
    }
    if !report.source_unfenced {
        println!(
            "  the source stays read-only (ALTER DATABASE ... RESET \
             default_transaction_read_only lifts it, or --unfence-source)"
        );
    }
    Ok(exit::OK)
}

/// `task.toml` → `task.cutover.md` (or `task.rollback.md`), beside it.
fn markdown_path(task_file: &Path, kind: &str) -> PathBuf {
    let stem = task_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "task".to_owned());
    task_file.with_file_name(format!("{stem}.{kind}.md"))
}

fn print_report(report: &CutoverReport, markdown: Option<&Path>) {
    let back = report.kind == "rollback";
    let title = if back { "Rollback" } else { "Cutover" };
    match report.state.as_str() {
        "planned" => {
            println!(
                "{title} plan for task \"{}\" (nothing changed):",
                report.task
            );
            for p in &report.plan {
                println!("  - {p}");
            }
            return;
        }
        "aborted" => println!(
            "{title} of task \"{}\" aborted: the fence is lifted and streaming goes on.",
            report.task
        ),
        _ if back => println!(
            "Task \"{}\" is rolled back: the source is open, the forward stream goes on.",
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
