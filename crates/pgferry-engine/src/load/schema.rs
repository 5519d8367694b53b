//! Schema: which objects to create on the target, and creating them.
//!
//! The source's schema is dumped once, under the load's snapshot, by `pg_dump`. From its
//! table of contents pgferry keeps every object except:
//! * tables the selection leaves out, and objects in schemas it leaves out entirely;
//! * everything that depends on a left-out object (a view over an excluded table, a
//!   foreign key to it), transitively, with a warning naming each one.
//!
//! Each kept entry becomes a *step* with its own SQL. Steps of the pre-data section (types,
//! functions, tables, views) run in one target transaction before the load, together with
//! the marks that record them done. Post-data steps (indexes and keys, then foreign keys,
//! then triggers, rules, policies and materialized view contents) run as soon as the tables
//! they touch are loaded, in parallel with the rest of the load ([`crate::load::graph`]), each in
//! its own transaction with its mark. A crash at any point leaves every step either done
//! and marked, or neither; the next run does the rest.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use pgferry_config::{Selection, TargetTablePrepMode};
use pgferry_pg::dump::{PgTools, RenderOptions, Section, TocEntry};
use pgferry_pg::{PgClient, PgError, QualifiedName, Side, describe_pg_error};

use crate::control::{self, Level};
pub use crate::control::{
    Step, StoredStep, mark_step, pending_steps, store_steps, table_step_ids, unfinished_steps,
};
use crate::error::{EngineError, Result};
use crate::session;

/// TOC entries that describe the dump itself or the database, never objects to create;
/// and event triggers, which `assess` says are not migrated (pgferry's own DDL capture is
/// one).
const NEVER_RESTORED: &[&str] = &[
    "EVENT TRIGGER",
    "ENCODING",
    "STDSTRINGS",
    "SEARCHPATH",
    "DATABASE",
    "DATABASE PROPERTIES",
    "TABLE DATA",
    "SEQUENCE SET",
    "BLOB",
    "BLOBS",
    "BLOB METADATA",
    "LARGE OBJECT",
];

/// Kinds that belong to one table and make no sense without it (or when it was kept as it
/// was on the target).
const TABLE_ATTACHED: &[&str] = &[
    "DEFAULT",
    "SEQUENCE OWNED BY",
    "COMMENT",
    "SECURITY LABEL",
    "ACL",
    "ROW SECURITY",
    "TABLE ATTACH",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "TRIGGER",
    "RULE",
    "POLICY",
    "STATISTICS",
];

/// SQLSTATEs that mean "this object already exists".
pub(crate) const DUPLICATE_OBJECT: &[&str] =
    &["42P06", "42P07", "42710", "42723", "42P16", "42P04"];

/// Lock conflicts between parallel DDL: retried.
pub(crate) const RETRY_SQLSTATES: &[&str] = &["40P01", "40001", "55P03"];

/// The kind of the pre-data steps that carry out transformation rules, one statement each.
pub const TRANSFORM_KIND: &str = "TRANSFORM";
/// The kind of the parse-only steps that check an `add-column` expression: parsed by the
/// target, never run.
pub const EXPRESSION_CHECK_KIND: &str = "EXPRESSION CHECK";

/// How many times a post-data step is retried after a deadlock with a concurrent step.
pub(crate) const STEP_ATTEMPTS: u32 = 4;

/// The schema part of a task's plan.
#[derive(Debug, Clone, Default)]
pub struct SchemaPlan {
    pub preamble: String,
    pub steps: Vec<Step>,
    /// The dump id of each table's TABLE entry, by the table's OID on the source.
    pub table_entries: HashMap<u32, i32>,
    pub warnings: Vec<String>,
}

fn post_data_phase(kind: &str) -> i32 {
    match kind {
        "INDEX" | "CONSTRAINT" | "CHECK CONSTRAINT" | "INDEX ATTACH" => 1,
        "FK CONSTRAINT" => 2,
        _ => 3,
    }
}

/// What the schema filter needs to know about the source and the selection.
pub struct FilterInput<'a> {
    pub selection: &'a Selection,
    /// OIDs of every table and partitioned table on the source.
    pub all_tables: &'a HashSet<u32>,
    /// OIDs of the selected ones.
    pub selected: &'a HashSet<u32>,
    /// Selected tables kept as they are on the target (`truncate`, `do_nothing`).
    pub kept_existing: &'a HashSet<u32>,
    /// Schema of each entry with a catalog identity, keyed by dump id.
    pub entry_schema: &'a HashMap<i32, String>,
}

/// The filter's verdict on a TOC.
#[derive(Debug, Default)]
pub struct Filtered {
    pub keep: Vec<TocEntry>,
    pub skip: HashMap<i32, String>,
    pub warnings: Vec<String>,
}

/// Decides which TOC entries become steps. Pure, so it is tested without pg_dump.
pub fn filter_toc(toc: &[TocEntry], input: &FilterInput<'_>) -> Result<Filtered> {
    let by_id: HashMap<i32, &TocEntry> = toc.iter().map(|e| (e.dump_id, e)).collect();
    // Why each left-out entry is left out: `None` for a direct decision, `Some(dep)` when it
    // depends on another left-out entry.
    let mut excluded: HashMap<i32, Option<i32>> = HashMap::new();
    for e in toc {
        let is_table = e.desc == "TABLE" && e.class_oid == 1259;
        let unselected_table = is_table
            && input.all_tables.contains(&e.obj_oid)
            && !input.selected.contains(&e.obj_oid);
        let out_of_scope = input
            .entry_schema
            .get(&e.dump_id)
            .is_some_and(|s| !input.selection.includes_schema(s));
        if NEVER_RESTORED.contains(&e.desc.as_str()) || unselected_table || out_of_scope {
            excluded.insert(e.dump_id, None);
        }
    }
    // Follow dependencies to a fixed point; pg_dump sorts its TOC so this is usually one pass.
    loop {
        let mut changed = false;
        for e in toc {
            if excluded.contains_key(&e.dump_id) {
                continue;
            }
            if let Some(dep) = e.deps.iter().find(|d| excluded.contains_key(d)) {
                excluded.insert(e.dump_id, Some(*dep));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut filtered = Filtered::default();
    // The root cause of an exclusion, for messages.
    let root = |mut id: i32| -> i32 {
        while let Some(Some(next)) = excluded.get(&id) {
            id = *next;
        }
        id
    };
    for e in toc {
        match excluded.get(&e.dump_id) {
            Some(Some(_)) => {
                let cause = by_id
                    .get(&root(e.dump_id))
                    .map(|c| c.label())
                    .unwrap_or_default();
                if e.desc == "TABLE" && input.selected.contains(&e.obj_oid) {
                    return Err(EngineError::MissingDependency {
                        table: e.label(),
                        dependency: cause,
                    });
                }
                let in_scope = input
                    .entry_schema
                    .get(&e.dump_id)
                    .is_none_or(|s| input.selection.includes_schema(s));
                if in_scope && !TABLE_ATTACHED.contains(&e.desc.as_str()) {
                    filtered.warnings.push(format!(
                        "{} is not created: it depends on {cause}, which is not migrated",
                        e.label()
                    ));
                }
            }
            Some(None) => {}
            None => {
                if e.desc == "TABLE" && input.kept_existing.contains(&e.obj_oid) {
                    filtered.skip.insert(
                        e.dump_id,
                        "the table already exists on the target and is kept as it is".to_owned(),
                    );
                } else if TABLE_ATTACHED.contains(&e.desc.as_str())
                    && e.deps.iter().any(|d| {
                        by_id.get(d).is_some_and(|t| {
                            t.desc == "TABLE" && input.kept_existing.contains(&t.obj_oid)
                        })
                    })
                {
                    filtered.skip.insert(
                        e.dump_id,
                        "belongs to a table that existed on the target before the load".to_owned(),
                    );
                }
                filtered.keep.push(e.clone());
            }
        }
    }
    Ok(filtered)
}

/// Looks up the schema of every TOC entry that has a catalog identity.
async fn entry_schemas(reader: &PgClient, toc: &[TocEntry]) -> Result<HashMap<i32, String>> {
    let with_identity: Vec<&TocEntry> = toc
        .iter()
        .filter(|e| e.class_oid != 0 && e.obj_oid != 0)
        .collect();
    let ids: Vec<i32> = with_identity.iter().map(|e| e.dump_id).collect();
    let classes: Vec<u32> = with_identity.iter().map(|e| e.class_oid).collect();
    let oids: Vec<u32> = with_identity.iter().map(|e| e.obj_oid).collect();
    let rows = reader
        .query(
            "identifying schema objects",
            "SELECT x.id,
                    CASE WHEN x.c = 'pg_namespace'::regclass
                         THEN (SELECT nspname::text FROM pg_namespace WHERE oid = x.o)
                         ELSE (pg_identify_object(x.c, x.o, 0)).schema END
             FROM unnest($1::int[], $2::oid[], $3::oid[]) AS x(id, c, o)",
            &[&ids, &classes, &oids],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get::<_, i32>(0), r.get::<_, Option<String>>(1)?)))
        .collect())
}

/// Builds the schema steps of a task from a dumped archive.
#[allow(clippy::too_many_arguments)]
pub async fn plan_schema(
    tools: &PgTools,
    archive: &Path,
    reader: &PgClient,
    selection: &Selection,
    all_tables: &HashSet<u32>,
    selected: &HashSet<u32>,
    kept_existing: &HashSet<u32>,
    table_bytes: &HashMap<u32, i64>,
    options: &RenderOptions,
) -> Result<SchemaPlan> {
    let toc = tools.read_toc(archive).await?;
    let entry_schema = entry_schemas(reader, &toc).await?;
    let filtered = filter_toc(
        &toc,
        &FilterInput {
            selection,
            all_tables,
            selected,
            kept_existing,
            entry_schema: &entry_schema,
        },
    )?;
    let mut plan = SchemaPlan {
        warnings: filtered.warnings,
        table_entries: toc
            .iter()
            .filter(|e| e.desc == "TABLE" && e.class_oid == 1259)
            .map(|e| (e.obj_oid, e.dump_id))
            .collect(),
        ..SchemaPlan::default()
    };
    // The size of the tables behind each TABLE entry, for step weights.
    let entry_bytes: HashMap<i32, i64> = toc
        .iter()
        .filter(|e| e.desc == "TABLE" && e.class_oid == 1259)
        .filter_map(|e| Some((e.dump_id, *table_bytes.get(&e.obj_oid)?)))
        .collect();
    for section in [Section::PreData, Section::PostData] {
        let entries: Vec<&TocEntry> = filtered
            .keep
            .iter()
            .filter(|e| e.section == section)
            .collect();
        if entries.is_empty() {
            continue;
        }
        let script = tools.render(archive, &entries, options).await?;
        if section == Section::PreData || plan.preamble.is_empty() {
            plan.preamble = script.preamble.clone();
        }
        let sql: HashMap<i32, String> = script.entries.into_iter().collect();
        for e in entries {
            plan.steps.push(Step {
                dump_id: e.dump_id,
                section,
                ordinal: plan.steps.len() as i32,
                phase: match section {
                    Section::PreData => 0,
                    Section::PostData => post_data_phase(&e.desc),
                },
                kind: e.desc.clone(),
                label: e.label(),
                depends_on: e.deps.clone(),
                weight: e.deps.iter().filter_map(|d| entry_bytes.get(d)).sum(),
                sql: sql.get(&e.dump_id).cloned().unwrap_or_default(),
                skip: filtered.skip.get(&e.dump_id).cloned(),
            });
        }
    }
    Ok(plan)
}

/// A post-data step in the build graph.
#[derive(Debug, Clone)]
pub(crate) struct GraphStep {
    pub step: StoredStep,
    /// Steps it waits for: pg_dump's dependencies plus those added here.
    pub deps: Vec<i32>,
    /// The TABLE entries it works on.
    pub tables: Vec<i32>,
}

/// Orders post-data steps into one dependency graph.
///
/// Beyond pg_dump's own dependencies, a foreign key waits for the index and key builds on
/// the two tables it touches (its validation uses them, and its lock would queue behind
/// them anyway), and a phase-3 step (trigger, rule, policy, ...) waits for everything on
/// its tables. That is all the ordering correctness needs: a foreign key on one pair of
/// tables never waits for an index on another. Ready steps start biggest-tables-first,
/// so the longest builds do not end up running alone at the end.
///
/// Steps that depend, transitively, on an `unfinished` step cannot run and are returned
/// apart.
pub(crate) fn post_data_graph(
    steps: &[StoredStep],
    table_ids: &HashSet<i32>,
    unfinished: &HashSet<i32>,
) -> (Vec<GraphStep>, Vec<StoredStep>) {
    let tables_of = |s: &StoredStep| -> Vec<i32> {
        s.depends_on
            .iter()
            .filter(|d| table_ids.contains(d))
            .copied()
            .collect()
    };
    // For each table, its steps of each phase.
    let mut by_table: HashMap<(i32, i32), Vec<i32>> = HashMap::new();
    for s in steps {
        for t in tables_of(s) {
            by_table.entry((t, s.phase)).or_default().push(s.dump_id);
        }
    }
    let mut graph: Vec<GraphStep> = steps
        .iter()
        .map(|s| {
            let tables = tables_of(s);
            let mut deps = s.depends_on.clone();
            for t in &tables {
                for earlier in 1..s.phase {
                    if let Some(ids) = by_table.get(&(*t, earlier)) {
                        deps.extend(ids.iter().copied());
                    }
                }
            }
            deps.sort_unstable();
            deps.dedup();
            GraphStep {
                step: s.clone(),
                deps,
                tables,
            }
        })
        .collect();
    // Block whatever depends on something that did not finish, to a fixed point.
    let mut blocked_ids: HashSet<i32> = HashSet::new();
    loop {
        let before = blocked_ids.len();
        for g in &graph {
            if !blocked_ids.contains(&g.step.dump_id)
                && g.deps
                    .iter()
                    .any(|d| unfinished.contains(d) || blocked_ids.contains(d))
            {
                blocked_ids.insert(g.step.dump_id);
            }
        }
        if blocked_ids.len() == before {
            break;
        }
    }
    let mut blocked = Vec::new();
    graph.retain(|g| {
        if blocked_ids.contains(&g.step.dump_id) {
            blocked.push(g.step.clone());
            false
        } else {
            true
        }
    });
    graph.sort_by(|a, b| {
        a.step
            .phase
            .cmp(&b.step.phase)
            .then(b.step.weight.cmp(&a.step.weight))
            .then(a.step.dump_id.cmp(&b.step.dump_id))
    });
    (graph, blocked)
}

pub(crate) fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

/// Restores the pre-data schema in one transaction, and with it everything that must
/// happen before the first row is copied: dropping or emptying tables in the way, and
/// moving the task to the loading phase.
pub async fn restore_pre_data(
    target: &mut PgClient,
    task: &str,
    preamble: &str,
    prep: TargetTablePrepMode,
    existing: &[QualifiedName],
) -> Result<Vec<String>> {
    let steps = pending_steps(target, task, "pre-data").await?;
    let err = |context: &str| {
        let context = context.to_owned();
        move |e| EngineError::Pg(PgError::query(Side::Target, context, e))
    };
    let mut notes = Vec::new();
    let tx = target
        .raw_mut()
        .transaction()
        .await
        .map_err(err("starting the schema restore"))?;
    tx.batch_execute(session::NO_TIMEOUTS)
        .await
        .map_err(err("setting up the schema restore"))?;
    tx.batch_execute(preamble)
        .await
        .map_err(err("setting up the schema restore"))?;
    if !existing.is_empty() {
        let names = existing
            .iter()
            .map(QualifiedName::quoted)
            .collect::<Vec<_>>()
            .join(", ");
        match prep {
            TargetTablePrepMode::DropAndCreate => {
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {names} CASCADE"))
                    .await
                    .map_err(err("dropping tables in the way"))?;
                notes.push(format!("dropped {} existing table(s)", existing.len()));
            }
            TargetTablePrepMode::Truncate => {
                tx.batch_execute(&format!("TRUNCATE {names}"))
                    .await
                    .map_err(err("emptying existing tables"))?;
                notes.push(format!("emptied {} existing table(s)", existing.len()));
            }
            TargetTablePrepMode::DoNothing | TargetTablePrepMode::Fail => {}
        }
    }
    let mut done: Vec<i32> = Vec::new();
    let mut skipped: Vec<(i32, String)> = Vec::new();
    for step in &steps {
        tx.batch_execute("SAVEPOINT pgferry_step")
            .await
            .map_err(err("setting a savepoint"))?;
        let ran = if step.kind == EXPRESSION_CHECK_KIND {
            check_expression(&tx, step).await?;
            Ok(())
        } else {
            execute_step(&tx, step.dump_id, &step.sql).await
        };
        match ran {
            Ok(()) => {
                tx.batch_execute("RELEASE SAVEPOINT pgferry_step")
                    .await
                    .map_err(err("releasing a savepoint"))?;
                done.push(step.dump_id)
            }
            Err(e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT pgferry_step")
                    .await
                    .map_err(err("recovering from a failed schema step"))?;
                let code = sqlstate(&e).unwrap_or("");
                if DUPLICATE_OBJECT.contains(&code) {
                    let note = format!(
                        "{} already exists on the target; the existing one is kept",
                        step.label
                    );
                    notes.push(note.clone());
                    skipped.push((step.dump_id, note));
                } else if code == "42501" && matches!(step.kind.as_str(), "COMMENT" | "ACL") {
                    let note = format!("{} needs privileges the target user lacks", step.label);
                    notes.push(note.clone());
                    skipped.push((step.dump_id, note));
                } else {
                    return Err(EngineError::SchemaRestore {
                        entry: step.label.clone(),
                        message: describe_pg_error(&e),
                    });
                }
            }
        }
    }
    control::steps_done(&tx, task, &done)
        .await
        .map_err(err("recording the schema restore"))?;
    for (id, note) in &skipped {
        control::step_skipped(&tx, task, *id, note)
            .await
            .map_err(err("recording the schema restore"))?;
    }
    // The schema and the phase change commit synchronously (`control::advance_phase`).
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(err("recording the schema restore"))?;
    control::set_phase(&tx, task, control::Phase::Loading).await?;
    control::event(
        &tx,
        task,
        Level::Info,
        "schema",
        &format!(
            "created {} schema objects before the load ({} kept as they were)",
            done.len(),
            skipped.len()
        ),
        None,
    )
    .await?;
    tx.commit()
        .await
        .map_err(err("committing the schema restore"))?;
    Ok(notes)
}

/// Runs one step's SQL. pg_dump's entries are scripts pg_dump wrote, and run as such. The
/// steps pgferry writes from the task's rules (negative dump ids) hold one statement each
/// and go through the extended protocol, whose Parse takes one statement and refuses a
/// second: text from a mapping file never rides in a batch.
async fn execute_step(
    tx: &tokio_postgres::Transaction<'_>,
    dump_id: i32,
    sql: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    if dump_id < 0 {
        tx.execute(sql, &[]).await.map(drop)
    } else {
        tx.batch_execute(sql).await
    }
}

/// Has the server parse, and never run, the query that proves an `add-column` expression is
/// one expression: `SELECT (expr) FROM table` must prepare as one statement with one
/// column. The config lexer already guarantees it; this is the server's own word on it.
async fn check_expression(tx: &tokio_postgres::Transaction<'_>, step: &StoredStep) -> Result<()> {
    let refused = |message: String| EngineError::SchemaRestore {
        entry: format!("{} ({})", step.label, step.sql),
        message,
    };
    let statement = tx.prepare(&step.sql).await.map_err(|e| {
        refused(format!(
            "the expression is not valid SQL: {}",
            describe_pg_error(&e)
        ))
    })?;
    let columns = statement.columns().len();
    if columns != 1 {
        return Err(refused(format!(
            "the expression parses as {columns} values, not one; fix the add-column rule"
        )));
    }
    Ok(())
}

/// Runs one step and records it done, in one transaction.
pub(crate) async fn run_step(
    client: &mut PgClient,
    task: &str,
    step: &StoredStep,
    started: Instant,
) -> std::result::Result<(), tokio_postgres::Error> {
    let tx = client.raw_mut().transaction().await?;
    execute_step(&tx, step.dump_id, &step.sql).await?;
    control::step_done(&tx, task, step.dump_id, started.elapsed().as_secs_f64()).await?;
    tx.commit().await?;
    tracing::debug!(step = %step.label, kind = %step.kind, "schema step done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use pgferry_config::TableRule;
    use pgferry_pg::dump::parse_toc;

    use super::*;

    const TOC: &str = "\
10; 2615 100 SCHEMA - audit postgres
11; 1247 101 TYPE public mood postgres
12; 1259 200 TABLE public orders postgres
;\tdepends on: 11
13; 1259 201 TABLE public scratch postgres
14; 1259 202 TABLE audit log postgres
15; 1259 203 VIEW public recent postgres
;\tdepends on: 12
16; 1259 204 VIEW public scratch_view postgres
;\tdepends on: 13
17; 0 0 COMMENT public TABLE scratch postgres
;\tdepends on: 13
18; 2606 300 FK CONSTRAINT public orders orders_scratch_fkey postgres
;\tdepends on: 12 13
19; 1259 205 INDEX public orders_idx postgres
;\tdepends on: 12
20; 0 0 ENCODING - ENCODING
";

    fn schemas() -> HashMap<i32, String> {
        [
            (10, "audit"),
            (11, "public"),
            (12, "public"),
            (13, "public"),
            (14, "audit"),
            (15, "public"),
            (16, "public"),
            (18, "public"),
            (19, "public"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect()
    }

    #[test]
    fn unselected_tables_and_their_dependents_are_left_out_with_warnings() {
        let toc = parse_toc(TOC);
        let selection = Selection::new(
            vec![TableRule::new("public", "%")],
            vec![TableRule::new("public", "scratch")],
        );
        let all: HashSet<u32> = [200, 201, 202].into();
        let selected: HashSet<u32> = [200].into();
        let schema = schemas();
        let f = filter_toc(
            &toc,
            &FilterInput {
                selection: &selection,
                all_tables: &all,
                selected: &selected,
                kept_existing: &HashSet::new(),
                entry_schema: &schema,
            },
        )
        .unwrap();
        let kept: Vec<i32> = f.keep.iter().map(|e| e.dump_id).collect();
        assert_eq!(kept, [11, 12, 15, 19]);
        assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
        assert!(f.warnings[0].contains("VIEW public scratch_view"));
        assert!(f.warnings[0].contains("TABLE public scratch"));
    }

    #[test]
    fn a_selected_table_that_needs_a_left_out_object_is_an_error() {
        let toc = parse_toc(TOC);
        let selection = Selection::new(
            vec![TableRule::new("public", "%")],
            vec![TableRule::new("public", "scratch")],
        );
        let mut schema = schemas();
        schema.insert(11, "types".to_owned());
        let all: HashSet<u32> = [200, 201, 202].into();
        let selected: HashSet<u32> = [200].into();
        let err = filter_toc(
            &toc,
            &FilterInput {
                selection: &selection,
                all_tables: &all,
                selected: &selected,
                kept_existing: &HashSet::new(),
                entry_schema: &schema,
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("TYPE types mood") || err.to_string().contains("mood"),
            "{err}"
        );
    }

    #[test]
    fn kept_existing_tables_skip_their_definition_and_attachments_but_not_views() {
        let toc = parse_toc(TOC);
        let selection = Selection::everything();
        let all: HashSet<u32> = [200, 201, 202].into();
        let selected = all.clone();
        let kept: HashSet<u32> = [200].into();
        let schema = schemas();
        let f = filter_toc(
            &toc,
            &FilterInput {
                selection: &selection,
                all_tables: &all,
                selected: &selected,
                kept_existing: &kept,
                entry_schema: &schema,
            },
        )
        .unwrap();
        assert!(f.skip.contains_key(&12), "the table itself");
        assert!(f.skip.contains_key(&19), "its index");
        assert!(f.skip.contains_key(&18), "its foreign key");
        assert!(!f.skip.contains_key(&15), "a view over it is still created");
        assert!(f.keep.iter().all(|e| e.desc != "ENCODING"));
    }

    fn stored(dump_id: i32, phase: i32, kind: &str, deps: &[i32], weight: i64) -> StoredStep {
        StoredStep {
            dump_id,
            phase,
            kind: kind.to_owned(),
            label: format!("{kind} {dump_id}"),
            depends_on: deps.to_vec(),
            weight,
            sql: String::new(),
        }
    }

    #[test]
    fn foreign_keys_wait_only_for_their_own_tables_and_big_steps_go_first() {
        // Tables 1 (big) and 2 (small), and 3 which nothing here touches.
        let tables: HashSet<i32> = [1, 2, 3].into();
        let steps = vec![
            stored(10, 1, "INDEX", &[2], 10),
            stored(11, 1, "CONSTRAINT", &[1], 1000),
            stored(12, 1, "INDEX", &[1], 1000),
            stored(13, 1, "INDEX", &[3], 5),
            stored(20, 2, "FK CONSTRAINT", &[1, 2, 11], 1010),
            stored(30, 3, "TRIGGER", &[2], 10),
        ];
        let (graph, blocked) = post_data_graph(&steps, &tables, &HashSet::new());
        assert!(blocked.is_empty());
        let order: Vec<i32> = graph.iter().map(|g| g.step.dump_id).collect();
        assert_eq!(order, [11, 12, 10, 13, 20, 30], "phase, then weight");
        let deps = |id| {
            graph
                .iter()
                .find(|g| g.step.dump_id == id)
                .unwrap()
                .deps
                .clone()
        };
        assert_eq!(
            deps(20),
            [1, 2, 10, 11, 12],
            "the FK waits for both tables' indexes only"
        );
        assert_eq!(
            deps(30),
            [2, 10, 20],
            "a trigger waits for everything on its table"
        );
    }

    #[test]
    fn steps_behind_a_failure_are_blocked_transitively() {
        let tables: HashSet<i32> = [1].into();
        let steps = vec![
            stored(10, 1, "INDEX", &[1, 5], 1),
            stored(11, 1, "INDEX ATTACH", &[10], 1),
            stored(20, 2, "FK CONSTRAINT", &[1], 1),
            stored(21, 1, "INDEX", &[1], 1),
        ];
        let unfinished: HashSet<i32> = [5].into();
        let (graph, blocked) = post_data_graph(&steps, &tables, &unfinished);
        let mut blocked: Vec<i32> = blocked.iter().map(|s| s.dump_id).collect();
        blocked.sort();
        assert_eq!(blocked, [10, 11, 20]);
        assert_eq!(graph.len(), 1);
    }

    #[test]
    fn post_data_kinds_are_phased_keys_first() {
        assert_eq!(post_data_phase("INDEX"), 1);
        assert_eq!(post_data_phase("CONSTRAINT"), 1);
        assert_eq!(post_data_phase("INDEX ATTACH"), 1);
        assert_eq!(post_data_phase("FK CONSTRAINT"), 2);
        assert_eq!(post_data_phase("TRIGGER"), 3);
        assert_eq!(post_data_phase("MATERIALIZED VIEW DATA"), 3);
    }
}
