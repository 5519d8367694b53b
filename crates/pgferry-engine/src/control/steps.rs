//! Schema steps: one row per object of the dump, in the order they are created. A step is
//! done exactly when its row says so, written in the same transaction as its DDL (all
//! pre-data steps share one transaction), so a crash leaves either both or neither.

use std::collections::HashSet;

use pgferry_pg::dump::Section;
use pgferry_pg::{PgClient, PgError, Side};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::error::Result;

/// One object to create on the target.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub dump_id: i32,
    pub section: Section,
    pub ordinal: i32,
    /// Post-data order: 1 indexes and keys, 2 foreign keys, 3 everything else.
    pub phase: i32,
    pub kind: String,
    pub label: String,
    pub depends_on: Vec<i32>,
    /// Bytes of the tables the step works on: bigger steps start first.
    pub weight: i64,
    pub sql: String,
    /// Why the step is not run at all, decided at planning time.
    pub skip: Option<String>,
}

/// Stores the steps in the control schema, inside the caller's planning transaction.
pub async fn store_steps(
    tx: &tokio_postgres::Transaction<'_>,
    task: &str,
    steps: &[Step],
) -> Result<()> {
    let insert = tx
        .prepare(
            "INSERT INTO pgferry.schema_step
                (task, dump_id, section, ordinal, phase, kind, label, depends_on, sql, state, note,
                 weight)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await
        .map_err(|e| PgError::query(Side::Target, "storing the schema plan", e))?;
    for s in steps {
        let section = match s.section {
            Section::PreData => "pre-data",
            Section::PostData => "post-data",
        };
        let state = if s.skip.is_some() {
            "skipped"
        } else {
            "pending"
        };
        tx.execute(
            &insert,
            &[
                &task,
                &s.dump_id,
                &section,
                &s.ordinal,
                &s.phase,
                &s.kind,
                &s.label,
                &s.depends_on,
                &s.sql,
                &state,
                &s.skip,
                &s.weight,
            ],
        )
        .await
        .map_err(|e| PgError::query(Side::Target, "storing the schema plan", e))?;
    }
    Ok(())
}

/// A post-data step as stored in the control schema.
#[derive(Debug, Clone)]
pub struct StoredStep {
    pub dump_id: i32,
    pub phase: i32,
    pub kind: String,
    pub label: String,
    pub depends_on: Vec<i32>,
    pub weight: i64,
    pub sql: String,
}

pub async fn pending_steps(
    client: &PgClient,
    task: &str,
    section: &str,
) -> Result<Vec<StoredStep>> {
    let rows = client
        .query(
            "reading the schema plan",
            "SELECT dump_id, phase, kind, label, depends_on, sql, weight FROM pgferry.schema_step
             WHERE task = $1 AND section = $2 AND state IN ('pending', 'failed')
             ORDER BY ordinal",
            &[&task, &section],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredStep {
            dump_id: r.get(0),
            phase: r.get(1),
            kind: r.get(2),
            label: r.get(3),
            depends_on: r.get(4),
            sql: r.get(5),
            weight: r.get(6),
        })
        .collect())
}

/// Dump ids of the task's TABLE steps, to tell which tables a post-data step works on.
pub async fn table_step_ids(client: &PgClient, task: &str) -> Result<HashSet<i32>> {
    let rows = client
        .query(
            "reading the schema plan",
            "SELECT dump_id FROM pgferry.schema_step WHERE task = $1 AND kind = 'TABLE'",
            &[&task],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Steps that did not run: failed, or blocked by a failure.
pub async fn unfinished_steps(client: &PgClient, task: &str) -> Result<HashSet<i32>> {
    let rows = client
        .query(
            "reading the schema plan",
            "SELECT dump_id FROM pgferry.schema_step
             WHERE task = $1 AND state IN ('pending', 'failed')",
            &[&task],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Records a step that did not run as planned: failed, skipped, or blocked.
pub async fn mark_step(
    client: &PgClient,
    task: &str,
    id: i32,
    state: &str,
    note: &str,
) -> Result<()> {
    client
        .execute(
            "recording a schema step",
            "UPDATE pgferry.schema_step SET state = $3, note = $4, finished_at = clock_timestamp()
             WHERE task = $1 AND dump_id = $2",
            &[&task, &id, &state, &note],
        )
        .await?;
    Ok(())
}

/// Records one post-data step done, inside the transaction that created its object.
pub async fn step_done(
    tx: &impl GenericClient,
    task: &str,
    dump_id: i32,
    seconds: f64,
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE pgferry.schema_step SET state = 'done', note = NULL,
                finished_at = clock_timestamp(), seconds = $3
         WHERE task = $1 AND dump_id = $2",
        &[&task, &dump_id, &seconds],
    )
    .await?;
    Ok(())
}

/// Records the pre-data steps done, inside the transaction that restored them.
pub async fn steps_done(
    tx: &impl GenericClient,
    task: &str,
    dump_ids: &[i32],
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE pgferry.schema_step SET state = 'done', finished_at = clock_timestamp()
         WHERE task = $1 AND dump_id = ANY($2)",
        &[&task, &dump_ids],
    )
    .await?;
    Ok(())
}

/// Records a pre-data step kept as it was on the target, with why.
pub async fn step_skipped(
    tx: &impl GenericClient,
    task: &str,
    dump_id: i32,
    note: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE pgferry.schema_step SET state = 'skipped', note = $3,
                finished_at = clock_timestamp()
         WHERE task = $1 AND dump_id = $2",
        &[&task, &dump_id, &note],
    )
    .await?;
    Ok(())
}

/// Schema objects the plan skipped on purpose (a rule removed what they use, a table kept
/// as it was), as (kind, name): `INDEX`, `customers_secret_idx`. Empty without a control
/// schema.
pub async fn skipped_objects(client: &PgClient, task: &str) -> Result<Vec<(String, String)>> {
    let has: bool = client
        .query_one(
            "looking for the schema plan",
            "SELECT to_regclass('pgferry.schema_step') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !has {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "reading skipped schema steps",
            "SELECT kind, label FROM pgferry.schema_step WHERE task = $1 AND state = 'skipped'",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let label: String = r.get(1);
            let name = label.rsplit(' ').next().unwrap_or_default().to_owned();
            (r.get(0), name)
        })
        .collect())
}
