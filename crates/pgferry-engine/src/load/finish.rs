//! After the schema is complete: sequences take the source's values, and the planner gets
//! fresh statistics. Both are idempotent, so a crash here just repeats them.

use std::sync::Arc;

use pgferry_config::Mapping;
use pgferry_pg::catalog::list_sequences;
use pgferry_pg::{ConnInfo, PgClient, QualifiedName, Side};

use crate::error::Result;
use crate::queue::WorkQueue;
use crate::session;

/// Sets every sequence of the migrated schemas to the source's current value. Sequences
/// that were not created on the target are skipped. A sequence owned by a table that a
/// schema rule moved moved with it, so it is looked for in the mapped schema too.
pub async fn sync_sequences(
    source: &PgClient,
    target: &PgClient,
    schemas: &[String],
    mapping: &Mapping,
) -> Result<usize> {
    let sequences = list_sequences(source, schemas).await?;
    let mut set = 0;
    for seq in &sequences {
        let (value, is_called) = match seq.last_value {
            Some(v) => (v, true),
            None => (seq.start_value, false),
        };
        let mut names = vec![seq.name.clone()];
        if let Ok(moved) = mapping.target_schema(&seq.name.schema)
            && moved != seq.name.schema
        {
            names.push(QualifiedName::new(moved, &seq.name.name));
        }
        for name in names {
            let row = target
                .query_one(
                    "setting a sequence",
                    "SELECT pg_catalog.setval(to_regclass($1), $2, $3) IS NOT NULL",
                    &[&name.quoted(), &value, &is_called],
                )
                .await?;
            if row.get::<_, bool>(0) {
                set += 1;
                break;
            }
        }
    }
    Ok(set)
}

pub async fn analyze(target_info: &ConnInfo, task: &str, jobs: usize) -> Result<usize> {
    let control = pgferry_pg::connect(Side::Target, target_info, "pgferry analyze").await?;
    let tables = crate::control::unanalyzed_tables(&control, task).await?;
    let count = tables.len();
    let queue = Arc::new(WorkQueue::new(
        tables
            .into_iter()
            .map(|(id, table)| (id, table, Vec::new()))
            .collect(),
    ));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs.max(1).min(count.max(1)) {
        let queue = queue.clone();
        let info = target_info.clone();
        let task = task.to_owned();
        workers.spawn(async move {
            let client = pgferry_pg::connect(Side::Target, &info, "pgferry analyze").await?;
            client.batch("setting up", session::NO_TIMEOUTS).await?;
            while let Some((id, table)) = queue.next().await {
                let analyzed = client
                    .batch(
                        &format!("analyzing {table}"),
                        &format!("ANALYZE {}", table.quoted()),
                    )
                    .await;
                queue.complete(&id, analyzed.is_ok());
                analyzed?;
                crate::control::mark_analyzed(client.raw(), &task, id).await?;
            }
            Ok::<(), crate::error::EngineError>(())
        });
    }
    while let Some(joined) = workers.join_next().await {
        if let Ok(Err(e)) = joined {
            queue.close();
            return Err(e);
        }
    }
    Ok(count)
}
