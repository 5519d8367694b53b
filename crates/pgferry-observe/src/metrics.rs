//! The metrics pgferry exposes, and the registry that renders them in Prometheus's text
//! format.
//!
//! Nothing on the data path writes here. A sampler reads the engine's live counters (plain
//! atomics) and the servers' statistics views on an interval and records one [`Sample`] per
//! series; a scrape only renders what the last sample left. So `/metrics` never waits for a
//! COPY or an apply transaction, and they never wait for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Counter or gauge, as Prometheus types them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; named `_total`.
    Counter,
    /// Goes up and down; sampled.
    Gauge,
}

/// One metric: its name, type, labels and what it means.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn gauge(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind: Kind::Gauge,
        labels,
        help,
    }
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind: Kind::Counter,
        labels,
        help,
    }
}

/// Every metric pgferry exposes. `docs/monitoring.md` documents each; a test keeps the two
/// in step.
pub const CATALOG: &[MetricInfo] = &[
    gauge(
        "pgferry_task_info",
        &["task", "migration_type", "version"],
        "Always 1; its labels name the task, its migration type and pgferry's version.",
    ),
    gauge(
        "pgferry_task_phase",
        &["phase"],
        "1 for the phase the run is in (planning, schema, load, indexes and constraints, sequences and statistics, cdc, done, ...), 0 for the others.",
    ),
    gauge(
        "pgferry_run_uptime_seconds",
        &[],
        "Seconds since this run started.",
    ),
    gauge(
        "pgferry_tables",
        &["state"],
        "Tables of the full load by state: pending, loading, loaded, failed.",
    ),
    counter(
        "pgferry_full_load_rows_total",
        &[],
        "Rows copied by the full load, all tables together.",
    ),
    counter(
        "pgferry_full_load_bytes_total",
        &[],
        "Bytes of COPY data moved by the full load, all tables together.",
    ),
    counter(
        "pgferry_full_load_table_rows_total",
        &["table"],
        "Rows copied by the full load, per source table.",
    ),
    counter(
        "pgferry_full_load_table_bytes_total",
        &["table"],
        "Bytes of COPY data moved by the full load, per source table.",
    ),
    gauge(
        "pgferry_full_load_table_progress_ratio",
        &["table"],
        "How far each table's load is, from 0 to 1 (rows against the planner's estimate, else chunks).",
    ),
    gauge(
        "pgferry_cdc_latency_source_seconds",
        &[],
        "DMS's CDCLatencySource: seconds between a change's commit on the source and its arrival at pgferry, as of the newest transaction or heartbeat received.",
    ),
    gauge(
        "pgferry_cdc_latency_target_seconds",
        &[],
        "DMS's CDCLatencyTarget: seconds between the source commit of the oldest change not yet committed on the target and now; when nothing waits, the source latency.",
    ),
    counter(
        "pgferry_cdc_changes_incoming_total",
        &["op"],
        "Row changes received from the source's replication stream for selected tables, by operation (insert, update, delete, truncate).",
    ),
    counter(
        "pgferry_cdc_changes_applied_total",
        &["op"],
        "Row changes committed on the target, by operation (insert, update, delete, truncate).",
    ),
    counter(
        "pgferry_cdc_transactions_applied_total",
        &[],
        "Source transactions committed on the target.",
    ),
    counter(
        "pgferry_cdc_apply_exceptions_total",
        &[],
        "Changes that failed to apply and were handled by an error policy (logged in pgferry.apply_exceptions).",
    ),
    gauge(
        "pgferry_source_slot_retained_wal_bytes",
        &[],
        "WAL the task's replication slot holds back on the source (pg_current_wal_lsn() - restart_lsn).",
    ),
    gauge(
        "pgferry_source_slot_wal_keep_used_ratio",
        &[],
        "Share of max_slot_wal_keep_size the task's slot uses (retained WAL over retained plus safe_wal_size); at 1 the source may invalidate the slot (a lost slot counts 1). 0 when the source sets no limit.",
    ),
    gauge(
        "pgferry_target_connections",
        &[],
        "Client connections to the target server (pg_stat_activity), as RDS's DatabaseConnections.",
    ),
    gauge(
        "pgferry_target_database_size_bytes",
        &[],
        "Size of the target database on disk (pg_database_size).",
    ),
    gauge(
        "pgferry_target_read_latency_seconds",
        &[],
        "Average time to read a data block on the target over the last sample interval (pg_stat_database blk_read_time / blks_read); needs track_io_timing = on.",
    ),
    gauge(
        "pgferry_target_write_latency_seconds",
        &[],
        "Average time to flush WAL on the target over the last sample interval (pg_stat_wal wal_sync_time / wal_sync); needs track_wal_io_timing = on.",
    ),
    gauge(
        "pgferry_command_metric",
        &["name"],
        "The number a [[command_metric]] command printed last, for what no SQL view shows (target CPU, say).",
    ),
    gauge(
        "pgferry_alarm_state",
        &["alarm", "state"],
        "1 for each alarm's current state (OK, ALARM, INSUFFICIENT_DATA), 0 for the other two.",
    ),
    counter(
        "pgferry_notifications_total",
        &["notifier", "outcome"],
        "Alarm notifications sent, by notifier and outcome (sent, failed).",
    ),
];

/// Looks a metric up by name.
pub fn info(name: &str) -> Option<&'static MetricInfo> {
    CATALOG.iter().find(|m| m.name == name)
}

/// One value of one series at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(name: &'static str, value: f64) -> Self {
        Sample {
            name,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, key: &str, value: impl Into<String>) -> Self {
        self.labels.push((key.to_owned(), value.into()));
        self
    }
}

/// The Prometheus registry of one run. Not the process-wide recorder of the `metrics`
/// crate: each run (and each test) has its own.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Counter values already recorded, so an absolute total can be turned into the
    /// increments the exporter wants; keyed by name and labels.
    last: Mutex<HashMap<Key, u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry that drops gauges not sampled for `stale_after` (a server that stopped
    /// answering shows as absent, not as its last value).
    pub fn new(stale_after: Duration) -> Self {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(
                metrics_util::MetricKindMask::GAUGE,
                Some(stale_after.max(Duration::from_secs(1))),
            )
            .build_recorder();
        let handle = recorder.handle();
        for m in CATALOG {
            let name = metrics::KeyName::from(m.name);
            let help = SharedString::from(m.help);
            match m.kind {
                Kind::Counter => recorder.describe_counter(name, None::<Unit>, help),
                Kind::Gauge => recorder.describe_gauge(name, None::<Unit>, help),
            }
        }
        Metrics {
            recorder,
            handle,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Records one sample per series. Counters take their running total; a total lower
    /// than before (a restarted run) starts the series again from there.
    pub fn record(&self, samples: &[Sample]) {
        static METADATA: Metadata<'static> =
            Metadata::new("pgferry", metrics::Level::INFO, Some("pgferry"));
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        for s in samples {
            let labels: Vec<Label> = s
                .labels
                .iter()
                .map(|(k, v)| Label::new(k.clone(), v.clone()))
                .collect();
            let key = Key::from_parts(s.name, labels);
            match info(s.name).map(|m| m.kind) {
                Some(Kind::Counter) => {
                    let total = s.value.max(0.0) as u64;
                    let counter = self.recorder.register_counter(&key, &METADATA);
                    let before = last.insert(key, total).unwrap_or(0);
                    if total >= before {
                        counter.increment(total - before);
                    } else {
                        counter.absolute(total);
                    }
                }
                Some(Kind::Gauge) => self.recorder.register_gauge(&key, &METADATA).set(s.value),
                None => tracing::debug!(metric = s.name, "not in the catalog; not exported"),
            }
        }
    }

    /// The Prometheus text format of every series.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented_and_named_the_prometheus_way() {
        let docs = include_str!("../../../docs/monitoring.md");
        for m in CATALOG {
            assert!(
                docs.contains(&format!("`{}`", m.name)),
                "{} is not in docs/monitoring.md",
                m.name
            );
            assert!(m.name.starts_with("pgferry_"), "{}", m.name);
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == Kind::Counter,
                "{}: counters, and only counters, end in _total",
                m.name
            );
            assert!(!m.help.is_empty());
        }
    }

    #[test]
    fn renders_help_type_and_labels() {
        let metrics = Metrics::new(Duration::from_secs(60));
        metrics.record(&[
            Sample::new("pgferry_cdc_changes_applied_total", 5.0).label("op", "insert"),
            Sample::new("pgferry_target_connections", 12.0),
        ]);
        metrics
            .record(&[Sample::new("pgferry_cdc_changes_applied_total", 9.0).label("op", "insert")]);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE pgferry_cdc_changes_applied_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP pgferry_target_connections Client connections"),
            "{text}"
        );
        assert!(
            text.contains("pgferry_cdc_changes_applied_total{op=\"insert\"} 9"),
            "{text}"
        );
        assert!(text.contains("pgferry_target_connections 12"), "{text}");
    }
}
