//! Cutover benchmark: the downtime of `pgferry cutover` (from the fence going up to the
//! write probe on the opened target) and each step's share, on the inventory sample at
//! several sizes under a steady write rate; then the same for `pgferry rollback`, with the
//! application writing to the target.
//!
//! No peer has a cutover command to compare with; the runbook's manual phase 5 (stop the
//! application, poll until the lag is under 5 s, compare one table's count, switch) is the
//! baseline the report names.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use pgferry_testkit::{Cluster, datagen, workload};

#[derive(Parser)]
#[command(about = "Measure pgferry's cutover and rollback downtime at several sizes")]
struct Args {
    /// Inventory scales (1 is about 2 MB of tables).
    #[arg(long, value_delimiter = ',', default_value = "1,100,300")]
    scales: Vec<u32>,
    /// Pause between the application's transactions, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pause_ms: u64,
    /// Seconds of streaming under writes before the cutover.
    #[arg(long, default_value_t = 10)]
    stream_seconds: u64,
    /// The pgferry binary (default: target/release/pgferry).
    #[arg(long)]
    pgferry: Option<PathBuf>,
}

const DB: &str = "inventory";

/// One switch as its report gave it.
struct Switched {
    downtime: f64,
    steps: Vec<(String, f64)>,
}

struct Outcome {
    scale: u32,
    bytes: i64,
    rows: i64,
    cutover: Switched,
    rollback: Switched,
}

/// The application: the inventory workload on `cluster` until `stop` (or the fence).
fn app(cluster: &Cluster, pause: Duration, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let connector = cluster.connector();
    tokio::spawn(async move {
        let Ok(client) = connector.connect(DB).await else {
            return;
        };
        let counts = Arc::new(workload::WorkloadCounts::default());
        let _ = workload::inventory(&client, 11, stop, counts, pause).await;
    })
}

fn pgferry_json(binary: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running pgferry {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "pgferry {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn switched(report: &serde_json::Value) -> Switched {
    let steps = report["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or_default().to_owned(),
                        s["seconds"].as_f64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Switched {
        downtime: report["downtime_seconds"].as_f64().unwrap_or_default(),
        steps,
    }
}

async fn one_size(args: &Args, binary: &Path, scale: u32, work: &Path) -> anyhow::Result<Outcome> {
    let source = Cluster::start_with(pgferry_bench::steady_options())?;
    let target = Cluster::start_with(pgferry_bench::steady_options())?;
    println!("scale {scale}: seeding…");
    datagen::create_inventory(&source, DB, scale).await?;
    source.execute(DB, "VACUUM ANALYZE").await?;
    target.create_database(DB).await?;
    let c = source.connect(DB).await?;
    let row = c
        .query_one(
            "SELECT sum(pg_total_relation_size(c.oid))::bigint, sum(c.reltuples)::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r'",
            &[],
        )
        .await?;
    let (bytes, rows): (i64, i64) = (row.get(0), row.get(1));
    let task = work.join(format!("cutover-{scale}.toml"));
    std::fs::write(
        &task,
        format!(
            "name = \"bench\"\nmigration_type = \"full-load-and-cdc\"\n\
             [source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n[cdc]\nheartbeat_interval_s = 1\n",
            source.url(DB),
            target.url(DB)
        ),
    )?;
    let task = task.to_str().context("task path")?.to_owned();
    let mut run = Command::new(binary)
        .args(["run", "--no-progress", "--task", &task])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            work.join(format!("run-{scale}.log")),
        )?)
        .spawn()
        .context("starting pgferry run")?;
    let pause = Duration::from_millis(args.pause_ms);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = app(&source, pause, stop.clone());
    println!("scale {scale}: full load, then streaming under writes…");
    pgferry_bench::wait_streaming(&target, DB, &mut run).await?;
    tokio::time::sleep(Duration::from_secs(args.stream_seconds)).await;
    println!("scale {scale}: cutover…");
    let cut = pgferry_json(binary, &["cutover", "--task", &task, "--json"])?;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = app(&target, pause, stop.clone());
    tokio::time::sleep(Duration::from_secs(args.stream_seconds)).await;
    println!("scale {scale}: rollback…");
    let back = pgferry_json(binary, &["rollback", "--task", &task, "--json"])?;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let _ = Command::new(binary)
        .args(["stop", "--task", &task])
        .stdout(Stdio::null())
        .status();
    let _ = run.wait();
    Ok(Outcome {
        scale,
        bytes,
        rows,
        cutover: switched(&cut),
        rollback: switched(&back),
    })
}

fn print(outcomes: &[Outcome]) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "size",
        "rows",
        "switch",
        "downtime",
        "fence",
        "drain",
        "sequences",
        "validate",
        "open",
    ]);
    for o in outcomes {
        for (kind, s) in [("cutover", &o.cutover), ("rollback", &o.rollback)] {
            let mut row = vec![
                format!("{} (scale {})", pgferry_bench::mib(o.bytes as u64), o.scale),
                o.rows.to_string(),
                kind.to_owned(),
                format!("{:.2} s", s.downtime),
            ];
            for step in ["fence", "drain", "sequences", "validate", "open"] {
                let secs = s
                    .steps
                    .iter()
                    .find(|(n, _)| n == step)
                    .map(|(_, x)| *x)
                    .unwrap_or_default();
                let share = if s.downtime > 0.0 {
                    100.0 * secs / s.downtime
                } else {
                    0.0
                };
                row.push(format!("{secs:.2} s ({share:.0}%)"));
            }
            t.add_row(row);
        }
    }
    println!("{t}");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = args
        .pgferry
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/pgferry"));
    let work = std::env::temp_dir().join(format!("pgferry-bench-cutover-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut outcomes = Vec::new();
    for &scale in &args.scales {
        match one_size(&args, &binary, scale, &work).await {
            Ok(o) => {
                // Each size as it finishes, so a long run keeps what it measured.
                print(std::slice::from_ref(&o));
                outcomes.push(o);
            }
            Err(e) => println!("scale {scale} failed: {e:#}"),
        }
    }
    println!("All sizes:");
    print(&outcomes);
    println!("pgferry's logs: {}", work.display());
    Ok(())
}
