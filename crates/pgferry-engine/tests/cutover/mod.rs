//! `pgferry cutover` against real servers, with the application writing from an ordinary
//! login role: the fence holds for old and new sessions, the target ends identical with
//! its sequences, and an abort lifts the fence and lets streaming go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgferry_engine::CutoverOptions;

use super::*;

mod rollback;

/// The inventory sample on the source, an application role `app` (password `app`) that
/// may write every table, and an empty target database.
async fn inventory_with_app(p: &Pair) {
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.source
        .execute(
            "inv",
            "CREATE ROLE app LOGIN PASSWORD 'app';
             GRANT ALL ON ALL TABLES IN SCHEMA public TO app;
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app;",
        )
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
}

async fn app_session(p: &Pair) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let url = format!(
        "postgres://app:app@127.0.0.1:{}/inv?sslmode=disable",
        p.source.port()
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The application: the inventory workload as `app`, until `stop` (or the fence ends its
/// session).
fn start_app(p: &Pair, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let url = format!(
        "postgres://app:app@127.0.0.1:{}/inv?sslmode=disable",
        p.source.port()
    );
    tokio::spawn(async move {
        let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
            return;
        };
        tokio::spawn(conn);
        let counts = Arc::new(workload::WorkloadCounts::default());
        let _ = workload::inventory(&client, 5, stop, counts, Duration::from_millis(2)).await;
    })
}

fn task_with_fence(p: &Pair) -> Task {
    let mut t = cdc::cdc_task(&p.source, &p.target, "inv");
    t.cutover.fence_roles = vec!["app".to_owned()];
    t
}

/// Every sequence's last value, by name.
async fn sequences(c: &Cluster) -> Vec<(String, Option<i64>)> {
    let client = c.connect("inv").await.unwrap();
    client
        .query(
            "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences
             WHERE schemaname <> 'pgferry' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cutover_under_writes_fences_the_source_and_leaves_the_target_identical() {
    let p = pair();
    inventory_with_app(&p).await;
    // Without a way back: the run stops when the target opens.
    let mut t = task_with_fence(&p);
    t.cutover.reverse = false;
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "inv", "default", "cdc").await;
    let stop = Arc::new(AtomicBool::new(false));
    let app = start_app(&p, stop.clone());
    let old = app_session(&p).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let report = pgferry_engine::cutover(&t, CutoverOptions::default())
        .await
        .expect("the cutover succeeds");
    stop.store(true, Ordering::Relaxed);
    let _ = app.await;
    assert_eq!(report.state, "done");
    let steps: Vec<&str> = report.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        ["checks", "fence", "drain", "sequences", "validate", "open"]
    );
    assert!(
        report.downtime_seconds.is_some_and(|d| d > 0.0),
        "{report:?}"
    );
    assert!(report.fence_lsn.is_some() && report.drained_lsn.is_some());
    assert!(report.validation.iter().all(|c| c.outcome == "match"));

    // The application cannot write on the source: not in its old session, not in a new
    // one, and a new session of any other role starts read-only.
    assert!(
        old.execute("UPDATE products SET price = price WHERE id = 1", &[])
            .await
            .is_err()
    );
    assert!(app_session(&p).await.is_err(), "app may not log in");
    let other = p.source.connect("inv").await.unwrap();
    let refused = other
        .execute("UPDATE products SET price = price WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(refused.code().map(|c| c.code()), Some("25006"), "{refused}");

    // The forward stream stopped when the target opened; the target is identical.
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops when the target opens")
        .unwrap()
        .expect("the run ends without error");
    assert_identical(&p, "inv").await;
    assert_eq!(sequences(&p.source).await, sequences(&p.target).await);

    let status =
        pgferry_engine::status(&pg_client(&p.target, "inv", Side::Target).await, "default")
            .await
            .unwrap();
    assert_eq!(status.phase, "cut-over");
    assert_eq!(status.cutover.map(|c| c.state).as_deref(), Some("done"));
    // Streaming forward again is refused: the application writes to the target now.
    assert!(matches!(
        crate::run(&t).await,
        Err(EngineError::CutOver { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cutover_is_refused_without_a_stream_and_above_the_lag_limit() {
    let p = pair();
    inventory_with_app(&p).await;
    let mut t = task_with_fence(&p);
    t.cutover.max_lag = Duration::from_millis(500);
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "inv", "default", "cdc").await;

    // The target falls behind: a session holds the rows the changes go to.
    let blocker = p.target.connect("inv").await.unwrap();
    blocker
        .batch_execute("BEGIN; SELECT FROM products FOR UPDATE")
        .await
        .unwrap();
    p.source
        .execute("inv", "UPDATE products SET price = price + 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = pgferry_engine::cutover(&t, CutoverOptions::default()).await;
    match refused {
        Err(EngineError::CutoverRefused { problems, .. }) => {
            assert!(problems.iter().any(|p| p.contains("lags")), "{problems:?}")
        }
        other => panic!("expected a refusal for lag, got {other:?}"),
    }
    // Nothing was fenced: the application still writes.
    let app = app_session(&p).await.unwrap();
    app.execute("UPDATE products SET price = price WHERE id = 1", &[])
        .await
        .unwrap();
    blocker.batch_execute("COMMIT").await.unwrap();

    cdc::finish_and_compare(&p, "inv", "default", run).await;
    match pgferry_engine::cutover(&t, CutoverOptions::default()).await {
        Err(EngineError::CutoverRefused { problems, .. }) => assert!(
            problems.iter().any(|p| p.contains("no `pgferry run`")),
            "{problems:?}"
        ),
        other => panic!("expected a refusal without a stream, got {other:?}"),
    }
}

/// A drain that cannot finish (the target is held) stops the cutover with the source
/// fenced; `--abort` lifts the fence and streaming goes on; a second cutover completes.
#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_cutover_lifts_the_fence_and_a_second_one_completes() {
    let p = pair();
    inventory_with_app(&p).await;
    // A role whose name would break out of any statement that did not quote it.
    const ODD: &str = "odd \"role\"; DROP TABLE products; --";
    p.source
        .execute(
            "inv",
            "CREATE ROLE \"odd \"\"role\"\"; DROP TABLE products; --\" LOGIN",
        )
        .await
        .unwrap();
    let mut t = task_with_fence(&p);
    t.cutover.fence_roles.push(ODD.to_owned());
    t.cutover.reverse = false;
    let can_login = |p: &Pair| {
        let c = p.source.url("postgres");
        async move {
            let (client, conn) = tokio_postgres::connect(&c, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query_one(
                    "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
                    &[&ODD],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "inv", "default", "cdc").await;
    // The target falls behind: a session holds the rows the changes go to.
    let blocker = p.target.connect("inv").await.unwrap();
    blocker
        .batch_execute("BEGIN; SELECT FROM products WHERE id < 50 FOR UPDATE")
        .await
        .unwrap();
    let app = app_session(&p).await.unwrap();
    app.execute("UPDATE products SET price = price + 1 WHERE id < 50", &[])
        .await
        .unwrap();
    let short = CutoverOptions {
        drain_wait: Duration::from_secs(2),
        ..CutoverOptions::default()
    };
    // The lag check passes before the change reaches the held table.
    let stuck = pgferry_engine::cutover(&t, short).await;
    assert!(stuck.is_err(), "the drain cannot finish: {stuck:?}");
    assert!(app_session(&p).await.is_err(), "fenced while stopped");
    assert!(
        !can_login(&p).await,
        "the odd role is fenced, by its quoted name"
    );

    let aborted = pgferry_engine::cutover(
        &t,
        CutoverOptions {
            abort: true,
            ..CutoverOptions::default()
        },
    )
    .await
    .expect("the abort succeeds");
    assert_eq!(aborted.state, "aborted");
    assert!(can_login(&p).await, "the abort gives LOGIN back");
    blocker.batch_execute("COMMIT").await.unwrap();
    // The application writes again, and streaming goes on.
    let app = app_session(&p).await.expect("app logs in again");
    app.execute("UPDATE products SET price = price + 1 WHERE id >= 50", &[])
        .await
        .unwrap();
    let slot = pgferry_engine::slot_name("default");
    cdc::wait_caught_up(&p.source, "inv", &slot).await;
    assert!(!run.is_finished(), "the run streams on after an abort");

    let done = pgferry_engine::cutover(&t, CutoverOptions::default())
        .await
        .expect("a second cutover completes");
    assert_eq!(done.state, "done");
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_identical(&p, "inv").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_index_or_a_suspended_table_makes_the_cutover_refuse() {
    let p = pair();
    inventory_with_app(&p).await;
    let t = task_with_fence(&p);
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "inv", "default", "cdc").await;
    let same = pgferry_engine::compare_schema(&t).await.unwrap();
    assert!(same.matches(), "{:#?}", same.differences);
    assert!(same.objects > 50, "{}", same.objects);

    let index: String = scalar(
        &p.target,
        "inv",
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'
         AND indexname NOT LIKE '%pkey' AND indexname NOT LIKE '%key' ORDER BY 1 LIMIT 1",
    )
    .await;
    p.target
        .execute("inv", &format!("DROP INDEX public.\"{index}\""))
        .await
        .unwrap();
    let differs = pgferry_engine::compare_schema(&t).await.unwrap();
    assert_eq!(differs.differences.len(), 1, "{:#?}", differs.differences);
    let d = &differs.differences[0];
    assert_eq!(d.kind, "index");
    assert!(
        d.object.ends_with(&index) && d.problem.contains("missing"),
        "{d:?}"
    );
    match pgferry_engine::cutover(&t, CutoverOptions::default()).await {
        Err(EngineError::CutoverRefused { problems, .. }) => assert!(
            problems
                .iter()
                .any(|p| p.contains("schema differs") && p.contains(&index)),
            "{problems:?}"
        ),
        other => panic!("expected a refusal for the schema, got {other:?}"),
    }
    // A table an error policy suspended from the stream is refused too, by name.
    p.target
        .execute(
            "inv",
            "INSERT INTO pgferry.cdc_table (task, schema_name, table_name, suspended,
                                            suspended_reason)
             VALUES ('default', 'public', 'products', true, 'a test')",
        )
        .await
        .unwrap();
    match pgferry_engine::cutover(&t, CutoverOptions::default()).await {
        Err(EngineError::CutoverRefused { problems, .. }) => assert!(
            problems
                .iter()
                .any(|p| p.contains("suspended") && p.contains("public.products")),
            "{problems:?}"
        ),
        other => panic!("expected a refusal for the suspended table, got {other:?}"),
    }
    cdc::stop(&p.target, "inv", "default", run).await;
}

/// A cutover killed in its open step, after it stopped the forward stream, is run again:
/// its second stop request finds the stream stopped (the run waits for the switch) and is
/// answered at once, not after a timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_stopped_for_a_switch_answers_a_second_stop_at_once() {
    let p = pair();
    inventory_with_app(&p).await;
    let t = task_with_fence(&p);
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "inv", "default", "cdc").await;
    // A cutover at its open step, as one killed there leaves it.
    p.target
        .execute(
            "inv",
            "INSERT INTO pgferry.cutover (task) VALUES ('default');
             INSERT INTO pgferry.cutover_step (task, step, ordinal, state)
             VALUES ('default', 'open', 5, 'running')",
        )
        .await
        .unwrap();
    let wait = Duration::from_secs(20);
    assert!(pgferry_engine::request_stop(&t, wait).await.unwrap());
    assert!(
        !run.is_finished(),
        "the run waits for the switch to turn it round"
    );
    let again = std::time::Instant::now();
    pgferry_engine::request_stop(&t, wait)
        .await
        .expect("a stopped stream answers a second stop");
    assert!(
        again.elapsed() < Duration::from_secs(5),
        "{:?}",
        again.elapsed()
    );
    // The switch is given up: the run ends.
    p.target
        .execute("inv", "UPDATE pgferry.cutover SET state = 'aborted'")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ends when the switch is given up")
        .unwrap()
        .unwrap();
}
