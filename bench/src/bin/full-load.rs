//! Full-load benchmark: pgferry against `pg_dump -Fd -j N` + `pg_restore -j N`,
//! `pgcopydb clone` and native publication/subscription, on the same generated dataset, the
//! same two servers and the same parallelism, in one run.
//!
//! Each tool starts from an empty target database and ends with every table, index and
//! constraint in place; the harness checks row counts after each. Reported: wall time,
//! throughput over the source's table data, peak memory of the tool's process tree, and
//! each time as a multiple of pgferry's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use pgferry_bench::{Measured, Row, measure, print_ratios, wait_subscription_ready};
use pgferry_testkit::{Cluster, ClusterOptions, datagen, server_bindir};

#[derive(Debug, Parser)]
#[command(
    about = "Compare pgferry's full load with pg_dump/pg_restore, pgcopydb and native logical replication"
)]
struct Args {
    /// Approximate size of the generated table data, in MB.
    #[arg(long, default_value_t = 2048)]
    size_mb: u64,
    /// Parallelism given to every tool.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// The source's PostgreSQL majors, each measured in turn on the same dataset (the
    /// target is always the Debian server); binaries of other majors come from
    /// scripts/install-deps. With several, pgferry's times are also compared across them.
    #[arg(long, value_delimiter = ',', default_value = "15")]
    source_majors: Vec<u32>,
    /// Tools to run, in order; pgferry first so ratios are against it.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pgferry,pg_dump,pgcopydb,native"
    )]
    tools: Vec<String>,
    /// Runs per tool; the best one counts.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Skip the untimed warm-up run. (The first big write on a fresh server creates its
    /// WAL segment files, which later runs recycle; without a warm-up, whichever tool runs
    /// first pays for that.)
    #[arg(long)]
    no_warmup: bool,
    /// The pgferry binary (default: target/release/pgferry).
    #[arg(long)]
    pgferry: Option<PathBuf>,
    /// Generate the data, print both servers' URLs and wait for Ctrl-C instead of measuring:
    /// a playground for profiling one tool by hand.
    #[arg(long)]
    hold: bool,
}

const DB: &str = "bench";

/// Server settings for every benchmark server. Identical for all tools: no checkpoints
/// or autovacuum in the middle of a measurement, enough workers for native replication.
fn options(jobs: usize, major: Option<u32>) -> ClusterOptions {
    let mut o = ClusterOptions {
        major,
        ..ClusterOptions::default()
    };
    for (k, v) in [
        ("shared_buffers", "'512MB'".to_owned()),
        ("max_wal_size", "'16GB'".to_owned()),
        ("checkpoint_timeout", "'1h'".to_owned()),
        ("maintenance_work_mem", "'256MB'".to_owned()),
        // What a DBA would declare on these 24 GiB machines. Only pgferry reads it, to size
        // its index builds' memory; the peers build with `maintenance_work_mem` above.
        ("effective_cache_size", "'16GB'".to_owned()),
        ("autovacuum", "off".to_owned()),
        ("max_worker_processes", "32".to_owned()),
        ("max_logical_replication_workers", "16".to_owned()),
        ("max_sync_workers_per_subscription", jobs.to_string()),
    ] {
        o = o.setting(k, &v);
    }
    o
}

async fn counts(c: &Cluster) -> anyhow::Result<Vec<(String, i64)>> {
    let client = c.connect(DB).await?;
    let mut out = Vec::new();
    for t in ["users", "items", "events"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await?
            .get(0);
        out.push((t.to_owned(), n));
    }
    let idx: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'",
            &[],
        )
        .await?
        .get(0);
    out.push(("indexes".to_owned(), idx));
    Ok(out)
}

async fn reset_target(target: &Cluster, source: &Cluster) -> anyhow::Result<()> {
    let t = target.connect("postgres").await?;
    let _ = t
        .batch_execute("DROP SUBSCRIPTION IF EXISTS bench_sub")
        .await;
    // One statement per call: DROP and CREATE DATABASE refuse the implicit transaction
    // of a multi-statement batch.
    for sql in [
        format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
        format!("CREATE DATABASE {DB}"),
        "CHECKPOINT".to_owned(),
    ] {
        t.batch_execute(&sql).await?;
    }
    let s = source.connect(DB).await?;
    s.batch_execute("DROP PUBLICATION IF EXISTS bench_pub")
        .await?;
    s.batch_execute("CHECKPOINT").await?;
    for slot in s
        .query("SELECT slot_name FROM pg_replication_slots", &[])
        .await?
    {
        let name: String = slot.get(0);
        s.execute("SELECT pg_drop_replication_slot($1)", &[&name])
            .await?;
    }
    Ok(())
}

fn tool(bindir: &Path, name: &str) -> Command {
    let path = bindir.join(name);
    Command::new(if path.exists() {
        path
    } else {
        PathBuf::from(name)
    })
}

fn pgferry_bin(args: &Args) -> PathBuf {
    args.pgferry
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/pgferry"))
}

/// The task file every pgferry command of the benchmark uses.
fn pgferry_task(args: &Args, src: &str, dst: &str, work: &Path) -> anyhow::Result<PathBuf> {
    let task = work.join("task.toml");
    std::fs::write(
        &task,
        format!(
            "migration_type = \"full-load\"\njobs = {}\n[source]\nurl = \"{src}\"\n\
             [target]\nurl = \"{dst}\"\n",
            args.jobs
        ),
    )?;
    Ok(task)
}

/// `pgferry assess`'s load-time estimate for the same task: (most likely, low, high)
/// seconds.
fn assess_estimate(
    args: &Args,
    source: &Cluster,
    target: &Cluster,
    work: &Path,
) -> anyhow::Result<(f64, f64, f64)> {
    let task = pgferry_task(args, &source.url(DB), &target.url(DB), work)?;
    let out = Command::new(pgferry_bin(args))
        .args(["assess", "--json", "--wal-sample", "0", "--task"])
        .arg(&task)
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let e = &json["estimate"];
    let get = |k: &str| e[k].as_f64().context("the assessment has no estimate");
    Ok((get("seconds")?, get("seconds_low")?, get("seconds_high")?))
}

async fn run_tool(
    name: &str,
    args: &Args,
    source: &Cluster,
    target: &Cluster,
    work: &Path,
    bindir: &Path,
) -> anyhow::Result<(Measured, bool)> {
    let (src, dst) = (source.url(DB), target.url(DB));
    let log = work.join(format!("{name}.log"));
    let jobs = args.jobs.to_string();
    match name {
        "pgferry" => {
            let task = pgferry_task(args, &src, &dst, work)?;
            let mut cmd = Command::new(pgferry_bin(args));
            cmd.args(["run", "--no-progress", "--task"]).arg(&task);
            Ok((measure(cmd, &log)?, false))
        }
        "pg_dump" => {
            let dir = work.join("dump");
            let _ = std::fs::remove_dir_all(&dir);
            let mut dump = tool(bindir, "pg_dump");
            dump.args(["-Fd", "-j", &jobs, "-f"])
                .arg(&dir)
                .args(["-d", &src]);
            let a = measure(dump, &work.join("pg_dump.log"))?;
            let mut restore = tool(bindir, "pg_restore");
            restore.args(["-j", &jobs, "-d", &dst]).arg(&dir);
            let b = measure(restore, &work.join("pg_restore.log"))?;
            let _ = std::fs::remove_dir_all(&dir);
            Ok((a.then(b), false))
        }
        "pgcopydb" => {
            let dir = work.join("pgcopydb");
            let _ = std::fs::remove_dir_all(&dir);
            let mut cmd = Command::new("pgcopydb");
            cmd.args([
                "clone",
                "--source",
                &src,
                "--target",
                &dst,
                "--table-jobs",
                &jobs,
                "--index-jobs",
                &jobs,
                "--split-tables-larger-than",
                "256MB",
                "--no-owner",
                "--no-acl",
                "--dir",
            ])
            .arg(&dir);
            let m = measure(cmd, &log)?;
            let _ = std::fs::remove_dir_all(&dir);
            Ok((m, false))
        }
        "native" => {
            // The schema first (as the documented procedure does), then a subscription
            // that copies every table; done when every table reaches state 'r' (ready).
            let started = Instant::now();
            let schema = work.join("schema.dump");
            let mut dump = tool(bindir, "pg_dump");
            dump.args(["-Fc", "--schema-only", "-f"])
                .arg(&schema)
                .args(["-d", &src]);
            measure(dump, &work.join("native-schema-dump.log"))?;
            let mut restore = tool(bindir, "pg_restore");
            restore.args(["-d", &dst]).arg(&schema);
            measure(restore, &work.join("native-schema-restore.log"))?;
            let s = source.connect(DB).await?;
            s.batch_execute("CREATE PUBLICATION bench_pub FOR ALL TABLES")
                .await?;
            let t = target.connect(DB).await?;
            t.batch_execute(&format!(
                "CREATE SUBSCRIPTION bench_sub CONNECTION 'host=127.0.0.1 port={} \
                 user=postgres dbname={DB}' PUBLICATION bench_pub",
                source.port()
            ))
            .await?;
            wait_subscription_ready(&t, Duration::from_secs(3 * 3600)).await?;
            let m = Measured {
                seconds: started.elapsed().as_secs_f64(),
                peak_rss: 0,
            };
            t.batch_execute("DROP SUBSCRIPTION bench_sub").await?;
            s.batch_execute("DROP PUBLICATION bench_pub").await?;
            Ok((m, true))
        }
        other => bail!("unknown tool {other}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bindir = server_bindir()?;
    let work = std::env::temp_dir().join(format!("pgferry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut pgferry_times = Vec::new();
    for &major in &args.source_majors {
        let (rows, data_bytes) = bench_source(&args, major, &bindir, &work).await?;
        print_ratios(
            &format!(
                "Full load of {:.0} MiB (3 tables, 4 indexes, 2 foreign keys) from a PostgreSQL \
                 {major} source, {} jobs",
                data_bytes as f64 / 1024.0 / 1024.0,
                args.jobs
            ),
            data_bytes as u64,
            &rows,
        );
        if let Some(m) = rows
            .iter()
            .find(|r| r.tool == "pgferry")
            .and_then(|r| r.measured)
        {
            pgferry_times.push((major, m.seconds));
        }
    }
    if let Some(&(first, base)) = pgferry_times.first() {
        for &(major, seconds) in &pgferry_times[1..] {
            println!(
                "pgferry from a {major} source takes {:.2}x its time from a {first} source \
                 ({seconds:.1} s vs {base:.1} s)",
                seconds / base
            );
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Every tool on a fresh pair of servers whose source runs `major`.
async fn bench_source(
    args: &Args,
    major: u32,
    bindir: &Path,
    work: &Path,
) -> anyhow::Result<(Vec<Row>, i64)> {
    println!(
        "Starting two servers (source PostgreSQL {major}) and generating about {} MB of table \
         data…",
        args.size_mb
    );
    let source =
        Cluster::start_with(options(args.jobs, Some(major))).context("starting the source")?;
    let target = Cluster::start_with(options(args.jobs, None)).context("starting the target")?;
    source.create_database(DB).await?;
    let generated = Instant::now();
    source
        .execute(DB, &datagen::bench_sql(args.size_mb))
        .await?;
    // Separate statements: VACUUM cannot run inside the implicit transaction of a batch.
    source.execute(DB, "VACUUM (FREEZE, ANALYZE)").await?;
    source.execute(DB, "CHECKPOINT").await?;
    let data_bytes: i64 = source
        .connect(DB)
        .await?
        .query_one(
            "SELECT sum(pg_table_size(c.oid))::bigint FROM pg_class c
             WHERE c.relname IN ('users', 'items', 'events')",
            &[],
        )
        .await?
        .get(0);
    println!(
        "  {:.0} MiB of table data in {:.0}s; parallelism {} for every tool",
        data_bytes as f64 / 1024.0 / 1024.0,
        generated.elapsed().as_secs_f64(),
        args.jobs
    );
    if args.hold {
        println!("source: {}\ntarget: {}", source.url(DB), target.url(DB));
        println!("holding; Ctrl-C stops both servers");
        tokio::signal::ctrl_c().await?;
        // Stopped here: the servers' drop stops them.
        drop((source, target));
        std::process::exit(0);
    }
    let expected = counts(&source).await?;
    if !args.no_warmup {
        print!("  warm-up run (not measured)… ");
        reset_target(&target, &source).await?;
        let first = args.tools.first().map(String::as_str).unwrap_or("pgferry");
        let (m, _) = run_tool(first, args, &source, &target, work, bindir).await?;
        println!("{:.1}s", m.seconds);
    }
    // Runs take turns (every tool once per round), so a machine that slows down or speeds
    // up during the benchmark weighs on every tool alike.
    let estimate = if args.tools.iter().any(|t| t == "pgferry") {
        reset_target(&target, &source).await?;
        let e = assess_estimate(args, &source, &target, work)?;
        println!(
            "  pgferry assess estimates {:.1}s (between {:.1}s and {:.1}s)",
            e.0, e.1, e.2
        );
        Some(e)
    } else {
        None
    };
    let mut best: Vec<Option<(Measured, bool)>> = vec![None; args.tools.len()];
    let mut notes = vec![String::new(); args.tools.len()];
    for run in 0..args.runs {
        for (i, name) in args.tools.iter().enumerate() {
            reset_target(&target, &source).await?;
            print!("  {name} (run {})… ", run + 1);
            match run_tool(name, args, &source, &target, work, bindir).await {
                Ok((m, in_server)) => {
                    let got = counts(&target).await?;
                    if got != expected {
                        bail!("{name} left the target incomplete: {got:?}, expected {expected:?}");
                    }
                    println!("{:.1}s", m.seconds);
                    if best[i].is_none_or(|(b, _)| m.seconds < b.seconds) {
                        best[i] = Some((m, in_server));
                    }
                }
                Err(e) => {
                    println!("failed: {e:#}");
                    notes[i] = format!("failed: {e}");
                }
            }
        }
    }
    if let (Some((mid, low, high)), Some(Some((m, _)))) = (
        estimate,
        args.tools
            .iter()
            .position(|t| t == "pgferry")
            .map(|i| best[i]),
    ) {
        println!(
            "  assess's estimate against pgferry's measured load: {:.2} (range {:.2} to {:.2}); \
             the measured time {} the range",
            mid / m.seconds,
            low / m.seconds,
            high / m.seconds,
            if (low..=high).contains(&m.seconds) {
                "falls in"
            } else {
                "falls outside"
            }
        );
    }
    let rows = args
        .tools
        .iter()
        .zip(best)
        .zip(notes)
        .map(|((name, best), note)| Row {
            tool: name.clone(),
            measured: best.map(|(m, _)| m),
            memory_in_server: best.is_some_and(|(_, s)| s),
            note,
        })
        .collect();
    Ok((rows, data_bytes))
}
