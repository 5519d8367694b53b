//! `pgferry alarms`.

use comfy_table::Cell;
use pgferry_engine::AlarmsReport;
use pgferry_engine::Endpoints;
use pgferry_observe::alarm::number;
use pgferry_pg::Side;

use crate::cli::TaskArgs;
use crate::{commands, exit, output};

pub async fn alarms(args: TaskArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task)?;
    let endpoints = Endpoints::resolve(&task)?;
    let client = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry alarms").await?;
    let report = pgferry_engine::alarms_report(&client, &task).await?;
    if args.json {
        output::print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(if report.alarms.iter().any(|a| a.state == "ALARM") {
        exit::DIFFERENCES
    } else {
        exit::OK
    })
}

fn print_report(r: &AlarmsReport) {
    let when = if r.running {
        "running now; states as of its last evaluation"
    } else {
        "not running; states as the last run left them"
    };
    println!("Alarms of task \"{}\" ({when})", r.task);
    let mut t = output::table(&["Alarm", "State", "Since", "Rule", "Reason"]);
    for a in &r.alarms {
        let rule = a
            .rule
            .as_ref()
            .map(|rule| {
                format!(
                    "{:?}({}) {} {} for {} of {} × {} s",
                    rule.statistic,
                    rule.metric,
                    symbol(rule.comparison_operator),
                    number(rule.threshold),
                    rule.datapoints_needed(),
                    rule.evaluation_periods,
                    rule.period
                )
            })
            .unwrap_or_default();
        t.add_row(vec![
            Cell::new(&a.name),
            Cell::new(&a.state),
            Cell::new(
                a.since
                    .map(|s| s.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
            ),
            Cell::new(rule),
            Cell::new(&a.reason),
        ]);
    }
    println!("{t}");
    for a in r.alarms.iter().filter(|a| !a.history.is_empty()) {
        println!("History of {}:", a.name);
        for h in &a.history {
            println!(
                "  {}  {} -> {}  {}",
                h.at.format("%Y-%m-%d %H:%M:%S"),
                h.old_state.as_deref().unwrap_or("?"),
                h.new_state.as_deref().unwrap_or("?"),
                h.reason.as_deref().unwrap_or("")
            );
        }
    }
}

fn symbol(c: pgferry_observe::Comparison) -> &'static str {
    use pgferry_observe::Comparison::*;
    match c {
        GreaterThanThreshold => ">",
        GreaterThanOrEqualToThreshold => ">=",
        LessThanThreshold => "<",
        LessThanOrEqualToThreshold => "<=",
    }
}
