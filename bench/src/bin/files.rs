//! `bench/files`: pgferry's `files sync` against `rclone sync` and `aws s3 sync`, on the same
//! tree and the same local S3 server, in one run. Each tool runs with its default
//! concurrency and with tuned concurrency; each does a cold sync into an empty prefix, then
//! a re-sync with nothing changed. The first row is pgferry; ratios are against it.
//!
//! Every tool syncs to the root of its own bucket: s3s-fs keeps objects as files, so a
//! prefix is a directory there, and rclone's check of whether the prefix is an object
//! then fails and retries for a minute, which would measure the server, not rclone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use pgferry_bench::{Measured, measure, mib};
use pgferry_testkit::s3::S3Server;
use rand::{Rng, RngCore, SeedableRng};

#[derive(Debug, Parser)]
struct Args {
    /// Small files (1 to 64 KB each).
    #[arg(long, default_value_t = 20_000)]
    small_files: usize,
    /// Big files.
    #[arg(long, default_value_t = 8)]
    big_files: usize,
    /// Size of each big file, MiB.
    #[arg(long, default_value_t = 256)]
    big_mb: usize,
    /// The S3 server: s3s (s3s-fs, Rust, stores on disk) or moto (Python, in memory).
    #[arg(long, default_value = "s3s")]
    server: String,
    /// Work directory (default: a new one under /tmp).
    #[arg(long)]
    work: Option<PathBuf>,
}

/// A local S3 server on a free loopback port, stopped on drop.
struct Server {
    endpoint: String,
    /// s3s-fs, run here; moto comes from the testkit.
    child: Option<Child>,
    _moto: Option<S3Server>,
    /// Where s3s-fs keeps buckets (so a finished run can be removed to save disk).
    root: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_server(kind: &str, work: &Path) -> anyhow::Result<Server> {
    if kind == "moto" {
        let moto = S3Server::start()?;
        return Ok(Server {
            endpoint: moto.endpoint(),
            child: None,
            _moto: Some(moto),
            root: None,
        });
    }
    if kind != "s3s" {
        bail!("unknown server {kind:?}: use s3s or moto");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let root = work.join("s3s-data");
    std::fs::create_dir_all(&root)?;
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "test", "--secret-key", "test"])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("s3s.log"))?)
        .spawn()
        .context("starting s3s-fs (cargo install s3s-fs@0.14.1 --features binary)")?;
    let server = Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        child: Some(child),
        _moto: None,
        root: Some(root),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "s3s-fs did not start; see {}",
                work.join("s3s.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

/// The environment every tool gets: the same credentials, nothing else of the machine's
/// AWS setup (rclone refuses to start while AWS_CA_BUNDLE is set).
fn with_env(cmd: &mut Command, work: &Path) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", work.join("aws-config-default"))
        .env("HOME", work);
}

fn make_bucket(endpoint: &str, bucket: &str, work: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("aws");
    with_env(&mut cmd, work);
    let out = cmd
        .args([
            "s3",
            "mb",
            &format!("s3://{bucket}"),
            "--endpoint-url",
            endpoint,
        ])
        .output()?;
    if !out.status.success() {
        bail!("aws s3 mb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Objects and bytes under a bucket, by listing it.
fn count_objects(endpoint: &str, bucket: &str, work: &Path) -> anyhow::Result<(u64, u64)> {
    let mut cmd = Command::new("aws");
    with_env(&mut cmd, work);
    let out = cmd
        .args([
            "s3",
            "ls",
            &format!("s3://{bucket}"),
            "--recursive",
            "--summarize",
            "--endpoint-url",
            endpoint,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("Total Objects:"), field("Total Size:")))
}

fn generate(root: &Path, args: &Args) -> anyhow::Result<(u64, u64)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut bytes = 0u64;
    for i in 0..args.small_files {
        let size = rng.random_range(1024..=64 * 1024);
        let dir = root.join(format!("images/{:02}/{:03}", i % 50, i % 997));
        std::fs::create_dir_all(&dir)?;
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        std::fs::write(dir.join(format!("product {i}.jpg")), &data)?;
        bytes += size as u64;
    }
    std::fs::create_dir_all(root.join("archives"))?;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..args.big_files {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(
            root.join(format!("archives/scan-{i}.tiff")),
        )?);
        for _ in 0..args.big_mb {
            rng.fill_bytes(&mut block);
            f.write_all(&block)?;
        }
        bytes += (args.big_mb << 20) as u64;
    }
    Ok(((args.small_files + args.big_files) as u64, bytes))
}

/// Builds a tool's command for an endpoint and a bucket.
type CommandFor = Box<dyn Fn(&str, &str) -> Command>;

struct Tool {
    name: &'static str,
    setting: &'static str,
    command: CommandFor,
}

fn tools(source: PathBuf, work: PathBuf, pgferry: PathBuf) -> Vec<Tool> {
    let pg = |extra: &'static [&'static str]| {
        let (source, work, pgferry) = (source.clone(), work.clone(), pgferry.clone());
        Box::new(move |endpoint: &str, bucket: &str| {
            let mut cmd = Command::new(&pgferry);
            with_env(&mut cmd, &work);
            cmd.args(["files", "sync"])
                .arg(&source)
                .arg(format!("s3://{bucket}"))
                .args(["--endpoint", endpoint, "--no-progress"])
                .args(extra);
            cmd
        }) as CommandFor
    };
    let rclone = |extra: &'static [&'static str]| {
        let (source, work) = (source.clone(), work.clone());
        Box::new(move |endpoint: &str, bucket: &str| {
            let mut cmd = Command::new("rclone");
            with_env(&mut cmd, &work);
            cmd.arg("sync")
                .arg(&source)
                .arg(format!(
                    ":s3,provider=Other,endpoint='{endpoint}',access_key_id=test,secret_access_key=test,region=us-east-1:{bucket}"
                ))
                .args(["--config", "/dev/null"])
                .args(extra);
            cmd
        }) as CommandFor
    };
    let aws = |config: &'static str| {
        let (source, work) = (source.clone(), work.clone());
        Box::new(move |endpoint: &str, bucket: &str| {
            let mut cmd = Command::new("aws");
            with_env(&mut cmd, &work);
            cmd.env("AWS_CONFIG_FILE", work.join(config))
                .args(["s3", "sync"])
                .arg(&source)
                .arg(format!("s3://{bucket}"))
                .args(["--endpoint-url", endpoint, "--only-show-errors"]);
            cmd
        }) as CommandFor
    };
    vec![
        Tool {
            name: "pgferry",
            setting: "default (16 jobs, 16 MiB parts)",
            command: pg(&[]),
        },
        Tool {
            name: "pgferry",
            setting: "tuned (32 jobs, 32 MiB parts)",
            command: pg(&["--jobs", "32", "--part-size", "32MiB"]),
        },
        Tool {
            name: "rclone sync",
            setting: "default (4 transfers, 8 checkers)",
            command: rclone(&[]),
        },
        Tool {
            name: "rclone sync",
            setting: "tuned (32 transfers, 32 checkers, 8 parts per file, 16 MiB, fast-list)",
            command: rclone(&[
                "--transfers",
                "32",
                "--checkers",
                "32",
                "--s3-upload-concurrency",
                "8",
                "--s3-chunk-size",
                "16M",
                "--fast-list",
            ]),
        },
        Tool {
            name: "aws s3 sync",
            setting: "default (10 requests, 8 MiB parts)",
            command: aws("aws-config-default"),
        },
        Tool {
            name: "aws s3 sync",
            setting: "tuned (64 requests, 16 MiB parts)",
            command: aws("aws-config-tuned"),
        },
    ]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("pgferry-bench-files-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    std::fs::write(
        work.join("aws-config-default"),
        "[default]\nregion = us-east-1\n",
    )?;
    std::fs::write(
        work.join("aws-config-tuned"),
        "[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = 64\n  multipart_chunksize = 16MB\n  max_queue_size = 10000\n",
    )?;
    let source = work.join("source");
    let (files, bytes) = if source.exists() {
        eprintln!("reusing the tree in {}", source.display());
        count_tree(&source)?
    } else {
        eprintln!(
            "generating {} small files and {} × {} MiB…",
            args.small_files, args.big_files, args.big_mb
        );
        generate(&source, &args)?
    };
    let server = start_server(&args.server, &work)?;
    let pgferry = std::env::current_exe()?
        .parent()
        .context("no exe dir")?
        .join("pgferry");

    let mut rows = Vec::new();
    for (n, tool) in tools(source.clone(), work.clone(), pgferry)
        .iter()
        .enumerate()
    {
        let bucket = format!("bench-{n}");
        make_bucket(&server.endpoint, &bucket, &work)?;
        // Drop the page cache's advantage for nobody: warm the tree for every tool alike.
        let _ = count_tree(&source);
        eprintln!("{} {}: cold sync…", tool.name, tool.setting);
        let cold = measure(
            (tool.command)(&server.endpoint, &bucket),
            &work.join(format!("{bucket}-cold.log")),
        )?;
        let (objects, stored) = count_objects(&server.endpoint, &bucket, &work)?;
        if objects != files || stored != bytes {
            bail!(
                "{} left {objects} objects ({stored} bytes), expected {files} ({bytes})",
                tool.name
            );
        }
        eprintln!("{} {}: no-change re-sync…", tool.name, tool.setting);
        let again = measure(
            (tool.command)(&server.endpoint, &bucket),
            &work.join(format!("{bucket}-again.log")),
        )?;
        rows.push((tool.name, tool.setting, cold, again));
        if let Some(root) = &server.root {
            let _ = std::fs::remove_dir_all(root.join(&bucket));
        }
    }
    print(files, bytes, &args.server, &rows);
    Ok(())
}

fn count_tree(root: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                bytes += meta.len();
                // Read it, so every tool starts with the tree in the page cache.
                let _ = std::fs::read(entry.path())?;
            }
        }
    }
    Ok((files, bytes))
}

fn print(files: u64, bytes: u64, server: &str, rows: &[(&str, &str, Measured, Measured)]) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "tool",
        "concurrency",
        "cold sync",
        "MiB/s",
        "files/s",
        "peak memory",
        "re-sync (no change)",
        "cold vs pgferry default",
    ]);
    let base = rows.first().map(|r| r.2.seconds).unwrap_or(1.0);
    for (name, setting, cold, again) in rows {
        t.add_row(vec![
            name.to_string(),
            setting.to_string(),
            format!("{:.1}s", cold.seconds),
            format!("{:.0}", bytes as f64 / 1048576.0 / cold.seconds),
            format!("{:.0}", files as f64 / cold.seconds),
            mib(cold.peak_rss.max(again.peak_rss)),
            format!("{:.2}s", again.seconds),
            format!("{:.2}x", cold.seconds / base),
        ]);
    }
    println!(
        "\nfiles sync: {files} files, {} on a local {server} server\n{t}",
        mib(bytes)
    );
    let best = |pred: &dyn Fn(&str) -> bool| {
        rows.iter()
            .filter(|r| pred(r.0))
            .map(|r| r.2.seconds)
            .fold(f64::INFINITY, f64::min)
    };
    let ours = best(&|n| n == "pgferry");
    let peer = best(&|n| n != "pgferry");
    let resync = rows
        .iter()
        .filter(|r| r.0 == "pgferry")
        .map(|r| r.3.seconds)
        .fold(f64::INFINITY, f64::min);
    println!(
        "cold sync: pgferry (best setting) is {:.2}x the faster peer's speed (goal 1.5x); no-change re-sync {:.2}s (goal < 5 s)",
        peer / ours,
        resync
    );
}
