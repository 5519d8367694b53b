//! What change data capture sets up on the source, and takes down again: the publication,
//! the replication slot, and replica identities for tables without a key.
//!
//! The source is production, so nothing here may break it. PostgreSQL rejects `UPDATE` and
//! `DELETE` on a published table that has no replica identity, so tables without a primary
//! key are checked *before* the publication exists, and the task's `no_key_tables` policy
//! decides: refuse (the default), set `REPLICA IDENTITY FULL` (recorded, undone at
//! cleanup), or leave them out. The publication is created before the slot, so that every
//! change after the slot's starting point is decoded with the publication in place.

use pgferry_config::{NoKeyTables, Task};
use pgferry_pg::catalog::Table;
use pgferry_pg::{PgClient, PgError, QualifiedName, Side, quote_ident};

use crate::control;
use crate::error::{EngineError, Result};

/// The default slot and publication name of a task: `pgferry_<task>`, folded to what
/// PostgreSQL accepts in a slot name.
pub fn default_name(task: &str) -> String {
    let mut name: String = format!("pgferry_{task}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(63);
    name
}

/// Whether updates and deletes of `table` would be rejected once it is published.
pub fn lacks_identity(table: &Table) -> bool {
    match table.replica_identity {
        'n' => true,
        'd' => !table.has_primary_key,
        _ => false,
    }
}

/// What the no-key policy decided.
#[derive(Debug, Default)]
pub struct NoKeyOutcome {
    /// Tables left out of the migration.
    pub excluded: Vec<QualifiedName>,
    /// Tables now `REPLICA IDENTITY FULL`.
    pub changed: Vec<QualifiedName>,
}

/// Applies the task's `no_key_tables` policy to the selected tables with rows. Runs before
/// the publication is created.
pub async fn handle_tables_without_key(
    source: &PgClient,
    control_client: &PgClient,
    task: &Task,
    tables: &[Table],
) -> Result<NoKeyOutcome> {
    let no_key: Vec<&Table> = tables.iter().filter(|t| lacks_identity(t)).collect();
    let mut outcome = NoKeyOutcome::default();
    if no_key.is_empty() {
        return Ok(outcome);
    }
    let names: Vec<String> = no_key.iter().map(|t| t.name.to_string()).collect();
    match task.cdc.no_key_tables {
        NoKeyTables::Fail => Err(EngineError::Pg(PgError::Prerequisite {
            side: source.side(),
            problem: format!(
                "{} selected table(s) have no primary key and no replica identity: {}. Once \
                 published, PostgreSQL would reject UPDATE and DELETE on them on the source",
                names.len(),
                names.join(", ")
            ),
            fix: format!(
                "add a primary key, or run {} (then updates and deletes log whole rows), or \
                 set [cdc] no_key_tables = \"replica-identity-full\" to let pgferry do it (and \
                 undo it at cleanup), or \"exclude\" to leave these tables out",
                no_key
                    .iter()
                    .map(|t| format!("ALTER TABLE {} REPLICA IDENTITY FULL;", t.name.quoted()))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        })),
        NoKeyTables::Exclude => {
            for t in &no_key {
                let message = format!(
                    "{} has no primary key and no replica identity; it is left out of the \
                     migration (no_key_tables = \"exclude\")",
                    t.name
                );
                control::warn(control_client, &task.name, "cdc", &message).await?;
                outcome.excluded.push(t.name.clone());
            }
            Ok(outcome)
        }
        NoKeyTables::ReplicaIdentityFull => {
            for t in &no_key {
                control::record_identity_change(
                    control_client.raw(),
                    &task.name,
                    &t.name,
                    &t.replica_identity.to_string(),
                )
                .await?;
                source
                    .batch(
                        &format!("setting REPLICA IDENTITY FULL on {}", t.name),
                        &format!("ALTER TABLE {} REPLICA IDENTITY FULL", t.name.quoted()),
                    )
                    .await
                    .map_err(|e| ownership_hint(e, source.side(), &t.name))?;
                let message = format!(
                    "set REPLICA IDENTITY FULL on {} (it has no primary key); `pgferry cleanup` \
                     restores it",
                    t.name
                );
                control::warn(control_client, &task.name, "cdc", &message).await?;
                outcome.changed.push(t.name.clone());
            }
            Ok(outcome)
        }
    }
}

fn ownership_hint(e: PgError, side: Side, table: &QualifiedName) -> EngineError {
    if e.sqlstate() == Some("42501") {
        EngineError::Pg(PgError::Prerequisite {
            side,
            problem: format!("the source user does not own {table}: {e}"),
            fix: format!(
                "run ALTER TABLE {} REPLICA IDENTITY FULL as its owner, or add a primary key",
                table.quoted()
            ),
        })
    } else {
        EngineError::Pg(e)
    }
}

/// The relations a publication lists for the selected tables: a partitioned table stands
/// for its partitions (published through the root), other tables are listed with `ONLY`
/// so inheritance children are published only when selected themselves. Before 13 a
/// publication can hold no partitioned table (`via_root` false): the partitions are
/// listed themselves, and their changes arrive under their own names
/// (`tables::resolve` finds their root's rules).
fn publication_list(tables: &[Table], parents: &[Table], via_root: bool) -> Vec<String> {
    let mut list: Vec<String> = if via_root {
        parents
            .iter()
            .filter(|p| p.partition_root.is_none())
            .map(|p| p.name.quoted())
            .collect()
    } else {
        Vec::new()
    };
    list.extend(
        tables
            .iter()
            .filter(|t| !via_root || t.partition_root.is_none())
            .map(|t| format!("ONLY {}", t.name.quoted())),
    );
    list
}

/// Creates the task's publication unless one is named in the task or already exists.
/// Returns its name and whether pgferry created it (and so drops it at cleanup).
pub async fn ensure_publication(
    source: &PgClient,
    task: &Task,
    tables: &[Table],
    parents: &[Table],
    via_root: bool,
) -> Result<(String, bool)> {
    if let Some(name) = &task.cdc.publication {
        let exists = source
            .query_one(
                "looking for the publication",
                "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
                &[name],
            )
            .await?
            .get::<_, bool>(0);
        if !exists {
            return Err(EngineError::Pg(PgError::Prerequisite {
                side: source.side(),
                problem: format!("the publication \"{name}\" named in the task does not exist"),
                fix: "create it (CREATE PUBLICATION ... FOR TABLE ... WITH \
                      (publish_via_partition_root = true)) or remove cdc.publication"
                    .to_owned(),
            }));
        }
        return Ok((name.clone(), false));
    }
    let name = default_name(&task.name);
    let exists = source
        .query_one(
            "looking for the publication",
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
            &[&name],
        )
        .await?
        .get::<_, bool>(0);
    if exists {
        return Ok((name, true));
    }
    let list = publication_list(tables, parents, via_root);
    if list.is_empty() {
        return Err(EngineError::NothingSelected);
    }
    let with = if via_root {
        " WITH (publish_via_partition_root = true)"
    } else {
        ""
    };
    source
        .batch(
            "creating the publication",
            &format!(
                "CREATE PUBLICATION {} FOR TABLE {}{with}",
                quote_ident(&name),
                list.join(", ")
            ),
        )
        .await
        .map_err(|e| {
            if e.sqlstate() == Some("42501") {
                EngineError::Pg(PgError::Prerequisite {
                    side: source.side(),
                    problem: format!(
                        "the source user may not create the publication: {e}. Adding a \
                         table to a publication takes ownership of the table"
                    ),
                    fix: format!(
                        "as the tables' owner (or a superuser) run: CREATE PUBLICATION {} \
                         FOR TABLE {}{with}; then set [cdc] publication = \"{name}\" in the \
                         task",
                        quote_ident(&name),
                        list.join(", ")
                    ),
                })
            } else {
                EngineError::Pg(e)
            }
        })?;
    Ok((name, true))
}

/// A slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub active_pid: Option<i32>,
    /// WAL the slot holds back on the source.
    pub retained_bytes: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost` (13 and later; `None` before).
    pub wal_status: Option<String>,
    /// WAL the source can still write before the slot is at risk of invalidation
    /// (`safe_wal_size`, 13 and later; `None` without `max_slot_wal_keep_size`).
    pub safe_wal_bytes: Option<i64>,
}

impl SlotInfo {
    /// The share of `max_slot_wal_keep_size` the slot uses: at 1 the source may invalidate
    /// it at its next checkpoint (a lost slot counts 1). 0 when the source sets no limit
    /// (or is older than 13): nothing can invalidate the slot. `None` when the slot holds
    /// no WAL position to measure.
    pub fn keep_size_used(&self) -> Option<f64> {
        let retained = self.retained_bytes?;
        if self.wal_status.as_deref() == Some("lost") {
            return Some(1.0);
        }
        let Some(safe) = self.safe_wal_bytes else {
            return Some(0.0);
        };
        let budget = retained.max(0) + safe.max(0);
        Some(if budget == 0 {
            1.0
        } else {
            retained.max(0) as f64 / budget as f64
        })
    }
}

pub async fn slot_info(source: &PgClient, slot: &str) -> Result<Option<SlotInfo>> {
    let row = source
        .query_opt(
            "reading the replication slot",
            "SELECT active_pid,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
                    to_jsonb(s) ->> 'wal_status', (to_jsonb(s) ->> 'safe_wal_size')::bigint
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| SlotInfo {
        active_pid: r.get(0),
        retained_bytes: r.get(1),
        wal_status: r.get(2),
        safe_wal_bytes: r.get(3),
    }))
}

/// Drops `slot` if it exists, first ending a backend that still holds it. Returns whether
/// there was one.
pub async fn drop_slot(source: &PgClient, slot: &str) -> Result<bool> {
    if slot_info(source, slot).await?.is_none() {
        return Ok(false);
    }
    free_slot(source, slot).await?;
    source
        .execute(
            "dropping the replication slot",
            "SELECT pg_drop_replication_slot($1)",
            &[&slot],
        )
        .await?;
    Ok(true)
}

/// Ends a backend still attached to the slot (a pgferry process that died without the
/// server noticing yet), instead of waiting for `wal_sender_timeout`. The task lock
/// guarantees no live pgferry process runs this task.
pub async fn free_slot(source: &PgClient, slot: &str) -> Result<()> {
    if let Some(SlotInfo {
        active_pid: Some(pid),
        ..
    }) = slot_info(source, slot).await?
    {
        tracing::info!(slot, pid, "ending the backend that still holds the slot");
        source
            .execute(
                "freeing the replication slot",
                "SELECT pg_terminate_backend($1)",
                &[&pid],
            )
            .await?;
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if slot_info(source, slot)
                .await?
                .is_none_or(|s| s.active_pid.is_none())
            {
                break;
            }
        }
    }
    Ok(())
}

/// What cleanup removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cleaned {
    pub slot_dropped: Option<String>,
    pub publication_dropped: Option<String>,
    pub identities_restored: Vec<String>,
    /// Whether the DDL capture (`pgferry_capture`, its event triggers) was removed: the
    /// last task using it is gone.
    pub capture_removed: bool,
}

/// Drops the slot and the publication pgferry created, and restores replica identities it
/// changed. Safe to run more than once.
pub async fn cleanup(source: &PgClient, control_client: &PgClient, task: &str) -> Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    if let Some(objects) = control::stream_objects(control_client, task).await? {
        let (slot, publication) = (objects.slot, objects.publication);
        if drop_slot(source, &slot).await? {
            cleaned.slot_dropped = Some(slot);
        }
        if objects.publication_created {
            source
                .batch(
                    "dropping the publication",
                    &format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&publication)),
                )
                .await?;
            cleaned.publication_dropped = Some(publication);
        }
    }
    for (name, original) in control::identity_changes(control_client, task).await? {
        let original = match original.as_str() {
            "n" => "NOTHING",
            _ => "DEFAULT",
        };
        let exists = source
            .query_one(
                "looking for a table",
                "SELECT to_regclass($1) IS NOT NULL",
                &[&name.quoted()],
            )
            .await?
            .get::<_, bool>(0);
        if exists {
            source
                .batch(
                    &format!("restoring the replica identity of {name}"),
                    &format!("ALTER TABLE {} REPLICA IDENTITY {original}", name.quoted()),
                )
                .await?;
        }
        control::forget_identity_change(control_client, task, &name).await?;
        cleaned.identities_restored.push(name.to_string());
    }
    cleaned.capture_removed = super::capture::remove(source, task).await?;
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_slot_names() {
        assert_eq!(default_name("default"), "pgferry_default");
        assert_eq!(default_name("Inv-2026"), "pgferry_inv_2026");
        assert!(pgferry_pg::replication::valid_slot_name(&default_name(
            &"x".repeat(80)
        )));
    }

    #[test]
    fn the_share_of_max_slot_wal_keep_size_used() {
        let info = |retained, safe| SlotInfo {
            active_pid: None,
            retained_bytes: retained,
            wal_status: None,
            safe_wal_bytes: safe,
        };
        assert_eq!(info(Some(300), Some(100)).keep_size_used(), Some(0.75));
        assert_eq!(info(Some(0), Some(0)).keep_size_used(), Some(1.0));
        // Past the limit PostgreSQL reports a negative safe size.
        assert_eq!(info(Some(500), Some(-100)).keep_size_used(), Some(1.0));
        assert_eq!(
            info(Some(500), None).keep_size_used(),
            Some(0.0),
            "no limit set"
        );
        assert_eq!(info(None, None).keep_size_used(), None);
    }
}
