//! `pgferry.ddl_log`: the schema changes the stream carried, and what became of each.
//! Written inside the apply transaction, so a command's record commits with its
//! statements and the checkpoint, or not at all.

use pgferry_pg::{Lsn, PgClient};
use serde::Serialize;

use crate::error::Result;

/// One captured command and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DdlRecord {
    pub commit_lsn: String,
    pub xid: i64,
    pub tag: String,
    pub object: String,
    /// `applied`, `kept` (the task's settings say not to) or `failed`.
    pub outcome: String,
    pub statements: Vec<String>,
    pub error: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What the applier records for one command.
#[derive(Debug)]
pub struct DdlOutcome<'a> {
    pub commit_lsn: Lsn,
    pub xid: u32,
    pub tag: &'a str,
    pub object: &'a str,
    pub outcome: &'a str,
    pub statements: &'a [String],
    pub error: Option<&'a str>,
}

pub async fn record_ddl(client: &PgClient, task: &str, d: DdlOutcome<'_>) -> Result<()> {
    client
        .execute(
            "recording a schema change",
            "INSERT INTO pgferry.ddl_log
                 (task, commit_lsn, xid, tag, object, outcome, statements, error)
             VALUES ($1, $2::text::pg_lsn, $3, $4, $5, $6, $7, $8)",
            &[
                &task,
                &d.commit_lsn.to_string(),
                &i64::from(d.xid),
                &d.tag,
                &d.object,
                &d.outcome,
                &d.statements,
                &d.error,
            ],
        )
        .await?;
    Ok(())
}

/// The task's last `limit` schema changes, newest first, and how many failed in all.
pub async fn recent_ddl(
    client: &PgClient,
    task: &str,
    limit: i64,
) -> Result<(Vec<DdlRecord>, i64)> {
    let rows = client
        .query(
            "reading schema changes",
            "SELECT commit_lsn::text, xid, tag, object, outcome, statements, error, at
             FROM pgferry.ddl_log WHERE task = $1 ORDER BY id DESC LIMIT $2",
            &[&task, &limit],
        )
        .await?;
    let failed: i64 = client
        .query_one(
            "counting failed schema changes",
            "SELECT count(*) FROM pgferry.ddl_log WHERE task = $1 AND outcome = 'failed'",
            &[&task],
        )
        .await?
        .get(0);
    let records = rows
        .iter()
        .map(|r| DdlRecord {
            commit_lsn: r.get(0),
            xid: r.get(1),
            tag: r.get(2),
            object: r.get(3),
            outcome: r.get(4),
            statements: r.get(5),
            error: r.get(6),
            at: r.get(7),
        })
        .collect();
    Ok((records, failed))
}
