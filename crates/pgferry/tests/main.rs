//! End-to-end tests of the `pgferry` command: what a user types, what they see, and the exit
//! codes scripts rely on, against real throwaway clusters.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgferry_testkit::compare::compare_databases;
use pgferry_testkit::{Cluster, datagen};

mod files;
mod hostile;
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

#[tokio::test(flavor = "multi_thread")]
async fn the_minimal_task_file_runs_validates_and_reports_status() {
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    datagen::create_inventory(&source, "inventory", 1)
        .await
        .unwrap();
    target.create_database("inventory").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("inventory"), &target.url("inventory"), ""),
    );
    let task = task.to_str().unwrap();

    let out = run(&["run", "--task", task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("public.order_lines") && stdout.contains("total (6 tables)"),
        "{stdout}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\u{1b}'),
        "no colour codes off a terminal"
    );

    let out = run(&["validate", "--task", task, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["differing"], 0);
    assert_eq!(report["matched"], 6);

    let out = run(&["status", "--task", task, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["phase"], "done");
    assert_eq!(status["totals"]["tables_loaded"], 6);
    assert_eq!(status["validation"].as_array().unwrap().len(), 6);
    let out = run(&["status", "--task", task]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("phase done"),
        "{}",
        text(&out)
    );

    // A difference makes validate exit 1, with the table named.
    target
        .execute("inventory", "DELETE FROM order_lines WHERE order_id = 1")
        .await
        .unwrap();
    let out = run(&["validate", "--task", task]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("public.order_lines") && stdout.contains("row-count-differs"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_with_the_documented_codes_and_one_clear_message() {
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    datagen::create_inventory(&source, "inv", 1).await.unwrap();
    target.create_database("inv").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // An invalid task file: exit 2, pointing at the line.
    let task = write_task(dir.path(), "migration_type = \"full-load\"\njobz = 3\n");
    let out = run(&["run", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jobz") && stderr.contains("line 2"),
        "{stderr}"
    );

    // An unreachable target: exit 3, with the address and a fix, as JSON for scripts too.
    let dead = Cluster::start().unwrap();
    let port = dead.port();
    drop(dead);
    let task = write_task(
        dir.path(),
        &minimal_task(
            &source.url("inv"),
            &format!("postgres://postgres@127.0.0.1:{port}/inv?sslmode=disable&connect_timeout=5"),
            "",
        ),
    );
    let out = run(&["run", "--task", task.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach the target database at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["exit_code"], 3);
    assert!(json["hint"].as_str().unwrap().contains("listen_addresses"));

    // Tables in the way: exit 3, naming the table and the setting that decides.
    target
        .execute("inv", "CREATE TABLE customers (id int)")
        .await
        .unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("inv"), &target.url("inv"), ""),
    );
    let out = run(&["run", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("public.customers") && stderr.contains("drop_and_create"),
        "{stderr}"
    );

    // A password in the task file: refused before anything connects.
    let task = write_task(
        dir.path(),
        &minimal_task("postgres://u:secret@127.0.0.1/x", &target.url("inv"), ""),
    );
    let out = run(&["run", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds a password") && !stderr.contains("secret"),
        "{stderr}"
    );

    // Status of a task that never ran.
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("inv"), &target.url("inv"), "name = \"never\""),
    );
    let out = run(&["status", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task named \"never\""));
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

/// Kills `pgferry run` with SIGKILL at several moments (while copying, while building
/// indexes) and runs it again each time. The target must end identical to the source, and
/// chunks recorded done before a kill must not be copied again.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_at_any_moment_resumes_without_copying_finished_chunks_again() {
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    source.create_database("big").await.unwrap();
    source
        .execute("big", &datagen::bench_sql(48))
        .await
        .unwrap();
    source
        .execute(
            "big",
            &pgferry_testkit::datagen::AWKWARD_SQL
                .replace("CREATE EXTENSION", "CREATE EXTENSION IF NOT EXISTS"),
        )
        .await
        .unwrap();
    target.create_database("big").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(
            &source.url("big"),
            &target.url("big"),
            "jobs = 2\nchunk_size = \"1MB\"",
        ),
    );
    let task = task.to_str().unwrap().to_owned();
    let control = target.connect("big").await.unwrap();

    // Each kill waits for a different moment.
    type Moment = Box<dyn Fn(&str, usize) -> bool>;
    let moments: [(&str, Moment); 3] = [
        (
            "early, during planning or the first chunks",
            Box::new(|_, _| true),
        ),
        (
            "in the middle of the load",
            Box::new(|p, n| p == "loading" && n >= 10),
        ),
        ("while building indexes", Box::new(|p, _| p == "post-data")),
    ];
    let mut recorded = std::collections::HashMap::new();
    let mut kills = 0;
    for (name, moment) in &moments {
        let log = dir.path().join(format!("run-{kills}.log"));
        let mut child = pgferry()
            .args(["run", "--task", &task])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut hit = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let p = phase(&control).await;
            let n = done_chunks(&control).await.len();
            if p != "none" && moment(&p, n) {
                hit = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(if name.starts_with("early") {
                300
            } else {
                5
            }))
            .await;
        }
        if child.try_wait().unwrap().is_none() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            kills += 1;
        }
        let status = child.wait().unwrap();
        eprintln!(
            "kill {name}: hit={hit} phase={} exit={status}",
            phase(&control).await
        );
        if status.code().is_some() {
            eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        // Chunks done so far must keep their finish time: nothing is copied twice.
        for (k, at) in done_chunks(&control).await {
            recorded.entry(k).or_insert(at);
        }
    }
    assert!(
        kills >= 2,
        "the runs were killed while working ({kills} kills)"
    );

    let out = run(&["run", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_not_copied_again(&control, &recorded).await;
    let total: i64 = control
        .query_one(
            "SELECT count(*) FROM pgferry.chunk WHERE task = 'default'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(done_chunks(&control).await.len() as i64, total);
    assert!(total > 20, "the load was split into many chunks ({total})");
    assert_identical(&source, &target, "big").await;
    let out = run(&["validate", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A 200 MB value must not need 400 MB of pgferry's memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_value_is_held_in_memory_once() {
    const VALUE_MB: i64 = 200;
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    source.create_database("blob").await.unwrap();
    source
        .execute(
            "blob",
            &format!(
                "CREATE TABLE blobs (id int PRIMARY KEY, b bytea);
                 ALTER TABLE blobs ALTER b SET STORAGE EXTERNAL;
                 INSERT INTO blobs SELECT 1, convert_to(repeat('pgferry!', {VALUE_MB} * 131072), 'UTF8');
                 INSERT INTO blobs SELECT g, decode(md5(g::text), 'hex') FROM generate_series(2, 100) g;"
            ),
        )
        .await
        .unwrap();
    target.create_database("blob").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("blob"), &target.url("blob"), "jobs = 1"),
    );
    let out = run(&["run", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The largest child this test process has waited for is that pgferry run (the cluster
    // helpers are small), so its peak resident size is ours to check.
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let peak_mb = usage.max_rss() / 1024;
    eprintln!("peak RSS of pgferry: {peak_mb} MB for a {VALUE_MB} MB value");
    assert!(
        peak_mb >= VALUE_MB,
        "the value passed through pgferry ({peak_mb} MB)"
    );
    assert!(
        peak_mb < VALUE_MB + VALUE_MB / 2,
        "peak RSS {peak_mb} MB: the {VALUE_MB} MB value was held more than once"
    );
    let same: bool = target
        .connect("blob")
        .await
        .unwrap()
        .query_one(
            "SELECT md5(b) = md5(convert_to(repeat('pgferry!', $1::int * 131072), 'UTF8'))
             FROM blobs WHERE id = 1",
            &[&(VALUE_MB as i32)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same);
}

/// The README's first command: full load and streaming under the demo application's
/// writes, a cutover, and validation; then both servers are gone.
#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    let out = run(&["demo", "--no-wait", "--scale", "1", "--stream-seconds", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "starting two throwaway PostgreSQL servers",
        "An application now writes to the source",
        "total (6 tables)",
        "Fencing the source",
        "the target has applied everything up to",
        "3 sequences set to the source's values",
        "All 6 tables match",
        "Cut over: the target holds every row the application wrote",
        "pgferry status --task",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Both servers it printed are gone.
    let ports: Vec<u16> = stdout
        .lines()
        .filter_map(|l| l.split("@127.0.0.1:").nth(1))
        .filter_map(|rest| rest.split('/').next()?.parse().ok())
        .collect();
    assert!(ports.len() >= 2, "{stdout}");
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the demo's server on port {port} still runs"
        );
    }
}

#[test]
fn help_teaches_and_versions_print() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit codes") && help.contains("PGPASSWORD"),
        "{help}"
    );
    let out = run(&["run", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kill -9"));
    let out = run(&["bogus"]);
    assert_eq!(out.status.code(), Some(2));
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

/// The crash test of CDC: a write workload runs on the source (inserts, updates of
/// TOASTed rows, deletes, key changes, truncates, a table without a key) while `pgferry run`
/// is killed with SIGKILL at random moments and started again. After catching up, the
/// target is identical to the source.
#[tokio::test(flavor = "multi_thread")]
async fn cdc_killed_at_random_moments_under_writes_loses_and_doubles_nothing() {
    killed_at_random_moments(None).await;
}

/// The same from a PostgreSQL 13 source (the seeds' version): text CDC, no streaming of
/// transactions in progress.
#[tokio::test(flavor = "multi_thread")]
async fn cdc_from_postgres_13_killed_at_random_moments_loses_and_doubles_nothing() {
    killed_at_random_moments(Some(13)).await;
}

async fn killed_at_random_moments(source_major: Option<u32>) {
    use rand::{Rng, SeedableRng};
    // Enough data that the first kill can land in the full load.
    let (source, target, dir, task) = cdc_pair_from(
        source_major,
        &[
            pgferry_testkit::workload::MIXED_SCHEMA,
            &datagen::bench_sql(16),
        ],
    )
    .await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = std::sync::Arc::new(pgferry_testkit::workload::WorkloadCounts::default());
    let writer = tokio::spawn(pgferry_testkit::workload::mixed(
        source.connector(),
        "app",
        42,
        stop.clone(),
        counts.clone(),
    ));

    let seed: u64 = rand::random();
    eprintln!("kill moments seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    for round in 0..4 {
        let log = dir.path().join(format!("run-{round}.log"));
        let mut child = pgferry()
            .args(["run", "--task", &task])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // The first kill comes early (planning or loading); the others while streaming.
        let wait_ms = if round == 0 {
            rng.random_range(200..700)
        } else {
            rng.random_range(500..4000)
        };
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let status = if child.try_wait().unwrap().is_none() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            kills += 1;
            child.wait().unwrap()
        } else {
            child.wait().unwrap()
        };
        let phase = phase(&target.connect("app").await.unwrap()).await;
        eprintln!("round {round}: killed after {wait_ms} ms in phase {phase} ({status})");
        if status.code().is_some() {
            panic!(
                "pgferry run exited by itself:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
    assert!(kills >= 3, "{kills} kills");

    // A last run catches up while the workload still writes, then the workload stops.
    let mut child = pgferry()
        .args(["run", "--task", &task])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_cdc(&target, "app", &mut child).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap().unwrap();
    eprintln!("workload: {counts:?}");
    assert!(
        counts
            .transactions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 200
    );
    source
        .wait_for_slot("app", "pgferry_default", Duration::from_secs(120))
        .await
        .unwrap();
    let out = run(&["stop", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_identical(&source, &target, "app").await;
    let out = run(&["validate", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// One source transaction of a million rows streams through pgferry with bounded memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_million_row_transaction_streams_in_bounded_memory() {
    million_row_transaction(None).await;
}

/// PostgreSQL 13 cannot stream a transaction in progress, nor send binary tuples: the
/// transaction spills on the source and arrives as text, and pgferry's memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_million_row_transaction_from_postgres_13_streams_in_bounded_memory() {
    million_row_transaction(Some(13)).await;
}

async fn million_row_transaction(source_major: Option<u32>) {
    let (source, target, _dir, task) = cdc_pair_from(
        source_major,
        &["CREATE TABLE big (id bigint PRIMARY KEY, v text, n numeric)"],
    )
    .await;
    let mut child = pgferry()
        .args(["run", "--task", &task])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_cdc(&target, "app", &mut child).await;
    let before = peak_rss_mb(child.id());
    source
        .execute(
            "app",
            "INSERT INTO big SELECT g, repeat(md5(g::text), 4), g * 1.5
             FROM generate_series(1, 1000000) g",
        )
        .await
        .unwrap();
    source
        .wait_for_slot("app", "pgferry_default", Duration::from_secs(600))
        .await
        .unwrap();
    let peak = peak_rss_mb(child.id());
    let out = run(&["stop", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // About 170 MB of row data went through; holding the transaction would take more than
    // that, batching it takes a fraction.
    eprintln!("peak RSS of pgferry: {before} MB before, {peak} MB after a 1M-row transaction");
    assert!(peak < 120, "peak RSS {peak} MB");
    let digest = "SELECT count(*)::text || md5(string_agg(b::text, ',' ORDER BY id)) FROM big b";
    let s: String = source
        .connect("app")
        .await
        .unwrap()
        .query_one(digest, &[])
        .await
        .unwrap()
        .get(0);
    let t: String = target
        .connect("app")
        .await
        .unwrap()
        .query_one(digest, &[])
        .await
        .unwrap()
        .get(0);
    assert!(s.starts_with("1000000"));
    assert_eq!(s, t);
}

fn dms_data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pgferry-config/tests/data")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn config_explain_marks_each_setting_with_its_origin_and_names_what_dms_does_differently() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &format!(
            "migration_type = \"full-load-and-cdc\"\njobs = 3\ntable_mappings = {:?}\ntask_settings = {:?}\n\
             [source]\nurl = \"host=127.0.0.1 dbname=a\"\n[target]\nurl = \"host=127.0.0.1 dbname=b\"\n",
            dms_data("every-rule-kind.json"),
            dms_data("seed-task-settings.json")
        ),
    );
    let out = pgferry()
        .args(["config", "explain", "--task"])
        .arg(&task)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("jobs") && text.contains("from TOML"),
        "{text}"
    );
    assert!(
        text.contains("from DMS JSON FullLoadSettings.TargetTablePrepMode"),
        "{text}"
    );
    assert!(text.contains("rename schema sales \"crm\""), "{text}");
    assert!(text.contains("never truncates"), "{text}");

    let out = pgferry()
        .args(["config", "explain", "--json", "--task"])
        .arg(&task)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = json["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "jobs")
        .unwrap();
    assert_eq!(jobs["origin"], "toml");
    assert!(!json["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn config_convert_writes_a_task_that_runs_and_bad_json_exits_2_with_the_line() {
    let out = pgferry()
        .args(["config", "convert", "--dms-mappings"])
        .arg(dms_data("seed-table-mappings.json"))
        .arg("--dms-settings")
        .arg(dms_data("seed-task-settings.json"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8(out.stdout).unwrap();
    assert!(
        toml.contains("target_table_prep_mode = \"do_nothing\""),
        "{toml}"
    );
    assert!(toml.contains("data_error_escalation_count = 50"), "{toml}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("m.json");
    std::fs::write(&bad, "{\"rules\": [\n {\"rule-type\": \"selecton\"}\n]}").unwrap();
    let out = pgferry()
        .args(["config", "convert", "--dms-mappings"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("m.json:2") && err.contains("did you mean \"selection\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pg_dump_17_fits_a_13_target() {
    use pgferry_testkit::ClusterOptions;
    let source = Cluster::start_with(ClusterOptions::default().major(13)).unwrap();
    let target = Cluster::start_with(ClusterOptions::default().major(13)).unwrap();
    datagen::create_awkward(&source, "app").await.unwrap();
    target.create_database("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("app"), &target.url("app"), ""),
    );
    let task = task.to_str().unwrap();

    // pg_dump 17 writes settings a 13 server does not know (transaction_timeout).
    let out = pgferry()
        .args(["run", "--task", task])
        .env(
            "PGFERRY_PG_BINDIR",
            pgferry_testkit::client_bindir_17().unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_identical(&source, &target, "app").await;
}
