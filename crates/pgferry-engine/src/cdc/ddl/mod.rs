//! Schema changes during CDC: what the source's event triggers captured
//! ([`super::capture`]), turned into the statements that make the same change on the
//! target, under the task's rules.
//!
//! Shapes, not statements, travel: each captured row holds the object's shape before and
//! after the command, as the source's catalog described it at that point of its
//! transaction. So nothing depends on the session's `search_path` or on what the command
//! text said, and the task's rules (renamed schemas, tables and columns, removed columns)
//! apply on the way. Planning is pure: the applier ([`super::apply`]) runs the statements in
//! the same target transaction as the changes around them, so a crash leaves either both
//! or neither.

pub mod shape;
mod table;

use pgferry_config::CdcSettings;
use pgferry_pg::{QualifiedName, quote_ident, quote_literal};

use crate::cdc::tables::Scope;
use shape::{Captured, Definition, Dropped, EnumShape, SequenceShape, TableShape, parse};

/// Statements that carry one captured command to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub statements: Vec<String>,
    /// The source table the command changed, if any: its cached description is refreshed,
    /// and it is the table a failure suspends.
    pub table: Option<QualifiedName>,
    /// The object on the target, for the record.
    pub object: String,
    /// The target transaction must commit at the end of this source transaction: a new
    /// enum value cannot be used in the transaction that added it.
    pub commit_after: bool,
}

/// What a captured command asks of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Apply(Plan),
    /// An object the task does not cover.
    Outside,
}

/// Why a command is not applied: `kept` when the task's settings say so (a warning), else
/// refused, which follows `cdc.ddl_error_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why {
    pub kept: bool,
    pub table: Option<QualifiedName>,
    pub reason: String,
}

impl Why {
    pub(crate) fn refused(reason: String) -> Why {
        Why {
            kept: false,
            table: None,
            reason,
        }
    }

    pub(crate) fn kept(table: Option<QualifiedName>, reason: String) -> Why {
        Why {
            kept: true,
            table,
            reason,
        }
    }

    pub(crate) fn on(mut self, table: QualifiedName) -> Why {
        self.table.get_or_insert(table);
        self
    }
}

/// Plans one captured command.
pub fn plan(c: &Captured, scope: &Scope, settings: &CdcSettings) -> Result<Verdict, Why> {
    match c.kind.as_str() {
        "table" => table_change(c, scope, settings),
        "sequence" => sequence(c, scope),
        "enum" => enumeration(c, scope),
        "function" | "procedure" | "view" | "trigger" => definition(c, scope),
        "schema" => {
            let name = c
                .new
                .as_deref()
                .and_then(|n| serde_json::from_str::<serde_json::Value>(n).ok())
                .and_then(|v| v["name"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if !scope.selection.includes_schema(&name) {
                return Ok(Verdict::Outside);
            }
            Ok(apply(
                vec![format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_ident(&name)
                )],
                name,
            ))
        }
        "problem" => Err(Why::refused(format!(
            "the source could not capture it: {}",
            c.problem.as_deref().unwrap_or("(no detail)")
        ))),
        _ => Err(Why::kept(
            None,
            format!(
                "pgferry does not carry {} ({}); make the same change on the target by hand if \
                 it matters there",
                c.tag, c.identity
            ),
        )),
    }
}

fn table_change(c: &Captured, scope: &Scope, settings: &CdcSettings) -> Result<Verdict, Why> {
    let old: Option<TableShape> = parse(&c.old).map_err(unreadable)?;
    let new: Option<TableShape> = parse(&c.new).map_err(unreadable)?;
    match (old, new) {
        (None, Some(new)) if c.tag != "CREATE TABLE" => {
            // Filled in the same statement (before it could join the publication), or a
            // table that existed unseen: an unlogged one made logged.
            let how = if matches!(c.tag.as_str(), "CREATE TABLE AS" | "SELECT INTO") {
                format!(
                    "{} fills the new table in the same statement, before it can join the \
                     publication",
                    c.tag
                )
            } else {
                format!("{} made it a table pgferry streams", c.tag)
            };
            match table::create(scope, &new)? {
                Verdict::Outside => Ok(Verdict::Outside),
                Verdict::Apply(p) => Err(Why {
                    table: p.table,
                    ..Why::refused(format!(
                        "{how}, so its rows are not in the stream; create it on the target \
                         and copy it by hand"
                    ))
                }),
            }
        }
        (None, Some(new)) => table::create(scope, &new),
        (Some(old), None) => table::drop(scope, &old, settings.apply_drop_table),
        (Some(old), Some(new)) => table::alter(scope, &old, &new, settings.add_new_columns),
        (None, None) => Ok(Verdict::Outside),
    }
}

fn unreadable(e: serde_json::Error) -> Why {
    Why::refused(format!(
        "its captured shape could not be read ({e}); was pgferry_capture installed by another \
         pgferry version?"
    ))
}

fn apply(statements: Vec<String>, object: String) -> Verdict {
    Verdict::Apply(Plan {
        statements,
        table: None,
        object,
        commit_after: false,
    })
}

type Planned = Result<Verdict, Why>;

/// Sequences, enums and definitions keep their source names: the task's rules name
/// tables. They are carried when the task covers their schema.
fn covered(scope: &Scope, schema: &str) -> bool {
    scope.selection.includes_schema(schema)
}

/// An object's two shapes and its name, when the task covers its schema.
type Sides<T> = Option<(Option<T>, Option<T>, QualifiedName)>;

fn sides<T: serde::de::DeserializeOwned>(
    c: &Captured,
    scope: &Scope,
    name_of: impl Fn(&T) -> (&str, &str),
) -> Result<Sides<T>, Why> {
    let old: Option<T> = parse(&c.old).map_err(unreadable)?;
    let new: Option<T> = parse(&c.new).map_err(unreadable)?;
    let Some((schema, name)) = new.as_ref().or(old.as_ref()).map(&name_of) else {
        return Ok(None);
    };
    if !covered(scope, schema) {
        return Ok(None);
    }
    let name = QualifiedName::new(schema, name);
    Ok(Some((old, new, name)))
}

fn sequence(c: &Captured, scope: &Scope) -> Planned {
    let Some((old, new, name)) = sides(c, scope, |s: &SequenceShape| (&s.schema, &s.name))? else {
        return Ok(Verdict::Outside);
    };
    let q = name.quoted();
    let options = |s: &SequenceShape| {
        format!(
            "AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}CYCLE",
            s.type_sql,
            s.increment,
            s.min,
            s.max,
            s.start,
            s.cache,
            if s.cycle { "" } else { "NO " }
        )
    };
    let statement = match (&old, &new) {
        (None, Some(n)) => format!("CREATE SEQUENCE IF NOT EXISTS {q} {}", options(n)),
        (Some(o), Some(n)) if o.schema != n.schema || o.name != n.name => {
            let mut s = Vec::new();
            let from = QualifiedName::new(&o.schema, &o.name);
            table::rename("SEQUENCE", &from, &name, &mut s);
            s.push(format!("ALTER SEQUENCE {q} {}", options(n)));
            return Ok(apply(s, name.to_string()));
        }
        (Some(_), Some(n)) => format!("ALTER SEQUENCE {q} {}", options(n)),
        (Some(_), None) => format!("DROP SEQUENCE IF EXISTS {q}"),
        (None, None) => return Ok(Verdict::Outside),
    };
    Ok(apply(vec![statement], name.to_string()))
}

fn enumeration(c: &Captured, scope: &Scope) -> Planned {
    let Some((old, new, name)) = sides(c, scope, |e: &EnumShape| (&e.schema, &e.name))? else {
        return Ok(Verdict::Outside);
    };
    let q = name.quoted();
    let mut statements = Vec::new();
    let mut commit_after = false;
    match (&old, &new) {
        (None, Some(n)) => {
            let labels: Vec<String> = n.values.iter().map(|v| quote_literal(v)).collect();
            statements.push(format!("CREATE TYPE {q} AS ENUM ({})", labels.join(", ")));
        }
        (Some(o), Some(n)) => {
            if o.schema != n.schema || o.name != n.name {
                return Err(Why::refused(format!(
                    "the enum {}.{} was renamed or moved to {name}; pgferry carries new enum \
                     values, not renames of the type: rename it on the target by hand",
                    o.schema, o.name
                )));
            }
            for (i, v) in n.values.iter().enumerate() {
                if o.values.contains(v) {
                    continue;
                }
                // Placed after its predecessor, or before the first value.
                let place = match i.checked_sub(1).map(|p| &n.values[p]) {
                    Some(prev) => format!("AFTER {}", quote_literal(prev)),
                    None => match n.values.get(1) {
                        Some(next) => format!("BEFORE {}", quote_literal(next)),
                        None => String::new(),
                    },
                };
                statements.push(format!(
                    "ALTER TYPE {q} ADD VALUE IF NOT EXISTS {} {place}",
                    quote_literal(v)
                ));
                commit_after = true;
            }
            if o.values.iter().any(|v| !n.values.contains(v)) {
                return Err(Why::refused(format!(
                    "a value of the enum {name} was renamed; rename it on the target by hand \
                     (ALTER TYPE ... RENAME VALUE)"
                )));
            }
        }
        (Some(_), None) => statements.push(format!("DROP TYPE IF EXISTS {q}")),
        (None, None) => return Ok(Verdict::Outside),
    }
    Ok(Verdict::Apply(Plan {
        statements,
        table: None,
        object: name.to_string(),
        commit_after,
    }))
}

/// Functions, procedures, views and triggers: replayed as the source defines them. Their
/// bodies name other objects by their source names, so a trigger whose table the task
/// renames is refused rather than put on the wrong table.
fn definition(c: &Captured, scope: &Scope) -> Planned {
    let new: Option<Definition> = parse(&c.new).map_err(unreadable)?;
    let old: Option<Dropped> = parse(&c.old).map_err(unreadable)?;
    if let Some(d) = new {
        if !covered(scope, &d.schema) {
            return Ok(Verdict::Outside);
        }
        let mut statements = Vec::new();
        if let Some(t) = &d.table {
            let table = QualifiedName::new(&t.schema, &t.name);
            let target = target_of(scope, &table)?;
            if target != table {
                return Err(Why::refused(format!(
                    "the trigger {} is on {table}, which the task's rules rename to {target}; \
                     create it there by hand",
                    d.name
                ))
                .on(table));
            }
            statements.push(format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote_ident(&d.name),
                table.quoted()
            ));
        }
        statements.push(d.def);
        return Ok(apply(
            statements,
            QualifiedName::new(&d.schema, &d.name).to_string(),
        ));
    }
    let Some(dropped) = old else {
        return Ok(Verdict::Outside);
    };
    let schema = dropped.names.first().cloned().unwrap_or_default();
    if !covered(scope, &schema) {
        return Ok(Verdict::Outside);
    }
    // Names from the dropped object's address, quoted here; argument types as the server
    // prints them (`format_type`).
    let statement = match (c.kind.as_str(), dropped.names.as_slice()) {
        ("trigger", [s, t, name]) => format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            quote_ident(name),
            QualifiedName::new(s, t).quoted()
        ),
        (kind @ ("function" | "procedure"), [s, name]) => format!(
            "DROP {} IF EXISTS {}({})",
            kind.to_uppercase(),
            QualifiedName::new(s, name).quoted(),
            dropped.args.join(", ")
        ),
        ("view", [s, name]) => {
            format!(
                "DROP VIEW IF EXISTS {}",
                QualifiedName::new(s, name).quoted()
            )
        }
        _ => {
            return Err(Why::refused(format!(
                "the dropped {} {} has an address pgferry cannot read",
                c.kind, c.identity
            )));
        }
    };
    Ok(apply(vec![statement], c.identity.clone()))
}

/// A table's target name under the rules (its own name when no rule renames it).
fn target_of(scope: &Scope, table: &QualifiedName) -> Result<QualifiedName, Why> {
    if scope.mapping.is_empty() {
        return Ok(table.clone());
    }
    let map = scope
        .mapping
        .table(
            &table.schema,
            &table.name,
            (&table.schema, &table.name),
            &[],
        )
        .map_err(|e| Why::refused(format!("the task's rules do not apply: {e}")))?;
    Ok(crate::transform::target_name(&map))
}

#[cfg(test)]
mod tests;
