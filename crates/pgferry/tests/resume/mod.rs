//! Chunk-level resume of a `full-load-and-cdc` load: killed with SIGKILL in the middle of
//! a big table under writes, the next run keeps the finished chunks and copies only the
//! rest, and the target ends identical with no change skipped.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{
    assert_identical, assert_not_copied_again, cdc_pair_from, done_chunks, pgferry, phase, run,
    text, wait_for_cdc,
};

/// About 40 MB, most of it in out-of-line (TOASTed) values, split into 1 MB chunks by
/// its integer key.
const BIG: &str = "CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL, n int NOT NULL);
     ALTER TABLE big ALTER payload SET STORAGE EXTERNAL;
     INSERT INTO big SELECT g, repeat(md5(g::text), 100), 0 FROM generate_series(1, 12000) g;
     ANALYZE big;";

/// The same rows keyed by text: `k000001` to `k012000`, split by that key wherever the
/// source cannot read block ranges, or where a `ranges` rule names it.
const BIG_TEXT: &str =
    "CREATE TABLE big (id text PRIMARY KEY, payload text NOT NULL, n int NOT NULL);
     ALTER TABLE big ALTER payload SET STORAGE EXTERNAL;
     INSERT INTO big SELECT 'k' || lpad(g::text, 6, '0'), repeat(md5(g::text), 100), 0
     FROM generate_series(1, 12000) g;
     ANALYZE big;";

/// A `ranges` rule that splits the text-keyed table into twelve chunks.
fn text_ranges() -> String {
    let bounds: Vec<String> = (1..12).map(|i| format!("[\"k{:06}\"]", i * 1000)).collect();
    format!(
        r#"{{"rules": [
  {{"rule-type": "selection", "rule-id": "1", "rule-name": "all", "rule-action": "include",
   "object-locator": {{"schema-name": "public", "table-name": "%"}}}},
  {{"rule-type": "table-settings", "rule-id": "2", "rule-name": "split",
   "object-locator": {{"schema-name": "public", "table-name": "big"}},
   "parallel-load": {{"type": "ranges", "columns": ["id"], "boundaries": [{}]}}}}
]}}"#,
        bounds.join(", ")
    )
}

/// One write of the mix below, for an integer key.
fn integer_write(i: i64) -> String {
    let id = (i * 7919) % 12000 + 1;
    match i % 5 {
        0 => format!("UPDATE big SET n = n + 1 WHERE id = {id}"),
        1 => format!(
            "UPDATE big SET id = -id WHERE id = {} AND id > 0",
            12000 - i % 3000
        ),
        2 => format!(
            "UPDATE big SET id = id + 1000000 WHERE id = {}",
            1 + i % 3000
        ),
        3 => format!(
            "INSERT INTO big VALUES ({}, repeat(md5(random()::text), 100), 1)",
            100_000 + i
        ),
        _ => format!("DELETE FROM big WHERE id = {}", (i * 104_729) % 12000 + 1),
    }
}

/// The same mix for the text key: moves to the front (`a...`, `K...`) and to the back
/// (`z...`), inserts at both ends and in the middle.
fn text_write(i: i64) -> String {
    let key = |n: i64| format!("'k{:06}'", n);
    match i % 6 {
        0 => format!(
            "UPDATE big SET n = n + 1 WHERE id = {}",
            key((i * 7919) % 12000 + 1)
        ),
        1 => format!(
            "UPDATE big SET id = 'a' || id WHERE id = {}",
            key(12000 - i % 3000)
        ),
        2 => format!(
            "UPDATE big SET id = 'z' || id WHERE id = {}",
            key(1 + i % 3000)
        ),
        3 => format!(
            "INSERT INTO big VALUES ('K{i}', repeat(md5(random()::text), 100), 1),
                                    ('k{:06}x', 'mid', 2)",
            (i * 31) % 12000 + 1
        ),
        4 => format!(
            "UPDATE big SET id = id || 'y' WHERE id = {}",
            key(6000 + i % 3000)
        ),
        _ => format!(
            "DELETE FROM big WHERE id = {}",
            key((i * 104_729) % 12000 + 1)
        ),
    }
}

/// Writes `sql(1)`, `sql(2)`, ... while the load runs and after, until told to stop.
async fn write(
    source: pgferry_testkit::cluster::Connector,
    stop: Arc<AtomicBool>,
    sql: fn(i64) -> String,
) -> u64 {
    let c = source.connect("app").await.unwrap();
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        c.batch_execute(&sql(i)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    i as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cdc_load_killed_mid_table_keeps_its_finished_chunks_and_loses_nothing() {
    killed_mid_table(None, BIG, None, integer_write).await;
}

/// On 13 (no block ranges), the text key splits the table, and the source places each
/// change's key among the chunks; the stream is in text form.
#[tokio::test(flavor = "multi_thread")]
async fn a_text_keyed_load_from_13_killed_mid_table_keeps_its_finished_chunks() {
    killed_mid_table(Some(13), BIG_TEXT, None, text_write).await;
}

/// On 15, a `ranges` rule splits by the text key; the stream is binary.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_split_by_a_ranges_rule_killed_mid_table_keeps_its_finished_chunks() {
    killed_mid_table(None, BIG_TEXT, Some(text_ranges()), text_write).await;
}

/// Kills the first run once a few chunks of `big` are done, runs again into CDC under
/// writes, and checks that the finished chunks stayed and the target is identical.
async fn killed_mid_table(
    major: Option<u32>,
    setup: &str,
    mappings: Option<String>,
    writes: fn(i64) -> String,
) {
    let (source, target, dir, task) = cdc_pair_from(major, &[setup]).await;
    let mut extra = "jobs = 2\nchunk_size = \"1MB\"\n".to_owned();
    if let Some(m) = mappings {
        std::fs::write(dir.path().join("mappings.json"), m).unwrap();
        extra.push_str("table_mappings = \"mappings.json\"\n");
    }
    std::fs::write(
        &task,
        std::fs::read_to_string(&task)
            .unwrap()
            .replace("migration_type", &format!("{extra}migration_type")),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write(source.connector(), stop.clone(), writes));
    let control = target.connect("app").await.unwrap();

    // Killed once a few chunks are done and before the table is.
    let mut child = pgferry()
        .args(["run", "--task", &task])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("first.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done_chunks(&control).await.len() < 4 {
        assert!(Instant::now() < deadline, "no chunk was copied");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert_eq!(
        phase(&control).await,
        "loading",
        "killed in the middle of the load"
    );
    let finished = done_chunks(&control).await;
    let total: i64 = control
        .query_one("SELECT count(*) FROM pgferry.chunk", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        (finished.len() as i64) < total,
        "{} of {total}",
        finished.len()
    );
    let split: Option<String> = control
        .query_one(
            "SELECT split_key->>'column' || ' ' || (split_key->>'identity')
             FROM pgferry.table_state",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        split.as_deref(),
        Some("id true"),
        "split by its key, which is its replica identity"
    );

    let mut child = pgferry()
        .args(["run", "--task", &task])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("second.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for_cdc(&target, "app", &mut child).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 100, "{writes} writes");
    source
        .wait_for_slot("app", "pgferry_default", Duration::from_secs(120))
        .await
        .unwrap();
    let out = run(&["stop", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // The finished chunks were not copied again, nothing was skipped, nothing differs.
    assert_not_copied_again(&control, &finished).await;
    let note: String = control
        .query_one(
            "SELECT message FROM pgferry.event WHERE message LIKE '%keep their finished chunks%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        note.contains("1 partly copied table(s) split by a key"),
        "{note}"
    );
    let exceptions: i64 = control
        .query_one("SELECT count(*) FROM pgferry.apply_exceptions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(exceptions, 0);
    assert_identical(&source, &target, "app").await;
}
