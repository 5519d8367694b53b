//! Big tables split by key ranges: automatically where block ranges cannot serve (12 and
//! 13), and at the user's boundaries (DMS `ranges`) on any version. Each test ends with a
//! row-for-row comparison.

use pgferry_config::mapping::{ParallelLoad, ParallelLoadKind, TableSettings};
use pgferry_testkit::{Cluster, ClusterOptions};

use crate::{Pair, cdc, pair, scalar};

/// About 2 MB per table: split into several 256 kB chunks.
const TABLES: &str = "
    CREATE TABLE big_int (id bigint PRIMARY KEY, payload text NOT NULL);
    INSERT INTO big_int SELECT g * 7 - 50000, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g;
    CREATE TABLE big_text (code text PRIMARY KEY, n int);
    INSERT INTO big_text SELECT 'c-' || md5(g::text) || repeat('x', 40), g FROM generate_series(1, 20000) g;
    CREATE TABLE big_nokey (n int, payload text);
    INSERT INTO big_nokey SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g;
    ANALYZE;";

async fn split_of(target: &Cluster, table: &str) -> (Option<String>, i32, Option<String>) {
    let c = target.connect("app").await.unwrap();
    let r = c
        .query_one(
            "SELECT split_key->>'column', chunks_total, split_note FROM pgferry.table_state
             WHERE source_table = $1",
            &[&table],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test(flavor = "multi_thread")]
async fn big_tables_on_13_split_by_key_ranges_and_a_table_without_a_key_says_why() {
    let p = Pair {
        source: Cluster::start_with(ClusterOptions::default().major(13))
            .expect("PostgreSQL 13 (scripts/install-deps)"),
        target: Cluster::start().unwrap(),
    };
    p.source.create_database("app").await.unwrap();
    p.source.execute("app", TABLES).await.unwrap();
    p.target.create_database("app").await.unwrap();
    let t = cdc::chunked_cdc_task(&p.source, &p.target, "app");
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;

    let (key, chunks, note) = split_of(&p.target, "big_int").await;
    assert_eq!(key.as_deref(), Some("id"));
    assert!(chunks >= 4, "{chunks} chunks");
    assert_eq!(note, None);
    let (key, chunks, _) = split_of(&p.target, "big_text").await;
    assert_eq!(key.as_deref(), Some("code"), "split by its histogram");
    assert!(chunks >= 4, "{chunks} chunks");
    let (key, chunks, note) = split_of(&p.target, "big_nokey").await;
    assert_eq!((key, chunks), (None, 1));
    assert!(note.unwrap().contains("btree index"));
    let warned: bool = scalar(
        &p.target,
        "app",
        "SELECT EXISTS (SELECT FROM pgferry.event
                        WHERE message LIKE 'public.big_nokey (% MB) is copied in one piece:%')",
    )
    .await;
    assert!(warned, "the plan says why");

    for sql in [
        "UPDATE big_int SET payload = 'changed' WHERE id % 5 = 0",
        "DELETE FROM big_text WHERE n % 9 = 0",
        "INSERT INTO big_int VALUES (-999999, 'below every range'), (999999999, 'above')",
    ] {
        p.source.execute("app", sql).await.unwrap();
    }
    cdc::finish_and_compare(&p, "app", &t.name, run).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dms_ranges_split_at_the_users_boundaries_whatever_characters_they_hold() {
    let p = pair();
    p.source.create_database("app").await.unwrap();
    p.source
        .execute(
            "app",
            "CREATE TABLE notes (label text PRIMARY KEY, body text);
             INSERT INTO notes SELECT chr(32 + g % 90) || g, md5(g::text)
             FROM generate_series(1, 5000) g;
             INSERT INTO notes VALUES ('it''s', 'quote'), ('back\\slash', 'b'),
                 ('x''); DROP TABLE notes; --', 'hostile');
             CREATE TABLE counts (id int PRIMARY KEY);
             INSERT INTO counts SELECT generate_series(1, 100);",
        )
        .await
        .unwrap();
    p.target.create_database("app").await.unwrap();
    let mut t = crate::task(&p, "app");
    let ranges = |table: &str, column: &str, boundaries: &[&str]| TableSettings {
        schema: "public".into(),
        table: table.into(),
        parallel_load: Some(ParallelLoad {
            kind: ParallelLoadKind::Ranges,
            columns: vec![column.into()],
            boundaries: boundaries.iter().map(|b| vec![(*b).to_owned()]).collect(),
            partitions: Vec::new(),
        }),
        origin: "test".into(),
    };
    // Out of order, repeated, and hostile: the server orders them as values of the key.
    t.mapping.table_settings.push(ranges(
        "notes",
        "label",
        &["x'); DROP TABLE notes; --", "M", "back\\slash", "M", "it's"],
    ));
    // Numbers in an order that sorts differently as text.
    t.mapping
        .table_settings
        .push(ranges("counts", "id", &["50", "9", "10"]));
    crate::run(&t).await.unwrap();
    let (key, chunks, _) = split_of(&p.target, "notes").await;
    assert_eq!((key.as_deref(), chunks), (Some("label"), 5));
    let (key, chunks, _) = split_of(&p.target, "counts").await;
    assert_eq!((key.as_deref(), chunks), (Some("id"), 4));
    let bounds: Vec<Option<String>> = p
        .target
        .connect("app")
        .await
        .unwrap()
        .query(
            "SELECT key_hi FROM pgferry.chunk c JOIN pgferry.table_state t USING (task, table_id)
             WHERE t.source_table = 'counts' ORDER BY chunk_no",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        bounds,
        [Some("9".into()), Some("10".into()), Some("50".into()), None]
    );
    crate::assert_identical(&p, "app").await;

    // A boundary that is not a value of the column is refused before anything is created.
    let other = Pair {
        source: p.source,
        target: Cluster::start().unwrap(),
    };
    other.target.create_database("app").await.unwrap();
    let mut bad = crate::task(&other, "app");
    bad.mapping
        .table_settings
        .push(ranges("counts", "id", &["10", "twenty"]));
    let e = crate::run(&bad).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("ranges rule (parallel-load) for public.counts"),
        "{e}"
    );
    assert!(e.to_string().contains("twenty"), "{e}");
    let tables: i64 = scalar(
        &other.target,
        "app",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    )
    .await;
    assert_eq!(tables, 0);
}
