//! A slot the source invalidates (`max_slot_wal_keep_size`): refused with the way forward,
//! then one command starts over, keeping what still matches.

use std::time::{Duration, Instant};

use pgferry_engine::{EngineError, RunOptions, RunProgress};
use pgferry_testkit::Cluster;

use pgferry_config::Task;

use crate::{Pair, cdc, pair, scalar};

const SCHEMA: &str = "CREATE TABLE parent (id int PRIMARY KEY, v text);
     CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
     CREATE TABLE steady (id int PRIMARY KEY, v text);
     CREATE TABLE busy (id bigserial PRIMARY KEY, v text);
     INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 500) g;
     INSERT INTO child SELECT g, g FROM generate_series(1, 500) g;
     INSERT INTO steady SELECT g, 's' || g FROM generate_series(1, 500) g;
     INSERT INTO busy (v) SELECT 'b' || g FROM generate_series(1, 500) g;";

/// Writes WAL on an idle slot's source, past a 1 MB `max_slot_wal_keep_size`, until the
/// source invalidates the slot at a checkpoint.
async fn invalidate(source: &Cluster, db: &str, slot: &str) {
    for sql in [
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
        "SELECT pg_reload_conf()",
    ] {
        source.execute(db, sql).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for sql in [
            "INSERT INTO busy (v) SELECT 'noise' FROM generate_series(1, 2000)",
            "SELECT pg_switch_wal()",
            "CHECKPOINT",
        ] {
            source.execute(db, sql).await.unwrap();
        }
        let status: Option<String> = source
            .connect(db)
            .await
            .unwrap()
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if status.as_deref() == Some("lost") {
            return;
        }
        assert!(Instant::now() < deadline, "the slot stayed {status:?}");
    }
}

/// Waits until a start-over is recorded and the new stream has saved a position (the task
/// was in phase `cdc` before it, too).
async fn streaming_again(target: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !scalar::<bool>(
        target,
        "app",
        "SELECT EXISTS (SELECT FROM pgferry.event WHERE message LIKE 'started over%')
             AND (SELECT phase = 'cdc' AND received_lsn IS NOT NULL
                  FROM pgferry.task JOIN pgferry.cdc_state ON task = name)",
    )
    .await
    {
        assert!(Instant::now() < deadline, "never streamed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When the table that never changes was last copied.
async fn steady_copied_at(target: &Cluster) -> String {
    scalar(
        target,
        "app",
        "SELECT max(c.finished_at)::text FROM pgferry.chunk c JOIN pgferry.table_state t
         USING (task, table_id) WHERE t.source_table = 'steady'",
    )
    .await
}

/// [`SCHEMA`] on a new pair, and a CDC task with its slot's name.
async fn streaming() -> (Pair, Task, String) {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source.execute("app", SCHEMA).await.unwrap();
    p.target.create_database("app").await.unwrap();
    let t = cdc::cdc_task(&p.source, &p.target, "app");
    let slot = pgferry_engine::slot_name(&t.name);
    (p, t, slot)
}

async fn run_once(
    t: &Task,
    options: RunOptions,
) -> Result<pgferry_engine::RunSummary, EngineError> {
    pgferry_engine::run_with(t, std::sync::Arc::new(RunProgress::default()), options).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_slot_is_refused_with_the_way_forward_and_one_command_starts_over() {
    let (p, t, slot) = streaming().await;
    let start_over = RunOptions { start_over: true };
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    p.source
        .execute("app", "UPDATE parent SET v = v || '+' WHERE id <= 10")
        .await
        .unwrap();
    cdc::wait_caught_up(&p.source, "app", &slot).await;
    cdc::stop(&p.target, "app", &t.name, run).await;
    // A healthy slot is not replaced.
    let refused = run_once(&t, start_over).await.unwrap_err();
    assert!(
        matches!(refused, EngineError::CannotStartOver { .. })
            && refused.to_string().contains("healthy"),
        "{refused}"
    );
    let copied_at = steady_copied_at(&p.target).await;

    // While pgferry is stopped the source writes, past max_slot_wal_keep_size.
    p.source
        .execute(
            "app",
            "UPDATE parent SET v = 'changed' WHERE id % 3 = 0;
             DELETE FROM child WHERE id % 5 = 0;",
        )
        .await
        .unwrap();
    invalidate(&p.source, "app", &slot).await;

    // A plain run refuses, says why, and points at --start-over.
    let lost = run_once(&t, RunOptions::default()).await.unwrap_err();
    assert!(matches!(lost, EngineError::CannotStream { .. }), "{lost}");
    assert!(lost.to_string().contains("wal_status = lost"), "{lost}");
    assert!(lost.hint().unwrap().contains("--start-over"));
    let retained: Option<i64> = scalar(
        &p.target,
        "app",
        "SELECT wal_retained_bytes FROM pgferry.cdc_state",
    )
    .await;
    assert_eq!(
        retained, None,
        "status no longer claims the lost slot holds WAL"
    );

    // A start-over that died after replacing the slot: the slot looks healthy, and a plain
    // run must still refuse it (its checkpoint belongs to the old slot).
    p.source
        .execute(
            "app",
            &format!(
                "SELECT pg_drop_replication_slot('{slot}');
                 SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"
            ),
        )
        .await
        .unwrap();
    p.target
        .execute(
            "app",
            "UPDATE pgferry.cdc_state SET start_over_since = now()",
        )
        .await
        .unwrap();
    let unfinished = run_once(&t, RunOptions::default()).await.unwrap_err();
    assert!(
        unfinished.to_string().contains("did not finish"),
        "{unfinished}"
    );

    // One command: a new slot, the tables that differ copied again, streaming from there,
    // under writes.
    let run = cdc::spawn_with(&t, start_over);
    streaming_again(&p.target).await;
    p.source
        .execute(
            "app",
            "INSERT INTO parent VALUES (1000, 'new'); INSERT INTO child VALUES (1000, 1000);
             UPDATE busy SET v = 'after' WHERE id % 10 = 0;",
        )
        .await
        .unwrap();
    cdc::finish_and_compare(&p, "app", &t.name, run).await;

    let note: String = scalar(
        &p.target,
        "app",
        "SELECT message FROM pgferry.event WHERE message LIKE 'started over%'",
    )
    .await;
    // parent and busy changed; child points at parent, so it is emptied with it.
    assert!(
        note.contains("1 of 4 table(s) match the new snapshot and are kept, 3 are copied again"),
        "{note}"
    );
    assert_eq!(
        steady_copied_at(&p.target).await,
        copied_at,
        "the matching table was kept"
    );
    let slots: i64 = scalar(
        &p.source,
        "app",
        "SELECT count(*) FROM pg_replication_slots",
    )
    .await;
    assert_eq!(slots, 1, "only the new slot is left on the source");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_lost_while_streaming_ends_the_run_with_the_way_forward() {
    let (p, t, slot) = streaming().await;
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    cdc::wait_caught_up(&p.source, "app", &slot).await;

    // The target stalls on a lock, so the slot falls behind while the source writes past
    // max_slot_wal_keep_size; the source ends the walsender and invalidates the slot.
    let blocker = p.target.connect("app").await.unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    invalidate(&p.source, "app", &slot).await;
    blocker.batch_execute("ROLLBACK").await.unwrap();

    let ended = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends instead of retrying a slot that cannot come back")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&ended, EngineError::CannotStream { problem, .. }
            if problem.contains("wal_status = lost")),
        "{ended}"
    );
    assert!(ended.hint().unwrap().contains("--start-over"));
}
