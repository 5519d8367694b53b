//! DMS table-mappings JSON: selection, transformation and table-settings rules.
//!
//! Parsed as AWS documents it, with the quirks real files have: ids and numbers given as
//! strings, `null` values, fields DMS added later. A field pgferry does not know is kept as
//! a warning, with the nearest known name when it looks like a typo.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Lenient, LocatedError, line_of_rule, parse_json};
use crate::explain::{Explanation, Treatment};
use crate::mapping::{
    Condition, DataType, Filter, FilterOp, KeyOrigin, LoadOrder, Mapping, ParallelLoad,
    ParallelLoadKind, PrimaryKeyDef, RuleTarget, TableSettings, Transform, TransformAction,
};
use crate::pattern::NamePattern;
use crate::selection::TableRule;
use crate::suggest::did_you_mean;

#[derive(Debug, Deserialize)]
struct RawMappings {
    rules: Vec<RawRule>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RuleType {
    Selection,
    Transformation,
    TableSettings,
    PostProcessing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawAction {
    Include,
    Exclude,
    Explicit,
    Rename,
    AddPrefix,
    RemovePrefix,
    ReplacePrefix,
    AddSuffix,
    RemoveSuffix,
    ReplaceSuffix,
    ConvertLowercase,
    ConvertUppercase,
    RemoveColumn,
    AddColumn,
    IncludeColumn,
    ChangeDataType,
    DefinePrimaryKey,
    AddBeforeImageColumns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawTarget {
    Schema,
    Table,
    Column,
    TableTablespace,
    IndexTablespace,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawLocator {
    schema_name: Option<String>,
    table_name: Option<String>,
    column_name: Option<String>,
    data_type: Option<String>,
    table_type: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawCondition {
    filter_operator: FilterOp,
    value: Option<Lenient>,
    start_value: Option<Lenient>,
    end_value: Option<Lenient>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawFilter {
    filter_type: Option<String>,
    column_name: String,
    filter_conditions: Vec<RawCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawDataType {
    #[serde(rename = "type")]
    kind: String,
    length: Option<Lenient>,
    precision: Option<Lenient>,
    scale: Option<Lenient>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawKey {
    name: Option<String>,
    origin: Option<KeyOrigin>,
    columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawParallelLoad {
    #[serde(rename = "type")]
    kind: ParallelLoadKind,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    boundaries: Vec<Vec<Lenient>>,
    #[serde(default)]
    partitions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRule {
    rule_type: RuleType,
    rule_id: Option<Lenient>,
    rule_name: Option<Lenient>,
    rule_action: Option<RawAction>,
    rule_target: Option<RawTarget>,
    #[serde(default)]
    object_locator: RawLocator,
    filters: Option<Vec<RawFilter>>,
    load_order: Option<Lenient>,
    value: Option<Lenient>,
    old_value: Option<Lenient>,
    expression: Option<String>,
    data_type: Option<RawDataType>,
    primary_key_def: Option<RawKey>,
    parallel_load: Option<RawParallelLoad>,
    lob_settings: Option<serde_json::Value>,
    before_image_def: Option<serde_json::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

const RULE_FIELDS: &[&str] = &[
    "rule-type",
    "rule-id",
    "rule-name",
    "rule-action",
    "rule-target",
    "object-locator",
    "filters",
    "load-order",
    "value",
    "old-value",
    "expression",
    "data-type",
    "primary-key-def",
    "parallel-load",
    "lob-settings",
    "before-image-def",
];

const LOCATOR_FIELDS: &[&str] = &[
    "schema-name",
    "table-name",
    "column-name",
    "data-type",
    "table-type",
];

/// What a table-mappings file says.
#[derive(Debug, Clone, Default)]
pub struct DmsMappings {
    pub include: Vec<TableRule>,
    pub exclude: Vec<TableRule>,
    pub mapping: Mapping,
}

/// DMS's `explicit` names one object literally: its `%` and `_` are not wildcards.
fn literal(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '%' | '_' | '[' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

/// Parses a table-mappings file. `file` names it in messages.
pub fn parse_mappings(
    text: &str,
    file: &str,
    explanation: &mut Explanation,
) -> Result<DmsMappings, LocatedError> {
    let raw: RawMappings = parse_json(text, file)?;
    for key in raw.other.keys() {
        explanation.warn(
            format!("{file}: {key}"),
            Treatment::Ignored,
            format!(
                "not a table-mappings field{}",
                did_you_mean(key, &["rules"])
            ),
        );
    }
    let mut reader = Reader {
        out: DmsMappings::default(),
        explicit: Vec::new(),
        explanation,
    };
    for (index, rule) in in_rule_order(raw.rules) {
        let at = At::new(text, file, index, &rule);
        reader.warn_unknown_fields(&at, &rule);
        match rule.rule_type {
            RuleType::Selection => reader.selection(&at, &rule)?,
            RuleType::Transformation => reader.transformation(&at, &rule)?,
            RuleType::TableSettings => reader.table_settings(&at, &rule),
            RuleType::PostProcessing => reader.explanation.warn(
                at.path.clone(),
                Treatment::Ignored,
                "post-processing rules tag S3 objects written by DMS; pgferry writes no such \
                 objects",
            ),
        }
        if rule.before_image_def.is_some() {
            reader.explanation.warn(
                format!("{}.before-image-def", at.path),
                Treatment::Ignored,
                "before images are for streaming targets; PostgreSQL targets apply changes",
            );
        }
    }
    let out = reader.check_explicit(file)?;
    out.mapping.check().map_err(|e| LocatedError {
        file: file.to_owned(),
        path: e.origin,
        line: None,
        message: e.message,
    })?;
    Ok(out)
}

/// The rules with their index in the file, in the order DMS applies them: by rule id, the
/// file order breaking ties.
fn in_rule_order(rules: Vec<RawRule>) -> Vec<(usize, RawRule)> {
    let mut ordered: Vec<(i64, usize, RawRule)> = rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let id = r
                .rule_id
                .as_ref()
                .and_then(|v| v.as_string().parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            (id, i, r)
        })
        .collect();
    ordered.sort_by_key(|(id, i, _)| (*id, *i));
    ordered.into_iter().map(|(_, i, r)| (i, r)).collect()
}

/// Where one rule is, for messages, and the objects its locator names.
struct At<'f> {
    file: &'f str,
    /// `rules[3]`.
    path: String,
    line: Option<usize>,
    /// Named as the user knows the rule: its id and, when it has one, its name.
    origin: String,
    schema: String,
    table: String,
}

impl<'f> At<'f> {
    fn new(text: &str, file: &'f str, index: usize, rule: &RawRule) -> Self {
        let path = format!("rules[{index}]");
        let line = line_of_rule(text, index);
        let origin = format!(
            "{file} {path}{}{}{}",
            rule.rule_id
                .as_ref()
                .map(|id| format!(" (rule-id {})", id.as_string()))
                .unwrap_or_default(),
            rule.rule_name
                .as_ref()
                .map(|n| format!(" {:?}", n.as_string()))
                .unwrap_or_default(),
            line.map(|l| format!(" at line {l}")).unwrap_or_default()
        );
        let loc = &rule.object_locator;
        At {
            file,
            path,
            line,
            origin,
            schema: loc.schema_name.clone().unwrap_or_else(|| "%".to_owned()),
            table: loc.table_name.clone().unwrap_or_else(|| "%".to_owned()),
        }
    }

    fn fail(&self, message: String) -> LocatedError {
        LocatedError {
            file: self.file.to_owned(),
            path: self.path.clone(),
            line: self.line,
            message,
        }
    }

    /// The rule's action, which selection and transformation rules need.
    fn action(&self, rule: &RawRule) -> Result<RawAction, LocatedError> {
        rule.rule_action.ok_or_else(|| {
            self.fail(format!(
                "a {} rule needs `rule-action`{}",
                match rule.rule_type {
                    RuleType::Selection => "selection",
                    RuleType::Transformation => "transformation",
                    _ => "",
                },
                rule.other
                    .keys()
                    .map(|k| did_you_mean(k, &["rule-action"]))
                    .find(|s| !s.is_empty())
                    .unwrap_or_default()
            ))
        })
    }
}

/// What the rules read so far add up to.
struct Reader<'e> {
    out: DmsMappings,
    /// Explicit selections (schema, table, origin), checked against exclusions at the end.
    explicit: Vec<(String, String, String)>,
    explanation: &'e mut Explanation,
}

impl Reader<'_> {
    fn warn_unknown_fields(&mut self, at: &At<'_>, rule: &RawRule) {
        for key in rule.other.keys() {
            self.explanation.warn(
                format!("{}.{key}", at.path),
                Treatment::Ignored,
                format!("not a rule field{}", did_you_mean(key, RULE_FIELDS)),
            );
        }
        for key in rule.object_locator.other.keys() {
            self.explanation.warn(
                format!("{}.object-locator.{key}", at.path),
                Treatment::Ignored,
                format!(
                    "not an object-locator field{}",
                    did_you_mean(key, LOCATOR_FIELDS)
                ),
            );
        }
    }

    fn selection(&mut self, at: &At<'_>, rule: &RawRule) -> Result<(), LocatedError> {
        let loc = &rule.object_locator;
        if loc.schema_name.is_none() {
            return Err(at.fail("a selection rule needs object-locator.schema-name".to_owned()));
        }
        match loc
            .table_type
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("table") | Some("all") => {}
            Some(other) => self.explanation.warn(
                format!("{}.object-locator.table-type", at.path),
                Treatment::Ignored,
                format!(
                    "{other:?}: pgferry copies tables; views are recreated as views with the \
                     schema, never loaded as tables"
                ),
            ),
        }
        let (schema, table) = (&at.schema, &at.table);
        match at.action(rule)? {
            RawAction::Include => self.out.include.push(TableRule::new(schema, table)),
            RawAction::Exclude => self.out.exclude.push(TableRule::new(schema, table)),
            RawAction::Explicit => {
                self.out
                    .include
                    .push(TableRule::new(&literal(schema), &literal(table)));
                self.explicit
                    .push((schema.clone(), table.clone(), at.origin.clone()));
            }
            other => {
                return Err(at.fail(format!(
                    "a selection rule's rule-action is include, exclude or explicit, not {}",
                    action_name(other)
                )));
            }
        }
        if let Some(order) = &rule.load_order {
            let order = order.as_string().parse::<i64>().map_err(|_| {
                at.fail(format!(
                    "load-order {:?} is not a whole number",
                    order.as_string()
                ))
            })?;
            self.out.mapping.load_order.push(LoadOrder {
                schema: schema.clone(),
                table: table.clone(),
                order,
            });
        }
        self.filters(at, rule)
    }

    /// A selection rule's source filters.
    fn filters(&mut self, at: &At<'_>, rule: &RawRule) -> Result<(), LocatedError> {
        for (fi, f) in rule.filters.iter().flatten().enumerate() {
            if let Some(kind) = &f.filter_type
                && !kind.eq_ignore_ascii_case("source")
            {
                return Err(at.fail(format!(
                    "filters[{fi}].filter-type is {kind:?}; DMS and pgferry know only \"source\""
                )));
            }
            if rule.rule_action == Some(RawAction::Exclude) {
                return Err(at.fail(
                    "filters belong on include or explicit rules; on an exclude rule they \
                     would have no rows to act on"
                        .to_owned(),
                ));
            }
            let conditions = f
                .filter_conditions
                .iter()
                .map(|c| Condition {
                    op: c.filter_operator,
                    value: c.value.as_ref().map(Lenient::as_string),
                    start: c.start_value.as_ref().map(Lenient::as_string),
                    end: c.end_value.as_ref().map(Lenient::as_string),
                })
                .collect();
            self.out.mapping.filters.push(Filter {
                schema: at.schema.clone(),
                table: at.table.clone(),
                column: f.column_name.clone(),
                conditions,
                origin: format!("{} filters[{fi}]", at.origin),
            });
        }
        Ok(())
    }

    fn transformation(&mut self, at: &At<'_>, rule: &RawRule) -> Result<(), LocatedError> {
        let act = at.action(rule)?;
        let target = rule
            .rule_target
            .ok_or_else(|| at.fail("a transformation rule needs `rule-target`".to_owned()))?;
        let target = match target {
            RawTarget::Schema => RuleTarget::Schema,
            RawTarget::Table => RuleTarget::Table,
            RawTarget::Column => RuleTarget::Column,
            RawTarget::TableTablespace | RawTarget::IndexTablespace => {
                self.explanation.warn(
                    at.path.clone(),
                    Treatment::Ignored,
                    "tablespace rules apply to Oracle targets; PostgreSQL tables go to the \
                     target's default tablespace",
                );
                return Ok(());
            }
        };
        let action = transform_action(act).map_err(|m| at.fail(m))?;
        let data_type = rule
            .data_type
            .as_ref()
            .map(|d| data_type(at, d))
            .transpose()?;
        let loc = &rule.object_locator;
        let (column, column_type) = match (act, target) {
            // add-column names the new column in `value`; the locator names the table.
            (RawAction::AddColumn, _) => ("%".to_owned(), None),
            (_, RuleTarget::Column) => (
                loc.column_name.clone().unwrap_or_else(|| "%".to_owned()),
                loc.data_type.clone(),
            ),
            _ => ("%".to_owned(), None),
        };
        let table = if target == RuleTarget::Schema {
            "%".to_owned()
        } else {
            at.table.clone()
        };
        self.out.mapping.transforms.push(Transform {
            action,
            target,
            schema: at.schema.clone(),
            table,
            column,
            column_type,
            value: rule.value.as_ref().map(Lenient::as_string),
            old_value: rule.old_value.as_ref().map(Lenient::as_string),
            expression: rule.expression.clone(),
            data_type,
            primary_key: rule.primary_key_def.as_ref().map(|k| PrimaryKeyDef {
                name: k.name.clone(),
                origin: k.origin.unwrap_or_default(),
                columns: k.columns.clone(),
            }),
            origin: at.origin.clone(),
        });
        Ok(())
    }

    fn table_settings(&mut self, at: &At<'_>, rule: &RawRule) {
        if rule.lob_settings.is_some() {
            self.explanation.warn(
                format!("{}.lob-settings", at.path),
                Treatment::Different,
                "pgferry never truncates values: every large value is copied whole, whatever \
                 the LOB mode or size",
            );
        }
        let Some(p) = &rule.parallel_load else { return };
        let treatment = match p.kind {
            ParallelLoadKind::Ranges if p.columns.len() != 1 => Some(
                "pgferry splits at the boundaries of one column only: this table is split into \
                 as many parts as the ranges make, by block ranges (14+) or by its own key \
                 ranges (12, 13)",
            ),
            ParallelLoadKind::PartitionsList => Some(
                "pgferry loads every selected partition as its own unit; the list is not needed",
            ),
            _ => None,
        };
        if let Some(reason) = treatment {
            self.explanation.warn(
                format!("{}.parallel-load", at.path),
                Treatment::Different,
                reason,
            );
        }
        self.out.mapping.table_settings.push(TableSettings {
            schema: at.schema.clone(),
            table: at.table.clone(),
            parallel_load: Some(ParallelLoad {
                kind: p.kind,
                columns: p.columns.clone(),
                boundaries: p
                    .boundaries
                    .iter()
                    .map(|b| b.iter().map(Lenient::as_string).collect())
                    .collect(),
                partitions: p.partitions.clone(),
            }),
            origin: at.origin.clone(),
        });
    }

    /// An explicit selection that an exclude rule takes back contradicts itself.
    fn check_explicit(self, file: &str) -> Result<DmsMappings, LocatedError> {
        for (schema, table, origin) in &self.explicit {
            if let Some(x) = self.out.exclude.iter().find(|x| {
                NamePattern::new(&x.schema).matches(schema)
                    && NamePattern::new(&x.table).matches(table)
            }) {
                return Err(LocatedError {
                    file: file.to_owned(),
                    path: origin.clone(),
                    line: None,
                    message: format!(
                        "selects {schema}.{table} explicitly, but an exclude rule ({}.{}) \
                         excludes it; remove one of the two",
                        x.schema, x.table
                    ),
                });
            }
        }
        Ok(self.out)
    }
}

/// A transformation rule's action in pgferry's terms, or why it has none.
fn transform_action(act: RawAction) -> Result<TransformAction, String> {
    Ok(match act {
        RawAction::Rename => TransformAction::Rename,
        RawAction::AddPrefix => TransformAction::AddPrefix,
        RawAction::RemovePrefix => TransformAction::RemovePrefix,
        RawAction::ReplacePrefix => TransformAction::ReplacePrefix,
        RawAction::AddSuffix => TransformAction::AddSuffix,
        RawAction::RemoveSuffix => TransformAction::RemoveSuffix,
        RawAction::ReplaceSuffix => TransformAction::ReplaceSuffix,
        RawAction::ConvertLowercase => TransformAction::ConvertLowercase,
        RawAction::ConvertUppercase => TransformAction::ConvertUppercase,
        RawAction::RemoveColumn => TransformAction::RemoveColumn,
        RawAction::AddColumn => TransformAction::AddColumn,
        RawAction::ChangeDataType => TransformAction::ChangeDataType,
        RawAction::DefinePrimaryKey => TransformAction::DefinePrimaryKey,
        RawAction::IncludeColumn | RawAction::AddBeforeImageColumns => {
            return Err(format!(
                "{} is not supported by pgferry: it would change which values reach the \
                 target in a way pgferry cannot check. Use remove-column rules for the columns \
                 to leave out.",
                action_name(act)
            ));
        }
        other => {
            return Err(format!(
                "{} is a selection action; a transformation rule's rule-action is one of \
                 rename, add-prefix, remove-prefix, replace-prefix, add-suffix, remove-suffix, \
                 replace-suffix, convert-lowercase, convert-uppercase, remove-column, \
                 add-column, change-data-type or define-primary-key",
                action_name(other)
            ));
        }
    })
}

fn data_type(at: &At<'_>, d: &RawDataType) -> Result<DataType, LocatedError> {
    let num = |v: &Option<Lenient>, what: &str| {
        v.as_ref()
            .map(|v| {
                v.as_string().parse::<u32>().map_err(|_| {
                    at.fail(format!(
                        "data-type.{what} {:?} is not a whole number",
                        v.as_string()
                    ))
                })
            })
            .transpose()
    };
    Ok(DataType {
        kind: d.kind.clone(),
        length: num(&d.length, "length")?,
        precision: num(&d.precision, "precision")?,
        scale: num(&d.scale, "scale")?,
    })
}

fn action_name(a: RawAction) -> &'static str {
    match a {
        RawAction::Include => "include",
        RawAction::Exclude => "exclude",
        RawAction::Explicit => "explicit",
        RawAction::Rename => "rename",
        RawAction::AddPrefix => "add-prefix",
        RawAction::RemovePrefix => "remove-prefix",
        RawAction::ReplacePrefix => "replace-prefix",
        RawAction::AddSuffix => "add-suffix",
        RawAction::RemoveSuffix => "remove-suffix",
        RawAction::ReplaceSuffix => "replace-suffix",
        RawAction::ConvertLowercase => "convert-lowercase",
        RawAction::ConvertUppercase => "convert-uppercase",
        RawAction::RemoveColumn => "remove-column",
        RawAction::AddColumn => "add-column",
        RawAction::IncludeColumn => "include-column",
        RawAction::ChangeDataType => "change-data-type",
        RawAction::DefinePrimaryKey => "define-primary-key",
        RawAction::AddBeforeImageColumns => "add-before-image-columns",
    }
}
