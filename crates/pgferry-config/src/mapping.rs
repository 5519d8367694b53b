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

/// A part of an `add-column` expression: SQL text, or a reference to a source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprPart {
    Sql(String),
    /// A column, by its *target* name.
    Column(String),
}

/// What fills a column that a rule adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddedValue {
    /// Computed from the row by the target (`GENERATED ALWAYS AS (...) STORED`).
    Expression(Vec<ExprPart>),
    /// A constant (`DEFAULT`).
    Constant(String),
    /// Nothing: NULL.
    Null,
}

/// A column a rule adds to the target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedColumn {
    pub name: String,
    pub type_sql: String,
    pub value: AddedValue,
    pub origin: String,
}

/// What becomes of one source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    pub source: String,
    /// The target column's name; `None` when a rule removes the column.
    pub target: Option<String>,
    /// A new type for the target column, as SQL.
    pub new_type: Option<String>,
}

/// A source column as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct SourceColumn<'a> {
    pub name: &'a str,
    /// `format_type` output.
    pub type_name: &'a str,
}

/// How a table is split for the load, by a table-settings rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkHint {
    /// Never split.
    Whole,
    /// Split into about this many parts.
    Parts(usize),
    /// Split at these values of one key column (DMS's `ranges` on one column). The values
    /// are the user's text: the server checks and orders them before any use.
    Ranges {
        column: String,
        boundaries: Vec<String>,
    },
}

/// Everything the rules decide for one source table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMap {
    pub target_schema: String,
    pub target_table: String,
    pub columns: Vec<ColumnMap>,
    pub added: Vec<AddedColumn>,
    pub primary_key: Option<(PrimaryKeyDef, String)>,
    /// Filters over source columns, ANDed.
    pub filters: Vec<Filter>,
    pub chunks: Option<ChunkHint>,
    pub load_order: i64,
}

impl TableMap {
    /// The target name of a source column; `None` when removed or unknown.
    pub fn target_column(&self, source: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|c| c.source == source)
            .and_then(|c| c.target.as_deref())
    }

    /// Whether a rule changes the table's shape (columns or types) on the target.
    pub fn reshapes(&self) -> bool {
        !self.added.is_empty()
            || self
                .columns
                .iter()
                .any(|c| c.target.as_deref() != Some(&c.source) || c.new_type.is_some())
    }

    /// Whether a rule changes the table's columns' types.
    pub fn changes_types(&self) -> bool {
        self.columns.iter().any(|c| c.new_type.is_some())
    }
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

    /// Resolves every rule for the source table `schema.table`. `rule_name` is the name the
    /// rules match columns, filters and load order against (a partition's root, whose
    /// columns and rows it shares); `columns` are its source columns in order.
    pub fn table(
        &self,
        schema: &str,
        table: &str,
        rule_name: (&str, &str),
        columns: &[SourceColumn<'_>],
    ) -> Result<TableMap, MappingError> {
        let (rule_schema, rule_table) = rule_name;
        // Messages name the table the user's rules name: a partition's root.
        let shown = if (rule_schema, rule_table) == (schema, table) {
            format!("{schema}.{table}")
        } else {
            format!("{rule_schema}.{rule_table} (partition {schema}.{table})")
        };
        let on_table =
            |t: &&Transform, s: &str, n: &str| matches(&t.schema, s) && matches(&t.table, n);
        let target_schema = apply_names(
            self.transforms.iter().filter(|t| {
                t.target == RuleTarget::Schema && t.action.renames() && matches(&t.schema, schema)
            }),
            "schema",
            schema,
        )?;
        let target_table = apply_names(
            self.transforms.iter().filter(|t| {
                t.target == RuleTarget::Table && t.action.renames() && on_table(t, schema, table)
            }),
            "table",
            table,
        )?;
        let column_rules: Vec<&Transform> = self
            .transforms
            .iter()
            .filter(|t| t.target == RuleTarget::Column && on_table(t, rule_schema, rule_table))
            .collect();
        let hits = |t: &Transform, c: &SourceColumn<'_>| {
            matches(&t.column, c.name)
                && t.column_type
                    .as_deref()
                    .is_none_or(|w| type_matches(w, c.type_name))
        };
        let mut mapped = Vec::with_capacity(columns.len());
        for c in columns {
            let rules: Vec<&Transform> = column_rules
                .iter()
                .copied()
                .filter(|t| hits(t, c))
                .collect();
            let removed = rules
                .iter()
                .find(|t| t.action == TransformAction::RemoveColumn);
            let reshaping = rules
                .iter()
                .find(|t| t.action.renames() || t.action == TransformAction::ChangeDataType);
            // A wildcard rule that also reaches a removed column is no conflict (the removal
            // wins); two rules naming the column exactly are.
            if let (Some(r), Some(other)) = (removed, reshaping)
                && NamePattern::new(&other.column).is_exact()
                && NamePattern::new(&r.column).is_exact()
            {
                return Err(mapping_error(
                    &other.origin,
                    format!(
                        "{} column {:?} of {shown}, which {} removes",
                        other.action.as_str(),
                        c.name,
                        r.origin
                    ),
                ));
            }
            if removed.is_some() {
                mapped.push(ColumnMap {
                    source: c.name.to_owned(),
                    target: None,
                    new_type: None,
                });
                continue;
            }
            let name = apply_names(
                rules.iter().copied().filter(|t| t.action.renames()),
                "column",
                c.name,
            )?;
            let mut new_type = None;
            for t in rules
                .iter()
                .filter(|t| t.action == TransformAction::ChangeDataType)
            {
                let sql = t
                    .data_type
                    .as_ref()
                    .map(DataType::sql)
                    .transpose()
                    .map_err(|m| mapping_error(&t.origin, m))?;
                if new_type.is_some() && new_type != sql {
                    return Err(mapping_error(
                        &t.origin,
                        format!("changes the type of column {:?} a second time", c.name),
                    ));
                }
                new_type = sql;
            }
            mapped.push(ColumnMap {
                source: c.name.to_owned(),
                target: Some(name),
                new_type,
            });
        }
        // Two columns may not end up with one name.
        for (i, a) in mapped.iter().enumerate() {
            if let Some(name) = &a.target
                && let Some(b) = mapped[i + 1..]
                    .iter()
                    .find(|b| b.target.as_ref() == Some(name))
            {
                return Err(mapping_error(
                    "the column rules",
                    format!(
                        "columns {:?} and {:?} of {shown} would both be named {name:?} \
                         on the target",
                        a.source, b.source
                    ),
                ));
            }
        }
        let mut added = Vec::new();
        for t in column_rules
            .iter()
            .filter(|t| t.action == TransformAction::AddColumn)
        {
            let name = t.value.clone().unwrap_or_default();
            if mapped.iter().any(|c| c.target.as_deref() == Some(&name))
                || added.iter().any(|a: &AddedColumn| a.name == name)
            {
                return Err(mapping_error(
                    &t.origin,
                    format!("adds column {name:?} to {shown}, which already has one"),
                ));
            }
            let type_sql = t
                .data_type
                .as_ref()
                .map(DataType::sql)
                .transpose()
                .map_err(|m| mapping_error(&t.origin, m))?
                .unwrap_or_else(|| "text".to_owned());
            let value = match &t.expression {
                Some(e) => {
                    let mut parts = Vec::new();
                    for p in parse_expression(e).map_err(|m| mapping_error(&t.origin, m))? {
                        parts.push(match p {
                            ExprPart::Column(source) => {
                                let target = mapped
                                    .iter()
                                    .find(|c| c.source.eq_ignore_ascii_case(&source))
                                    .ok_or_else(|| {
                                        mapping_error(
                                            &t.origin,
                                            format!(
                                                "the expression uses ${source}, but \
                                                 {shown} has no such column{}",
                                                crate::suggest::did_you_mean(
                                                    &source,
                                                    &columns
                                                        .iter()
                                                        .map(|c| c.name)
                                                        .collect::<Vec<_>>()
                                                )
                                            ),
                                        )
                                    })?;
                                ExprPart::Column(target.target.clone().ok_or_else(|| {
                                    mapping_error(
                                        &t.origin,
                                        format!(
                                            "the expression uses ${source}, which a \
                                             remove-column rule removes from the target"
                                        ),
                                    )
                                })?)
                            }
                            sql => sql,
                        });
                    }
                    AddedValue::Expression(parts)
                }
                None => AddedValue::Null,
            };
            added.push(AddedColumn {
                name,
                type_sql,
                value,
                origin: t.origin.clone(),
            });
        }
        let mut primary_key: Option<(PrimaryKeyDef, String)> = None;
        for t in self.transforms.iter().filter(|t| {
            t.action == TransformAction::DefinePrimaryKey && on_table(t, rule_schema, rule_table)
        }) {
            let Some(pk) = &t.primary_key else { continue };
            if let Some((first, origin)) = &primary_key
                && first != pk
            {
                return Err(mapping_error(
                    &t.origin,
                    format!("defines a second primary key for {shown}; {origin} defines one"),
                ));
            }
            let mut target_cols = Vec::new();
            for col in &pk.columns {
                // A key column is named by its source name or by its name on the target.
                let target = mapped
                    .iter()
                    .find(|c| &c.source == col)
                    .and_then(|c| c.target.clone())
                    .or_else(|| {
                        mapped
                            .iter()
                            .find(|c| c.target.as_ref() == Some(col))
                            .and_then(|c| c.target.clone())
                    })
                    .or_else(|| {
                        added
                            .iter()
                            .find(|a| &a.name == col)
                            .map(|a| a.name.clone())
                    })
                    .ok_or_else(|| {
                        mapping_error(
                            &t.origin,
                            format!(
                                "the key column {col:?} is not a column of {shown} on \
                                 the target{}",
                                crate::suggest::did_you_mean(
                                    col,
                                    &columns.iter().map(|c| c.name).collect::<Vec<_>>()
                                )
                            ),
                        )
                    })?;
                target_cols.push(target);
            }
            primary_key = Some((
                PrimaryKeyDef {
                    columns: target_cols,
                    ..pk.clone()
                },
                t.origin.clone(),
            ));
        }
        let filters: Vec<Filter> = self
            .filters
            .iter()
            .filter(|f| matches(&f.schema, rule_schema) && matches(&f.table, rule_table))
            .cloned()
            .collect();
        for f in &filters {
            if !columns.iter().any(|c| c.name == f.column) {
                return Err(mapping_error(
                    &f.origin,
                    format!(
                        "filters on column {:?}, which {shown} does not have{}",
                        f.column,
                        crate::suggest::did_you_mean(
                            &f.column,
                            &columns.iter().map(|c| c.name).collect::<Vec<_>>()
                        )
                    ),
                ));
            }
        }
        let chunks = self
            .table_settings
            .iter()
            .filter(|s| matches(&s.schema, schema) && matches(&s.table, table))
            .filter_map(|s| s.parallel_load.as_ref())
            .filter_map(|p| match p.kind {
                ParallelLoadKind::None => Some(ChunkHint::Whole),
                ParallelLoadKind::Ranges => Some(match p.columns.as_slice() {
                    [column] if p.boundaries.iter().all(|b| b.len() == 1) => ChunkHint::Ranges {
                        column: column.clone(),
                        boundaries: p.boundaries.iter().map(|b| b[0].clone()).collect(),
                    },
                    _ => ChunkHint::Parts(p.boundaries.len() + 1),
                }),
                // Partitions load as their own units, and big ones split like any table.
                ParallelLoadKind::PartitionsAuto | ParallelLoadKind::PartitionsList => None,
            })
            .next_back();
        let load_order = self
            .load_order
            .iter()
            .filter(|l| matches(&l.schema, rule_schema) && matches(&l.table, rule_table))
            .map(|l| l.order)
            .max()
            .unwrap_or(0);
        Ok(TableMap {
            target_schema,
            target_table,
            columns: mapped,
            added,
            primary_key,
            filters,
            chunks,
            load_order,
        })
    }
}

/// Splits a DMS expression into SQL text and `$column` references.
///
/// This is a lexer, not a guess: it reads string literals (`'...'` with `''`), quoted
/// identifiers (`"..."` with `""`) and everything between them the way PostgreSQL's own
/// lexer does, so that what it calls balanced is balanced for the server too. What the two
/// could read differently is refused rather than handled: comments (`--`, `/* */`), escape
/// strings (`E'...'`, whose backslashes hide quotes), dollar quotes, `;`, and a
/// parenthesis closed before it was opened. An expression that passes can therefore never
/// close the parenthesis pgferry wraps it in. The server's parser checks it again before it
/// is used (`engine::transform`). DMS's row headers (`$AR_H_...`, `$AR_M_...`) name things
/// that have no PostgreSQL-to-PostgreSQL meaning and are refused.
pub fn parse_expression(expr: &str) -> Result<Vec<ExprPart>, String> {
    let refuse = |what: &str| Err(format!("expression {expr:?} {what}"));
    let mut parts = Vec::new();
    let mut sql = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth = 0i32;
    // The character before the current token, to tell `E'...'` from `name'...'`.
    let mut prev: Option<char> = None;
    let mut prev2: Option<char> = None;
    let is_ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                if c == '\'' && matches!(prev, Some('e' | 'E')) && !is_ident(prev2) {
                    return refuse(
                        "uses an escape string (E'...'), whose backslashes pgferry does not \
                         read; write a standard '...' literal",
                    );
                }
                sql.push(c);
                let mut closed = false;
                while let Some(n) = chars.next() {
                    sql.push(n);
                    if n == c {
                        if chars.peek() == Some(&c) {
                            sql.push(c);
                            chars.next();
                        } else {
                            closed = true;
                            break;
                        }
                    }
                }
                if !closed {
                    return refuse(if c == '\'' {
                        "has an unclosed quote"
                    } else {
                        "has an unclosed double quote"
                    });
                }
            }
            '$' => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if name.is_empty() {
                    return refuse(
                        "has a `$` without a column name (dollar quoting is not accepted)",
                    );
                }
                if name.starts_with("AR_H_") || name.starts_with("AR_M_") {
                    return Err(format!(
                        "expression {expr:?} uses the DMS header ${name}, which pgferry does not \
                         support; use only the row's columns"
                    ));
                }
                if !sql.is_empty() {
                    parts.push(ExprPart::Sql(std::mem::take(&mut sql)));
                }
                parts.push(ExprPart::Column(name));
                prev2 = None;
                prev = Some('"');
                continue;
            }
            '-' if chars.peek() == Some(&'-') => return refuse("may not contain a comment (`--`)"),
            '/' if chars.peek() == Some(&'*') => return refuse("may not contain a comment (`/*`)"),
            ';' => return refuse("may not contain `;`"),
            '\\' => return refuse("may not contain a backslash outside a quoted literal"),
            '(' | ')' => {
                depth += if c == '(' { 1 } else { -1 };
                if depth < 0 {
                    return refuse("closes a parenthesis it never opened");
                }
                sql.push(c);
            }
            c => sql.push(c),
        }
        prev2 = prev;
        prev = Some(c);
    }
    if depth != 0 {
        return refuse("leaves a parenthesis open");
    }
    if parts.is_empty() && sql.trim().is_empty() {
        return refuse("is empty");
    }
    if !sql.is_empty() {
        parts.push(ExprPart::Sql(sql));
    }
    Ok(parts)
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
