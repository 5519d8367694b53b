//! The task file and its validated form.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cdc::CdcSettings;
use crate::error::ConfigError;
use crate::explain::Explanation;
use crate::mapping::Mapping;
use crate::monitoring::Monitoring;
use crate::selection::Selection;

mod parse;

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
    /// How `pgferry cutover` fences the source and opens the target.
    pub cutover: crate::cutover::CutoverSettings,
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
        parse::task(text, path)
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
            cutover: crate::cutover::CutoverSettings::default(),
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
        let ddl = format!(
            "{MINIMAL}\n[cdc]\nddl = true\napply_drop_table = false\n\
             ddl_error_policy = \"STOP_TASK\"\n"
        );
        let t = Task::parse(&ddl, None).unwrap();
        assert!(t.cdc.ddl && !t.cdc.apply_drop_table);
        assert_eq!(t.cdc.ddl_error_policy, crate::ErrorPolicy::StopTask);
        // A schema change is never skipped: only suspending the table or stopping.
        let skip = format!("{MINIMAL}\n[cdc]\nddl_error_policy = \"IGNORE_RECORD\"\n");
        let err = Task::parse(&skip, None).unwrap_err().to_string();
        assert!(err.contains("cdc.ddl_error_policy"), "{err}");
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

    #[test]
    fn the_cutover_section_is_checked_and_defaults_to_five_seconds_of_lag() {
        let base = "migration_type = \"full-load-and-cdc\"\n[source]\nurl = \"postgres://a@h/d\"\n\
                    [target]\nurl = \"postgres://a@h2/d\"\n";
        let t = Task::parse(base, None).unwrap();
        assert_eq!(t.cutover.max_lag, std::time::Duration::from_secs(5));
        let t = Task::parse(
            &format!(
                "{base}[cutover]\nmax_lag_s = 1.5\nfence_roles = [\"app\"]\n\
                 [[cutover.on_switch]]\ncommand = \"true\"\ntimeout_s = 5\n"
            ),
            None,
        )
        .unwrap();
        assert_eq!(t.cutover.max_lag, std::time::Duration::from_millis(1500));
        assert_eq!(t.cutover.fence_roles, ["app"]);
        assert_eq!(
            t.cutover.on_switch[0].timeout,
            std::time::Duration::from_secs(5)
        );
        for (bad, key) in [
            ("max_lag_s = -1", "cutover.max_lag_s"),
            ("fence_roles = [\"\"]", "cutover.fence_roles"),
            (
                "[[cutover.on_switch]]\ncommand = \" \"",
                "cutover.on_switch[0].command",
            ),
            (
                "[[cutover.on_switch]]\ncommand = \"x\"\ntimeout_s = 0",
                "cutover.on_switch[0].timeout_s",
            ),
        ] {
            let e = Task::parse(&format!("{base}[cutover]\n{bad}\n"), None).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
        let e = Task::parse(&format!("{base}[cutover]\nmax_lag = 5\n"), None).unwrap_err();
        assert!(e.to_string().contains("max_lag"), "{e}");
    }
}
