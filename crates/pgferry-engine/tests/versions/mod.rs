//! Sources and targets of different major versions: the seeds' path (13 to 15) and the
//! ends of the supported range. Each pair runs a full load with validation and then CDC
//! under writes on the awkward-types database, then a cutover, writes on the target that
//! stream back to the older source, and a rollback; each stage ends with a row-for-row
//! comparison.
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
    let slot = pgferry_engine::slot_name(&t.name);
    cdc::wait_caught_up(&p.source, "app", &slot).await;
    crate::assert_identical(&p, "app").await;

    // The way back, across the versions: the target's writes reach the older source.
    let cut = pgferry_engine::cutover(&t, pgferry_engine::CutoverOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{source_major} to {target_major}: cutover: {e}"));
    assert_eq!(cut.state, "done");
    for sql in TARGET_WRITES {
        p.target.execute("app", sql).await.unwrap();
    }
    let back = pgferry_engine::rollback(&t, pgferry_engine::CutoverOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{source_major} to {target_major}: rollback: {e}"));
    assert_eq!(back.state, "done");
    crate::assert_identical(&p, "app").await;
    cdc::finish_and_compare(&p, "app", &t.name, run).await;
}

/// The application's writes on the target after a cutover: every type family, TOASTed
/// values, a key change, a delete, a partition and a keyless table.
const TARGET_WRITES: &[&str] = &[
    "INSERT INTO \"Weird \"\"Schema\"\"\".\"Awkward Types\"
         SELECT id + 5000, n, n_fixed, f8, f4, i2, ts, tstz, d, t, ttz, iv, arr_int, arr_text,
                arr_2d, e, e_arr, dom, zip, comp, comp_enum, comp_arr, r, tr, fr, mr, j, jb,
                b, txt, ch, vc, bits, u, ip, net, mac, pt, bx, tsv, hs, hs_arr, ci, flag,
                cash, x, \"select\", \"Mixed Case\", \"with space\", \"quote\"\"col\", now()
         FROM \"Weird \"\"Schema\"\"\".\"Awkward Types\" WHERE id < 50",
    "UPDATE \"Weird \"\"Schema\"\"\".\"Awkward Types\" SET e = 'sad', txt = repeat('t', 9000)
         WHERE id IN (5, 6, 7)",
    "UPDATE \"Weird \"\"Schema\"\"\".\"Awkward Types\" SET id = id + 9000 WHERE id = 8",
    "DELETE FROM \"Weird \"\"Schema\"\"\".\"Awkward Types\" WHERE id = 9",
    "INSERT INTO measurements VALUES (99998, '2025-06-06', 2.5)",
    "UPDATE measurements SET reading = reading - 1 WHERE id % 10 = 1",
];

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
