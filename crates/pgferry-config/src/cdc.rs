//! Settings of change data capture and of the error handling that follows DMS's
//! `ErrorBehavior`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to do with tables that have neither a primary key nor a replica identity.
/// PostgreSQL rejects `UPDATE` and `DELETE` on such a table once it is in a publication,
/// so publishing it carelessly would break the application on the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoKeyTables {
    /// Refuse to start, list the tables and the statements that fix them.
    #[default]
    Fail,
    /// Set `REPLICA IDENTITY FULL` on them (logged, and undone by `pgferry cleanup`).
    ReplicaIdentityFull,
    /// Leave them out of the migration, with a warning.
    Exclude,
}

/// An error policy, with DMS's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorPolicy {
    /// Skip the change silently.
    IgnoreRecord,
    /// Skip the change and record it, with the error, in `pgferry.apply_exceptions`.
    LogError,
    /// Record it and stop applying changes to that table.
    SuspendTable,
    /// Stop the task; the change is applied again on the next run.
    StopTask,
    /// (Updates only) the row is missing: insert it.
    InsertRecord,
    /// (Inserts only) the row exists: update it.
    UpdateRecord,
}

impl ErrorPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorPolicy::IgnoreRecord => "IGNORE_RECORD",
            ErrorPolicy::LogError => "LOG_ERROR",
            ErrorPolicy::SuspendTable => "SUSPEND_TABLE",
            ErrorPolicy::StopTask => "STOP_TASK",
            ErrorPolicy::InsertRecord => "INSERT_RECORD",
            ErrorPolicy::UpdateRecord => "UPDATE_RECORD",
        }
    }
}

/// DMS's `ErrorBehavior` settings that apply to PostgreSQL targets, with DMS's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorBehavior {
    /// An insert whose row already exists on the target.
    pub apply_error_insert_policy: ErrorPolicy,
    /// An update whose row is missing on the target.
    pub apply_error_update_policy: ErrorPolicy,
    /// A delete whose row is missing on the target.
    pub apply_error_delete_policy: ErrorPolicy,
    /// After `apply_error_escalation_count` apply errors, this policy applies instead.
    pub apply_error_escalation_policy: ErrorPolicy,
    /// 0: never escalate.
    pub apply_error_escalation_count: u64,
    /// A change the target rejects for its data (a constraint, a type conversion).
    pub data_error_policy: ErrorPolicy,
    pub data_error_escalation_policy: ErrorPolicy,
    /// 0: never escalate.
    pub data_error_escalation_count: u64,
    /// Retries of recoverable errors (lost connection, server restarting); -1: forever.
    pub recoverable_error_count: i64,
    /// Seconds before the first retry.
    pub recoverable_error_interval: u64,
    /// Each retry waits twice as long as the last, up to this many seconds.
    pub recoverable_error_throttling_max: u64,
}

impl Default for ErrorBehavior {
    fn default() -> Self {
        ErrorBehavior {
            apply_error_insert_policy: ErrorPolicy::LogError,
            apply_error_update_policy: ErrorPolicy::LogError,
            apply_error_delete_policy: ErrorPolicy::IgnoreRecord,
            apply_error_escalation_policy: ErrorPolicy::LogError,
            apply_error_escalation_count: 0,
            data_error_policy: ErrorPolicy::LogError,
            data_error_escalation_policy: ErrorPolicy::SuspendTable,
            data_error_escalation_count: 0,
            recoverable_error_count: -1,
            recoverable_error_interval: 5,
            recoverable_error_throttling_max: 1800,
        }
    }
}

/// Settings of the change stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdcSettings {
    pub no_key_tables: NoKeyTables,
    /// The logical replication slot; `pgferry_<task name>` by default.
    pub slot_name: Option<String>,
    /// An existing publication to stream from, instead of one pgferry creates.
    pub publication: Option<String>,
    /// At most this many changes per target transaction (source transactions are never
    /// split across two). DMS: `BatchApplyMemoryLimit`-like bound by count.
    pub batch_max_changes: usize,
    /// A batch commits at the latest this long after its first change. DMS:
    /// `BatchApplyTimeoutMin` / `CommitTimeout`.
    pub batch_max_delay: Duration,
    /// How often to write a heartbeat on the source, which keeps an idle slot moving and
    /// measures lag.
    pub heartbeat_interval: Duration,
    /// The stream is presumed dead when the source has sent nothing for this long, not
    /// even an answer to a keepalive that asked for one (libpq's `wal_receiver_timeout`).
    pub receive_timeout: Duration,
    /// Warn when the slot holds back more WAL than this on the source.
    pub wal_retention_warning: u64,
    /// Use binary tuple data when the source offers it and every column allows it.
    pub binary: bool,
    /// A sub-batch is sent once it holds this many bytes of row data. DMS:
    /// `BatchApplyMemoryLimit`.
    pub batch_max_bytes: u64,
    /// Apply a TRUNCATE of the source. DMS: `HandleSourceTableTruncated`.
    pub apply_truncate: bool,
    /// Add a column the source gained to the target; with `ddl`, apply every captured
    /// `ALTER` of a table. DMS: `HandleSourceTableAltered`.
    pub add_new_columns: bool,
    /// Capture schema changes on the source with event triggers and apply them in stream
    /// order (`docs/cdc.md`). DMS: on when `HandleSourceTableAltered` or
    /// `HandleSourceTableDropped` is true.
    pub ddl: bool,
    /// With `ddl`, drop the target's copy of a table the source dropped. DMS:
    /// `HandleSourceTableDropped`.
    pub apply_drop_table: bool,
    /// With `ddl`, what a schema change the target refuses does: `SUSPEND_TABLE` (the
    /// table's changes stop, the rest stream on) or `STOP_TASK`.
    pub ddl_error_policy: ErrorPolicy,
    pub errors: ErrorBehavior,
}

impl Default for CdcSettings {
    fn default() -> Self {
        CdcSettings {
            no_key_tables: NoKeyTables::Fail,
            slot_name: None,
            publication: None,
            batch_max_changes: 10_000,
            batch_max_delay: Duration::from_millis(50),
            heartbeat_interval: Duration::from_secs(5),
            receive_timeout: Duration::from_secs(60),
            wal_retention_warning: 10 * 1024 * 1024 * 1024,
            binary: true,
            batch_max_bytes: 32 * 1024 * 1024,
            apply_truncate: true,
            add_new_columns: true,
            ddl: false,
            apply_drop_table: true,
            ddl_error_policy: ErrorPolicy::SuspendTable,
            errors: ErrorBehavior::default(),
        }
    }
}

/// The `[cdc]` table of a task file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCdc {
    pub no_key_tables: Option<NoKeyTables>,
    pub slot_name: Option<String>,
    pub publication: Option<String>,
    pub batch_max_changes: Option<usize>,
    pub batch_max_delay_ms: Option<u64>,
    pub heartbeat_interval_s: Option<u64>,
    pub receive_timeout_s: Option<u64>,
    pub wal_retention_warning: Option<bytesize::ByteSize>,
    pub binary: Option<bool>,
    pub batch_max_bytes: Option<bytesize::ByteSize>,
    pub apply_truncate: Option<bool>,
    pub add_new_columns: Option<bool>,
    pub ddl: Option<bool>,
    pub apply_drop_table: Option<bool>,
    pub ddl_error_policy: Option<ErrorPolicy>,
}
