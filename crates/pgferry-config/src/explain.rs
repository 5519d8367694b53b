//! Where each effective setting came from, and what pgferry does differently from DMS.
//!
//! `pgferry config explain` prints this. Every setting a task file or DMS JSON file can
//! carry ends up here: its value and origin, and for a DMS setting pgferry does not carry
//! out as DMS would, a warning that says why.

use serde::Serialize;

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// pgferry's own default.
    Default,
    /// The TOML task file.
    Toml,
    /// The DMS task-settings or table-mappings file.
    DmsJson,
    /// The default DMS saves for a new task, because a DMS settings file is in use and
    /// does not set it.
    DmsDefault,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Toml => "from TOML",
            Self::DmsJson => "from DMS JSON",
            Self::DmsDefault => "DMS default",
        }
    }
}

/// One effective setting.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    /// The TOML key (`jobs`, `cdc.batch_max_changes`).
    pub key: String,
    pub value: serde_json::Value,
    pub origin: Origin,
    /// The DMS setting it came from, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dms: Option<String>,
}

/// How pgferry treats a DMS setting it does not carry out as DMS does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Treatment {
    /// Read and not used.
    Ignored,
    /// Used, with a different meaning or mechanism.
    Different,
}

/// A DMS setting or rule field that pgferry ignores or treats differently.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// `FullLoadSettings.CommitRate`, `rules[2].lob-settings`.
    pub setting: String,
    pub treatment: Treatment,
    pub reason: String,
}

/// The effective settings of a task and the warnings about its DMS files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Explanation {
    pub settings: Vec<Setting>,
    pub warnings: Vec<Warning>,
}

impl Explanation {
    pub fn set(&mut self, key: &str, value: impl Serialize, origin: Origin, dms: Option<&str>) {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        let entry = Setting {
            key: key.to_owned(),
            value,
            origin,
            dms: dms.map(str::to_owned),
        };
        match self.settings.iter_mut().find(|s| s.key == key) {
            Some(existing) => *existing = entry,
            None => self.settings.push(entry),
        }
    }

    pub fn warn(
        &mut self,
        setting: impl Into<String>,
        treatment: Treatment,
        reason: impl Into<String>,
    ) {
        self.warnings.push(Warning {
            setting: setting.into(),
            treatment,
            reason: reason.into(),
        });
    }

    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }
}
