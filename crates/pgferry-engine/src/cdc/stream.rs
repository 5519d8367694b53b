//! Reading the change stream.
//!
//! A reader task owns the replication connection. It decodes pgoutput messages and passes
//! them to the applier through a bounded channel, and it keeps the server happy: it answers
//! keepalives and sends a status update every [`STATUS_EVERY`].
//!
//! Which position may be acknowledged: only what the applier has published in
//! [`Positions::flushed`], which it sets after the target *committed* the changes up to
//! there (or, with nothing pending, to a keepalive's WAL end). The server may then recycle
//! WAL before it; nothing the target has not durably applied is ever acknowledged.
//!
//! What arrived together goes to the applier together: after each wait on the network, the
//! reader takes every message already buffered (up to [`READ_BATCH`]) and passes them as
//! one [`Events`], so the cost of the channel and of waking the applier is paid per read,
//! not per message.
//!
//! Memory is bounded twice: the channel holds at most [`QUEUE`] batches, and the batches
//! queued hold at most [`BUDGET_BYTES`] of data; a single message larger than the budget
//! takes all of it, alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use pgferry_pg::pgoutput::{self, Message};
use pgferry_pg::replication::{ReplicationClient, ReplicationMessage};
use pgferry_pg::{Lsn, PgError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

/// How often the reader reports progress when nothing changed. Well inside
/// `wal_sender_timeout` (60 s by default), and often enough for `pg_stat_replication` and
/// slot retention to look live.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// How soon a new flush position is reported: the slot (and anyone draining it for a
/// cutover) sees the target's progress within this.
pub const FLUSH_REPORT_EVERY: Duration = Duration::from_millis(100);

/// Batches queued between reader and applier: enough to keep the applier busy while the
/// reader waits on the network.
pub const QUEUE: usize = 256;

/// At most this many messages per batch.
pub const READ_BATCH: usize = 512;

/// Data in flight between the socket and the target, in KiB units for the semaphore.
pub const BUDGET_BYTES: usize = 64 * 1024 * 1024;
const BUDGET_UNIT: usize = 1024;

/// When the source last sent anything, as Unix milliseconds (0: never). It outlives a
/// stream, so that through a silence or an outage the lag shown is at least the time since
/// (see `Lag::through_silence`).
#[derive(Debug, Default)]
pub struct LastHeard(AtomicI64);

impl LastHeard {
    pub fn mark(&self) {
        self.0.store(unix_ms(), Ordering::Release);
    }

    /// Milliseconds since the source last sent anything; `None` before it ever did.
    pub fn silence_ms(&self) -> Option<i64> {
        let at = self.0.load(Ordering::Acquire);
        (at > 0).then(|| (unix_ms() - at).max(0))
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Positions shared by reader and applier.
#[derive(Debug, Default)]
pub struct Positions {
    /// When the source last said anything.
    pub heard: Arc<LastHeard>,
    /// Where the target has durably applied everything before; what we acknowledge.
    pub flushed: AtomicU64,
    /// The newest WAL position the server has told us about, raised only once the events
    /// that reached it are queued for the applier.
    pub received: AtomicU64,
}

/// One thing the reader passes to the applier.
#[derive(Debug)]
pub enum Event {
    /// A decoded pgoutput message.
    Message { lsn: Lsn, message: Message },
    /// The server has sent everything before `wal_end`.
    Keepalive { wal_end: Lsn },
}

/// Events that arrived together, in stream order, holding their share of the byte budget
/// until dropped.
#[derive(Debug)]
pub struct Events {
    pub events: Vec<Event>,
    _budget: OwnedSemaphorePermit,
}

/// A running stream.
pub struct Stream {
    pub events: mpsc::Receiver<Result<Events, PgError>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    /// Starts streaming from `slot` at `start` and spawns the reader.
    pub async fn start(
        mut client: ReplicationClient,
        slot: &str,
        start: Lsn,
        publication: &str,
        binary: bool,
        positions: Arc<Positions>,
        receive_timeout: Duration,
    ) -> Result<Stream, PgError> {
        client
            .start_replication(slot, start, &[publication.to_owned()], binary)
            .await?;
        positions.heard.mark();
        let (tx, events) = mpsc::channel(QUEUE);
        let (stop, stopped) = watch::channel(false);
        let budget = Arc::new(Semaphore::new(BUDGET_BYTES / BUDGET_UNIT));
        let task = tokio::spawn(read(
            client,
            tx,
            stopped,
            positions,
            budget,
            receive_timeout,
        ));
        Ok(Stream { events, stop, task })
    }

    /// Stops the reader after it sends a last status update.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

enum Step {
    Stop,
    Message(Result<ReplicationMessage, PgError>),
    Status,
}

/// Sends a status update; returns the flush position it reported.
async fn report(
    client: &mut ReplicationClient,
    positions: &Positions,
    reply: bool,
) -> Result<Lsn, PgError> {
    let flushed = Lsn(positions.flushed.load(Ordering::Acquire));
    let received = Lsn(positions.received.load(Ordering::Acquire)).max(flushed);
    client
        .send_status(received, flushed, flushed, reply)
        .await?;
    Ok(flushed)
}

/// Turns one replication message into an event. Returns the event, the WAL position the
/// server has reached with it, and its budget units.
async fn event(
    client: &mut ReplicationClient,
    positions: &Positions,
    message: ReplicationMessage,
) -> Result<(Event, Lsn, usize), PgError> {
    match message {
        ReplicationMessage::Keepalive {
            wal_end,
            reply_requested,
            ..
        } => {
            if reply_requested {
                report(client, positions, false).await?;
            }
            Ok((Event::Keepalive { wal_end }, wal_end, 0))
        }
        ReplicationMessage::XLogData {
            wal_start, data, ..
        } => {
            let units = data.len().div_ceil(BUDGET_UNIT);
            let message = pgoutput::decode(data).map_err(|e| PgError::Protocol {
                side: client.side(),
                message: format!("at {wal_start}: {e}"),
            })?;
            Ok((
                Event::Message {
                    lsn: wal_start,
                    message,
                },
                wal_start,
                units,
            ))
        }
    }
}

async fn read(
    client: ReplicationClient,
    tx: mpsc::Sender<Result<Events, PgError>>,
    mut stopped: watch::Receiver<bool>,
    positions: Arc<Positions>,
    budget: Arc<Semaphore>,
    receive_timeout: Duration,
) {
    let now = tokio::time::Instant::now();
    let mut status = tokio::time::interval(FLUSH_REPORT_EVERY);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut r = Reader {
        client,
        tx,
        positions,
        budget,
        receive_timeout,
        status,
        heard: now,
        asked: now,
        last_report: (Lsn::ZERO, now),
    };
    loop {
        // Priorities: a stop request first, then whatever the server sent, then the
        // periodic status update.
        let step = tokio::select! {
            biased;
            _ = stopped.changed() => Step::Stop,
            m = r.client.recv() => Step::Message(m),
            _ = r.status.tick() => Step::Status,
        };
        let outcome = match step {
            Step::Stop => {
                let _ = report(&mut r.client, &r.positions, false).await;
                return;
            }
            Step::Status => r.status_due().await.map(|()| true),
            Step::Message(m) => match m {
                Ok(m) => {
                    r.positions.heard.mark();
                    r.forward(m).await
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(true) => {}
            // The applier is gone: nothing to tell it.
            Ok(false) => return,
            Err(e) => {
                let _ = r.tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// The reader task's connection and what it keeps between messages.
struct Reader {
    client: ReplicationClient,
    tx: mpsc::Sender<Result<Events, PgError>>,
    positions: Arc<Positions>,
    budget: Arc<Semaphore>,
    receive_timeout: Duration,
    status: tokio::time::Interval,
    /// Liveness: after STATUS_EVERY of silence each status update asks the server for an
    /// answer (a keepalive); nothing at all for `receive_timeout` means the connection is
    /// dead even if TCP has not noticed (a network cut, a half-open connection).
    heard: tokio::time::Instant,
    asked: tokio::time::Instant,
    last_report: (Lsn, tokio::time::Instant),
}

impl Reader {
    /// The periodic status update: sent when the flush position moved, every STATUS_EVERY
    /// regardless, and asking for an answer after a silence; a silence past
    /// `receive_timeout` is a dead connection.
    async fn status_due(&mut self) -> Result<(), PgError> {
        let silent = self.heard.elapsed();
        if silent >= self.receive_timeout {
            return Err(PgError::Protocol {
                side: self.client.side(),
                message: format!(
                    "nothing from the {} for {} s, not even the answer to a keepalive: the \
                     connection is presumed dead (a network cut or a half-open TCP \
                     connection; cdc.receive_timeout_s)",
                    self.client.side(),
                    silent.as_secs()
                ),
            });
        }
        let ask = silent >= STATUS_EVERY && self.asked.elapsed() >= STATUS_EVERY;
        let moved = Lsn(self.positions.flushed.load(Ordering::Acquire)) != self.last_report.0;
        if !ask && !moved && self.last_report.1.elapsed() < STATUS_EVERY {
            return Ok(());
        }
        if ask {
            self.asked = tokio::time::Instant::now();
        }
        let flushed = report(&mut self.client, &self.positions, ask).await?;
        self.last_report = (flushed, tokio::time::Instant::now());
        Ok(())
    }

    /// Decodes this message and every one already buffered behind it, and queues them as
    /// one batch. Returns false when the applier is gone.
    async fn forward(&mut self, first: ReplicationMessage) -> Result<bool, PgError> {
        let mut events = Vec::new();
        let mut units = 0;
        let mut reached = Lsn::ZERO;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            let (e, lsn, u) = event(&mut self.client, &self.positions, m).await?;
            events.push(e);
            reached = reached.max(lsn);
            units += u;
            if events.len() < READ_BATCH && self.client.has_buffered_message() {
                next = Some(self.client.recv().await?);
            }
        }
        // Wait for budget, then for room in the queue, still reporting status while the
        // applier catches up (the server drops a silent client after wal_sender_timeout).
        let units = units.clamp(1, BUDGET_BYTES / BUDGET_UNIT) as u32;
        let (budget, tx) = (self.budget.clone(), self.tx.clone());
        let room = async move {
            let permit = budget.acquire_many_owned(units).await.ok()?;
            let slot = tx.reserve_owned().await.ok()?;
            Some((permit, slot))
        };
        tokio::pin!(room);
        let (permit, slot) = loop {
            tokio::select! {
                biased;
                r = &mut room => match r {
                    Some(r) => break r,
                    None => return Ok(false),
                },
                _ = self.status.tick() => {
                    report(&mut self.client, &self.positions, false).await?;
                }
            }
        };
        slot.send(Ok(Events {
            events,
            _budget: permit,
        }));
        // Heard just now; and waiting for the applier is not the source's silence.
        self.heard = tokio::time::Instant::now();
        self.positions.heard.mark();
        // Only now, with the events queued: an applier that finds the queue empty and
        // itself idle has applied everything up to here (see `acknowledge_when_idle`).
        self.positions
            .received
            .fetch_max(reached.0, Ordering::AcqRel);
        Ok(true)
    }
}
