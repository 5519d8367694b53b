//! `pgferry status`.

use comfy_table::Cell;
use pgferry_engine::Endpoints;
use pgferry_engine::TaskStatus;
use pgferry_pg::Side;

use crate::cli::TaskArgs;
use crate::output::{self, bytes, num, right};
use crate::{commands, exit};

pub async fn status(args: TaskArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task)?;
    let endpoints = Endpoints::resolve(&task)?;
    let client = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry status").await?;
    let mut status = pgferry_engine::status(&client, &task.name).await?;
    if status.phase == "cut-over" {
        status.reverse = pgferry_engine::reverse_status(&task).await?;
    }
    if args.json {
        output::print_json(&status)?;
    } else {
        print_status(&status);
    }
    Ok(exit::OK)
}

fn print_status(s: &TaskStatus) {
    let running = if s.running { ", running now" } else { "" };
    println!(
        "Task \"{}\" ({}): phase {}{running}",
        s.task, s.migration_type, s.phase
    );
    println!("  source: {}", s.source);
    println!("  target: {}", s.target);
    println!("  created {}", s.created_at.format("%Y-%m-%d %H:%M:%S UTC"));
    if let (Some(a), Some(b)) = (s.load_started_at, s.load_finished_at) {
        let secs = (b - a).num_milliseconds() as f64 / 1000.0;
        println!("  load took {}", output::duration(secs));
    }
    if let Some(f) = s.finished_at {
        println!("  finished {}", f.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    println!(
        "Tables: {} ({} loaded, {} failed), {} rows, {} copied, chunks {}/{}",
        s.totals.tables,
        s.totals.tables_loaded,
        s.totals.tables_failed,
        s.totals.rows,
        indicatif::HumanBytes(s.totals.bytes.max(0) as u64),
        s.totals.chunks_done,
        s.totals.chunks_total
    );
    let mut t = output::table(&[
        "Table", "State", "Rows", "Copied", "Done", "Chunks", "Split", "Format",
    ]);
    for table in &s.tables {
        t.add_row(vec![
            Cell::new(&table.table),
            Cell::new(&table.state),
            num(table.rows),
            bytes(table.bytes),
            right(format!("{:.0}%", table.percent)),
            right(format!("{}/{}", table.chunks_done, table.chunks_total)),
            Cell::new(&table.split),
            Cell::new(&table.copy_format),
        ]);
    }
    println!("{t}");
    for table in &s.tables {
        if let Some(why) = &table.split_note {
            println!("  {} is copied in one piece: {why}", table.table);
        }
    }
    if s.migration_type == "full-load-and-cdc" && s.phase == "loading" {
        let whole: Vec<&str> = s
            .tables
            .iter()
            .filter(|t| !t.resumes_by_chunk && t.state != "loaded" && t.chunks_total > 1)
            .map(|t| t.table.as_str())
            .collect();
        if !whole.is_empty() {
            println!(
                "  if this load loses its snapshot, these tables are copied again whole (split \
                 by block ranges, partitions, or split by a key outside the replica identity): \
                 {}",
                whole.join(", ")
            );
        }
    }
    for table in s.tables.iter().filter(|t| t.error.is_some()) {
        println!(
            "  {} failed: {}",
            table.table,
            table.error.as_deref().unwrap_or_default()
        );
    }
    println!(
        "Schema: pre-data {}/{}, post-data {}/{} ({} skipped, {} failed)",
        s.schema.pre_data_done,
        s.schema.pre_data_total,
        s.schema.post_data_done,
        s.schema.post_data_total,
        s.schema.skipped,
        s.schema.failed
    );
    for p in &s.schema.problems {
        println!(
            "  {} {}: {}",
            p.state,
            p.object,
            p.note.as_deref().unwrap_or_default()
        );
    }
    if !s.validation.is_empty() {
        let differing = s.validation.iter().filter(|v| v.outcome != "match").count();
        println!(
            "Validation: {} tables checked, {} differ",
            s.validation.len(),
            differing
        );
    }
    if let Some(c) = &s.cdc {
        print_cdc(c, "CDC", "source");
    }
    print_switches(s);
    if let Some(e) = &s.last_error {
        println!("Last error: {e}");
    }
    if !s.events.is_empty() {
        println!("Recent events:");
        for e in &s.events {
            println!(
                "  {} {:<7} {:<9} {}",
                e.at.format("%H:%M:%S"),
                e.level,
                e.kind,
                e.message
            );
        }
    }
}

/// The cutover, the rollback and the reverse stream, where there are any.
fn print_switches(s: &TaskStatus) {
    for (what, switch) in [("Cutover", &s.cutover), ("Rollback", &s.rollback)] {
        if let Some(c) = switch {
            let downtime = c
                .report
                .as_ref()
                .and_then(|r| r.get("downtime_seconds"))
                .and_then(|d| d.as_f64())
                .map(|d| format!(", downtime {d:.1} s"))
                .unwrap_or_default();
            println!("{what}: {}{downtime}", c.state);
        }
    }
    if let Some(r) = &s.reverse {
        let running = if r.running { "running" } else { "not running" };
        println!("Reverse stream (target to source), {running}:");
        if let Some(c) = &r.stream {
            print_cdc(c, "  reverse", "target");
        }
    }
}

fn ms(v: Option<i64>) -> String {
    v.map(|m| output::duration(m as f64 / 1000.0))
        .unwrap_or_else(|| "-".to_owned())
}

fn print_cdc(c: &pgferry_engine::CdcStatus, label: &str, from: &str) {
    println!(
        "{label}: slot {} (publication {}, {} tuples), started at {}",
        c.slot,
        c.publication,
        if c.binary { "binary" } else { "text" },
        c.consistent_lsn
    );
    println!(
        "  applied up to {} (received {}); lag: source {}, target {}",
        c.applied_lsn.as_deref().unwrap_or("-"),
        c.received_lsn.as_deref().unwrap_or("-"),
        ms(c.source_latency_ms),
        ms(c.target_latency_ms)
    );
    println!(
        "  changes: {} inserts, {} updates, {} deletes, {} truncates in {} transactions; {} \
         exceptions",
        c.inserts, c.updates, c.deletes, c.truncates, c.transactions, c.exceptions
    );
    if let Some(b) = c.wal_retained_bytes {
        println!(
            "  the slot holds {} of WAL on the {from} (until pgferry catches up, or `pgferry \
             cleanup` drops it)",
            indicatif::HumanBytes(b.max(0) as u64)
        );
    }
    for t in &c.suspended_tables {
        println!("  suspended: {t}");
    }
    for t in &c.excluded_tables {
        println!("  not streamed (no key, or unlogged): {t}");
    }
    for t in &c.replica_identity_changed {
        println!("  REPLICA IDENTITY FULL set by pgferry on {t} (restored by cleanup)");
    }
    for e in &c.recent_exceptions {
        println!(
            "  exception {} {} {} ({}): {}",
            e.at.format("%H:%M:%S"),
            e.operation,
            e.table,
            e.policy,
            e.error
        );
    }
    if c.ddl_failed > 0 {
        println!(
            "  {} schema change(s) failed on the target (pgferry.ddl_log)",
            c.ddl_failed
        );
    }
    for d in c.recent_ddl.iter().rev() {
        println!(
            "  schema change {} {} {}: {}",
            d.at.format("%H:%M:%S"),
            d.tag,
            d.object,
            d.outcome
        );
        for s in &d.statements {
            println!("    {s}");
        }
        if let Some(e) = &d.error {
            println!("    error: {e}");
        }
    }
}
