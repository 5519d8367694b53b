//! `pgferry config explain` and `pgferry config convert`.

use anyhow::Context;
use pgferry_config::Task;
use pgferry_config::explain::Treatment;

use crate::cli::{ConvertArgs, TaskArgs};

/// Prints the task's effective settings, rules and DMS warnings. Contacts no database, but
/// refuses what `run` would refuse before connecting (a connection string that does not
/// parse, or holds a password), so the two agree on what a valid task file is.
pub fn explain(args: TaskArgs) -> anyhow::Result<u8> {
    let task = Task::load(&args.task)?;
    for (side, endpoint) in [
        (pgferry_pg::Side::Source, &task.source),
        (pgferry_pg::Side::Target, &task.target),
    ] {
        pgferry_pg::conninfo::ConnParams::parse(&endpoint.url)
            .map_err(|source| pgferry_pg::PgError::ConnInfo { side, source })?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explain_json(&task))?);
        return Ok(crate::exit::OK);
    }
    print_settings(&task);
    print_rules(&task.mapping);
    print_warnings(&task);
    Ok(crate::exit::OK)
}

fn explain_json(task: &Task) -> serde_json::Value {
    let m = &task.mapping;
    serde_json::json!({
        "task": task.name,
        "settings": task.explanation.settings,
        "selection": {
            "include": task.selection.include_rules(),
            "exclude": task.selection.exclude_rules(),
        },
        "transform": m.transforms.iter().map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or_default();
            v["origin"] = t.origin.clone().into();
            v
        }).collect::<Vec<_>>(),
        "filter": m.filters.iter().map(|f| {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            v["origin"] = f.origin.clone().into();
            v
        }).collect::<Vec<_>>(),
        "table_settings": m.table_settings,
        "load_order": m.load_order,
        "warnings": task.explanation.warnings,
    })
}

fn print_settings(task: &Task) {
    println!("Task {} ({})\n", task.name, task.migration_type);
    println!("Settings:");
    let width = task
        .explanation
        .settings
        .iter()
        .map(|s| s.key.len())
        .max()
        .unwrap_or(0);
    for s in &task.explanation.settings {
        let value = match &s.value {
            serde_json::Value::String(v) => v.clone(),
            serde_json::Value::Null => "(none)".to_owned(),
            v => v.to_string(),
        };
        let from = match &s.dms {
            Some(d) => format!("{} {d}", s.origin.as_str()),
            None => s.origin.as_str().to_owned(),
        };
        println!("  {:width$}  {value:<24} {from}", s.key);
    }
    println!("\nSelection:");
    for r in task.selection.include_rules() {
        println!("  include {}.{}", r.schema, r.table);
    }
    for r in task.selection.exclude_rules() {
        println!("  exclude {}.{}", r.schema, r.table);
    }
}

fn print_rules(m: &pgferry_config::Mapping) {
    if !m.transforms.is_empty() {
        println!("\nTransformations, in the order they apply:");
        for t in &m.transforms {
            let object = match t.target {
                pgferry_config::mapping::RuleTarget::Schema => t.schema.clone(),
                pgferry_config::mapping::RuleTarget::Table => format!("{}.{}", t.schema, t.table),
                pgferry_config::mapping::RuleTarget::Column => {
                    format!("{}.{}.{}", t.schema, t.table, t.column)
                }
            };
            let value = t
                .value
                .as_deref()
                .map(|v| format!(" {v:?}"))
                .unwrap_or_default();
            // The expression is shown whole: it is SQL that will run on the target.
            let expression = t
                .expression
                .as_deref()
                .map(|e| format!(" expression {e:?}"))
                .unwrap_or_default();
            println!(
                "  {} {} {object}{value}{expression}  [{}]",
                t.action.as_str(),
                t.target,
                t.origin
            );
        }
    }
    if !m.filters.is_empty() {
        println!("\nFilters (conditions ORed, filters ANDed):");
        for f in &m.filters {
            let conditions: Vec<String> = f
                .conditions
                .iter()
                .map(|c| {
                    let mut s = c.op.as_str().to_owned();
                    for v in [&c.value, &c.start, &c.end].into_iter().flatten() {
                        s.push_str(&format!(" {v:?}"));
                    }
                    s
                })
                .collect();
            println!(
                "  {}.{}.{}: {}  [{}]",
                f.schema,
                f.table,
                f.column,
                conditions.join(" OR "),
                f.origin
            );
        }
    }
}

fn print_warnings(task: &Task) {
    if !task.explanation.warnings.is_empty() {
        println!("\nDMS settings pgferry ignores or treats differently:");
        for w in &task.explanation.warnings {
            let kind = match w.treatment {
                Treatment::Ignored => "ignored",
                Treatment::Different => "different",
            };
            println!("  {} ({kind}): {}", w.setting, w.reason);
        }
    }
}

/// Prints a TOML task file equivalent to the DMS files.
pub fn convert(args: ConvertArgs) -> anyhow::Result<u8> {
    if args.dms_mappings.is_none() && args.dms_settings.is_none() {
        return Err(pgferry_config::ConfigError::Dms(
            "pgferry config convert needs --dms-mappings, --dms-settings or both".to_owned(),
        )
        .into());
    }
    let read = |p: &std::path::PathBuf| -> anyhow::Result<(String, String)> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        Ok((text, p.display().to_string()))
    };
    let mappings = args.dms_mappings.as_ref().map(read).transpose()?;
    let settings = args.dms_settings.as_ref().map(read).transpose()?;
    let toml = pgferry_config::convert::convert(
        mappings.as_ref().map(|(t, f)| (t.as_str(), f.as_str())),
        settings.as_ref().map(|(t, f)| (t.as_str(), f.as_str())),
    )
    .map_err(|e| pgferry_config::ConfigError::Dms(e.to_string()))?;
    print!("{toml}");
    Ok(crate::exit::OK)
}
