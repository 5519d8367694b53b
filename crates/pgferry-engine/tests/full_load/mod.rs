//! The full load: every type and awkward identifier row for row, selection rules, the
//! ways to treat tables in the way, validation, large objects, one run at a time.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn full_load_copies_every_type_and_awkward_identifier_row_for_row() {
    let p = pair();
    datagen::create_awkward(&p.source, "app").await.unwrap();
    p.target.create_database("app").await.unwrap();
    let t = task(&p, "app");
    let summary = run(&t).await.expect("full load");
    assert!(!summary.already_done);
    assert!(summary.rows > 40_000, "{}", summary.rows);

    assert_identical(&p, "app").await;

    // pgferry's own validation agrees with the independent comparison.
    let report = pgferry_engine::validate(&t, 2).await.unwrap();
    assert!(report.all_match(), "{report:#?}");
    assert!(report.tables.len() >= 12);

    // Indexes, constraints, triggers, views and sequences all came across.
    let schemas = vec!["public".to_owned(), "Weird \"Schema\"".to_owned()];
    let src = object_counts(&pg_client(&p.source, "app", Side::Source).await, &schemas)
        .await
        .unwrap();
    let dst = object_counts(&pg_client(&p.target, "app", Side::Target).await, &schemas)
        .await
        .unwrap();
    assert_eq!(src, dst);
    assert!(
        src["index"] >= 10 && src["constraint f"] >= 1 && src["trigger"] >= 1,
        "{src:?}"
    );

    // Sequences carry the source's position, including one that counts down.
    for seq in ["countdown", "line_items_id_seq", "never_used"] {
        let sql = format!("SELECT nextval('{seq}')");
        let a: i64 = scalar(&p.source, "app", &sql).await;
        let b: i64 = scalar(&p.target, "app", &sql).await;
        assert_eq!(a, b, "sequence {seq}");
    }
    let countdown: i64 = scalar(&p.target, "app", "SELECT last_value FROM countdown").await;
    assert!(countdown < 100, "countdown went down: {countdown}");

    // The populated materialized view has rows; the unpopulated one stays unpopulated.
    let n: i64 = scalar(&p.target, "app", "SELECT count(*) FROM measurement_days").await;
    assert!(n > 0);
    let populated: bool = scalar(
        &p.target,
        "app",
        "SELECT relispopulated FROM pg_class WHERE relname = 'never_refreshed'",
    )
    .await;
    assert!(!populated);

    // The big table was split, and odd types fell back to text COPY.
    let chunks: i32 = scalar(
        &p.target,
        "app",
        "SELECT chunks_total FROM pgferry.table_state WHERE source_table = 'big'",
    )
    .await;
    assert!(chunks > 1, "big was copied in {chunks} chunk(s)");
    let format: String = scalar(
        &p.target,
        "app",
        "SELECT copy_format FROM pgferry.table_state WHERE source_table = 'Awkward Types'",
    )
    .await;
    assert_eq!(
        format, "text",
        "hstore[] and arrays of user types need text COPY"
    );

    // A plain full load leaves no replication slot holding WAL on the source.
    let slots: i64 = scalar(
        &p.source,
        "app",
        "SELECT count(*) FROM pg_replication_slots",
    )
    .await;
    assert_eq!(slots, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_task_is_not_run_twice() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    let t = task(&p, "inv");
    run(&t).await.unwrap();
    let again = run(&t).await.unwrap();
    assert!(again.already_done);
    assert_identical(&p, "inv").await;
    let status =
        pgferry_engine::status(&pg_client(&p.target, "inv", Side::Target).await, "default")
            .await
            .unwrap();
    assert_eq!(status.phase, "done");
    assert_eq!(status.totals.tables_loaded, 6);
    assert_eq!(status.schema.failed, 0);
    assert!(!status.running);
    assert!(
        status
            .events
            .iter()
            .any(|e| e.message.contains("full load complete"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn selection_rules_leave_out_tables_schemas_and_what_depends_on_them() {
    let p = pair();
    datagen::create_awkward(&p.source, "app").await.unwrap();
    p.target.create_database("app").await.unwrap();
    let mut t = task(&p, "app");
    t.selection = Selection::new(
        vec![TableRule::new("%", "%")],
        vec![
            TableRule::new("public", "big"),
            TableRule::new("Weird \"Schema\"", "%"),
        ],
    );
    let summary = run(&t).await.unwrap();
    let names: Vec<&str> = summary.tables.iter().map(|t| t.table.as_str()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("big") || n.contains("Weird")),
        "{names:?}"
    );
    assert!(names.contains(&"public.no_pk"));
    let exists = |sql: &'static str| async { scalar::<bool>(&p.target, "app", sql).await };
    assert!(!exists("SELECT to_regclass('public.big') IS NOT NULL").await);
    assert!(!exists("SELECT to_regnamespace('\"Weird \"\"Schema\"\"\"') IS NOT NULL").await);
    assert!(!exists("SELECT to_regclass('public.big_summary') IS NOT NULL").await);
    assert!(exists("SELECT to_regclass('public.measurement_days') IS NOT NULL").await);
    assert!(
        summary.warnings.iter().any(|w| w.contains("big_summary")),
        "a view over an excluded table is reported: {:?}",
        summary.warnings
    );
    let report = pgferry_engine::validate(&t, 2).await.unwrap();
    assert!(report.all_match(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_reports_changed_and_missing_rows_per_table() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    let t = task(&p, "inv");
    run(&t).await.unwrap();
    p.target
        .execute(
            "inv",
            "UPDATE products SET name = name || '!' WHERE id = 7;
             DELETE FROM order_lines WHERE order_id = 3 AND line_no = 1;
             ALTER TABLE warehouses RENAME COLUMN timezone TO tz;",
        )
        .await
        .unwrap();
    let report = pgferry_engine::validate(&t, 2).await.unwrap();
    assert!(!report.all_match());
    let outcome = |name: &str| {
        report
            .tables
            .iter()
            .find(|c| c.table == name)
            .map(|c| c.outcome)
            .unwrap()
    };
    assert_eq!(outcome("public.products"), Outcome::ChecksumDiffers);
    assert_eq!(outcome("public.order_lines"), Outcome::RowCountDiffers);
    assert_eq!(outcome("public.warehouses"), Outcome::ColumnsDiffer);
    assert_eq!(outcome("public.orders"), Outcome::Match);
    assert_eq!(report.differing, 3);
    // The results are kept with the task for `status`.
    let status =
        pgferry_engine::status(&pg_client(&p.target, "inv", Side::Target).await, "default")
            .await
            .unwrap();
    assert_eq!(
        status
            .validation
            .iter()
            .filter(|v| v.outcome != "match")
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_in_the_way_are_refused_by_default_and_handled_by_each_prep_mode() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    // An earlier, different attempt left a table behind.
    p.target
        .execute(
            "inv",
            "CREATE TABLE warehouses (id smallint PRIMARY KEY, code text, name text,
                                      timezone text, extra text DEFAULT 'kept');
             INSERT INTO warehouses VALUES (99, 'OLD', 'old', 'UTC', 'x');",
        )
        .await
        .unwrap();
    let mut t = task(&p, "inv");
    match run(&t).await {
        Err(e @ EngineError::TablesInTheWay { .. }) => {
            assert!(e.to_string().contains("public.warehouses"), "{e}");
            assert!(e.hint().unwrap().contains("target_table_prep_mode"));
        }
        other => panic!("expected TablesInTheWay, got {other:?}"),
    }

    // do_nothing: the old row stays, the source's rows are added.
    t.name = "do-nothing".into();
    t.full_load.target_table_prep_mode = TargetTablePrepMode::DoNothing;
    run(&t).await.unwrap();
    let n: i64 = scalar(&p.target, "inv", "SELECT count(*) FROM warehouses").await;
    assert_eq!(n, 5);

    // truncate: the definition stays (with its extra column), the rows are the source's.
    p.target
        .execute("inv", "DROP SCHEMA pgferry CASCADE; DROP TABLE products, stock_levels, customers, orders, order_lines CASCADE; DROP VIEW IF EXISTS low_stock; DROP TYPE order_status;")
        .await
        .unwrap();
    t.name = "truncate".into();
    t.full_load.target_table_prep_mode = TargetTablePrepMode::Truncate;
    let summary = run(&t).await.unwrap();
    let n: i64 = scalar(
        &p.target,
        "inv",
        "SELECT count(*) FROM warehouses WHERE extra = 'kept'",
    )
    .await;
    assert_eq!(
        n, 4,
        "truncate keeps the existing definition and its defaults"
    );
    assert!(summary.rows > 0);

    // drop_and_create: the table is replaced by the source's definition.
    p.target
        .execute("inv", "DROP SCHEMA pgferry CASCADE; DROP TABLE products, stock_levels, customers, orders, order_lines CASCADE; DROP VIEW IF EXISTS low_stock; DROP TYPE order_status;")
        .await
        .unwrap();
    t.name = "drop".into();
    t.full_load.target_table_prep_mode = TargetTablePrepMode::DropAndCreate;
    run(&t).await.unwrap();
    let has_extra: bool = scalar(
        &p.target,
        "inv",
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                         WHERE table_name = 'warehouses' AND column_name = 'extra')",
    )
    .await;
    assert!(!has_extra);
    assert_identical(&p, "inv").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_objects_arrive_whole_with_their_oids() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE TABLE docs (id int PRIMARY KEY, body oid);
             INSERT INTO docs VALUES
                 (1, lo_from_bytea(0, 'small')),
                 (2, lo_from_bytea(0, '')),
                 (3, lo_from_bytea(0, (SELECT string_agg(decode(md5(g::text), 'hex'), ''::bytea)
                                       FROM generate_series(1, 200000) g))),
                 (4, NULL);",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    let t = task(&p, "app");
    run(&t).await.expect("full load with large objects");
    let objects = "SELECT d.id, d.body, md5(lo_get(d.body)), length(lo_get(d.body))
                   FROM docs d ORDER BY id";
    let read = |c: &Cluster| {
        let c = c.connector();
        async move {
            c.connect("app")
                .await
                .unwrap()
                .query(objects, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{:?} {:?} {:?} {:?}",
                        r.get::<_, i32>(0),
                        r.get::<_, Option<u32>>(1),
                        r.get::<_, Option<String>>(2),
                        r.get::<_, Option<i32>>(3)
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let source = read(&p.source).await;
    assert_eq!(source, read(&p.target).await);
    assert!(source[2].contains("3200000"), "{source:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_is_told_which_pgferry_holds_the_task_and_what_to_do() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute("app", "CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    let t = cdc::cdc_task(&p.source, &p.target, "app");
    let first = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    let e = run(&t).await.unwrap_err();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        e.to_string().contains(&format!(
            "pgferry pid {} on {}",
            std::process::id(),
            host.trim()
        )),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("pgferry stop"), "{:?}", e.hint());
    let e = pgferry_engine::cleanup(&t).await.unwrap_err();
    let hint = e.hint().unwrap();
    assert!(
        hint.contains("stop it first") && !hint.contains("twice"),
        "{hint}"
    );
    cdc::stop(&p.target, "app", &t.name, first).await;
}
