//! Creating and upgrading the control schema: versioned SQL files applied in order, each in
//! the same transaction as the version it records, under a transaction-level advisory lock
//! so two processes never migrate at once. A crash mid-upgrade leaves the old version whole.

use pgferry_pg::PgClient;

use super::{LOCK_CLASS, target_err};
use crate::error::{EngineError, Result};

/// The newest layout this build understands: one version per migration.
pub const CONTROL_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Each migration moves the layout from version N to N+1: `migrations/000N_*.sql`, never
/// edited once released (a target at version N has run the first N as they were).
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_tasks_tables_chunks_steps.sql"),
    include_str!("migrations/0002_cdc_state.sql"),
    include_str!("migrations/0003_column_maps_and_filters.sql"),
    include_str!("migrations/0004_alarms.sql"),
    include_str!("migrations/0005_start_over.sql"),
    include_str!("migrations/0006_key_split.sql"),
    include_str!("migrations/0007_chunk_snapshot_filter.sql"),
    include_str!("migrations/0008_drain.sql"),
    include_str!("migrations/0009_cutover.sql"),
    include_str!("migrations/0010_rollback.sql"),
    include_str!("migrations/0011_ddl_log.sql"),
];

/// Whether the target has a control schema at all.
pub async fn schema_exists(client: &PgClient) -> Result<bool> {
    let row = client
        .query_one(
            "looking for the pgferry schema",
            "SELECT to_regclass('pgferry.meta') IS NOT NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Creates or upgrades the control schema.
pub async fn ensure_schema(client: &mut PgClient) -> Result<()> {
    const CONTEXT: &str = "creating the pgferry control schema";
    let tx = client
        .raw_mut()
        .transaction()
        .await
        .map_err(target_err(CONTEXT))?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])
        .await
        .map_err(target_err(CONTEXT))?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS pgferry;
         COMMENT ON SCHEMA pgferry IS 'State of pgferry migrations into this database.';
         CREATE TABLE IF NOT EXISTS pgferry.meta (key text PRIMARY KEY, value text NOT NULL);",
    )
    .await
    .map_err(target_err(CONTEXT))?;
    let version: i32 = tx
        .query_opt(
            "SELECT value::int FROM pgferry.meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(target_err(CONTEXT))?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if version > CONTROL_SCHEMA_VERSION {
        return Err(EngineError::ControlSchemaTooNew {
            found: version,
            supported: CONTROL_SCHEMA_VERSION,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(migration)
            .await
            .map_err(target_err("migrating the pgferry control schema"))?;
        tx.execute(
            "INSERT INTO pgferry.meta VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&(i as i32 + 1).to_string()],
        )
        .await
        .map_err(target_err("migrating the pgferry control schema"))?;
    }
    tx.commit().await.map_err(target_err(CONTEXT))?;
    Ok(())
}
