//! `pgferry assess`.

use std::time::Duration;

use anyhow::Context;
use comfy_table::Cell;
use pgferry_engine::{Assessment, Depth, Endpoints};

use crate::cli::AssessArgs;
use crate::{commands, exit, output};

pub async fn assess(args: AssessArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task.task)?;
    let endpoints = Endpoints::resolve(&task)?;
    let depth = Depth::Full {
        wal_sample: Duration::from_secs(args.wal_sample),
        long_transaction: Duration::from_secs(args.long_transaction),
    };
    let assessment = pgferry_engine::assess(&task, &endpoints, depth).await?;
    if let Some(path) = &args.markdown {
        std::fs::write(path, pgferry_engine::assessment_markdown(&assessment))
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if args.task.json {
        output::print_json(&assessment)?;
    } else {
        print(&assessment);
        if let Some(path) = &args.markdown {
            println!("Report written to {}", path.display());
        }
    }
    Ok(match assessment.exit_code() {
        3 => exit::PREREQUISITE,
        1 => exit::DIFFERENCES,
        _ => exit::OK,
    })
}

fn print(a: &Assessment) {
    println!(
        "Assessment of task \"{}\" ({}): PostgreSQL {} -> {}",
        a.task, a.migration_type, a.source_version, a.target_version
    );
    let mut t = output::table(&["Severity", "Check", "Object", "Finding", "Fix"]);
    for f in &a.findings {
        t.add_row(vec![
            Cell::new(f.severity.as_str()),
            Cell::new(f.check),
            Cell::new(f.object.as_deref().unwrap_or("")),
            Cell::new(&f.message),
            Cell::new(&f.fix),
        ]);
    }
    println!("{t}");
    let verdict = match a.summary.verdict {
        "blocked" => "BLOCKED: fix the blockers before running the task",
        "warnings" => "ready, with warnings",
        _ => "ready",
    };
    println!(
        "{} blocker(s), {} warning(s), {} info: {verdict}",
        a.summary.blockers, a.summary.warnings, a.summary.infos
    );
}
