//! The metrics pgferry exports: names, types, labels and meaning. pgferry-observe renders
//! them; the task file's alarms are checked against them when the file is read.

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
        "pgferry_cdc_bulk_fallbacks_total",
        &["reason"],
        "Sub-batches applied change by change instead of in bulk, by reason (triggers_fire, not_coalescable, key_not_mapped, row_missing, unsent_value, key_exists, keyless_mismatch, statement_failed).",
    ),
    counter(
        "pgferry_cdc_schema_changes_total",
        &["outcome"],
        "Schema changes captured on the source ([cdc] ddl) and handled by this run, by outcome: applied on the target, kept off it by the task's settings, or failed (pgferry.ddl_log has each).",
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
        "pgferry_target_slot_retained_wal_bytes",
        &[],
        "After a cutover: WAL the reverse stream's slot holds back on the target.",
    ),
    gauge(
        "pgferry_target_slot_wal_keep_used_ratio",
        &[],
        "After a cutover: share of the target's max_slot_wal_keep_size the reverse stream's slot uses.",
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
