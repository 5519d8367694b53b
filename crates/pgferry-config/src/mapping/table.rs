//! What the rules make of one source table: [`Mapping::table`] and its answer, [`TableMap`].
//!
//! Rules are resolved in one order, each step seeing the previous one's result: the names,
//! then each column's fate (removed, renamed, retyped), then added columns (whose
//! expressions name columns by their target names), then a defined primary key, then
//! filters, split hints and load order. A contradiction between two rules is an error that
//! names both, never a silent choice.

use super::{
    DataType, Filter, Mapping, MappingError, ParallelLoadKind, PrimaryKeyDef, RuleTarget,
    Transform, TransformAction, apply_names, mapping_error, matches, type_matches,
};
use crate::mapping::{ExprPart, parse_expression};
use crate::pattern::NamePattern;

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

/// One table's view of the rules: its names, and the name its rules match against.
struct OneTable<'m> {
    mapping: &'m Mapping,
    schema: &'m str,
    table: &'m str,
    rule_schema: &'m str,
    rule_table: &'m str,
    /// The table as messages name it: the one the user's rules name (a partition's root).
    shown: String,
}

impl Mapping {
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
        let shown = if (rule_schema, rule_table) == (schema, table) {
            format!("{schema}.{table}")
        } else {
            format!("{rule_schema}.{rule_table} (partition {schema}.{table})")
        };
        let one = OneTable {
            mapping: self,
            schema,
            table,
            rule_schema,
            rule_table,
            shown,
        };
        let (target_schema, target_table) = one.names()?;
        let column_rules = one.column_rules();
        let mapped = columns
            .iter()
            .map(|c| one.column(&column_rules, c))
            .collect::<Result<Vec<_>, _>>()?;
        one.check_unique(&mapped)?;
        let added = one.added_columns(&column_rules, &mapped, columns)?;
        let primary_key = one.primary_key(&mapped, &added, columns)?;
        Ok(TableMap {
            target_schema,
            target_table,
            columns: mapped,
            added,
            primary_key,
            filters: one.filters(columns)?,
            chunks: one.chunk_hint(),
            load_order: one.load_order(),
        })
    }
}

/// The source columns' names, for "did you mean".
fn names<'a>(columns: &'a [SourceColumn<'_>]) -> Vec<&'a str> {
    columns.iter().map(|c| c.name).collect()
}

impl OneTable<'_> {
    fn on_table(&self, t: &Transform, schema: &str, table: &str) -> bool {
        matches(&t.schema, schema) && matches(&t.table, table)
    }

    /// The target schema and table names.
    fn names(&self) -> Result<(String, String), MappingError> {
        let rules = &self.mapping.transforms;
        let target_schema = apply_names(
            rules.iter().filter(|t| {
                t.target == RuleTarget::Schema
                    && t.action.renames()
                    && matches(&t.schema, self.schema)
            }),
            "schema",
            self.schema,
        )?;
        let target_table = apply_names(
            rules.iter().filter(|t| {
                t.target == RuleTarget::Table
                    && t.action.renames()
                    && self.on_table(t, self.schema, self.table)
            }),
            "table",
            self.table,
        )?;
        Ok((target_schema, target_table))
    }

    fn column_rules(&self) -> Vec<&Transform> {
        self.mapping
            .transforms
            .iter()
            .filter(|t| {
                t.target == RuleTarget::Column
                    && self.on_table(t, self.rule_schema, self.rule_table)
            })
            .collect()
    }

    /// What becomes of one source column.
    fn column(
        &self,
        column_rules: &[&Transform],
        c: &SourceColumn<'_>,
    ) -> Result<ColumnMap, MappingError> {
        let rules: Vec<&Transform> = column_rules
            .iter()
            .copied()
            .filter(|t| {
                matches(&t.column, c.name)
                    && t.column_type
                        .as_deref()
                        .is_none_or(|w| type_matches(w, c.type_name))
            })
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
                    "{} column {:?} of {}, which {} removes",
                    other.action.as_str(),
                    c.name,
                    self.shown,
                    r.origin
                ),
            ));
        }
        if removed.is_some() {
            return Ok(ColumnMap {
                source: c.name.to_owned(),
                target: None,
                new_type: None,
            });
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
        Ok(ColumnMap {
            source: c.name.to_owned(),
            target: Some(name),
            new_type,
        })
    }

    /// Two columns may not end up with one name.
    fn check_unique(&self, mapped: &[ColumnMap]) -> Result<(), MappingError> {
        for (i, a) in mapped.iter().enumerate() {
            if let Some(name) = &a.target
                && let Some(b) = mapped[i + 1..]
                    .iter()
                    .find(|b| b.target.as_ref() == Some(name))
            {
                return Err(mapping_error(
                    "the column rules",
                    format!(
                        "columns {:?} and {:?} of {} would both be named {name:?} on the target",
                        a.source, b.source, self.shown
                    ),
                ));
            }
        }
        Ok(())
    }

    fn added_columns(
        &self,
        column_rules: &[&Transform],
        mapped: &[ColumnMap],
        columns: &[SourceColumn<'_>],
    ) -> Result<Vec<AddedColumn>, MappingError> {
        let mut added: Vec<AddedColumn> = Vec::new();
        for t in column_rules
            .iter()
            .filter(|t| t.action == TransformAction::AddColumn)
        {
            let name = t.value.clone().unwrap_or_default();
            if mapped.iter().any(|c| c.target.as_deref() == Some(&name))
                || added.iter().any(|a| a.name == name)
            {
                return Err(mapping_error(
                    &t.origin,
                    format!(
                        "adds column {name:?} to {}, which already has one",
                        self.shown
                    ),
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
                Some(e) => self.expression(t, e, mapped, columns)?,
                None => AddedValue::Null,
            };
            added.push(AddedColumn {
                name,
                type_sql,
                value,
                origin: t.origin.clone(),
            });
        }
        Ok(added)
    }

    /// An added column's expression, its `$column` references turned into target names.
    fn expression(
        &self,
        t: &Transform,
        expression: &str,
        mapped: &[ColumnMap],
        columns: &[SourceColumn<'_>],
    ) -> Result<AddedValue, MappingError> {
        let mut parts = Vec::new();
        for p in parse_expression(expression).map_err(|m| mapping_error(&t.origin, m))? {
            let ExprPart::Column(source) = p else {
                parts.push(p);
                continue;
            };
            let column = mapped
                .iter()
                .find(|c| c.source.eq_ignore_ascii_case(&source))
                .ok_or_else(|| {
                    mapping_error(
                        &t.origin,
                        format!(
                            "the expression uses ${source}, but {} has no such column{}",
                            self.shown,
                            crate::suggest::did_you_mean(&source, &names(columns))
                        ),
                    )
                })?;
            let target = column.target.clone().ok_or_else(|| {
                mapping_error(
                    &t.origin,
                    format!(
                        "the expression uses ${source}, which a remove-column rule removes \
                         from the target"
                    ),
                )
            })?;
            parts.push(ExprPart::Column(target));
        }
        Ok(AddedValue::Expression(parts))
    }

    fn primary_key(
        &self,
        mapped: &[ColumnMap],
        added: &[AddedColumn],
        columns: &[SourceColumn<'_>],
    ) -> Result<Option<(PrimaryKeyDef, String)>, MappingError> {
        let mut primary_key: Option<(PrimaryKeyDef, String)> = None;
        for t in self.mapping.transforms.iter().filter(|t| {
            t.action == TransformAction::DefinePrimaryKey
                && self.on_table(t, self.rule_schema, self.rule_table)
        }) {
            let Some(pk) = &t.primary_key else { continue };
            if let Some((first, origin)) = &primary_key
                && first != pk
            {
                return Err(mapping_error(
                    &t.origin,
                    format!(
                        "defines a second primary key for {}; {origin} defines one",
                        self.shown
                    ),
                ));
            }
            let target_cols = pk
                .columns
                .iter()
                .map(|col| self.key_column(t, col, mapped, added, columns))
                .collect::<Result<Vec<_>, _>>()?;
            primary_key = Some((
                PrimaryKeyDef {
                    columns: target_cols,
                    ..pk.clone()
                },
                t.origin.clone(),
            ));
        }
        Ok(primary_key)
    }

    /// A key column is named by its source name or by its name on the target.
    fn key_column(
        &self,
        t: &Transform,
        col: &str,
        mapped: &[ColumnMap],
        added: &[AddedColumn],
        columns: &[SourceColumn<'_>],
    ) -> Result<String, MappingError> {
        mapped
            .iter()
            .find(|c| c.source == col)
            .and_then(|c| c.target.clone())
            .or_else(|| {
                mapped
                    .iter()
                    .find(|c| c.target.as_deref() == Some(col))
                    .and_then(|c| c.target.clone())
            })
            .or_else(|| added.iter().find(|a| a.name == col).map(|a| a.name.clone()))
            .ok_or_else(|| {
                mapping_error(
                    &t.origin,
                    format!(
                        "the key column {col:?} is not a column of {} on the target{}",
                        self.shown,
                        crate::suggest::did_you_mean(col, &names(columns))
                    ),
                )
            })
    }

    fn filters(&self, columns: &[SourceColumn<'_>]) -> Result<Vec<Filter>, MappingError> {
        let filters: Vec<Filter> = self
            .mapping
            .filters
            .iter()
            .filter(|f| matches(&f.schema, self.rule_schema) && matches(&f.table, self.rule_table))
            .cloned()
            .collect();
        for f in &filters {
            if !columns.iter().any(|c| c.name == f.column) {
                return Err(mapping_error(
                    &f.origin,
                    format!(
                        "filters on column {:?}, which {} does not have{}",
                        f.column,
                        self.shown,
                        crate::suggest::did_you_mean(&f.column, &names(columns))
                    ),
                ));
            }
        }
        Ok(filters)
    }

    /// The last table-settings rule's split hint wins.
    fn chunk_hint(&self) -> Option<ChunkHint> {
        self.mapping
            .table_settings
            .iter()
            .filter(|s| matches(&s.schema, self.schema) && matches(&s.table, self.table))
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
            .next_back()
    }

    fn load_order(&self) -> i64 {
        self.mapping
            .load_order
            .iter()
            .filter(|l| matches(&l.schema, self.rule_schema) && matches(&l.table, self.rule_table))
            .map(|l| l.order)
            .max()
            .unwrap_or(0)
    }
}
