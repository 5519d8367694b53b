//! The task file and its validated form.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::cdc::{CdcSettings, ErrorBehavior, RawCdc};
use crate::dms;
use crate::error::ConfigError;
use crate::explain::{Explanation, Origin};
use crate::mapping::{Filter, LoadOrder, Mapping, TableSettings, Transform};
use crate::monitoring::{CommandMetric, Monitoring, RawHttp, RawMonitoring, RawSections};
use crate::selection::{Selection, TableRule};

/// Tables bigger than this are split into chunks of about this size. 256 MB keeps a chunk's
/// COPY under a few seconds on ordinary hardware, so a resumed load repeats little work and
/// two workers can share one big table, while the per-chunk bookkeeping stays negligible.
pub const DEFAULT_CHUNK_SIZE: u64 = 256 * 1024 * 1024;

/// Smallest accepted chunk size (1MB as written in a task file); below this the per-chunk
/// transaction dominates.
const MIN_CHUNK_SIZE: u64 = 1_000_000;
/// Less than this per task would make every index build spill to disk.
const MIN_INDEX_MEMORY: u64 = 1_000_000;
/// Beyond a terabyte a chunk is no longer a piece of a table.
const MAX_CHUNK_SIZE: u64 = 1_000_000_000_000;

/// What the task does, named as DMS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationType {
    /// Copy the tables once, from one consistent snapshot.
    FullLoad,
    /// Stream changes only, from a slot that already exists or is created now.
    Cdc,
    /// Copy the tables, then stream every change made since the copy's snapshot.
    FullLoadAndCdc,
}

impl MigrationType {
    /// Whether the task streams changes and so needs logical replication on the source.
    pub fn needs_cdc(self) -> bool {
        matches!(self, Self::Cdc | Self::FullLoadAndCdc)
    }

    /// Whether the task copies table contents.
    pub fn needs_full_load(self) -> bool {
        matches!(self, Self::FullLoad | Self::FullLoadAndCdc)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FullLoad => "full-load",
            Self::Cdc => "cdc",
            Self::FullLoadAndCdc => "full-load-and-cdc",
        }
    }
}

impl fmt::Display for MigrationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do when a selected table already exists on the target, as DMS's
/// `TargetTablePrepMode`, plus `fail`, the safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetTablePrepMode {
    /// Refuse to start and list the tables in the way.
    #[default]
    Fail,
    /// Keep the existing tables and their rows; load into them as they are.
    DoNothing,
    /// Keep the existing table definitions, empty them, then load.
    Truncate,
    /// Drop the existing tables (with CASCADE) and create them from the source's definition.
    DropAndCreate,
}

impl TargetTablePrepMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::DoNothing => "do_nothing",
            Self::Truncate => "truncate",
            Self::DropAndCreate => "drop_and_create",
        }
    }
}

impl FromStr for TargetTablePrepMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(Self::Fail),
            "do_nothing" => Ok(Self::DoNothing),
            "truncate" | "truncate_before_load" => Ok(Self::Truncate),
            "drop_and_create" => Ok(Self::DropAndCreate),
            other => Err(format!(
                "unknown target_table_prep_mode {other:?}; expected fail, do_nothing, truncate \
                 or drop_and_create"
            )),
        }
    }
}

/// Where a password comes from. Never the task file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The named environment variable.
    Env(String),
    /// The first line of a file (relative paths are relative to the task file).
    File(PathBuf),
    /// The first line a shell command prints, for vaults and cloud secret managers.
    Command(String),
}

/// One side of the migration: a libpq connection string plus where its password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A libpq URI (`postgres://user@host:port/db?sslmode=verify-full`) or keyword string
    /// (`host=... dbname=...`). `PG*` environment variables fill what it leaves out.
    pub url: String,
    pub password: Option<PasswordSource>,
}

/// Settings of the full load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullLoadSettings {
    /// Parallel COPY pipes, and parallel index builds afterwards.
    pub jobs: usize,
    /// Tables bigger than this (in bytes on disk) are split into chunks of about this size.
    pub chunk_size: u64,
    /// Memory shared by the index builds that run at once (`maintenance_work_mem` times
    /// `jobs`); `None` lets pgferry size it from the target's `effective_cache_size`.
    pub index_memory: Option<u64>,
    pub target_table_prep_mode: TargetTablePrepMode,
    /// Restore object owners (`ALTER ... OWNER TO`); the roles must exist on the target.
    pub keep_owners: bool,
    /// Restore `GRANT`s; the roles must exist on the target.
    pub keep_privileges: bool,
}

/// A validated task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Names the task in the control schema, so several tasks can share one target.
    pub name: String,
    pub migration_type: MigrationType,
    pub source: Endpoint,
    pub target: Endpoint,
    pub selection: Selection,
    pub full_load: FullLoadSettings,
    pub cdc: CdcSettings,
    /// Transformation, filter and table-settings rules.
    pub mapping: Mapping,
    /// Parallel checksums of `pgferry validate` unless its command line says otherwise.
    pub validation_jobs: Option<usize>,
    /// A `tracing` filter for the task's logs (`RUST_LOG` syntax).
    pub log_filter: Option<String>,
    /// Metrics sampling, alarms, notifiers and the HTTP server.
    pub monitoring: Monitoring,
    /// Where each setting came from, and what pgferry does differently from DMS.
    pub explanation: Explanation,
    /// The task file's path, for messages; `None` for tasks built in code.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    url: Option<String>,
    password: Option<toml::Value>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: Option<String>,
    migration_type: MigrationType,
    source: RawEndpoint,
    target: RawEndpoint,
    jobs: Option<usize>,
    chunk_size: Option<Size>,
    index_memory: Option<Size>,
    target_table_prep_mode: Option<TargetTablePrepMode>,
    #[serde(default)]
    keep_owners: bool,
    #[serde(default)]
    keep_privileges: bool,
    #[serde(default)]
    include: Vec<TableRule>,
    #[serde(default)]
    exclude: Vec<TableRule>,
    cdc: Option<RawCdc>,
    error_behavior: Option<toml::Table>,
    /// A DMS table-mappings JSON file, read as it is.
    table_mappings: Option<PathBuf>,
    /// A DMS task-settings JSON file, read as it is.
    task_settings: Option<PathBuf>,
    #[serde(default)]
    transform: Vec<Transform>,
    #[serde(default)]
    filter: Vec<Filter>,
    #[serde(default)]
    table_settings: Vec<TableSettings>,
    #[serde(default)]
    load_order: Vec<LoadOrder>,
    validation: Option<RawValidation>,
    log_filter: Option<String>,
    monitoring: Option<RawMonitoring>,
    http: Option<RawHttp>,
    #[serde(default)]
    alarm: Vec<crate::alarm::AlarmRule>,
    #[serde(default)]
    command_metric: Vec<CommandMetric>,
    #[serde(default)]
    notifier: Vec<crate::notifier::NotifierConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    jobs: Option<usize>,
}

/// The most parallel workers a task may ask for, in the file or on the command line. Each
/// worker holds a connection to each server; beyond this a source's `max_connections` is
/// the limit, long before any gain.
pub const MAX_JOBS: usize = 256;

/// Checks a number of parallel workers, wherever it came from, with one message.
pub fn check_jobs(jobs: usize) -> Result<usize, String> {
    if (1..=MAX_JOBS).contains(&jobs) {
        Ok(jobs)
    } else {
        Err(format!("is {jobs}; it must be between 1 and {MAX_JOBS}"))
    }
}

/// The default parallelism: one job per core, at least two so one big table never leaves
/// the other pipe idle, and at most eight so a laptop does not swamp a production source.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

impl Task {
    /// Reads and validates a task file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// Parses task TOML. `path` is used for messages and to resolve relative file paths.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let shown = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<task>"));
        let raw: RawTask = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: shown.clone(),
            key: key.to_owned(),
            message,
        };
        let base_dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut explanation = Explanation::default();

        let name = raw.name.unwrap_or_else(|| "default".to_owned());
        if name.is_empty()
            || name.len() > 40
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "name",
                "must be 1 to 40 characters of letters, digits, `_` or `-`".to_owned(),
            ));
        }

        // The DMS files first: the TOML file's own keys override what they say.
        let read_json = |key: &str, file: &Path| -> Result<(String, String), ConfigError> {
            let file = if file.is_relative() {
                base_dir.join(file)
            } else {
                file.to_owned()
            };
            let text = std::fs::read_to_string(&file).map_err(|e| {
                invalid(
                    key,
                    format!("names {}, which cannot be read: {e}", file.display()),
                )
            })?;
            Ok((text, file.display().to_string()))
        };
        let dms_settings = match &raw.task_settings {
            Some(file) => {
                let (json, shown_file) = read_json("task_settings", file)?;
                Some(
                    dms::parse_settings(&json, &shown_file, &mut explanation)
                        .map_err(|e| ConfigError::Dms(e.to_string()))?,
                )
            }
            None => None,
        };
        let dms_mappings = match &raw.table_mappings {
            Some(file) => {
                let (json, shown_file) = read_json("table_mappings", file)?;
                Some(
                    dms::parse_mappings(&json, &shown_file, &mut explanation)
                        .map_err(|e| ConfigError::Dms(e.to_string()))?,
                )
            }
            None => None,
        };
        let dms = dms_settings.unwrap_or_default();
        let from_dms = raw.task_settings.is_some();

        /// Picks the TOML value, else the DMS one, else the default, and records which.
        fn pick<T: Clone + Serialize>(
            explanation: &mut Explanation,
            key: &str,
            toml: Option<T>,
            dms: Option<dms::Sourced<T>>,
            default: T,
        ) -> T {
            let (value, origin, dms_key) = match (toml, dms) {
                (Some(v), _) => (v, Origin::Toml, None),
                (None, Some(d)) => (d.value, d.origin, Some(d.dms)),
                (None, None) => (default, Origin::Default, None),
            };
            explanation.set(key, &value, origin, dms_key);
            value
        }

        explanation.set("name", &name, Origin::Toml, None);
        explanation.set("migration_type", raw.migration_type, Origin::Toml, None);
        let jobs = pick(
            &mut explanation,
            "jobs",
            raw.jobs,
            dms.jobs.clone(),
            default_jobs(),
        );
        check_jobs(jobs).map_err(|m| invalid("jobs", m))?;
        let chunk_size = pick(
            &mut explanation,
            "chunk_size",
            raw.chunk_size.map(|b| b.0),
            None,
            DEFAULT_CHUNK_SIZE,
        );
        if chunk_size < MIN_CHUNK_SIZE {
            return Err(invalid(
                "chunk_size",
                format!("is {chunk_size} bytes; it must be at least 1MB"),
            ));
        }
        let index_memory = raw.index_memory.map(|b| b.0);
        match index_memory {
            Some(b) if b < MIN_INDEX_MEMORY => {
                return Err(invalid(
                    "index_memory",
                    format!("is {b} bytes; it must be at least 1MB"),
                ));
            }
            Some(b) => explanation.set("index_memory", b, Origin::Toml, None),
            None => explanation.set("index_memory", "auto", Origin::Default, None),
        }
        let target_table_prep_mode = pick(
            &mut explanation,
            "target_table_prep_mode",
            raw.target_table_prep_mode,
            dms.target_table_prep_mode.clone(),
            TargetTablePrepMode::Fail,
        );
        explanation.set(
            "keep_owners",
            raw.keep_owners,
            if raw.keep_owners {
                Origin::Toml
            } else {
                Origin::Default
            },
            None,
        );
        explanation.set(
            "keep_privileges",
            raw.keep_privileges,
            if raw.keep_privileges {
                Origin::Toml
            } else {
                Origin::Default
            },
            None,
        );

        let source = endpoint(raw.source, "source", &base_dir, &invalid)?;
        let target = endpoint(raw.target, "target", &base_dir, &invalid)?;

        // Error behavior: DMS's file, then the TOML table's keys over it.
        let mut errors = if from_dms {
            dms.errors.clone()
        } else {
            ErrorBehavior::default()
        };
        let mut error_origins: Vec<(String, Origin, Option<&str>)> = dms
            .errors_set
            .iter()
            .map(|(k, d)| ((*k).to_owned(), Origin::DmsJson, Some(*d)))
            .collect();
        if let Some(table) = raw.error_behavior {
            let mut merged = toml::Table::try_from(&errors).unwrap_or_default();
            for (k, v) in &table {
                merged.insert(k.clone(), v.clone());
                error_origins.push((k.clone(), Origin::Toml, None));
            }
            errors = merged
                .try_into()
                .map_err(|e: toml::de::Error| invalid("error_behavior", e.message().to_owned()))?;
        }
        if let serde_json::Value::Object(fields) = serde_json::to_value(&errors).unwrap_or_default()
        {
            for (k, v) in fields {
                let (origin, dms_key) = error_origins
                    .iter()
                    .rev()
                    .find(|(key, _, _)| *key == k)
                    .map(|(_, o, d)| (*o, *d))
                    .unwrap_or(if from_dms {
                        (Origin::DmsDefault, None)
                    } else {
                        (Origin::Default, None)
                    });
                explanation.set(&format!("error_behavior.{k}"), v, origin, dms_key);
            }
        }

        let raw_cdc = raw.cdc.unwrap_or_default();
        let defaults = CdcSettings::default();
        let mut cdc = CdcSettings {
            errors,
            ..CdcSettings::default()
        };
        cdc.no_key_tables = pick(
            &mut explanation,
            "cdc.no_key_tables",
            raw_cdc.no_key_tables,
            None,
            defaults.no_key_tables,
        );
        for (key, value) in [
            ("cdc.slot_name", &raw_cdc.slot_name),
            ("cdc.publication", &raw_cdc.publication),
        ] {
            if let Some(v) = value
                && !is_simple_name(v)
            {
                return Err(invalid(
                    key,
                    format!("{v:?} must be lower case letters, digits and _, at most 63"),
                ));
            }
        }
        cdc.slot_name = raw_cdc.slot_name;
        cdc.publication = raw_cdc.publication;
        cdc.batch_max_changes = pick(
            &mut explanation,
            "cdc.batch_max_changes",
            raw_cdc.batch_max_changes,
            dms.batch_max_changes.clone(),
            defaults.batch_max_changes,
        );
        if cdc.batch_max_changes == 0 {
            return Err(invalid(
                "cdc.batch_max_changes",
                "must be at least 1".to_owned(),
            ));
        }
        cdc.batch_max_delay = std::time::Duration::from_millis(pick(
            &mut explanation,
            "cdc.batch_max_delay_ms",
            raw_cdc.batch_max_delay_ms,
            dms.batch_max_delay_ms.clone(),
            defaults.batch_max_delay.as_millis() as u64,
        ));
        cdc.batch_max_bytes = pick(
            &mut explanation,
            "cdc.batch_max_bytes",
            raw_cdc.batch_max_bytes.map(|b| b.as_u64()),
            dms.batch_max_bytes.clone(),
            defaults.batch_max_bytes,
        );
        if cdc.batch_max_bytes < 1024 * 1024 {
            return Err(invalid(
                "cdc.batch_max_bytes",
                "must be at least 1MiB".to_owned(),
            ));
        }
        let heartbeat = pick(
            &mut explanation,
            "cdc.heartbeat_interval_s",
            raw_cdc.heartbeat_interval_s,
            None,
            defaults.heartbeat_interval.as_secs(),
        );
        if heartbeat == 0 {
            return Err(invalid(
                "cdc.heartbeat_interval_s",
                "must be at least 1".to_owned(),
            ));
        }
        cdc.heartbeat_interval = std::time::Duration::from_secs(heartbeat);
        let receive_timeout = pick(
            &mut explanation,
            "cdc.receive_timeout_s",
            raw_cdc.receive_timeout_s,
            None,
            defaults.receive_timeout.as_secs(),
        );
        if receive_timeout < 5 {
            return Err(invalid(
                "cdc.receive_timeout_s",
                format!("is {receive_timeout}; it must be at least 5 (seconds)"),
            ));
        }
        cdc.receive_timeout = std::time::Duration::from_secs(receive_timeout);
        cdc.wal_retention_warning = pick(
            &mut explanation,
            "cdc.wal_retention_warning",
            raw_cdc.wal_retention_warning.map(|b| b.as_u64()),
            None,
            defaults.wal_retention_warning,
        );
        cdc.apply_truncate = pick(
            &mut explanation,
            "cdc.apply_truncate",
            raw_cdc.apply_truncate,
            dms.apply_truncate.clone(),
            defaults.apply_truncate,
        );
        cdc.add_new_columns = pick(
            &mut explanation,
            "cdc.add_new_columns",
            raw_cdc.add_new_columns,
            dms.add_new_columns.clone(),
            defaults.add_new_columns,
        );

        // Selection and rules: the DMS file's, then the TOML file's.
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        let mut mapping = Mapping::default();
        if let Some(m) = dms_mappings {
            include.extend(m.include);
            exclude.extend(m.exclude);
            mapping = m.mapping;
        }
        include.extend(raw.include);
        exclude.extend(raw.exclude);
        for (i, mut t) in raw.transform.into_iter().enumerate() {
            t.origin = format!("[[transform]] {}", i + 1);
            mapping.transforms.push(t);
        }
        for (i, mut f) in raw.filter.into_iter().enumerate() {
            f.origin = format!("[[filter]] {}", i + 1);
            mapping.filters.push(f);
        }
        for (i, mut s) in raw.table_settings.into_iter().enumerate() {
            s.origin = format!("[[table_settings]] {}", i + 1);
            mapping.table_settings.push(s);
        }
        mapping.load_order.extend(raw.load_order);
        if let Some(schema) = &dms.target_schema {
            mapping.transforms.push(Transform::rename_every_schema(
                &schema.value,
                "TargetMetadata.TargetSchema",
            ));
        }
        mapping.check().map_err(|e| invalid(&e.origin, e.message))?;
        cdc.binary = pick(
            &mut explanation,
            "cdc.binary",
            raw_cdc.binary,
            None,
            defaults.binary,
        );
        if cdc.binary && (mapping.changes_types() || mapping.has_filters()) {
            cdc.binary = false;
            explanation.set("cdc.binary", false, Origin::Default, None);
            explanation.warn(
                "cdc.binary",
                crate::explain::Treatment::Different,
                "changes stream as text: a change-data-type rule or a filter needs each value \
                 in its text form",
            );
        }
        let validation_jobs = pick(
            &mut explanation,
            "validation.jobs",
            raw.validation.and_then(|v| v.jobs).map(Some),
            dms.validation_jobs.clone().map(|s| dms::Sourced {
                value: Some(s.value),
                origin: s.origin,
                dms: s.dms,
            }),
            None,
        );
        if let Some(j) = validation_jobs {
            check_jobs(j).map_err(|m| invalid("validation.jobs", m))?;
        }
        let log_filter = pick(
            &mut explanation,
            "log_filter",
            raw.log_filter.map(Some),
            dms.log_filter.clone().map(|s| dms::Sourced {
                value: Some(s.value),
                origin: s.origin,
                dms: s.dms,
            }),
            None,
        );
        if let Some(f) = &log_filter {
            tracing_subscriber::EnvFilter::try_new(f).map_err(|e| {
                invalid(
                    "log_filter",
                    format!("{f:?} is not a valid filter ({e}); write one like \"info,pgferry_engine=debug\""),
                )
            })?;
        }

        let monitoring = crate::monitoring::build(
            RawSections {
                monitoring: raw.monitoring,
                http: raw.http,
                alarms: raw.alarm,
                command_metrics: raw.command_metric,
                notifiers: raw.notifier,
            },
            &base_dir,
            &invalid,
        )?;

        Ok(Task {
            name,
            migration_type: raw.migration_type,
            source,
            target,
            selection: Selection::new(include, exclude),
            full_load: FullLoadSettings {
                jobs,
                chunk_size,
                index_memory,
                target_table_prep_mode,
                keep_owners: raw.keep_owners,
                keep_privileges: raw.keep_privileges,
            },
            cdc,
            mapping,
            validation_jobs,
            log_filter,
            monitoring,
            explanation,
            path: path.map(Path::to_path_buf),
        })
    }

    /// A task built in code, for tests and the demo.
    pub fn new(migration_type: MigrationType, source_url: &str, target_url: &str) -> Self {
        Task {
            name: "default".to_owned(),
            migration_type,
            source: Endpoint {
                url: source_url.to_owned(),
                password: None,
            },
            target: Endpoint {
                url: target_url.to_owned(),
                password: None,
            },
            selection: Selection::everything(),
            full_load: FullLoadSettings {
                jobs: default_jobs(),
                chunk_size: DEFAULT_CHUNK_SIZE,
                index_memory: None,
                target_table_prep_mode: TargetTablePrepMode::Fail,
                keep_owners: false,
                keep_privileges: false,
            },
            cdc: CdcSettings::default(),
            mapping: Mapping::default(),
            validation_jobs: None,
            log_filter: None,
            monitoring: Monitoring::default(),
            explanation: Explanation::default(),
            path: None,
        }
    }

    /// The settings worth recording with the task's state, as JSON. Never holds secrets:
    /// connection strings are rejected at parse time when they carry a password.
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "migration_type": self.migration_type.as_str(),
            "jobs": self.full_load.jobs,
            "chunk_size": self.full_load.chunk_size,
            "target_table_prep_mode": self.full_load.target_table_prep_mode.as_str(),
            "keep_owners": self.full_load.keep_owners,
            "keep_privileges": self.full_load.keep_privileges,
            "include": self.selection.include_rules(),
            "exclude": self.selection.exclude_rules(),
            "cdc": {
                "no_key_tables": self.cdc.no_key_tables,
                "slot_name": self.cdc.slot_name,
                "publication": self.cdc.publication,
                "batch_max_changes": self.cdc.batch_max_changes,
                "batch_max_delay_ms": self.cdc.batch_max_delay.as_millis() as u64,
            },
            "error_behavior": self.cdc.errors,
        })
    }
}

/// A name usable as a slot or publication name without quoting.
fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn endpoint(
    raw: RawEndpoint,
    side: &str,
    base_dir: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Endpoint, ConfigError> {
    if raw.password.is_some() {
        return Err(invalid(
            &format!("{side}.password"),
            "is not allowed: passwords never go in the task file. Use password_env, \
             password_file or password_command, or PGPASSWORD or ~/.pgpass."
                .to_owned(),
        ));
    }
    let url = raw.url.ok_or_else(|| {
        invalid(
            &format!("{side}.url"),
            "is missing: give a libpq connection string such as \
             \"postgres://user@host:5432/dbname\""
                .to_owned(),
        )
    })?;
    let mut sources = Vec::new();
    if let Some(var) = raw.password_env {
        sources.push(PasswordSource::Env(var));
    }
    if let Some(file) = raw.password_file {
        let file = if file.is_relative() {
            base_dir.join(file)
        } else {
            file
        };
        sources.push(PasswordSource::File(file));
    }
    if let Some(cmd) = raw.password_command {
        sources.push(PasswordSource::Command(cmd));
    }
    if sources.len() > 1 {
        return Err(invalid(
            side,
            "sets more than one of password_env, password_file and password_command; keep one"
                .to_owned(),
        ));
    }
    Ok(Endpoint {
        url,
        password: sources.pop(),
    })
}

/// A size in a task file: `"256MB"`, `"1GiB"`, or a number of bytes. Parsed here rather
/// than by a generic size parser so that a value too large to hold, a negative number or a
/// word gets a plain message instead of a silent saturation or a parser's jargon.
#[derive(Debug, Clone, Copy)]
struct Size(u64);

impl Size {
    fn parse(text: &str) -> Result<u64, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size; write one like \"256MB\" or \"1GiB\""))?;
        let unit = unit.trim().to_ascii_lowercase();
        let scale: f64 = match unit.as_str() {
            "" | "b" => 1.0,
            "kb" => 1e3,
            "kib" | "k" => 1024.0,
            "mb" => 1e6,
            "mib" | "m" => 1024.0 * 1024.0,
            "gb" => 1e9,
            "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
            "tb" => 1e12,
            "tib" | "t" => 1024f64.powi(4),
            "pb" => 1e15,
            "pib" | "p" => 1024f64.powi(5),
            _ => {
                return Err(format!(
                    "{text:?} has an unknown unit {unit:?}; use B, KB, MB, GB, TB (or KiB, MiB, \
                     GiB, TiB)"
                ));
            }
        };
        let bytes = number * scale;
        if bytes > MAX_CHUNK_SIZE as f64 {
            return Err(format!(
                "{text:?} is more than the largest chunk, {}",
                ByteSize::b(MAX_CHUNK_SIZE)
            ));
        }
        Ok(bytes as u64)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"256MB\", or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map(Size).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Size::parse(&v.to_string()).map(Size).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                if v < 0 {
                    return Err(E::custom(format!("{v} is negative; a size is at least 0")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "{v} is not a whole number of bytes; write a size like \"256MB\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
migration_type = "full-load"
[source]
url = "postgres://postgres@127.0.0.1:5432/inventory"
[target]
url = "postgres://postgres@127.0.0.1:5433/inventory"
"#;

    #[test]
    fn the_minimal_task_file_parses_with_defaults() {
        let t = Task::parse(MINIMAL, None).expect("minimal task parses");
        assert_eq!(t.name, "default");
        assert_eq!(t.migration_type, MigrationType::FullLoad);
        assert_eq!(t.source.url, "postgres://postgres@127.0.0.1:5432/inventory");
        assert_eq!(t.full_load.chunk_size, DEFAULT_CHUNK_SIZE);
        assert_eq!(
            t.full_load.target_table_prep_mode,
            TargetTablePrepMode::Fail
        );
        assert!(t.selection.includes_table("public", "products"));
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
name = "inv-2"
migration_type = "full-load-and-cdc"
jobs = 6
chunk_size = "64MiB"
target_table_prep_mode = "truncate"
keep_owners = true
keep_privileges = true
[source]
url = "host=a dbname=b"
password_file = "secrets/src"
[target]
url = "postgres://t@b/c"
password_command = "pass show target"
[[include]]
schema = "public"
[[exclude]]
table = "audit_%"
"#;
        let t = Task::parse(text, Some(Path::new("/etc/pgferry/task.toml"))).unwrap();
        assert_eq!(t.name, "inv-2");
        assert_eq!(t.full_load.jobs, 6);
        assert_eq!(t.full_load.chunk_size, 64 * 1024 * 1024);
        assert_eq!(
            t.full_load.target_table_prep_mode,
            TargetTablePrepMode::Truncate
        );
        assert!(t.full_load.keep_owners && t.full_load.keep_privileges);
        assert_eq!(
            t.source.password,
            Some(PasswordSource::File(PathBuf::from(
                "/etc/pgferry/secrets/src"
            )))
        );
        assert_eq!(
            t.target.password,
            Some(PasswordSource::Command("pass show target".into()))
        );
        assert!(t.selection.includes_table("public", "orders"));
        assert!(!t.selection.includes_table("public", "audit_log"));
        assert!(!t.selection.includes_table("sales", "orders"));
    }

    #[test]
    fn a_password_in_the_file_is_refused_with_the_alternatives() {
        let text = MINIMAL.replace("[target]", "password = \"hunter2\"\n[target]");
        let err = Task::parse(&text, None).unwrap_err().to_string();
        assert!(err.contains("source.password"), "{err}");
        assert!(err.contains("password_env"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "the secret must not be echoed: {err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_point_at_the_line() {
        let err = Task::parse(&format!("jobz = 3\n{MINIMAL}"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("jobz") && err.contains("line 1"), "{err}");
        let err = Task::parse(&MINIMAL.replace("full-load", "fulload"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fulload") && err.contains("full-load-and-cdc"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_settings_are_explained() {
        let err = Task::parse(&format!("jobs = 0\n{MINIMAL}"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`jobs`") && err.contains("between 1 and 256"),
            "{err}"
        );
        let err = Task::parse(&format!("chunk_size = \"10KB\"\n{MINIMAL}"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("chunk_size"), "{err}");
        let err = Task::parse(&format!("name = \"a b\"\n{MINIMAL}"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`name`"), "{err}");
    }

    #[test]
    fn cdc_and_error_behavior_are_read_with_dms_names() {
        let text = format!(
            "{MINIMAL}\n[cdc]\nno_key_tables = \"replica-identity-full\"\nslot_name = \"my_slot\"\n\
             batch_max_changes = 500\nbatch_max_delay_ms = 50\n\
             [error_behavior]\napply_error_insert_policy = \"UPDATE_RECORD\"\n\
             apply_error_escalation_count = 10\n"
        );
        let t = Task::parse(&text, None).unwrap();
        assert_eq!(t.cdc.no_key_tables, crate::NoKeyTables::ReplicaIdentityFull);
        assert_eq!(t.cdc.slot_name.as_deref(), Some("my_slot"));
        assert_eq!(t.cdc.batch_max_changes, 500);
        assert_eq!(t.cdc.batch_max_delay.as_millis(), 50);
        assert_eq!(
            t.cdc.errors.apply_error_insert_policy,
            crate::ErrorPolicy::UpdateRecord
        );
        assert_eq!(t.cdc.errors.apply_error_escalation_count, 10);
        assert_eq!(
            t.cdc.errors.apply_error_delete_policy,
            crate::ErrorPolicy::IgnoreRecord,
            "DMS's default"
        );
        let bad = format!("{MINIMAL}\n[cdc]\nslot_name = \"My Slot\"\n");
        assert!(
            Task::parse(&bad, None)
                .unwrap_err()
                .to_string()
                .contains("cdc.slot_name")
        );
    }

    #[test]
    fn two_password_sources_are_ambiguous() {
        let text = MINIMAL.replace(
            "[target]",
            "password_env = \"A\"\npassword_file = \"b\"\n[target]",
        );
        let err = Task::parse(&text, None).unwrap_err().to_string();
        assert!(err.contains("more than one"), "{err}");
    }

    #[test]
    fn prep_modes_accept_dms_spellings() {
        assert_eq!("DO_NOTHING".parse(), Ok(TargetTablePrepMode::DoNothing));
        assert_eq!(
            "TRUNCATE_BEFORE_LOAD".parse(),
            Ok(TargetTablePrepMode::Truncate)
        );
        assert_eq!(
            "DROP_AND_CREATE".parse(),
            Ok(TargetTablePrepMode::DropAndCreate)
        );
        assert!("nope".parse::<TargetTablePrepMode>().is_err());
    }
}
