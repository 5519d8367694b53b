//! CDC benchmark: pgferry's change streaming against native publication/subscription, on
//! the same database, the same kind of servers and the same load, in one run. Two
//! workloads ([`Workload`]): pgbench's narrow rows, and the inventory's jsonb, arrays and
//! TOASTed text.
//!
//! For each workload and tool, on a fresh pair of servers:
//! 1. **Steady state.** pgbench runs unthrottled on the source for `--seconds`. A probe
//!    row is inserted on the source every 50 ms, and the target is polled every 10 ms for
//!    it: each probe's lag is the time from its insert on the source to its visibility on
//!    the target (same machine, same clock). Reported: the source's rate, the apply rate
//!    (the source's transactions over the time the target needed to have all of them),
//!    p50/p99/max lag, and how long the target needed after pgbench stopped.
//! 2. **Backlog.** The apply is stopped, pgbench writes about `--backlog-changes` changes
//!    (4 per transaction in both workloads), and the apply starts again.
//!    Reported: the catch-up time, from restart until the slot confirms the source's
//!    position, and changes per second.
//!
//! Both tools end with the target checked against the source (row count and checksum of
//! every table of the workload), so a fast wrong answer cannot pass for a result.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use pgferry_bench::workload::{CHANGES_PER_TXN, Workload};
use pgferry_bench::{mib, tree_cpu_seconds, tree_rss, wait_subscription_ready};
use pgferry_testkit::{Cluster, ClusterOptions, server_bindir};

#[derive(Debug, Parser)]
#[command(about = "Compare pgferry's CDC with native logical replication under load")]
struct Args {
    /// Workloads to run, in order: pgbench (narrow rows), inventory (jsonb, arrays, TOAST).
    #[arg(long, value_delimiter = ',', default_value = "pgbench,inventory")]
    workloads: Vec<String>,
    /// Seconds of unthrottled pgbench for the steady state.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// pgbench clients (and threads).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Scale: 100,000 pgbench accounts, or 2,000 inventory products, per unit.
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// Changes written while the apply is stopped (default: 2,000,000 for pgbench,
    /// 400,000 for the inventory, whose changes are ten times bigger).
    #[arg(long)]
    backlog_changes: Option<u64>,
    /// Tools to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "pgferry,native")]
    tools: Vec<String>,
    /// The pgferry binary (default: target/release/pgferry).
    #[arg(long)]
    pgferry: Option<PathBuf>,
}

const DB: &str = "bench";

/// The same settings for every server: no checkpoint or autovacuum pauses in a
/// measurement, and room for native replication's workers.
fn options() -> ClusterOptions {
    let mut o = ClusterOptions::default();
    for (k, v) in [
        ("shared_buffers", "'512MB'"),
        ("max_wal_size", "'16GB'"),
        ("checkpoint_timeout", "'1h'"),
        ("autovacuum", "off"),
        ("max_worker_processes", "16"),
        ("max_logical_replication_workers", "8"),
    ] {
        o = o.setting(k, v);
    }
    o
}

fn bin(bindir: &Path, name: &str) -> Command {
    let path = bindir.join(name);
    Command::new(if path.exists() {
        path
    } else {
        PathBuf::from(name)
    })
}

fn run_quiet(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| what.to_owned())?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What pgbench did: transactions and its own rate.
struct Pgbench {
    transactions: u64,
    tps: f64,
    seconds: f64,
}

/// Runs pgbench's TPC-B-like load on the source at `port` with `args` (clients, length).
fn pgbench(bindir: &Path, port: u16, args: &[String]) -> anyhow::Result<Pgbench> {
    let mut cmd = bin(bindir, "pgbench");
    cmd.args([
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
    ])
    .args(args)
    .arg(DB);
    let started = Instant::now();
    let out = run_quiet(cmd, "pgbench")?;
    let seconds = started.elapsed().as_secs_f64();
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Ok(Pgbench {
        transactions: field("number of transactions actually processed:").unwrap_or(0.0) as u64,
        tps: field("tps =").unwrap_or(0.0),
        seconds,
    })
}

/// The tool under test, streaming from the source's `bench` to the target's.
enum Tool {
    Pgferry {
        binary: PathBuf,
        task: PathBuf,
        child: Option<Child>,
        peak_rss: Arc<std::sync::atomic::AtomicU64>,
    },
    Native,
}

impl Tool {
    fn slot(&self) -> &'static str {
        match self {
            Tool::Pgferry { .. } => "pgferry_bench",
            Tool::Native => "bench_sub",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Tool::Pgferry { .. } => "pgferry",
            Tool::Native => "native pub/sub",
        }
    }

    /// Full load and then streaming; returns once changes stream.
    async fn start(
        &mut self,
        source: &Cluster,
        target: &Cluster,
        bindir: &Path,
    ) -> anyhow::Result<()> {
        match self {
            Tool::Pgferry { .. } => self.resume(target).await,
            Tool::Native => {
                // The schema first, as the documented procedure does.
                let dump = std::env::temp_dir()
                    .join(format!("pgferry-bench-schema-{}.dump", std::process::id()));
                let mut c = bin(bindir, "pg_dump");
                c.args(["-Fc", "--schema-only", "-d", &source.url(DB), "-f"])
                    .arg(&dump);
                run_quiet(c, "pg_dump --schema-only")?;
                let mut c = bin(bindir, "pg_restore");
                c.args(["-d", &target.url(DB)]).arg(&dump);
                run_quiet(c, "pg_restore")?;
                let _ = std::fs::remove_file(&dump);
                source
                    .execute(DB, "CREATE PUBLICATION bench_pub FOR ALL TABLES")
                    .await?;
                // Binary transfer, as pgferry uses where it can.
                target
                    .execute(
                        DB,
                        &format!(
                            "CREATE SUBSCRIPTION bench_sub CONNECTION 'host=127.0.0.1 port={} \
                             user=postgres dbname={DB}' PUBLICATION bench_pub WITH (binary = true)",
                            source.port()
                        ),
                    )
                    .await?;
                let t = target.connect(DB).await?;
                wait_subscription_ready(&t, Duration::from_secs(3600)).await
            }
        }
    }

    /// Stops applying; the slot keeps the source's changes.
    async fn pause(&mut self, target: &Cluster) -> anyhow::Result<()> {
        match self {
            Tool::Pgferry {
                binary,
                task,
                child,
                ..
            } => {
                run_quiet(
                    {
                        let mut c = Command::new(&*binary);
                        c.args(["stop", "--task"]).arg(&*task);
                        c
                    },
                    "pgferry stop",
                )?;
                if let Some(mut c) = child.take() {
                    c.wait()?;
                }
                Ok(())
            }
            Tool::Native => {
                target
                    .execute(DB, "ALTER SUBSCRIPTION bench_sub DISABLE")
                    .await?;
                // Disabling ends the apply worker; wait until the slot is free.
                Ok(())
            }
        }
    }

    /// Starts applying again, from where it stopped.
    async fn resume(&mut self, target: &Cluster) -> anyhow::Result<()> {
        match self {
            Tool::Pgferry {
                binary,
                task,
                child,
                peak_rss,
            } => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(task.with_extension("log"))?;
                let c = Command::new(&*binary)
                    .args(["run", "--no-progress", "--task"])
                    .arg(&*task)
                    .env(
                        "RUST_LOG",
                        std::env::var("PGFERRY_BENCH_LOG").unwrap_or_else(|_| "info".to_owned()),
                    )
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("starting pgferry run")?;
                let pid = c.id();
                *child = Some(c);
                let peak = peak_rss.clone();
                std::thread::spawn(move || {
                    while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
                        peak.fetch_max(tree_rss(pid), Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
                let t = target.connect(DB).await?;
                let started = Instant::now();
                loop {
                    let phase: Option<String> = t
                        .query_opt("SELECT phase FROM pgferry.task WHERE name = 'bench'", &[])
                        .await
                        .ok()
                        .flatten()
                        .map(|r| r.get(0));
                    let streaming: bool = t
                        .query_opt(
                            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                                            WHERE application_name = 'pgferry apply')",
                            &[],
                        )
                        .await?
                        .is_some_and(|r| r.get(0));
                    if phase.as_deref() == Some("cdc") && streaming {
                        return Ok(());
                    }
                    if let Some(c) = child.as_mut()
                        && let Some(status) = c.try_wait()?
                    {
                        bail!("pgferry run exited with {status}");
                    }
                    if started.elapsed() > Duration::from_secs(3600) {
                        bail!("pgferry never started streaming");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Tool::Native => {
                target
                    .execute(DB, "ALTER SUBSCRIPTION bench_sub ENABLE")
                    .await?;
                Ok(())
            }
        }
    }

    async fn finish(&mut self, target: &Cluster) -> anyhow::Result<()> {
        match self {
            Tool::Pgferry { .. } => self.pause(target).await,
            Tool::Native => target
                .execute(DB, "DROP SUBSCRIPTION bench_sub")
                .await
                .map_err(Into::into),
        }
    }
}

/// The server's postmaster, whose process tree is the whole server.
fn postmaster(c: &Cluster) -> Option<u32> {
    std::fs::read_to_string(c.dir().join("data/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// CPU seconds used so far by the source server, the target server and pgferry.
fn cpu(source: &Cluster, target: &Cluster, tool: &Tool) -> [f64; 3] {
    let of = |pid: Option<u32>| pid.map(tree_cpu_seconds).unwrap_or(0.0);
    let pgferry = match tool {
        Tool::Pgferry { child, .. } => child.as_ref().map(Child::id),
        Tool::Native => None,
    };
    [of(postmaster(source)), of(postmaster(target)), of(pgferry)]
}

/// Waits until `slot` confirms the source's current insert position; returns the time
/// it took.
async fn drain(source: &Cluster, slot: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    source
        .wait_for_slot(DB, slot, Duration::from_secs(3 * 3600))
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Probes lag while `running` is set: a row inserted on the source every 50 ms, and the
/// target polled every 10 ms; each probe's lag is measured on the target as
/// `clock_timestamp() - inserted_at` when it first shows. Returns each probe's insert time
/// (epoch seconds) and lag (seconds).
async fn probe_lag(
    source: &Cluster,
    target: &Cluster,
    running: Arc<AtomicBool>,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let writer = {
        let (conn, running) = (source.connector(), running.clone());
        tokio::spawn(async move {
            let c = conn.connect(DB).await?;
            while running.load(Ordering::Relaxed) {
                c.batch_execute("INSERT INTO lag_probe DEFAULT VALUES")
                    .await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(())
        })
    };
    let t = target.connect(DB).await?;
    let mut seen: i64 = t
        .query_one("SELECT coalesce(max(id), 0) FROM lag_probe", &[])
        .await?
        .get(0);
    let mut lags = Vec::new();
    let mut idle_since: Option<Instant> = None;
    loop {
        for r in t
            .query(
                "SELECT id, extract(epoch FROM clock_timestamp() - at)::float8,
                        extract(epoch FROM at)::float8
                 FROM lag_probe WHERE id > $1 ORDER BY id",
                &[&seen],
            )
            .await?
        {
            seen = r.get(0);
            lags.push((r.get::<_, f64>(2), r.get::<_, f64>(1)));
        }
        // After the writer stops, the last probes still have to arrive.
        if !running.load(Ordering::Relaxed) {
            let since = *idle_since.get_or_insert_with(Instant::now);
            let last: i64 = source
                .connect(DB)
                .await?
                .query_one("SELECT coalesce(max(id), 0) FROM lag_probe", &[])
                .await?
                .get(0);
            if seen >= last || since.elapsed() > Duration::from_secs(600) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.await??;
    Ok(lags)
}

/// The worst lag in each 5-second window of the steady state, to see when lag spikes.
fn print_timeline(tool: &str, probes: &[(f64, f64)]) {
    let Some(first) = probes.first().map(|(at, _)| *at) else {
        return;
    };
    let mut windows: Vec<f64> = Vec::new();
    for (at, lag) in probes {
        let w = ((at - first) / 5.0) as usize;
        if windows.len() <= w {
            windows.resize(w + 1, 0.0);
        }
        windows[w] = windows[w].max(*lag);
    }
    let line: Vec<String> = windows
        .iter()
        .map(|l| format!("{:.0}", l * 1000.0))
        .collect();
    println!("{tool}: worst lag (ms) per 5 s: {}", line.join(" "));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Row count and checksum of every table of the workload, to compare source and target.
async fn fingerprint(c: &Cluster, workload: Workload) -> anyhow::Result<Vec<(i64, i64)>> {
    let client = c.connect(DB).await?;
    let mut out = Vec::new();
    for t in workload.tables() {
        let r = client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0)::bigint
                     FROM {t} t"
                ),
                &[],
            )
            .await?;
        out.push((r.get(0), r.get(1)));
    }
    Ok(out)
}

struct Outcome {
    workload: Workload,
    tool: &'static str,
    source_tps: f64,
    apply_tps: f64,
    drain_after: f64,
    lag: (f64, f64, f64, usize),
    backlog_changes: u64,
    catch_up: f64,
    /// CPU seconds per million changes during the catch-up: source, target, the tool.
    backlog_cpu: [f64; 3],
    peak_rss: Option<u64>,
}

async fn bench_tool(
    name: &str,
    workload: Workload,
    args: &Args,
    bindir: &Path,
    work: &Path,
) -> anyhow::Result<Outcome> {
    let source = Cluster::start_with(options()).context("starting the source")?;
    let target = Cluster::start_with(options()).context("starting the target")?;
    source.create_database(DB).await?;
    target.create_database(DB).await?;
    match workload {
        Workload::Pgbench => {
            run_quiet(
                {
                    let mut c = bin(bindir, "pgbench");
                    c.args([
                        "-i",
                        "-q",
                        "-s",
                        &args.scale.to_string(),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &source.port().to_string(),
                        "-U",
                        "postgres",
                        DB,
                    ]);
                    c
                },
                "pgbench -i",
            )?;
        }
        Workload::Inventory => {
            source
                .execute(DB, &Workload::inventory_setup(args.scale))
                .await?;
        }
    }
    let script = workload.script_args(args.scale, work)?;
    source
        .execute(
            DB,
            "CREATE TABLE lag_probe (id bigserial PRIMARY KEY,
                                     at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await?;
    source.execute(DB, "VACUUM ANALYZE").await?;
    source.execute(DB, "CHECKPOINT").await?;

    let mut tool = match name {
        "pgferry" => {
            let task = work.join("task.toml");
            std::fs::write(
                &task,
                format!(
                    "name = \"bench\"\nmigration_type = \"full-load-and-cdc\"\n\
                     [source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n\
                     [cdc]\nno_key_tables = \"replica-identity-full\"\n",
                    source.url(DB),
                    target.url(DB)
                ),
            )?;
            Tool::Pgferry {
                binary: args
                    .pgferry
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("target/release/pgferry")),
                task,
                child: None,
                peak_rss: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            }
        }
        "native" => Tool::Native,
        other => bail!("unknown tool {other}"),
    };
    println!("{}: initial copy…", tool.name());
    tool.start(&source, &target, bindir).await?;

    // Steady state.
    println!(
        "{}: steady state, {} unthrottled for {} s…",
        tool.name(),
        workload.name(),
        args.seconds
    );
    let running = Arc::new(AtomicBool::new(true));
    let probes = probe_lag(&source, &target, running.clone());
    let load = {
        let (bindir, port) = (bindir.to_owned(), source.port());
        let mut load_args = vec![
            "-c".to_owned(),
            args.clients.to_string(),
            "-j".to_owned(),
            args.clients.to_string(),
            "-T".to_owned(),
            args.seconds.to_string(),
        ];
        load_args.extend(script.iter().cloned());
        let running = running.clone();
        async move {
            let r = tokio::task::spawn_blocking(move || pgbench(&bindir, port, &load_args)).await;
            running.store(false, Ordering::Relaxed);
            Ok::<_, anyhow::Error>((r??, Instant::now()))
        }
    };
    let (lags, pgb) = tokio::join!(probes, load);
    let (probes, (pgb, load_ended)) = (lags?, pgb?);
    drain(&source, tool.slot()).await?;
    let drain_after = load_ended.elapsed().as_secs_f64();
    print_timeline(tool.name(), &probes);
    let mut lags: Vec<f64> = probes.iter().map(|(_, lag)| *lag).collect();
    lags.sort_by(f64::total_cmp);
    let lag = (
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
        lags.len(),
    );
    let apply_tps = pgb.transactions as f64 / (pgb.seconds + drain_after);

    // Backlog.
    let txns = args
        .backlog_changes
        .unwrap_or_else(|| workload.default_backlog())
        / CHANGES_PER_TXN;
    println!(
        "{}: backlog, apply stopped while {} writes {} transactions ({} changes)…",
        tool.name(),
        workload.name(),
        txns,
        txns * CHANGES_PER_TXN
    );
    tool.pause(&target).await?;
    let per_client = (txns / u64::from(args.clients)).max(1);
    let mut backlog_args = vec![
        "-c".to_owned(),
        args.clients.to_string(),
        "-j".to_owned(),
        args.clients.to_string(),
        "-t".to_owned(),
        per_client.to_string(),
    ];
    backlog_args.extend(script);
    let written = tokio::task::block_in_place(|| pgbench(bindir, source.port(), &backlog_args))?;
    source.execute(DB, "CHECKPOINT").await?;
    let cpu_before = cpu(&source, &target, &tool);
    let started = Instant::now();
    tool.resume(&target).await?;
    drain(&source, tool.slot()).await?;
    let catch_up = started.elapsed().as_secs_f64();
    let cpu_after = cpu(&source, &target, &tool);
    let backlog_changes = written.transactions * CHANGES_PER_TXN;
    let per_million = |i: usize| (cpu_after[i] - cpu_before[i]) * 1e6 / backlog_changes as f64;
    let backlog_cpu = [per_million(0), per_million(1), per_million(2)];
    let backlog_changes = written.transactions * CHANGES_PER_TXN;

    let (a, b) = (
        fingerprint(&source, workload).await?,
        fingerprint(&target, workload).await?,
    );
    if a != b {
        bail!(
            "{} left the target different from the source: {a:?} vs {b:?}",
            tool.name()
        );
    }
    tool.finish(&target).await?;
    let peak_rss = match &tool {
        Tool::Pgferry { peak_rss, .. } => Some(peak_rss.load(Ordering::Relaxed)),
        Tool::Native => None,
    };
    Ok(Outcome {
        workload,
        tool: tool.name(),
        source_tps: pgb.tps,
        apply_tps,
        drain_after,
        lag,
        backlog_changes,
        catch_up,
        backlog_cpu,
        peak_rss,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workloads = args
        .workloads
        .iter()
        .map(|w| Workload::parse(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bindir = server_bindir()?;
    let work = std::env::temp_dir().join(format!("pgferry-bench-cdc-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut outcomes = Vec::new();
    for &workload in &workloads {
        for name in &args.tools {
            match bench_tool(name, workload, &args, &bindir, &work).await {
                Ok(o) => outcomes.push(o),
                Err(e) => println!("{name} on {} failed: {e:#}", workload.name()),
            }
        }
    }
    for &workload in &workloads {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.workload == workload).collect();
        print_results(&args, workload, &of);
    }
    println!("pgferry's logs: {}", work.display());
    Ok(())
}

fn print_results(args: &Args, workload: Workload, outcomes: &[&Outcome]) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "tool",
        "source tps",
        "apply tps",
        "lag p50",
        "lag p99",
        "lag max",
        "drain after load",
        "backlog catch-up",
        "backlog changes/s",
        "catch-up CPU s per 1M changes (source / target / tool)",
        "peak memory",
    ]);
    for o in outcomes {
        t.add_row(vec![
            o.tool.to_owned(),
            format!("{:.0}", o.source_tps),
            format!("{:.0}", o.apply_tps),
            format!("{:.0} ms", o.lag.0 * 1000.0),
            format!("{:.0} ms", o.lag.1 * 1000.0),
            format!("{:.0} ms", o.lag.2 * 1000.0),
            format!("{:.1}s", o.drain_after),
            format!("{:.1}s", o.catch_up),
            format!("{:.0}", o.backlog_changes as f64 / o.catch_up),
            format!(
                "{:.1} / {:.1} / {}",
                o.backlog_cpu[0],
                o.backlog_cpu[1],
                if o.tool == "pgferry" {
                    format!("{:.1}", o.backlog_cpu[2])
                } else {
                    "in the target".to_owned()
                }
            ),
            o.peak_rss
                .map(mib)
                .unwrap_or_else(|| "in the server".to_owned()),
        ]);
    }
    let backlog = outcomes.first().map(|o| o.backlog_changes).unwrap_or(0);
    println!(
        "\nCDC under the {} workload (scale {}, {} clients, {} s steady state; backlog of {} \
         changes)\n{t}",
        workload.name(),
        args.scale,
        args.clients,
        args.seconds,
        backlog
    );
    for o in outcomes {
        println!(
            "{}: {} lag probes; apply kept {:.0}% of the source's rate",
            o.tool,
            o.lag.3,
            100.0 * o.apply_tps / o.source_tps.max(1.0)
        );
    }
    if let (Some(p), Some(n)) = (
        outcomes.iter().find(|o| o.tool == "pgferry"),
        outcomes.iter().find(|o| o.tool == "native pub/sub"),
    ) {
        println!(
            "{}: backlog catch-up, pgferry {:.2}x native's speed; steady-state p99 lag {:.0} ms \
             vs {:.0} ms",
            workload.name(),
            n.catch_up / p.catch_up,
            p.lag.1 * 1000.0,
            n.lag.1 * 1000.0
        );
    }
}
