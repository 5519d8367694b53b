//! Applying changes to the target, exactly once.
//!
//! Source transactions arrive in commit order. The applier groups consecutive ones into one
//! target transaction (a *batch*), and that transaction also writes the checkpoint: the
//! end LSN of the last source transaction it holds, in `pgferry.cdc_state`. So either a
//! batch's changes and its checkpoint are committed together, or neither is. After a
//! crash the stream restarts from the slot, and every transaction whose commit LSN is
//! before the checkpoint is skipped: nothing is applied twice, nothing is lost. Only after
//! the target commits is the position reported to the source as flushed.
//!
//! A batch ends when the stream has been quiet for [`LINGER`] (the applier is caught up),
//! when it holds `batch_max_changes` changes, or `batch_max_delay` after its first change;
//! a source transaction is never split between two batches. (Lingering, rather than
//! committing the moment the queue is empty, keeps batches large when the stream delivers
//! steadily but a little slower than the target applies.) Within a batch, changes are
//! applied in sub-batches of at most `batch_max_changes` changes and `batch_max_bytes` of
//! row data (memory stays bounded however wide the rows), each under a savepoint:
//!
//! * **fast path**: per table, the changes are folded into their net effect per key (an
//!   insert then two updates of the same row become one insert of the final row; an
//!   update touches only the columns sent, so unchanged TOAST values are never
//!   overwritten) and applied with one bulk `DELETE`, `UPDATE` and `INSERT` per table and
//!   column set. Every statement's row count is checked against what it should touch.
//! * **careful path**: when the fast path meets anything unusual (a conflict, a constraint
//!   error, a key changed twice), the sub-batch is rolled back to its savepoint and applied
//!   again change by change, in source order, each under its own savepoint, and the task's
//!   error policies (DMS's `ErrorBehavior`) decide what happens to a change that fails.
//!
//! The fast path needs `session_replication_role = replica` on the target (foreign keys
//! and triggers quiet, as the source already enforced them); without it every sub-batch
//! takes the careful path, in source order.
//!
//! A schema change captured on the source (`[cdc] ddl`) arrives as a row of the capture's
//! log, at its place in its transaction: it is a barrier (`ddl`), applied in the same
//! target transaction after the changes before it.
//!
//! Where each part lives: this file holds the applier's state, the stream's messages and
//! the batch and checkpoint; `coalesce` folds changes into net effects, `bulk` is the
//! fast path, `careful` the change-by-change path with the error policies, `ddl` the
//! schema changes, `filters` the row and chunk filters, and `params` the parameter
//! encodings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use pgferry_config::{CdcSettings, ErrorPolicy};
use pgferry_pg::error::sqlstate_is_data_error;
use pgferry_pg::lsn::pg_timestamp_to_chrono;
use pgferry_pg::pgoutput::{Message, OldImage, Relation, Tuple, Value};
use pgferry_pg::{Lsn, PgClient, PgError, QualifiedName, describe_pg_error};
use tokio_postgres::types::ToSql;

use crate::cdc::chunks::{ChunkFilters, KeyOrder, Verdict};
use crate::cdc::live::{Lag, OpCounts};
use crate::cdc::sql;
use crate::cdc::stream::{Event, Positions};
use crate::cdc::tables::{self, Resolution, Scope, SnapshotFilter, TableInfo};
use crate::error::{EngineError, Refusal, Result};

mod bulk;
pub use bulk::Fallback;
mod careful;
mod coalesce;
mod ddl;
mod filters;
mod params;

use coalesce::{Net, coalesce};
use params::{ArrayParam, Param, RawValue};

/// How long the stream must be quiet before a caught-up batch commits.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Row counts of the `VALUES` pieces of [`Applier::bulk_values`], largest first.
const VALUES_PIECES: [usize; 5] = [256, 64, 16, 4, 1];

/// Prefix of pgferry's heartbeat messages on the source.
pub const HEARTBEAT_PREFIX: &str = "pgferry_heartbeat";

#[derive(Debug, Clone)]
enum Op {
    Insert(Tuple),
    Update {
        old: Option<(OldImage, Tuple)>,
        new: Tuple,
    },
    Delete(Tuple),
}

impl Op {
    /// Bytes of column data the change holds.
    fn data_bytes(&self) -> usize {
        let size = |t: &Tuple| {
            t.iter()
                .map(|v| v.bytes().map_or(0, |b| b.len()))
                .sum::<usize>()
        };
        match self {
            Op::Insert(new) => size(new),
            Op::Update { old, new } => size(new) + old.as_ref().map_or(0, |(_, t)| size(t)),
            Op::Delete(old) => size(old),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Insert(_) => "insert",
            Op::Update { .. } => "update",
            Op::Delete(_) => "delete",
        }
    }
}

#[derive(Debug, Clone)]
struct Change {
    table: Arc<TableInfo>,
    op: Op,
    xid: u32,
    commit_lsn: Lsn,
}

type KeyBytes = Vec<Option<Bytes>>;

fn bytes_at(t: &Tuple, i: usize) -> Option<Bytes> {
    t.get(i).and_then(|v| v.bytes().cloned())
}

impl Change {
    /// The values that find the row on the target *before* this change.
    fn identity(&self) -> Option<&Tuple> {
        match &self.op {
            Op::Insert(_) => None,
            Op::Update { old, new } => Some(old.as_ref().map(|(_, t)| t).unwrap_or(new)),
            Op::Delete(old) => Some(old),
        }
    }

    fn key_of(&self, t: &Tuple) -> KeyBytes {
        self.table.key.iter().map(|i| bytes_at(t, *i)).collect()
    }
}

impl OpCounts {
    fn count(&mut self, op: &Op) {
        match op {
            Op::Insert(_) => self.inserts += 1,
            Op::Update { .. } => self.updates += 1,
            Op::Delete(_) => self.deletes += 1,
        }
    }
}

struct SourceTxn {
    xid: u32,
    final_lsn: Lsn,
    commit_time: i64,
    skip: bool,
    changes: usize,
}

#[derive(Default)]
struct Batch {
    open: bool,
    /// The sub-batch not yet sent to the target, and the bytes of data it holds.
    changes: Vec<Change>,
    change_bytes: usize,
    txns: u64,
    end_lsn: Lsn,
    commit_time: i64,
    first_commit_time: Option<i64>,
    started: Option<Instant>,
    counts: OpCounts,
}

impl Batch {
    fn pending(&self) -> bool {
        self.open || !self.changes.is_empty() || self.txns > 0
    }
}

/// The outcome of applying one change carefully.
enum Outcome {
    Applied,
    /// A row that exists when it should not, or is missing when it should exist.
    Conflict(Refusal),
    /// A value the target does not accept.
    Failed(Refusal),
}

/// The applier's state.
pub struct Applier {
    task: String,
    target: PgClient,
    source: PgClient,
    scope: Scope,
    settings: CdcSettings,
    binary: bool,
    replica_role: bool,
    relations: HashMap<u32, Resolution>,
    suspended: HashSet<QualifiedName>,
    filters: HashMap<QualifiedName, SnapshotFilter>,
    /// Tables resumed chunk by chunk ([`super::chunks`]).
    chunk_filters: HashMap<QualifiedName, ChunkFilters>,
    statements: HashMap<String, tokio_postgres::Statement>,
    applied: Lsn,
    txn: Option<SourceTxn>,
    batch: Batch,
    /// When the stream last delivered something, for [`LINGER`].
    last_event: Option<Instant>,
    apply_errors: u64,
    data_errors: u64,
    /// A schema change in the open source transaction needs its own commit before the
    /// next one (a new enum value cannot be used in the transaction that added it).
    commit_after_txn: bool,
    /// Captured schema changes this applier handled, by outcome (`applied`, `kept`,
    /// `failed`).
    pub schema_changes: BTreeMap<&'static str, i64>,
    pub totals: OpCounts,
    /// Changes received for tables in scope, before they are applied.
    pub incoming: OpCounts,
    /// Sub-batches that left the fast path, by [`Fallback`] reason.
    pub fallbacks: BTreeMap<&'static str, i64>,
    pub lag: Lag,
    positions: Arc<Positions>,
}

fn now_pg() -> i64 {
    pgferry_pg::lsn::pg_timestamp_now()
}

impl Applier {
    /// `target` must already have its session set up (see [`crate::cdc::apply_session`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        task: &str,
        target: PgClient,
        source: PgClient,
        scope: Scope,
        settings: CdcSettings,
        binary: bool,
        replica_role: bool,
        positions: Arc<Positions>,
    ) -> Result<Applier> {
        let applied = crate::control::checkpoint(&target, task).await?;
        let mut suspended = HashSet::new();
        let mut filters = HashMap::new();
        for t in crate::control::stream_tables(&target, task).await? {
            if t.suspended {
                suspended.insert(t.name.clone());
            }
            if let Some(f) = t.snapshot_filter.as_deref().and_then(SnapshotFilter::parse) {
                filters.insert(t.name, f);
            }
        }
        positions.flushed.fetch_max(applied.0, Ordering::AcqRel);
        let chunk_filters = super::chunks::load(&target, task).await?;
        Ok(Applier {
            task: task.to_owned(),
            target,
            source,
            scope,
            settings,
            binary,
            replica_role,
            relations: HashMap::new(),
            suspended,
            filters,
            chunk_filters,
            statements: HashMap::new(),
            applied,
            txn: None,
            batch: Batch::default(),
            last_event: None,
            apply_errors: 0,
            data_errors: 0,
            commit_after_txn: false,
            schema_changes: BTreeMap::new(),
            totals: OpCounts::default(),
            incoming: OpCounts::default(),
            fallbacks: BTreeMap::new(),
            lag: Lag::default(),
            positions,
        })
    }

    /// The checkpoint: end of the last source transaction committed on the target.
    pub fn applied(&self) -> Lsn {
        self.applied
    }

    /// When the open batch must commit at the latest. Only between source transactions:
    /// in the middle of one, the batch cannot commit, and the stream must be read on until
    /// its Commit arrives (a deadline that passed then would be ready forever and starve
    /// the stream).
    pub fn deadline(&self) -> Option<Instant> {
        let started = self.batch.started.filter(|_| self.can_commit())?;
        let quiet = self.last_event.map(|t| t + LINGER);
        let full = started + self.settings.batch_max_delay;
        Some(quiet.map_or(full, |q| q.min(full)))
    }

    /// Between transactions with nothing waiting to commit.
    pub fn idle(&self) -> bool {
        self.txn.is_none() && !self.batch.pending()
    }

    /// Whether the batch holds complete transactions and may commit now.
    pub fn can_commit(&self) -> bool {
        self.txn.is_none() && self.batch.txns > 0
    }

    /// Whether the batch is full enough to commit without waiting for the stream to
    /// run dry.
    pub fn should_commit(&self) -> bool {
        self.can_commit()
            && (self.commit_after_txn
                || self.batch.changes.len() >= self.settings.batch_max_changes
                || self.deadline().is_some_and(|d| Instant::now() >= d))
    }

    /// Milliseconds the oldest pending change has waited since its source commit.
    pub fn pending_lag_ms(&self) -> Option<i64> {
        self.batch.first_commit_time.map(|t| (now_pg() - t) / 1000)
    }

    pub async fn handle(&mut self, event: Event) -> Result<()> {
        self.last_event = Some(Instant::now());
        match event {
            Event::Keepalive { wal_end } => {
                // Nothing pending and between transactions: everything before the server's
                // position is applied or was never ours, so the slot may move on.
                if self.txn.is_none() && !self.batch.pending() {
                    self.positions
                        .flushed
                        .fetch_max(wal_end.0, Ordering::AcqRel);
                }
                Ok(())
            }
            Event::Message { lsn, message, .. } => self.message(lsn, message).await,
        }
    }

    async fn message(&mut self, lsn: Lsn, message: Message) -> Result<()> {
        match message {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.txn = Some(SourceTxn {
                    xid,
                    final_lsn,
                    commit_time,
                    // Exactly once: this transaction committed before the checkpoint.
                    skip: final_lsn < self.applied,
                    changes: 0,
                });
                self.lag.source_ms = Some((now_pg() - commit_time) / 1000);
            }
            Message::Commit {
                end_lsn,
                commit_time,
                ..
            } => {
                let txn = self.txn.take();
                let had_changes = txn.as_ref().is_some_and(|t| !t.skip && t.changes > 0);
                if had_changes {
                    self.batch.txns += 1;
                    self.batch.end_lsn = end_lsn;
                    self.batch.commit_time = commit_time;
                    self.totals.transactions += 1;
                    self.batch.counts.transactions += 1;
                } else if !self.batch.pending() {
                    // Nothing of ours in it, and nothing waiting: acknowledge it now.
                    self.positions
                        .flushed
                        .fetch_max(end_lsn.0, Ordering::AcqRel);
                } else if self.batch.txns > 0 {
                    // Ride along with the pending batch.
                    self.batch.end_lsn = end_lsn;
                } else {
                    // Opened for nothing of ours (a relation described, maybe a column
                    // added, in a transaction skipped or filtered out): commit what it did,
                    // so the stream is idle again and a drain can see it.
                    self.end_empty_batch(end_lsn).await?;
                }
            }
            Message::Relation(rel) => self.relation(rel).await?,
            Message::Insert { relation, new } => self.change(relation, Op::Insert(new)).await?,
            Message::Update { relation, old, new } => {
                self.change(relation, Op::Update { old, new }).await?;
            }
            Message::Delete { relation, old } => self.change(relation, Op::Delete(old.1)).await?,
            Message::Truncate {
                relations,
                restart_identity,
                ..
            } => self.truncate(&relations, restart_identity).await?,
            Message::Message {
                prefix, content, ..
            } if prefix == HEARTBEAT_PREFIX => {
                if let Some(micros) = std::str::from_utf8(&content)
                    .ok()
                    .and_then(|s| s.rsplit(' ').next())
                    .and_then(|m| m.parse::<i64>().ok())
                {
                    let now = chrono::Utc::now().timestamp_micros();
                    let ms = (now - micros).max(0) / 1000;
                    self.lag.source_ms = Some(ms);
                    if !self.batch.pending() {
                        self.lag.target_ms = Some(ms);
                    }
                }
                if self.txn.is_none() && !self.batch.pending() {
                    self.positions.flushed.fetch_max(lsn.0, Ordering::AcqRel);
                }
            }
            Message::Message { .. } | Message::Type { .. } | Message::Origin { .. } => {}
        }
        Ok(())
    }

    async fn ensure_open(&mut self) -> Result<()> {
        if !self.batch.open {
            self.target
                .batch("starting an apply transaction", "BEGIN")
                .await?;
            self.batch.open = true;
        }
        Ok(())
    }

    async fn relation(&mut self, rel: Relation) -> Result<()> {
        let id = rel.id;
        if super::capture::is_log(&rel.namespace, &rel.name) {
            let columns = rel.columns.iter().map(|c| c.name.clone()).collect();
            self.relations
                .insert(id, Resolution::Capture(Arc::new(columns)));
            return Ok(());
        }
        // The capture's own bookkeeping, published by a FOR ALL TABLES publication; and a
        // suspended table, which may not even exist on the target (a refused CREATE).
        if rel.namespace == super::capture::SCHEMA
            || self
                .suspended
                .contains(&QualifiedName::new(&rel.namespace, &rel.name))
        {
            self.relations.insert(id, Resolution::Ignore);
            return Ok(());
        }
        // Resolution may alter the target table; do it inside the current batch.
        self.ensure_open().await?;
        // Bounded like the stream itself: a source cut off mid-lookup must not hold the
        // applier (and with it the lag figures and the stop flag) forever.
        let limit = self.settings.receive_timeout;
        let resolution = tokio::time::timeout(
            limit,
            tables::resolve(&self.target, &self.source, &rel, &self.scope),
        )
        .await
        .map_err(|_| {
            EngineError::Pg(PgError::Protocol {
                side: self.source.side(),
                message: format!(
                    "looking up {}.{} on the source took more than {} s; the connection is \
                     presumed dead",
                    rel.namespace,
                    rel.name,
                    limit.as_secs()
                ),
            })
        })??;
        self.relations.insert(id, resolution);
        Ok(())
    }

    fn table(&self, relation: u32) -> Result<Option<Arc<TableInfo>>> {
        match self.relations.get(&relation) {
            Some(Resolution::Apply(t)) => Ok(Some(t.clone())),
            Some(Resolution::Ignore | Resolution::Capture(_)) => Ok(None),
            None => Err(EngineError::Pg(PgError::Protocol {
                side: self.source.side(),
                message: format!("a change for relation {relation} arrived before its description"),
            })),
        }
    }

    /// Whether this transaction's changes to `table` are already in the target's copy.
    fn filtered(&self, table: &QualifiedName, xid: u32, commit_lsn: Lsn) -> bool {
        self.filters
            .get(table)
            .is_some_and(|f| f.saw_commit(xid, commit_lsn))
    }

    async fn change(&mut self, relation: u32, op: Op) -> Result<()> {
        let Some(txn) = self.txn.as_ref() else {
            return Err(EngineError::Pg(PgError::Protocol {
                side: self.source.side(),
                message: "a change arrived outside a transaction".to_owned(),
            }));
        };
        if txn.skip {
            return Ok(());
        }
        if let Some(Resolution::Capture(columns)) = self.relations.get(&relation) {
            return match &op {
                Op::Insert(row) => self.captured(&columns.clone(), row).await,
                // The capture deletes each row it logs: nothing to apply.
                _ => Ok(()),
            };
        }
        let Some(table) = self.table(relation)? else {
            return Ok(());
        };
        if self.suspended.contains(&table.source)
            || self.filtered(&table.source, txn.xid, txn.final_lsn)
        {
            return Ok(());
        }
        let (xid, commit_lsn, commit_time) = (txn.xid, txn.final_lsn, txn.commit_time);
        let Some(op) = self
            .through_chunk_filters(&table, op, xid, commit_lsn)
            .await?
        else {
            return Ok(());
        };
        if let Some(t) = self.txn.as_mut() {
            t.changes += 1;
        }
        match &op {
            Op::Insert(_) => self.incoming.inserts += 1,
            Op::Update { .. } => self.incoming.updates += 1,
            Op::Delete(_) => self.incoming.deletes += 1,
        }
        self.batch.first_commit_time.get_or_insert(commit_time);
        self.batch.started.get_or_insert_with(Instant::now);
        self.batch.change_bytes += op.data_bytes();
        self.batch.changes.push(Change {
            table,
            op,
            xid,
            commit_lsn,
        });
        if self.batch.changes.len() >= self.settings.batch_max_changes
            || self.batch.change_bytes as u64 >= self.settings.batch_max_bytes
        {
            self.flush_changes().await?;
        }
        Ok(())
    }

    async fn truncate(&mut self, relations: &[u32], restart_identity: bool) -> Result<()> {
        let Some(txn) = self.txn.as_ref() else {
            return Ok(());
        };
        if txn.skip {
            return Ok(());
        }
        let (xid, lsn) = (txn.xid, txn.final_lsn);
        let mut targets = Vec::new();
        for r in relations {
            if let Some(t) = self.table(*r)?
                && !self.suspended.contains(&t.source)
                && !self.filtered(&t.source, xid, lsn)
            {
                targets.push(t);
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        self.incoming.truncates += targets.len() as i64;
        if !self.settings.apply_truncate {
            tracing::warn!(
                tables = targets.len(),
                "the source truncated tables; not applied (apply_truncate = false)"
            );
            return Ok(());
        }
        // Everything before the TRUNCATE first, then the TRUNCATE itself.
        self.flush_changes().await?;
        self.ensure_open().await?;
        let names: Vec<&QualifiedName> = targets.iter().map(|t| &t.target).collect();
        self.target
            .batch("truncating", &sql::truncate(&names, restart_identity))
            .await?;
        self.batch.counts.truncates += targets.len() as i64;
        self.totals.truncates += targets.len() as i64;
        if let Some(t) = self.txn.as_mut() {
            t.changes += 1;
        }
        self.batch.started.get_or_insert_with(Instant::now);
        Ok(())
    }

    async fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .target
            .raw()
            .prepare(sql)
            .await
            .map_err(|e| EngineError::Pg(self.target.err("preparing an apply statement", e)))?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// Applies the pending sub-batch inside the open batch transaction.
    async fn flush_changes(&mut self) -> Result<()> {
        if self.batch.changes.is_empty() {
            return Ok(());
        }
        self.ensure_open().await?;
        let changes = std::mem::take(&mut self.batch.changes);
        self.batch.change_bytes = 0;
        let changes = self.apply_row_filters(changes).await?;
        let mut counts = OpCounts::default();
        for c in &changes {
            counts.count(&c.op);
        }
        // Bulk statements group changes by table, out of source order across tables: only
        // safe when foreign keys and triggers do not fire (replica role).
        let fallback = if self.replica_role {
            self.target
                .batch("starting a sub-batch", "SAVEPOINT pgferry_sub")
                .await?;
            let fallback = match self.fast_apply(&changes).await {
                Ok(fast) => fast.err(),
                // Lost, or out of disk or memory: change by change would fail the same.
                Err(e) if self.target.is_closed() || e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "bulk apply failed; applying change by change");
                    Some(Fallback::StatementFailed)
                }
            };
            let (context, sql) = match fallback {
                None => ("finishing a sub-batch", "RELEASE SAVEPOINT pgferry_sub"),
                Some(_) => (
                    "rolling back a sub-batch",
                    "ROLLBACK TO SAVEPOINT pgferry_sub",
                ),
            };
            self.target.batch(context, sql).await?;
            fallback
        } else {
            Some(Fallback::TriggersFire)
        };
        if let Some(reason) = fallback {
            *self.fallbacks.entry(reason.as_str()).or_default() += 1;
            counts.exceptions = self.careful_apply(&changes).await?;
        }
        self.batch.counts.add(&counts);
        let mut totals = counts;
        totals.transactions = 0;
        self.totals.add(&totals);
        Ok(())
    }

    /// Commits the open batch with its checkpoint, then acknowledges it.
    pub async fn commit(&mut self) -> Result<()> {
        if !self.can_commit() {
            return Ok(());
        }
        self.flush_changes().await?;
        let end = self.batch.end_lsn;
        if self.batch.open {
            let c = self.batch.counts;
            let target_ms = (now_pg() - self.batch.commit_time) / 1000;
            let batch = crate::control::AppliedBatch {
                end,
                commit_time: pg_timestamp_to_chrono(self.batch.commit_time),
                counts: c,
                target_ms,
            };
            crate::control::save_checkpoint(&self.target, &self.task, batch).await?;
            self.target
                .batch("committing an apply transaction", "COMMIT")
                .await?;
            tracing::debug!(end = %end, transactions = c.transactions,
                changes = c.inserts + c.updates + c.deletes, "applied a batch");
            self.lag.target_ms = Some(target_ms.max(0));
        }
        self.applied = self.applied.max(end);
        self.positions.flushed.fetch_max(end.0, Ordering::AcqRel);
        self.batch = Batch::default();
        self.commit_after_txn = false;
        Ok(())
    }

    /// Commits an open target transaction that holds no source transaction (only what
    /// resolving a relation did), and acknowledges `end`.
    async fn end_empty_batch(&mut self, end: Lsn) -> Result<()> {
        if self.batch.open {
            self.target
                .batch("committing an apply transaction", "COMMIT")
                .await?;
        }
        self.batch = Batch::default();
        self.positions.flushed.fetch_max(end.0, Ordering::AcqRel);
        Ok(())
    }

    /// Abandons the open batch (its source transactions will be streamed again).
    pub async fn rollback(&mut self) {
        if self.batch.open {
            let _ = self.target.batch("", "ROLLBACK").await;
        }
        self.batch = Batch::default();
        self.txn = None;
        self.commit_after_txn = false;
    }
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Unchanged => serde_json::Value::String("(unchanged TOAST value)".to_owned()),
        Value::Text(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        Value::Binary(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::Value::String(format!("\\x{hex}"))
        }
    }
}
