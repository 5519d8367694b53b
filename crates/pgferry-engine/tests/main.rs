//! Integration tests of the engine against real, throwaway PostgreSQL clusters. Each test
//! starts its own source and target, so tests run in parallel without sharing anything.

mod cdc;
mod faults;
mod mapping;
mod split;
mod versions;

use std::sync::Arc;

use pgferry_config::{
    MigrationType, PasswordSource, Selection, TableRule, TargetTablePrepMode, Task,
};
use pgferry_engine::validate::Outcome;
use pgferry_engine::{EngineError, RunProgress};
use pgferry_pg::catalog::object_counts;
use pgferry_pg::{PgClient, PgError, Side};
use pgferry_testkit::compare::compare_databases;
use pgferry_testkit::{Cluster, ClusterOptions, StopMode, datagen, workload};

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

    // sslmode=require against a server without TLS: the hint is about TLS being off, not
    // about certificates.
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/inv?sslmode=require",
        target.port()
    );
    let t = Task::new(MigrationType::FullLoad, &source.url("inv"), &url);
    let e = run(&t).await.unwrap_err();
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains("offers no TLS") && !hint.contains("verify-full"),
        "{e}: {hint}"
    );
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

/// Loads `setup` on a fresh source, runs `full-load-and-cdc` (with `tweak` applied to the
/// task), waits for streaming, runs each of `changes` on the source, waits until the
/// target caught up, stops, and returns the pair and the run's summary.
async fn cdc_roundtrip(
    setup: &str,
    changes: &[&str],
    tweak: impl FnOnce(&mut Task),
) -> (Pair, pgferry_engine::RunSummary) {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source.execute("app", setup).await.unwrap();
    p.target.create_database("app").await.unwrap();
    let mut t = cdc::cdc_task(&p.source, &p.target, "app");
    tweak(&mut t);
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    for sql in changes {
        p.source.execute("app", sql).await.unwrap();
    }
    let slot = pgferry_engine::cdc::source::default_name(&t.name);
    cdc::wait_caught_up(&p.source, "app", &slot).await;
    let summary = cdc::stop(&p.target, "app", &t.name, run).await;
    (p, summary)
}

async fn cdc_state<T: for<'a> tokio_postgres::types::FromSql<'a>>(p: &Pair, column: &str) -> T {
    scalar(
        &p.target,
        "app",
        &format!("SELECT {column} FROM pgferry.cdc_state WHERE task = 'default'"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_never_overwrites_unchanged_toast_values() {
    let setup = "CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
                 ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
                 INSERT INTO docs SELECT g, repeat(md5(g::text), 400), 0 FROM generate_series(1, 50) g;
                 CREATE TABLE full_docs (body text, n int);
                 ALTER TABLE full_docs REPLICA IDENTITY FULL;
                 INSERT INTO full_docs SELECT repeat(md5(g::text), 400), g FROM generate_series(1, 5) g;";
    let (p, summary) = cdc_roundtrip(
        setup,
        &[
            // Only `n` changes: `body` is sent as unchanged TOAST and must stay as it is.
            "UPDATE docs SET n = n + 1 WHERE id <= 40",
            "UPDATE docs SET n = n + 1 WHERE id <= 10",
            "UPDATE docs SET body = 'short now' WHERE id = 50",
            "UPDATE full_docs SET n = n * 10 WHERE n = 3",
        ],
        |_| {},
    )
    .await;
    let exceptions: i64 = cdc_state(&p, "exceptions").await;
    assert_eq!(exceptions, 0);
    assert_identical(&p, "app").await;
    let long: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM docs WHERE length(body) = 12800",
    )
    .await;
    assert_eq!(long, 49);
    assert!(summary.cdc.unwrap().totals.updates >= 51);
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_applies_primary_key_changes_including_swaps_within_a_transaction() {
    let setup = "CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
                 INSERT INTO pairs SELECT g, 'k' || g, g FROM generate_series(1, 100) g;";
    let (p, _) = cdc_roundtrip(
        setup,
        &[
            "UPDATE pairs SET a = a + 1000 WHERE a <= 20",
            "UPDATE pairs SET b = b || '-renamed', v = -v WHERE a BETWEEN 30 AND 40",
            // A swap through a temporary key: a bulk apply cannot reproduce it, the careful
            // path must.
            "BEGIN; UPDATE pairs SET a = -1 WHERE a = 50; UPDATE pairs SET a = 50 WHERE a = 51;
             UPDATE pairs SET a = 51 WHERE a = -1; COMMIT;",
            "DELETE FROM pairs WHERE a = 1005; INSERT INTO pairs VALUES (1005, 'k5', 555);",
        ],
        |_| {},
    )
    .await;
    assert_identical(&p, "app").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_applies_truncate_of_several_tables_with_restart_identity() {
    let setup = "CREATE TABLE a (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, x text);
                 CREATE TABLE b (id serial PRIMARY KEY, y text);
                 CREATE TABLE c (id int PRIMARY KEY);
                 INSERT INTO a (x) SELECT 'x' FROM generate_series(1, 30);
                 INSERT INTO b (y) SELECT 'y' FROM generate_series(1, 30);
                 INSERT INTO c SELECT generate_series(1, 30);";
    let (p, summary) = cdc_roundtrip(
        setup,
        &[
            "INSERT INTO a (x) VALUES ('before');",
            "TRUNCATE a, b RESTART IDENTITY",
            "INSERT INTO a (x) VALUES ('after'); INSERT INTO b (y) VALUES ('after');",
            "TRUNCATE c",
        ],
        |_| {},
    )
    .await;
    assert_identical(&p, "app").await;
    assert_eq!(summary.cdc.unwrap().totals.truncates, 3);
    // The identity restarted on the target too.
    let next: i32 = scalar(
        &p.target,
        "app",
        "INSERT INTO a (x) VALUES ('t') RETURNING id",
    )
    .await;
    assert_eq!(next, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_follows_partitioned_tables_through_their_root() {
    let setup = "CREATE TABLE m (id int, day date, v numeric, PRIMARY KEY (id, day))
                     PARTITION BY RANGE (day);
                 CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
                 CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
                 CREATE TABLE m_rest PARTITION OF m DEFAULT;
                 INSERT INTO m SELECT g, date '2024-06-01' + g, g FROM generate_series(1, 300) g;";
    let (p, _) = cdc_roundtrip(
        setup,
        &[
            "INSERT INTO m SELECT g, date '2025-03-01', g FROM generate_series(1000, 1100) g",
            // Moves rows between partitions.
            "UPDATE m SET day = day + 400 WHERE id <= 50",
            "DELETE FROM m WHERE id BETWEEN 100 AND 120",
            "UPDATE m SET v = v * 2 WHERE id > 200",
        ],
        |_| {},
    )
    .await;
    assert_identical(&p, "app").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_changes_exactly_one_of_identical_rows_in_a_table_without_a_key() {
    let setup = "CREATE TABLE bag (k int, v text, j json);
                 INSERT INTO bag SELECT g % 3, 'same', '{\"a\": 1}' FROM generate_series(1, 30) g;";
    let (p, _) = cdc_roundtrip(
        setup,
        &[
            "DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE k = 1 LIMIT 1)",
            "UPDATE bag SET v = 'changed' WHERE ctid = (SELECT ctid FROM bag WHERE k = 2 LIMIT 1)",
            "INSERT INTO bag VALUES (1, 'same', '{\"a\": 1}'), (1, 'same', '{\"a\": 1}')",
            "DELETE FROM bag WHERE ctid IN (SELECT ctid FROM bag WHERE k = 0 LIMIT 3)",
        ],
        |t| t.cdc.no_key_tables = pgferry_config::NoKeyTables::ReplicaIdentityFull,
    )
    .await;
    assert_identical(&p, "app").await;
    let ones: i64 = scalar(&p.target, "app", "SELECT count(*) FROM bag WHERE k = 1").await;
    assert_eq!(ones, 11, "10 - 1 + 2 identical rows");
    // json has no equality operator: rows are matched by text, from binary tuple data.
    assert!(cdc_state::<bool>(&p, "binary_mode").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_leaves_generated_columns_to_the_target_and_keeps_identity_values() {
    // Stored generated columns are computed by the target; GENERATED ALWAYS identity
    // columns (keys or not) take the source's values, in inserts and in updates.
    let setup = "CREATE TABLE lines (id int PRIMARY KEY, qty int, price numeric,
                                     total numeric GENERATED ALWAYS AS (qty * price) STORED);
                 INSERT INTO lines SELECT g, g, 1.5 FROM generate_series(1, 20) g;
                 CREATE TABLE tickets (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                       serial bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
                                       body text);
                 ALTER TABLE tickets ALTER body SET STORAGE EXTERNAL;
                 INSERT INTO tickets (body) SELECT repeat('x', 5000) FROM generate_series(1, 10);
                 CREATE TABLE keyless (n int GENERATED ALWAYS AS IDENTITY, v text);
                 INSERT INTO keyless (v) VALUES ('a'), ('b');";
    let (p, _) = cdc_roundtrip(
        setup,
        &[
            "INSERT INTO lines (id, qty, price) VALUES (100, 3, 2.25)",
            "UPDATE lines SET qty = qty + 1 WHERE id % 2 = 0",
            "INSERT INTO tickets (body) VALUES ('new'), ('newer')",
            // Only the identity columns and an unchanged TOAST value: nothing to set.
            "UPDATE tickets SET body = body WHERE id = 3",
            "UPDATE tickets SET body = 'short' WHERE id IN (1, 11)",
            "DELETE FROM tickets WHERE id = 2",
            "INSERT INTO keyless (v) VALUES ('c'); UPDATE keyless SET v = 'B' WHERE v = 'b'",
        ],
        |t| t.cdc.no_key_tables = pgferry_config::NoKeyTables::ReplicaIdentityFull,
    )
    .await;
    assert_identical(&p, "app").await;
    let exceptions: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM pgferry.apply_exceptions",
    )
    .await;
    assert_eq!(exceptions, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_carries_awkward_types_and_identifiers_in_text_and_binary_form() {
    let changes: Vec<&str> = cdc::AWKWARD_WRITES
        .iter()
        .copied()
        .chain([
        "UPDATE \"Weird \"\"Schema\"\"\".\"order\" SET \"user\" = \"user\" || '!' WHERE \"group\" = 3",
        "DELETE FROM \"Weird \"\"Schema\"\"\".\"has space \"\"and quotes\"\"\" WHERE \"Order ID\" < 20",
        "INSERT INTO measurements VALUES (99999, '2025-05-05', 1.5)",
        "UPDATE big SET payload = 'changed', amount = -amount WHERE id % 100 = 0",
        ])
        .collect();
    // The awkward database has types binary tuple data cannot carry: text form.
    let (p, _) = cdc_roundtrip(datagen::AWKWARD_SQL, &changes, |t| {
        t.cdc.no_key_tables = pgferry_config::NoKeyTables::ReplicaIdentityFull;
        t.full_load.chunk_size = 4 * 1024 * 1024;
    })
    .await;
    assert!(!cdc_state::<bool>(&p, "binary_mode").await);
    assert_identical(&p, "app").await;

    // The inventory database travels in binary form.
    let p = pair();
    datagen::create_inventory(&p.source, "app", 1)
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    let t = cdc::cdc_task(&p.source, &p.target, "app");
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", "default", "cdc").await;
    assert!(cdc_state::<bool>(&p, "binary_mode").await);
    p.source
        .execute(
            "app",
            "UPDATE products SET attributes = attributes || '{\"b\": true}', tags = '{a,\"b c\"}',
                 price = 0.01, updated_at = 'infinity' WHERE id < 100;
             INSERT INTO orders (customer_id, status, placed_at) VALUES (1, 'cancelled', '-infinity');
             DELETE FROM stock_levels WHERE quantity < 50;",
        )
        .await
        .unwrap();
    cdc::wait_caught_up(&p.source, "app", "pgferry_default").await;
    cdc::stop(&p.target, "app", "default", run).await;
    assert_identical(&p, "app").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_without_a_key_are_refused_by_default_before_anything_is_created() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (v text);",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    let t = cdc::cdc_task(&p.source, &p.target, "app");
    let e = pgferry_engine::run(&t, Arc::new(RunProgress::default()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("public.loose"), "{e}");
    assert!(
        e.hint()
            .unwrap()
            .contains("ALTER TABLE \"public\".\"loose\" REPLICA IDENTITY FULL")
    );
    assert!(e.hint().unwrap().contains("no_key_tables"));
    let slots: i64 = scalar(
        &p.source,
        "app",
        "SELECT count(*) FROM pg_replication_slots",
    )
    .await;
    let publications: i64 = scalar(&p.source, "app", "SELECT count(*) FROM pg_publication").await;
    assert_eq!(
        (slots, publications),
        (0, 0),
        "nothing was created on the source"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_identity_full_is_set_for_keyless_tables_and_restored_by_cleanup() {
    let setup = "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (v text);
                 INSERT INTO loose VALUES ('a'), ('b');";
    let (p, summary) = cdc_roundtrip(
        setup,
        &[
            "UPDATE loose SET v = 'c' WHERE v = 'a'",
            "DELETE FROM loose WHERE v = 'b'",
        ],
        |t| t.cdc.no_key_tables = pgferry_config::NoKeyTables::ReplicaIdentityFull,
    )
    .await;
    assert_identical(&p, "app").await;
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("REPLICA IDENTITY FULL"))
    );
    let identity: String = scalar(
        &p.source,
        "app",
        "SELECT relreplident::text FROM pg_class WHERE relname = 'loose'",
    )
    .await;
    assert_eq!(identity, "f");
    let mut t = cdc::cdc_task(&p.source, &p.target, "app");
    t.cdc.no_key_tables = pgferry_config::NoKeyTables::ReplicaIdentityFull;
    let cleaned = pgferry_engine::cdc::cleanup(&t).await.unwrap();
    assert_eq!(cleaned.slot_dropped.as_deref(), Some("pgferry_default"));
    assert_eq!(
        cleaned.publication_dropped.as_deref(),
        Some("pgferry_default")
    );
    assert_eq!(cleaned.identities_restored, ["public.loose"]);
    let identity: String = scalar(
        &p.source,
        "app",
        "SELECT relreplident::text FROM pg_class WHERE relname = 'loose'",
    )
    .await;
    assert_eq!(identity, "d");
    let slots: i64 = scalar(
        &p.source,
        "app",
        "SELECT count(*) FROM pg_replication_slots",
    )
    .await;
    assert_eq!(slots, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn excluded_keyless_tables_are_never_created_copied_or_streamed() {
    let setup = "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (v text);
                 INSERT INTO loose VALUES ('a');";
    let (p, summary) = cdc_roundtrip(
        setup,
        &["INSERT INTO keyed VALUES (1); INSERT INTO loose VALUES ('b');"],
        |t| t.cdc.no_key_tables = pgferry_config::NoKeyTables::Exclude,
    )
    .await;
    assert!(summary.warnings.iter().any(|w| w.contains("public.loose")));
    let exists: bool = scalar(
        &p.target,
        "app",
        "SELECT to_regclass('public.loose') IS NOT NULL",
    )
    .await;
    assert!(!exists);
    let keyed: i64 = scalar(&p.target, "app", "SELECT count(*) FROM keyed").await;
    assert_eq!(keyed, 1);
    // Updates on the source still work: the table is not in the publication.
    p.source
        .execute("app", "UPDATE loose SET v = 'z'")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn retained_wal_is_reported_and_warned_about_past_the_threshold() {
    let (p, _) = cdc_roundtrip(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
        &["INSERT INTO t SELECT generate_series(2, 1000)"],
        |t| t.cdc.wal_retention_warning = 1,
    )
    .await;
    let retained: Option<i64> = cdc_state(&p, "wal_retained_bytes").await;
    assert!(retained.is_some_and(|b| b > 0), "{retained:?}");
    let warned: bool = scalar(
        &p.target,
        "app",
        "SELECT EXISTS (SELECT 1 FROM pgferry.event WHERE message LIKE '%max_slot_wal_keep_size%')",
    )
    .await;
    assert!(warned);
    let status =
        pgferry_engine::status::status(&pg_client(&p.target, "app", Side::Target).await, "default")
            .await
            .unwrap();
    assert!(status.cdc.unwrap().wal_retained_bytes.is_some());
}

/// Starts `full-load-and-cdc` on a fresh `app` database holding `setup`, with `tweak`
/// applied to the task, and returns once it streams.
async fn streaming(
    setup: &str,
    tweak: impl FnOnce(&mut Task),
) -> (
    Pair,
    Task,
    tokio::task::JoinHandle<Result<pgferry_engine::RunSummary, EngineError>>,
) {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source.execute("app", setup).await.unwrap();
    p.target.create_database("app").await.unwrap();
    let mut t = cdc::cdc_task(&p.source, &p.target, "app");
    tweak(&mut t);
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    (p, t, run)
}

/// `(id, text)` rows of a query on the `app` database.
async fn id_and_text(c: &Cluster, sql: &str) -> Vec<(i32, String)> {
    c.connect("app")
        .await
        .unwrap()
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

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
    assert_eq!(summary.cdc.unwrap().totals.exceptions, 3);
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
        pgferry_engine::status::status(&pg_client(&p.target, "app", Side::Target).await, "default")
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
            table, operation, ..
        }) => {
            assert_eq!((table.as_str(), operation.as_str()), ("public.b", "update"));
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

/// The mixed workload on `app`, in the background, until the returned flag is set.
fn start_workload(
    source: &Cluster,
    seed: u64,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    Arc<workload::WorkloadCounts>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = Arc::new(workload::WorkloadCounts::default());
    let (s, c) = (stop.clone(), counts.clone());
    let connector = source.connector();
    let handle = tokio::spawn(async move {
        workload::mixed(connector, "app", seed, s, c).await.unwrap();
    });
    (stop, counts, handle)
}

/// Stops `cluster` as a crash would (no shutdown checkpoint), then starts it again.
fn crash_and_restart(cluster: &Cluster) {
    tokio::task::block_in_place(|| {
        cluster.stop(StopMode::Immediate).unwrap();
        cluster.restart().unwrap();
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_rides_out_crashes_of_the_source_and_the_target_under_writes() {
    let (p, t, run) = streaming(workload::MIXED_SCHEMA, |t| {
        t.cdc.no_key_tables = pgferry_config::NoKeyTables::ReplicaIdentityFull;
    })
    .await;
    let (stop, counts, writer) = start_workload(&p.source, 7);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // A source crash loses the slot's unsaved progress: transactions the target already
    // has are streamed again and must be skipped, not applied twice.
    crash_and_restart(&p.source);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // A target crash loses the open apply transaction: it is streamed again.
    crash_and_restart(&p.target);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        counts
            .transactions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 100,
        "the workload wrote too little to prove anything: {counts:?}"
    );
    cdc::wait_caught_up(&p.source, "app", "pgferry_default").await;
    cdc::stop(&p.target, "app", &t.name, run).await;
    assert_identical(&p, "app").await;
    let retries: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM pgferry.event WHERE message LIKE '%recoverable error%'",
    )
    .await;
    assert!(retries >= 2, "each crash is logged as a retry ({retries})");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_slot_moves_past_other_databases_wal_and_lag_is_still_measured() {
    let (p, t, run) = streaming("CREATE TABLE quiet (id int PRIMARY KEY);", |_| {}).await;
    // Another database on the source writes; ours does not.
    p.source.create_database("busy").await.unwrap();
    p.source
        .execute(
            "busy",
            "CREATE TABLE noise AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g",
        )
        .await
        .unwrap();
    let written: String =
        scalar(&p.source, "app", "SELECT pg_current_wal_insert_lsn()::text").await;
    // Acknowledged though none of it is ours: otherwise the slot would hold all of it.
    cdc::wait_caught_up(&p.source, "app", "pgferry_default").await;
    let moved: bool = scalar(
        &p.source,
        "app",
        &format!(
            "SELECT confirmed_flush_lsn >= '{written}'::pg_lsn FROM pg_replication_slots
             WHERE slot_name = 'pgferry_default'"
        ),
    )
    .await;
    assert!(moved);
    // Lag is measured from the heartbeats, though no row changed.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let status =
        pgferry_engine::status::status(&pg_client(&p.target, "app", Side::Target).await, "default")
            .await
            .unwrap();
    let cdc = status.cdc.unwrap();
    assert!(
        cdc.source_latency_ms.is_some_and(|ms| ms < 5_000),
        "{:?}",
        cdc.source_latency_ms
    );
    assert_eq!(cdc.inserts + cdc.updates + cdc.deletes, 0);
    cdc::stop(&p.target, "app", &t.name, run).await;
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
    let e = pgferry_engine::cdc::cleanup(&t).await.unwrap_err();
    let hint = e.hint().unwrap();
    assert!(
        hint.contains("stop it first") && !hint.contains("twice"),
        "{hint}"
    );
    cdc::stop(&p.target, "app", &t.name, first).await;
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
async fn array_columns_apply_in_bulk_in_binary_mode_without_a_failed_statement() {
    let setup = "CREATE TABLE parts (id int PRIMARY KEY, dims double precision[],
                                     tags text[], grid integer[], note text);
                 INSERT INTO parts SELECT g, ARRAY[g, g * 0.5, 1e-3], ARRAY['a', NULL, 'b,c'],
                                          ARRAY[[g, 1], [2, 3]], 'n' || g
                 FROM generate_series(1, 50) g;";
    let (p, _) = cdc_roundtrip(
        setup,
        &[
            "INSERT INTO parts SELECT g, ARRAY[g::float8], '{}', ARRAY[[1,2],[3,4]], NULL
             FROM generate_series(51, 700) g",
            "UPDATE parts SET dims = dims || 9.75::float8, tags = tags || 'x'::text
             WHERE id % 3 = 0",
            "UPDATE parts SET grid = NULL, note = 'changed' WHERE id % 7 = 0",
            "DELETE FROM parts WHERE id % 11 = 0",
        ],
        |_| {},
    )
    .await;
    assert!(cdc_state::<bool>(&p, "binary_mode").await);
    assert_identical(&p, "app").await;
    let log = p.target.log();
    assert!(
        !log.contains("but expression is of type") && !log.contains("pgferry_sub"),
        "a bulk statement failed and the batch fell back to change by change:\n{log}"
    );
}
