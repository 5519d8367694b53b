//! Apply conflicts and the error policies: what is logged, suspended, stopped or upserted.

use super::*;

/// `(table, operation, policy)` of each recorded apply exception, in order.
async fn exceptions(p: &Pair) -> Vec<(String, String, String)> {
    p.target
        .connect("app")
        .await
        .unwrap()
        .query(
            "SELECT table_name, operation, policy FROM pgferry.apply_exceptions ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

const TWO_TABLES: &str = "CREATE TABLE a (id int PRIMARY KEY, v text);
     CREATE TABLE b (id int PRIMARY KEY, v text);
     INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 100) g;
     INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 100) g;";

#[tokio::test(flavor = "multi_thread")]
async fn apply_conflicts_follow_the_default_policies_and_the_stream_goes_on() {
    let (p, t, run) = streaming(TWO_TABLES, |_| {}).await;
    // The target drifts: a row the source will insert, rows the source will change, and a
    // rule the source does not have.
    p.target
        .execute(
            "app",
            "INSERT INTO a VALUES (1000, 'target''s own');
             DELETE FROM a WHERE id IN (5, 6);
             ALTER TABLE b ADD CONSTRAINT no_bad CHECK (v <> 'bad');",
        )
        .await
        .unwrap();
    p.source
        .execute(
            "app",
            "INSERT INTO a VALUES (1000, 'source''s'), (1001, 'fine');
             UPDATE a SET v = 'updated' WHERE id IN (5, 7);
             DELETE FROM a WHERE id IN (6, 8);
             UPDATE b SET v = 'bad' WHERE id = 1;
             UPDATE b SET v = 'good' WHERE id = 2;",
        )
        .await
        .unwrap();
    cdc::wait_caught_up(&p.source, "app", "pgferry_default").await;
    let summary = cdc::stop(&p.target, "app", &t.name, run).await;

    // Inserts and updates that conflict are logged (LOG_ERROR), deletes of missing rows
    // are ignored (IGNORE_RECORD), and a rejected value is logged as a data error.
    assert_eq!(
        exceptions(&p).await,
        vec![
            ("a".into(), "insert".into(), "LOG_ERROR".into()),
            ("a".into(), "update".into(), "LOG_ERROR".into()),
            ("b".into(), "update".into(), "LOG_ERROR".into()),
        ]
    );
    let cdc = summary.cdc.unwrap();
    assert_eq!(cdc.totals.exceptions, 3);
    // The bulk path found a row missing (the delete of 6) and passed the sub-batch on.
    assert!(
        cdc.fallbacks.get("row_missing").copied().unwrap_or(0) >= 1,
        "{:?}",
        cdc.fallbacks
    );
    let a: Vec<(i32, String)> = id_and_text(
        &p.target,
        "SELECT id, v FROM a WHERE id IN (5, 6, 7, 8, 1000, 1001) ORDER BY id",
    )
    .await;
    assert_eq!(
        a,
        vec![
            (7, "updated".to_owned()),
            (1000, "target's own".to_owned()),
            (1001, "fine".to_owned()),
        ]
    );
    let b2: String = scalar(&p.target, "app", "SELECT v FROM b WHERE id = 2").await;
    assert_eq!(b2, "good");
    // The logged change carries the row, so it can be repaired by hand.
    let logged: serde_json::Value = scalar(
        &p.target,
        "app",
        "SELECT change FROM pgferry.apply_exceptions WHERE operation = 'insert'",
    )
    .await;
    assert_eq!(logged["new"]["v"], "source's", "{logged}");
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_table_stops_one_table_and_stop_task_stops_the_run_until_fixed() {
    let (p, t, run) = streaming(TWO_TABLES, |t| {
        t.cdc.errors.apply_error_insert_policy = pgferry_config::ErrorPolicy::SuspendTable;
        t.cdc.errors.apply_error_update_policy = pgferry_config::ErrorPolicy::StopTask;
    })
    .await;
    p.target
        .execute("app", "INSERT INTO a VALUES (1000, 'in the way')")
        .await
        .unwrap();
    p.source
        .execute(
            "app",
            "INSERT INTO a VALUES (1000, 'conflicts');
             INSERT INTO a VALUES (1001, 'after the suspension');
             INSERT INTO b VALUES (1001, 'still streams');",
        )
        .await
        .unwrap();
    cdc::wait_caught_up(&p.source, "app", "pgferry_default").await;
    let a1001: i64 = scalar(&p.target, "app", "SELECT count(*) FROM a WHERE id = 1001").await;
    assert_eq!(a1001, 0, "a is suspended");
    let b1001: String = scalar(&p.target, "app", "SELECT v FROM b WHERE id = 1001").await;
    assert_eq!(b1001, "still streams");
    let status =
        pgferry_engine::status(&pg_client(&p.target, "app", Side::Target).await, "default")
            .await
            .unwrap();
    assert_eq!(status.cdc.unwrap().suspended_tables, vec!["public.a"]);

    // An update whose row is missing stops the task, and the checkpoint stays before it.
    p.target
        .execute("app", "DELETE FROM b WHERE id = 50")
        .await
        .unwrap();
    p.source
        .execute(
            "app",
            "UPDATE b SET v = 'stops' WHERE id = 50; UPDATE b SET v = 'x' WHERE id = 51",
        )
        .await
        .unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the run stops by itself")
        .unwrap();
    match ended {
        Err(EngineError::ApplyStopped {
            table,
            operation,
            refusal,
        }) => {
            assert_eq!(
                (table.to_string().as_str(), operation),
                ("public.b", "update")
            );
            assert!(
                matches!(&refusal, pgferry_engine::Refusal::Server { sqlstate, .. } if sqlstate == "23505")
                    || refusal == pgferry_engine::Refusal::RowMissing,
                "{refusal:?}"
            );
        }
        other => panic!("expected STOP_TASK to end the run, got {other:?}"),
    }
    let b51: String = scalar(&p.target, "app", "SELECT v FROM b WHERE id = 51").await;
    assert_eq!(b51, "b51", "nothing after the stopping change was applied");

    // Fix the target and run again: the stopped change is applied from the checkpoint.
    p.target
        .execute("app", "INSERT INTO b VALUES (50, 'restored')")
        .await
        .unwrap();
    let run = cdc::spawn(&t);
    cdc::wait_caught_up(&p.source, "app", "pgferry_default").await;
    cdc::stop(&p.target, "app", &t.name, run).await;
    let b: Vec<String> = p
        .target
        .connect("app")
        .await
        .unwrap()
        .query("SELECT v FROM b WHERE id IN (50, 51) ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(b, vec!["stops", "x"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_can_be_resolved_as_upserts_and_escalate_after_a_count() {
    let (p, t, run) = streaming(TWO_TABLES, |t| {
        t.cdc.errors.apply_error_insert_policy = pgferry_config::ErrorPolicy::UpdateRecord;
        t.cdc.errors.apply_error_update_policy = pgferry_config::ErrorPolicy::InsertRecord;
        t.cdc.errors.apply_error_delete_policy = pgferry_config::ErrorPolicy::LogError;
        t.cdc.errors.apply_error_escalation_count = 3;
        t.cdc.errors.apply_error_escalation_policy = pgferry_config::ErrorPolicy::SuspendTable;
    })
    .await;
    p.target
        .execute(
            "app",
            "INSERT INTO a VALUES (1000, 'stale'); DELETE FROM a WHERE id IN (5, 6, 7)",
        )
        .await
        .unwrap();
    // Conflicts 1 and 2: resolved as an update and an insert. Conflict 3 escalates and
    // suspends `a`.
    p.source
        .execute("app", "INSERT INTO a VALUES (1000, 'fresh')")
        .await
        .unwrap();
    p.source
        .execute("app", "UPDATE a SET v = 'back' WHERE id = 5")
        .await
        .unwrap();
    p.source
        .execute("app", "DELETE FROM a WHERE id = 6")
        .await
        .unwrap();
    p.source
        .execute("app", "UPDATE a SET v = 'after' WHERE id = 10")
        .await
        .unwrap();
    cdc::wait_caught_up(&p.source, "app", "pgferry_default").await;
    cdc::stop(&p.target, "app", &t.name, run).await;
    let rows: Vec<(i32, String)> = id_and_text(
        &p.target,
        "SELECT id, v FROM a WHERE id IN (5, 10, 1000) ORDER BY id",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            (5, "back".to_owned()),
            (10, "a10".to_owned()),
            (1000, "fresh".to_owned())
        ]
    );
    assert_eq!(
        exceptions(&p).await,
        vec![("a".into(), "delete".into(), "SUSPEND_TABLE".into())]
    );
}
