//! Integration tests of the engine against real, throwaway PostgreSQL clusters. Each test
//! starts its own source and target, so tests run in parallel without sharing anything.

mod cdc;

use std::sync::Arc;

use pgferry_config::{
    MigrationType, PasswordSource, Selection, TableRule, TargetTablePrepMode, Task,
};
use pgferry_engine::validate::Outcome;
use pgferry_engine::{EngineError, RunProgress};
use pgferry_pg::catalog::object_counts;
use pgferry_pg::{PgClient, PgError, Side};
use pgferry_testkit::compare::compare_databases;
use pgferry_testkit::{Cluster, ClusterOptions, datagen};

struct Pair {
    source: Cluster,
    target: Cluster,
}

fn pair() -> Pair {
    Pair {
        source: Cluster::start().expect("source cluster"),
        target: Cluster::start().expect("target cluster"),
    }
}

/// A full-load task between `db` on both clusters, with small chunks so chunking happens.
fn task(p: &Pair, db: &str) -> Task {
    let mut t = Task::new(
        MigrationType::FullLoad,
        &p.source.url(db),
        &p.target.url(db),
    );
    t.full_load.chunk_size = 1024 * 1024;
    t.full_load.jobs = 3;
    t
}

async fn run(t: &Task) -> Result<pgferry_engine::RunSummary, EngineError> {
    pgferry_engine::run(t, Arc::new(RunProgress::default())).await
}

async fn assert_identical(p: &Pair, db: &str) {
    let s = p.source.connect(db).await.unwrap();
    let t = p.target.connect(db).await.unwrap();
    let diffs = compare_databases(&s, &t).await.unwrap();
    assert!(diffs.is_empty(), "source and target differ: {diffs:#?}");
}

async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    c: &Cluster,
    db: &str,
    sql: &str,
) -> T {
    c.connect(db)
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

async fn pg_client(c: &Cluster, db: &str, side: Side) -> PgClient {
    let info = pgferry_pg::ConnInfo::resolve(&c.url(db), None).unwrap();
    pgferry_pg::connect(side, &info, "test").await.unwrap()
}

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
    let report = pgferry_engine::validate::validate(&t, 2).await.unwrap();
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
        pgferry_engine::status::status(&pg_client(&p.target, "inv", Side::Target).await, "default")
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
    let report = pgferry_engine::validate::validate(&t, 2).await.unwrap();
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
    let report = pgferry_engine::validate::validate(&t, 2).await.unwrap();
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
        pgferry_engine::status::status(&pg_client(&p.target, "inv", Side::Target).await, "default")
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
async fn an_unreachable_host_is_reported_with_the_address_and_a_fix() {
    let p = pair();
    let port = p.target.port();
    p.target.stop(pgferry_testkit::StopMode::Fast).unwrap();
    let mut t = Task::new(
        MigrationType::FullLoad,
        &p.source.url("postgres"),
        &format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
    );
    t.full_load.jobs = 1;
    let e = run(&t).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("cannot reach the target database at 127.0.0.1") && text.contains("refused"),
        "{text}"
    );
    assert!(e.hint().unwrap().contains("listen_addresses"));
    assert!(matches!(e, EngineError::Pg(PgError::Unreachable { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_reported_without_revealing_it() {
    let p = pair();
    p.source
        .execute(
            "postgres",
            "CREATE ROLE app LOGIN PASSWORD 'right-password'",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong-password\n").unwrap();
    let mut t = Task::new(
        MigrationType::FullLoad,
        &p.source.url_for("app", "postgres"),
        &p.target.url("postgres"),
    );
    t.source.password = Some(PasswordSource::File(pw.clone()));
    let e = run(&t).await.unwrap_err();
    let text = format!("{e} {}", e.hint().unwrap_or_default());
    assert!(text.contains("rejected user \"app\""), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        text.contains(&pw.display().to_string()),
        "names where the password came from"
    );
    assert!(
        !text.contains("wrong-password"),
        "never prints the password: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_needs_logical_wal_level_and_the_replication_privilege() {
    let replica =
        Cluster::start_with(ClusterOptions::default().setting("wal_level", "replica")).unwrap();
    let target = Cluster::start().unwrap();
    let t = Task::new(
        MigrationType::FullLoadAndCdc,
        &replica.url("postgres"),
        &target.url("postgres"),
    );
    let e = run(&t).await.unwrap_err();
    assert!(e.to_string().contains("wal_level is replica"), "{e}");
    assert!(e.hint().unwrap().contains("wal_level = logical"));
    assert!(e.hint().unwrap().contains("rds.logical_replication"));

    let source = Cluster::start().unwrap();
    source
        .execute("postgres", "CREATE ROLE reader LOGIN PASSWORD 'pw'")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let mut t = Task::new(
        MigrationType::FullLoadAndCdc,
        &source.url_for("reader", "postgres"),
        &target.url("postgres"),
    );
    t.source.password = Some(PasswordSource::File(dir.path().join("pw")));
    let e = run(&t).await.unwrap_err();
    assert!(
        e.to_string().contains("lacks the REPLICATION privilege"),
        "{e}"
    );
    assert!(
        e.hint()
            .unwrap()
            .contains("ALTER ROLE \"reader\" WITH REPLICATION")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_privileges_on_either_side_are_named_with_the_grant_that_fixes_them() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    p.target
        .execute(
            "inv",
            "CREATE ROLE loader LOGIN PASSWORD 'pw'; REVOKE CREATE ON DATABASE inv FROM PUBLIC;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let mut t = task(&p, "inv");
    t.target = pgferry_config::Endpoint {
        url: p.target.url_for("loader", "inv"),
        password: Some(PasswordSource::File(dir.path().join("pw"))),
    };
    let e = run(&t).await.unwrap_err();
    assert!(e.to_string().contains("may not create schemas"), "{e}");
    assert_eq!(
        e.hint().unwrap(),
        "GRANT CREATE ON DATABASE \"inv\" TO \"loader\";"
    );

    // On the source: a user who cannot read a selected table.
    p.source
        .execute(
            "inv",
            "CREATE ROLE peek LOGIN PASSWORD 'pw'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO peek;
             REVOKE SELECT ON orders FROM peek;",
        )
        .await
        .unwrap();
    let mut t = task(&p, "inv");
    t.source = pgferry_config::Endpoint {
        url: p.source.url_for("peek", "inv"),
        password: Some(PasswordSource::File(dir.path().join("pw"))),
    };
    let e = run(&t).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot read 1 selected table(s): public.orders"),
        "{e}"
    );
    assert!(
        e.hint()
            .unwrap()
            .contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"peek\"")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_verify_full_connects_and_a_wrong_ca_is_refused_clearly() {
    let source = Cluster::start_with(ClusterOptions::default().with_tls()).unwrap();
    let target = Cluster::start().unwrap();
    datagen::create_inventory(&source, "inv", 1).await.unwrap();
    target.create_database("inv").await.unwrap();
    let ca = source.ca_cert().unwrap().display().to_string();
    let url = format!(
        "postgres://postgres@localhost:{}/inv?sslmode=verify-full&sslrootcert={ca}",
        source.port()
    );
    let mut t = Task::new(MigrationType::FullLoad, &url, &target.url("inv"));
    t.full_load.jobs = 2;
    // The TLS cluster rejects TCP without TLS, so a successful run used TLS throughout,
    // pg_dump's connection included.
    run(&t).await.expect("verify-full against the test CA");
    let plain = Task::new(
        MigrationType::FullLoad,
        &format!(
            "postgres://postgres@localhost:{}/inv?sslmode=disable",
            source.port()
        ),
        &target.url("inv"),
    );
    let e = run(&plain).await.unwrap_err();
    assert!(
        matches!(e, EngineError::Pg(PgError::AuthFailed { .. })),
        "plain TCP is refused: {e:?}"
    );

    // A CA that did not sign the server's certificate.
    let other = Cluster::start_with(ClusterOptions::default().with_tls()).unwrap();
    let wrong_ca = other.ca_cert().unwrap().display().to_string();
    let url = format!(
        "postgres://postgres@localhost:{}/inv?sslmode=verify-full&sslrootcert={wrong_ca}",
        source.port()
    );
    let t = Task::new(MigrationType::FullLoad, &url, &target.url("inv"));
    let e = run(&t).await.unwrap_err();
    assert!(matches!(e, EngineError::Pg(PgError::Tls { .. })), "{e:?}");
    assert!(e.to_string().contains("TLS with the source server"), "{e}");

    // verify-full without any root certificate says what to configure.
    let url = format!(
        "postgres://postgres@localhost:{}/inv?sslmode=verify-full",
        source.port()
    );
    let t = Task::new(MigrationType::FullLoad, &url, &target.url("inv"));
    let e = run(&t).await.unwrap_err();
    assert!(e.to_string().contains("sslrootcert"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_follows_inserts_updates_deletes_and_new_columns_after_the_full_load() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    let t = cdc::cdc_task(&p.source, &p.target, "inv");
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "inv", "default", "cdc").await;
    p.source
        .execute(
            "inv",
            "INSERT INTO customers (email, name) SELECT 'new' || g || '@x.org', 'New ' || g
               FROM generate_series(1, 200) g;
             UPDATE products SET price = price + 1, tags = tags || '{sale}' WHERE id % 10 = 0;
             DELETE FROM order_lines WHERE order_id % 7 = 0;
             ALTER TABLE warehouses ADD COLUMN capacity integer;
             UPDATE warehouses SET capacity = id * 1000;
             INSERT INTO warehouses VALUES (5, 'SYD', 'Sydney', 'Australia/Sydney', 12);",
        )
        .await
        .unwrap();
    cdc::wait_caught_up(&p.source, "inv", "pgferry_default").await;
    let summary = cdc::stop(&p.target, "inv", "default", run).await;
    let cdc = summary.cdc.expect("a CDC outcome");
    assert!(
        cdc.totals.inserts >= 201 && cdc.totals.updates >= 200,
        "{cdc:?}"
    );
    assert_identical(&p, "inv").await;
}
