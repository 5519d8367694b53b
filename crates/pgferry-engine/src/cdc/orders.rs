//! Orders to a streaming run from another process, through the control schema: stop now,
//! or drain (apply everything committed before a source position, then stop). The run
//! reads them once a second ([`super::pump`]); an order outlives a crash of the run, which
//! obeys it when it resumes.

use std::time::{Duration, Instant};

use pgferry_config::Task;
use pgferry_pg::{Lsn, PgClient, PgError};

use crate::control;
use crate::error::{EngineError, Result};
use crate::route::Route;

/// Sets a task's stop flag without waiting: the run in this process sees it within a second
/// and stops as [`request_stop`] describes. For `POST /api/v1/stop`.
pub async fn signal_stop(task: &Task) -> Result<()> {
    let route = Route::current(task).await?;
    let target = route.connect_to("pgferry stop").await?;
    control::request_stop(&target, &task.name).await
}

/// Asks a running task to stop streaming, as `pgferry stop` does: the run commits what is
/// complete and exits at a transaction boundary. Waits up to `wait` for it; returns whether
/// a run was stopped.
pub async fn request_stop(task: &Task, wait: Duration) -> Result<bool> {
    let route = Route::current(task).await?;
    let target = route.connect_to("pgferry stop").await?;
    known_task(&target, task).await?;
    // Asked even when no stream runs: a run that is turning round (right after a cutover)
    // keeps the request and stops; a fresh `pgferry run` clears it.
    control::request_stop(&target, &task.name).await?;
    if !control::is_running(&target, &task.name).await? {
        return Ok(false);
    }
    let deadline = Instant::now() + wait;
    // A run that stops one stream may go on with the other (a cutover turns it round):
    // it says when this one stopped.
    while control::is_running(&target, &task.name).await?
        && !control::stopped(&target, &task.name).await?
    {
        if Instant::now() >= deadline {
            return Err(EngineError::Pg(PgError::Prerequisite {
                side: route.to(),
                problem: format!(
                    "task \"{}\" did not stop within {} s",
                    task.name,
                    wait.as_secs()
                ),
                fix: "it stops at the end of the source transaction it is applying; wait, \
                      or stop the process (it resumes from its checkpoint)"
                    .to_owned(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(true)
}

/// Drains the stream: asks the running task to apply every transaction its source
/// committed before `to` (by default the source's current WAL position), waits up to
/// `wait` for it, and returns where the drain ended. The run goes on streaming; a cutover
/// stops it when the target opens.
pub async fn drain(task: &Task, to: Option<Lsn>, wait: Duration) -> Result<Lsn> {
    let route = Route::current(task).await?;
    let target = route.connect_to("pgferry drain").await?;
    known_task(&target, task).await?;
    let to = match to {
        Some(to) => to,
        None => current_wal_lsn(&route.connect_from("pgferry drain").await?).await?,
    };
    control::request_drain(&target, &task.name, to).await?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(at) = control::drained(&target, &task.name).await?
            && at >= to
        {
            return Ok(at);
        }
        let problem = if !control::is_running(&target, &task.name).await? {
            Some(format!(
                "task \"{}\" is not streaming, so nothing drains it",
                task.name
            ))
        } else if Instant::now() >= deadline {
            Some(format!(
                "task \"{}\" did not apply everything before {to} within {} s",
                task.name,
                wait.as_secs()
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(EngineError::Pg(PgError::Prerequisite {
                side: route.to(),
                problem,
                fix: "start `pgferry run --task FILE` (it drains, then stops), or wait longer; \
                      `pgferry status` shows the lag"
                    .to_owned(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A server's WAL position now.
pub(crate) async fn current_wal_lsn(client: &PgClient) -> Result<Lsn> {
    let text: String = client
        .query_one(
            "reading the WAL position",
            "SELECT pg_current_wal_lsn()::text",
            &[],
        )
        .await?
        .get(0);
    text.parse().map_err(|_| {
        EngineError::Pg(PgError::Protocol {
            side: client.side(),
            message: format!("unreadable WAL position {text:?}"),
        })
    })
}

async fn known_task(target: &PgClient, task: &Task) -> Result<()> {
    if control::find_task(target, &task.name).await?.is_none() {
        return Err(EngineError::UnknownTask {
            task: task.name.clone(),
        });
    }
    Ok(())
}
