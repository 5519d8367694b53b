//! Reading a task file into a [`Task`]: its TOML keys, the DMS JSON files it names, and the
//! record of where each setting came from. Nothing here touches a server or writes a file.
//!
//! Precedence is the same for every key: the TOML file's value, else the DMS file's, else
//! pgferry's default. Each step below reads one section and records its keys in the
//! explanation, in the order `pgferry config` prints them.

use std::fmt;
use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_CHUNK_SIZE, Endpoint, FullLoadSettings, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
    MIN_INDEX_MEMORY, MigrationType, PasswordSource, TargetTablePrepMode, Task, check_jobs,
    default_jobs,
};
use crate::cdc::{CdcSettings, ErrorBehavior, ErrorPolicy, RawCdc};
use crate::dms;
use crate::error::ConfigError;
use crate::explain::{Explanation, Origin};
use crate::mapping::{Filter, LoadOrder, Mapping, TableSettings, Transform};
use crate::monitoring::{CommandMetric, RawHttp, RawMonitoring, RawSections};
use crate::selection::{Selection, TableRule};

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
    cutover: Option<crate::cutover::RawCutover>,
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

/// Parses task TOML. `path` is used for messages and to resolve relative file paths.
pub(super) fn task(text: &str, path: Option<&Path>) -> Result<Task, ConfigError> {
    let shown = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("<task>"));
    let raw: RawTask = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: shown.clone(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let base_dir = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut r = Reader {
        shown,
        base_dir,
        explanation: Explanation::default(),
    };
    let name = r.name(raw.name)?;
    // The DMS files first: the TOML file's own keys override what they say.
    let dms_settings = r.dms_file("task_settings", raw.task_settings.as_deref())?;
    let dms_mappings = r.dms_file("table_mappings", raw.table_mappings.as_deref())?;
    let dms_settings = dms_settings
        .map(|(json, file)| dms::parse_settings(&json, &file, &mut r.explanation))
        .transpose()
        .map_err(|e| ConfigError::Dms(e.to_string()))?;
    let dms_mappings = dms_mappings
        .map(|(json, file)| dms::parse_mappings(&json, &file, &mut r.explanation))
        .transpose()
        .map_err(|e| ConfigError::Dms(e.to_string()))?;
    let from_dms = dms_settings.is_some();
    let dms = dms_settings.unwrap_or_default();

    r.explanation.set("name", &name, Origin::Toml, None);
    r.explanation
        .set("migration_type", raw.migration_type, Origin::Toml, None);
    let full_load = r.full_load(
        RawFullLoad {
            jobs: raw.jobs,
            chunk_size: raw.chunk_size,
            index_memory: raw.index_memory,
            target_table_prep_mode: raw.target_table_prep_mode,
            keep_owners: raw.keep_owners,
            keep_privileges: raw.keep_privileges,
        },
        &dms,
    )?;
    let source = endpoint(raw.source, "source", &r.base_dir, &|k, m| r.invalid(k, m))?;
    let target = endpoint(raw.target, "target", &r.base_dir, &|k, m| r.invalid(k, m))?;
    let errors = r.error_behavior(raw.error_behavior, &dms, from_dms)?;
    let raw_cdc = raw.cdc.unwrap_or_default();
    let binary = raw_cdc.binary;
    let mut cdc = r.cdc(raw_cdc, &dms, errors)?;

    // Selection and rules: the DMS file's, then the TOML file's.
    let (mut include, mut exclude, mut mapping) = match dms_mappings {
        Some(m) => (m.include, m.exclude, m.mapping),
        None => (Vec::new(), Vec::new(), Mapping::default()),
    };
    include.extend(raw.include);
    exclude.extend(raw.exclude);
    add_rules(
        &mut mapping,
        raw.transform,
        raw.filter,
        raw.table_settings,
        raw.load_order,
    );
    if let Some(schema) = &dms.target_schema {
        mapping.transforms.push(Transform::rename_every_schema(
            &schema.value,
            "TargetMetadata.TargetSchema",
        ));
    }
    mapping
        .check()
        .map_err(|e| r.invalid(&e.origin, e.message))?;
    cdc.binary = r.binary(binary, &mapping);
    let raw_cutover = raw.cutover.unwrap_or_default();
    let lag_origin = if raw_cutover.max_lag_s.is_some() {
        Origin::Toml
    } else {
        Origin::Default
    };
    let cutover = crate::cutover::build(raw_cutover, &|k, m| r.invalid(k, m))?;
    r.explanation.set(
        "cutover.max_lag_s",
        cutover.max_lag.as_secs_f64(),
        lag_origin,
        None,
    );
    let validation_jobs = r.validation_jobs(raw.validation, &dms)?;
    let log_filter = r.log_filter(raw.log_filter, &dms)?;

    let monitoring = crate::monitoring::build(
        RawSections {
            monitoring: raw.monitoring,
            http: raw.http,
            alarms: raw.alarm,
            command_metrics: raw.command_metric,
            notifiers: raw.notifier,
        },
        &r.base_dir,
        &|k, m| r.invalid(k, m),
    )?;

    Ok(Task {
        name,
        migration_type: raw.migration_type,
        source,
        target,
        selection: Selection::new(include, exclude),
        full_load,
        cdc,
        cutover,
        mapping,
        validation_jobs,
        log_filter,
        monitoring,
        explanation: r.explanation,
        path: path.map(Path::to_path_buf),
    })
}

/// The task file's top-level keys of the full load.
struct RawFullLoad {
    jobs: Option<usize>,
    chunk_size: Option<Size>,
    index_memory: Option<Size>,
    target_table_prep_mode: Option<TargetTablePrepMode>,
    keep_owners: bool,
    keep_privileges: bool,
}

/// The rule lists of the TOML file, appended after the DMS file's, each named for messages.
fn add_rules(
    mapping: &mut Mapping,
    transforms: Vec<Transform>,
    filters: Vec<Filter>,
    settings: Vec<TableSettings>,
    load_order: Vec<LoadOrder>,
) {
    for (i, mut t) in transforms.into_iter().enumerate() {
        t.origin = format!("[[transform]] {}", i + 1);
        mapping.transforms.push(t);
    }
    for (i, mut f) in filters.into_iter().enumerate() {
        f.origin = format!("[[filter]] {}", i + 1);
        mapping.filters.push(f);
    }
    for (i, mut s) in settings.into_iter().enumerate() {
        s.origin = format!("[[table_settings]] {}", i + 1);
        mapping.table_settings.push(s);
    }
    mapping.load_order.extend(load_order);
}

/// What reading one task file keeps at hand: where it came from, and what was explained.
struct Reader {
    shown: PathBuf,
    base_dir: PathBuf,
    explanation: Explanation,
}

impl Reader {
    fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.shown.clone(),
            key: key.to_owned(),
            message,
        }
    }

    /// Picks the TOML value, else the DMS one, else the default, and records which.
    fn pick<T: Clone + Serialize>(
        &mut self,
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
        self.explanation.set(key, &value, origin, dms_key);
        value
    }

    fn name(&self, name: Option<String>) -> Result<String, ConfigError> {
        let name = name.unwrap_or_else(|| "default".to_owned());
        if name.is_empty()
            || name.len() > 40
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(self.invalid(
                "name",
                "must be 1 to 40 characters of letters, digits, `_` or `-`".to_owned(),
            ));
        }
        Ok(name)
    }

    /// Reads a DMS JSON file the task names: its text and the path to show in messages.
    fn dms_file(
        &self,
        key: &str,
        file: Option<&Path>,
    ) -> Result<Option<(String, String)>, ConfigError> {
        let Some(file) = file else { return Ok(None) };
        let file = if file.is_relative() {
            self.base_dir.join(file)
        } else {
            file.to_owned()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| {
            self.invalid(
                key,
                format!("names {}, which cannot be read: {e}", file.display()),
            )
        })?;
        Ok(Some((text, file.display().to_string())))
    }

    fn full_load(
        &mut self,
        raw: RawFullLoad,
        dms: &dms::DmsSettings,
    ) -> Result<FullLoadSettings, ConfigError> {
        let jobs = self.pick("jobs", raw.jobs, dms.jobs.clone(), default_jobs());
        check_jobs(jobs).map_err(|m| self.invalid("jobs", m))?;
        let chunk_size = self.pick(
            "chunk_size",
            raw.chunk_size.map(|b| b.0),
            None,
            DEFAULT_CHUNK_SIZE,
        );
        if chunk_size < MIN_CHUNK_SIZE {
            return Err(self.invalid(
                "chunk_size",
                format!("is {chunk_size} bytes; it must be at least 1MB"),
            ));
        }
        let index_memory = raw.index_memory.map(|b| b.0);
        match index_memory {
            Some(b) if b < MIN_INDEX_MEMORY => {
                return Err(self.invalid(
                    "index_memory",
                    format!("is {b} bytes; it must be at least 1MB"),
                ));
            }
            Some(b) => self.explanation.set("index_memory", b, Origin::Toml, None),
            None => self
                .explanation
                .set("index_memory", "auto", Origin::Default, None),
        }
        let target_table_prep_mode = self.pick(
            "target_table_prep_mode",
            raw.target_table_prep_mode,
            dms.target_table_prep_mode.clone(),
            TargetTablePrepMode::Fail,
        );
        for (key, on) in [
            ("keep_owners", raw.keep_owners),
            ("keep_privileges", raw.keep_privileges),
        ] {
            let origin = if on { Origin::Toml } else { Origin::Default };
            self.explanation.set(key, on, origin, None);
        }
        Ok(FullLoadSettings {
            jobs,
            chunk_size,
            index_memory,
            target_table_prep_mode,
            keep_owners: raw.keep_owners,
            keep_privileges: raw.keep_privileges,
        })
    }

    /// Error behavior: DMS's file, then the TOML table's keys over it.
    fn error_behavior(
        &mut self,
        table: Option<toml::Table>,
        dms: &dms::DmsSettings,
        from_dms: bool,
    ) -> Result<ErrorBehavior, ConfigError> {
        let mut errors = if from_dms {
            dms.errors.clone()
        } else {
            ErrorBehavior::default()
        };
        let mut origins: Vec<(String, Origin, Option<&str>)> = dms
            .errors_set
            .iter()
            .map(|(k, d)| ((*k).to_owned(), Origin::DmsJson, Some(*d)))
            .collect();
        if let Some(table) = table {
            let mut merged = toml::Table::try_from(&errors).unwrap_or_default();
            for (k, v) in &table {
                merged.insert(k.clone(), v.clone());
                origins.push((k.clone(), Origin::Toml, None));
            }
            errors = merged.try_into().map_err(|e: toml::de::Error| {
                self.invalid("error_behavior", e.message().to_owned())
            })?;
        }
        let unset = if from_dms {
            (Origin::DmsDefault, None)
        } else {
            (Origin::Default, None)
        };
        if let serde_json::Value::Object(fields) = serde_json::to_value(&errors).unwrap_or_default()
        {
            for (k, v) in fields {
                let (origin, dms_key) = origins
                    .iter()
                    .rev()
                    .find(|(key, _, _)| *key == k)
                    .map(|(_, o, d)| (*o, *d))
                    .unwrap_or(unset);
                self.explanation
                    .set(&format!("error_behavior.{k}"), v, origin, dms_key);
            }
        }
        Ok(errors)
    }

    /// The `[cdc]` section but `binary`, which depends on the mapping rules.
    fn cdc(
        &mut self,
        raw: RawCdc,
        dms: &dms::DmsSettings,
        errors: ErrorBehavior,
    ) -> Result<CdcSettings, ConfigError> {
        let defaults = CdcSettings::default();
        let mut cdc = CdcSettings {
            errors,
            ..CdcSettings::default()
        };
        cdc.no_key_tables = self.pick(
            "cdc.no_key_tables",
            raw.no_key_tables,
            None,
            defaults.no_key_tables,
        );
        for (key, value) in [
            ("cdc.slot_name", &raw.slot_name),
            ("cdc.publication", &raw.publication),
        ] {
            if let Some(v) = value
                && !is_simple_name(v)
            {
                return Err(self.invalid(
                    key,
                    format!("{v:?} must be lower case letters, digits and _, at most 63"),
                ));
            }
        }
        self.cdc_batches(&mut cdc, &raw, dms)?;
        cdc.slot_name = raw.slot_name;
        cdc.publication = raw.publication;
        let heartbeat = self.pick(
            "cdc.heartbeat_interval_s",
            raw.heartbeat_interval_s,
            None,
            defaults.heartbeat_interval.as_secs(),
        );
        if heartbeat == 0 {
            return Err(self.invalid("cdc.heartbeat_interval_s", "must be at least 1".to_owned()));
        }
        cdc.heartbeat_interval = std::time::Duration::from_secs(heartbeat);
        let receive_timeout = self.pick(
            "cdc.receive_timeout_s",
            raw.receive_timeout_s,
            None,
            defaults.receive_timeout.as_secs(),
        );
        if receive_timeout < 5 {
            return Err(self.invalid(
                "cdc.receive_timeout_s",
                format!("is {receive_timeout}; it must be at least 5 (seconds)"),
            ));
        }
        cdc.receive_timeout = std::time::Duration::from_secs(receive_timeout);
        cdc.wal_retention_warning = self.pick(
            "cdc.wal_retention_warning",
            raw.wal_retention_warning.map(|b| b.as_u64()),
            None,
            defaults.wal_retention_warning,
        );
        cdc.apply_truncate = self.pick(
            "cdc.apply_truncate",
            raw.apply_truncate,
            dms.apply_truncate.clone(),
            defaults.apply_truncate,
        );
        cdc.add_new_columns = self.pick(
            "cdc.add_new_columns",
            raw.add_new_columns,
            dms.add_new_columns.clone(),
            defaults.add_new_columns,
        );
        cdc.ddl = self.pick("cdc.ddl", raw.ddl, dms.ddl.clone(), defaults.ddl);
        cdc.apply_drop_table = self.pick(
            "cdc.apply_drop_table",
            raw.apply_drop_table,
            dms.apply_drop_table.clone(),
            defaults.apply_drop_table,
        );
        cdc.ddl_error_policy = self.pick(
            "cdc.ddl_error_policy",
            raw.ddl_error_policy,
            dms.ddl_error_policy.clone(),
            defaults.ddl_error_policy,
        );
        if !matches!(
            cdc.ddl_error_policy,
            ErrorPolicy::SuspendTable | ErrorPolicy::StopTask
        ) {
            return Err(self.invalid(
                "cdc.ddl_error_policy",
                format!(
                    "is {}; a schema change is never skipped, so it must be SUSPEND_TABLE or \
                     STOP_TASK",
                    cdc.ddl_error_policy.as_str()
                ),
            ));
        }
        Ok(cdc)
    }

    /// How the applier groups changes into target transactions.
    fn cdc_batches(
        &mut self,
        cdc: &mut CdcSettings,
        raw: &RawCdc,
        dms: &dms::DmsSettings,
    ) -> Result<(), ConfigError> {
        let defaults = CdcSettings::default();
        cdc.batch_max_changes = self.pick(
            "cdc.batch_max_changes",
            raw.batch_max_changes,
            dms.batch_max_changes.clone(),
            defaults.batch_max_changes,
        );
        if cdc.batch_max_changes == 0 {
            return Err(self.invalid("cdc.batch_max_changes", "must be at least 1".to_owned()));
        }
        cdc.batch_max_delay = std::time::Duration::from_millis(self.pick(
            "cdc.batch_max_delay_ms",
            raw.batch_max_delay_ms,
            dms.batch_max_delay_ms.clone(),
            defaults.batch_max_delay.as_millis() as u64,
        ));
        cdc.batch_max_bytes = self.pick(
            "cdc.batch_max_bytes",
            raw.batch_max_bytes.map(|b| b.as_u64()),
            dms.batch_max_bytes.clone(),
            defaults.batch_max_bytes,
        );
        if cdc.batch_max_bytes < 1024 * 1024 {
            return Err(self.invalid("cdc.batch_max_bytes", "must be at least 1MiB".to_owned()));
        }
        Ok(())
    }

    /// Binary pgoutput unless a rule needs each value in its text form.
    fn binary(&mut self, raw: Option<bool>, mapping: &Mapping) -> bool {
        let binary = self.pick("cdc.binary", raw, None, CdcSettings::default().binary);
        if binary && (mapping.changes_types() || mapping.has_filters()) {
            self.explanation
                .set("cdc.binary", false, Origin::Default, None);
            self.explanation.warn(
                "cdc.binary",
                crate::explain::Treatment::Different,
                "changes stream as text: a change-data-type rule or a filter needs each value \
                 in its text form",
            );
            return false;
        }
        binary
    }

    fn validation_jobs(
        &mut self,
        raw: Option<RawValidation>,
        dms: &dms::DmsSettings,
    ) -> Result<Option<usize>, ConfigError> {
        let jobs = self.pick(
            "validation.jobs",
            raw.and_then(|v| v.jobs).map(Some),
            dms.validation_jobs.clone().map(dms::Sourced::some),
            None,
        );
        if let Some(j) = jobs {
            check_jobs(j).map_err(|m| self.invalid("validation.jobs", m))?;
        }
        Ok(jobs)
    }

    fn log_filter(
        &mut self,
        raw: Option<String>,
        dms: &dms::DmsSettings,
    ) -> Result<Option<String>, ConfigError> {
        let filter = self.pick(
            "log_filter",
            raw.map(Some),
            dms.log_filter.clone().map(dms::Sourced::some),
            None,
        );
        if let Some(f) = &filter {
            tracing_subscriber::EnvFilter::try_new(f).map_err(|e| {
                self.invalid(
                    "log_filter",
                    format!(
                        "{f:?} is not a valid filter ({e}); write one like \
                         \"info,pgferry_engine=debug\""
                    ),
                )
            })?;
        }
        Ok(filter)
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
