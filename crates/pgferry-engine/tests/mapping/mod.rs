//! Transformation, filter and selection rules end to end: a full load and a change stream
//! against real clusters, with the target checked row for row against what the rules say
//! the source's rows become. Also the seed's DMS files, used as they are.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgferry_config::Task;
use pgferry_engine::Outcome;
use pgferry_testkit::{Cluster, datagen, workload};

use crate::cdc::{spawn, stop, wait_caught_up, wait_for_phase};
use crate::{assert_identical, pair, scalar};

fn seed_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pgferry-config/tests/data")
        .join(name)
}

/// A task file in `dir` that points at DMS files, between `db` on both clusters.
fn dms_task(source: &Cluster, target: &Cluster, db: &str, dir: &Path, lines: &str) -> Task {
    let text = format!(
        "name = \"dms\"\nmigration_type = \"full-load-and-cdc\"\n{lines}\n\
         [source]\nurl = {:?}\n[target]\nurl = {:?}\n\
         [cdc]\nheartbeat_interval_s = 1\n[error_behavior]\nrecoverable_error_interval = 1\n\
         recoverable_error_throttling_max = 2\n",
        source.url(db),
        target.url(db)
    );
    let path = dir.join("task.toml");
    std::fs::write(&path, &text).unwrap();
    Task::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Each row of a query as one text, sorted, for comparing two servers row for row.
async fn rows(c: &Cluster, db: &str, sql: &str) -> Vec<String> {
    let client = c.connect(db).await.unwrap();
    let mut out: Vec<String> = client
        .query(&format!("SELECT x::text FROM ({sql}) AS x"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    out.sort();
    out
}

const SOURCE_SCHEMA: &str = r#"
CREATE SCHEMA sales;
CREATE TABLE sales."Customers" (
    "ID" integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "First" text NOT NULL,
    "Last" text NOT NULL,
    secret text NOT NULL,
    score integer,
    note text
);
CREATE INDEX customers_last_idx ON sales."Customers" ("Last");
CREATE INDEX customers_secret_idx ON sales."Customers" (secret);
CREATE VIEW sales.customer_names AS SELECT "ID", "First" FROM sales."Customers";
CREATE TABLE sales.orders (
    id bigserial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES sales."Customers" ("ID"),
    status text,
    qty integer NOT NULL
);
CREATE INDEX orders_status_idx ON sales.orders (status);
CREATE TABLE sales.audit_log (id serial PRIMARY KEY, what text);
INSERT INTO sales."Customers" ("First", "Last", secret, score, note)
SELECT 'first ' || g, 'last ' || g, 'pw' || g, g * 10, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END
FROM generate_series(1, 300) g;
INSERT INTO sales.orders (customer_id, status, qty)
SELECT 1 + g % 300, (ARRAY['shipped', 'paid', NULL, 'cancelled'])[1 + g % 4], g % 15
FROM generate_series(1, 2000) g;
INSERT INTO sales.audit_log (what) SELECT 'event ' || g FROM generate_series(1, 50) g;
"#;

const MAPPINGS: &str = r#"{"rules": [
  {"rule-type": "selection", "rule-id": "1", "rule-name": "sales", "rule-action": "include",
   "object-locator": {"schema-name": "sales", "table-name": "%"}},
  {"rule-type": "selection", "rule-id": "2", "rule-name": "no audit", "rule-action": "exclude",
   "object-locator": {"schema-name": "sales", "table-name": "audit[_]%"}},
  {"rule-type": "selection", "rule-id": "3", "rule-name": "some orders", "rule-action": "include",
   "object-locator": {"schema-name": "sales", "table-name": "orders"},
   "filters": [
     {"filter-type": "source", "column-name": "status",
      "filter-conditions": [{"filter-operator": "eq", "value": "shipped"},
                            {"filter-operator": "null"}]},
     {"filter-type": "source", "column-name": "qty",
      "filter-conditions": [{"filter-operator": "between", "start-value": "1", "end-value": "10"}]}]},
  {"rule-type": "transformation", "rule-id": "10", "rule-name": "schema", "rule-action": "rename",
   "rule-target": "schema", "object-locator": {"schema-name": "sales"}, "value": "crm"},
  {"rule-type": "transformation", "rule-id": "11", "rule-name": "table", "rule-action": "rename",
   "rule-target": "table", "object-locator": {"schema-name": "sales", "table-name": "Customers"},
   "value": "clients"},
  {"rule-type": "transformation", "rule-id": "12", "rule-name": "lower", "rule-action": "convert-lowercase",
   "rule-target": "column", "object-locator": {"schema-name": "sales", "table-name": "%", "column-name": "%"}},
  {"rule-type": "transformation", "rule-id": "13", "rule-name": "status", "rule-action": "rename",
   "rule-target": "column", "object-locator": {"schema-name": "sales", "table-name": "orders", "column-name": "status"},
   "value": "state"},
  {"rule-type": "transformation", "rule-id": "14", "rule-name": "secret", "rule-action": "remove-column",
   "rule-target": "column", "object-locator": {"schema-name": "sales", "table-name": "Customers", "column-name": "secret"}},
  {"rule-type": "transformation", "rule-id": "15", "rule-name": "full", "rule-action": "add-column",
   "rule-target": "column", "object-locator": {"schema-name": "sales", "table-name": "Customers"},
   "value": "full_name", "expression": "$First || ' ' || $Last",
   "data-type": {"type": "string", "length": 120}},
  {"rule-type": "transformation", "rule-id": "16", "rule-name": "wide", "rule-action": "change-data-type",
   "rule-target": "column", "object-locator": {"schema-name": "sales", "table-name": "Customers", "column-name": "score"},
   "data-type": {"type": "int8"}},
  {"rule-type": "table-settings", "rule-id": "20", "rule-name": "split",
   "object-locator": {"schema-name": "sales", "table-name": "orders"},
   "parallel-load": {"type": "ranges", "columns": ["id"], "boundaries": [["500"], ["1000"]]}}
]}"#;

/// What the rules make of the source's customers and orders, read on the source.
const EXPECTED_CLIENTS: &str = r#"SELECT "ID", "First", "Last", score::bigint, note, "First" || ' ' || "Last"
    FROM sales."Customers""#;
const TARGET_CLIENTS: &str = "SELECT id, first, last, score, note, full_name FROM crm.clients";
const EXPECTED_ORDERS: &str = "SELECT id, customer_id, status, qty FROM sales.orders
    WHERE (status = 'shipped' OR status IS NULL) AND qty BETWEEN 1 AND 10";
const TARGET_ORDERS: &str = "SELECT id, customer_id, state, qty FROM crm.orders";

#[tokio::test(flavor = "multi_thread")]
async fn every_rule_kind_holds_through_the_load_and_the_stream() {
    let p = pair();
    p.source.create_database("shop").await.unwrap();
    p.target.create_database("shop").await.unwrap();
    p.source.execute("shop", SOURCE_SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mappings.json"), MAPPINGS).unwrap();
    let mut task = dms_task(
        &p.source,
        &p.target,
        "shop",
        dir.path(),
        "table_mappings = \"mappings.json\"",
    );
    task.full_load.chunk_size = 1024 * 1024;
    let run = spawn(&task);
    wait_for_phase(&p.target, "shop", "dms", "cdc").await;

    // The load: renamed schema, table and columns; the removed column gone; the added one
    // computed; the new type; only the filtered orders.
    assert_eq!(
        rows(&p.source, "shop", EXPECTED_CLIENTS).await,
        rows(&p.target, "shop", TARGET_CLIENTS).await
    );
    assert_eq!(
        rows(&p.source, "shop", EXPECTED_ORDERS).await,
        rows(&p.target, "shop", TARGET_ORDERS).await
    );
    let t = &p.target;
    let exists = |sql: &'static str| async move { scalar::<bool>(t, "shop", sql).await };
    assert!(!exists("SELECT to_regclass('sales.\"Customers\"') IS NOT NULL").await);
    assert!(
        !exists("SELECT EXISTS (SELECT FROM pg_class WHERE relname = 'audit_log')").await,
        "an excluded table is never created"
    );
    assert!(
        !exists("SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'crm.clients'::regclass AND attname = 'secret')").await
    );
    assert_eq!(
        scalar::<String>(t, "shop", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'crm.clients'::regclass AND attname = 'score'").await,
        "bigint"
    );
    // Post-data objects follow the renames; the index on the removed column is skipped.
    assert!(exists("SELECT to_regclass('crm.customers_last_idx') IS NOT NULL").await);
    assert!(exists("SELECT to_regclass('crm.orders_status_idx') IS NOT NULL").await);
    assert!(!exists("SELECT to_regclass('crm.customers_secret_idx') IS NOT NULL").await);
    assert_eq!(
        scalar::<String>(t, "shop", "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'crm.orders'::regclass").await,
        "FOREIGN KEY (customer_id) REFERENCES crm.clients(id)"
    );
    assert!(
        exists("SELECT pg_get_viewdef('sales.customer_names'::regclass) LIKE '%crm.clients%'")
            .await,
        "the view follows the table it reads"
    );
    assert!(
        scalar::<i64>(t, "shop", "SELECT count(*) FROM pgferry.chunk WHERE task = 'dms' AND table_id = (SELECT table_id FROM pgferry.table_state WHERE source_table = 'orders')").await >= 2,
        "parallel-load ranges split the table"
    );
    assert!(
        exists("SELECT last_value >= 300 FROM crm.\"Customers_ID_seq\"").await,
        "the identity's sequence moved with its table and took the source's value"
    );

    // The stream: the same rules on every change, including rows moving in and out of the
    // filter, and nothing from the excluded table.
    p.source
        .execute(
            "shop",
            "INSERT INTO sales.\"Customers\" (\"First\", \"Last\", secret, score) VALUES ('Ada', 'Lovelace', 'x', 7);
             UPDATE sales.\"Customers\" SET \"Last\" = 'Renamed', score = 2147483647 WHERE \"ID\" = 5;
             DELETE FROM sales.orders WHERE customer_id = 9;
             DELETE FROM sales.\"Customers\" WHERE \"ID\" = 9;
             INSERT INTO sales.orders (customer_id, status, qty) VALUES (1, 'shipped', 3), (1, 'paid', 3), (2, NULL, 11);
             UPDATE sales.orders SET status = 'shipped' WHERE status = 'paid' AND qty = 4;
             UPDATE sales.orders SET status = 'cancelled' WHERE status = 'shipped' AND qty = 5;
             UPDATE sales.orders SET qty = 2 WHERE status IS NULL AND qty = 12;
             INSERT INTO sales.audit_log (what) VALUES ('not streamed');",
        )
        .await
        .unwrap();
    wait_caught_up(&p.source, "shop", "pgferry_dms").await;
    assert_eq!(
        rows(&p.source, "shop", EXPECTED_CLIENTS).await,
        rows(&p.target, "shop", TARGET_CLIENTS).await
    );
    assert_eq!(
        rows(&p.source, "shop", EXPECTED_ORDERS).await,
        rows(&p.target, "shop", TARGET_ORDERS).await
    );
    assert_eq!(
        scalar::<i64>(t, "shop", "SELECT count(*) FROM pgferry.apply_exceptions").await,
        0,
        "rows leaving or entering the filter are no apply errors"
    );

    // validate compares through the same rules.
    let report = pgferry_engine::validate(&task, 2).await.unwrap();
    assert!(
        report.tables.iter().all(|c| c.outcome == Outcome::Match),
        "{:#?}",
        report.tables
    );
    assert_eq!(
        report.tables.len(),
        2,
        "the excluded table is not validated"
    );
    // The schema compares with every rule applied: renamed schemas, tables and columns,
    // removed, added and retyped columns, a defined key.
    let schema = pgferry_engine::compare_schema(&task).await.unwrap();
    assert!(schema.matches(), "{:#?}", schema.differences);
    // ... and notices when a filtered row on the target does not belong there.
    p.target
        .execute(
            "shop",
            "INSERT INTO crm.orders (id, customer_id, state, qty) VALUES (999999, 1, 'paid', 3)",
        )
        .await
        .unwrap();
    let report = pgferry_engine::validate(&task, 2).await.unwrap();
    assert!(
        report
            .tables
            .iter()
            .any(|c| c.outcome == Outcome::RowCountDiffers),
        "{:#?}",
        report.tables
    );
    stop(&p.target, "shop", "dms", run).await;
}

/// The seed's Terraform task: its exact table mappings and task settings, on the demo's
/// inventory under a live workload.
#[tokio::test(flavor = "multi_thread")]
async fn the_seed_dms_task_migrates_the_inventory_as_it_is() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = dms_task(
        &p.source,
        &p.target,
        "inv",
        dir.path(),
        &format!(
            "table_mappings = {:?}\ntask_settings = {:?}",
            seed_file("seed-table-mappings.json").display().to_string(),
            seed_file("seed-task-settings.json").display().to_string()
        ),
    );
    assert_eq!(task.full_load.jobs, 8);
    let run = spawn(&task);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let client = p.source.connect("inv").await.unwrap();
    let flag = stop_flag.clone();
    let writer = tokio::spawn(async move {
        workload::inventory(
            &client,
            7,
            flag,
            Arc::new(workload::WorkloadCounts::default()),
            Duration::from_millis(5),
        )
        .await
    });
    wait_for_phase(&p.target, "inv", "dms", "cdc").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_flag.store(true, Ordering::Relaxed);
    writer.await.unwrap().unwrap();
    wait_caught_up(&p.source, "inv", "pgferry_dms").await;
    stop(&p.target, "inv", "dms", run).await;
    assert_identical(&p, "inv").await;
}

/// The three-tier guide's task: only `public`, and its settings, with the target's tables
/// created beforehand as `DO_NOTHING` expects.
#[tokio::test(flavor = "multi_thread")]
async fn the_three_tier_guide_task_moves_only_public() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.source
        .execute("inv", "CREATE SCHEMA scratch; CREATE TABLE scratch.tmp (id int PRIMARY KEY); INSERT INTO scratch.tmp VALUES (1);")
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = dms_task(
        &p.source,
        &p.target,
        "inv",
        dir.path(),
        &format!(
            "table_mappings = {:?}\ntask_settings = {:?}",
            seed_file("three-tier-table-mappings.json")
                .display()
                .to_string(),
            seed_file("three-tier-task-settings.json")
                .display()
                .to_string()
        ),
    );
    let run = spawn(&task);
    wait_for_phase(&p.target, "inv", "dms", "cdc").await;
    p.source
        .execute("inv", "UPDATE products SET price = price + 1 WHERE id < 10; INSERT INTO scratch.tmp VALUES (2);")
        .await
        .unwrap();
    wait_caught_up(&p.source, "inv", "pgferry_dms").await;
    stop(&p.target, "inv", "dms", run).await;
    assert!(
        !scalar::<bool>(
            &p.target,
            "inv",
            "SELECT to_regclass('scratch.tmp') IS NOT NULL"
        )
        .await
    );
    let report = pgferry_engine::validate(&task, 2).await.unwrap();
    assert!(report.all_match(), "{:#?}", report.tables);
    assert_eq!(
        rows(&p.source, "inv", "SELECT * FROM products").await,
        rows(&p.target, "inv", "SELECT * FROM products").await
    );
}

const PARTITIONED: &str = "
CREATE SCHEMA inventory;
CREATE TABLE inventory.orders (id bigint NOT NULL, created date NOT NULL, total numeric,
                               PRIMARY KEY (id, created)) PARTITION BY RANGE (created);
CREATE TABLE inventory.orders_2024 PARTITION OF inventory.orders
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE inventory.orders_2025 PARTITION OF inventory.orders
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE INDEX orders_total_idx ON inventory.orders (total);
CREATE TABLE inventory.order_lines (
    id serial PRIMARY KEY, order_id bigint NOT NULL, created date NOT NULL, qty int,
    FOREIGN KEY (order_id, created) REFERENCES inventory.orders (id, created));
CREATE INDEX order_lines_order_idx ON inventory.order_lines (order_id, created);
INSERT INTO inventory.orders
    SELECT g, DATE '2024-06-01' + (g % 400), g * 1.5 FROM generate_series(1, 500) g;
INSERT INTO inventory.order_lines (order_id, created, qty)
    SELECT id, created, 1 + id % 5 FROM inventory.orders;
";

/// Indexes (attached partition indexes among them) and foreign keys of the tables in
/// `schema`, by kind, and how many partition indexes hang under a partitioned one.
async fn structure(c: &Cluster, db: &str, schema: &str) -> (i64, i64, i64) {
    let client = c.connect(db).await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                     WHERE t.relnamespace = $1::text::regnamespace),
                    (SELECT count(*) FROM pg_constraint
                     WHERE contype = 'f' AND connamespace = $1::text::regnamespace),
                    (SELECT count(*) FROM pg_inherits h JOIN pg_class i ON i.oid = h.inhrelid
                     WHERE i.relkind = 'i' AND i.relnamespace = $1::text::regnamespace)",
            &[&schema],
        )
        .await
        .unwrap_or_else(|e| panic!("{schema}: {e}"));
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_carry_partitioned_tables_with_their_indexes_and_foreign_keys() {
    let p = pair();
    let cases = [
        (
            "by_schema",
            "action = \"rename\"\ntarget = \"schema\"\nschema = \"inventory\"\nvalue = \"inv\"",
            "inv",
            ["orders", "order_lines"],
        ),
        (
            "by_table",
            "action = \"rename\"\ntarget = \"table\"\nschema = \"inventory\"\ntable = \"orders\"\nvalue = \"sales\"",
            "inventory",
            ["sales", "order_lines"],
        ),
        (
            "by_prefix",
            "action = \"add-prefix\"\ntarget = \"table\"\nschema = \"inventory\"\nvalue = \"old_\"",
            "inventory",
            ["old_orders", "old_order_lines"],
        ),
    ];
    for (db, rule, schema, [orders, lines]) in cases {
        p.source.create_database(db).await.unwrap();
        p.source.execute(db, PARTITIONED).await.unwrap();
        p.target.create_database(db).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.toml");
        std::fs::write(
            &path,
            format!(
                "name = \"parts\"\nmigration_type = \"full-load\"\njobs = 2\n\
                 [source]\nurl = {:?}\n[target]\nurl = {:?}\n[[transform]]\n{rule}\n",
                p.source.url(db),
                p.target.url(db)
            ),
        )
        .unwrap();
        let task = Task::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let summary = pgferry_engine::run(&task, Arc::new(pgferry_engine::RunProgress::default()))
            .await
            .unwrap_or_else(|e| panic!("{db}: {e}"));
        assert!(!summary.already_done, "{db}");
        assert_eq!(
            structure(&p.source, db, "inventory").await,
            structure(&p.target, db, schema).await,
            "{db}: every index, partition index attachment and foreign key arrives"
        );
        assert_eq!(
            rows(
                &p.source,
                db,
                "SELECT id, created, total FROM inventory.orders"
            )
            .await,
            rows(
                &p.target,
                db,
                &format!("SELECT id, created, total FROM {schema}.{orders}")
            )
            .await,
            "{db}"
        );
        assert_eq!(
            rows(&p.source, db, "SELECT * FROM inventory.order_lines").await,
            rows(&p.target, db, &format!("SELECT * FROM {schema}.{lines}")).await,
            "{db}"
        );
    }
}
