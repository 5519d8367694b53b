//! The loop that moves changes from the replication stream into the applier, with a tick
//! for everything else: five times a second it reads what the control schema asks of the
//! stream (a stop, a drain: during a cutover each wait for a tick is downtime), and once a
//! second it saves the live figures and watches the slot's health.
//!
//! The loop never leaves in the middle of a target transaction on its own account: a stop
//! commits what is complete first. A drain is recorded only when nothing is pending, and
//! streaming goes on after it (a cutover that is aborted needs the stream as it was; one
//! that goes ahead stops it). A crash anywhere loses at most the uncommitted batch, which
//! the slot sends again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgferry_config::Task;
use pgferry_pg::{Lsn, PgClient, PgError};

use super::apply::Applier;
use super::live::CdcLive;
use super::stream::{self, Positions, Stream};
use super::{CdcOutcome, PROBE_LIMIT, RETENTION_EVERY, TICK, source};
use super::{cannot_stream, human_bytes, lost_slot};
use crate::control::{self, Level};
use crate::error::{EngineError, Result};
use crate::progress::RunProgress;
use crate::route::Route;

enum Step {
    Tick,
    Deadline,
    Event(Option<std::result::Result<stream::Events, PgError>>),
}

/// One streaming session's loop and what it keeps between ticks.
pub(super) struct Pump<'a> {
    pub task: &'a Task,
    pub route: &'a Route,
    pub control_client: &'a PgClient,
    pub progress: &'a Arc<RunProgress>,
    pub state: &'a control::CdcState,
    pub positions: &'a Positions,
    pub watch: SlotWatch,
    /// When the figures were last saved.
    pub saved: Option<Instant>,
}

/// How often the control schema's orders are read.
const ORDERS_TICK: Duration = Duration::from_millis(200);

impl Pump<'_> {
    /// Applies changes until a stop, or an error.
    pub async fn run(&mut self, applier: &mut Applier, stream: &mut Stream) -> Result<CdcOutcome> {
        let mut tick = tokio::time::interval(ORDERS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = applier.deadline();
            // Priorities: the once-a-second housekeeping (so a stop request is seen even
            // under a flood of changes), then a batch that must commit now, then the stream.
            let step = tokio::select! {
                biased;
                _ = tick.tick() => Step::Tick,
                _ = async { tokio::time::sleep_until(deadline.expect("guarded").into()).await },
                    if deadline.is_some() => Step::Deadline,
                e = stream.events.recv() => Step::Event(e),
            };
            match step {
                Step::Event(None) => {
                    return Err(EngineError::Pg(PgError::Protocol {
                        side: self.route.from(),
                        message: "the replication stream ended".to_owned(),
                    }));
                }
                Step::Event(Some(Err(e))) => return Err(e.into()),
                Step::Event(Some(Ok(batch))) => {
                    for event in batch.events {
                        applier.handle(event).await?;
                        // Full or old enough (a quiet stream is the deadline's business).
                        if applier.should_commit() {
                            applier.commit().await?;
                        }
                    }
                    acknowledge_when_idle(applier, stream, self.positions);
                }
                Step::Deadline => {
                    applier.commit().await?;
                    acknowledge_when_idle(applier, stream, self.positions);
                }
                Step::Tick => {
                    if let Some(outcome) = self.tick(applier, stream).await? {
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    /// Reads (once a second: saves the live figures, watches the slot, and reads) the
    /// control schema's orders, and obeys them. Returns the outcome when the stream is to
    /// end.
    async fn tick(&mut self, applier: &mut Applier, stream: &Stream) -> Result<Option<CdcOutcome>> {
        let (task, client) = (&self.task.name, self.control_client);
        let received = Lsn(self
            .positions
            .received
            .load(std::sync::atomic::Ordering::Acquire));
        let orders = if self.saved.is_none_or(|at| at.elapsed() >= TICK) {
            self.saved = Some(Instant::now());
            self.save_figures(applier, received).await?
        } else {
            control::stream_orders(client, task).await?
        };
        if orders.stop {
            applier.commit().await?;
            applier.rollback().await;
            let message = format!("stopped on request at {}", applier.applied());
            control::event(client.raw(), task, Level::Info, "cdc", &message, None).await?;
            return Ok(Some(outcome(applier)));
        }
        // Drained: everything received is applied and committed, and what was received
        // reaches the drain's position, so every transaction committed before it is on
        // the target (the argument of `acknowledge_when_idle`). Recorded once (that clears
        // the request); the stream goes on.
        if let Some(to) = orders.drain_to
            && received >= to
            && applier.idle()
            && stream.events.is_empty()
        {
            control::mark_drained(client, task, received).await?;
            let message = format!(
                "drained: every transaction the {} committed before {to} is applied (stream \
                 at {received})",
                self.route.from()
            );
            control::event(client.raw(), task, Level::Info, "cdc", &message, None).await?;
        }
        Ok(None)
    }

    /// Saves the live figures (in the control schema and for the progress display), and
    /// watches the slot every [`RETENTION_EVERY`]; returns the orders read with them.
    async fn save_figures(
        &mut self,
        applier: &mut Applier,
        received: Lsn,
    ) -> Result<control::StreamOrders> {
        if let Some(ms) = applier.pending_lag_ms() {
            applier.lag.target_ms = Some(ms.max(applier.lag.target_ms.unwrap_or(0)));
        }
        if self
            .watch
            .checked
            .is_none_or(|at| at.elapsed() >= RETENTION_EVERY)
        {
            self.watch.checked = Some(Instant::now());
            self.watch_slot().await?;
        }
        let lag = applier
            .lag
            .through_silence(self.positions.heard.silence_ms());
        let figures = control::StreamFigures {
            received,
            source_ms: lag.source_ms,
            target_ms: lag.target_ms,
            wal_retained: self.watch.wal_retained,
        };
        let orders = control::save_progress(self.control_client, &self.task.name, figures).await?;
        self.progress.set_cdc(CdcLive {
            applied_lsn: Some(applier.applied().to_string()),
            received_lsn: Some(received.to_string()),
            lag,
            totals: applier.totals,
            incoming: applier.incoming,
            fallbacks: applier.fallbacks.clone(),
            schema_changes: applier.schema_changes.clone(),
            wal_retained_bytes: self.watch.wal_retained,
            binary: self.state.binary,
        });
        Ok(orders)
    }

    /// Checks the slot's WAL on the source: lost ends the stream, at risk or holding much
    /// warns once per episode. Bounded: a source that does not answer (a cut network)
    /// must not stall the loop that keeps the lag figures and the stop flag current.
    async fn watch_slot(&mut self) -> Result<()> {
        let probe = async {
            let source = self.route.connect_from("pgferry cdc").await?;
            source::slot_info(&source, &self.state.slot).await
        };
        let Ok(Ok(Some(info))) = tokio::time::timeout(PROBE_LIMIT, probe).await else {
            return Ok(());
        };
        let (task, client, slot) = (&self.task.name, self.control_client, &self.state.slot);
        if info.wal_status.as_deref() == Some("lost") {
            return Err(cannot_stream(client, task, lost_slot(slot)).await);
        }
        let at_risk = info.wal_status.as_deref() == Some("unreserved")
            || info
                .keep_size_used()
                .is_some_and(|used| used > KEEP_SIZE_WARNING);
        if at_risk && !self.watch.risk_warned {
            control::warn(client, task, "cdc", &at_risk_message(slot, &info)).await?;
        }
        self.watch.risk_warned = at_risk;
        self.watch.wal_retained = info.retained_bytes;
        let over = info
            .retained_bytes
            .is_some_and(|b| b as u64 > self.task.cdc.wal_retention_warning);
        if over && !self.watch.retained_warned {
            let message = format!(
                "the replication slot {slot} holds back {} of WAL on the source; it grows \
                 until pgferry catches up or `pgferry cleanup` drops the slot. Consider \
                 max_slot_wal_keep_size on the source to cap it",
                human_bytes(info.retained_bytes.unwrap_or(0))
            );
            control::warn(client, task, "cdc", &message).await?;
        }
        self.watch.retained_warned = over;
        Ok(())
    }
}

/// What the slot watch remembers: warnings already given, and the last WAL figure.
#[derive(Debug, Default)]
pub(super) struct SlotWatch {
    /// When the slot was last checked.
    checked: Option<Instant>,
    retained_warned: bool,
    risk_warned: bool,
    wal_retained: Option<i64>,
}

fn outcome(applier: &Applier) -> CdcOutcome {
    CdcOutcome {
        applied_lsn: applier.applied().to_string(),
        totals: applier.totals,
        fallbacks: applier.fallbacks.clone(),
    }
}

/// With everything received applied and committed, the slot may move to the newest
/// position the server reported. Without this, a keepalive that arrived while a batch was
/// pending would go unacknowledged, and the server sends no other until its position
/// moves: an idle slot would trail by whatever was not ours (a checkpoint, another
/// database's writes) until the next heartbeat.
///
/// Safe because the server sends transactions in commit order and the reader raises
/// `received` only once the events that reached it are queued: every transaction
/// committed before that position was in the (now empty) queue and is applied, and one
/// still on its way commits after it and is streamed again after a restart.
fn acknowledge_when_idle(applier: &Applier, stream: &Stream, positions: &Positions) {
    if applier.idle() && stream.events.is_empty() {
        let received = positions
            .received
            .load(std::sync::atomic::Ordering::Acquire);
        positions
            .flushed
            .fetch_max(received, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The share of `max_slot_wal_keep_size` past which streaming warns that the slot is at
/// risk (the default alarm `source-slot-wal` uses the same figure).
const KEEP_SIZE_WARNING: f64 = 0.5;

fn at_risk_message(slot: &str, info: &source::SlotInfo) -> String {
    format!(
        "the replication slot {slot} holds {} of WAL, {} of what max_slot_wal_keep_size \
         lets it keep ({} left, wal_status = {}): past that the source invalidates it and \
         the task has to start over. Let pgferry catch up (a faster target, fewer writes) or \
         raise max_slot_wal_keep_size on the source",
        human_bytes(info.retained_bytes.unwrap_or(0)),
        info.keep_size_used()
            .map(|u| format!("{:.0}%", u * 100.0))
            .unwrap_or_else(|| "all".to_owned()),
        human_bytes(info.safe_wal_bytes.unwrap_or(0)),
        info.wal_status.as_deref().unwrap_or("?"),
    )
}
