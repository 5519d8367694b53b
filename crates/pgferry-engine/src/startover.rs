//! `pgferry run --start-over`: CDC again from a new slot, after the old one was lost.
//!
//! A slot the source invalidated (`max_slot_wal_keep_size`), or one dropped by `cleanup` or
//! by hand, took the changes since the task's checkpoint with it. The target holds every
//! table as of that checkpoint, plus nothing since. Starting over:
//!
//! 1. records that a start-over began (`cdc_state.start_over_since`, committed
//!    synchronously) before anything changes on the source;
//! 2. replaces the slot (same name unless the task file changed it) and creates the
//!    publication again if it is gone; the new slot exports its snapshot;
//! 3. compares every table, source as of that snapshot, target as it is ([`validate`]'s
//!    count and checksum): a table that matches is provably what the new snapshot holds
//!    and is kept;
//! 4. in one target transaction, empties the others (and every table whose foreign key
//!    points at one, which `TRUNCATE` needs), marks their chunks pending, points the CDC
//!    state at the new slot's consistent point, clears the flag and moves the task back to
//!    `loading`. The run goes on from there as any run does: the pending chunks are copied
//!    from the new snapshot, sequences are set, and streaming starts at the new slot's
//!    consistent point.
//!
//! What a crash leaves: before step 4 commits, the flag; a plain `run` refuses to stream
//! (the slot on the source may already be the new one, which the old checkpoint does not
//! fit) and `--start-over` starts again, replacing the slot once more. After it, a task in
//! `loading` whose snapshot is gone, which a plain `run` resumes as after any source
//! restart. Indexes and constraints stay on the target throughout: a table copied again
//! fills them as it goes, which is slower than the first load but keeps every other table
//! usable.

use std::collections::HashSet;

use pgferry_config::Task;
use pgferry_pg::catalog::ServerInfo;
use pgferry_pg::{PgClient, PgError, QualifiedName, Side};

use crate::control::{self, Level, Phase};
use crate::control::{CdcSetup, StoredTable};
use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::planning;
use crate::load::snapshot::SnapshotHolder;
use crate::validate::{self, Outcome};

/// Starts CDC over from a new slot: returns the new slot's snapshot, which the load that
/// follows must read, and a note for the user.
pub(crate) async fn start_over(
    task: &Task,
    endpoints: &Endpoints,
    source: &PgClient,
    source_info: &ServerInfo,
    control_client: &mut PgClient,
) -> Result<(SnapshotHolder, String)> {
    check_can_start_over(task, endpoints, control_client).await?;
    let old_slot = control::cdc_state(control_client, &task.name)
        .await?
        .map(|s| s.slot)
        .unwrap_or_default();
    mark_started(control_client, &task.name).await?;

    crate::cdc::source::drop_slot(source, &old_slot).await?;
    let (setup, holder, _) =
        planning::setup_cdc(task, endpoints, source, source_info, control_client, true).await?;
    let holder = holder.ok_or_else(|| {
        EngineError::Pg(PgError::Protocol {
            side: Side::Source,
            message: "the new replication slot exported no snapshot".to_owned(),
        })
    })?;

    let checks = validate::compare(task, endpoints, holder.name(), task.full_load.jobs).await?;
    let kept: HashSet<QualifiedName> = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Match)
        .map(|c| c.target_name.clone())
        .collect();
    let tables = control::stored_tables(control_client, &task.name).await?;
    let differing: Vec<QualifiedName> = tables
        .iter()
        .filter(|t| !kept.contains(&t.target))
        .map(|t| t.target.clone())
        .collect();
    let emptied = with_referencing(control_client, &task.name, &tables, differing).await?;
    let reset: Vec<&StoredTable> = tables
        .iter()
        .filter(|t| emptied.contains(&t.target))
        .collect();
    check_own_tables(control_client, &reset).await?;
    let note = format!(
        "started over from the new slot {} at {}: {} of {} table(s) match the new snapshot \
         and are kept, {} are copied again",
        setup.slot,
        setup.consistent_point,
        tables.len() - reset.len(),
        tables.len(),
        reset.len()
    );
    commit(control_client, &task.name, &setup, &reset, &note).await?;
    Ok((holder, note))
}

/// Refuses unless the task is streaming-phase CDC with a slot that cannot stream, or a
/// start-over that did not finish.
async fn check_can_start_over(
    task: &Task,
    endpoints: &Endpoints,
    control_client: &PgClient,
) -> Result<()> {
    let refuse = |problem: String| EngineError::CannotStartOver {
        task: task.name.clone(),
        problem,
    };
    let row = control::load_task(control_client, &task.name)
        .await?
        .ok_or_else(|| EngineError::UnknownTask {
            task: task.name.clone(),
        })?;
    if !task.migration_type.needs_full_load() {
        return Err(refuse(
            "it is a CDC-only task: pgferry did not load its tables, so it cannot load them \
             again"
                .to_owned(),
        ));
    }
    if row.phase != Phase::Cdc {
        return Err(refuse(format!(
            "it is in phase {}, not streaming; a plain `pgferry run` resumes it",
            row.phase.as_str()
        )));
    }
    let route = crate::route::Route::forward(endpoints);
    match crate::cdc::check_slot(task, &route, control_client).await {
        Ok(()) => Err(refuse(
            "its replication slot is healthy: a plain `pgferry run` resumes from the \
             checkpoint and loses nothing"
                .to_owned(),
        )),
        Err(EngineError::CannotStream { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Records, durably, that the slot on the source is about to be replaced.
async fn mark_started(control_client: &mut PgClient, task: &str) -> Result<()> {
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "starting over", e));
    let tx = control_client.raw_mut().transaction().await.map_err(err)?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(err)?;
    control::mark_start_over(&tx, task).await?;
    control::event(
        &tx,
        task,
        Level::Info,
        "start-over",
        "start-over begun: the task's slot is replaced and its tables compared",
        None,
    )
    .await?;
    tx.commit().await.map_err(err)
}

/// `differing` and every target table whose foreign key points at one of them, directly
/// or not: `TRUNCATE` refuses to empty a referenced table without its referencing ones.
/// Partitioned tables count by their leaves. A referencing table outside the task cannot
/// be emptied by pgferry: that is an error that names it.
async fn with_referencing(
    control_client: &PgClient,
    task: &str,
    tables: &[StoredTable],
    differing: Vec<QualifiedName>,
) -> Result<HashSet<QualifiedName>> {
    let edges: Vec<(QualifiedName, QualifiedName)> = control_client
        .query(
            "reading foreign keys on the target",
            "SELECT DISTINCT an.nspname::text, ac.relname::text, bn.nspname::text,
                    bc.relname::text
             FROM pg_constraint k
             CROSS JOIN LATERAL pg_partition_tree(k.conrelid) a
             CROSS JOIN LATERAL pg_partition_tree(k.confrelid) b
             JOIN pg_class ac ON ac.oid = a.relid JOIN pg_namespace an ON an.oid = ac.relnamespace
             JOIN pg_class bc ON bc.oid = b.relid JOIN pg_namespace bn ON bn.oid = bc.relnamespace
             WHERE k.contype = 'f' AND a.isleaf AND b.isleaf",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3)),
            )
        })
        .collect();
    let ours: HashSet<&QualifiedName> = tables.iter().map(|t| &t.target).collect();
    let mut emptied: HashSet<QualifiedName> = differing.into_iter().collect();
    loop {
        let mut added = false;
        for (referencing, referenced) in &edges {
            if !emptied.contains(referenced) || emptied.contains(referencing) {
                continue;
            }
            if !ours.contains(referencing) {
                return Err(EngineError::CannotStartOver {
                    task: task.to_owned(),
                    problem: format!(
                        "{referenced} must be emptied and copied again, and {referencing}, \
                         which is not part of the task, has a foreign key that points at it"
                    ),
                });
            }
            emptied.insert(referencing.clone());
            added = true;
        }
        if !added {
            return Ok(emptied);
        }
    }
}

/// pgferry empties only tables it created: one that existed before the load
/// (`target_table_prep_mode = "do_nothing"`) and now differs must be emptied by its owner.
async fn check_own_tables(control_client: &PgClient, reset: &[&StoredTable]) -> Result<()> {
    for t in reset.iter().filter(|t| t.existed_before) {
        let empty: bool = control_client
            .query_one(
                "looking at a table that existed before the load",
                &format!("SELECT NOT EXISTS (SELECT FROM ONLY {})", t.target.quoted()),
                &[],
            )
            .await?
            .get(0);
        if !empty {
            return Err(EngineError::Pg(PgError::Prerequisite {
                side: Side::Target,
                problem: format!(
                    "{} existed before the load (target_table_prep_mode = \"do_nothing\") and \
                     no longer matches the source; pgferry will not empty a table it did not \
                     create",
                    t.target
                ),
                fix: format!(
                    "empty it yourself (TRUNCATE {}) and run `pgferry run --start-over` again",
                    t.target.quoted()
                ),
            }));
        }
    }
    Ok(())
}

/// Step 4: one synchronous target transaction.
async fn commit(
    control_client: &mut PgClient,
    task: &str,
    setup: &CdcSetup,
    reset: &[&StoredTable],
    note: &str,
) -> Result<()> {
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "starting over", e));
    let tx = control_client.raw_mut().transaction().await.map_err(err)?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(err)?;
    if !reset.is_empty() {
        let names: Vec<String> = reset.iter().map(|t| t.target.quoted()).collect();
        tx.batch_execute(&format!("TRUNCATE ONLY {}", names.join(", ")))
            .await
            .map_err(err)?;
        let ids: Vec<i32> = reset.iter().map(|t| t.table_id).collect();
        control::mark_pending(&tx, task, &ids).await?;
    }
    control::store_cdc_setup(&tx, task, setup).await?;
    // The load's times become the second load's.
    control::forget_load_times(&tx, task).await?;
    control::set_phase(&tx, task, Phase::Loading).await?;
    control::event(&tx, task, Level::Info, "start-over", note, None).await?;
    tx.commit().await.map_err(err)
}
