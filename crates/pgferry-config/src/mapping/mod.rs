//! Transformation, filter and table-settings rules, and what they make of one table.
//!
//! The rules have DMS's meanings and are written the same way in a TOML task file
//! (`[[transform]]`, `[[filter]]`, `[[table_settings]]`) or read from a DMS table-mappings
//! file. Every rule matches *source* names with `%` and `_` wildcards. [`Mapping::table`]
//! resolves all rules for one source table into a [`TableMap`]: the target's name, each
//! column's fate, added columns, the row filter and load hints. The full load, the change
//! stream and validation all use that one answer, so they can never disagree.
//!
//! This module is pure: it renders no SQL (the engine quotes every name), so every rule is
//! unit tested without a database.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pattern::NamePattern;

mod expression;
mod table;

pub use expression::{ExprPart, parse_expression};
pub use table::{AddedColumn, AddedValue, ChunkHint, ColumnMap, SourceColumn, TableMap};

fn any() -> String {
    "%".to_owned()
}

fn is_any(s: &str) -> bool {
    s == "%"
}

/// What a transformation acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleTarget {
    Schema,
    Table,
    Column,
}

/// What a transformation does, with DMS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransformAction {
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
    ChangeDataType,
    DefinePrimaryKey,
}

impl TransformAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rename => "rename",
            Self::AddPrefix => "add-prefix",
            Self::RemovePrefix => "remove-prefix",
            Self::ReplacePrefix => "replace-prefix",
            Self::AddSuffix => "add-suffix",
            Self::RemoveSuffix => "remove-suffix",
            Self::ReplaceSuffix => "replace-suffix",
            Self::ConvertLowercase => "convert-lowercase",
            Self::ConvertUppercase => "convert-uppercase",
            Self::RemoveColumn => "remove-column",
            Self::AddColumn => "add-column",
            Self::ChangeDataType => "change-data-type",
            Self::DefinePrimaryKey => "define-primary-key",
        }
    }

    /// Whether the action changes a name (and so may chain with other name rules).
    fn renames(self) -> bool {
        matches!(
            self,
            Self::Rename
                | Self::AddPrefix
                | Self::RemovePrefix
                | Self::ReplacePrefix
                | Self::AddSuffix
                | Self::RemoveSuffix
                | Self::ReplaceSuffix
                | Self::ConvertLowercase
                | Self::ConvertUppercase
        )
    }

    /// The rule targets the action accepts.
    pub fn targets(self) -> &'static [RuleTarget] {
        match self {
            Self::RemoveColumn | Self::AddColumn | Self::ChangeDataType => &[RuleTarget::Column],
            Self::DefinePrimaryKey => &[RuleTarget::Table],
            _ => &[RuleTarget::Schema, RuleTarget::Table, RuleTarget::Column],
        }
    }
}

/// A DMS data type, as `change-data-type` and `add-column` give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataType {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
}

/// The DMS type names pgferry maps onto PostgreSQL types.
pub const DMS_TYPES: &[&str] = &[
    "string", "wstring", "clob", "nclob", "boolean", "bytes", "blob", "date", "time", "datetime",
    "int1", "int2", "int4", "int8", "uint1", "uint2", "uint4", "uint8", "numeric", "real4",
    "real8",
];

impl DataType {
    /// The PostgreSQL type, as SQL. Only fixed keywords and numbers go in, never user text.
    pub fn sql(&self) -> Result<String, String> {
        let kind = self.kind.to_ascii_lowercase();
        let sized = |base: &str, unbounded: &str| match self.length {
            Some(n) if n > 0 => format!("{base}({n})"),
            _ => unbounded.to_owned(),
        };
        Ok(match kind.as_str() {
            "string" | "wstring" => sized("character varying", "text"),
            "clob" | "nclob" => "text".to_owned(),
            "boolean" => "boolean".to_owned(),
            "bytes" | "blob" => "bytea".to_owned(),
            "date" => "date".to_owned(),
            "time" => "time without time zone".to_owned(),
            "datetime" => match self.scale {
                Some(s) if s <= 6 => format!("timestamp({s}) without time zone"),
                _ => "timestamp without time zone".to_owned(),
            },
            "int1" | "int2" | "uint1" => "smallint".to_owned(),
            "int4" | "uint2" => "integer".to_owned(),
            "int8" | "uint4" => "bigint".to_owned(),
            "uint8" => "numeric(20,0)".to_owned(),
            "numeric" => match (self.precision, self.scale) {
                (Some(p), Some(s)) if p > 0 => format!("numeric({p},{s})"),
                (Some(p), None) if p > 0 => format!("numeric({p})"),
                _ => "numeric".to_owned(),
            },
            "real4" => "real".to_owned(),
            "real8" => "double precision".to_owned(),
            other => {
                return Err(format!(
                    "unknown data type {other:?}{}; expected one of {}",
                    crate::suggest::did_you_mean(other, DMS_TYPES),
                    DMS_TYPES.join(", ")
                ));
            }
        })
    }
}

/// Whether a defined key is a primary key or a unique index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOrigin {
    #[default]
    PrimaryKey,
    UniqueIndex,
}

/// `define-primary-key`: the key the target table gets instead of the source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryKeyDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub origin: KeyOrigin,
    pub columns: Vec<String>,
}

/// One transformation rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    pub action: TransformAction,
    pub target: RuleTarget,
    #[serde(default = "any", skip_serializing_if = "is_any")]
    pub schema: String,
    #[serde(default = "any", skip_serializing_if = "is_any")]
    pub table: String,
    #[serde(default = "any", skip_serializing_if = "is_any")]
    pub column: String,
    /// Only columns of this PostgreSQL type (as `format_type` prints it, with or without
    /// its modifier); DMS's `data-type` in the object locator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_type: Option<String>,
    /// The new name, or the prefix or suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The prefix or suffix that `replace-prefix` and `replace-suffix` replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_value: Option<String>,
    /// `add-column`: an expression over the row, with `$column` for a source column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<PrimaryKeyDef>,
    /// Where the rule came from, for messages: `transform 2` or `rule 7 "name"`.
    #[serde(skip)]
    pub origin: String,
}

impl Transform {
    /// Moves every table into `schema`: DMS's `TargetMetadata.TargetSchema`.
    pub fn rename_every_schema(schema: &str, origin: &str) -> Transform {
        Transform {
            action: TransformAction::Rename,
            target: RuleTarget::Schema,
            schema: any(),
            table: any(),
            column: any(),
            column_type: None,
            value: Some(schema.to_owned()),
            old_value: None,
            expression: None,
            data_type: None,
            primary_key: None,
            origin: origin.to_owned(),
        }
    }
}

/// A filter operator, with DMS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterOp {
    Eq,
    Noteq,
    /// Smaller than or equal.
    Ste,
    /// Greater than or equal.
    Gte,
    Between,
    Notbetween,
    Null,
    Notnull,
}

impl FilterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Noteq => "noteq",
            Self::Ste => "ste",
            Self::Gte => "gte",
            Self::Between => "between",
            Self::Notbetween => "notbetween",
            Self::Null => "null",
            Self::Notnull => "notnull",
        }
    }
}

/// One condition of a filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub op: FilterOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

impl Condition {
    /// What the condition is missing, if anything.
    pub fn check(&self) -> Result<(), String> {
        let need = |what: &str, v: &Option<String>| {
            v.as_ref()
                .map(|_| ())
                .ok_or_else(|| format!("`{}` needs a {what}", self.op.as_str()))
        };
        match self.op {
            FilterOp::Eq | FilterOp::Noteq | FilterOp::Ste | FilterOp::Gte => {
                need("value", &self.value)
            }
            FilterOp::Between | FilterOp::Notbetween => {
                need("start", &self.start)?;
                need("end", &self.end)
            }
            FilterOp::Null | FilterOp::Notnull => Ok(()),
        }
    }
}

/// A filter on one column: its conditions are ORed; several filters on a table are ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default = "any")]
    pub schema: String,
    #[serde(default = "any")]
    pub table: String,
    pub column: String,
    pub conditions: Vec<Condition>,
    #[serde(skip)]
    pub origin: String,
}

/// How DMS's `parallel-load` splits a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParallelLoadKind {
    PartitionsAuto,
    PartitionsList,
    Ranges,
    None,
}

/// `parallel-load`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelLoad {
    #[serde(rename = "type")]
    pub kind: ParallelLoadKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundaries: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
}

/// A table-settings rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    #[serde(default = "any")]
    pub schema: String,
    #[serde(default = "any")]
    pub table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_load: Option<ParallelLoad>,
    #[serde(skip)]
    pub origin: String,
}

/// DMS's `load-order` of a selection rule: tables with a higher order load first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadOrder {
    #[serde(default = "any")]
    pub schema: String,
    #[serde(default = "any")]
    pub table: String,
    pub order: i64,
}

/// A rule that cannot be carried out, or two rules that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct MappingError {
    pub origin: String,
    pub message: String,
}

fn mapping_error(origin: &str, message: impl Into<String>) -> MappingError {
    MappingError {
        origin: origin.to_owned(),
        message: message.into(),
    }
}

/// All of a task's transformation, filter and table-settings rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub transforms: Vec<Transform>,
    pub filters: Vec<Filter>,
    pub table_settings: Vec<TableSettings>,
    pub load_order: Vec<LoadOrder>,
}

/// Applies one name rule to a name.
fn rename(t: &Transform, name: &str) -> Result<String, MappingError> {
    let value = || {
        t.value.clone().ok_or_else(|| {
            mapping_error(&t.origin, format!("`{}` needs a value", t.action.as_str()))
        })
    };
    Ok(match t.action {
        TransformAction::Rename => value()?,
        TransformAction::AddPrefix => format!("{}{name}", value()?),
        TransformAction::AddSuffix => format!("{name}{}", value()?),
        TransformAction::RemovePrefix => {
            let v = value()?;
            name.strip_prefix(v.as_str()).unwrap_or(name).to_owned()
        }
        TransformAction::RemoveSuffix => {
            let v = value()?;
            name.strip_suffix(v.as_str()).unwrap_or(name).to_owned()
        }
        TransformAction::ReplacePrefix => {
            let old = t.old_value.clone().unwrap_or_default();
            match name.strip_prefix(old.as_str()) {
                Some(rest) => format!("{}{rest}", value()?),
                None => name.to_owned(),
            }
        }
        TransformAction::ReplaceSuffix => {
            let old = t.old_value.clone().unwrap_or_default();
            match name.strip_suffix(old.as_str()) {
                Some(rest) => format!("{rest}{}", value()?),
                None => name.to_owned(),
            }
        }
        TransformAction::ConvertLowercase => name.to_lowercase(),
        TransformAction::ConvertUppercase => name.to_uppercase(),
        _ => name.to_owned(),
    })
}

/// Runs the name rules that match, in order. Two `rename`s of one object to different
/// names contradict each other.
fn apply_names<'a>(
    rules: impl Iterator<Item = &'a Transform>,
    what: &str,
    name: &str,
) -> Result<String, MappingError> {
    let mut out = name.to_owned();
    let mut renamed_by: Option<&Transform> = None;
    for t in rules {
        if t.action == TransformAction::Rename {
            if let Some(first) = renamed_by
                && first.value != t.value
            {
                return Err(mapping_error(
                    &t.origin,
                    format!(
                        "renames {what} {name:?} to {:?}, but {} renames it to {:?}; keep one",
                        t.value.as_deref().unwrap_or_default(),
                        first.origin,
                        first.value.as_deref().unwrap_or_default()
                    ),
                ));
            }
            renamed_by = Some(t);
        }
        out = rename(t, &out)?;
    }
    if out.is_empty() || out.len() > 63 {
        return Err(mapping_error(
            renamed_by.map_or("a transformation rule", |t| t.origin.as_str()),
            format!("turns {what} {name:?} into {out:?}; a PostgreSQL name must be 1 to 63 bytes"),
        ));
    }
    Ok(out)
}

fn matches(pattern: &str, name: &str) -> bool {
    NamePattern::new(pattern).matches(name)
}

fn type_matches(wanted: &str, type_name: &str) -> bool {
    let base = type_name.split('(').next().unwrap_or(type_name).trim();
    wanted.eq_ignore_ascii_case(type_name) || wanted.eq_ignore_ascii_case(base)
}

impl Mapping {
    /// Whether the task has no rule beyond selection.
    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
            && self.filters.is_empty()
            && self.table_settings.is_empty()
            && self.load_order.is_empty()
    }

    /// Whether any rule adds a column computed by an expression.
    pub fn has_expressions(&self) -> bool {
        self.transforms
            .iter()
            .any(|t| t.action == TransformAction::AddColumn && t.expression.is_some())
    }

    /// Whether any rule changes a column's type, which rules out binary transfer.
    pub fn changes_types(&self) -> bool {
        self.transforms
            .iter()
            .any(|t| t.action == TransformAction::ChangeDataType)
    }

    /// Whether any table has a row filter.
    pub fn has_filters(&self) -> bool {
        !self.filters.is_empty()
    }

    /// Checks each rule on its own: values present, targets valid, types known.
    pub fn check(&self) -> Result<(), MappingError> {
        for t in &self.transforms {
            if !t.action.targets().contains(&t.target) {
                return Err(mapping_error(
                    &t.origin,
                    format!(
                        "`{}` applies to {}, not to a {}",
                        t.action.as_str(),
                        t.action
                            .targets()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" or "),
                        t.target
                    ),
                ));
            }
            let needs_value = matches!(
                t.action,
                TransformAction::Rename
                    | TransformAction::AddPrefix
                    | TransformAction::AddSuffix
                    | TransformAction::RemovePrefix
                    | TransformAction::RemoveSuffix
                    | TransformAction::ReplacePrefix
                    | TransformAction::ReplaceSuffix
                    | TransformAction::AddColumn
            );
            if needs_value && t.value.as_deref().is_none_or(str::is_empty) {
                return Err(mapping_error(
                    &t.origin,
                    format!(
                        "`{}` needs a value (the {})",
                        t.action.as_str(),
                        if t.action == TransformAction::AddColumn {
                            "new column's name"
                        } else {
                            "new name or the prefix/suffix"
                        }
                    ),
                ));
            }
            if matches!(
                t.action,
                TransformAction::ReplacePrefix | TransformAction::ReplaceSuffix
            ) && t.old_value.is_none()
            {
                return Err(mapping_error(
                    &t.origin,
                    format!("`{}` needs old-value", t.action.as_str()),
                ));
            }
            match t.action {
                TransformAction::ChangeDataType | TransformAction::AddColumn => {
                    let dt = t.data_type.as_ref().ok_or_else(|| {
                        mapping_error(
                            &t.origin,
                            format!("`{}` needs a data-type", t.action.as_str()),
                        )
                    })?;
                    dt.sql().map_err(|m| mapping_error(&t.origin, m))?;
                }
                TransformAction::DefinePrimaryKey => {
                    let pk = t.primary_key.as_ref().ok_or_else(|| {
                        mapping_error(&t.origin, "`define-primary-key` needs primary-key-def")
                    })?;
                    if pk.columns.is_empty() {
                        return Err(mapping_error(&t.origin, "primary-key-def lists no columns"));
                    }
                }
                _ => {}
            }
            if let Some(e) = &t.expression
                && t.action == TransformAction::AddColumn
            {
                parse_expression(e).map_err(|m| mapping_error(&t.origin, m))?;
            }
        }
        for f in &self.filters {
            if f.conditions.is_empty() {
                return Err(mapping_error(&f.origin, "the filter has no conditions"));
            }
            for c in &f.conditions {
                c.check().map_err(|m| mapping_error(&f.origin, m))?;
            }
        }
        Ok(())
    }

    /// The target schema of a source schema, by the rules that act on schemas. For
    /// objects other than tables (sequences) that follow their schema.
    pub fn target_schema(&self, schema: &str) -> Result<String, MappingError> {
        apply_names(
            self.transforms.iter().filter(|t| {
                t.target == RuleTarget::Schema
                    && t.action.renames()
                    && matches(&t.schema, schema)
                    && is_any(&t.table)
            }),
            "schema",
            schema,
        )
    }
}

impl fmt::Display for RuleTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Schema => "schema",
            Self::Table => "table",
            Self::Column => "column",
        })
    }
}
