//! Checks before anything is changed: settings, privileges and prerequisites, each failure
//! reported with its fix.

use pgferry_config::Task;
use pgferry_pg::catalog::{ServerInfo, Table};
use pgferry_pg::{PgClient, PgError, Side, quote_ident};

use crate::error::{EngineError, Result};

/// The oldest source pgferry supports: `pg_partition_root` and generated columns are 12.
pub const MIN_SOURCE_VERSION: i32 = 120000;

fn prerequisite(side: Side, problem: String, fix: String) -> EngineError {
    EngineError::Pg(PgError::Prerequisite { side, problem, fix })
}

/// Checks the source server for what the task needs.
pub fn check_source(task: &Task, info: &ServerInfo) -> Result<()> {
    if info.version_num < MIN_SOURCE_VERSION {
        return Err(prerequisite(
            Side::Source,
            format!(
                "the source runs PostgreSQL {}; pgferry needs 12 or newer",
                info.version
            ),
            "upgrade the source, or migrate it with pg_dump and pg_restore".to_owned(),
        ));
    }
    if task.migration_type.needs_cdc() {
        if info.wal_level != "logical" {
            return Err(prerequisite(
                Side::Source,
                format!(
                    "wal_level is {}, but change data capture needs wal_level = logical",
                    info.wal_level
                ),
                "run ALTER SYSTEM SET wal_level = logical and restart the server; on RDS and \
                 Aurora set rds.logical_replication = 1 in the parameter group and reboot"
                    .to_owned(),
            ));
        }
        if !info.can_replicate {
            return Err(prerequisite(
                Side::Source,
                format!(
                    "user \"{}\" lacks the REPLICATION privilege that change data capture needs",
                    info.user
                ),
                format!(
                    "ALTER ROLE {} WITH REPLICATION; on RDS and Aurora, GRANT rds_replication \
                     TO {}",
                    quote_ident(&info.user),
                    quote_ident(&info.user)
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that the source user can read every selected table, completely.
pub fn check_source_tables(info: &ServerInfo, tables: &[Table]) -> Result<()> {
    let unreadable: Vec<String> = tables
        .iter()
        .filter(|t| !t.can_select)
        .map(|t| t.name.to_string())
        .collect();
    if !unreadable.is_empty() {
        let schemas: std::collections::BTreeSet<&str> = tables
            .iter()
            .filter(|t| !t.can_select)
            .map(|t| t.name.schema.as_str())
            .collect();
        return Err(prerequisite(
            Side::Source,
            format!(
                "user \"{}\" cannot read {} selected table(s): {}",
                info.user,
                unreadable.len(),
                unreadable.join(", ")
            ),
            schemas
                .iter()
                .map(|s| {
                    format!(
                        "GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {};",
                        quote_ident(s),
                        quote_ident(&info.user)
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    Ok(())
}

/// Checks the target server: writable, and the user may create what the restore creates.
pub async fn check_target(client: &PgClient, info: &ServerInfo, schemas: &[String]) -> Result<()> {
    if info.in_recovery {
        return Err(prerequisite(
            Side::Target,
            "the target is a read-only standby".to_owned(),
            "point the target at the primary (writer) endpoint".to_owned(),
        ));
    }
    let row = client
        .query_one(
            "checking target privileges",
            "SELECT has_database_privilege(current_database(), 'CREATE'),
                    array(SELECT n.nspname::text FROM pg_namespace n
                          WHERE n.nspname = ANY($1) AND NOT has_schema_privilege(n.oid, 'CREATE')
                          ORDER BY 1)",
            &[&schemas],
        )
        .await?;
    let can_create_schemas: bool = row.get(0);
    let locked_schemas: Vec<String> = row.get(1);
    if !can_create_schemas {
        return Err(prerequisite(
            Side::Target,
            format!(
                "user \"{}\" may not create schemas in database \"{}\"; pgferry creates its \
                 control schema and the source's schemas there",
                info.user, info.database
            ),
            format!(
                "GRANT CREATE ON DATABASE {} TO {};",
                quote_ident(&info.database),
                quote_ident(&info.user)
            ),
        ));
    }
    if !locked_schemas.is_empty() {
        return Err(prerequisite(
            Side::Target,
            format!(
                "user \"{}\" may not create tables in schema(s) {}",
                info.user,
                locked_schemas.join(", ")
            ),
            locked_schemas
                .iter()
                .map(|s| {
                    format!(
                        "GRANT CREATE ON SCHEMA {} TO {};",
                        quote_ident(s),
                        quote_ident(&info.user)
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    Ok(())
}
