//! What one sampling round reads: the run's live counters, and the servers' statistics
//! views.

use std::collections::BTreeMap;
use std::time::Duration;

use pgferry_config::Task;
use pgferry_observe::Sample;
use pgferry_pg::{ConnInfo, PgClient, Side};

use crate::progress::{RunProgress, TableState};

/// Phases a run goes through, so the one-hot `pgferry_task_phase` resets the others.
const PHASES: &[&str] = &[
    "starting",
    "connecting",
    "planning",
    "schema",
    "load",
    "indexes and constraints",
    "sequences and statistics",
    "cdc",
    "cdc: reconnecting",
    "done",
];

/// The samples of the run's own counters. Reads atomics and short-held locks only.
pub fn progress_samples(task: &Task, progress: &RunProgress) -> Vec<Sample> {
    let mut out = vec![
        Sample::new("pgferry_task_info", 1.0)
            .label("task", task.name.clone())
            .label("migration_type", task.migration_type.as_str())
            .label("version", env!("CARGO_PKG_VERSION")),
        Sample::new(
            "pgferry_run_uptime_seconds",
            progress.started.elapsed().as_secs_f64(),
        ),
    ];
    let phase = progress.phase();
    for p in PHASES {
        out.push(
            Sample::new("pgferry_task_phase", f64::from(u8::from(phase == *p))).label("phase", *p),
        );
    }
    if !PHASES.contains(&phase.as_str()) {
        out.push(Sample::new("pgferry_task_phase", 1.0).label("phase", phase));
    }

    let tables = progress.tables();
    let mut by_state: BTreeMap<&str, u32> = [
        TableState::Pending,
        TableState::Loading,
        TableState::Loaded,
        TableState::Failed,
    ]
    .into_iter()
    .map(|s| (s.as_str(), 0))
    .collect();
    let (mut rows, mut bytes) = (0i64, 0i64);
    for t in &tables {
        *by_state.entry(t.state().as_str()).or_default() += 1;
        let name = t.name.to_string();
        rows += t.rows();
        bytes += t.bytes();
        out.push(
            Sample::new("pgferry_full_load_table_rows_total", t.rows() as f64)
                .label("table", name.clone()),
        );
        out.push(
            Sample::new("pgferry_full_load_table_bytes_total", t.bytes() as f64)
                .label("table", name.clone()),
        );
        out.push(
            Sample::new("pgferry_full_load_table_progress_ratio", t.fraction())
                .label("table", name),
        );
    }
    for (state, n) in by_state {
        out.push(Sample::new("pgferry_tables", f64::from(n)).label("state", state));
    }
    out.push(Sample::new("pgferry_full_load_rows_total", rows as f64));
    out.push(Sample::new("pgferry_full_load_bytes_total", bytes as f64));

    if let Some(cdc) = progress.cdc() {
        if let Some(ms) = cdc.lag.source_ms {
            out.push(Sample::new(
                "pgferry_cdc_latency_source_seconds",
                ms as f64 / 1000.0,
            ));
        }
        if let Some(ms) = cdc.lag.target_ms {
            out.push(Sample::new(
                "pgferry_cdc_latency_target_seconds",
                ms as f64 / 1000.0,
            ));
        }
        for (name, counts) in [
            ("pgferry_cdc_changes_incoming_total", &cdc.incoming),
            ("pgferry_cdc_changes_applied_total", &cdc.totals),
        ] {
            for (op, n) in [
                ("insert", counts.inserts),
                ("update", counts.updates),
                ("delete", counts.deletes),
                ("truncate", counts.truncates),
            ] {
                out.push(Sample::new(name, n as f64).label("op", op));
            }
        }
        out.push(Sample::new(
            "pgferry_cdc_transactions_applied_total",
            cdc.totals.transactions as f64,
        ));
        out.push(Sample::new(
            "pgferry_cdc_apply_exceptions_total",
            cdc.totals.exceptions as f64,
        ));
        for reason in crate::cdc::apply::Fallback::ALL.map(|f| f.as_str()) {
            let n = cdc.fallbacks.get(reason).copied().unwrap_or(0);
            out.push(
                Sample::new("pgferry_cdc_bulk_fallbacks_total", n as f64).label("reason", reason),
            );
        }
        for outcome in ["applied", "kept", "failed"] {
            let n = cdc.schema_changes.get(outcome).copied().unwrap_or(0);
            out.push(
                Sample::new("pgferry_cdc_schema_changes_total", n as f64).label("outcome", outcome),
            );
        }
    }
    out
}

/// Statements on a server pgferry only watches may take this long; a slow answer is a
/// missing sample, never a stalled monitor.
const STATEMENT_TIMEOUT: &str = "SET statement_timeout = '5s'; SET lock_timeout = '1s'";

/// `pg_database_size` walks the database's files; on a big database it is read this often
/// at most, and the last value is repeated in between.
const SIZE_EVERY: Duration = Duration::from_secs(15);

/// Counters of the last round, for latencies over the interval.
#[derive(Debug, Default, Clone, Copy)]
struct IoCounters {
    read_ms: f64,
    blocks_read: f64,
    sync_ms: Option<f64>,
    syncs: Option<f64>,
}

/// A connection to one server for its statistics, made again after a failure.
#[derive(Debug)]
struct Watched {
    side: Side,
    info: ConnInfo,
    client: Option<PgClient>,
    version: i32,
}

impl Watched {
    async fn client(&mut self) -> Option<&PgClient> {
        if self.client.as_ref().is_some_and(PgClient::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            match pgferry_pg::connect(self.side, &self.info, "pgferry monitor").await {
                Ok(c) => {
                    if c.batch("setting up the monitor session", STATEMENT_TIMEOUT)
                        .await
                        .is_err()
                    {
                        return None;
                    }
                    self.version = c
                        .query_one("", "SELECT current_setting('server_version_num')::int", &[])
                        .await
                        .map(|r| r.get(0))
                        .unwrap_or(0);
                    self.client = Some(c);
                }
                Err(e) => {
                    tracing::debug!(side = %self.side, "monitor cannot connect: {e}");
                    return None;
                }
            }
        }
        self.client.as_ref()
    }

    fn failed(&mut self, what: &str, e: impl std::fmt::Display) {
        tracing::debug!(side = %self.side, "monitor: {what}: {e}");
        self.client = None;
    }
}

/// Samples the target's and source's statistics views.
#[derive(Debug)]
pub struct ServerStats {
    target: Watched,
    source: Watched,
    slot: Option<String>,
    /// The reverse stream's slot on the target, after a cutover.
    reverse_slot: Option<String>,
    last_io: Option<(std::time::Instant, IoCounters)>,
    size: Option<(std::time::Instant, f64)>,
}

impl ServerStats {
    pub fn new(
        source: ConnInfo,
        target: ConnInfo,
        slot: Option<String>,
        reverse_slot: Option<String>,
    ) -> Self {
        let watched = |side, info| Watched {
            side,
            info,
            client: None,
            version: 0,
        };
        ServerStats {
            target: watched(Side::Target, target),
            source: watched(Side::Source, source),
            slot,
            reverse_slot,
            last_io: None,
            size: None,
        }
    }

    /// The monitor's own target connection, for the alarm state it saves.
    pub async fn target_client(&mut self) -> Option<&PgClient> {
        self.target.client().await
    }

    /// Adds what the servers answer now; a server that does not answer adds nothing.
    pub async fn sample(&mut self, out: &mut Vec<Sample>) {
        self.sample_target(out).await;
        self.sample_reverse_slot(out).await;
        self.sample_source(out).await;
    }

    async fn sample_target(&mut self, out: &mut Vec<Sample>) {
        let size_due = self.size.is_none_or(|(at, _)| at.elapsed() >= SIZE_EVERY);
        if self.target.client().await.is_none() {
            return;
        }
        let version = self.target.version;
        let Some(client) = self.target.client.as_ref() else {
            return;
        };
        let row = client
            .query_one(
                "reading the target's statistics",
                "SELECT (SELECT count(*) FROM pg_stat_activity
                         WHERE backend_type = 'client backend')::float8,
                        CASE WHEN $1 THEN pg_database_size(current_database())::float8 END,
                        d.blk_read_time, d.blks_read::float8,
                        current_setting('track_io_timing')::bool
                 FROM pg_stat_database d WHERE d.datname = current_database()",
                &[&size_due],
            )
            .await;
        let row = match row {
            Ok(r) => r,
            Err(e) => return self.target.failed("target statistics", e),
        };
        out.push(Sample::new("pgferry_target_connections", row.get(0)));
        let now = std::time::Instant::now();
        if let Some(size) = row.get::<_, Option<f64>>(1) {
            self.size = Some((now, size));
        }
        if let Some((_, size)) = self.size {
            out.push(Sample::new("pgferry_target_database_size_bytes", size));
        }
        let mut io = IoCounters {
            read_ms: row.get(2),
            blocks_read: row.get(3),
            sync_ms: None,
            syncs: None,
        };
        let read_timing: bool = row.get(4);
        let mut wal_timing = false;
        if version >= 140_000 {
            match client
                .query_one(
                    "reading the target's WAL statistics",
                    "SELECT wal_sync_time, wal_sync::float8,
                            current_setting('track_wal_io_timing')::bool
                     FROM pg_stat_wal",
                    &[],
                )
                .await
            {
                Ok(r) => {
                    io.sync_ms = Some(r.get(0));
                    io.syncs = Some(r.get(1));
                    wal_timing = r.get(2);
                }
                Err(e) => return self.target.failed("target WAL statistics", e),
            }
        }
        if let Some((_, before)) = self.last_io {
            if read_timing {
                out.push(Sample::new(
                    "pgferry_target_read_latency_seconds",
                    per_event_seconds(
                        io.read_ms - before.read_ms,
                        io.blocks_read - before.blocks_read,
                    ),
                ));
            }
            if wal_timing
                && let (Some(ms), Some(n), Some(ms0), Some(n0)) =
                    (io.sync_ms, io.syncs, before.sync_ms, before.syncs)
            {
                out.push(Sample::new(
                    "pgferry_target_write_latency_seconds",
                    per_event_seconds(ms - ms0, n - n0),
                ));
            }
        }
        self.last_io = Some((now, io));
    }

    async fn sample_source(&mut self, out: &mut Vec<Sample>) {
        let Some(slot) = self.slot.clone() else {
            return;
        };
        let Some(client) = self.source.client().await else {
            return;
        };
        match crate::cdc::source::slot_info(client, &slot).await {
            Ok(info) => slot_samples(info, SOURCE_SLOT, out),
            Err(e) => self.source.failed("source slot", e),
        }
    }

    /// The reverse stream's slot, which exists on the target between a cutover and a
    /// rollback or `finish`.
    async fn sample_reverse_slot(&mut self, out: &mut Vec<Sample>) {
        let Some(slot) = self.reverse_slot.clone() else {
            return;
        };
        let Some(client) = self.target.client().await else {
            return;
        };
        match crate::cdc::source::slot_info(client, &slot).await {
            Ok(info) => slot_samples(info, TARGET_SLOT, out),
            Err(e) => self.target.failed("reverse slot", e),
        }
    }
}

/// The names of a slot's two figures: retained WAL, share of `max_slot_wal_keep_size`.
type SlotMetrics = (&'static str, &'static str);

const SOURCE_SLOT: SlotMetrics = (
    "pgferry_source_slot_retained_wal_bytes",
    "pgferry_source_slot_wal_keep_used_ratio",
);
const TARGET_SLOT: SlotMetrics = (
    "pgferry_target_slot_retained_wal_bytes",
    "pgferry_target_slot_wal_keep_used_ratio",
);

/// A slot's figures; nothing when there is no slot (not made yet, or dropped).
fn slot_samples(
    info: Option<crate::cdc::source::SlotInfo>,
    names: SlotMetrics,
    out: &mut Vec<Sample>,
) {
    let Some(info) = info else {
        return;
    };
    if let Some(b) = info.retained_bytes {
        out.push(Sample::new(names.0, b as f64));
    }
    if let Some(used) = info.keep_size_used() {
        out.push(Sample::new(names.1, used));
    }
}

/// Milliseconds over a number of events, in seconds per event; 0 when nothing happened
/// (CloudWatch's latency with no I/O) or the counters were reset.
fn per_event_seconds(ms: f64, events: f64) -> f64 {
    if events > 0.0 && ms >= 0.0 {
        ms / events / 1000.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reverse_slot_on_the_target_is_sampled() {
        let c = pgferry_testkit::Cluster::start().unwrap();
        c.create_database("app").await.unwrap();
        c.execute(
            "app",
            "SELECT pg_create_logical_replication_slot('pgferry_t_reverse', 'pgoutput')",
        )
        .await
        .unwrap();
        let info = ConnInfo::resolve(&c.url("app"), None).unwrap();
        let mut stats = ServerStats::new(
            info.clone(),
            info,
            None,
            Some("pgferry_t_reverse".to_owned()),
        );
        let mut out = Vec::new();
        stats.sample(&mut out).await;
        let names: Vec<&str> = out.iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"pgferry_target_slot_retained_wal_bytes"),
            "{names:?}"
        );
        assert!(
            !names.contains(&"pgferry_source_slot_retained_wal_bytes"),
            "{names:?}"
        );
        // Once the slot is dropped (rollback, finish), nothing is said of it.
        c.execute(
            "app",
            "SELECT pg_drop_replication_slot('pgferry_t_reverse')",
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        stats.sample(&mut out).await;
        assert!(
            !out.iter()
                .any(|s| s.name.starts_with("pgferry_target_slot"))
        );
    }

    #[test]
    fn latency_per_event() {
        assert_eq!(per_event_seconds(50.0, 10.0), 0.005);
        assert_eq!(per_event_seconds(0.0, 0.0), 0.0);
        assert_eq!(per_event_seconds(-5.0, 3.0), 0.0);
    }
}
