//! `pgferry config convert`: DMS JSON files to a TOML task file that says the same.

use serde::Serialize;

use crate::dms::{self, LocatedError};
use crate::explain::{Explanation, Origin};
use crate::mapping::{Filter, LoadOrder, TableSettings, Transform};
use crate::selection::TableRule;

#[derive(Serialize)]
struct Out {
    migration_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_table_prep_mode: Option<&'static str>,
    source: Url,
    target: Url,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_filter: Option<String>,
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    cdc: toml::Table,
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    error_behavior: toml::Table,
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    validation: toml::Table,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    include: Vec<TableRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<TableRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    load_order: Vec<LoadOrder>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filter: Vec<Filter>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    transform: Vec<Transform>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    table_settings: Vec<TableSettings>,
}

#[derive(Serialize)]
struct Url {
    url: &'static str,
}

/// The TOML task equivalent to the given DMS files, with a header comment listing every
/// setting pgferry ignores or treats differently. Endpoints are placeholders to fill in.
pub fn convert(
    mappings: Option<(&str, &str)>,
    settings: Option<(&str, &str)>,
) -> Result<String, LocatedError> {
    let mut explanation = Explanation::default();
    let m = mappings
        .map(|(text, file)| dms::parse_mappings(text, file, &mut explanation))
        .transpose()?
        .unwrap_or_default();
    let s = settings
        .map(|(text, file)| dms::parse_settings(text, file, &mut explanation))
        .transpose()?;
    let explicit = |o: Origin| o == Origin::DmsJson;
    let mut out = Out {
        migration_type: "full-load-and-cdc",
        jobs: None,
        target_table_prep_mode: None,
        source: Url {
            url: "postgres://USER@SOURCE-HOST:5432/DBNAME?sslmode=verify-full",
        },
        target: Url {
            url: "postgres://USER@TARGET-HOST:5432/DBNAME?sslmode=verify-full",
        },
        log_filter: None,
        cdc: toml::Table::new(),
        error_behavior: toml::Table::new(),
        validation: toml::Table::new(),
        include: m.include,
        exclude: m.exclude,
        load_order: m.mapping.load_order,
        filter: m.mapping.filters,
        transform: m.mapping.transforms,
        table_settings: m.mapping.table_settings,
    };
    if let Some(s) = &s {
        // DMS defaults are written out too: the TOML task must behave the same without
        // the JSON file, and pgferry's own defaults differ.
        out.jobs = s.jobs.as_ref().map(|j| j.value);
        out.target_table_prep_mode = s.target_table_prep_mode.as_ref().map(|p| p.value.as_str());
        let mut cdc = toml::Table::new();
        if let Some(v) = &s.batch_max_changes {
            cdc.insert("batch_max_changes".into(), (v.value as i64).into());
        }
        if let Some(v) = &s.batch_max_delay_ms {
            cdc.insert("batch_max_delay_ms".into(), (v.value as i64).into());
        }
        if let Some(v) = &s.batch_max_bytes {
            cdc.insert(
                "batch_max_bytes".into(),
                format!("{}MiB", v.value / (1024 * 1024)).into(),
            );
        }
        if let Some(v) = &s.apply_truncate {
            cdc.insert("apply_truncate".into(), v.value.into());
        }
        if let Some(v) = &s.add_new_columns {
            cdc.insert("add_new_columns".into(), v.value.into());
        }
        if let Some(v) = &s.ddl {
            cdc.insert("ddl".into(), v.value.into());
        }
        if let Some(v) = &s.apply_drop_table {
            cdc.insert("apply_drop_table".into(), v.value.into());
        }
        if let Some(v) = &s.ddl_error_policy {
            cdc.insert("ddl_error_policy".into(), v.value.as_str().into());
        }
        out.cdc = cdc;
        out.error_behavior = toml::Table::try_from(&s.errors).unwrap_or_default();
        if let Some(v) = &s.validation_jobs {
            out.validation
                .insert("jobs".into(), (v.value as i64).into());
        }
        out.log_filter = s.log_filter.as_ref().map(|f| f.value.clone());
        if let Some(schema) = s.target_schema.as_ref().filter(|t| explicit(t.origin)) {
            out.transform
                .push(Transform::rename_every_schema(&schema.value, ""));
        }
    }
    let body = toml::to_string_pretty(&out).map_err(|e| LocatedError {
        file: "<output>".into(),
        path: String::new(),
        line: None,
        message: e.to_string(),
    })?;
    let mut header = String::from(
        "# Converted by `pgferry config convert` from DMS JSON.\n\
         # Fill in the source and target URLs; passwords go in password_env, password_file or\n\
         # password_command, never here.\n",
    );
    if !explanation.warnings.is_empty() {
        header.push_str("#\n# What pgferry ignores or does differently:\n");
        for w in &explanation.warnings {
            header.push_str(&format!(
                "# - {} ({}): {}\n",
                w.setting,
                match w.treatment {
                    crate::explain::Treatment::Ignored => "ignored",
                    crate::explain::Treatment::Different => "different",
                },
                w.reason
            ));
        }
    }
    Ok(format!("{header}\n{body}"))
}
