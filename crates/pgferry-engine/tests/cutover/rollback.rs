//! The way back: after a cutover the target's writes stream back to the source, and
//! `pgferry rollback` returns to the source with every one of them; a second cutover and
//! `pgferry finish` end the migration with nothing of pgferry's left on either side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgferry_engine::{CutoverOptions, FinishOptions};

use super::super::*;

/// The mixed workload (key changes, TOASTed documents, a keyless table with duplicates,
/// truncates) on `cluster`'s `app` database for `seconds`.
async fn mixed_for(cluster: &Cluster, seed: u64, seconds: u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(workload::WorkloadCounts::default());
    let (s, c) = (stop.clone(), counts.clone());
    let connector = cluster.connector();
    let writer = tokio::spawn(async move {
        workload::mixed(connector, "app", seed, s, c).await.unwrap();
    });
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(counts.transactions.load(Ordering::Relaxed) > 10);
}

async fn count(c: &Cluster, db: &str, sql: &str) -> i64 {
    scalar::<i64>(c, db, sql).await
}

/// Until `sql` returns true on `c`, for at most a minute.
async fn eventually(c: &Cluster, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !scalar::<bool>(c, "app", sql).await {
        assert!(Instant::now() < deadline, "never true: {sql}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_brings_back_every_write_made_on_the_target_and_finish_cleans_up() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            &format!(
                "{}
                 CREATE ROLE app LOGIN PASSWORD 'app';
                 GRANT ALL ON ALL TABLES IN SCHEMA public TO app;
                 GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app;",
                workload::MIXED_SCHEMA
            ),
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    p.target
        .execute("app", "CREATE ROLE app LOGIN PASSWORD 'app'")
        .await
        .unwrap();
    let mut t = cdc::cdc_task(&p.source, &p.target, "app");
    t.cdc.no_key_tables = pgferry_config::NoKeyTables::ReplicaIdentityFull;
    t.cutover.fence_roles = vec!["app".to_owned()];
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    mixed_for(&p.source, 1, 2).await;

    let cut = pgferry_engine::cutover(&t, CutoverOptions::default())
        .await
        .expect("the cutover succeeds");
    assert!(
        cut.reverse.is_some(),
        "the reverse stream is set up: {cut:?}"
    );
    assert!(!run.is_finished(), "the run streams back after the cutover");

    // The application on the target: every kind of change, then a few by hand.
    mixed_for(&p.target, 2, 4).await;
    p.target
        .execute(
            "app",
            "UPDATE doc SET version = version + 1 WHERE id <= 10;
             UPDATE acct SET id = id + 100000 WHERE id = (SELECT min(id) FROM acct);
             DELETE FROM dupes WHERE k = 3;
             INSERT INTO dupes VALUES (3, 'again'), (3, 'again');
             INSERT INTO doc VALUES (100000, repeat('long ', 100000), 1);",
        )
        .await
        .unwrap();
    let reverse = pgferry_engine::reverse_status(&t).await.unwrap();
    assert!(
        reverse.is_some_and(|r| r.running),
        "the reverse stream runs"
    );

    let back = pgferry_engine::rollback(&t, CutoverOptions::default())
        .await
        .expect("the rollback succeeds");
    assert_eq!(back.state, "done");
    assert_eq!(back.kind, "rollback");
    assert!(back.downtime_seconds.is_some() && back.drained_lsn.is_some());
    assert_identical(&p, "app").await;
    let sequences = "SELECT string_agg(sequencename || '=' || coalesce(last_value, 0), ',' \
                     ORDER BY 1) FROM pg_sequences WHERE schemaname = 'public'";
    assert_eq!(
        scalar::<String>(&p.source, "app", sequences).await,
        scalar::<String>(&p.target, "app", sequences).await
    );

    // The application writes on the source again; a new session on the target starts
    // read-only; the forward stream carries the source's writes on.
    let url = format!(
        "postgres://app:app@127.0.0.1:{}/app?sslmode=disable",
        p.source.port()
    );
    let (app, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("the application logs in to the source again");
    tokio::spawn(conn);
    app.execute(
        "INSERT INTO acct VALUES (999999, 1, 'after the rollback')",
        &[],
    )
    .await
    .unwrap();
    let refused = p
        .target
        .connect("app")
        .await
        .unwrap()
        .execute("UPDATE acct SET balance = 0 WHERE id = 999999", &[])
        .await
        .unwrap_err();
    assert_eq!(refused.code().map(|c| c.code()), Some("25006"), "{refused}");
    let url = format!(
        "postgres://app:app@127.0.0.1:{}/app?sslmode=disable",
        p.target.port()
    );
    assert!(
        tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_err(),
        "the application's role is fenced on the target"
    );
    eventually(
        &p.target,
        "SELECT EXISTS (SELECT FROM acct WHERE id = 999999)",
    )
    .await;
    assert_eq!(
        count(
            &p.source,
            "app",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgferry'"
        )
        .await,
        0,
        "the rollback drops the reverse stream's schema on the source"
    );

    // Cut over again, then finish: no slot, publication or control schema is left.
    mixed_for(&p.source, 3, 2).await;
    let again = pgferry_engine::cutover(&t, CutoverOptions::default())
        .await
        .expect("a second cutover succeeds");
    assert_eq!(again.state, "done");
    p.target
        .execute(
            "app",
            "UPDATE acct SET balance = balance + 1 WHERE id = 999999",
        )
        .await
        .expect("the target takes writes after the second cutover");
    let finished = pgferry_engine::finish(
        &t,
        FinishOptions {
            unfence_source: true,
            ..FinishOptions::default()
        },
    )
    .await
    .expect("finish succeeds");
    assert_eq!(finished.unapplied_changes, 0);
    assert!(finished.reverse.slot_dropped.is_some() && finished.forward.slot_dropped.is_some());
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends when the migration is finished")
        .unwrap()
        .expect("the run ends without error");
    assert_identical(&p, "app").await;
    for c in [&p.source, &p.target] {
        assert_eq!(
            count(c, "app", "SELECT count(*) FROM pg_replication_slots").await,
            0
        );
        assert_eq!(
            count(c, "app", "SELECT count(*) FROM pg_publication").await,
            0
        );
    }
    assert_eq!(
        count(
            &p.source,
            "app",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgferry'"
        )
        .await,
        0
    );
    let phase: String = scalar(&p.target, "app", "SELECT phase FROM pgferry.task").await;
    assert_eq!(phase, "done");
}
