//! Live figures of a change stream (positions, lag, counts), shared with progress
//! displays, `status` and the metrics sampler. Plain data: nothing here talks to a server.

use serde::Serialize;

/// Live CDC figures, for progress displays and status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CdcLive {
    pub applied_lsn: Option<String>,
    pub received_lsn: Option<String>,
    pub lag: Lag,
    /// Changes applied (committed on the target).
    pub totals: OpCounts,
    /// Changes received for tables in scope.
    pub incoming: OpCounts,
    pub wal_retained_bytes: Option<i64>,
    pub binary: bool,
    /// Sub-batches the bulk fast path handed to the careful one, by reason.
    pub fallbacks: std::collections::BTreeMap<&'static str, i64>,
    /// Captured schema changes handled, by outcome (`applied`, `kept`, `failed`).
    pub schema_changes: std::collections::BTreeMap<&'static str, i64>,
}

/// Counts by operation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OpCounts {
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub truncates: i64,
    pub exceptions: i64,
    pub transactions: i64,
}

impl OpCounts {
    pub(crate) fn add(&mut self, o: &OpCounts) {
        self.inserts += o.inserts;
        self.updates += o.updates;
        self.deletes += o.deletes;
        self.truncates += o.truncates;
        self.exceptions += o.exceptions;
        self.transactions += o.transactions;
    }
}

/// Live lag figures, shared with status reporting.
#[derive(Debug, Default, Clone, Copy, Serialize)]
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
