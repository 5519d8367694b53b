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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use pgferry_config::{CdcSettings, ErrorPolicy};
use pgferry_pg::error::sqlstate_is_data_error;
use pgferry_pg::lsn::pg_timestamp_to_chrono;
use pgferry_pg::pgoutput::{Message, OldImage, Relation, Tuple, Value};
use pgferry_pg::{Lsn, PgClient, PgError, QualifiedName, Side, describe_pg_error};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use crate::cdc::chunks::{ChunkFilters, Verdict};
use crate::cdc::sql;
use crate::cdc::stream::{Event, Positions};
use crate::cdc::tables::{self, Resolution, Scope, SnapshotFilter, TableInfo};
use crate::error::{EngineError, Result};

/// How long the stream must be quiet before a caught-up batch commits.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Row counts of the `VALUES` pieces of [`Applier::bulk_values`], largest first.
const VALUES_PIECES: [usize; 5] = [256, 64, 16, 4, 1];

/// Prefix of pgferry's heartbeat messages on the source.
pub const HEARTBEAT_PREFIX: &str = "pgferry_heartbeat";

/// A parameter sent as the bytes pgoutput delivered, in text or binary form.
#[derive(Debug)]
struct Param<'a> {
    value: Option<&'a [u8]>,
    binary: bool,
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.value {
            Some(v) => {
                out.extend_from_slice(v);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        if self.binary {
            Format::Binary
        } else {
            Format::Text
        }
    }

    to_sql_checked!();
}

/// A one-dimensional array of binary element values, for bulk statements in binary mode.
#[derive(Debug)]
struct ArrayParam<'a> {
    element_oid: u32,
    values: Vec<Option<&'a [u8]>>,
}

impl ToSql for ArrayParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let has_nulls = self.values.iter().any(Option::is_none);
        out.put_i32(i32::from(!self.values.is_empty()));
        out.put_i32(i32::from(has_nulls));
        out.put_u32(self.element_oid);
        if !self.values.is_empty() {
            out.put_i32(self.values.len() as i32);
            out.put_i32(1);
        }
        for v in &self.values {
            match v {
                Some(b) => {
                    out.put_i32(b.len() as i32);
                    out.put_slice(b);
                }
                None => out.put_i32(-1),
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column's bytes as the server sent them (binary for most types, text for `text`
/// results), for values read back from the source.
struct RawValue(Option<Bytes>);

impl<'a> tokio_postgres::types::FromSql<'a> for RawValue {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Some(Bytes::copy_from_slice(raw))))
    }

    fn from_sql_null(
        _ty: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

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

/// The net effect of a sub-batch's changes on one row.
#[derive(Debug, Clone)]
enum Net {
    /// Inserted (and maybe updated) in this sub-batch: the final row.
    Inserted(Tuple),
    /// Existed before: its original key, and the final value of each column set.
    Updated {
        original: KeyBytes,
        set: BTreeMap<usize, Value>,
    },
    /// Existed before and is deleted.
    Deleted(KeyBytes),
    /// Existed before, deleted, and inserted again: original key and the final row.
    Replaced(KeyBytes, Tuple),
    /// Inserted and deleted within the sub-batch: nothing to do.
    Gone,
}

/// Folds one table's changes, in order, into net effects per key. `None` when the
/// sequence is not one a bulk apply reproduces faithfully (a key reused in the same
/// sub-batch, an unchanged TOAST value in a key); the careful path handles those.
fn coalesce(changes: &[&Change]) -> Option<Vec<Net>> {
    let mut by_key: HashMap<KeyBytes, usize> = HashMap::with_capacity(changes.len());
    let mut nets: Vec<Net> = Vec::with_capacity(changes.len());
    for c in changes {
        match &c.op {
            Op::Insert(new) => {
                let k = c.key_of(new);
                match by_key.get(&k) {
                    None => {
                        by_key.insert(k, nets.len());
                        nets.push(Net::Inserted(new.clone()));
                    }
                    Some(&i) => {
                        nets[i] = match std::mem::replace(&mut nets[i], Net::Gone) {
                            Net::Deleted(orig) => Net::Replaced(orig, new.clone()),
                            Net::Gone => Net::Inserted(new.clone()),
                            _ => return None,
                        };
                    }
                }
            }
            Op::Update { old, new } => {
                let old_key = c.key_of(old.as_ref().map(|(_, t)| t).unwrap_or(new));
                let new_key = c.key_of(new);
                if new_key.iter().any(Option::is_none) {
                    return None;
                }
                let i = match by_key.remove(&old_key) {
                    None => {
                        nets.push(Net::Updated {
                            original: old_key,
                            set: sent_columns(new),
                        });
                        nets.len() - 1
                    }
                    Some(i) => {
                        nets[i] = match std::mem::replace(&mut nets[i], Net::Gone) {
                            Net::Inserted(row) => Net::Inserted(merge_row(row, new)),
                            Net::Replaced(orig, row) => Net::Replaced(orig, merge_row(row, new)),
                            Net::Updated { original, mut set } => {
                                set.extend(sent_columns(new));
                                Net::Updated { original, set }
                            }
                            Net::Deleted(_) | Net::Gone => return None,
                        };
                        i
                    }
                };
                if by_key.contains_key(&new_key) {
                    return None;
                }
                by_key.insert(new_key, i);
            }
            Op::Delete(old) => {
                let k = c.key_of(old);
                match by_key.get(&k) {
                    None => {
                        by_key.insert(k.clone(), nets.len());
                        nets.push(Net::Deleted(k));
                    }
                    Some(&i) => {
                        nets[i] = match std::mem::replace(&mut nets[i], Net::Gone) {
                            Net::Inserted(_) => Net::Gone,
                            Net::Replaced(orig, _) | Net::Updated { original: orig, .. } => {
                                Net::Deleted(orig)
                            }
                            Net::Deleted(_) | Net::Gone => return None,
                        };
                    }
                }
            }
        }
    }
    Some(nets)
}

/// The columns an update sent (all but unchanged TOAST values).
fn sent_columns(new: &Tuple) -> BTreeMap<usize, Value> {
    new.iter()
        .enumerate()
        .filter(|(_, v)| **v != Value::Unchanged)
        .map(|(i, v)| (i, v.clone()))
        .collect()
}

fn merge_row(mut row: Tuple, new: &Tuple) -> Tuple {
    for (i, v) in new.iter().enumerate() {
        if *v != Value::Unchanged
            && let Some(slot) = row.get_mut(i)
        {
            *slot = v.clone();
        }
    }
    row
}

/// Counts by operation.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct OpCounts {
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub truncates: i64,
    pub exceptions: i64,
    pub transactions: i64,
}

impl OpCounts {
    fn add(&mut self, o: &OpCounts) {
        self.inserts += o.inserts;
        self.updates += o.updates;
        self.deletes += o.deletes;
        self.truncates += o.truncates;
        self.exceptions += o.exceptions;
        self.transactions += o.transactions;
    }

    fn count(&mut self, op: &Op) {
        match op {
            Op::Insert(_) => self.inserts += 1,
            Op::Update { .. } => self.updates += 1,
            Op::Delete(_) => self.deletes += 1,
        }
    }
}

/// Live lag figures, shared with status reporting.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Lag {
    /// Milliseconds from a change's commit on the source to its arrival here.
    pub source_ms: Option<i64>,
    /// Milliseconds from a change's commit on the source to its commit on the target.
    pub target_ms: Option<i64>,
}

/// Silence longer than this is no longer the ordinary gap between a source's messages
/// (heartbeats every few seconds, keepalives asked for every two).
const SILENCE_GRACE_MS: i64 = 5_000;

impl Lag {
    /// The lag after `silence_ms` without a word from the source: at least the silence,
    /// once it outlasts the ordinary gaps. A stream that hears nothing falls behind by at
    /// least that much, so the figure (and the lag alarm) grows through a network cut or
    /// an outage instead of showing the last good value.
    pub fn through_silence(self, silence_ms: Option<i64>) -> Lag {
        match silence_ms {
            Some(s) if s > SILENCE_GRACE_MS => Lag {
                source_ms: Some(self.source_ms.unwrap_or(0).max(s)),
                target_ms: Some(self.target_ms.unwrap_or(0).max(s)),
            },
            _ => self,
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
    Conflict(String),
    Failed(String),
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
    pub totals: OpCounts,
    /// Changes received for tables in scope, before they are applied.
    pub incoming: OpCounts,
    pub lag: Lag,
    positions: Arc<Positions>,
}

fn now_pg() -> i64 {
    pgferry_pg::lsn::pg_timestamp_now()
}

fn target_err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> EngineError + '_ {
    move |e| EngineError::Pg(PgError::query(Side::Target, context, e))
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
        let state = target
            .query_one(
                "reading the CDC checkpoint",
                "SELECT coalesce(applied_lsn, consistent_lsn)::text FROM pgferry.cdc_state
                 WHERE task = $1",
                &[&task],
            )
            .await?;
        let applied: Lsn = state.get::<_, String>(0).parse().unwrap_or(Lsn::ZERO);
        let mut suspended = HashSet::new();
        let mut filters = HashMap::new();
        for row in target
            .query(
                "reading CDC table state",
                "SELECT schema_name, table_name, suspended, snapshot_filter
                 FROM pgferry.cdc_table WHERE task = $1",
                &[&task],
            )
            .await?
        {
            let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            if row.get::<_, bool>(2) {
                suspended.insert(name.clone());
            }
            if let Some(f) = row
                .get::<_, Option<String>>(3)
                .and_then(|s| SnapshotFilter::parse(&s))
            {
                filters.insert(name, f);
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
            totals: OpCounts::default(),
            incoming: OpCounts::default(),
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
            && (self.batch.changes.len() >= self.settings.batch_max_changes
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
        // Resolution may alter the target table; do it inside the current batch.
        self.ensure_open().await?;
        let id = rel.id;
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
                side: Side::Source,
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
            Some(Resolution::Ignore) => Ok(None),
            None => Err(EngineError::Pg(PgError::Protocol {
                side: Side::Source,
                message: format!("a change for relation {relation} arrived before its description"),
            })),
        }
    }

    /// Whether this transaction's changes to `table` are already in the target's copy.
    fn filtered(&self, table: &QualifiedName, xid: u32) -> bool {
        self.filters.get(table).is_some_and(|f| f.saw(xid))
    }

    async fn change(&mut self, relation: u32, op: Op) -> Result<()> {
        let Some(txn) = self.txn.as_ref() else {
            return Err(EngineError::Pg(PgError::Protocol {
                side: Side::Source,
                message: "a change arrived outside a transaction".to_owned(),
            }));
        };
        if txn.skip {
            return Ok(());
        }
        let Some(table) = self.table(relation)? else {
            return Ok(());
        };
        if self.suspended.contains(&table.source) || self.filtered(&table.source, txn.xid) {
            return Ok(());
        }
        let (xid, commit_lsn, commit_time) = (txn.xid, txn.final_lsn, txn.commit_time);
        let Some(op) = self.through_chunk_filters(&table, op, xid).await? else {
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

    /// The part of a change that the chunk filters of its table let through ([`super::chunks`]):
    /// all of it, nothing, the delete of the old row, or the insert of the new one (its
    /// unchanged large values read from the source's row; nothing when the source no longer
    /// has that row, whose later changes then come in the stream).
    async fn through_chunk_filters(
        &mut self,
        table: &TableInfo,
        op: Op,
        xid: u32,
    ) -> Result<Option<Op>> {
        let Some(filters) = self.chunk_filters.get(&table.source) else {
            return Ok(Some(op));
        };
        let Some(pos) = table.source_cols.iter().position(|c| *c == filters.column) else {
            return Ok(Some(op));
        };
        let key = |t: &Tuple| super::chunks::integer_key(t.get(pos));
        let (old, new) = match &op {
            Op::Insert(new) => (key(new), key(new)),
            Op::Delete(old) => (key(old), key(old)),
            Op::Update { old, new } => (key(old.as_ref().map(|(_, t)| t).unwrap_or(new)), key(new)),
        };
        match (filters.verdict(old, new, xid), op) {
            (Verdict::Apply, op) => Ok(Some(op)),
            (Verdict::Skip, _) => Ok(None),
            (
                Verdict::DeleteOld,
                Op::Update {
                    old: Some((_, old)),
                    ..
                },
            ) => Ok(Some(Op::Delete(old))),
            (Verdict::InsertNew, Op::Update { new, .. }) => {
                Ok(self.fill_unchanged(table, new, pos).await?.map(Op::Insert))
            }
            // Inserts and deletes have one key, and an update without an old image keeps
            // its key: the two verdicts agree.
            (_, op) => Ok(Some(op)),
        }
    }

    /// `row` with its unchanged (unsent) values read from the source's current row of the
    /// same key, in the stream's form; `None` when the source has no such row.
    async fn fill_unchanged(
        &self,
        table: &TableInfo,
        mut row: Tuple,
        key: usize,
    ) -> Result<Option<Tuple>> {
        let missing: Vec<usize> = (0..row.len())
            .filter(|i| row[*i] == Value::Unchanged)
            .collect();
        if missing.is_empty() {
            return Ok(Some(row));
        }
        let Some(k) = super::chunks::integer_key(row.get(key)) else {
            return Ok(None);
        };
        let select: Vec<String> = missing
            .iter()
            .map(|i| {
                let c = pgferry_pg::quote_ident(&table.source_cols[*i]);
                if self.binary {
                    c
                } else {
                    format!("CASE WHEN {c} IS NULL THEN NULL ELSE pg_catalog.format('%s', {c}) END")
                }
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM ONLY {} WHERE {} = $1::int8",
            select.join(", "),
            table.source.quoted(),
            pgferry_pg::quote_ident(&table.source_cols[key])
        );
        let Some(found) = self
            .source
            .query_opt("reading a row's unchanged values", &sql, &[&k])
            .await?
        else {
            return Ok(None);
        };
        for (n, i) in missing.iter().enumerate() {
            let raw: RawValue = found.get(n);
            row[*i] = match raw.0 {
                None => Value::Null,
                Some(b) if self.binary => Value::Binary(b),
                Some(b) => Value::Text(b),
            };
        }
        Ok(Some(row))
    }

    async fn truncate(&mut self, relations: &[u32], restart_identity: bool) -> Result<()> {
        let Some(txn) = self.txn.as_ref() else {
            return Ok(());
        };
        if txn.skip {
            return Ok(());
        }
        let xid = txn.xid;
        let mut targets = Vec::new();
        for r in relations {
            if let Some(t) = self.table(*r)?
                && !self.suspended.contains(&t.source)
                && !self.filtered(&t.source, xid)
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
            .map_err(target_err("preparing an apply statement"))?;
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
        let fast = self.replica_role;
        let mut done = false;
        if fast {
            self.target
                .batch("starting a sub-batch", "SAVEPOINT pgferry_sub")
                .await?;
            match self.fast_apply(&changes).await {
                Ok(true) => {
                    self.target
                        .batch("finishing a sub-batch", "RELEASE SAVEPOINT pgferry_sub")
                        .await?;
                    done = true;
                }
                Ok(false) => {}
                // Lost, or out of disk or memory: change by change would fail the same.
                Err(e) if self.target.is_closed() || e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "bulk apply failed; applying change by change")
                }
            }
            if !done {
                self.target
                    .batch(
                        "rolling back a sub-batch",
                        "ROLLBACK TO SAVEPOINT pgferry_sub",
                    )
                    .await?;
            }
        }
        if !done {
            counts.exceptions = self.careful_apply(&changes).await?;
        }
        self.batch.counts.add(&counts);
        let mut totals = counts;
        totals.transactions = 0;
        self.totals.add(&totals);
        Ok(())
    }

    /// Bulk apply. `Ok(false)` when a row count says something did not go as planned.
    async fn fast_apply(&mut self, changes: &[Change]) -> Result<bool> {
        // Grouped by table description (its address): changes before and after a
        // Relation message that altered the table stay apart.
        let mut order: Vec<Arc<TableInfo>> = Vec::new();
        let mut by_table: HashMap<usize, Vec<&Change>> = HashMap::new();
        for c in changes {
            let ptr = Arc::as_ptr(&c.table) as usize;
            let entry = by_table.entry(ptr).or_default();
            if entry.is_empty() {
                order.push(c.table.clone());
            }
            entry.push(c);
        }
        for table in order {
            let list = &by_table[&(Arc::as_ptr(&table) as usize)];
            let applied = if table.has_key() {
                match coalesce(list) {
                    Some(nets) => self.apply_nets(&table, &nets).await?,
                    None => false,
                }
            } else {
                self.apply_keyless(&table, list).await?
            };
            if !applied {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn apply_nets(&mut self, table: &Arc<TableInfo>, nets: &[Net]) -> Result<bool> {
        let key_cols: Vec<&sql::Col> = table.key.iter().filter_map(|i| table.col(*i)).collect();
        if key_cols.len() != table.key.len() {
            return Ok(false);
        }
        // Deletes (including the old rows of replaced ones) first, then updates, then
        // inserts: a key freed in this sub-batch is free before it is taken again.
        let deletes: Vec<&KeyBytes> = nets
            .iter()
            .filter_map(|n| match n {
                Net::Deleted(k) | Net::Replaced(k, _) => Some(k),
                _ => None,
            })
            .collect();
        if !deletes.is_empty() {
            let binary = self.binary;
            let sql = |rows| sql::bulk_delete(&table.target, &key_cols, binary, rows);
            let columns: Vec<Vec<Option<&[u8]>>> = (0..table.key.len())
                .map(|k| deletes.iter().map(|key| key[k].as_deref()).collect())
                .collect();
            let n = self.bulk(&sql, table, &table.key, &columns).await?;
            // A filtered table lacks the rows its filter keeps out: deleting one is no error.
            let expected = deletes.len() as u64;
            if n != expected && !(table.filter.is_some() && n < expected) {
                return Ok(false);
            }
        }
        // Updates, grouped by the set of columns they set.
        /// An updated row: its original key and the columns it sets.
        type UpdatedRow<'a> = (&'a KeyBytes, &'a BTreeMap<usize, Value>);
        let mut groups: BTreeMap<Vec<usize>, Vec<UpdatedRow<'_>>> = BTreeMap::new();
        for n in nets {
            if let Net::Updated { original, set } = n {
                let cols: Vec<usize> = set
                    .iter()
                    .filter(|(i, v)| {
                        let changed = table
                            .key
                            .iter()
                            .position(|k| k == *i)
                            .map(|k| v.bytes() != original[k].as_ref());
                        table.settable(**i, changed)
                    })
                    .map(|(i, _)| *i)
                    .collect();
                groups.entry(cols).or_default().push((original, set));
            }
        }
        for (cols, rows) in &groups {
            if cols.is_empty() {
                continue;
            }
            let set_cols: Vec<&sql::Col> = cols.iter().filter_map(|i| table.col(*i)).collect();
            let binary = self.binary;
            let sql = |rows| sql::bulk_update(&table.target, &key_cols, &set_cols, binary, rows);
            let mut positions = table.key.clone();
            positions.extend(cols.iter().copied());
            let mut columns: Vec<Vec<Option<&[u8]>>> = (0..table.key.len())
                .map(|k| rows.iter().map(|(key, _)| key[k].as_deref()).collect())
                .collect();
            for c in cols {
                columns.push(
                    rows.iter()
                        .map(|(_, set)| set.get(c).and_then(|v| v.bytes()).map(|b| &b[..]))
                        .collect(),
                );
            }
            let n = self.bulk(&sql, table, &positions, &columns).await?;
            if n != rows.len() as u64 {
                return Ok(false);
            }
        }
        let inserts: Vec<&Tuple> = nets
            .iter()
            .filter_map(|n| match n {
                Net::Inserted(row) | Net::Replaced(_, row) => Some(row),
                _ => None,
            })
            .collect();
        self.bulk_insert(table, &inserts).await
    }

    /// Inserts whole rows with one statement. `Ok(false)` when a row was skipped (its key
    /// exists) or cannot be inserted whole (an unchanged TOAST value).
    async fn bulk_insert(&mut self, table: &Arc<TableInfo>, rows: &[&Tuple]) -> Result<bool> {
        if rows.is_empty() {
            return Ok(true);
        }
        let cols: Vec<usize> = (0..table.cols.len())
            .filter(|i| table.cols[*i].is_some())
            .collect();
        if rows
            .iter()
            .any(|row| cols.iter().any(|i| row.get(*i) == Some(&Value::Unchanged)))
        {
            return Ok(false);
        }
        let insert_cols: Vec<&sql::Col> = cols.iter().filter_map(|i| table.col(*i)).collect();
        let binary = self.binary;
        let sql = |rows| sql::bulk_insert(&table.target, &insert_cols, binary, rows);
        let columns: Vec<Vec<Option<&[u8]>>> = cols
            .iter()
            .map(|i| {
                rows.iter()
                    .map(|row| row.get(*i).and_then(|v| v.bytes()).map(|b| &b[..]))
                    .collect()
            })
            .collect();
        let n = self.bulk(&sql, table, &cols, &columns).await?;
        Ok(n == rows.len() as u64)
    }

    /// A table without a key, in the fast path: inserts only (an append-only log, the
    /// common case) go in one statement; anything else goes change by change, in order,
    /// each expected to touch exactly one row. `Ok(false)` when one did not.
    async fn apply_keyless(&mut self, table: &Arc<TableInfo>, changes: &[&Change]) -> Result<bool> {
        let inserts: Vec<&Tuple> = changes
            .iter()
            .filter_map(|c| match &c.op {
                Op::Insert(row) => Some(row),
                _ => None,
            })
            .collect();
        if inserts.len() == changes.len() {
            return self.bulk_insert(table, &inserts).await;
        }
        for c in changes {
            if !matches!(self.apply_one(c).await?, Outcome::Applied) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs a bulk statement with one array parameter per column.
    async fn bulk(
        &mut self,
        sql: &(dyn Fn(sql::Rows) -> String + Sync),
        table: &TableInfo,
        positions: &[usize],
        columns: &[Vec<Option<&[u8]>>],
    ) -> Result<u64> {
        let arrays = positions
            .iter()
            .any(|i| table.col(*i).is_some_and(|c| c.type_sql.ends_with("[]")));
        if self.binary && arrays {
            return self.bulk_values(sql, positions, columns).await;
        }
        let statement = self.statement(&sql(sql::Rows::Arrays)).await?;
        let rows = if self.binary {
            let params: Vec<ArrayParam<'_>> = positions
                .iter()
                .zip(columns)
                .map(|(i, values)| ArrayParam {
                    element_oid: table.cols[*i].as_ref().map_or(0, |c| c.type_oid),
                    values: values.clone(),
                })
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            self.target.raw().execute(&statement, &refs).await
        } else {
            let mut params: Vec<Vec<Option<&str>>> = Vec::with_capacity(columns.len());
            for values in columns {
                let mut texts = Vec::with_capacity(values.len());
                for v in values {
                    texts.push(match v {
                        Some(b) => Some(std::str::from_utf8(b).map_err(|_| {
                            EngineError::Pg(PgError::Protocol {
                                side: Side::Source,
                                message: "a text value is not valid UTF-8".to_owned(),
                            })
                        })?),
                        None => None,
                    });
                }
                params.push(texts);
            }
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            self.target.raw().execute(&statement, &refs).await
        };
        rows.map_err(target_err("applying a bulk change"))
    }

    /// A bulk statement whose rows come from `VALUES`, one binary parameter per value: a
    /// binary array of array values would be flattened by `unnest`. Rows go in pieces of
    /// [`VALUES_PIECES`] sizes, so a handful of prepared statements serve every batch, and
    /// no statement passes PostgreSQL's 65,535 parameters.
    async fn bulk_values(
        &mut self,
        sql: &(dyn Fn(sql::Rows) -> String + Sync),
        positions: &[usize],
        columns: &[Vec<Option<&[u8]>>],
    ) -> Result<u64> {
        let rows = columns.first().map_or(0, Vec::len);
        let width = positions.len().max(1);
        let mut done = 0;
        let mut total = 0;
        while done < rows {
            let piece = VALUES_PIECES
                .iter()
                .copied()
                .find(|p| *p <= rows - done && p * width <= u16::MAX as usize)
                .unwrap_or(1);
            let statement = self.statement(&sql(sql::Rows::Values(piece))).await?;
            let params: Vec<Param<'_>> = (done..done + piece)
                .flat_map(|r| {
                    columns.iter().map(move |column| Param {
                        value: column[r],
                        binary: true,
                    })
                })
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            total += self
                .target
                .raw()
                .execute(&statement, &refs)
                .await
                .map_err(target_err("applying a bulk change"))?;
            done += piece;
        }
        Ok(total)
    }

    /// Applies the row filters of filtered tables: an insert whose row the filter keeps
    /// out is dropped, an update whose new row it keeps out becomes a delete (the row left
    /// the filter's range), and deletes stay (the row may be there). The filter runs on the
    /// target, in PostgreSQL's own comparison rules, once per table and sub-batch.
    async fn apply_row_filters(&mut self, changes: Vec<Change>) -> Result<Vec<Change>> {
        if !changes.iter().any(|c| c.table.filter.is_some()) {
            return Ok(changes);
        }
        if self.binary {
            return Err(EngineError::Mapping(
                "a filter needs changes in text form, but this task's stream was set up in \
                 binary; set cdc.binary = false, run `pgferry cleanup`, and start the task again"
                    .to_owned(),
            ));
        }
        // The rows to evaluate, per table description.
        let mut pending: HashMap<usize, (Arc<TableInfo>, Vec<usize>)> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            if c.table.filter.is_none() || matches!(c.op, Op::Delete(_)) {
                continue;
            }
            let entry = pending
                .entry(Arc::as_ptr(&c.table) as usize)
                .or_insert_with(|| (c.table.clone(), Vec::new()));
            entry.1.push(i);
        }
        let mut passes = vec![true; changes.len()];
        for (table, indexes) in pending.values() {
            let Some(filter) = &table.filter else {
                continue;
            };
            let value = |c: &Change, col: usize| -> Option<Option<String>> {
                let from = |t: &Tuple| match t.get(col) {
                    Some(Value::Unchanged) | None => None,
                    Some(v) => Some(v.bytes().map(|b| String::from_utf8_lossy(b).into_owned())),
                };
                match &c.op {
                    Op::Insert(new) => from(new),
                    Op::Update { old, new } => {
                        from(new).or_else(|| old.as_ref().and_then(|(_, t)| from(t)))
                    }
                    Op::Delete(_) => None,
                }
            };
            // A change whose filter column was not sent (an unchanged large value) keeps
            // its row where it is: it stays an update.
            let known: Vec<usize> = indexes
                .iter()
                .copied()
                .filter(|i| {
                    filter
                        .columns
                        .iter()
                        .all(|col| value(&changes[*i], *col).is_some())
                })
                .collect();
            if known.is_empty() {
                continue;
            }
            let arrays: Vec<Vec<Option<String>>> = filter
                .columns
                .iter()
                .map(|col| {
                    known
                        .iter()
                        .map(|i| value(&changes[*i], *col).flatten())
                        .collect()
                })
                .collect();
            let statement = self.statement(&filter.sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let rows = self
                .target
                .raw()
                .query(&statement, &refs)
                .await
                .map_err(target_err("evaluating a row filter"))?;
            let kept: HashSet<i64> = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
            for (n, i) in known.iter().enumerate() {
                passes[*i] = kept.contains(&(n as i64 + 1));
            }
        }
        let mut out = Vec::with_capacity(changes.len());
        for (c, pass) in changes.into_iter().zip(passes) {
            match (pass, c.op) {
                (true, op) => out.push(Change { op, ..c }),
                (false, Op::Insert(_)) => {}
                (false, Op::Update { old, new }) => {
                    let identity = old.map(|(_, t)| t).unwrap_or(new);
                    out.push(Change {
                        op: Op::Delete(identity),
                        ..c
                    });
                }
                (false, op @ Op::Delete(_)) => out.push(Change { op, ..c }),
            }
        }
        Ok(out)
    }

    /// Applies changes one by one, in source order, each under a savepoint; failures go to
    /// the error policies. Returns the number of changes recorded as exceptions.
    async fn careful_apply(&mut self, changes: &[Change]) -> Result<i64> {
        let mut exceptions = 0;
        for c in changes {
            if self.suspended.contains(&c.table.source) {
                continue;
            }
            self.target
                .batch("applying a change", "SAVEPOINT pgferry_change")
                .await?;
            let outcome = self.apply_one(c).await?;
            match outcome {
                Outcome::Applied => {}
                Outcome::Conflict(error) => {
                    self.target
                        .batch(
                            "recovering from a conflict",
                            "ROLLBACK TO SAVEPOINT pgferry_change",
                        )
                        .await?;
                    exceptions += self.conflict(c, &error).await?;
                }
                Outcome::Failed(error) => {
                    self.target
                        .batch(
                            "recovering from an error",
                            "ROLLBACK TO SAVEPOINT pgferry_change",
                        )
                        .await?;
                    exceptions += self.data_error(c, &error).await?;
                }
            }
            self.target
                .batch("applying a change", "RELEASE SAVEPOINT pgferry_change")
                .await?;
        }
        Ok(exceptions)
    }

    /// One change as one statement.
    async fn apply_one(&mut self, c: &Change) -> Result<Outcome> {
        let table = &c.table;
        let by_key = table.has_key();
        // A full-row identity compares the columns whose old value was sent: PostgreSQL
        // may send a large TOASTed old value as "unchanged" even in a full old row.
        let old_image = c.identity();
        let ident_positions: Vec<usize> = table
            .identity()
            .into_iter()
            .filter(|i| by_key || old_image.and_then(|t| t.get(*i)) != Some(&Value::Unchanged))
            .collect();
        let ident_cols: Vec<&sql::Col> = ident_positions
            .iter()
            .filter_map(|i| table.col(*i))
            .collect();
        let (sql, values): (String, Vec<Option<&[u8]>>) = match &c.op {
            Op::Insert(new) => {
                let cols: Vec<usize> = (0..table.cols.len())
                    .filter(|i| table.cols[*i].is_some())
                    .collect();
                let insert_cols: Vec<&sql::Col> =
                    cols.iter().filter_map(|i| table.col(*i)).collect();
                (
                    sql::row_insert(&table.target, &insert_cols),
                    cols.iter()
                        .map(|i| new.get(*i).and_then(|v| v.bytes()).map(|b| &b[..]))
                        .collect(),
                )
            }
            Op::Update { new, .. } => {
                let ident = c.identity().unwrap_or(new);
                let set: Vec<usize> = (0..table.cols.len())
                    .filter(|i| {
                        let changed = ident_positions
                            .contains(i)
                            .then(|| ident.get(*i) != new.get(*i));
                        new.get(*i) != Some(&Value::Unchanged) && table.settable(*i, changed)
                    })
                    .collect();
                let set_cols: Vec<&sql::Col> = set.iter().filter_map(|i| table.col(*i)).collect();
                let mut values: Vec<Option<&[u8]>> = set
                    .iter()
                    .map(|i| new.get(*i).and_then(|v| v.bytes()).map(|b| &b[..]))
                    .collect();
                values.extend(
                    ident_positions
                        .iter()
                        .map(|i| ident.get(*i).and_then(|v| v.bytes()).map(|b| &b[..])),
                );
                (
                    sql::row_update(&table.target, &set_cols, &ident_cols, by_key, self.binary),
                    values,
                )
            }
            Op::Delete(old) => (
                sql::row_delete(&table.target, &ident_cols, by_key, self.binary),
                ident_positions
                    .iter()
                    .map(|i| old.get(*i).and_then(|v| v.bytes()).map(|b| &b[..]))
                    .collect(),
            ),
        };
        let statement = self.statement(&sql).await?;
        let binary = self.binary;
        let params: Vec<Param<'_>> = values.iter().map(|v| Param { value: *v, binary }).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        match self.target.raw().execute(&statement, &refs).await {
            Ok(0) if !matches!(c.op, Op::Insert(_)) => Ok(Outcome::Conflict(
                "the row does not exist on the target".to_owned(),
            )),
            Ok(_) => Ok(Outcome::Applied),
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "23505") => {
                Ok(Outcome::Conflict(describe_pg_error(&e)))
            }
            Err(e)
                if e.as_db_error()
                    .is_some_and(|d| sqlstate_is_data_error(d.code().code())) =>
            {
                Ok(Outcome::Failed(describe_pg_error(&e)))
            }
            // A full disk, a shutdown, a missing privilege: nothing about this change.
            // The batch fails whole, so the checkpoint stays before it; transient ones are
            // retried with backoff by the stream's loop.
            Err(e) => Err(EngineError::Pg(PgError::query(
                Side::Target,
                "applying a change",
                e,
            ))),
        }
    }

    /// A row that exists when it should not, or is missing when it should exist.
    async fn conflict(&mut self, c: &Change, error: &str) -> Result<i64> {
        // In a filtered table a missing row is expected: the filter kept it out. A delete
        // of it has nothing to do; an update brings it into the filter's range, so the row
        // is inserted whole (when the change carries every value).
        if c.table.filter.is_some() {
            match &c.op {
                Op::Delete(_) => return Ok(0),
                Op::Update { new, .. } if !new.contains(&Value::Unchanged) => {
                    let as_insert = Change {
                        op: Op::Insert(new.clone()),
                        ..c.clone()
                    };
                    return self.retry_as(&as_insert, c, error).await;
                }
                Op::Update { .. } => {
                    return self
                        .record(
                            c,
                            ErrorPolicy::LogError,
                            "the row enters the filter's range, but the change left a large \
                             value unchanged, so the row cannot be built from it",
                        )
                        .await;
                }
                Op::Insert(_) => {}
            }
        }
        self.apply_errors += 1;
        let e = &self.settings.errors;
        let mut policy = match c.op {
            Op::Insert(_) => e.apply_error_insert_policy,
            Op::Update { .. } => e.apply_error_update_policy,
            Op::Delete(_) => e.apply_error_delete_policy,
        };
        if e.apply_error_escalation_count > 0 && self.apply_errors >= e.apply_error_escalation_count
        {
            policy = e.apply_error_escalation_policy;
        }
        match (policy, &c.op) {
            (ErrorPolicy::InsertRecord, Op::Update { new, .. })
                if !new.contains(&Value::Unchanged) =>
            {
                let as_insert = Change {
                    op: Op::Insert(new.clone()),
                    ..c.clone()
                };
                self.retry_as(&as_insert, c, error).await
            }
            (ErrorPolicy::UpdateRecord, Op::Insert(new)) if c.table.has_key() => {
                let as_update = Change {
                    op: Op::Update {
                        old: None,
                        new: new.clone(),
                    },
                    ..c.clone()
                };
                self.retry_as(&as_update, c, error).await
            }
            (ErrorPolicy::InsertRecord | ErrorPolicy::UpdateRecord, _) => {
                self.record(c, ErrorPolicy::LogError, error).await
            }
            (policy, _) => self.record(c, policy, error).await,
        }
    }

    async fn retry_as(
        &mut self,
        replacement: &Change,
        original: &Change,
        error: &str,
    ) -> Result<i64> {
        self.target
            .batch("applying a change", "SAVEPOINT pgferry_retry")
            .await?;
        match Box::pin(self.apply_one(replacement)).await? {
            Outcome::Applied => {
                self.target
                    .batch("applying a change", "RELEASE SAVEPOINT pgferry_retry")
                    .await?;
                Ok(0)
            }
            Outcome::Conflict(e2) | Outcome::Failed(e2) => {
                self.target
                    .batch("applying a change", "ROLLBACK TO SAVEPOINT pgferry_retry")
                    .await?;
                self.record(
                    original,
                    ErrorPolicy::LogError,
                    &format!("{error}; then {e2}"),
                )
                .await
            }
        }
    }

    /// A change the target rejects for its data.
    async fn data_error(&mut self, c: &Change, error: &str) -> Result<i64> {
        self.data_errors += 1;
        let e = &self.settings.errors;
        let policy = if e.data_error_escalation_count > 0
            && self.data_errors >= e.data_error_escalation_count
        {
            e.data_error_escalation_policy
        } else {
            e.data_error_policy
        };
        self.record(c, policy, error).await
    }

    /// Carries out a policy for a change that failed. Returns 1 when the change is
    /// recorded as an exception.
    async fn record(&mut self, c: &Change, policy: ErrorPolicy, error: &str) -> Result<i64> {
        match policy {
            ErrorPolicy::IgnoreRecord => Ok(0),
            ErrorPolicy::StopTask => Err(EngineError::ApplyStopped {
                table: c.table.source.to_string(),
                operation: c.op.name().to_owned(),
                error: error.to_owned(),
            }),
            ErrorPolicy::LogError
            | ErrorPolicy::SuspendTable
            | ErrorPolicy::InsertRecord
            | ErrorPolicy::UpdateRecord => {
                let change = self.change_json(c).await;
                self.target
                    .execute(
                        "recording an apply exception",
                        "INSERT INTO pgferry.apply_exceptions
                             (task, commit_lsn, xid, schema_name, table_name, operation, policy,
                              error, change)
                         VALUES ($1, $2::text::pg_lsn, $3, $4, $5, $6, $7, $8, $9)",
                        &[
                            &self.task,
                            &c.commit_lsn.to_string(),
                            &i64::from(c.xid),
                            &c.table.source.schema,
                            &c.table.source.name,
                            &c.op.name(),
                            &policy.as_str(),
                            &error,
                            &change,
                        ],
                    )
                    .await?;
                tracing::warn!(table = %c.table.source, operation = c.op.name(),
                    policy = policy.as_str(), error, "change not applied");
                if policy == ErrorPolicy::SuspendTable {
                    self.suspend(&c.table.source, error).await?;
                }
                Ok(1)
            }
        }
    }

    async fn suspend(&mut self, table: &QualifiedName, reason: &str) -> Result<()> {
        self.suspended.insert(table.clone());
        self.target
            .execute(
                "suspending a table",
                "INSERT INTO pgferry.cdc_table (task, schema_name, table_name, suspended,
                                                suspended_reason)
                 VALUES ($1, $2, $3, true, $4)
                 ON CONFLICT (task, schema_name, table_name)
                 DO UPDATE SET suspended = true, suspended_reason = excluded.suspended_reason",
                &[&self.task, &table.schema, &table.name, &reason],
            )
            .await?;
        crate::control::event(
            self.target.raw(),
            &self.task,
            crate::control::Level::Error,
            "cdc",
            &format!("changes to {table} are suspended: {reason}"),
            None,
        )
        .await
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
            self.target
                .execute(
                    "writing the CDC checkpoint",
                    "UPDATE pgferry.cdc_state SET applied_lsn = $2::text::pg_lsn,
                         applied_commit_time = $3, inserts = inserts + $4,
                         updates = updates + $5, deletes = deletes + $6,
                         truncates = truncates + $7, transactions = transactions + $8,
                         exceptions = exceptions + $9, target_latency_ms = $10,
                         updated_at = now()
                     WHERE task = $1",
                    &[
                        &self.task,
                        &end.to_string(),
                        &pg_timestamp_to_chrono(self.batch.commit_time),
                        &c.inserts,
                        &c.updates,
                        &c.deletes,
                        &c.truncates,
                        &c.transactions,
                        &c.exceptions,
                        &target_ms,
                    ],
                )
                .await?;
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
        Ok(())
    }

    /// Abandons the open batch (its source transactions will be streamed again).
    pub async fn rollback(&mut self) {
        if self.batch.open {
            let _ = self.target.batch("", "ROLLBACK").await;
        }
        self.batch = Batch::default();
        self.txn = None;
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

impl Applier {
    /// A tuple as JSON keyed by column name, for people repairing a change by hand. Binary
    /// values are turned into their text form by the target (inside a savepoint, so a value
    /// it cannot read leaves the batch intact and is shown as hex instead).
    async fn tuple_json(&mut self, table: &TableInfo, t: &Tuple) -> serde_json::Value {
        let mut values: Vec<serde_json::Value> = t.iter().map(value_json).collect();
        let binary: Vec<(usize, &sql::Col, &[u8])> = t
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match (v, table.col(i)) {
                (Value::Binary(b), Some(c)) => Some((i, c, &b[..])),
                _ => None,
            })
            .collect();
        if !binary.is_empty() {
            let select = binary
                .iter()
                .enumerate()
                .map(|(n, (_, c, _))| format!("${}::{}::text", n + 1, c.type_sql))
                .collect::<Vec<_>>()
                .join(", ");
            let params: Vec<Param<'_>> = binary
                .iter()
                .map(|(_, _, b)| Param {
                    value: Some(b),
                    binary: true,
                })
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let raw = self.target.raw();
            if raw
                .batch_execute("SAVEPOINT pgferry_readable")
                .await
                .is_ok()
            {
                match raw.query_one(&format!("SELECT {select}"), &refs).await {
                    Ok(row) => {
                        for (n, (i, _, _)) in binary.iter().enumerate() {
                            if let Ok(Some(text)) = row.try_get::<_, Option<String>>(n) {
                                values[*i] = serde_json::Value::String(text);
                            }
                        }
                        let _ = raw
                            .batch_execute("RELEASE SAVEPOINT pgferry_readable")
                            .await;
                    }
                    Err(_) => {
                        let _ = raw
                            .batch_execute("ROLLBACK TO SAVEPOINT pgferry_readable")
                            .await;
                    }
                }
            }
        }
        let mut map = serde_json::Map::new();
        for (i, v) in values.into_iter().enumerate() {
            let name = table
                .col(i)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| format!("column {}", i + 1));
            map.insert(name, v);
        }
        serde_json::Value::Object(map)
    }

    /// The change as JSON, for `pgferry.apply_exceptions`.
    async fn change_json(&mut self, c: &Change) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("operation".into(), c.op.name().into());
        match &c.op {
            Op::Insert(new) => {
                obj.insert("new".into(), self.tuple_json(&c.table, new).await);
            }
            Op::Update { old, new } => {
                if let Some((_, o)) = old {
                    obj.insert("old".into(), self.tuple_json(&c.table, o).await);
                }
                obj.insert("new".into(), self.tuple_json(&c.table, new).await);
            }
            Op::Delete(old) => {
                obj.insert("old".into(), self.tuple_json(&c.table, old).await);
            }
        }
        serde_json::Value::Object(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::tables::TargetCol;

    fn table() -> Arc<TableInfo> {
        let col = |n: &str| {
            Some(TargetCol {
                col: sql::Col {
                    name: n.to_owned(),
                    type_sql: "text".to_owned(),
                },
                type_oid: 25,
                always_identity: false,
            })
        };
        Arc::new(TableInfo {
            source: QualifiedName::new("s", "t"),
            target: QualifiedName::new("s", "t"),
            cols: vec![col("id"), col("a"), col("b")],
            key: vec![0],
            filter: None,
            source_cols: vec!["id".into(), "a".into(), "b".into()],
        })
    }

    fn v(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn change(t: &Arc<TableInfo>, op: Op) -> Change {
        Change {
            table: t.clone(),
            op,
            xid: 1,
            commit_lsn: Lsn(1),
        }
    }

    #[test]
    fn an_insert_and_its_updates_become_one_insert_of_the_final_row() {
        let t = table();
        let cs = [
            change(&t, Op::Insert(vec![v("1"), v("a0"), v("b0")])),
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("1"), v("a1"), Value::Unchanged],
                },
            ),
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("1"), Value::Unchanged, v("b2")],
                },
            ),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let nets = coalesce(&refs).unwrap();
        assert_eq!(nets.len(), 1);
        let Net::Inserted(row) = &nets[0] else {
            panic!("{nets:?}")
        };
        assert_eq!(row, &vec![v("1"), v("a1"), v("b2")]);
    }

    #[test]
    fn updates_of_an_existing_row_keep_only_the_sent_columns() {
        let t = table();
        let cs = [
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("1"), v("a1"), Value::Unchanged],
                },
            ),
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("1"), v("a2"), Value::Unchanged],
                },
            ),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let nets = coalesce(&refs).unwrap();
        let Net::Updated { original, set } = &nets[0] else {
            panic!()
        };
        assert_eq!(original, &vec![Some(Bytes::from_static(b"1"))]);
        assert_eq!(
            set.keys().copied().collect::<Vec<_>>(),
            [0, 1],
            "TOAST column untouched"
        );
        assert_eq!(set[&1], v("a2"));
    }

    #[test]
    fn key_changes_follow_the_row_and_deletes_cancel_inserts() {
        let t = table();
        let cs = [
            change(
                &t,
                Op::Update {
                    old: Some((OldImage::Key, vec![v("1"), Value::Null, Value::Null])),
                    new: vec![v("2"), v("a"), v("b")],
                },
            ),
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("2"), v("a2"), v("b")],
                },
            ),
            change(&t, Op::Insert(vec![v("9"), v("x"), v("y")])),
            change(&t, Op::Delete(vec![v("9"), Value::Null, Value::Null])),
            change(&t, Op::Delete(vec![v("5"), Value::Null, Value::Null])),
            change(&t, Op::Insert(vec![v("5"), v("new"), v("row")])),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let nets = coalesce(&refs).unwrap();
        assert_eq!(nets.len(), 3);
        let Net::Updated { original, set } = &nets[0] else {
            panic!()
        };
        assert_eq!(
            original,
            &vec![Some(Bytes::from_static(b"1"))],
            "found by its old key"
        );
        assert_eq!(set[&0], v("2"));
        assert_eq!(set[&1], v("a2"));
        assert!(matches!(nets[1], Net::Gone));
        assert!(
            matches!(&nets[2], Net::Replaced(k, _) if k == &vec![Some(Bytes::from_static(b"5"))])
        );
    }

    #[test]
    fn sequences_a_bulk_apply_cannot_reproduce_go_the_careful_way() {
        let t = table();
        let twice = [
            change(&t, Op::Insert(vec![v("1"), v("a"), v("b")])),
            change(&t, Op::Insert(vec![v("1"), v("a"), v("b")])),
        ];
        assert!(coalesce(&twice.iter().collect::<Vec<_>>()).is_none());
        let onto_taken_key = [
            change(&t, Op::Delete(vec![v("2"), Value::Null, Value::Null])),
            change(
                &t,
                Op::Update {
                    old: Some((OldImage::Key, vec![v("1"), Value::Null, Value::Null])),
                    new: vec![v("2"), v("a"), v("b")],
                },
            ),
        ];
        assert!(coalesce(&onto_taken_key.iter().collect::<Vec<_>>()).is_none());
    }

    #[test]
    fn binary_arrays_are_encoded_for_array_recv() {
        let p = ArrayParam {
            element_oid: 23,
            values: vec![Some(&[0, 0, 0, 7]), None],
        };
        let mut out = BytesMut::new();
        p.to_sql(&Type::INT4_ARRAY, &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[
                0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 23, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0,
                7, 255, 255, 255, 255
            ]
        );
        let empty = ArrayParam {
            element_oid: 23,
            values: vec![],
        };
        let mut out = BytesMut::new();
        empty.to_sql(&Type::INT4_ARRAY, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23]);
    }
}
