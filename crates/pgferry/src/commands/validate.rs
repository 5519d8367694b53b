//! `pgferry validate`.

use comfy_table::Cell;
use pgferry_engine::ValidationReport;

use crate::cli::ValidateArgs;
use crate::output::{self, num};
use crate::{commands, exit};

pub async fn validate(args: ValidateArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task.task)?;
    if args.schema {
        return validate_schema(&task, args.task.json).await;
    }
    let jobs = args
        .jobs
        .or(task.validation_jobs)
        .unwrap_or(task.full_load.jobs);
    let report = pgferry_engine::validate(&task, jobs).await?;
    if args.task.json {
        output::print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(if report.all_match() {
        exit::OK
    } else {
        exit::DIFFERENCES
    })
}

pub fn print_report(report: &ValidationReport) {
    let mut t = output::table(&["Table", "Result", "Source rows", "Target rows", "Detail"]);
    for c in &report.tables {
        t.add_row(vec![
            Cell::new(&c.table),
            Cell::new(c.outcome.as_str()),
            c.source_rows.map(num).unwrap_or_else(|| Cell::new("-")),
            c.target_rows.map(num).unwrap_or_else(|| Cell::new("-")),
            Cell::new(c.detail.as_deref().unwrap_or("")),
        ]);
    }
    println!("{t}");
    if report.all_match() {
        println!(
            "All {} tables match (row count and checksum) — checked in {}.",
            report.matched,
            output::duration(report.seconds)
        );
    } else {
        println!(
            "{} of {} tables differ; {} match.",
            report.differing,
            report.tables.len(),
            report.matched
        );
    }
}

async fn validate_schema(task: &pgferry_config::Task, json: bool) -> anyhow::Result<u8> {
    let report = pgferry_engine::compare_schema(task).await?;
    if json {
        output::print_json(&report)?;
    } else if report.matches() {
        println!(
            "The schema matches: {} objects compared, none missing or different on the target.",
            report.objects
        );
    } else {
        let mut t = output::table(&["Kind", "Object", "Problem"]);
        for d in &report.differences {
            t.add_row(vec![
                Cell::new(&d.kind),
                Cell::new(&d.object),
                Cell::new(&d.problem),
            ]);
        }
        println!("{t}");
        println!(
            "{} of {} objects are missing or different on the target.",
            report.differences.len(),
            report.objects
        );
    }
    Ok(if report.matches() {
        exit::OK
    } else {
        exit::DIFFERENCES
    })
}
