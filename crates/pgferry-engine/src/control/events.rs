//! The task's event log: what happened, when, at which level; `status` and the API read it.

use pgferry_pg::PgClient;
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::target_err;
use crate::error::Result;

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// Appends to the task's event log. Events are for people: what happened, in words.
pub async fn event(
    client: &impl GenericClient,
    task: &str,
    level: Level,
    kind: &str,
    message: &str,
    detail: Option<serde_json::Value>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO pgferry.event (task, level, kind, message, detail)
             VALUES ($1, $2, $3, $4, $5)",
            &[&task, &level.as_str(), &kind, &message, &detail],
        )
        .await
        .map_err(target_err("writing to the event log"))?;
    Ok(())
}

/// Says `message` as a warning: in the log now, and in the task's event log for `status`.
pub async fn warn(client: &PgClient, task: &str, kind: &str, message: &str) -> Result<()> {
    tracing::warn!("{message}");
    event(client.raw(), task, Level::Warning, kind, message, None).await
}

/// One entry of the event log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub level: String,
    pub kind: String,
    pub message: String,
}

pub async fn recent_events(client: &PgClient, task: &str, limit: i64) -> Result<Vec<Event>> {
    let rows = client
        .query(
            "reading the event log",
            "SELECT id, at, level, kind, message FROM (
                 SELECT * FROM pgferry.event WHERE task = $1 ORDER BY id DESC LIMIT $2
             ) e ORDER BY id",
            &[&task, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Event {
            id: r.get(0),
            at: r.get(1),
            level: r.get(2),
            kind: r.get(3),
            message: r.get(4),
        })
        .collect())
}
