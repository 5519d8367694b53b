//! Reverse streaming: after a cutover the application writes to the target, and those
//! writes stream back to the source, so that `pgferry rollback` loses none of them.
//!
//! It is the forward stream's code on the other route ([`Route::reverse`]): the target
//! publishes, the source applies. What lives where:
//! * on the target: a publication (`pgferry_<task>`, the task's streamed tables under
//!   their target names) and a slot (`pgferry_<task>_reverse`);
//! * on the source: a `pgferry` control schema holding the reverse stream's state. Its
//!   checkpoint commits there in the same transaction as the rows, as the forward one does
//!   on the target; the task's row there has `migration_type = 'reverse'`.
//!
//! The application's roles stay fenced on the source: the applier's session turns the
//! database's read-only default off for itself only.
//!
//! Set up once, at the cutover's open step, after the forward stream stopped and before
//! the target takes any write ([`prepare`]). What a crash leaves:
//! * before the setup is stored on the source: at most a publication and a slot nobody
//!   wrote through yet; the rerun drops that slot and makes it again;
//! * after it: the stored setup, which is never made again (the target may take writes
//!   from then on, and a new slot would miss them).
//!
//! [`teardown`] (rollback's end, `pgferry finish`) drops the slot and the publication,
//! restores replica identities it changed on the target, and drops the source's control
//! schema. Each part is safe to repeat.

pub mod rules;

use std::collections::HashSet;

use pgferry_config::{NoKeyTables, Task};
use pgferry_pg::catalog::ServerInfo;
use pgferry_pg::replication::ReplicationClient;
use pgferry_pg::{PgClient, PgError, QualifiedName, Side, catalog};
use serde::Serialize;

use crate::cdc::source as publishing;
use crate::control::{self, CdcSetup, Level, Phase};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::plan;
use crate::route::Route;

/// The reverse stream's slot name on the target: apart from the forward slot's, since two
/// databases of one server share slot names.
pub fn slot_name(task: &str) -> String {
    publishing::default_name(&format!("{task}_reverse"))
}

/// The task as the reverse stream runs it: the reverse rules, its own slot, tables
/// without a key published with their whole row (as the forward stream needed them), and
/// no columns added to the source.
pub async fn reversed_task(task: &Task, target_control: &PgClient) -> Result<Task> {
    let tables = control::stored_tables(target_control, &task.name).await?;
    let excluded: HashSet<QualifiedName> = control::excluded_tables(target_control, &task.name)
        .await?
        .into_iter()
        .collect();
    let rules = rules::reverse(&task.mapping, &tables, |t| {
        !excluded.contains(&t.source) && !excluded.contains(&t.relation)
    })
    .map_err(|problem| refused(task, problem))?;
    let mut reversed = task.clone();
    reversed.selection = rules.selection;
    reversed.mapping = rules.mapping;
    // The source takes the application's schema changes back only when the task carries
    // DDL (then through the target's own capture: [`prepare`]).
    reversed.cdc.add_new_columns = task.cdc.ddl;
    reversed.cdc.publication = None;
    reversed.cdc.slot_name = Some(slot_name(&task.name));
    reversed.cdc.no_key_tables = NoKeyTables::ReplicaIdentityFull;
    Ok(reversed)
}

fn refused(task: &Task, problem: String) -> EngineError {
    EngineError::CutoverRefused {
        what: "cutover",
        task: task.name.clone(),
        problems: vec![format!(
            "{problem}. Set cutover.reverse = false to cut over without a way back"
        )],
    }
}

/// A session on the source for the reverse stream's control schema, writable through the
/// fence; `None` when the source has no reverse stream set up.
pub async fn source_control(endpoints: &Endpoints, task: &str) -> Result<Option<PgClient>> {
    let client = pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry reverse").await?;
    if control::find_task(&client, task).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(client))
}

/// Waits (up to 30 s) for a run that holds the task on the target but does not stream
/// back yet: right after a cutover it is turning round. Returns whether the reverse stream
/// runs.
pub async fn wait_for_run(
    target_control: &PgClient,
    source_control: &PgClient,
    task: &str,
) -> Result<bool> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if control::is_running(source_control, task).await? {
            return Ok(true);
        }
        if !control::is_running(target_control, task).await?
            || std::time::Instant::now() >= deadline
        {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// What the setup made, for the cutover's report.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    pub slot: String,
    pub publication: String,
    pub start_lsn: String,
}

/// Sets the reverse stream up: the control schema on the source, the publication and the
/// slot on the target, and the stream's starting point stored on the source. Does nothing
/// once that is stored.
pub async fn prepare(
    task: &Task,
    endpoints: &Endpoints,
    target_control: &PgClient,
) -> Result<Prepared> {
    let mut source =
        pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry reverse").await?;
    control::ensure_schema(&mut source).await.map_err(|e| {
        privilege(
            e,
            "CREATE on the source database (for the reverse stream's `pgferry` schema)",
        )
    })?;
    if control::find_task(&source, &task.name).await?.is_some()
        && let Some(state) = control::cdc_state(&source, &task.name).await?
    {
        return Ok(Prepared {
            start_lsn: control::checkpoint(&source, &task.name).await?.to_string(),
            slot: state.slot,
            publication: state.publication,
        });
    }
    let reversed = reversed_task(task, target_control).await?;
    let forward_binary = control::cdc_state(target_control, &task.name)
        .await?
        .is_some_and(|s| s.binary);
    let target = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry reverse").await?;
    let live = catalog::list_tables(&target).await?;
    let selected = plan::select_tables(&live, &reversed.selection);
    let logged: Vec<catalog::Table> = selected
        .tables
        .into_iter()
        .filter(|t| !t.unlogged)
        .collect();
    let keyless: Vec<&catalog::Table> = logged
        .iter()
        .filter(|t| publishing::lacks_identity(t))
        .collect();
    // The task row and the identity changes first, so that a crash after any change
    // leaves its record (and `pgferry finish` undoes it).
    store_task(&mut source, task, endpoints, &keyless).await?;
    for t in &keyless {
        target
            .batch(
                &format!("setting REPLICA IDENTITY FULL on {}", t.name),
                &format!("ALTER TABLE {} REPLICA IDENTITY FULL", t.name.quoted()),
            )
            .await?;
    }
    let (publication, created) =
        publishing::ensure_publication(&target, &reversed, &logged, &selected.parents, true)
            .await?;
    if task.cdc.ddl
        && let crate::cdc::capture::Installed::Refused(w) =
            crate::cdc::capture::install(&target, &task.name, &publication).await?
    {
        control::warn(target_control, &task.name, "reverse", &w).await?;
    }
    let slot = slot_name(&task.name);
    publishing::drop_slot(&target, &slot).await?;
    let mut repl =
        ReplicationClient::connect(Side::Target, &endpoints.target, "pgferry reverse slot").await?;
    let made = repl.create_slot(&slot, false).await?;
    let setup = CdcSetup {
        slot: slot.clone(),
        publication: publication.clone(),
        publication_created: created,
        consistent_point: made.consistent_point,
        excluded: Vec::new(),
        unlogged: Vec::new(),
        // Binary tuple data where the forward stream used it (every column can travel in
        // binary) and the target can send it (14 and later).
        binary: forward_binary && ServerInfo::load(&target).await?.version_num >= 140000,
    };
    store_setup(&mut source, &task.name, &setup).await?;
    Ok(Prepared {
        slot,
        publication,
        start_lsn: made.consistent_point.to_string(),
    })
}

fn store_err(e: tokio_postgres::Error) -> EngineError {
    EngineError::Pg(PgError::query(
        Side::Source,
        "storing the reverse stream",
        e,
    ))
}

/// Stores the reverse task on the source with the replica identities about to change, in
/// one transaction; a rerun finds it there.
async fn store_task(
    source: &mut PgClient,
    task: &Task,
    endpoints: &Endpoints,
    keyless: &[&catalog::Table],
) -> Result<()> {
    if control::find_task(source, &task.name).await?.is_some() {
        return Ok(());
    }
    let tx = source.raw_mut().transaction().await.map_err(store_err)?;
    let row = control::NewTask {
        name: &task.name,
        migration_type: "reverse",
        settings: serde_json::json!({ "reverse_of": endpoints.source.describe() }),
        source: endpoints.target.describe(),
        target: endpoints.source.describe(),
        schema_archive: None,
        schema_preamble: None,
        existing_tables: serde_json::json!([]),
        phase: Phase::Cdc,
    };
    control::insert_task(&tx, &row).await.map_err(store_err)?;
    for t in keyless {
        let original = t.replica_identity.to_string();
        control::record_identity_change(&tx, &task.name, &t.name, &original).await?;
    }
    tx.commit().await.map_err(store_err)
}

/// Stores where the reverse stream starts, in one transaction.
async fn store_setup(source: &mut PgClient, task: &str, setup: &CdcSetup) -> Result<()> {
    let tx = source.raw_mut().transaction().await.map_err(store_err)?;
    control::store_cdc_setup(&tx, task, setup).await?;
    control::event(
        &tx,
        task,
        Level::Info,
        "reverse",
        &format!(
            "reverse stream starts at {} (slot {}, publication {} on the target)",
            setup.consistent_point, setup.slot, setup.publication
        ),
        None,
    )
    .await?;
    tx.commit().await.map_err(store_err)
}

/// What [`teardown`] removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TornDown {
    pub slot_dropped: Option<String>,
    pub publication_dropped: Option<String>,
    pub identities_restored: Vec<String>,
    pub control_schema_dropped: bool,
}

/// Takes the reverse stream down; `keep_control` keeps the source's control schema (with
/// the reverse stream's history). Refused while a run streams in reverse.
pub async fn teardown(task: &Task, endpoints: &Endpoints, keep_control: bool) -> Result<TornDown> {
    let Some(source) = source_control(endpoints, &task.name).await? else {
        return Ok(TornDown::default());
    };
    control::lock_task(&source, &task.name, "finish").await?;
    let target = Route::reverse(endpoints)
        .connect_from("pgferry finish")
        .await?;
    let cleaned = publishing::cleanup(&target, &source, &task.name).await?;
    let mut torn = TornDown {
        slot_dropped: cleaned.slot_dropped,
        publication_dropped: cleaned.publication_dropped,
        identities_restored: cleaned.identities_restored,
        control_schema_dropped: false,
    };
    if !keep_control {
        source
            .batch(
                "dropping the source's control schema",
                "DROP SCHEMA pgferry CASCADE",
            )
            .await?;
        torn.control_schema_dropped = true;
    }
    Ok(torn)
}

/// The reverse stream's state, for `status`: read from the source's control schema.
/// `None` when the task has no reverse stream.
pub async fn status(task: &Task) -> Result<Option<control::ReverseStatus>> {
    let endpoints = Endpoints::resolve(task)?;
    let source = pgferry_pg::connect(Side::Source, &endpoints.source, "pgferry status").await?;
    control::reverse_status(&source, &task.name).await
}

fn privilege(e: EngineError, what: &str) -> EngineError {
    match &e {
        EngineError::Pg(pg) if pg.sqlstate() == Some("42501") => {
            EngineError::Pg(PgError::Prerequisite {
                side: Side::Source,
                problem: format!("the reverse stream needs {what}: {pg}"),
                fix: "GRANT CREATE ON DATABASE ... TO the source user, or set cutover.reverse = \
                  false to cut over without a way back"
                    .to_owned(),
            })
        }
        _ => e,
    }
}
