//! The task file's monitoring sections: `[monitoring]`, `[http]`, `[[alarm]]`,
//! `[[command_metric]]` and `[[notifier]]`.
//!
//! Alarm and notifier declarations are this crate's types ([`crate::alarm`],
//! [`crate::notifier`]); pgferry-observe evaluates and delivers through the same ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::alarm::{AlarmRule, Comparison, MissingData, Statistic};
use crate::notifier::NotifierConfig;
use serde::Deserialize;

use crate::task::PasswordSource;

/// The HTTP server's address when `run --http` gives none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";

/// The environment variable that holds the HTTP bearer token when the task file names no
/// other source.
pub const TOKEN_ENV: &str = "PGFERRY_HTTP_TOKEN";

/// The command metric the default CPU alarm watches.
pub const CPU_METRIC: &str = "target_cpu_percent";

/// A number a command prints, sampled as `pgferry_command_metric{name=...}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandMetric {
    /// Lower case letters, digits and `_`.
    pub name: String,
    /// Run by `sh -c`; the last number it prints is the value.
    pub command: String,
    #[serde(default = "sixty")]
    pub interval_s: u64,
    #[serde(default = "thirty")]
    pub timeout_s: u64,
}

fn sixty() -> u64 {
    60
}

fn thirty() -> u64 {
    30
}

/// The HTTP API and dashboard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpSettings {
    /// Where `run` serves when `--http` is given without an address, or when set here.
    pub listen: Option<SocketAddr>,
    /// Where the bearer token comes from; [`TOKEN_ENV`] when the file names nothing.
    pub token: Option<PasswordSource>,
}

/// An alarm that is declared but cannot be evaluated, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct InactiveAlarm {
    pub name: String,
    pub why: String,
}

/// Everything about watching a task.
#[derive(Debug, Clone)]
pub struct Monitoring {
    /// How often gauges are sampled and alarms evaluated.
    pub sample_interval: Duration,
    /// The alarms evaluated: the defaults (unless turned off) with the file's over them.
    pub alarms: Vec<AlarmRule>,
    /// Alarms declared (or defaulted) that are not evaluated.
    pub inactive_alarms: Vec<InactiveAlarm>,
    pub command_metrics: Vec<CommandMetric>,
    pub notifiers: Vec<NotifierConfig>,
    pub http: HttpSettings,
}

/// What a task file without monitoring sections gets: 5 s samples and the seed's alarms.
impl Default for Monitoring {
    fn default() -> Self {
        let (alarms, inactive_alarms) = split_inactive(default_alarms(), &[]);
        Monitoring {
            sample_interval: Duration::from_secs(5),
            alarms,
            inactive_alarms,
            command_metrics: Vec::new(),
            notifiers: Vec::new(),
            http: HttpSettings::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMonitoring {
    sample_interval_s: Option<f64>,
    default_alarms: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    listen: Option<String>,
    token: Option<toml::Value>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    token_command: Option<String>,
}

fn seed_alarm(
    name: &str,
    description: &str,
    metric: &str,
    evaluation_periods: u32,
    threshold: f64,
) -> AlarmRule {
    AlarmRule {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        metric: metric.to_owned(),
        labels: BTreeMap::new(),
        statistic: Statistic::Average,
        period: 300,
        evaluation_periods,
        datapoints_to_alarm: None,
        comparison_operator: Comparison::GreaterThanThreshold,
        threshold,
        treat_missing_data: MissingData::Missing,
        enabled: true,
    }
}

/// The seed's four CloudWatch alarms, as a pgferry task states them, and one the seed
/// lacks: the slot nearing `max_slot_wal_keep_size`, after which the source invalidates it
/// and the task must start over (DMS's source has the same limit and no alarm on it).
pub fn default_alarms() -> Vec<AlarmRule> {
    let mut cpu = seed_alarm(
        "target-cpu",
        "Target CPU utilization exceeds 80%",
        "pgferry_command_metric",
        2,
        80.0,
    );
    cpu.labels.insert("name".to_owned(), CPU_METRIC.to_owned());
    vec![
        seed_alarm(
            "replication-lag",
            "Replication lag exceeds 300 seconds",
            "pgferry_cdc_latency_target_seconds",
            2,
            300.0,
        ),
        cpu,
        seed_alarm(
            "target-connections",
            "Target database connections approaching the limit",
            "pgferry_target_connections",
            2,
            450.0,
        ),
        seed_alarm(
            "target-storage",
            "Target database size exceeds 600 GB",
            "pgferry_target_database_size_bytes",
            1,
            644_245_094_400.0,
        ),
        AlarmRule {
            period: 60,
            statistic: Statistic::Maximum,
            ..seed_alarm(
                "source-slot-wal",
                "The replication slot uses over half of the source's max_slot_wal_keep_size",
                "pgferry_source_slot_wal_keep_used_ratio",
                1,
                0.5,
            )
        },
    ]
}

/// The task file's monitoring sections, raw.
pub(crate) struct RawSections {
    pub monitoring: Option<RawMonitoring>,
    pub http: Option<RawHttp>,
    pub alarms: Vec<AlarmRule>,
    pub command_metrics: Vec<CommandMetric>,
    pub notifiers: Vec<NotifierConfig>,
}

/// Checks the sections and merges the default alarms in.
pub(crate) fn build(
    raw: RawSections,
    base_dir: &Path,
    invalid: &dyn Fn(&str, String) -> crate::ConfigError,
) -> Result<Monitoring, crate::ConfigError> {
    let settings = raw.monitoring.unwrap_or_default();
    let interval = settings.sample_interval_s.unwrap_or(5.0);
    if !(0.1..=300.0).contains(&interval) {
        return Err(invalid(
            "monitoring.sample_interval_s",
            format!("is {interval}; it must be between 0.1 and 300"),
        ));
    }
    for m in &raw.command_metrics {
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(invalid(
                "command_metric.name",
                format!("{:?} must be lower case letters, digits and _", m.name),
            ));
        }
        if m.interval_s == 0 || m.timeout_s == 0 {
            return Err(invalid(
                "command_metric",
                format!("{}: interval_s and timeout_s must be at least 1", m.name),
            ));
        }
    }
    let mut alarms: Vec<AlarmRule> = if settings.default_alarms.unwrap_or(true) {
        default_alarms()
    } else {
        Vec::new()
    };
    let mut seen = std::collections::HashSet::new();
    for rule in raw.alarms {
        rule.check().map_err(|e| invalid("alarm", e))?;
        if !seen.insert(rule.name.clone()) {
            return Err(invalid(
                "alarm",
                format!("two alarms are named {:?}; names must differ", rule.name),
            ));
        }
        if crate::metrics::info(&rule.metric).is_none() {
            let names: Vec<&str> = crate::metrics::CATALOG.iter().map(|m| m.name).collect();
            let hint = crate::suggest::did_you_mean(&rule.metric, &names);
            return Err(invalid(
                "alarm",
                format!(
                    "{:?} watches {:?}, which pgferry does not export{hint}; \
                     docs/monitoring.md lists the metrics",
                    rule.name, rule.metric
                ),
            ));
        }
        // A declared alarm replaces the default of the same name.
        alarms.retain(|a| a.name != rule.name);
        alarms.push(rule);
    }
    let (alarms, inactive) = split_inactive(alarms, &raw.command_metrics);
    for (i, n) in raw.notifiers.iter().enumerate() {
        n.check()
            .map_err(|e| invalid(&format!("notifier[{}]", i + 1), e))?;
    }
    let notifiers = raw
        .notifiers
        .into_iter()
        .map(|mut n| {
            if let NotifierConfig::Email(e) = &mut n
                && let Some(file) = &mut e.password_file
                && file.is_relative()
            {
                *file = base_dir.join(&*file);
            }
            n
        })
        .collect();
    Ok(Monitoring {
        sample_interval: Duration::from_secs_f64(interval),
        alarms,
        inactive_alarms: inactive,
        command_metrics: raw.command_metrics,
        notifiers,
        http: http(raw.http.unwrap_or_default(), base_dir, invalid)?,
    })
}

/// Sets aside the alarms that cannot be evaluated: turned off, or watching a command metric
/// that is not declared (the default CPU alarm, until one is).
fn split_inactive(
    mut alarms: Vec<AlarmRule>,
    command_metrics: &[CommandMetric],
) -> (Vec<AlarmRule>, Vec<InactiveAlarm>) {
    let mut inactive = Vec::new();
    alarms.retain(|a| {
        if !a.enabled {
            inactive.push(InactiveAlarm {
                name: a.name.clone(),
                why: "enabled = false".to_owned(),
            });
            return false;
        }
        if a.metric == "pgferry_command_metric"
            && let Some(wanted) = a.labels.get("name")
            && !command_metrics.iter().any(|m| &m.name == wanted)
        {
            let why = if wanted == CPU_METRIC {
                format!(
                    "target CPU has no SQL metric: PostgreSQL does not expose the host's CPU. \
                     Declare a [[command_metric]] named {CPU_METRIC} that prints it (from \
                     `aws cloudwatch get-metric-statistics`, node_exporter or the like) and \
                     this alarm watches it"
                )
            } else {
                format!("no [[command_metric]] is named {wanted:?}")
            };
            inactive.push(InactiveAlarm {
                name: a.name.clone(),
                why,
            });
            return false;
        }
        true
    });
    (alarms, inactive)
}

fn http(
    raw: RawHttp,
    base_dir: &Path,
    invalid: &dyn Fn(&str, String) -> crate::ConfigError,
) -> Result<HttpSettings, crate::ConfigError> {
    if raw.token.is_some() {
        return Err(invalid(
            "http.token",
            format!(
                "is not allowed: secrets never go in the task file. Use token_env, token_file \
                 or token_command, or set {TOKEN_ENV}."
            ),
        ));
    }
    let listen = match raw.listen {
        Some(text) => Some(parse_listen(&text).map_err(|e| invalid("http.listen", e))?),
        None => None,
    };
    let mut sources = Vec::new();
    if let Some(v) = raw.token_env {
        sources.push(PasswordSource::Env(v));
    }
    if let Some(f) = raw.token_file {
        sources.push(PasswordSource::File(if f.is_relative() {
            base_dir.join(f)
        } else {
            f
        }));
    }
    if let Some(c) = raw.token_command {
        sources.push(PasswordSource::Command(c));
    }
    if sources.len() > 1 {
        return Err(invalid(
            "http",
            "sets more than one of token_env, token_file and token_command; keep one".to_owned(),
        ));
    }
    Ok(HttpSettings {
        listen,
        token: sources.pop(),
    })
}

/// `127.0.0.1:9187`, `[::1]:9187`, `0.0.0.0:9187`, or a bare port (on loopback).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    // `localhost` is loopback by definition; no resolver is asked.
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| format!("{text:?} has no valid port after localhost:"));
    }
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not an address and port such as 127.0.0.1:9187, localhost:9187 or \
             [::1]:9187"
        )
    })
}

/// How an email notifier's password is found, if it has one.
pub fn email_password(e: &crate::notifier::EmailConfig) -> Option<PasswordSource> {
    if let Some(v) = &e.password_env {
        return Some(PasswordSource::Env(v.clone()));
    }
    if let Some(f) = &e.password_file {
        return Some(PasswordSource::File(f.clone()));
    }
    e.password_command.clone().map(PasswordSource::Command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_is_loopback() {
        assert_eq!(
            parse_listen("localhost:9187").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 9187))
        );
        assert!(parse_listen("localhost:x").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("9187").unwrap().to_string(), "127.0.0.1:9187");
        assert_eq!(parse_listen("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(
            parse_listen("localhost")
                .unwrap_err()
                .contains("not an address")
        );
    }

    #[test]
    fn a_task_without_sections_gets_the_seeds_alarms_but_cpu() {
        let m = Monitoring::default();
        let names: Vec<&str> = m.alarms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "replication-lag",
                "target-connections",
                "target-storage",
                "source-slot-wal"
            ]
        );
        assert_eq!(m.inactive_alarms[0].name, "target-cpu");
        assert!(m.inactive_alarms[0].why.contains("no SQL metric"));
    }

    #[test]
    fn the_defaults_are_the_seeds_alarms() {
        let names: Vec<String> = default_alarms().into_iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            [
                "replication-lag",
                "target-cpu",
                "target-connections",
                "target-storage",
                "source-slot-wal"
            ]
        );
        for a in default_alarms() {
            a.check().unwrap();
            assert!(crate::metrics::info(&a.metric).is_some());
        }
    }
}
