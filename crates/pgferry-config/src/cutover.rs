//! The `[cutover]` section: how `pgferry cutover` fences the source and opens the target.

use std::time::Duration;

use serde::Deserialize;

/// Settings of the cutover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutoverSettings {
    /// The cutover refuses to start while the stream lags more than this (the runbook's
    /// "lag < 5 s").
    pub max_lag: Duration,
    /// Roles made `NOLOGIN` while the source is fenced, on top of the database's
    /// read-only default: the application's roles, so that not even a session that turns
    /// the default off can write.
    pub fence_roles: Vec<String>,
    /// Commands run when the target opens (flip DNS, update a secret, reload PgBouncer),
    /// in order, each within its timeout.
    pub on_switch: Vec<SwitchCommand>,
    /// Stream the target's changes back to the source after the cutover, so that
    /// `pgferry rollback` loses nothing (`reverse = false` skips it).
    pub reverse: bool,
    /// Commands run when a rollback reopens the source (point the application back).
    pub on_rollback: Vec<SwitchCommand>,
}

impl Default for CutoverSettings {
    fn default() -> Self {
        CutoverSettings {
            max_lag: Duration::from_secs(5),
            fence_roles: Vec::new(),
            on_switch: Vec::new(),
            reverse: true,
            on_rollback: Vec::new(),
        }
    }
}

/// One command of `on_switch`, run by `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchCommand {
    pub command: String,
    pub timeout: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCutover {
    pub max_lag_s: Option<f64>,
    #[serde(default)]
    pub fence_roles: Vec<String>,
    #[serde(default)]
    pub on_switch: Vec<RawSwitchCommand>,
    pub reverse: Option<bool>,
    #[serde(default)]
    pub on_rollback: Vec<RawSwitchCommand>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSwitchCommand {
    pub command: String,
    pub timeout_s: Option<u64>,
}

/// A switch command's default timeout.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks the section; `invalid` names the key that is wrong.
pub(crate) fn build(
    raw: RawCutover,
    invalid: &dyn Fn(&str, String) -> crate::ConfigError,
) -> Result<CutoverSettings, crate::ConfigError> {
    let max_lag = match raw.max_lag_s {
        None => CutoverSettings::default().max_lag,
        Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Duration::from_secs_f64(s),
        Some(s) => {
            return Err(invalid(
                "cutover.max_lag_s",
                format!("is {s}; give the most lag to cut over at, in seconds (0 to 3600)"),
            ));
        }
    };
    for role in &raw.fence_roles {
        if role.is_empty() || role.len() > 63 {
            return Err(invalid(
                "cutover.fence_roles",
                format!("{role:?} is not a role name (1 to 63 bytes)"),
            ));
        }
    }
    let on_switch = commands(raw.on_switch, "on_switch", invalid)?;
    let on_rollback = commands(raw.on_rollback, "on_rollback", invalid)?;
    Ok(CutoverSettings {
        max_lag,
        fence_roles: raw.fence_roles,
        on_switch,
        reverse: raw.reverse.unwrap_or(true),
        on_rollback,
    })
}

/// Checks one list of commands (`on_switch`, `on_rollback`).
fn commands(
    raw: Vec<RawSwitchCommand>,
    key: &str,
    invalid: &dyn Fn(&str, String) -> crate::ConfigError,
) -> Result<Vec<SwitchCommand>, crate::ConfigError> {
    let mut out = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        if c.command.trim().is_empty() {
            return Err(invalid(
                &format!("cutover.{key}[{i}].command"),
                "is empty".to_owned(),
            ));
        }
        let timeout = match c.timeout_s {
            None => SWITCH_TIMEOUT,
            Some(s) if (1..=3600).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                return Err(invalid(
                    &format!("cutover.{key}[{i}].timeout_s"),
                    format!("is {s}; it must be between 1 and 3600 seconds"),
                ));
            }
        };
        out.push(SwitchCommand {
            command: c.command,
            timeout,
        });
    }
    Ok(out)
}
