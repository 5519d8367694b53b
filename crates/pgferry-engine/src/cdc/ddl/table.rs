//! A table's captured change as target statements: its shape before and after the
//! command, compared column by column (by `attnum`, so a rename is a rename), constraint by
//! constraint (by name) and index by index (by OID), with the target's names from the
//! task's rules.
//!
//! Order inside one change: the table's own name first (so later statements use the new
//! one), detaching, dropping constraints and indexes that went or changed (`IF EXISTS`: a
//! dropped column takes its constraints with it), renaming, dropping and adding columns,
//! altering columns, adding constraints and indexes, attaching.

use pgferry_config::mapping::{SourceColumn, TableMap};
use pgferry_pg::{QualifiedName, quote_ident};

use super::shape::{Column, Rel, TableShape};
use super::{Plan, Verdict, Why};
use crate::cdc::tables::Scope;

/// The table's name under the task's rules, and its rules, when the task covers it.
pub(super) struct Mapped {
    pub source: QualifiedName,
    pub target: QualifiedName,
    map: TableMap,
}

impl Mapped {
    fn column(&self, name: &str) -> Option<String> {
        self.map.target_column(name).map(str::to_owned)
    }

    /// A rule gives the column a type of its own: the source's type changes do not apply.
    fn retyped(&self, name: &str) -> bool {
        self.map
            .columns
            .iter()
            .any(|c| c.source == name && c.new_type.is_some())
    }

    fn type_of(&self, c: &Column) -> String {
        self.map
            .columns
            .iter()
            .find(|m| m.source == c.name)
            .and_then(|m| m.new_type.clone())
            .unwrap_or_else(|| c.type_sql.clone())
    }
}

/// The rules' view of a table shape; `None` when the task does not cover it.
pub(super) fn mapped(scope: &Scope, shape: &TableShape) -> Result<Option<Mapped>, Why> {
    let source = QualifiedName::new(&shape.schema, &shape.name);
    let rule = if scope.includes(&source) {
        source.clone()
    } else {
        match &shape.root {
            Some(Rel { schema, name }) if scope.includes(&QualifiedName::new(schema, name)) => {
                QualifiedName::new(schema, name)
            }
            _ => return Ok(None),
        }
    };
    let columns: Vec<SourceColumn<'_>> = shape
        .columns
        .iter()
        .map(|c| SourceColumn {
            name: &c.name,
            type_name: &c.type_sql,
        })
        .collect();
    let map = scope
        .mapping
        .table(
            &shape.schema,
            &shape.name,
            (&rule.schema, &rule.name),
            &columns,
        )
        .map_err(|e| Why::refused(format!("the task's rules do not apply to it: {e}")))?;
    Ok(Some(Mapped {
        target: crate::transform::target_name(&map),
        source,
        map,
    }))
}

/// The target name of a partition's parent, under the rules of the partition's root.
fn parent_target(scope: &Scope, child: &TableShape, parent: &Rel) -> Result<QualifiedName, Why> {
    let shape = TableShape {
        schema: parent.schema.clone(),
        name: parent.name.clone(),
        parent: None,
        bound: None,
        ..child.clone()
    };
    mapped(scope, &shape)?.map(|m| m.target).ok_or_else(|| {
        Why::refused(format!(
            "its parent {}.{} is outside the task",
            parent.schema, parent.name
        ))
    })
}

/// `CREATE TABLE` and what the source built with it.
pub(super) fn create(scope: &Scope, shape: &TableShape) -> Result<Verdict, Why> {
    let Some(m) = mapped(scope, shape)? else {
        return Ok(Verdict::Outside);
    };
    let target = m.target.quoted();
    let mut statements = Vec::new();
    match (&shape.parent, &shape.bound) {
        (Some(parent), Some(bound)) => {
            let parent = parent_target(scope, shape, parent)?;
            let mut sql = format!(
                "CREATE TABLE {target} PARTITION OF {} {bound}",
                parent.quoted()
            );
            if let Some(key) = &shape.partition_key {
                sql.push_str(&format!(" PARTITION BY {key}"));
            }
            statements.push(sql);
        }
        _ => {
            let columns: Vec<String> = shape
                .columns
                .iter()
                .filter_map(|c| Some(column_sql(&m.column(&c.name)?, &m.type_of(c), c)))
                .collect();
            let mut sql = format!("CREATE TABLE {target} ({})", columns.join(", "));
            if let Some(key) = &shape.partition_key {
                sql.push_str(&format!(" PARTITION BY {key}"));
            }
            statements.push(sql);
        }
    }
    for k in &shape.constraints {
        statements.push(add_constraint(&target, &k.name, &k.def));
    }
    for i in &shape.indexes {
        statements.push(create_index(&m.target, i)?);
    }
    Ok(Verdict::Apply(Plan {
        statements,
        table: Some(m.source),
        object: m.target.to_string(),
        commit_after: false,
    }))
}

/// `DROP TABLE`, when the task's settings say to follow it.
pub(super) fn drop(scope: &Scope, shape: &TableShape, apply_drop: bool) -> Result<Verdict, Why> {
    let Some(m) = mapped(scope, shape)? else {
        return Ok(Verdict::Outside);
    };
    if !apply_drop {
        return Err(Why::kept(
            Some(m.source),
            format!(
                "the source dropped it; {} is kept on the target (apply_drop_table = false, \
                 DMS: HandleSourceTableDropped)",
                m.target
            ),
        ));
    }
    Ok(Verdict::Apply(Plan {
        statements: vec![format!("DROP TABLE IF EXISTS {}", m.target.quoted())],
        table: Some(m.source),
        object: m.target.to_string(),
        commit_after: false,
    }))
}

/// Any other command on a table: the difference between its two shapes.
pub(super) fn alter(
    scope: &Scope,
    old: &TableShape,
    new: &TableShape,
    apply_alter: bool,
) -> Result<Verdict, Why> {
    let Some((before, after)) = both_mapped(scope, old, new)? else {
        return Ok(Verdict::Outside);
    };
    if !apply_alter {
        return Err(Why::kept(
            Some(after.source),
            "ALTERs are not applied (add_new_columns = false, DMS: HandleSourceTableAltered)"
                .to_owned(),
        ));
    }
    let mut s = Vec::new();
    let table = rename("TABLE", &before.target, &after.target, &mut s);
    let t = table.quoted();
    if let Some(parent) = &old.parent
        && new.parent.as_ref() != Some(parent)
    {
        let parent = parent_target(scope, old, parent)?;
        s.push(format!(
            "ALTER TABLE {} DETACH PARTITION {t}",
            parent.quoted()
        ));
    }
    // Attaching and detaching move the parent's constraints and indexes onto the partition
    // or off it, on the target as on the source: they are not compared then.
    let attachments = if old.parent == new.parent {
        Attachments::compared(old, new)
    } else {
        Attachments::default()
    };
    attachments.drops(&table, &mut s);
    columns(&before, &after, old, new, &t, &mut s);
    attachments.adds(&table, &mut s)?;
    if let (Some(parent), Some(bound)) = (&new.parent, &new.bound)
        && old.parent.as_ref() != Some(parent)
    {
        let parent = parent_target(scope, new, parent)?;
        s.push(format!(
            "ALTER TABLE {} ATTACH PARTITION {t} {bound}",
            parent.quoted()
        ));
    }
    Ok(Verdict::Apply(Plan {
        statements: s,
        table: Some(after.source),
        object: table.to_string(),
        commit_after: false,
    }))
}

/// The table before and after the command under the task's rules; a rename across the
/// edge of the task's selection is kept (out of it) or refused (into it).
fn both_mapped(
    scope: &Scope,
    old: &TableShape,
    new: &TableShape,
) -> Result<Option<(Mapped, Mapped)>, Why> {
    match (mapped(scope, old)?, mapped(scope, new)?) {
        (None, None) => Ok(None),
        (Some(b), None) => Err(Why::kept(
            Some(b.source),
            format!(
                "it was renamed to {}.{}, outside the task: {} is kept on the target and its \
                 changes stop",
                new.schema, new.name, b.target
            ),
        )),
        (None, Some(a)) => Err(Why::refused(format!(
            "it was renamed into the task from {}.{}, so its rows are not on the target; copy \
             it (a new task, or by hand) and resume",
            old.schema, old.name
        ))
        .on(a.source)),
        (Some(b), Some(a)) => Ok(Some((b, a))),
    }
}

/// A table's constraints and indexes before and after a command.
#[derive(Default)]
struct Attachments<'a> {
    old_constraints: &'a [super::shape::Constraint],
    new_constraints: &'a [super::shape::Constraint],
    old_indexes: &'a [super::shape::Index],
    new_indexes: &'a [super::shape::Index],
}

impl<'a> Attachments<'a> {
    fn compared(old: &'a TableShape, new: &'a TableShape) -> Self {
        Attachments {
            old_constraints: &old.constraints,
            new_constraints: &new.constraints,
            old_indexes: &old.indexes,
            new_indexes: &new.indexes,
        }
    }

    /// Those that went or changed: first, `IF EXISTS` (a dropped column takes its own).
    fn drops(&self, table: &QualifiedName, s: &mut Vec<String>) {
        let t = table.quoted();
        for k in self.old_constraints {
            if !self.new_constraints.contains(k) {
                s.push(format!(
                    "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
                    quote_ident(&k.name)
                ));
            }
        }
        for i in self.old_indexes {
            if !self.new_indexes.iter().any(|n| n.same_index(i)) {
                let index = QualifiedName::new(&table.schema, &i.name);
                s.push(format!("DROP INDEX IF EXISTS {}", index.quoted()));
            }
        }
    }

    /// Those that came or changed, and renamed indexes: last, on the final columns.
    fn adds(&self, table: &QualifiedName, s: &mut Vec<String>) -> Result<(), Why> {
        let t = table.quoted();
        for k in self.new_constraints {
            if !self.old_constraints.contains(k) {
                s.push(add_constraint(&t, &k.name, &k.def));
            }
        }
        for i in self.new_indexes {
            match self.old_indexes.iter().find(|o| o.same_index(i)) {
                Some(o) if o.name != i.name => {
                    let index = QualifiedName::new(&table.schema, &o.name);
                    s.push(format!(
                        "ALTER INDEX {} RENAME TO {}",
                        index.quoted(),
                        quote_ident(&i.name)
                    ));
                }
                Some(_) => {}
                None => s.push(create_index(table, i)?),
            }
        }
        Ok(())
    }
}

impl super::shape::Index {
    /// The same index: the same definition, under the same OID (a rename) or the same name
    /// (rebuilt by a column's type change, which the target's own ALTER rebuilds too).
    fn same_index(&self, other: &super::shape::Index) -> bool {
        self.unique == other.unique
            && self.tail == other.tail
            && (self.oid == other.oid || self.name == other.name)
    }
}

/// Moves and renames a relation of `kind` (`TABLE`, `SEQUENCE`) from `from` to `to`;
/// returns `to`, the name later statements use.
pub(super) fn rename(
    kind: &str,
    from: &QualifiedName,
    to: &QualifiedName,
    s: &mut Vec<String>,
) -> QualifiedName {
    if from.schema != to.schema {
        s.push(format!(
            "ALTER {kind} {} SET SCHEMA {}",
            from.quoted(),
            quote_ident(&to.schema)
        ));
    }
    let moved = QualifiedName::new(&to.schema, &from.name);
    if from.name != to.name {
        s.push(format!(
            "ALTER {kind} {} RENAME TO {}",
            moved.quoted(),
            quote_ident(&to.name)
        ));
    }
    to.clone()
}

/// Column statements, by `attnum`; a partition's inherited columns follow its parent's.
fn columns(
    before: &Mapped,
    after: &Mapped,
    old: &TableShape,
    new: &TableShape,
    t: &str,
    s: &mut Vec<String>,
) {
    let own = |c: &&Column| !c.inherited;
    for o in old.columns.iter().filter(own) {
        let Some(from) = before.column(&o.name) else {
            continue;
        };
        match new.columns.iter().find(|n| n.attnum == o.attnum) {
            None => s.push(format!(
                "ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
                quote_ident(&from)
            )),
            Some(n) => {
                if let Some(to) = after.column(&n.name)
                    && to != from
                {
                    s.push(format!(
                        "ALTER TABLE {t} RENAME COLUMN {} TO {}",
                        quote_ident(&from),
                        quote_ident(&to)
                    ));
                }
            }
        }
    }
    for n in new.columns.iter().filter(own) {
        let Some(name) = after.column(&n.name) else {
            continue;
        };
        match old.columns.iter().find(|o| o.attnum == n.attnum) {
            None => s.push(format!(
                "ALTER TABLE {t} ADD COLUMN {}",
                column_sql(&name, &after.type_of(n), n)
            )),
            Some(o) => alter_column(t, &name, o, n, after.retyped(&n.name), s),
        }
    }
}

fn alter_column(t: &str, name: &str, o: &Column, n: &Column, retyped: bool, s: &mut Vec<String>) {
    let c = quote_ident(name);
    let alter = |what: String| format!("ALTER TABLE {t} ALTER COLUMN {c} {what}");
    if !retyped && (o.type_sql != n.type_sql || o.collation != n.collation) {
        let collate = n
            .collation
            .as_deref()
            .map(|k| format!(" COLLATE {k}"))
            .unwrap_or_default();
        s.push(alter(format!(
            "TYPE {}{collate} USING {c}::{}",
            n.type_sql, n.type_sql
        )));
    }
    if o.generated.is_some() && n.generated.is_none() {
        s.push(alter("DROP EXPRESSION IF EXISTS".to_owned()));
    }
    if o.default != n.default && n.generated.is_none() {
        s.push(match &n.default {
            Some(d) => alter(format!("SET DEFAULT {d}")),
            None => alter("DROP DEFAULT".to_owned()),
        });
    }
    if o.not_null != n.not_null {
        s.push(alter(
            if n.not_null {
                "SET NOT NULL"
            } else {
                "DROP NOT NULL"
            }
            .to_owned(),
        ));
    }
    match (&o.identity, &n.identity) {
        (None, Some(i)) => s.push(alter(format!("ADD {} AS IDENTITY", generated(i)))),
        (Some(_), None) => s.push(alter("DROP IDENTITY IF EXISTS".to_owned())),
        (Some(a), Some(b)) if a != b => s.push(alter(format!("SET {}", generated(b)))),
        _ => {}
    }
}

fn generated(identity: &str) -> &'static str {
    if identity == "a" {
        "GENERATED ALWAYS"
    } else {
        "GENERATED BY DEFAULT"
    }
}

/// A column definition for `CREATE TABLE` and `ADD COLUMN`.
fn column_sql(name: &str, type_sql: &str, c: &Column) -> String {
    let mut sql = format!("{} {type_sql}", quote_ident(name));
    if let Some(k) = &c.collation {
        sql.push_str(&format!(" COLLATE {k}"));
    }
    if let Some(g) = &c.generated {
        sql.push_str(&format!(" GENERATED ALWAYS AS ({g}) STORED"));
    } else if let Some(i) = &c.identity {
        sql.push_str(&format!(" {} AS IDENTITY", generated(i)));
    } else if let Some(d) = &c.default {
        sql.push_str(&format!(" DEFAULT {d}"));
    }
    if c.not_null && c.identity.is_none() {
        sql.push_str(" NOT NULL");
    }
    sql
}

fn add_constraint(table: &str, name: &str, def: &str) -> String {
    format!(
        "ALTER TABLE {table} ADD CONSTRAINT {} {def}",
        quote_ident(name)
    )
}

/// `CREATE INDEX` on the target table. Without `ONLY`, an index on a partitioned table
/// reaches its partitions, as it did on the source.
fn create_index(table: &QualifiedName, i: &super::shape::Index) -> Result<String, Why> {
    let tail = i.tail.as_deref().ok_or_else(|| {
        Why::refused(format!(
            "its index's definition has an unexpected form: {}",
            i.def
        ))
    })?;
    Ok(format!(
        "CREATE {}INDEX {} ON {} {tail}",
        if i.unique { "UNIQUE " } else { "" },
        quote_ident(&i.name),
        table.quoted()
    ))
}
