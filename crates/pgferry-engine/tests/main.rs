//! Integration tests of the engine against real, throwaway PostgreSQL clusters. Each test
//! starts its own source and target, so tests run in parallel without sharing anything.

mod cdc;
mod connect;
mod cutover;
mod ddl;
mod faults;
mod full_load;
mod mapping;
mod split;
mod stream;
mod versions;

use std::sync::Arc;

use pgferry_config::{
    MigrationType, PasswordSource, Selection, TableRule, TargetTablePrepMode, Task,
};
use pgferry_engine::Outcome;
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
