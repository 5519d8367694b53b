//! `pgferry validate`.

use comfy_table::Cell;
use pgferry_engine::ValidationReport;

use crate::cli::ValidateArgs;
use crate::output::{self, num};
use crate::{commands, exit};

pub async fn validate(args: ValidateArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task.task)?;
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
