//! Planning a new task: what CDC sets up on the source, what the load copies, and the one
//! target transaction that records it all.
//!
//! Order matters for consistency and for the source's safety:
//! * tables in the way and bad mapping expressions are refused before anything is created
//!   on the source;
//! * for CDC, the publication and then the slot are created first, and the slot exports the
//!   snapshot the plan and the load read, so the stream starts exactly where the copy ends;
//! * with `[cdc] ddl`, the DDL capture is installed (one source transaction) after the
//!   publication and before the slot;
//! * the plan, the schema archive, the chunks and the CDC setup commit in one target
//!   transaction. A crash before it leaves at most the publication, the DDL capture and a
//!   slot of the task's name, and no task row: the next run drops that slot (it was never
//!   used), installs the capture again (idempotent) and plans again; `pgferry cleanup`
//!   removes them if it never does.

use std::collections::{HashMap, HashSet};

use pgferry_config::{TargetTablePrepMode, Task};
use pgferry_pg::catalog::{self, ServerInfo};
use pgferry_pg::dump::{PgTools, RenderOptions};
use pgferry_pg::replication::ReplicationClient;
use pgferry_pg::{PgClient, PgError, QualifiedName, Side};

use crate::control::{self, CdcSetup, Level};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::plan::{self, PlanSettings};
use crate::load::schema;
use crate::load::snapshot::{self, SnapshotHolder};
use crate::{assess, cdc, transform};

/// Sets up CDC on the source before the snapshot exists: tables without a key (so the
/// publication never breaks the application), then the publication, then the slot, whose
/// snapshot the full load uses (`export`) or not (CDC only).
pub(crate) async fn setup_cdc(
    task: &Task,
    endpoints: &Endpoints,
    source: &PgClient,
    source_info: &ServerInfo,
    control_client: &PgClient,
    export: bool,
) -> Result<(CdcSetup, Option<SnapshotHolder>, Vec<String>)> {
    let live = catalog::list_tables(source).await?;
    let selected = plan::select_tables(&live, &task.selection);
    if selected.tables.is_empty() && selected.parents.is_empty() {
        return Err(EngineError::NothingSelected);
    }
    assess::check_source_tables(source_info, &selected.tables)?;
    // Unlogged tables write no WAL, so no publication can carry their changes: they are
    // full-loaded like any other table and left out of the stream.
    let (unlogged, logged): (Vec<catalog::Table>, Vec<catalog::Table>) =
        selected.tables.iter().cloned().partition(|t| t.unlogged);
    let no_key =
        cdc::source::handle_tables_without_key(source, control_client, task, &logged).await?;
    let kept: Vec<catalog::Table> = logged
        .into_iter()
        .filter(|t| !no_key.excluded.contains(&t.name))
        .collect();
    let (publication, publication_created) = cdc::source::ensure_publication(
        source,
        task,
        &kept,
        &selected.parents,
        source_info.version_num >= 130000,
    )
    .await?;
    let mut warnings = Vec::new();
    // Before the slot: every command after its starting point is in the stream, and the
    // capture's baseline is the catalog the snapshot sees.
    if task.cdc.ddl
        && let cdc::capture::Installed::Refused(w) =
            cdc::capture::install(source, &task.name, &publication).await?
    {
        warnings.push(w);
    }
    let slot = task
        .cdc
        .slot_name
        .clone()
        .unwrap_or_else(|| cdc::source::default_name(&task.name));
    // A slot of this name without a task row is the leftover of a planning that died
    // before it was recorded: it was never used, so it is dropped and made again.
    cdc::source::drop_slot(source, &slot).await?;
    let mut repl =
        ReplicationClient::connect(Side::Source, &endpoints.source, "pgferry slot").await?;
    let created = repl.create_slot(&slot, export).await?;
    let holder = match (export, created.snapshot.clone()) {
        (true, Some(name)) => Some(SnapshotHolder::from_slot(repl, name)),
        (true, None) => {
            return Err(EngineError::Pg(PgError::Protocol {
                side: Side::Source,
                message: "the new replication slot exported no snapshot".to_owned(),
            }));
        }
        (false, _) => None,
    };
    // Binary tuple data (PostgreSQL 14+) when every column can travel in binary between
    // two servers.
    let binary = task.cdc.binary
        && source_info.version_num >= 140000
        && kept
            .iter()
            .chain(&selected.parents)
            .all(|t| t.binary_copy_safe);
    for t in &no_key.changed {
        warnings.push(format!(
            "set REPLICA IDENTITY FULL on {t}; `pgferry cleanup` restores it"
        ));
    }
    for t in &no_key.excluded {
        warnings.push(format!(
            "{t} has no key and is left out (no_key_tables = \"exclude\")"
        ));
    }
    for t in &unlogged {
        warnings.push(format!(
            "{} is UNLOGGED: it is copied by the full load, but its later changes write no \
             WAL and cannot be streamed. Make it logged (ALTER TABLE ... SET LOGGED) before \
             planning if its changes matter",
            t.name
        ));
    }
    Ok((
        CdcSetup {
            slot,
            publication,
            publication_created,
            consistent_point: created.consistent_point,
            excluded: no_key.excluded,
            unlogged: unlogged.iter().map(|t| t.name.clone()).collect(),
            binary,
        },
        holder,
        warnings,
    ))
}

/// Plans a CDC-only task: the target already holds the tables (loaded some other way), and
/// the stream starts when the slot is created.
pub(crate) async fn plan_cdc_only(
    task: &Task,
    endpoints: &Endpoints,
    source: &PgClient,
    source_info: &ServerInfo,
    control_client: &mut PgClient,
) -> Result<Vec<String>> {
    let live = catalog::list_tables(source).await?;
    let selected = plan::select_tables(&live, &task.selection);
    let missing: Vec<String> =
        missing_for_cdc(control_client, task, &selected.tables, &selected.parents)
            .await?
            .iter()
            .map(ToString::to_string)
            .collect();
    if !missing.is_empty() {
        return Err(EngineError::Pg(PgError::Prerequisite {
            side: Side::Target,
            problem: format!(
                "migration_type = \"cdc\" streams changes into existing tables, and {} are \
                 missing on the target: {}",
                missing.len(),
                missing.join(", ")
            ),
            fix: "create and load them first, or use migration_type = \"full-load-and-cdc\", \
                  which does both without a gap"
                .to_owned(),
        }));
    }
    let (setup, _, warnings) =
        setup_cdc(task, endpoints, source, source_info, control_client, false).await?;
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "storing the plan", e));
    let tx = control_client.raw_mut().transaction().await.map_err(err)?;
    let row = control::NewTask {
        existing_tables: serde_json::json!([]),
        phase: control::Phase::Cdc,
        ..new_task(task, endpoints)
    };
    control::insert_task(&tx, &row).await.map_err(err)?;
    control::store_cdc_setup(&tx, &task.name, &setup).await?;
    control::event(
        &tx,
        &task.name,
        Level::Info,
        "plan",
        &format!(
            "CDC starts at {} (slot {}, publication {})",
            setup.consistent_point, setup.slot, setup.publication
        ),
        None,
    )
    .await?;
    tx.commit().await.map_err(err)?;
    Ok(warnings)
}

/// Plans a new task and stores the plan, the schema and the task row in one target
/// transaction. Returns the snapshot the load reads, and warnings for the user.
pub(crate) async fn plan_task(
    task: &Task,
    tools: &PgTools,
    endpoints: &Endpoints,
    source: &PgClient,
    source_info: &ServerInfo,
    target_info: &ServerInfo,
    control_client: &mut PgClient,
) -> Result<(SnapshotHolder, Vec<String>)> {
    let mut warnings = Vec::new();
    check_expressions(task, source).await?;
    let (holder, cdc_setup) = snapshot_and_slot(
        task,
        endpoints,
        source,
        source_info,
        control_client,
        &mut warnings,
    )
    .await?;
    let snapshot = holder.name().to_owned();
    let reader = snapshot::reader(&endpoints.source, &snapshot, "pgferry plan").await?;
    let all = catalog::list_tables(&reader).await?;
    let large_objects = crate::load::blobs::count(&reader).await?;
    if large_objects > 0 && task.migration_type.needs_cdc() {
        warnings.push(format!(
            "the source has {large_objects} large object(s): they are copied as of the load's \
             snapshot, and logical decoding does not carry their later changes; copy them \
             again at cutover if the application changes them"
        ));
    }
    let mut selected = plan::select_tables(&all, &task.selection);
    if let Some(setup) = &cdc_setup {
        selected
            .tables
            .retain(|t| !setup.excluded.contains(&t.name));
    }
    warnings.extend(selected.warnings.iter().cloned());
    if selected.tables.is_empty() && selected.parents.is_empty() {
        return Err(EngineError::NothingSelected);
    }
    assess::check_source_tables(source_info, &selected.tables)?;
    let maps = transform::table_maps(
        &task.mapping,
        selected.tables.iter().chain(&selected.parents),
    )?;
    let existing = in_the_way(control_client, &selected, &maps).await?;
    let prep = task.full_load.target_table_prep_mode;
    if !existing.is_empty() && prep == TargetTablePrepMode::Fail {
        return Err(EngineError::TablesInTheWay { tables: existing });
    }
    let existing_set: HashSet<&QualifiedName> = existing.iter().collect();
    let kept_existing: HashSet<u32> = match prep {
        TargetTablePrepMode::Truncate | TargetTablePrepMode::DoNothing => selected
            .tables
            .iter()
            .chain(&selected.parents)
            .filter(|t| existing_set.contains(&transform::target_of(&maps, t)))
            .map(|t| t.oid)
            .collect(),
        _ => HashSet::new(),
    };

    let settings = PlanSettings {
        chunk_size: task.full_load.chunk_size,
        block_size: source_info.block_size,
        tid_range_scan: source_info.has_tid_range_scan(),
        force_text: source_info.encoding != target_info.encoding,
        prefer_integer_keys: task.migration_type.needs_cdc(),
    };
    if settings.force_text {
        warnings.push(format!(
            "the source's encoding is {} and the target's {}: every table is copied as text, \
             which converts it",
            source_info.encoding, target_info.encoding
        ));
    }
    let keys = crate::load::keysplit::read(&reader, &selected.tables, &maps, &settings).await?;
    let planned = plan::plan_tables(&selected.tables, &maps, &keys, &settings);
    for t in &planned {
        if let Some(why) = &t.split_note {
            warnings.push(format!(
                "{} ({} MB) is copied in one piece: {why}",
                t.source,
                t.estimated_bytes / (1024 * 1024)
            ));
        }
    }
    let roots: HashMap<u32, QualifiedName> = selected
        .tables
        .iter()
        .filter_map(|t| Some((t.oid, t.partition_root.clone()?)))
        .collect();

    let all_oids: HashSet<u32> = all.iter().map(|t| t.oid).collect();
    let sizes: HashMap<u32, i64> = all.iter().map(|t| (t.oid, t.table_bytes)).collect();
    let (schema_plan, archive_bytes) = dump_schema(
        task,
        tools,
        endpoints,
        &snapshot,
        &reader,
        control_client,
        (&selected, &maps, &kept_existing),
        (&all_oids, &sizes),
    )
    .await?;
    warnings.extend(schema_plan.warnings.iter().cloned());

    let plan = StoredPlan {
        planned: &planned,
        existing: &existing,
        roots: &roots,
        schema: &schema_plan,
        archive: &archive_bytes,
        cdc: cdc_setup.as_ref(),
        warnings: &warnings,
    };
    store_plan(control_client, task, endpoints, &plan).await?;
    Ok((holder, warnings))
}

/// Everything planning decided, to store in one transaction.
struct StoredPlan<'a> {
    planned: &'a [plan::PlannedTable],
    existing: &'a [QualifiedName],
    roots: &'a HashMap<u32, QualifiedName>,
    schema: &'a schema::SchemaPlan,
    archive: &'a [u8],
    cdc: Option<&'a CdcSetup>,
    warnings: &'a [String],
}

/// Stores the task row, its tables and chunks, its schema steps, its CDC setup and the
/// planning events in one target transaction: a crash before the commit leaves nothing of
/// the task, after it the whole plan.
async fn store_plan(
    control_client: &mut PgClient,
    task: &Task,
    endpoints: &Endpoints,
    p: &StoredPlan<'_>,
) -> Result<()> {
    let err =
        |context: &'static str| move |e| EngineError::Pg(PgError::query(Side::Target, context, e));
    let tx = control_client
        .raw_mut()
        .transaction()
        .await
        .map_err(err("storing the plan"))?;
    let row = control::NewTask {
        schema_archive: Some(p.archive),
        schema_preamble: Some(&p.schema.preamble),
        existing_tables: serde_json::to_value(p.existing).unwrap_or_default(),
        ..new_task(task, endpoints)
    };
    control::insert_task(&tx, &row)
        .await
        .map_err(err("storing the plan"))?;
    let existing: HashSet<&QualifiedName> = p.existing.iter().collect();
    let chunk_count = control::store_tables(
        &tx,
        &task.name,
        p.planned,
        &existing,
        &p.schema.table_entries,
        p.roots,
    )
    .await?;
    schema::store_steps(&tx, &task.name, &p.schema.steps).await?;
    if let Some(setup) = p.cdc {
        control::store_cdc_setup(&tx, &task.name, setup).await?;
    }
    control::event(
        &tx,
        &task.name,
        Level::Info,
        "plan",
        &format!(
            "planned {} tables in {chunk_count} chunks and {} schema objects",
            p.planned.len(),
            p.schema.steps.len()
        ),
        None,
    )
    .await?;
    for w in p.warnings {
        control::event(&tx, &task.name, Level::Warning, "plan", w, None).await?;
    }
    tx.commit().await.map_err(err("storing the plan"))?;
    Ok(())
}

/// Checks every `add-column` expression with the source's parser before anything is
/// created: a bad rule stops planning with nothing to undo.
async fn check_expressions(task: &Task, source: &PgClient) -> Result<()> {
    if !task.mapping.has_expressions() {
        return Ok(());
    }
    let live = catalog::list_tables(source).await?;
    let selected = plan::select_tables(&live, &task.selection);
    let tables = || selected.tables.iter().chain(&selected.parents);
    let maps = transform::table_maps(&task.mapping, tables())?;
    transform::check_expressions_on_source(source, tables(), &maps).await
}

/// The snapshot the load reads: exported by a new replication slot for a task with CDC
/// (after refusing tables in the way, before anything is created on the source), else by
/// an ordinary session.
async fn snapshot_and_slot(
    task: &Task,
    endpoints: &Endpoints,
    source: &PgClient,
    source_info: &ServerInfo,
    control_client: &PgClient,
    warnings: &mut Vec<String>,
) -> Result<(SnapshotHolder, Option<CdcSetup>)> {
    if !task.migration_type.needs_cdc() {
        return Ok((SnapshotHolder::export(&endpoints.source).await?, None));
    }
    let live = catalog::list_tables(source).await?;
    let selected = plan::select_tables(&live, &task.selection);
    let maps = transform::table_maps(
        &task.mapping,
        selected.tables.iter().chain(&selected.parents),
    )?;
    let existing = in_the_way(control_client, &selected, &maps).await?;
    if !existing.is_empty() && task.full_load.target_table_prep_mode == TargetTablePrepMode::Fail {
        return Err(EngineError::TablesInTheWay { tables: existing });
    }
    let (setup, holder, w) =
        setup_cdc(task, endpoints, source, source_info, control_client, true).await?;
    warnings.extend(w);
    let holder = holder.ok_or_else(|| {
        EngineError::Pg(PgError::Protocol {
            side: Side::Source,
            message: "the replication slot exported no snapshot".to_owned(),
        })
    })?;
    Ok((holder, Some(setup)))
}

/// Dumps the schema under the load's snapshot and plans its steps, rendered for the
/// target (settings it does not know dropped, the task's rules applied). Returns the plan
/// and the archive's bytes, stored with the task.
#[allow(clippy::too_many_arguments)]
async fn dump_schema(
    task: &Task,
    tools: &PgTools,
    endpoints: &Endpoints,
    snapshot: &str,
    reader: &PgClient,
    control_client: &PgClient,
    (selected, maps, kept_existing): (
        &plan::Selected,
        &HashMap<u32, pgferry_config::TableMap>,
        &HashSet<u32>,
    ),
    (all_oids, sizes): (&HashSet<u32>, &HashMap<u32, i64>),
) -> Result<(schema::SchemaPlan, Vec<u8>)> {
    let archive = tempfile::NamedTempFile::new().map_err(|e| PgError::Io {
        context: "creating a file for the schema dump".to_owned(),
        source: e,
    })?;
    tools
        .dump_schema(&endpoints.source, Some(snapshot), archive.path())
        .await?;
    let selected_oids: HashSet<u32> = selected
        .tables
        .iter()
        .chain(&selected.parents)
        .map(|t| t.oid)
        .collect();
    let schema_plan = schema::plan_schema(
        tools,
        archive.path(),
        reader,
        &task.selection,
        all_oids,
        &selected_oids,
        kept_existing,
        sizes,
        &RenderOptions {
            keep_owners: task.full_load.keep_owners,
            keep_privileges: task.full_load.keep_privileges,
        },
    )
    .await?;
    let mut schema_plan = schema_plan;
    // A pg_dump newer than the target writes settings the target does not know.
    let known: HashSet<String> = control_client
        .query(
            "reading the target's settings",
            "SELECT name FROM pg_settings",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0).to_ascii_lowercase())
        .collect();
    schema_plan.preamble = pgferry_pg::dump::drop_unknown_settings(&schema_plan.preamble, &known);
    for step in &mut schema_plan.steps {
        step.sql = pgferry_pg::dump::drop_unknown_settings(&step.sql, &known);
    }
    transform::apply_to_schema(
        &mut schema_plan,
        &selected
            .tables
            .iter()
            .chain(&selected.parents)
            .collect::<Vec<_>>(),
        maps,
        kept_existing,
    );
    let archive_bytes = std::fs::read(archive.path()).map_err(|e| PgError::Io {
        context: "reading the schema dump".to_owned(),
        source: e,
    })?;

    Ok((schema_plan, archive_bytes))
}

/// The selected tables' target names that already exist on the target.
async fn in_the_way(
    target: &PgClient,
    selected: &plan::Selected,
    maps: &HashMap<u32, pgferry_config::TableMap>,
) -> Result<Vec<QualifiedName>> {
    let names: Vec<QualifiedName> = selected
        .tables
        .iter()
        .chain(&selected.parents)
        .map(|t| transform::target_of(maps, t))
        .collect();
    Ok(catalog::existing_relations(target, &names).await?)
}

/// The tables a CDC-only task streams into that the target lacks, by their target names
/// (the task's rules applied): the stream needs every one of them. Partitions count as
/// their partitioned table.
pub(crate) async fn missing_for_cdc(
    target: &PgClient,
    task: &Task,
    tables: &[catalog::Table],
    parents: &[catalog::Table],
) -> Result<Vec<QualifiedName>> {
    let tables: Vec<&catalog::Table> = tables
        .iter()
        .filter(|t| t.partition_root.is_none())
        .chain(parents)
        .collect();
    let maps = transform::table_maps(&task.mapping, tables.iter().copied())?;
    let names: Vec<QualifiedName> = tables
        .iter()
        .map(|t| transform::target_of(&maps, t))
        .collect();
    let present = catalog::existing_relations(target, &names).await?;
    Ok(names.into_iter().filter(|n| !present.contains(n)).collect())
}

/// The task's row, before what its kind of plan adds: no schema, nothing in the way, and
/// the phase a plan starts in.
fn new_task<'a>(task: &'a Task, endpoints: &Endpoints) -> control::NewTask<'a> {
    control::NewTask {
        name: &task.name,
        migration_type: task.migration_type.as_str(),
        settings: task.settings_json(),
        source: endpoints.source.describe(),
        target: endpoints.target.describe(),
        schema_archive: None,
        schema_preamble: None,
        existing_tables: serde_json::json!([]),
        phase: control::Phase::Planned,
    }
}
