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

/// Writes while the load runs and after: updates that leave the large value unchanged,
/// key changes that move rows from the last chunks to the first and from the first to the
/// last (with the large value unchanged, which the stream does not send), inserts and
/// deletes.
async fn write(source: pgferry_testkit::cluster::Connector, stop: Arc<AtomicBool>) -> u64 {
    let c = source.connect("app").await.unwrap();
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let id = (i * 7919) % 12000 + 1;
        let sql = match i % 5 {
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
        };
        c.batch_execute(&sql).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    i as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cdc_load_killed_mid_table_keeps_its_finished_chunks_and_loses_nothing() {
    let (source, target, dir, task) = cdc_pair_from(None, &[BIG]).await;
    std::fs::write(
        &task,
        std::fs::read_to_string(&task).unwrap().replace(
            "migration_type",
            "jobs = 2\nchunk_size = \"1MB\"\nmigration_type",
        ),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write(source.connector(), stop.clone()));
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
        "split by its integer key, which is its replica identity"
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
        note.contains("1 partly copied table(s) split by an integer key"),
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
