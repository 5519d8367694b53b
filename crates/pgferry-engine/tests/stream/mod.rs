//! CDC behaviours after the full load: every kind of change and type, keys, partitions,
//! keyless tables, retained WAL, crashes of either server; conflicts in [`conflicts`].

use super::*;

mod conflicts;

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
    let slot = pgferry_engine::slot_name(&t.name);
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
            // A swap through a temporary key, within one transaction.
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
    let cleaned = pgferry_engine::cleanup(&t).await.unwrap();
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
        pgferry_engine::status(&pg_client(&p.target, "app", Side::Target).await, "default")
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
        pgferry_engine::status(&pg_client(&p.target, "app", Side::Target).await, "default")
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

/// A drain, as a cutover runs it once writes have stopped: the run applies everything the
/// source committed before the position and records where it ended, so no wait for the
/// slot to catch up is needed to find the target identical; it goes on streaming.
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_applies_everything_committed_before_its_position_then_stops_the_stream() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    let mut t = cdc::cdc_task(&p.source, &p.target, "inv");
    // Batches that wait: the drain must not end while a batch is still pending.
    t.cdc.batch_max_delay = std::time::Duration::from_millis(1500);
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "inv", "default", "cdc").await;
    // The target falls behind: a session holds a table the changes go to.
    let blocker = p.target.connect("inv").await.unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE order_lines IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let stop_writes = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = p.source.connect("inv").await.unwrap();
    let flag = stop_writes.clone();
    let writer = tokio::spawn(async move {
        workload::inventory(
            &client,
            11,
            flag,
            Arc::new(workload::WorkloadCounts::default()),
            std::time::Duration::from_millis(2),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    stop_writes.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap().unwrap();
    let fence: String = scalar(&p.source, "inv", "SELECT pg_current_wal_lsn()::text").await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        blocker.batch_execute("COMMIT").await.unwrap();
    });

    let drained = pgferry_engine::drain(&t, None, std::time::Duration::from_secs(60))
        .await
        .expect("the stream drains");
    release.await.unwrap();
    assert!(drained >= fence.parse().unwrap(), "{drained} < {fence}");
    assert_identical(&p, "inv").await;
    assert!(!run.is_finished(), "a drained run goes on streaming");
    let recorded: Option<String> = scalar(
        &p.target,
        "inv",
        "SELECT drained_lsn::text FROM pgferry.cdc_state WHERE task = 'default'",
    )
    .await;
    assert_eq!(recorded, Some(drained.to_string()));
    cdc::stop(&p.target, "inv", "default", run).await;
}
