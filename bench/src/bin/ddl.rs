//! Schema changes during CDC (`[cdc] ddl`): what capturing them costs the source's DDL, and
//! how soon the target has them, on the inventory sample under a steady write rate.
//!
//! * **Capture overhead**: the same cycles of small DDL (create a table, add a column, index
//!   it, drop it) on the source, in the task's database (event triggers installed) and in
//!   a database of the same server without them, taking turns; the ratio of the best times.
//! * **Big-table DDL**: a new column with a default, an index, a type change on `products`;
//!   for each, the source's own time and the time until the target recorded it applied
//!   (`pgferry.ddl_log`), counted from the source's commit. The target does the same work
//!   once, so the ratio to the source's time says what the stream adds.
//!
//! The peers have nothing to compare with: native publication/subscription and pgcopydb
//! carry no DDL (a subscription stops at the first change that uses a column its target
//! lacks, until someone adds it by hand), and DMS's capture is not runnable here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use pgferry_testkit::{Cluster, datagen, workload};

#[derive(Parser)]
#[command(about = "Measure what capturing schema changes costs, and how soon they apply")]
struct Args {
    /// Inventory scale (1 is about 2 MB of tables).
    #[arg(long, default_value_t = 50)]
    scale: u32,
    /// Small DDL cycles per measurement of the capture's overhead.
    #[arg(long, default_value_t = 100)]
    cycles: u32,
    /// Measurements of each side, taking turns; the best counts.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Pause between the application's transactions, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pause_ms: u64,
    /// The pgferry binary (default: target/release/pgferry).
    #[arg(long)]
    pgferry: Option<PathBuf>,
}

const DB: &str = "inventory";
const PLAIN: &str = "plain";

/// One cycle of small DDL, `{i}` numbering its table.
const CYCLE: [&str; 4] = [
    "CREATE TABLE ddl_bench_{i} (id int PRIMARY KEY, v text)",
    "ALTER TABLE ddl_bench_{i} ADD COLUMN w int NOT NULL DEFAULT 0",
    "CREATE INDEX ddl_bench_{i}_w ON ddl_bench_{i} (w)",
    "DROP TABLE ddl_bench_{i}",
];

/// Runs `cycles` cycles in `db`, statement by statement; seconds taken.
async fn cycles(source: &Cluster, db: &str, cycles: u32, first: u32) -> anyhow::Result<f64> {
    let c = source.connect(db).await?;
    let started = Instant::now();
    for i in first..first + cycles {
        for sql in CYCLE {
            c.batch_execute(&sql.replace("{i}", &i.to_string()))
                .await
                .with_context(|| format!("{db}: {sql}"))?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds from now until `pgferry.ddl_log` holds `count` rows for the task.
async fn until_logged(target: &Cluster, count: i64) -> anyhow::Result<f64> {
    let c = target.connect(DB).await?;
    let started = Instant::now();
    loop {
        let n: i64 = c
            .query_one("SELECT count(*) FROM pgferry.ddl_log", &[])
            .await?
            .get(0);
        if n >= count {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the target never recorded {count} schema changes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn logged(target: &Cluster) -> anyhow::Result<(i64, i64)> {
    let row = target
        .connect(DB)
        .await?
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE outcome <> 'applied') FROM pgferry.ddl_log",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

fn start_run(
    binary: &Path,
    source: &Cluster,
    target: &Cluster,
    work: &Path,
) -> anyhow::Result<(String, std::process::Child)> {
    let task = work.join("ddl.toml");
    std::fs::write(
        &task,
        format!(
            "name = \"bench\"\nmigration_type = \"full-load-and-cdc\"\n\
             [source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n\
             [cdc]\nheartbeat_interval_s = 1\nddl = true\nddl_error_policy = \"STOP_TASK\"\n",
            source.url(DB),
            target.url(DB)
        ),
    )?;
    let task = task.to_str().context("task path")?.to_owned();
    let run = Command::new(binary)
        .args(["run", "--no-progress", "--task", &task])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("run.log"))?)
        .spawn()
        .context("starting pgferry run")?;
    Ok((task, run))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = args
        .pgferry
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/pgferry"));
    let work = std::env::temp_dir().join(format!("pgferry-bench-ddl-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let source = Cluster::start_with(pgferry_bench::steady_options())?;
    let target = Cluster::start_with(pgferry_bench::steady_options())?;
    println!("scale {}: seeding…", args.scale);
    datagen::create_inventory(&source, DB, args.scale).await?;
    source.execute(DB, "VACUUM ANALYZE").await?;
    source.create_database(PLAIN).await?;
    target.create_database(DB).await?;
    let (task, mut run) = start_run(&binary, &source, &target, &work)?;
    pgferry_bench::wait_streaming(&target, DB, &mut run).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (connector, stop) = (source.connector(), stop.clone());
        let pause = Duration::from_millis(args.pause_ms);
        tokio::spawn(async move {
            let Ok(client) = connector.connect(DB).await else {
                return;
            };
            let counts = Arc::new(workload::WorkloadCounts::default());
            let _ = workload::inventory(&client, 17, stop, counts, pause).await;
        })
    };
    println!(
        "streaming under writes; {} DDL cycles per measurement…",
        args.cycles
    );

    // 1. What the capture costs the source's DDL, taking turns with a database without it.
    let (mut captured, mut plain) = (f64::MAX, f64::MAX);
    let mut expected = 0;
    let mut applied_after = 0.0_f64;
    for r in 0..args.runs {
        let first = r * args.cycles;
        captured = captured.min(cycles(&source, DB, args.cycles, first).await?);
        expected += i64::from(args.cycles) * CYCLE.len() as i64;
        applied_after = applied_after.max(until_logged(&target, expected).await?);
        plain = plain.min(cycles(&source, PLAIN, args.cycles, first).await?);
    }
    let statements = args.cycles as usize * CYCLE.len();
    println!(
        "capture overhead: {statements} DDL statements take {captured:.2} s with the capture, \
         {plain:.2} s without: {:.2}x; the target had them all {applied_after:.2} s after the \
         last one",
        captured / plain
    );

    // 2. DDL on the big table, each timed on the source and until the target has it.
    let big = [
        "ALTER TABLE products ADD COLUMN note text NOT NULL DEFAULT 'n'",
        "CREATE INDEX products_price ON products (price)",
        "ALTER TABLE products ALTER COLUMN price TYPE numeric(14, 2)",
    ];
    let c = source.connect(DB).await?;
    let mut rows = Vec::new();
    for sql in big {
        let started = Instant::now();
        c.batch_execute(sql).await.with_context(|| sql.to_owned())?;
        let on_source = started.elapsed().as_secs_f64();
        expected += 1;
        let on_target = until_logged(&target, expected).await?;
        rows.push((sql, on_source, on_target));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    // Everything written is applied before the run stops, so validation compares alike.
    source
        .wait_for_slot(DB, "pgferry_bench", Duration::from_secs(600))
        .await?;
    let out = Command::new(&binary)
        .args(["stop", "--task", &task])
        .stdout(Stdio::null())
        .status()?;
    if !out.success() {
        bail!("pgferry stop failed");
    }
    let _ = run.wait();
    let (total, not_applied) = logged(&target).await?;
    let validated = Command::new(&binary)
        .args(["validate", "--task", &task])
        .stdout(Stdio::null())
        .status()?
        .success();

    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "schema change on products",
        "on the source",
        "on the target, after the source's commit",
        "ratio",
    ]);
    for (sql, on_source, on_target) in &rows {
        t.add_row(vec![
            (*sql).to_owned(),
            format!("{on_source:.2} s"),
            format!("{on_target:.2} s"),
            format!("{:.2}x", on_target / on_source.max(0.001)),
        ]);
    }
    println!("{t}");
    println!(
        "{total} schema changes recorded, {not_applied} not applied; validate: {}",
        if validated { "match" } else { "DIFFERENCES" }
    );
    println!("pgferry's log: {}", work.join("run.log").display());
    Ok(())
}
