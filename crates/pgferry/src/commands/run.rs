//! `pgferry run`.

use std::net::SocketAddr;
use std::sync::Arc;

use pgferry_config::Task;
use pgferry_engine::{EngineError, RunProgress, RunSummary};

use crate::cli::RunArgs;
use crate::output::{self, bytes, num, right};
use crate::progress::{self, Display};
use crate::watch::{self, Watch};
use crate::{commands, exit};
use pgferry_server::StopHook;

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let mut task = commands::load_task(&args.task.task)?;
    if let Some(jobs) = args.jobs {
        task.full_load.jobs = jobs;
    }
    let http = watch::listen_address(args.http.as_deref(), &task)?;
    let options = pgferry_engine::RunOptions {
        start_over: args.start_over,
    };
    let summary = run_with_progress(
        &task,
        progress::interactive(args.no_progress),
        http,
        options,
    )
    .await?;
    if args.task.json {
        output::print_json(&summary)?;
    } else {
        print_summary(&summary);
    }
    Ok(exit::OK)
}

/// Runs a task while drawing its progress, watched by the monitor (and served over HTTP
/// when `http` is given). Ctrl-C and SIGTERM stop it cleanly (every open transaction rolls
/// back, and the next run resumes). `POST /api/v1/stop` stops streaming at a transaction
/// boundary, or interrupts an earlier phase the same way as Ctrl-C.
pub async fn run_with_progress(
    task: &Task,
    interactive: bool,
    http: Option<SocketAddr>,
    options: pgferry_engine::RunOptions,
) -> anyhow::Result<RunSummary> {
    let progress = Arc::new(RunProgress::default());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let hook: StopHook = Arc::new(move || {
        let _ = stop_tx.send(true);
    });
    let watch = Watch::start(task, progress.clone(), http, hook).await?;
    if let Some(addr) = watch.addr() {
        eprintln!("Dashboard: http://{addr}/   Prometheus: http://{addr}/metrics");
    }
    let display = Display::start(progress.clone(), interactive);
    let run = pgferry_engine::run_with(task, progress.clone(), options);
    tokio::pin!(run);
    // Without a server nothing holds the stop hook, and its channel closes at once.
    let mut stop_open = true;
    let result = loop {
        tokio::select! {
            r = &mut run => break r.map_err(anyhow::Error::from),
            _ = commands::shutdown_signal() => break Err(EngineError::Interrupted.into()),
            changed = stop_rx.changed(), if stop_open => {
                if changed.is_err() {
                    stop_open = false;
                    continue;
                }
                let phase = progress.phase();
                if phase.starts_with("cdc") {
                    // A clean stop: the stream commits what is complete and the run
                    // returns its summary.
                    tracing::info!("stop requested over HTTP; stopping at a transaction boundary");
                    if let Err(e) = pgferry_engine::signal_stop(task).await {
                        tracing::warn!("cannot set the stop flag: {e}");
                    }
                } else {
                    tracing::warn!(phase = %phase, "stop requested over HTTP; interrupting \
                        (`pgferry run` resumes)");
                    break Err(EngineError::Interrupted.into());
                }
            }
        }
    };
    display.finish().await;
    watch.finish().await;
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
