//! Carrying out a task's transformation and filter rules in SQL.
//!
//! The rules themselves are resolved in `pgferry-config` ([`TableMap`]); this module turns
//! them into statements, quoting every name:
//! * the row filter, as a predicate over the source's columns, for COPY, CDC and validation;
//! * the `ALTER TABLE`s that give a table created with its source definition its target
//!   shape and name. They run at the end of the pre-data transaction, after every view and
//!   default that refers to the table exists, so PostgreSQL carries the change into them;
//! * the post-data statements pg_dump wrote with source names (indexes, keys, foreign keys,
//!   triggers, policies), rewritten token by token to the target names.

use std::collections::HashMap;

use pgferry_config::mapping::{AddedValue, Condition, ExprPart, Filter, FilterOp, SourceColumn};
use pgferry_config::{Mapping, TableMap};
use pgferry_pg::catalog::Table;
use pgferry_pg::{QualifiedName, quote_ident, quote_literal};

use crate::error::{EngineError, MappingProblem, Result};
use crate::load::schema::{EXPRESSION_CHECK_KIND, TRANSFORM_KIND};

/// Resolves the task's rules for one source table.
pub fn map_table(mapping: &Mapping, table: &Table) -> Result<TableMap> {
    let columns: Vec<SourceColumn<'_>> = table
        .columns
        .iter()
        .map(|c| SourceColumn {
            name: &c.name,
            type_name: &c.type_name,
        })
        .collect();
    let rule_name = table.selection_name();
    mapping
        .table(
            &table.name.schema,
            &table.name.name,
            (&rule_name.schema, &rule_name.name),
            &columns,
        )
        .map_err(|e| EngineError::from(MappingProblem::Rule(e)))
}

/// The target name of a mapped table.
pub fn target_name(map: &TableMap) -> QualifiedName {
    QualifiedName::new(&map.target_schema, &map.target_table)
}

fn condition_sql(column: &str, c: &Condition) -> String {
    let lit = |v: &Option<String>| quote_literal(v.as_deref().unwrap_or_default());
    match c.op {
        FilterOp::Eq => format!("{column} = {}", lit(&c.value)),
        FilterOp::Noteq => format!("{column} <> {}", lit(&c.value)),
        FilterOp::Ste => format!("{column} <= {}", lit(&c.value)),
        FilterOp::Gte => format!("{column} >= {}", lit(&c.value)),
        FilterOp::Between => format!("{column} BETWEEN {} AND {}", lit(&c.start), lit(&c.end)),
        FilterOp::Notbetween => {
            format!("{column} NOT BETWEEN {} AND {}", lit(&c.start), lit(&c.end))
        }
        FilterOp::Null => format!("{column} IS NULL"),
        FilterOp::Notnull => format!("{column} IS NOT NULL"),
    }
}

/// The row filter as SQL: each filter's conditions ORed, the filters ANDed. `column` turns
/// a source column's name into the SQL that reads it (a quoted name, or a cast parameter).
/// Values are literals of unknown type, so PostgreSQL compares them as the column's type.
pub fn filter_sql(filters: &[Filter], column: &dyn Fn(&str) -> String) -> Option<String> {
    if filters.is_empty() {
        return None;
    }
    Some(
        filters
            .iter()
            .map(|f| {
                let col = column(&f.column);
                let ors: Vec<String> = f
                    .conditions
                    .iter()
                    .map(|c| condition_sql(&col, c))
                    .collect();
                format!("({})", ors.join(" OR "))
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    )
}

/// The filter over a table's own columns, for COPY and validation.
pub fn table_filter_sql(map: &TableMap) -> Option<String> {
    filter_sql(&map.filters, &|c| quote_ident(c))
}

/// One statement of a table's reshaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reshape {
    /// A statement to run, alone.
    Run(String),
    /// A query the server only parses, never runs: it proves that an `add-column`
    /// expression is one expression before the `ALTER` that embeds it runs.
    Parse(String),
}

/// The statements that turn `source` (created on the target with its source definition)
/// into its target shape and name. `columns` is false for a partition, whose columns
/// follow its root's.
pub fn alter_statements(source: &QualifiedName, map: &TableMap, columns: bool) -> Vec<Reshape> {
    let table = source.quoted();
    let mut out = Vec::new();
    if columns {
        for c in &map.columns {
            if let (Some(t), Some(_)) = (&c.new_type, &c.target) {
                run(
                    &mut out,
                    format!(
                        "ALTER TABLE {table} ALTER COLUMN {col} TYPE {t} USING {col}::{t}",
                        col = quote_ident(&c.source)
                    ),
                );
            }
        }
        for c in map.columns.iter().filter(|c| c.target.is_none()) {
            run(
                &mut out,
                format!("ALTER TABLE {table} DROP COLUMN {}", quote_ident(&c.source)),
            );
        }
        // Renames go through temporary names, so two columns may swap names.
        let renamed: Vec<_> = map
            .columns
            .iter()
            .filter_map(|c| Some((c, c.target.as_ref()?)))
            .filter(|(c, t)| **t != c.source)
            .collect();
        for (i, (c, _)) in renamed.iter().enumerate() {
            run(
                &mut out,
                format!(
                    "ALTER TABLE {table} RENAME COLUMN {} TO {}",
                    quote_ident(&c.source),
                    quote_ident(&format!("pgferry_rename_{i}"))
                ),
            );
        }
        for (i, (_, t)) in renamed.iter().enumerate() {
            run(
                &mut out,
                format!(
                    "ALTER TABLE {table} RENAME COLUMN {} TO {}",
                    quote_ident(&format!("pgferry_rename_{i}")),
                    quote_ident(t)
                ),
            );
        }
        for a in &map.added {
            let value = match &a.value {
                AddedValue::Expression(parts) => {
                    let expr: String = parts
                        .iter()
                        .map(|p| match p {
                            ExprPart::Sql(s) => s.clone(),
                            ExprPart::Column(c) => quote_ident(c),
                        })
                        .collect();
                    out.push(Reshape::Parse(format!("SELECT ({expr}) FROM {table}")));
                    format!(" GENERATED ALWAYS AS ({expr}) STORED")
                }
                AddedValue::Constant(v) => format!(" DEFAULT {}", quote_literal(v)),
                AddedValue::Null => String::new(),
            };
            run(
                &mut out,
                format!(
                    "ALTER TABLE {table} ADD COLUMN {} {}{value}",
                    quote_ident(&a.name),
                    a.type_sql
                ),
            );
        }
    }
    let mut current = source.clone();
    if map.target_table != source.name {
        run(
            &mut out,
            format!(
                "ALTER TABLE {} RENAME TO {}",
                current.quoted(),
                quote_ident(&map.target_table)
            ),
        );
        current.name = map.target_table.clone();
    }
    if map.target_schema != source.schema {
        run(
            &mut out,
            format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(&map.target_schema)
            ),
        );
        run(
            &mut out,
            format!(
                "ALTER TABLE {} SET SCHEMA {}",
                current.quoted(),
                quote_ident(&map.target_schema)
            ),
        );
    }
    out
}

fn run(out: &mut Vec<Reshape>, sql: String) {
    out.push(Reshape::Run(sql));
}

/// Has the source's parser check every `add-column` expression of the selected tables,
/// before anything is created anywhere: `SELECT (expr) FROM table`, with the source's
/// column names, is parsed (never run) and must give one column. A bad rule then fails
/// planning, so fixing it and running again just works; the target checks once more
/// before the `ALTER` that embeds the expression (`schema::check_expression`).
pub async fn check_expressions_on_source<'a>(
    source: &pgferry_pg::PgClient,
    tables: impl Iterator<Item = &'a Table>,
    maps: &HashMap<u32, TableMap>,
) -> Result<()> {
    for t in tables {
        let Some(map) = maps.get(&t.oid) else {
            continue;
        };
        for a in &map.added {
            let AddedValue::Expression(parts) = &a.value else {
                continue;
            };
            let expr: String = parts
                .iter()
                .map(|p| match p {
                    ExprPart::Sql(s) => s.clone(),
                    ExprPart::Column(target) => quote_ident(
                        map.columns
                            .iter()
                            .find(|c| c.target.as_deref() == Some(target.as_str()))
                            .map_or(target.as_str(), |c| c.source.as_str()),
                    ),
                })
                .collect();
            let sql = format!("SELECT ({expr}) FROM {}", t.name.quoted());
            let columns = source
                .raw()
                .prepare(&sql)
                .await
                .map_err(|source| MappingProblem::Expression {
                    origin: a.origin.clone(),
                    column: a.name.clone(),
                    table: t.name.clone(),
                    source,
                })?
                .columns()
                .len();
            if columns != 1 {
                return Err(MappingProblem::NotOneValue {
                    origin: a.origin.clone(),
                    column: a.name.clone(),
                    values: columns,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// The statement that gives a table the key a `define-primary-key` rule defines.
pub fn primary_key_statement(target: &QualifiedName, map: &TableMap) -> Option<String> {
    let (pk, _) = map.primary_key.as_ref()?;
    let cols = pk
        .columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let name = pk
        .name
        .clone()
        .unwrap_or_else(|| format!("{}_pkey", map.target_table));
    Some(match pk.origin {
        pgferry_config::mapping::KeyOrigin::PrimaryKey => format!(
            "ALTER TABLE ONLY {} ADD CONSTRAINT {} PRIMARY KEY ({cols})",
            target.quoted(),
            quote_ident(&name)
        ),
        pgferry_config::mapping::KeyOrigin::UniqueIndex => format!(
            "CREATE UNIQUE INDEX {} ON {} ({cols})",
            quote_ident(&name),
            target.quoted()
        ),
    })
}

/// How one table's names change, for rewriting post-data statements.
#[derive(Debug, Clone)]
pub struct Renamed {
    pub target: QualifiedName,
    /// Old column name to new, `None` for a removed column; unchanged columns are absent.
    pub columns: HashMap<String, Option<String>>,
}

impl Renamed {
    pub fn new(source: &QualifiedName, map: &TableMap) -> Option<Renamed> {
        let columns: HashMap<String, Option<String>> = map
            .columns
            .iter()
            .filter(|c| c.target.as_deref() != Some(c.source.as_str()))
            .map(|c| (c.source.clone(), c.target.clone()))
            .collect();
        let target = target_name(map);
        (target != *source || !columns.is_empty()).then_some(Renamed { target, columns })
    }
}

/// Where the rules move things, for rewriting post-data statements.
#[derive(Debug, Default)]
pub struct Renames {
    /// Renamed tables (and their columns), by source name.
    pub tables: HashMap<QualifiedName, Renamed>,
    /// Source schemas whose every table moves to one target schema: their indexes move
    /// with them (`ALTER TABLE ... SET SCHEMA` takes a table's indexes along), so an index
    /// named in such a schema is found in the target one.
    pub index_schemas: HashMap<String, String>,
}

impl Renames {
    /// Collects the renames of `tables`, which are every selected table with its map.
    pub fn new<'a>(
        tables: impl Iterator<Item = (&'a QualifiedName, Option<&'a TableMap>)>,
    ) -> Renames {
        let mut out = Renames::default();
        // Per source schema: the one target schema of its tables, or None when they differ.
        let mut schemas: HashMap<String, Option<String>> = HashMap::new();
        for (source, map) in tables {
            let target_schema = map.map(|m| m.target_schema.clone());
            if let Some(map) = map
                && let Some(r) = Renamed::new(source, map)
            {
                out.tables.insert(source.clone(), r);
            }
            let to = target_schema.unwrap_or_else(|| source.schema.clone());
            schemas
                .entry(source.schema.clone())
                .and_modify(|t| {
                    if t.as_deref() != Some(to.as_str()) {
                        *t = None;
                    }
                })
                .or_insert(Some(to));
        }
        out.index_schemas = schemas
            .into_iter()
            .filter_map(|(from, to)| Some((from.clone(), to.filter(|t| *t != from)?)))
            .collect();
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An identifier, folded as PostgreSQL folds it.
    Ident(String),
    Dot,
    Open,
    Close,
    Cast,
    /// Anything else, verbatim: keywords are identifiers too, but strings, comments,
    /// numbers, operators and whitespace pass through untouched.
    Other(String),
}

/// Splits SQL into tokens that keep every character. Identifiers are folded the way
/// PostgreSQL folds them: unquoted to lower case, quoted as written.
fn tokens(sql: &str) -> Vec<(Tok, String)> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let text = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let tok = if c == '"' {
            let mut name = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '"' {
                    if chars.get(i + 1) == Some(&'"') {
                        name.push('"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                name.push(chars[i]);
                i += 1;
            }
            Tok::Ident(name)
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            // E'...' and the like are strings, not identifiers.
            if i < chars.len() && chars[i] == '\'' && i - start == 1 {
                i = skip_string(&chars, i);
                Tok::Other(text(start, i))
            } else {
                Tok::Ident(text(start, i).to_lowercase())
            }
        } else if c == '\'' {
            i = skip_string(&chars, i);
            Tok::Other(text(start, i))
        } else if c == '$' {
            // A dollar-quoted string: $tag$ ... $tag$.
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            if j < chars.len() && chars[j] == '$' {
                let tag = text(i, j + 1);
                let rest = text(j + 1, chars.len());
                match rest.find(&tag) {
                    Some(end) => i = j + 1 + rest[..end].chars().count() + tag.chars().count(),
                    None => i = chars.len(),
                }
            } else {
                i = j;
            }
            Tok::Other(text(start, i))
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            Tok::Other(text(start, i))
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 2;
            Tok::Cast
        } else {
            i += 1;
            match c {
                '.' => Tok::Dot,
                '(' => Tok::Open,
                ')' => Tok::Close,
                _ => Tok::Other(c.to_string()),
            }
        };
        out.push((tok, text(start, i)));
    }
    out
}

fn skip_string(chars: &[char], mut i: usize) -> usize {
    i += 1;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    i
}

/// Rewrites a post-data statement from source names to target names.
///
/// A schema-qualified name of a renamed table becomes its target name. A qualified index
/// name (after `INDEX`, or after `PARTITION` in `ALTER INDEX ... ATTACH PARTITION`) in a
/// schema whose tables all moved takes the target schema. Inside
/// parentheses, a bare column name (or one qualified by `new`, `old` or the table) is
/// renamed for the table last named before it, which is how pg_dump writes index keys,
/// constraints, `REFERENCES t(col)`, trigger conditions and policies.
///
/// `Err(column)` when the statement uses a column a rule removes: it cannot be built.
pub fn rewrite(sql: &str, renames: &Renames) -> std::result::Result<String, String> {
    let renamed = &renames.tables;
    let toks = tokens(sql);
    let mut out = String::with_capacity(sql.len());
    let mut context: Option<&QualifiedName> = None;
    let mut depth = 0i32;
    let significant = |from: usize, step: isize| -> Option<usize> {
        let mut j = from as isize + step;
        while j >= 0 && (j as usize) < toks.len() {
            match &toks[j as usize].0 {
                Tok::Other(s) if s.trim().is_empty() => j += step,
                _ => return Some(j as usize),
            }
        }
        None
    };
    let mut i = 0;
    while i < toks.len() {
        let (tok, raw) = &toks[i];
        match tok {
            Tok::Open => depth += 1,
            Tok::Close => depth -= 1,
            _ => {}
        }
        if let Tok::Ident(first) = tok
            && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Dot)
            && let Some((Tok::Ident(second), _)) = toks.get(i + 2)
        {
            let name = QualifiedName::new(first.clone(), second.clone());
            let known = renamed.keys().find(|k| **k == name);
            if let Some(key) = known {
                out.push_str(&renamed[key].target.quoted());
                context = Some(key);
                i += 3;
                continue;
            }
            if let Some(ctx) = context
                && depth > 0
                && (first == "new" || first == "old" || *first == ctx.name)
                && let Some(r) = renamed.get(ctx)
                && let Some(new) = r.columns.get(second)
            {
                let new = new.as_ref().ok_or_else(|| second.clone())?;
                out.push_str(raw);
                out.push('.');
                out.push_str(&quote_ident(new));
                i += 3;
                continue;
            }
            let after = significant(i, -1).map(|j| &toks[j].0);
            if depth == 0
                && matches!(after, Some(Tok::Ident(k)) if k == "index" || k == "partition")
                && let Some(schema) = renames.index_schemas.get(first)
            {
                out.push_str(&quote_ident(schema));
                out.push('.');
                out.push_str(&toks[i + 2].1);
                i += 3;
                continue;
            }
            // Some other qualified name: a table with no rule (whose columns are then not
            // ours to rename), or a function or type inside an expression.
            if depth == 0 {
                context = None;
            }
            out.push_str(raw);
            out.push('.');
            out.push_str(&toks[i + 2].1);
            i += 3;
            continue;
        }
        if let Tok::Ident(name) = tok
            && depth > 0
            && let Some(ctx) = context
            && let Some(r) = renamed.get(ctx)
            && let Some(new) = r.columns.get(name)
        {
            let next = significant(i, 1).map(|j| &toks[j].0);
            let prev = significant(i, -1).map(|j| &toks[j].0);
            let is_call = next == Some(&Tok::Open);
            let is_type = prev == Some(&Tok::Cast);
            if !is_call && !is_type {
                let new = new.as_ref().ok_or_else(|| name.clone())?;
                out.push_str(&quote_ident(new));
                i += 1;
                continue;
            }
        }
        out.push_str(raw);
        i += 1;
    }
    Ok(out)
}

/// The rules' verdict for each of `tables` (by source OID), or nothing when the task has
/// no rules. Two source tables that would land on one target table are refused.
pub fn table_maps<'a>(
    mapping: &Mapping,
    tables: impl Iterator<Item = &'a Table>,
) -> Result<HashMap<u32, TableMap>> {
    let mut maps = HashMap::new();
    if mapping.is_empty() {
        return Ok(maps);
    }
    let mut seen: HashMap<QualifiedName, QualifiedName> = HashMap::new();
    for t in tables {
        let map = map_table(mapping, t)?;
        let target = target_name(&map);
        if let Some(other) = seen.insert(target.clone(), t.name.clone())
            && other != t.name
        {
            return Err(MappingProblem::SameTarget {
                first: other,
                second: t.name.clone(),
                target,
            }
            .into());
        }
        maps.insert(t.oid, map);
    }
    Ok(maps)
}

/// A table's name on the target.
pub fn target_of(maps: &HashMap<u32, TableMap>, table: &Table) -> QualifiedName {
    maps.get(&table.oid)
        .map(target_name)
        .unwrap_or_else(|| table.name.clone())
}

/// Carries the rules into a schema plan: last pre-data steps with every table's `ALTER`s,
/// one statement a step (negative dump ids, so `schema::execute_step` sends each alone),
/// post-data statements rewritten to target names (or skipped when they use a removed
/// column), and a defined primary key in place of the source's.
/// `kept_existing` tables already have their target shape and get no `ALTER`.
pub fn apply_to_schema(
    plan: &mut crate::load::schema::SchemaPlan,
    tables: &[&Table],
    maps: &HashMap<u32, TableMap>,
    kept_existing: &std::collections::HashSet<u32>,
) {
    use pgferry_pg::dump::Section;
    if maps.is_empty() {
        return;
    }
    let renames = Renames::new(
        tables
            .iter()
            .filter(|t| !kept_existing.contains(&t.oid))
            .map(|t| (&t.name, maps.get(&t.oid))),
    );
    let mut alters: Vec<Reshape> = Vec::new();
    let mut keys: Vec<(i32, QualifiedName, &TableMap, i64)> = Vec::new();
    for t in tables {
        let Some(map) = maps.get(&t.oid) else {
            continue;
        };
        if kept_existing.contains(&t.oid) {
            continue;
        }
        alters.extend(alter_statements(&t.name, map, t.partition_root.is_none()));
        if map.primary_key.is_some()
            && let Some(dump_id) = plan.table_entries.get(&t.oid)
        {
            keys.push((*dump_id, target_name(map), map, t.table_bytes));
        }
    }
    for step in plan.steps.iter_mut() {
        if step.section != Section::PostData || step.skip.is_some() {
            continue;
        }
        if let Some((_, _, map, _)) = keys
            .iter()
            .find(|(id, _, _, _)| step.depends_on.contains(id))
            && step.kind == "CONSTRAINT"
            && step.sql.contains("PRIMARY KEY")
        {
            let origin = map
                .primary_key
                .as_ref()
                .map(|(_, o)| o.as_str())
                .unwrap_or("");
            step.skip = Some(format!("replaced by the primary key that {origin} defines"));
            continue;
        }
        match rewrite(&step.sql, &renames) {
            Ok(sql) => step.sql = sql,
            Err(column) => {
                let note = format!(
                    "{} is not created: it uses column {column:?}, which a remove-column rule \
                     removes",
                    step.label
                );
                plan.warnings.push(note.clone());
                step.skip = Some(note);
            }
        }
    }
    let mut ordinal = plan.steps.iter().map(|s| s.ordinal).max().unwrap_or(0);
    let mut own_id = 0;
    for (i, alter) in alters.into_iter().enumerate() {
        ordinal += 1;
        own_id -= 1;
        let (kind, sql) = match alter {
            Reshape::Run(sql) => (TRANSFORM_KIND, sql),
            Reshape::Parse(sql) => (EXPRESSION_CHECK_KIND, sql),
        };
        plan.steps.push(crate::load::schema::Step {
            dump_id: own_id,
            section: Section::PreData,
            ordinal,
            phase: 0,
            kind: kind.to_owned(),
            label: format!("transformation rule statement {}", i + 1),
            depends_on: Vec::new(),
            weight: 0,
            sql,
            skip: None,
        });
    }
    for (dump_id, target, map, bytes) in keys {
        let Some(sql) = primary_key_statement(&target, map) else {
            continue;
        };
        ordinal += 1;
        own_id -= 1;
        plan.steps.push(crate::load::schema::Step {
            dump_id: own_id,
            section: Section::PostData,
            ordinal,
            phase: 1,
            kind: "CONSTRAINT".to_owned(),
            label: format!("PRIMARY KEY of {target}"),
            depends_on: vec![dump_id],
            weight: bytes,
            sql,
            skip: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use pgferry_config::mapping::{AddedColumn, ColumnMap, PrimaryKeyDef};

    use super::*;

    fn map() -> TableMap {
        TableMap {
            target_schema: "crm".into(),
            target_table: "clients".into(),
            columns: vec![
                ColumnMap {
                    source: "id".into(),
                    target: Some("client_id".into()),
                    new_type: None,
                },
                ColumnMap {
                    source: "secret".into(),
                    target: None,
                    new_type: None,
                },
                ColumnMap {
                    source: "Score".into(),
                    target: Some("Score".into()),
                    new_type: Some("bigint".into()),
                },
            ],
            added: vec![AddedColumn {
                name: "label".into(),
                type_sql: "text".into(),
                value: AddedValue::Expression(vec![
                    ExprPart::Column("client_id".into()),
                    ExprPart::Sql("::text || 'x'".into()),
                ]),
                origin: "t".into(),
            }],
            primary_key: Some((
                PrimaryKeyDef {
                    name: None,
                    origin: Default::default(),
                    columns: vec!["client_id".into()],
                },
                "t".into(),
            )),
            filters: vec![],
            chunks: None,
            load_order: 0,
        }
    }

    #[test]
    fn filters_or_within_and_across() {
        let f = |column: &str, conditions: Vec<Condition>| Filter {
            schema: "%".into(),
            table: "%".into(),
            column: column.into(),
            conditions,
            origin: String::new(),
        };
        let c = |op, value: Option<&str>, start: Option<&str>, end: Option<&str>| Condition {
            op,
            value: value.map(str::to_owned),
            start: start.map(str::to_owned),
            end: end.map(str::to_owned),
        };
        let sql = filter_sql(
            &[
                f(
                    "Status",
                    vec![
                        c(FilterOp::Eq, Some("it's"), None, None),
                        c(FilterOp::Null, None, None, None),
                    ],
                ),
                f(
                    "qty",
                    vec![c(FilterOp::Notbetween, None, Some("1"), Some("9"))],
                ),
            ],
            &|c| quote_ident(c),
        )
        .unwrap();
        assert_eq!(
            sql,
            "(\"Status\" = E'it''s' OR \"Status\" IS NULL) AND (\"qty\" NOT BETWEEN E'1' AND E'9')"
        );
        assert_eq!(filter_sql(&[], &|c| c.to_owned()), None);
    }

    #[test]
    fn alters_reshape_then_rename_the_table() {
        let s = alter_statements(&QualifiedName::new("sales", "customers"), &map(), true);
        let run = |s: &str| Reshape::Run(s.to_owned());
        assert_eq!(
            s,
            [
                run(
                    "ALTER TABLE \"sales\".\"customers\" ALTER COLUMN \"Score\" TYPE bigint USING \"Score\"::bigint"
                ),
                run("ALTER TABLE \"sales\".\"customers\" DROP COLUMN \"secret\""),
                run(
                    "ALTER TABLE \"sales\".\"customers\" RENAME COLUMN \"id\" TO \"pgferry_rename_0\""
                ),
                run(
                    "ALTER TABLE \"sales\".\"customers\" RENAME COLUMN \"pgferry_rename_0\" TO \"client_id\""
                ),
                Reshape::Parse(
                    "SELECT (\"client_id\"::text || 'x') FROM \"sales\".\"customers\"".to_owned()
                ),
                run(
                    "ALTER TABLE \"sales\".\"customers\" ADD COLUMN \"label\" text GENERATED ALWAYS AS (\"client_id\"::text || 'x') STORED"
                ),
                run("ALTER TABLE \"sales\".\"customers\" RENAME TO \"clients\""),
                run("CREATE SCHEMA IF NOT EXISTS \"crm\""),
                run("ALTER TABLE \"sales\".\"clients\" SET SCHEMA \"crm\""),
            ]
        );
        let partition = alter_statements(&QualifiedName::new("sales", "customers"), &map(), false);
        assert_eq!(partition.len(), 3, "a partition only moves: {partition:?}");
        assert_eq!(
            primary_key_statement(&QualifiedName::new("crm", "clients"), &map()).unwrap(),
            "ALTER TABLE ONLY \"crm\".\"clients\" ADD CONSTRAINT \"clients_pkey\" PRIMARY KEY (\"client_id\")"
        );
    }

    #[test]
    fn post_data_statements_follow_the_renames() {
        let src = QualifiedName::new("sales", "customers");
        let renamed = Renames::new([(&src, Some(&map()))].into_iter());
        let r = |sql: &str| rewrite(sql, &renamed);
        assert_eq!(
            r("CREATE INDEX customers_id_idx ON sales.customers USING btree (id, lower((id)::text));").unwrap(),
            "CREATE INDEX customers_id_idx ON \"crm\".\"clients\" USING btree (\"client_id\", lower((\"client_id\")::text));"
        );
        assert_eq!(
            rewrite("ALTER TABLE ONLY public.orders ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES sales.customers(id);", &renamed).unwrap(),
            "ALTER TABLE ONLY public.orders ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES \"crm\".\"clients\"(\"client_id\");",
            "the child's own id is not the customer's"
        );
        assert_eq!(
            r("CREATE TRIGGER t AFTER UPDATE ON sales.customers FOR EACH ROW WHEN ((old.id IS DISTINCT FROM new.id)) EXECUTE FUNCTION sales.audit('id');").unwrap(),
            "CREATE TRIGGER t AFTER UPDATE ON \"crm\".\"clients\" FOR EACH ROW WHEN ((old.\"client_id\" IS DISTINCT FROM new.\"client_id\")) EXECUTE FUNCTION sales.audit('id');"
        );
        assert_eq!(
            r("CREATE INDEX i ON sales.customers USING btree (secret);").unwrap_err(),
            "secret"
        );
        assert_eq!(
            r("CREATE INDEX \"Odd\" ON \"sales\".\"customers\" USING btree (\"Score\");").unwrap(),
            "CREATE INDEX \"Odd\" ON \"crm\".\"clients\" USING btree (\"Score\");"
        );
        // Indexes move with their schema's tables; functions and types stay.
        assert_eq!(
            r("ALTER INDEX sales.customers_pkey ATTACH PARTITION sales.customers_2025_pkey;")
                .unwrap(),
            "ALTER INDEX \"crm\".customers_pkey ATTACH PARTITION \"crm\".customers_2025_pkey;"
        );
        assert_eq!(
            r("COMMENT ON INDEX sales.i IS 'sales.i';").unwrap(),
            "COMMENT ON INDEX \"crm\".i IS 'sales.i';"
        );
    }

    #[test]
    fn a_schema_split_between_targets_moves_no_index() {
        let a = QualifiedName::new("sales", "a");
        let b = QualifiedName::new("sales", "b");
        let renames = Renames::new([(&a, Some(&map())), (&b, None)].into_iter());
        assert!(renames.index_schemas.is_empty());
        assert_eq!(
            rewrite("ALTER INDEX sales.i ATTACH PARTITION sales.j;", &renames).unwrap(),
            "ALTER INDEX sales.i ATTACH PARTITION sales.j;"
        );
    }
}
