//! Schema changes during CDC (`[cdc] ddl`): captured on the source by event triggers,
//! applied on the target in stream order, under live writes to the same tables. Each test
//! ends with source and target identical: rows, and a schema description read from each
//! catalog independently of pgferry (columns with types, defaults and nullability;
//! constraints; indexes; partitions; enum values; sequences; functions; views; triggers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgferry_config::Task;
use pgferry_testkit::{Cluster, ClusterOptions};

use super::*;

/// The schema as the catalog describes it, pgferry's own schemas left out: one sorted line
/// per fact.
async fn schema_of(c: &Cluster, db: &str) -> Vec<String> {
    const USER: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry', \
                        'pgferry_capture') AND n.nspname NOT LIKE 'pg\\_%'";
    let sql = format!(
        "SELECT format('column %s.%s %s %s not null %s default %s identity %s', n.nspname,
                       c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                       a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity)
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relkind IN ('r', 'p', 'v') AND a.attnum > 0 AND NOT a.attisdropped AND {USER}
         UNION ALL
         SELECT format('constraint %s %s %s', k.conrelid::regclass, k.conname,
                       pg_get_constraintdef(k.oid))
         FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER}
         UNION ALL
         SELECT 'index ' || pg_get_indexdef(i.indexrelid)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER}
         UNION ALL
         SELECT format('partition %s of %s %s', c.oid::regclass, h.inhparent::regclass,
                       pg_get_expr(c.relpartbound, c.oid))
         FROM pg_class c JOIN pg_inherits h ON h.inhrelid = c.oid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relispartition AND {USER}
         UNION ALL
         SELECT format('enum %s %s', t.oid::regtype,
                       (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                        FROM pg_enum e WHERE e.enumtypid = t.oid))
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE t.typtype = 'e' AND {USER}
         UNION ALL
         SELECT format('sequence %s %s %s %s %s %s %s', s.seqrelid::regclass,
                       format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
                       s.seqmax, s.seqcycle)
         FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER}
         UNION ALL
         SELECT format('function %s %s', p.oid::regprocedure, md5(p.prosrc))
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER}
         UNION ALL
         -- A view by its columns (above): its printed definition differs between majors.
         SELECT format('view %s', c.oid::regclass)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'v' AND {USER}
         UNION ALL
         SELECT 'trigger ' || pg_get_triggerdef(t.oid)
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND {USER}
         ORDER BY 1"
    );
    let client = c.connect(db).await.unwrap();
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

async fn assert_same_schema(p: &Pair, db: &str) {
    let (s, t) = (
        schema_of(&p.source, db).await,
        schema_of(&p.target, db).await,
    );
    let only_source: Vec<&String> = s.iter().filter(|l| !t.contains(l)).collect();
    let only_target: Vec<&String> = t.iter().filter(|l| !s.contains(l)).collect();
    assert!(
        only_source.is_empty() && only_target.is_empty(),
        "schemas differ:\nonly on the source: {only_source:#?}\nonly on the target: \
         {only_target:#?}"
    );
}

/// Writes to `items` until told to stop: inserts, and updates of rows across the table.
fn writer(source: &Cluster, db: &str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let url = source.url(db);
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut n = 0u64;
        while !flag.load(Ordering::Relaxed) {
            client
                .batch_execute(
                    "INSERT INTO items (v) VALUES (floor(random() * 1000)::int + 1);
                     UPDATE items SET v = v + 1 WHERE id = (SELECT max(id) - 3 FROM items);
                     UPDATE items SET v = v + 2 WHERE id = 1 + (random() * 400)::int;",
                )
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n
    });
    (stop, handle)
}

const SETUP: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'ok');
    CREATE TABLE items (id bigserial PRIMARY KEY, v int NOT NULL, note text, m mood,
                        old_col int, flag boolean DEFAULT false);
    INSERT INTO items (v, note, m, old_col)
        SELECT g, 'n' || g, 'ok', g FROM generate_series(1, 500) g;
    CREATE TABLE events (id int NOT NULL, at date NOT NULL, payload text,
                         PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE events_2025 PARTITION OF events
        FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    INSERT INTO events SELECT g, '2025-06-01', 'p' FROM generate_series(1, 100) g;
    CREATE TABLE kept_old (id int PRIMARY KEY, x text);
    INSERT INTO kept_old SELECT g, 'k' FROM generate_series(1, 20) g;
    CREATE TABLE doomed (id int PRIMARY KEY, x text);
    INSERT INTO doomed SELECT g, 'd' FROM generate_series(1, 20) g;
    CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql
        AS $$BEGIN NEW.flag := true; RETURN NEW; END$$;";

/// Every kind of DDL the issue lists, each between writes that use the shape before and
/// after it, while another session writes to `items` all along.
const CHANGES: &[&str] = &[
    // Columns.
    "ALTER TABLE items ADD COLUMN added int DEFAULT 7 NOT NULL",
    "INSERT INTO items (v, added) VALUES (1, 70)",
    "ALTER TABLE items RENAME COLUMN note TO remark",
    "UPDATE items SET remark = 'renamed' WHERE id <= 10",
    "ALTER TABLE items DROP COLUMN old_col",
    "UPDATE items SET remark = 'after drop' WHERE id BETWEEN 11 AND 20",
    // A type change on the table being written, in a transaction with writes around it.
    "BEGIN; UPDATE items SET v = 5 WHERE id = 30;
     ALTER TABLE items ALTER COLUMN v TYPE bigint;
     UPDATE items SET v = 5000000000 WHERE id = 31; COMMIT;",
    "ALTER TABLE items ALTER COLUMN added SET DEFAULT 9",
    "ALTER TABLE items ALTER COLUMN flag DROP DEFAULT",
    "ALTER TABLE items ALTER COLUMN added DROP NOT NULL",
    "INSERT INTO items (v, added) VALUES (2, NULL)",
    "UPDATE items SET added = 0 WHERE added IS NULL",
    "ALTER TABLE items ALTER COLUMN remark SET DEFAULT 'r', ALTER COLUMN added SET NOT NULL",
    // Constraints and indexes.
    "ALTER TABLE items ADD CONSTRAINT v_positive CHECK (v > 0)",
    "ALTER TABLE items ADD CONSTRAINT short_lived CHECK (added >= 0)",
    "ALTER TABLE items DROP CONSTRAINT short_lived",
    "CREATE INDEX items_v ON items (v)",
    "CREATE UNIQUE INDEX items_remark_id ON items (remark, id) WHERE remark IS NOT NULL",
    "DROP INDEX items_v",
    "ALTER INDEX items_remark_id RENAME TO items_remark",
    // Tables: renamed, dropped, created with rows and an index in one transaction, and
    // created then dropped within the stream.
    "ALTER TABLE kept_old RENAME TO kept_new",
    "INSERT INTO kept_new VALUES (100, 'after rename')",
    "DROP TABLE doomed",
    "BEGIN; CREATE TABLE fresh (id int PRIMARY KEY, body text);
     INSERT INTO fresh SELECT g, 'b' || g FROM generate_series(1, 50) g;
     CREATE INDEX fresh_body ON fresh (body); COMMIT;",
    "UPDATE fresh SET body = 'changed' WHERE id <= 5",
    "CREATE TABLE brief (id int PRIMARY KEY); INSERT INTO brief VALUES (1)",
    // Identity columns bring their own sequences, on both sides.
    "CREATE TABLE ids (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v int NOT NULL)",
    "INSERT INTO ids (v) VALUES (1), (2)",
    "ALTER TABLE ids ALTER COLUMN v ADD GENERATED ALWAYS AS IDENTITY",
    "INSERT INTO ids DEFAULT VALUES",
    "DROP TABLE brief",
    // Partitions.
    "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "INSERT INTO events VALUES (1000, '2026-03-01', 'new partition')",
    "CREATE TABLE events_2024 (id int NOT NULL, at date NOT NULL, payload text)",
    "INSERT INTO events_2024 VALUES (5, '2024-05-05', 'before attach')",
    "ALTER TABLE events ATTACH PARTITION events_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
    "INSERT INTO events VALUES (6, '2024-06-06', 'after attach')",
    "ALTER TABLE events DETACH PARTITION events_2025",
    "UPDATE events_2025 SET payload = 'detached' WHERE id <= 10",
    // Enum values: used in the next transaction.
    "ALTER TYPE mood ADD VALUE 'happy'",
    "ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'",
    "INSERT INTO items (v, m) VALUES (3, 'happy'), (4, 'meh')",
    "CREATE TYPE size AS ENUM ('s', 'm')",
    "ALTER TABLE items ADD COLUMN sz size",
    "UPDATE items SET sz = 'm' WHERE id <= 3",
    // Sequences.
    "CREATE SEQUENCE counter START 100 INCREMENT 5",
    "ALTER SEQUENCE counter INCREMENT BY 10 MAXVALUE 100000",
    // Functions, views, triggers.
    "CREATE OR REPLACE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql
         AS $$BEGIN NEW.flag := NOT coalesce(NEW.flag, false); RETURN NEW; END$$",
    "CREATE TRIGGER items_bump BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION bump()",
    "CREATE VIEW item_view AS SELECT id, v FROM items",
    "CREATE OR REPLACE VIEW item_view AS SELECT id, v, remark FROM items",
    "CREATE FUNCTION doubled(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2'",
    "DROP FUNCTION doubled(int)",
    "INSERT INTO items (v) VALUES (9)",
];

fn ddl_task(p: &Pair, db: &str) -> Task {
    let mut t = cdc::cdc_task(&p.source, &p.target, db);
    t.cdc.ddl = true;
    t.cdc.ddl_error_policy = pgferry_config::ErrorPolicy::StopTask;
    t
}

async fn run_ddl_stream(p: &Pair) {
    p.source.create_database("app").await.unwrap();
    p.source.execute("app", SETUP).await.unwrap();
    p.target.create_database("app").await.unwrap();
    let t = ddl_task(p, "app");
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    let (stop, writes) = writer(&p.source, "app");
    for sql in CHANGES {
        p.source
            .execute("app", sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writes.await.unwrap() > 0, "the writer wrote");
    cdc::finish_and_compare(p, "app", &t.name, run).await;
    assert_same_schema(p, "app").await;
    let failed: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM pgferry.ddl_log WHERE outcome <> 'applied'",
    )
    .await;
    assert_eq!(failed, 0, "every schema change was applied");
    // Cleanup leaves nothing of the capture on the source.
    let cleaned = pgferry_engine::cleanup(&t).await.unwrap();
    assert!(cleaned.capture_removed, "{cleaned:?}");
    let left: i64 = scalar(
        &p.source,
        "app",
        "SELECT (SELECT count(*) FROM pg_event_trigger)
              + (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgferry_capture')",
    )
    .await;
    assert_eq!(
        left, 0,
        "no event trigger or capture schema left on the source"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_ddl_is_applied_in_stream_order_under_writes() {
    run_ddl_stream(&pair()).await;
}

/// The seeds' source version: pgoutput carries no logical messages before 14, so the
/// capture travels as rows of a published table.
#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_ddl_is_applied_from_a_13_source() {
    let p = Pair {
        source: Cluster::start_with(ClusterOptions::default().major(13)).unwrap(),
        target: Cluster::start().unwrap(),
    };
    run_ddl_stream(&p).await;
}

/// Waits until the target has applied everything written so far, and stops the run.
async fn catch_up_and_stop(
    p: &Pair,
    t: &Task,
    run: tokio::task::JoinHandle<Result<pgferry_engine::RunSummary, EngineError>>,
) {
    cdc::wait_caught_up(&p.source, "app", &pgferry_engine::slot_name(&t.name)).await;
    cdc::stop(&p.target, "app", &t.name, run).await;
}

/// Without the privilege to create event triggers the run neither fails nor installs
/// anything: it warns once, and follows added columns from the stream as before.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_event_trigger_privilege_the_run_warns_once_and_follows_added_columns() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE ROLE mover LOGIN REPLICATION PASSWORD 'pw';
             GRANT CREATE ON DATABASE app TO mover;
             CREATE TABLE items (id int PRIMARY KEY, v int);
             INSERT INTO items SELECT g, g FROM generate_series(1, 100) g;
             ALTER TABLE items OWNER TO mover;",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let mut t = ddl_task(&p, "app");
    t.source = pgferry_config::Endpoint {
        url: p.source.url_for("mover", "app"),
        password: Some(PasswordSource::File(dir.path().join("pw"))),
    };
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    p.source
        .execute(
            "app",
            "ALTER TABLE items ADD COLUMN extra text; UPDATE items SET extra = 'x' WHERE id < 10;
             INSERT INTO items VALUES (1000, 1, 'new')",
        )
        .await
        .unwrap();
    catch_up_and_stop(&p, &t, run).await;
    assert_identical(&p, "app").await;
    let warned: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM pgferry.event WHERE message LIKE '%may not create event triggers%'",
    )
    .await;
    assert_eq!(warned, 1, "one warning");
    let installed: i64 = scalar(
        &p.source,
        "app",
        "SELECT (SELECT count(*) FROM pg_event_trigger)
              + (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgferry_capture')",
    )
    .await;
    assert_eq!(installed, 0, "nothing of the capture is left behind");
}

/// The task's rules rename a schema, a table and a column and remove a column: the
/// captured changes arrive under the target's names, as a fresh load would name them.
#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_follow_the_tasks_renaming_rules() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE SCHEMA sales;
             CREATE TABLE sales.orders (id int PRIMARY KEY, status text, secret text, qty int);
             INSERT INTO sales.orders SELECT g, 'new', 's', g FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("task.toml");
    std::fs::write(
        &path,
        format!(
            "migration_type = \"full-load-and-cdc\"\n[source]\nurl = {:?}\n[target]\nurl = {:?}\n\
             [cdc]\nddl = true\nddl_error_policy = \"STOP_TASK\"\nheartbeat_interval_s = 1\n\
             [[include]]\nschema = \"sales\"\n\
             [[transform]]\naction = \"rename\"\ntarget = \"schema\"\nschema = \"sales\"\nvalue = \"crm\"\n\
             [[transform]]\naction = \"rename\"\ntarget = \"table\"\nschema = \"sales\"\ntable = \"orders\"\nvalue = \"purchases\"\n\
             [[transform]]\naction = \"rename\"\ntarget = \"column\"\nschema = \"sales\"\ntable = \"orders\"\ncolumn = \"status\"\nvalue = \"state\"\n\
             [[transform]]\naction = \"remove-column\"\ntarget = \"column\"\nschema = \"sales\"\ntable = \"%\"\ncolumn = \"secret\"\n",
            p.source.url("app"),
            p.target.url("app")
        ),
    )
    .unwrap();
    let t = Task::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    for sql in [
        "ALTER TABLE sales.orders RENAME COLUMN qty TO quantity",
        "UPDATE sales.orders SET quantity = quantity * 10 WHERE id <= 5",
        "ALTER TABLE sales.orders ALTER COLUMN quantity TYPE bigint, ADD COLUMN note text",
        "INSERT INTO sales.orders VALUES (100, 'late', 'hidden', 5000000000, 'n')",
        "ALTER TABLE sales.orders RENAME COLUMN status TO status2",
        "UPDATE sales.orders SET status2 = 'renamed' WHERE id <= 3",
        "ALTER TABLE sales.orders DROP COLUMN secret",
        "CREATE TABLE sales.returns (id int PRIMARY KEY, order_id int, secret text);
         INSERT INTO sales.returns VALUES (1, 1, 'gone')",
        "CREATE INDEX returns_order ON sales.returns (order_id)",
        "ALTER TABLE sales.orders RENAME TO orders_v2",
        "INSERT INTO sales.orders_v2 VALUES (101, 'after', 1, 'n2')",
    ] {
        p.source
            .execute("app", sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    catch_up_and_stop(&p, &t, run).await;
    // `status` became `status2`, which no rule names any more: the target follows.
    assert_eq!(
        columns_of(&p.target, "crm.orders_v2").await,
        "id integer, status2 text, quantity bigint, note text"
    );
    assert_eq!(
        columns_of(&p.target, "crm.returns").await,
        "id integer, order_id integer"
    );
    for (source, target) in [
        (
            "SELECT (id, status2, quantity, note)::text FROM sales.orders_v2 ORDER BY id",
            "SELECT (id, status2, quantity, note)::text FROM crm.orders_v2 ORDER BY id",
        ),
        (
            "SELECT (id, order_id)::text FROM sales.returns ORDER BY id",
            "SELECT (id, order_id)::text FROM crm.returns ORDER BY id",
        ),
    ] {
        assert_eq!(
            text_rows(&p.source, source).await,
            text_rows(&p.target, target).await
        );
    }
    let index: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'crm' AND indexname = 'returns_order'",
    )
    .await;
    assert_eq!(index, 1);
}

/// A table's columns and types, in order.
async fn columns_of(c: &Cluster, table: &str) -> String {
    let client = c.connect("app").await.unwrap();
    client
        .query_one(
            "SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                               ORDER BY a.attnum)
             FROM pg_attribute a WHERE a.attrelid = $1::text::regclass
              AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

async fn text_rows(c: &Cluster, sql: &str) -> Vec<String> {
    let client = c.connect("app").await.unwrap();
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// A schema change the target refuses suspends its table (`SUSPEND_TABLE`, the default):
/// the failure is recorded with its statement and error and shown in `status`, and the
/// other tables stream on.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_change_the_target_refuses_suspends_its_table_and_shows_in_status() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE TABLE items (id int PRIMARY KEY, v int);
             CREATE TABLE other (id int PRIMARY KEY, v int);",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    let mut t = ddl_task(&p, "app");
    t.cdc.ddl_error_policy = pgferry_config::ErrorPolicy::SuspendTable;
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    // Something on the target is in the way of the index the source creates.
    p.target
        .execute("app", "CREATE INDEX clash ON other (v)")
        .await
        .unwrap();
    for sql in [
        "INSERT INTO items VALUES (1, 1)",
        "CREATE INDEX clash ON items (v)",
        "INSERT INTO items VALUES (2, 2)",
        // Its first rows are written before it can join the publication: refused too.
        "CREATE TABLE made AS SELECT g AS id FROM generate_series(1, 3) g",
        "INSERT INTO made VALUES (4)",
        "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
        "COMMENT ON TABLE other IS 'kept on the source'",
        "GRANT SELECT ON other TO PUBLIC",
        "INSERT INTO other VALUES (1, 1)",
    ] {
        p.source.execute("app", sql).await.unwrap();
    }
    catch_up_and_stop(&p, &t, run).await;
    let client = pg_client(&p.target, "app", Side::Target).await;
    let status = pgferry_engine::status(&client, &t.name).await.unwrap();
    let cdc = status.cdc.expect("CDC status");
    assert_eq!(cdc.ddl_failed, 2, "{:?}", cdc.recent_ddl);
    let find = |object: &str| {
        cdc.recent_ddl
            .iter()
            .find(|d| d.object == object && d.outcome == "failed")
            .unwrap_or_else(|| panic!("no failure for {object}: {:?}", cdc.recent_ddl))
    };
    let made = find("public.made");
    assert!(
        made.object == "public.made" && made.error.as_deref().unwrap_or("").contains("by hand"),
        "{made:?}"
    );
    let failed = find("public.items");
    assert_eq!(failed.outcome, "failed");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or("")
            .contains("already exists")
            && failed
                .error
                .as_deref()
                .unwrap_or("")
                .contains("CREATE INDEX"),
        "{failed:?}"
    );
    assert_eq!(cdc.suspended_tables, ["public.items", "public.made"]);
    // What pgferry does not carry is recorded as kept, by name, never skipped silently.
    let kept: Vec<String> = cdc
        .recent_ddl
        .iter()
        .filter(|d| d.outcome == "kept")
        .map(|d| d.error.clone().unwrap_or_default())
        .collect();
    for (tag, object) in [
        ("CREATE DOMAIN", "positive"),
        ("COMMENT", "public.other"),
        ("GRANT", ""),
    ] {
        assert!(
            kept.iter().any(|e| e.contains(tag) && e.contains(object)),
            "{tag} {object}: {kept:?}"
        );
    }
    let other: i64 = scalar(&p.target, "app", "SELECT count(*) FROM other").await;
    assert_eq!(other, 1, "other tables stream on");
    let items: i64 = scalar(&p.target, "app", "SELECT count(*) FROM items").await;
    assert_eq!(
        items, 1,
        "the suspended table takes nothing after the failure"
    );
}

/// After a cutover the application changes the schema on the target; the reverse stream
/// carries those changes back through the target's own capture, and a rollback returns
/// to a source with the same schema and rows.
#[tokio::test(flavor = "multi_thread")]
async fn the_reverse_stream_carries_the_targets_schema_changes_back() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE ROLE app LOGIN PASSWORD 'app';
             CREATE TABLE items (id int PRIMARY KEY, v int);
             INSERT INTO items SELECT g, g FROM generate_series(1, 100) g;
             GRANT ALL ON items TO app;",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    p.target
        .execute("app", "CREATE ROLE app LOGIN PASSWORD 'app'")
        .await
        .unwrap();
    let mut t = ddl_task(&p, "app");
    t.cutover.fence_roles = vec!["app".to_owned()];
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    p.source
        .execute(
            "app",
            "ALTER TABLE items ADD COLUMN forward int; UPDATE items SET forward = 1 WHERE id < 5",
        )
        .await
        .unwrap();
    // The cutover's checks compare the schemas before the fence: the change must be there.
    cdc::wait_caught_up(&p.source, "app", &pgferry_engine::slot_name(&t.name)).await;
    let cut = pgferry_engine::cutover(&t, pgferry_engine::CutoverOptions::default())
        .await
        .expect("the cutover succeeds");
    assert!(cut.reverse.is_some(), "{cut:?}");
    for sql in [
        "ALTER TABLE items ADD COLUMN back text DEFAULT 'b'",
        "INSERT INTO items (id, v, back) VALUES (1000, 1, 'on the target')",
        "CREATE INDEX items_back ON items (back)",
        "ALTER TABLE items RENAME COLUMN forward TO fwd",
        "UPDATE items SET fwd = 2 WHERE id = 1000",
    ] {
        p.target
            .execute("app", sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let back = pgferry_engine::rollback(&t, pgferry_engine::CutoverOptions::default())
        .await
        .expect("the rollback succeeds");
    assert_eq!(back.state, "done");
    assert_identical(&p, "app").await;
    assert_same_schema(&p, "app").await;
    let on_target: i64 = scalar(
        &p.target,
        "app",
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgferry_capture'",
    )
    .await;
    assert_eq!(on_target, 0, "the rollback removed the target's capture");
    // The forward stream goes on from the source, without replaying the way back.
    p.source
        .execute(
            "app",
            "INSERT INTO items (id, v, back) VALUES (2000, 2, 'again')",
        )
        .await
        .unwrap();
    catch_up_and_stop(&p, &t, run).await;
    assert_identical(&p, "app").await;
}

/// The oldest source to the newest target: on 12 a publication lists partitions one by one
/// (no partitioned tables), so new and detached partitions join it by their own names.
#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_ddl_is_applied_from_12_to_17() {
    let p = Pair {
        source: Cluster::start_with(ClusterOptions::default().major(12)).unwrap(),
        target: Cluster::start_with(ClusterOptions::default().major(17)).unwrap(),
    };
    run_ddl_stream(&p).await;
}

/// The DDL run for the pair in `PGFERRY_MATRIX_SOURCE` and `PGFERRY_MATRIX_TARGET`;
/// passes without doing anything when they are unset (`scripts/test-versions` sets them).
#[tokio::test(flavor = "multi_thread")]
async fn matrix_pair_from_the_environment() {
    let major = |name: &str| -> Option<u32> { std::env::var(name).ok()?.parse().ok() };
    if let (Some(s), Some(t)) = (
        major("PGFERRY_MATRIX_SOURCE"),
        major("PGFERRY_MATRIX_TARGET"),
    ) {
        let p = Pair {
            source: Cluster::start_with(ClusterOptions::default().major(s)).unwrap(),
            target: Cluster::start_with(ClusterOptions::default().major(t)).unwrap(),
        };
        run_ddl_stream(&p).await;
    }
}
