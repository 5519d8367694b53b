//! Change data capture: streaming the source's changes into the target, exactly once.
//!
//! ```text
//!  source ──pgoutput──► reader ──bounded queue──► applier ──one txn per batch──► target
//!    ▲                    │                          │        (changes + checkpoint)
//!    └── status: flushed ◄┴──────── flushed LSN ◄────┘ after COMMIT
//! ```
//!
//! Where the stream starts: at the task's checkpoint (the end of the last source
//! transaction committed on the target), or, before the first batch, at the slot's
//! consistent point, which is exactly where the full load's snapshot ends. Transactions the
//! server resends from before the checkpoint are skipped. Which position is acknowledged:
//! only what the target has committed ([`stream`]). What a crash leaves: an uncommitted
//! target transaction, which the server rolls back; the next run streams it again.
//!
//! Recoverable errors (a lost connection, a server restarting) are retried with a capped
//! backoff, as DMS's `RecoverableErrorInterval` and `RecoverableErrorThrottlingMax` say;
//! each attempt is logged. A stop request (`pgferry stop`) ends the stream at a transaction
//! boundary after committing what is complete.

pub mod apply;
pub mod capture;
pub mod chunks;
pub mod ddl;
pub mod live;
mod orders;
pub(crate) use orders::current_wal_lsn;
pub use orders::{drain, request_stop, signal_stop};
mod pump;
pub mod source;
pub mod sql;
pub mod stream;
pub mod tables;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgferry_config::Task;
use pgferry_pg::{PgClient, PgError, QualifiedName};
use serde::Serialize;

use crate::cdc::apply::{Applier, HEARTBEAT_PREFIX};
pub use crate::cdc::live::{CdcLive, Lag, OpCounts};
use crate::cdc::stream::{LastHeard, Positions, Stream};
use crate::cdc::tables::Scope;
use crate::control::{self, Level};
use crate::error::{EngineError, Result};
use crate::progress::RunProgress;
use crate::route::Route;
use crate::session;

/// How often live figures are saved (orders are read five times as often: `pump`).
const TICK: Duration = Duration::from_secs(1);

/// The longest the WAL-retention probe may take before it is skipped for this round.
const PROBE_LIMIT: Duration = Duration::from_secs(3);

/// How often WAL retention is checked (it queries the source).
const RETENTION_EVERY: Duration = Duration::from_secs(15);

/// How a CDC run ended.
#[derive(Debug, Clone, Serialize)]
pub struct CdcOutcome {
    pub applied_lsn: String,
    pub totals: OpCounts,
    /// Sub-batches applied change by change, by why the bulk path passed them on.
    pub fallbacks: std::collections::BTreeMap<&'static str, i64>,
}

/// Sets up an apply session: canonical value formats, no timeouts, durable commits (the
/// flush position reported to the source depends on them), an empty search path so every
/// name in generated SQL is what it says, and, where allowed, `session_replication_role =
/// replica` so the target's triggers and foreign keys stay quiet as DMS's do. Returns
/// whether that role was granted.
pub async fn apply_session(target: &PgClient) -> Result<bool> {
    target
        .batch(
            "setting up the apply session",
            &format!(
                "{} {} SET search_path = ''; SET synchronous_commit = on;",
                session::NO_TIMEOUTS,
                session::CANONICAL_TEXT
            ),
        )
        .await?;
    Ok(target
        .batch("", "SET session_replication_role = replica")
        .await
        .is_ok())
}

/// Writes a heartbeat message on the source every `every`: it moves an idle slot forward
/// (so it holds no WAL back) and measures lag end to end.
async fn heartbeat(route: Route, task: String, every: Duration) {
    let Ok(client) = route.connect_from("pgferry heartbeat").await else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let result = client
            .query_one(
                "writing a heartbeat",
                "SELECT pg_logical_emit_message(false, $1, $2 || ' ' ||
                     (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text)::text",
                &[&HEARTBEAT_PREFIX, &task],
            )
            .await;
        if let Err(e) = result {
            if e.sqlstate() == Some("42501") {
                tracing::warn!(
                    "the source user may not call pg_logical_emit_message; no heartbeat, so an \
                     idle source shows no lag figures"
                );
                return;
            }
            if client.is_closed() {
                return;
            }
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }
}

async fn load_state(control_client: &PgClient, task: &str) -> Result<control::CdcState> {
    control::cdc_state(control_client, task)
        .await?
        .ok_or_else(|| EngineError::UnknownTask {
            task: task.to_owned(),
        })
}

async fn scope(control_client: &PgClient, task: &Task) -> Result<Scope> {
    let excluded: HashSet<QualifiedName> = control::excluded_tables(control_client, &task.name)
        .await?
        .into_iter()
        .collect();
    Ok(Scope {
        selection: task.selection.clone(),
        mapping: task.mapping.clone(),
        add_new_columns: task.cdc.add_new_columns,
        excluded,
    })
}

/// Checks that the task's slot can still give changes, before anything is touched: a slot
/// that `cleanup` dropped, that someone else dropped, or that the source invalidated
/// (`max_slot_wal_keep_size`) makes the task unable to stream, for good; so does a
/// start-over that began and did not finish (the slot may be the new one already, and the
/// checkpoint belongs to the old). The WAL figure the lost slot left in `cdc_state` is
/// cleared, so `status` no longer claims the slot holds WAL.
pub(crate) async fn check_slot(
    task: &Task,
    route: &Route,
    control_client: &PgClient,
) -> Result<()> {
    let state = load_state(control_client, &task.name).await?;
    let started = control::start_over_began(control_client, &task.name).await?;
    if let Some(at) = started {
        return Err(EngineError::CannotStream {
            task: task.name.clone(),
            problem: format!(
                "a start-over began at {at} and did not finish: the slot on the {} may be \
                 the new one already, which the old checkpoint does not fit",
                route.from()
            ),
        });
    }
    let source = route.connect_from("pgferry cdc").await?;
    let problem = match source::slot_info(&source, &state.slot).await? {
        Some(info) if info.wal_status.as_deref() == Some("lost") => lost_slot(&state.slot),
        Some(_) => return Ok(()),
        None => {
            let cleaned = control::cleaned_up_at(control_client, &task.name).await?;
            match cleaned {
                Some(at) => format!(
                    "it was cleaned up at {at}: its replication slot \"{}\" and publication \
                     were dropped on the source",
                    state.slot
                ),
                None => format!(
                    "its replication slot \"{}\" no longer exists on the source (dropped \
                     outside pgferry)",
                    state.slot
                ),
            }
        }
    };
    Err(cannot_stream(control_client, &task.name, problem).await)
}

pub(super) fn lost_slot(slot: &str) -> String {
    format!(
        "the source invalidated its replication slot \"{slot}\" (wal_status = lost): it \
         removed WAL the task had not applied yet, because the slot held more than \
         max_slot_wal_keep_size"
    )
}

/// The error for a slot that cannot stream any more; the slot's last WAL figure is cleared
/// first (best effort), so `status` does not claim it still holds WAL.
pub(super) async fn cannot_stream(
    control_client: &PgClient,
    task: &str,
    problem: String,
) -> EngineError {
    let _ = control::forget_retained_wal(control_client, task).await;
    EngineError::CannotStream {
        task: task.to_owned(),
        problem,
    }
}

/// Streams changes until a stop is requested, retrying recoverable errors. A run that
/// starts streaming clears a stop request left from before it (`fresh`); one that turns
/// round within the same run (a cutover, a rollback) keeps a request made meanwhile.
pub async fn run(
    task: &Task,
    route: &Route,
    control_client: &mut PgClient,
    progress: &Arc<RunProgress>,
    fresh: bool,
) -> Result<CdcOutcome> {
    // Only a definite answer stops the run here; a source that is down or does not answer
    // now is retried below like any outage.
    let checked = tokio::time::timeout(
        task.cdc.receive_timeout,
        check_slot(task, route, control_client),
    )
    .await;
    if let Ok(Err(e)) = checked
        && !e.is_retryable()
    {
        return Err(e);
    }
    // What stopped an earlier run is history once this one can stream.
    control::streaming_started(control_client, &task.name, fresh).await?;
    let errors = &task.cdc.errors;
    let mut attempt: u32 = 0;
    // Retry messages the event log could not take (the target was down): written once it
    // is back, so the log tells the whole story.
    let mut unrecorded: Vec<String> = Vec::new();
    // Counted from now: a source that goes silent before the first message still shows a
    // growing lag.
    let heard = Arc::new(LastHeard::default());
    heard.mark();
    loop {
        let started = Instant::now();
        let result = match reconnect_control(task, route, control_client).await {
            Ok(()) => {
                // Logged already; the event log gets them now.
                for message in unrecorded.drain(..) {
                    let _ = control::event(
                        control_client.raw(),
                        &task.name,
                        Level::Warning,
                        "cdc",
                        &message,
                        None,
                    )
                    .await;
                }
                stream_once(task, route, control_client, progress, &heard).await
            }
            Err(e) => Err(e),
        };
        // The source ends the walsender of a slot it invalidates, and refuses to stream
        // from it after: the stream sees a lost connection or PostgreSQL's refusal, and the
        // slot's state says what happened.
        if result.is_err() {
            let checked =
                tokio::time::timeout(PROBE_LIMIT, check_slot(task, route, control_client)).await;
            if let Ok(Err(lost)) = checked
                && !lost.is_retryable()
            {
                return Err(lost);
            }
        }
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(e) if e.is_retryable() => {
                // A stream that ran for a while before failing starts the count afresh.
                if started.elapsed() > Duration::from_secs(60) {
                    attempt = 0;
                }
                attempt += 1;
                if errors.recoverable_error_count >= 0
                    && i64::from(attempt) > errors.recoverable_error_count
                {
                    return Err(e);
                }
                let wait = pgferry_config::retry::Backoff {
                    first: Duration::from_secs(errors.recoverable_error_interval.max(1)),
                    max: Duration::from_secs(errors.recoverable_error_throttling_max.max(1)),
                }
                .wait(attempt);
                let message = format!(
                    "recoverable error (attempt {attempt}): {e}; retrying in {} s",
                    wait.as_secs()
                );
                if control::warn(control_client, &task.name, "cdc", &message)
                    .await
                    .is_err()
                {
                    unrecorded.push(message);
                }
                progress.set_phase("cdc: reconnecting");
                wait_out(wait, &heard, progress, control_client, &task.name).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits `wait` before the next attempt, keeping the lag figures honest meanwhile: each
/// second they show at least the time since the source last said anything, in the live
/// figures and (when the target is up) in `cdc_state`, so the lag alarm fires during an
/// outage.
async fn wait_out(
    wait: Duration,
    heard: &LastHeard,
    progress: &RunProgress,
    control_client: &PgClient,
    task: &str,
) {
    let until = Instant::now() + wait;
    loop {
        if let Some(mut live) = progress.cdc() {
            live.lag = live.lag.through_silence(heard.silence_ms());
            let _ = control::save_lag(control_client, task, live.lag.source_ms, live.lag.target_ms)
                .await;
            progress.set_cdc(live);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(TICK)).await;
    }
}

/// After the target went away (a restart, a failover), a new control connection that
/// holds the task lock again ([`control::reconnect`]).
async fn reconnect_control(
    task: &Task,
    route: &Route,
    control_client: &mut PgClient,
) -> Result<()> {
    control::reconnect(&task.name, route.to(), route.to_info(), control_client).await
}

async fn stream_once(
    task: &Task,
    route: &Route,
    control_client: &PgClient,
    progress: &Arc<RunProgress>,
    heard: &Arc<LastHeard>,
) -> Result<CdcOutcome> {
    let limit = task.cdc.receive_timeout;
    let (state, mut applier, mut stream, positions) =
        tokio::time::timeout(limit, start_streaming(task, route, control_client, heard))
            .await
            .map_err(|_| {
                EngineError::Pg(PgError::Protocol {
                    side: route.from(),
                    message: format!(
                        "starting to stream took more than {} s; the {} is presumed unreachable \
                 (cdc.receive_timeout_s)",
                        limit.as_secs(),
                        route.from()
                    ),
                })
            })??;
    let beat = tokio::spawn(heartbeat(
        route.clone(),
        task.name.clone(),
        task.cdc.heartbeat_interval,
    ));
    progress.set_phase("cdc");
    tracing::info!(slot = %state.slot, from = %applier.applied(), binary = state.binary,
        "streaming changes");
    let result = pump::Pump {
        task,
        route,
        control_client,
        progress,
        state: &state,
        positions: &positions,
        watch: pump::SlotWatch::default(),
        saved: None,
    }
    .run(&mut applier, &mut stream)
    .await;
    beat.abort();
    if result.is_err() {
        applier.rollback().await;
    }
    stream.stop().await;
    result
}

/// Everything before the first change arrives: the source session, the target session,
/// the applier and the replication stream. Bounded by the caller: a source that stops
/// answering half-way (a cut network) must not hold the run forever.
async fn start_streaming(
    task: &Task,
    route: &Route,
    control_client: &PgClient,
    heard: &Arc<LastHeard>,
) -> Result<(control::CdcState, Applier, Stream, Arc<Positions>)> {
    let state = load_state(control_client, &task.name).await?;
    let source = route.connect_from("pgferry cdc").await?;
    source
        .batch("setting up the source session", "SET search_path = ''")
        .await?;
    source::free_slot(&source, &state.slot).await?;
    let target = route.connect_to("pgferry apply").await?;
    let replica_role = apply_session(&target).await?;
    if !replica_role {
        let message = "the target user may not set session_replication_role = replica: the \
                       target's triggers and foreign keys fire while changes are applied, and \
                       changes are applied one by one in source order";
        control::warn(control_client, &task.name, "cdc", message).await?;
    }
    let positions = Arc::new(Positions {
        heard: heard.clone(),
        ..Positions::default()
    });
    let applier = Applier::new(
        &task.name,
        target,
        source,
        scope(control_client, task).await?,
        task.cdc.clone(),
        state.binary,
        replica_role,
        positions.clone(),
    )
    .await?;
    let client = route.replicate_from("pgferry cdc").await?;
    let stream = Stream::start(
        client,
        &state.slot,
        applier.applied(),
        &state.publication,
        state.binary,
        positions.clone(),
        task.cdc.receive_timeout,
    )
    .await?;
    Ok((state, applier, stream, positions))
}

pub(crate) fn human_bytes(b: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b.max(0) as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `pgferry cleanup`: drops the task's slot and (if pgferry created it) publication on the
/// source, and restores replica identities it changed. Refused while the task runs.
pub async fn cleanup(task: &Task) -> Result<source::Cleaned> {
    let route = Route::current(task).await?;
    let target = route.connect_to("pgferry cleanup").await?;
    if !control::schema_exists(&target).await? {
        return Err(EngineError::UnknownTask {
            task: task.name.clone(),
        });
    }
    control::lock_task(&target, &task.name, "cleanup").await?;
    let source = route.connect_from("pgferry cleanup").await?;
    let cleaned = source::cleanup(&source, &target, &task.name).await?;
    control::event(
        target.raw(),
        &task.name,
        Level::Info,
        "cleanup",
        &format!(
            "cleanup: slot {}, publication {}, {} replica identities restored",
            cleaned.slot_dropped.as_deref().unwrap_or("(none)"),
            cleaned
                .publication_dropped
                .as_deref()
                .unwrap_or("(kept or none)"),
            cleaned.identities_restored.len()
        ),
        None,
    )
    .await?;
    Ok(cleaned)
}
