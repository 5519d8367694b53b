//! Faults a production migration meets, reproduced on real servers: each test breaks
//! something under a running task, repairs it, and ends with a row-for-row comparison and
//! no change skipped.

mod lost_slot;

use std::time::{Duration, Instant};

use pgferry_testkit::disk::SmallDisk;

use crate::{Pair, cdc, pair, scalar};

/// Waits until the task's event log has a message containing `text`.
async fn wait_for_event(target: &pgferry_testkit::Cluster, db: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(c) = target.connect(db).await
            && let Ok(Some(row)) = c
                .query_opt(
                    "SELECT message FROM pgferry.event WHERE strpos(message, $1) > 0 LIMIT 1",
                    &[&text],
                )
                .await
        {
            return row.get(0);
        }
        assert!(Instant::now() < deadline, "no event mentions {text:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the control schema records `n` chunks done.
async fn wait_for_done_chunks(target: &pgferry_testkit::Cluster, db: &str, n: i64) {
    let watcher = target.connect(db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pgferry.chunk WHERE state = 'done'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if done >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no chunk was copied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// About 80 MB in 1 MB chunks (commits every few tens of milliseconds), and a table with a
/// foreign key to it.
const BIG: &str = "CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL, n int);
     ALTER TABLE big ALTER payload SET STORAGE EXTERNAL;
     INSERT INTO big SELECT g, repeat(md5(g::text), 12), g % 97
     FROM generate_series(1, 200000) g;
     CREATE TABLE child (id int PRIMARY KEY, big_id bigint REFERENCES big (id));
     INSERT INTO child SELECT g, g * 3 FROM generate_series(1, 1000) g;";

#[tokio::test(flavor = "multi_thread")]
async fn a_full_target_disk_while_streaming_is_waited_out_and_skips_no_change() {
    let p = pair();
    let disk = match SmallDisk::mount(&p.target.dir().join("small-disk"), 4) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE TABLE notes (id int PRIMARY KEY, body text);
             ALTER TABLE notes ALTER body SET STORAGE EXTERNAL;
             INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    p.target
        .execute(
            "app",
            &format!(
                "CREATE TABLESPACE small LOCATION '{}'",
                disk.path().display()
            ),
        )
        .await
        .unwrap();
    let t = cdc::cdc_task(&p.source, &p.target, "app");
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    p.target
        .execute("app", "ALTER TABLE notes SET TABLESPACE small")
        .await
        .unwrap();

    // About 6 MB of uncompressed values for a 4 MB disk.
    p.source
        .execute(
            "app",
            "INSERT INTO notes SELECT g, repeat(md5(g::text), 625) FROM generate_series(11, 310) g",
        )
        .await
        .unwrap();
    let message = wait_for_event(&p.target, "app", "No space left on device").await;
    assert!(message.contains("retrying"), "{message}");
    let exceptions: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM pgferry.apply_exceptions",
    )
    .await;
    assert_eq!(exceptions, 0, "a full disk is not a data error");
    assert!(!run.is_finished(), "the run waits the outage out");

    // Space comes back: everything arrives, nothing was skipped.
    disk.resize(64).unwrap();
    p.source
        .execute(
            "app",
            "UPDATE notes SET body = 'short' WHERE id % 7 = 0; DELETE FROM notes WHERE id % 11 = 0",
        )
        .await
        .unwrap();
    cdc::finish_and_compare(&p, "app", &t.name, run).await;
}

/// Starts a full-load-and-cdc task on [`BIG`], crashes one server (`pick` chooses which)
/// with an immediate stop right after a few chunks commit, starts it again, and checks
/// that the same run reaches streaming and ends identical.
async fn crash_during_the_load(pick: fn(&Pair) -> &pgferry_testkit::Cluster) -> Pair {
    use pgferry_testkit::StopMode;
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source.execute("app", BIG).await.unwrap();
    p.target.create_database("app").await.unwrap();
    let mut t = cdc::cdc_task(&p.source, &p.target, "app");
    t.full_load.chunk_size = 1024 * 1024;
    t.full_load.jobs = 2;
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "loading").await;
    // Right after a few chunks commit (asynchronously), while the load goes on.
    wait_for_done_chunks(&p.target, "app", 4).await;
    pick(&p).stop(StopMode::Immediate).unwrap();
    pick(&p).restart().unwrap();

    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    assert!(!run.is_finished(), "the same run went on");
    p.source
        .execute("app", "UPDATE big SET n = n + 1 WHERE id % 1000 = 0")
        .await
        .unwrap();
    cdc::finish_and_compare(&p, "app", &t.name, run).await;
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_crash_during_the_load_is_ridden_through_and_loses_no_chunk() {
    let p = crash_during_the_load(|p| &p.target).await;
    let pending: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM pgferry.chunk WHERE state <> 'done'",
    )
    .await;
    assert_eq!(pending, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_restart_during_the_load_goes_on_from_a_new_snapshot_in_the_same_run() {
    let p = crash_during_the_load(|p| &p.source).await;
    let message = wait_for_event(&p.target, "app", "goes on from a new snapshot").await;
    assert!(message.contains("snapshot"), "{message}");
    let last_error: Option<String> = scalar(
        &p.target,
        "app",
        "SELECT last_error FROM pgferry.task WHERE name = 'default'",
    )
    .await;
    assert_eq!(last_error, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_source_connection_is_noticed_its_lag_grows_and_streaming_comes_back() {
    use pgferry_testkit::proxy::Proxy;
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    // pgferry reaches the source only through the proxy; the test writes to it directly.
    let proxy = Proxy::start(p.source.port()).unwrap();
    let mut t = cdc::cdc_task(&p.source, &p.target, "app");
    t.source.url = format!(
        "postgres://postgres@127.0.0.1:{}/app?sslmode=disable&connect_timeout=3",
        proxy.port()
    );
    t.cdc.receive_timeout = Duration::from_secs(6);
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    let slot = pgferry_engine::slot_name(&t.name);
    cdc::wait_caught_up(&p.source, "app", &slot).await;
    // Streaming has begun (its loop has saved a position).
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar::<Option<String>>(
        &p.target,
        "app",
        "SELECT received_lsn::text FROM pgferry.cdc_state WHERE task = 'default'",
    )
    .await
    .is_none()
    {
        assert!(Instant::now() < deadline, "streaming never began");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The network freezes: no error, no close, nothing arrives.
    proxy.freeze();
    p.source
        .execute(
            "app",
            "INSERT INTO t SELECT g, 'late' FROM generate_series(101, 200) g",
        )
        .await
        .unwrap();
    // The lag shown grows instead of staying at its last value...
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag: Option<i64> = scalar(
            &p.target,
            "app",
            "SELECT source_latency_ms FROM pgferry.cdc_state WHERE task = 'default'",
        )
        .await;
        if lag.unwrap_or(0) > 5_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the lag stayed at {lag:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // ... and the dead connection is noticed, not waited on forever.
    let message = wait_for_event(&p.target, "app", "presumed dead").await;
    assert!(message.contains("retrying"), "{message}");
    assert!(!run.is_finished());

    // The network comes back: the stream reconnects and catches up, nothing lost.
    proxy.thaw();
    cdc::finish_and_compare(&p, "app", &t.name, run).await;
}
