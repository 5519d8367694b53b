//! End-to-end tests of the `pgferry` command: what a user types, what they see, and the exit
//! codes scripts rely on, against real throwaway clusters.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgferry_testkit::Cluster;
use pgferry_testkit::compare::compare_databases;

mod assess;
mod commands;
mod crashes;
mod cutover;
mod files;
mod hostile;
mod memory;
mod monitoring;
mod resume;

fn pgferry() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgferry"));
    // The tests' own PG* variables must not leak into the runs they check.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn write_task(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("task.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn minimal_task(source: &str, target: &str, extra: &str) -> String {
    format!(
        "{extra}\nmigration_type = \"full-load\"\n[source]\nurl = \"{source}\"\n[target]\nurl = \"{target}\"\n"
    )
}

fn run(args: &[&str]) -> Output {
    pgferry().args(args).output().expect("run pgferry")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn assert_identical(source: &Cluster, target: &Cluster, db: &str) {
    let s = source.connect(db).await.unwrap();
    let t = target.connect(db).await.unwrap();
    let diffs = compare_databases(&s, &t).await.unwrap();
    assert!(diffs.is_empty(), "source and target differ: {diffs:#?}");
}

async fn phase(c: &tokio_postgres::Client) -> String {
    match c
        .query_opt("SELECT phase FROM pgferry.task WHERE name = 'default'", &[])
        .await
    {
        Ok(Some(r)) => r.get(0),
        _ => "none".to_owned(),
    }
}

type ChunkKey = (i32, i32);

/// Finish time of every chunk recorded done.
async fn done_chunks(
    c: &tokio_postgres::Client,
) -> std::collections::HashMap<ChunkKey, chrono::DateTime<chrono::Utc>> {
    c.query(
        "SELECT table_id, chunk_no, finished_at FROM pgferry.chunk
         WHERE task = 'default' AND state = 'done'",
        &[],
    )
    .await
    .map(|rows| {
        rows.iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect()
    })
    .unwrap_or_default()
}

/// Checks that every chunk in `before` is still done with the same finish time.
async fn assert_not_copied_again(
    c: &tokio_postgres::Client,
    before: &std::collections::HashMap<ChunkKey, chrono::DateTime<chrono::Utc>>,
) {
    let now = done_chunks(c).await;
    for (chunk, at) in before {
        assert_eq!(now.get(chunk), Some(at), "chunk {chunk:?} was copied again");
    }
}

fn cdc_task(source: &str, target: &str) -> String {
    format!(
        "migration_type = \"full-load-and-cdc\"\n\
         [source]\nurl = \"{source}\"\n[target]\nurl = \"{target}\"\n\
         [cdc]\nno_key_tables = \"replica-identity-full\"\nheartbeat_interval_s = 1\n\
         [error_behavior]\nrecoverable_error_interval = 1\nrecoverable_error_throttling_max = 2\n"
    )
}

/// A source whose `app` database holds `setup`, an empty target, and a task file for
/// `full-load-and-cdc` between them (in the returned directory).
async fn cdc_pair(setup: &[&str]) -> (Cluster, Cluster, tempfile::TempDir, String) {
    cdc_pair_from(None, setup).await
}

/// As [`cdc_pair`], with a source of PostgreSQL `major` (`None`: the default server).
async fn cdc_pair_from(
    major: Option<u32>,
    setup: &[&str],
) -> (Cluster, Cluster, tempfile::TempDir, String) {
    let options = pgferry_testkit::ClusterOptions {
        major,
        ..Default::default()
    };
    let source = Cluster::start_with(options).unwrap();
    let target = Cluster::start().unwrap();
    source.create_database("app").await.unwrap();
    for sql in setup {
        source.execute("app", sql).await.unwrap();
    }
    target.create_database("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &cdc_task(&source.url("app"), &target.url("app")),
    );
    let task = task.to_str().unwrap().to_owned();
    (source, target, dir, task)
}

/// Waits for `pgferry run` (as `child`) to stream, or to exit.
async fn wait_for_cdc(control: &Cluster, db: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "pgferry run exited before streaming"
        );
        if let Ok(c) = control.connect(db).await
            && phase(&c).await == "cdc"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pgferry run never started streaming");
}

/// Peak resident memory of a running process, from `/proc`.
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}
