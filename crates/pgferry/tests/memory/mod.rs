//! Memory stays bounded whatever the value or transaction size.

use std::process::Stdio;
use std::time::Duration;

use pgferry_testkit::Cluster;

use crate::*;

/// A 200 MB value must not need 400 MB of pgferry's memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_value_is_held_in_memory_once() {
    const VALUE_MB: i64 = 200;
    let source = Cluster::start().unwrap();
    let target = Cluster::start().unwrap();
    source.create_database("blob").await.unwrap();
    source
        .execute(
            "blob",
            &format!(
                "CREATE TABLE blobs (id int PRIMARY KEY, b bytea);
                 ALTER TABLE blobs ALTER b SET STORAGE EXTERNAL;
                 INSERT INTO blobs SELECT 1, convert_to(repeat('pgferry!', {VALUE_MB} * 131072), 'UTF8');
                 INSERT INTO blobs SELECT g, decode(md5(g::text), 'hex') FROM generate_series(2, 100) g;"
            ),
        )
        .await
        .unwrap();
    target.create_database("blob").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(
        dir.path(),
        &minimal_task(&source.url("blob"), &target.url("blob"), "jobs = 1"),
    );
    let out = run(&["run", "--task", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The largest child this test process has waited for is that pgferry run (the cluster
    // helpers are small), so its peak resident size is ours to check.
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let peak_mb = usage.max_rss() / 1024;
    eprintln!("peak RSS of pgferry: {peak_mb} MB for a {VALUE_MB} MB value");
    assert!(
        peak_mb >= VALUE_MB,
        "the value passed through pgferry ({peak_mb} MB)"
    );
    assert!(
        peak_mb < VALUE_MB + VALUE_MB / 2,
        "peak RSS {peak_mb} MB: the {VALUE_MB} MB value was held more than once"
    );
    let same: bool = target
        .connect("blob")
        .await
        .unwrap()
        .query_one(
            "SELECT md5(b) = md5(convert_to(repeat('pgferry!', $1::int * 131072), 'UTF8'))
             FROM blobs WHERE id = 1",
            &[&(VALUE_MB as i32)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same);
}

/// One source transaction of a million rows streams through pgferry with bounded memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_million_row_transaction_streams_in_bounded_memory() {
    million_row_transaction(None).await;
}

/// PostgreSQL 13 cannot stream a transaction in progress, nor send binary tuples: the
/// transaction spills on the source and arrives as text, and pgferry's memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_million_row_transaction_from_postgres_13_streams_in_bounded_memory() {
    million_row_transaction(Some(13)).await;
}

async fn million_row_transaction(source_major: Option<u32>) {
    let (source, target, _dir, task) = cdc_pair_from(
        source_major,
        &["CREATE TABLE big (id bigint PRIMARY KEY, v text, n numeric)"],
    )
    .await;
    let mut child = pgferry()
        .args(["run", "--task", &task])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_cdc(&target, "app", &mut child).await;
    let before = peak_rss_mb(child.id());
    source
        .execute(
            "app",
            "INSERT INTO big SELECT g, repeat(md5(g::text), 4), g * 1.5
             FROM generate_series(1, 1000000) g",
        )
        .await
        .unwrap();
    source
        .wait_for_slot("app", "pgferry_default", Duration::from_secs(600))
        .await
        .unwrap();
    let peak = peak_rss_mb(child.id());
    let out = run(&["stop", "--task", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // About 170 MB of row data went through; holding the transaction would take more than
    // that, batching it takes a fraction.
    eprintln!("peak RSS of pgferry: {before} MB before, {peak} MB after a 1M-row transaction");
    assert!(peak < 120, "peak RSS {peak} MB");
    let digest = "SELECT count(*)::text || md5(string_agg(b::text, ',' ORDER BY id)) FROM big b";
    let s: String = source
        .connect("app")
        .await
        .unwrap()
        .query_one(digest, &[])
        .await
        .unwrap()
        .get(0);
    let t: String = target
        .connect("app")
        .await
        .unwrap()
        .query_one(digest, &[])
        .await
        .unwrap()
        .get(0);
    assert!(s.starts_with("1000000"));
    assert_eq!(s, t);
}
