//! `pgferry validate --schema`: do source and target hold the same objects?
//!
//! Each side lists its objects in the task's scope with a comparable form: tables with
//! their columns (type, nullability, default), indexes, constraints and triggers by their
//! definitions, views and materialized views by a hash of theirs, functions and procedures
//! by a hash of their bodies, sequences, and extensions with their versions. Objects that
//! belong to an extension are the extension's, compared through its version. The task's
//! rules are applied first: a source object is looked for under its target name, removed
//! columns are not expected, added ones are allowed, and a changed type is not compared.
//! Where a rule renames a schema, a table or a column, definitions that could name them
//! (indexes, constraints, triggers, column defaults) are compared by presence only, and
//! view definitions and extension versions are compared only between servers of one major
//! version (their printed form, and the versions shipped, change between versions).
//!
//! Only reads, on both sides: nothing to clean up after a crash.

use std::collections::{BTreeMap, HashMap};

use pgferry_config::Task;
use pgferry_config::mapping::TableMap;
use pgferry_pg::{PgClient, QualifiedName, Side, catalog};
use serde::Serialize;

use crate::endpoints::Endpoints;
use crate::error::Result;
use crate::load::plan;

/// One object that is missing or different on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaDifference {
    /// `table`, `column`, `index`, `constraint`, `trigger`, `view`, `function`,
    /// `sequence`, `extension`.
    pub kind: String,
    /// The object, by its name on the target.
    pub object: String,
    pub problem: String,
}

/// The comparison of every object in scope.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaReport {
    pub task: String,
    pub objects: usize,
    pub differences: Vec<SchemaDifference>,
}

impl SchemaReport {
    pub fn matches(&self) -> bool {
        self.differences.is_empty()
    }
}

/// An object's comparable form on one side, by (kind, name on the target).
type Objects = BTreeMap<(String, String), String>;

/// Compares the objects of both sides.
pub async fn compare_schema(task: &Task) -> Result<SchemaReport> {
    let endpoints = Endpoints::resolve(task)?;
    let source = pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry validate").await?;
    let target = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry validate").await?;
    // Reading a default's text locks its table for a moment; a lock the application holds
    // must not hold the comparison (and a cutover's checks) for ever.
    for client in [&source, &target] {
        client
            .batch("limiting lock waits", "SET lock_timeout = '30s'")
            .await?;
    }
    let schemas = plan::scope_schemas(&source, task).await?;
    let all = catalog::list_tables(&source).await?;
    let selected = plan::select_tables(&all, &task.selection);
    let maps = crate::transform::table_maps(&task.mapping, selected.tables.iter())?;
    let major = |v: i32| v / 10000;
    let (source_info, target_info) = (
        catalog::ServerInfo::load(&source).await?,
        catalog::ServerInfo::load(&target).await?,
    );
    let mut names = Names {
        exact: true,
        same_major: major(source_info.version_num) == major(target_info.version_num),
        ..Names::default()
    };
    for t in selected.tables.iter().chain(&selected.parents) {
        let target_name = crate::transform::target_of(&maps, t);
        let map = maps.get(&t.oid);
        names.exact &= target_name == t.name && !map.is_some_and(renames_columns);
        names
            .tables
            .insert(t.name.clone(), (target_name, map.cloned()));
    }
    for s in &schemas {
        let moved = task.mapping.target_schema(s).unwrap_or_else(|_| s.clone());
        names.exact &= moved == *s;
        names.schemas.insert(s.clone(), moved);
    }
    // Tables move with the rules (and their sequences with them); other objects stay in
    // the schema they were created in.
    let mut target_schemas: Vec<String> = names.schemas.values().cloned().collect();
    target_schemas.extend(schemas.iter().cloned());
    target_schemas.sort();
    target_schemas.dedup();
    let mut wanted = objects(&source, &schemas, Some(&names)).await?;
    let found = objects(&target, &target_schemas, None).await?;
    // What the plan skipped on purpose is not expected on the target.
    let skipped = crate::control::skipped_objects(&target, &task.name).await?;
    wanted.retain(|(kind, object), _| {
        !skipped
            .iter()
            .any(|(desc, name)| kind_of(desc) == kind && bare_name(kind, object) == name)
    });
    let mut differences = Vec::new();
    for ((kind, object), form) in &wanted {
        let problem = match found.get(&(kind.clone(), object.clone())) {
            None => "missing on the target".to_owned(),
            // Without exact names a column's default is not compared.
            Some(f)
                if kind == "column"
                    && !names.exact
                    && f.split(" default ").next() == Some(form) =>
            {
                continue;
            }
            Some(f) if f != form && !form.is_empty() => {
                format!("differs: source {form:?}, target {f:?}")
            }
            Some(_) => continue,
        };
        differences.push(SchemaDifference {
            kind: kind.clone(),
            object: object.clone(),
            problem,
        });
    }
    Ok(SchemaReport {
        task: task.name.clone(),
        objects: wanted.len(),
        differences,
    })
}

/// The comparison's kind of a schema step's pg_dump kind.
fn kind_of(desc: &str) -> &str {
    match desc {
        "INDEX" => "index",
        "CONSTRAINT" | "FK CONSTRAINT" => "constraint",
        "TRIGGER" => "trigger",
        "VIEW" | "MATERIALIZED VIEW" => "view",
        "SEQUENCE" => "sequence",
        "FUNCTION" | "PROCEDURE" => "function",
        "TABLE" => "table",
        _ => "",
    }
}

/// An object's own name, as a schema step's label ends with it.
fn bare_name<'a>(kind: &str, object: &'a str) -> &'a str {
    match kind {
        "index" | "constraint" | "trigger" => object.rsplit(": ").next().unwrap_or(object),
        "function" => {
            let name = object.split('(').next().unwrap_or(object);
            name.split_once('.').map_or(name, |(_, n)| n)
        }
        _ => object.split_once('.').map_or(object, |(_, n)| n),
    }
}

fn renames_columns(map: &TableMap) -> bool {
    map.columns
        .iter()
        .any(|c| c.target.as_deref() != Some(c.source.as_str()))
}

/// How source names become target names.
#[derive(Default)]
struct Names {
    schemas: HashMap<String, String>,
    /// Selected tables: the target name and the rules' verdict.
    tables: HashMap<QualifiedName, (QualifiedName, Option<TableMap>)>,
    /// No rule renames a schema, a table or a column: definitions compare as text.
    exact: bool,
    /// Both servers are of one major version: view definitions print alike.
    same_major: bool,
}

impl Names {
    /// A source table outside the task's selection: not expected on the target.
    fn left_out(&self, t: &QualifiedName) -> bool {
        !self.tables.contains_key(t)
    }

    fn table(&self, t: &QualifiedName) -> QualifiedName {
        match self.tables.get(t) {
            Some((target, _)) => target.clone(),
            None => t.clone(),
        }
    }
}

/// Lists one side's objects. On the source (`names` given) they are keyed by their target
/// names, and what the rules change is left out of the comparable form.
async fn objects(client: &PgClient, schemas: &[String], names: Option<&Names>) -> Result<Objects> {
    let mut out = Objects::new();
    let rel = |r: &tokio_postgres::Row, s: usize| {
        let t = QualifiedName::new(r.get::<_, String>(s), r.get::<_, String>(s + 1));
        names.map(|n| n.table(&t)).unwrap_or(t)
    };
    for r in client
        .query("listing relations", RELATIONS, &[&schemas])
        .await?
    {
        let source_name = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let kind: String = r.get(2);
        let mut form: String = r.get(3);
        let mut name = rel(&r, 0);
        if let Some(n) = names {
            if kind == "table" && n.left_out(&source_name) {
                continue;
            }
            if kind == "view" && !(n.same_major && n.exact) {
                form.clear();
            }
            // A sequence a column owns goes where its table goes, or nowhere.
            let owner: Option<(String, String)> = r.get::<_, Option<String>>(4).zip(r.get(5));
            if let Some((schema, table)) = owner {
                let owner = QualifiedName::new(schema, table);
                if n.left_out(&owner) {
                    continue;
                }
                name = QualifiedName::new(n.table(&owner).schema, &source_name.name);
            }
        }
        out.insert((kind, name.to_string()), form);
    }
    for r in client
        .query("listing columns", COLUMNS, &[&schemas])
        .await?
    {
        let table_src = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        if names.is_some_and(|n| n.left_out(&table_src)) {
            continue;
        }
        let table = rel(&r, 0);
        let column: String = r.get(2);
        let default: Option<String> = r.get(4);
        let with_default = |form: String| match &default {
            Some(d) if names.is_none_or(|n| n.exact) => format!("{form} default {d}"),
            _ => form,
        };
        let (column, form) = match names.and_then(|n| n.tables.get(&table_src)) {
            Some((_, Some(map))) => match map.columns.iter().find(|c| c.source == column) {
                Some(c) => match &c.target {
                    None => continue,
                    // A changed type is the rule's business, not a difference.
                    Some(t) if c.new_type.is_some() => (t.clone(), String::new()),
                    Some(t) => (t.clone(), with_default(r.get(3))),
                },
                None => (column, with_default(r.get(3))),
            },
            _ => (column, with_default(r.get(3))),
        };
        out.insert(("column".to_owned(), format!("{table}.{column}")), form);
    }
    for (kind, sql) in [
        ("index", INDEXES),
        ("constraint", CONSTRAINTS),
        ("trigger", TRIGGERS),
    ] {
        for r in client
            .query("listing table objects", sql, &[&schemas])
            .await?
        {
            let source_name = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            if names.is_some_and(|n| n.left_out(&source_name)) {
                continue;
            }
            let table = rel(&r, 0);
            let object: String = r.get(2);
            let definition: String = r.get(3);
            let form = match names {
                Some(n) if !n.exact => String::new(),
                _ => definition,
            };
            out.insert((kind.to_owned(), format!("{table}: {object}")), form);
        }
    }
    for r in client
        .query("listing functions", FUNCTIONS, &[&schemas])
        .await?
    {
        let schema: String = r.get(0);
        out.insert(
            (
                "function".to_owned(),
                format!("{schema}.{}", r.get::<_, String>(1)),
            ),
            r.get(2),
        );
    }
    for r in client.query("listing extensions", EXTENSIONS, &[]).await? {
        // Another major version ships its own versions of the same extensions.
        let version: String = match names {
            Some(n) if !n.same_major => String::new(),
            _ => r.get(1),
        };
        out.insert(("extension".to_owned(), r.get(0)), version);
    }
    Ok(out)
}

/// Objects that belong to an extension are compared through the extension.
const RELATIONS: &str = concat!(
    "SELECT n.nspname::text, c.relname::text,
            CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
                 WHEN 'm' THEN 'view' ELSE 'sequence' END,
            CASE WHEN c.relkind IN ('v', 'm') THEN c.relkind::text || md5(pg_get_viewdef(c.oid))
                 WHEN c.relkind = 'S' THEN (SELECT format_type(s.seqtypid, NULL) || ' by '
                     || s.seqincrement FROM pg_sequence s WHERE s.seqrelid = c.oid)
                 ELSE '' END,
            o.nspname::text, o.relname::text
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN LATERAL (SELECT tn.nspname, t.relname FROM pg_depend d
         JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
         WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) o ON true
     WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND ",
    "NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
     AND d.objid = c.oid AND d.deptype = 'e')"
);

const COLUMNS: &str = "SELECT n.nspname::text, c.relname::text, a.attname::text,
        format_type(a.atttypid, a.atttypmod)
        || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
        pg_get_expr(d.adbin, d.adrelid)
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND a.attnum > 0
       AND NOT a.attisdropped";

const INDEXES: &str = "SELECT n.nspname::text, c.relname::text, i.relname::text,
        pg_get_indexdef(x.indexrelid)
     FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
     JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'm')";

const CONSTRAINTS: &str = "SELECT n.nspname::text, c.relname::text, co.conname::text,
        pg_get_constraintdef(co.oid)
     FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY($1)";

const TRIGGERS: &str = "SELECT n.nspname::text, c.relname::text, tg.tgname::text,
        pg_get_triggerdef(tg.oid)
     FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY($1) AND NOT tg.tgisinternal";

const FUNCTIONS: &str = "SELECT n.nspname::text,
        p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
        p.prokind::text || ' ' || md5(coalesce(p.prosrc, '')) || ' returns '
        || coalesce(format_type(p.prorettype, NULL), '')
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = ANY($1) AND NOT EXISTS (SELECT FROM pg_depend d
         WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')";

const EXTENSIONS: &str = "SELECT extname::text, extversion FROM pg_extension";
