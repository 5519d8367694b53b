//! SIGKILL at random moments, during the load and under streaming writes: the next run
//! resumes without copying finished chunks again, and nothing is lost or doubled.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgferry_testkit::{Cluster, datagen};

use crate::*;

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

/// Waits until a backend on `target` other than `except` waits for a lock: pgferry's apply
/// session, blocked by the test in the middle of its transaction.
async fn wait_for_blocked_apply(target: &tokio_postgres::Client, except: i32, log: &Path) {
    // The stream first catches up on what the workload wrote meanwhile: slow on a busy
    // machine.
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        let waiting: i64 = target
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND pid <> $1",
                &[&except],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the apply session never reached the lock:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn kill(child: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
}

/// Outcomes of the schema changes applied so far, in order.
async fn ddl_outcomes(target: &Cluster) -> Vec<String> {
    let c = target.connect("app").await.unwrap();
    c.query(
        "SELECT tag || ' ' || object || ' ' || outcome FROM pgferry.ddl_log ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// SIGKILL at the two worst moments around a schema change, under writes: in the middle of
/// applying it (its target transaction is lost, and the next run applies it again), and
/// right after it committed, before the next change (the next run must not apply it a
/// second time: under `STOP_TASK` a second `ADD COLUMN` would stop the run).
#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_around_a_schema_change_applies_it_exactly_once() {
    let (source, target, dir, _) = cdc_pair(&[
        pgferry_testkit::workload::MIXED_SCHEMA,
        "CREATE TABLE items (id serial PRIMARY KEY, v int);
         CREATE TABLE other (id int PRIMARY KEY, x text);",
    ])
    .await;
    let task = write_task(
        dir.path(),
        &cdc_task(&source.url("app"), &target.url("app")).replace(
            "[cdc]\n",
            "[cdc]\nddl = true\nddl_error_policy = \"STOP_TASK\"\n",
        ),
    );
    let task = task.to_str().unwrap().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = std::sync::Arc::new(pgferry_testkit::workload::WorkloadCounts::default());
    let writer = tokio::spawn(pgferry_testkit::workload::mixed(
        source.connector(),
        "app",
        7,
        stop.clone(),
        counts.clone(),
    ));
    let spawn = |round: u32| {
        pgferry()
            .args(["run", "--task", &task])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("run-{round}.log"))).unwrap())
            .spawn()
            .unwrap()
    };
    let locker = target.connect("app").await.unwrap();
    let locker_pid: i32 = locker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // 1. Killed while applying the change: the target holds `items`, so the ALTER waits.
    let mut child = spawn(0);
    wait_for_cdc(&target, "app", &mut child).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS SHARE MODE")
        .await
        .unwrap();
    source
        .execute(
            "app",
            "ALTER TABLE items ADD COLUMN a1 int DEFAULT 1; INSERT INTO items (v, a1) VALUES (1, 2)",
        )
        .await
        .unwrap();
    wait_for_blocked_apply(&locker, locker_pid, &dir.path().join("run-0.log")).await;
    kill(&mut child);
    locker.batch_execute("ROLLBACK").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ddl_outcomes(&target).await.is_empty(),
        "the killed transaction took its schema change with it"
    );

    // 2. Killed after the change committed, before the next change: the target holds
    //    `other`, which the change after it writes.
    let mut child = spawn(1);
    wait_for_cdc(&target, "app", &mut child).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE other IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    source
        .execute("app", "ALTER TABLE items ADD COLUMN a2 text")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while ddl_outcomes(&target).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the schema changes were not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    source
        .execute(
            "app",
            "INSERT INTO other VALUES (1, 'next'); INSERT INTO items (v, a2) VALUES (3, 'x')",
        )
        .await
        .unwrap();
    wait_for_blocked_apply(&locker, locker_pid, &dir.path().join("run-1.log")).await;
    kill(&mut child);
    locker.batch_execute("ROLLBACK").await.unwrap();

    // 3. The last run resumes, under the same writes, and catches up.
    let mut child = spawn(2);
    wait_for_cdc(&target, "app", &mut child).await;
    source
        .execute(
            "app",
            "INSERT INTO items (v, a1, a2) VALUES (4, 4, 'after')",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap().unwrap();
    source
        .wait_for_slot("app", "pgferry_default", Duration::from_secs(120))
        .await
        .unwrap();
    let out = run(&["stop", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(dir.path().join("run-2.log")).unwrap_or_default()
    );
    assert_identical(&source, &target, "app").await;
    assert_eq!(
        ddl_outcomes(&target).await,
        [
            "ALTER TABLE public.items applied",
            "ALTER TABLE public.items applied"
        ],
        "each schema change applied once"
    );
    let columns: String = target
        .connect("app")
        .await
        .unwrap()
        .query_one(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || ' '
                               || coalesce(pg_get_expr(d.adbin, d.adrelid), '-'), ', '
                               ORDER BY attnum)
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
             WHERE attrelid = 'items'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        columns,
        "id integer nextval('items_id_seq'::regclass), v integer -, a1 integer 1, a2 text -"
    );
}
