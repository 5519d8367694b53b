//! Shared pieces of pgferry's benchmarks: measuring a command's wall time and the peak
//! memory of its whole process tree, and printing results as ratios.
//!
//! The machines are shared and noisy, so every benchmark runs pgferry and its peers on the
//! same data, on the same servers, in the same run, and reports ratios rather than lone
//! timings.

use std::collections::HashMap;
use std::fs;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod workload;

/// How often the memory sampler looks at the process tree. Fine enough to catch the peak
/// of a run that lasts seconds, cheap enough not to disturb it.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

/// Page size for `/proc/<pid>/statm`.
const PAGE: u64 = 4096;

/// Every process's children, from `/proc`.
fn process_children() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name may contain spaces and parentheses; fields follow the last ')'.
            let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    children
}

/// `root` and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let children = process_children();
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        out.push(pid);
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids);
        }
    }
    out
}

/// CPU seconds (user and system) used so far by `root` and its descendants, including
/// descendants that already exited and were waited for.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    // Clock ticks per second; 100 on Linux.
    const TICKS: f64 = 100.0;
    let mut ticks = 0u64;
    for pid in tree(root) {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        // Fields after the command: state is 3, utime 14, stime 15, cutime 16, cstime 17.
        let fields: Vec<u64> = after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
        ticks += field(14) + field(15);
        if pid == root {
            ticks += field(16) + field(17);
        }
    }
    ticks as f64 / TICKS
}

/// Resident memory of `root` and all its descendants, in bytes.
pub fn tree_rss(root: u32) -> u64 {
    let mut total = 0;
    for pid in tree(root) {
        if let Ok(statm) = fs::read_to_string(format!("/proc/{pid}/statm"))
            && let Some(rss) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|r| r.parse::<u64>().ok())
        {
            total += rss * PAGE;
        }
    }
    total
}

/// Wall time and peak memory of one command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub seconds: f64,
    /// Peak resident memory of the command's process tree, in bytes.
    pub peak_rss: u64,
}

impl Measured {
    /// Two commands run one after the other: times add, the peak is the larger one.
    pub fn then(self, other: Measured) -> Measured {
        Measured {
            seconds: self.seconds + other.seconds,
            peak_rss: self.peak_rss.max(other.peak_rss),
        }
    }
}

/// Runs `cmd` to completion, measuring wall time and the peak memory of its process tree.
/// Its output goes to `log`.
pub fn measure(mut cmd: Command, log: &std::path::Path) -> anyhow::Result<Measured> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdout(out.try_clone()?).stderr(out);
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(tree_rss(pid), Ordering::Relaxed);
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
    };
    let status = child.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    if !status.success() {
        bail!(
            "{cmd:?} failed with {status}; its output is in {}",
            log.display()
        );
    }
    Ok(Measured {
        seconds,
        peak_rss: peak.load(Ordering::Relaxed),
    })
}

/// Waits until a native subscription has copied every table (each in state `r`, ready),
/// for at most `timeout`.
pub async fn wait_subscription_ready(
    target: &tokio_postgres::Client,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let row = target
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE srsubstate = 'r') FROM pg_subscription_rel",
                &[],
            )
            .await?;
        let (all, ready): (i64, i64) = (row.get(0), row.get(1));
        if all > 0 && all == ready {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("the subscription did not finish its initial copy in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Servers that run pgferry under a steady write rate: no checkpoint during a measurement.
pub fn steady_options() -> pgferry_testkit::ClusterOptions {
    let mut o = pgferry_testkit::ClusterOptions::default();
    for (k, v) in [
        ("shared_buffers", "'512MB'"),
        ("max_wal_size", "'16GB'"),
        ("checkpoint_timeout", "'1h'"),
    ] {
        o = o.setting(k, v);
    }
    o
}

/// Waits until `pgferry run` (the process `run`) streams: its task's phase on `target`'s
/// `db` is `cdc`. Fails if the run exits first, or after an hour.
pub async fn wait_streaming(
    target: &pgferry_testkit::Cluster,
    db: &str,
    run: &mut std::process::Child,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(c) = target.connect(db).await
            && let Ok(Some(row)) = c.query_opt("SELECT phase FROM pgferry.task", &[]).await
            && row.get::<_, String>(0) == "cdc"
        {
            return Ok(());
        }
        if let Some(status) = run.try_wait()? {
            bail!("pgferry run exited with {status}");
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("pgferry never started streaming");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Formats bytes as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1024.0 / 1024.0)
}

/// A result row: a tool and what it measured.
#[derive(Debug, Clone)]
pub struct Row {
    pub tool: String,
    pub measured: Option<Measured>,
    /// Peak memory is not the tool's to report (work done inside the servers).
    pub memory_in_server: bool,
    pub note: String,
}

/// Prints results with each peer's time as a multiple of pgferry's (the first row).
pub fn print_ratios(title: &str, data_bytes: u64, rows: &[Row]) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "tool",
        "wall time",
        "throughput",
        "peak memory",
        "time vs pgferry",
        "note",
    ]);
    let base = rows.first().and_then(|r| r.measured).map(|m| m.seconds);
    for r in rows {
        match r.measured {
            Some(m) => t.add_row(vec![
                r.tool.clone(),
                format!("{:.1}s", m.seconds),
                format!(
                    "{:.0} MiB/s",
                    data_bytes as f64 / 1024.0 / 1024.0 / m.seconds
                ),
                if r.memory_in_server {
                    "in the servers".to_owned()
                } else {
                    mib(m.peak_rss)
                },
                base.map(|b| format!("{:.2}x", m.seconds / b))
                    .unwrap_or_default(),
                r.note.clone(),
            ]),
            None => t.add_row(vec![
                r.tool.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                r.note.clone(),
            ]),
        };
    }
    println!("\n{title}\n{t}");
    let pgferry = rows.first().and_then(|r| r.measured);
    let best_peer = rows
        .iter()
        .skip(1)
        .filter_map(|r| r.measured.map(|m| (r.tool.as_str(), m.seconds)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let (Some(p), Some((peer, secs))) = (pgferry, best_peer) {
        println!(
            "pgferry's wall time is {:.2} of the best peer's ({peer}); peak memory {}",
            p.seconds / secs,
            mib(p.peak_rss)
        );
    }
}
