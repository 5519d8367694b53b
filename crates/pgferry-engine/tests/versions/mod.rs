//! Sources and targets of different major versions: the seeds' path (13 to 15) and the
//! ends of the supported range. Each pair runs a full load with validation and then CDC
//! under writes on the awkward-types database, and ends with a row-for-row comparison.
//! `scripts/test-versions` runs [`matrix_pair_from_the_environment`] over every pair.

use pgferry_engine::Outcome;
use pgferry_testkit::{Cluster, ClusterOptions, datagen};

use crate::{Pair, cdc};

/// A cluster of `major`; its binaries come from `scripts/install-deps`.
fn cluster(major: u32) -> Cluster {
    Cluster::start_with(ClusterOptions::default().major(major))
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}"))
}

async fn migrate_between(source_major: u32, target_major: u32) {
    let p = Pair {
        source: cluster(source_major),
        target: cluster(target_major),
    };
    assert_eq!(p.source.major("postgres").await.unwrap(), source_major);
    assert_eq!(p.target.major("postgres").await.unwrap(), target_major);
    datagen::create_awkward(&p.source, "app").await.unwrap();
    p.target.create_database("app").await.unwrap();
    let t = cdc::chunked_cdc_task(&p.source, &p.target, "app");
    let run = cdc::spawn(&t);
    cdc::wait_for_phase(&p.target, "app", &t.name, "cdc").await;
    let report = pgferry_engine::validate(&t, 2).await.unwrap();
    assert!(
        report.tables.iter().all(|c| c.outcome == Outcome::Match),
        "{source_major} to {target_major}: {:#?}",
        report.tables
    );
    // The schema compares alike across versions, awkward types and names included.
    let schema = pgferry_engine::compare_schema(&t).await.unwrap();
    assert!(
        schema.matches(),
        "{source_major} to {target_major}: {:#?}",
        schema.differences
    );
    // Partitions: published through their root from 13 on, each by itself on 12.
    let partitions = [
        "INSERT INTO measurements VALUES (99999, '2025-05-05', 1.5)",
        "UPDATE measurements SET reading = reading + 1 WHERE id % 10 = 0",
    ];
    for sql in cdc::AWKWARD_WRITES.iter().chain(&partitions) {
        p.source.execute("app", sql).await.unwrap();
    }
    cdc::finish_and_compare(&p, "app", &t.name, run).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_13_to_15_the_seeds_path_loads_and_streams() {
    migrate_between(13, 15).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_15_to_17_loads_and_streams() {
    migrate_between(15, 17).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_12_to_16_loads_and_streams() {
    migrate_between(12, 16).await;
}

/// The pair in `PGFERRY_MATRIX_SOURCE` and `PGFERRY_MATRIX_TARGET`; passes without doing
/// anything when they are unset (`scripts/test-versions` sets them).
#[tokio::test(flavor = "multi_thread")]
async fn matrix_pair_from_the_environment() {
    let major = |name: &str| -> Option<u32> { std::env::var(name).ok()?.parse().ok() };
    if let (Some(s), Some(t)) = (
        major("PGFERRY_MATRIX_SOURCE"),
        major("PGFERRY_MATRIX_TARGET"),
    ) {
        migrate_between(s, t).await;
    }
}
