//! Alarm state in the control schema: `pgferry.alarm` holds each alarm's rule and state,
//! and every state change is an event of kind `alarm`. So `pgferry alarms` works from any
//! machine, and a resumed run carries on from the states it left.

use chrono::{DateTime, Utc};
use pgferry_config::Task;
use pgferry_observe::{AlarmRule, AlarmState, AlarmView, Transition};
use pgferry_pg::PgClient;
use serde::Serialize;

use super::{self as control, Level};
use crate::error::{EngineError, Result};

/// Saved states of a task's alarms: (name, state, reason, since); none before the control
/// schema has its alarm table.
pub async fn saved_states(
    client: &PgClient,
    task: &str,
) -> Result<Vec<(String, AlarmState, String, DateTime<Utc>)>> {
    let exists: bool = client
        .query_one(
            "looking for alarm states",
            "SELECT to_regclass('pgferry.alarm') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "reading alarm states",
            "SELECT name, state, reason, since FROM pgferry.alarm WHERE task = $1",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let state = AlarmState::parse(r.get::<_, &str>(1))?;
            Some((r.get(0), state, r.get(2), r.get(3)))
        })
        .collect())
}

/// Saves every alarm's state; alarms no longer declared are removed.
pub async fn save(client: &PgClient, task: &str, alarms: &[AlarmView]) -> Result<()> {
    let rows = serde_json::to_value(alarms).unwrap_or_default();
    client
        .execute(
            "saving alarm states",
            "WITH a AS (
                 SELECT x->>'name' AS name, x->>'state' AS state, x->>'reason' AS reason,
                        (x->>'since')::timestamptz AS since, (x->>'value')::float8 AS value,
                        x->'rule' AS rule
                 FROM jsonb_array_elements($2::jsonb) x
             ), gone AS (
                 DELETE FROM pgferry.alarm WHERE task = $1 AND name NOT IN (SELECT name FROM a)
             )
             INSERT INTO pgferry.alarm (task, name, state, reason, since, value, rule)
             SELECT $1, name, state, reason, since, value, rule FROM a
             ON CONFLICT (task, name) DO UPDATE SET state = excluded.state,
                 reason = excluded.reason, since = excluded.since, value = excluded.value,
                 rule = excluded.rule, updated_at = now()",
            &[&task, &rows.to_string()],
        )
        .await?;
    Ok(())
}

/// Writes a state change to the event log.
pub async fn record_transition(client: &PgClient, task: &str, t: &Transition) -> Result<()> {
    let level = match t.new_state {
        AlarmState::Alarm => Level::Warning,
        _ => Level::Info,
    };
    control::event(
        client.raw(),
        task,
        level,
        "alarm",
        &format!(
            "alarm {}: {} -> {}: {}",
            t.alarm, t.old_state, t.new_state, t.reason
        ),
        serde_json::to_value(t).ok(),
    )
    .await
}

/// One state change, as `pgferry alarms` lists them.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryItem {
    pub at: DateTime<Utc>,
    pub old_state: Option<String>,
    pub new_state: Option<String>,
    pub reason: Option<String>,
}

/// An alarm as `pgferry alarms` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmReport {
    pub name: String,
    /// `OK`, `ALARM`, `INSUFFICIENT_DATA`; `NOT_EVALUATED` when no run has evaluated it
    /// yet; `INACTIVE` when it cannot be evaluated (see `reason`).
    pub state: String,
    pub reason: String,
    pub since: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub value: Option<f64>,
    pub rule: Option<AlarmRule>,
    pub history: Vec<HistoryItem>,
}

/// Everything `pgferry alarms` shows.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmsReport {
    pub task: String,
    /// Whether a run holds the task right now (else the states are as the last run left
    /// them).
    pub running: bool,
    pub alarms: Vec<AlarmReport>,
}

/// How many state changes per alarm `pgferry alarms` lists.
const HISTORY_SHOWN: i64 = 10;

/// Reads each declared alarm's state and history. Alarms the task file declares that no
/// run has evaluated yet are listed too.
pub async fn report(client: &PgClient, task: &Task) -> Result<AlarmsReport> {
    let unknown = || EngineError::UnknownTask {
        task: task.name.clone(),
    };
    if !control::schema_exists(client).await? {
        return Err(unknown());
    }
    let saved = client
        .query(
            "reading alarm states",
            "SELECT name, state, reason, since, updated_at, value
             FROM pgferry.alarm WHERE task = $1",
            &[&task.name],
        )
        .await?;
    let mut alarms = Vec::new();
    for rule in &task.monitoring.alarms {
        let row = saved.iter().find(|r| r.get::<_, &str>(0) == rule.name);
        let history = client
            .query(
                "reading alarm history",
                "SELECT at, detail->>'old_state', detail->>'new_state', detail->>'reason'
                 FROM (SELECT * FROM pgferry.event
                       WHERE task = $1 AND kind = 'alarm' AND detail->>'alarm' = $2
                       ORDER BY id DESC LIMIT $3) e
                 ORDER BY id DESC",
                &[&task.name, &rule.name, &HISTORY_SHOWN],
            )
            .await?
            .iter()
            .map(|r| HistoryItem {
                at: r.get(0),
                old_state: r.get(1),
                new_state: r.get(2),
                reason: r.get(3),
            })
            .collect();
        alarms.push(match row {
            Some(r) => AlarmReport {
                name: rule.name.clone(),
                state: r.get(1),
                reason: r.get(2),
                since: r.get(3),
                updated_at: r.get(4),
                value: r.get(5),
                rule: Some(rule.clone()),
                history,
            },
            None => AlarmReport {
                name: rule.name.clone(),
                state: "NOT_EVALUATED".to_owned(),
                reason: "no run has evaluated this alarm yet".to_owned(),
                since: None,
                updated_at: None,
                value: None,
                rule: Some(rule.clone()),
                history,
            },
        });
    }
    for inactive in &task.monitoring.inactive_alarms {
        alarms.push(AlarmReport {
            name: inactive.name.clone(),
            state: "INACTIVE".to_owned(),
            reason: inactive.why.clone(),
            since: None,
            updated_at: None,
            value: None,
            rule: None,
            history: Vec::new(),
        });
    }
    Ok(AlarmsReport {
        task: task.name.clone(),
        running: control::is_running(client, &task.name).await?,
        alarms,
    })
}
