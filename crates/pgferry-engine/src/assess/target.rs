//! Checks of the target: writable, what the task's user may create there, and the tables
//! already in the way.

use pgferry_config::TargetTablePrepMode;
use pgferry_pg::{QualifiedName, catalog, quote_ident};

use super::{Ctx, Severity};
use crate::error::Result;
use crate::transform;

/// The target is a primary, and the user may create schemas in the database and tables in
/// the schemas that exist already.
pub(super) async fn privileges(ctx: &mut Ctx<'_>) -> Result<()> {
    let info = ctx.target_info;
    if info.in_recovery {
        ctx.push(
            "target.standby",
            Severity::Blocker,
            None,
            "the target is a read-only standby",
            "point the target at the primary (writer) endpoint",
        );
    }
    if info.major() < ctx.source_info.major() {
        ctx.push(
            "target.version",
            Severity::Warning,
            None,
            format!(
                "the target runs PostgreSQL {} and the source {}: objects using newer \
                 syntax may fail to restore",
                info.version, ctx.source_info.version
            ),
            "use a target at least as new as the source",
        );
    }
    let row = ctx
        .target
        .query_one(
            "checking target privileges",
            "SELECT has_database_privilege(current_database(), 'CREATE'),
                    array(SELECT n.nspname::text FROM pg_namespace n
                          WHERE n.nspname = ANY($1) AND NOT has_schema_privilege(n.oid, 'CREATE')
                          ORDER BY 1)",
            &[&ctx.schemas],
        )
        .await?;
    let can_create_schemas: bool = row.get(0);
    let locked_schemas: Vec<String> = row.get(1);
    let user = quote_ident(&info.user);
    if !can_create_schemas {
        ctx.push(
            "target.create",
            Severity::Blocker,
            None,
            format!(
                "user \"{}\" may not create schemas in database \"{}\"; pgferry creates its \
                 control schema and the source's schemas there",
                info.user, info.database
            ),
            format!(
                "GRANT CREATE ON DATABASE {} TO {user};",
                quote_ident(&info.database)
            ),
        );
    }
    if !locked_schemas.is_empty() {
        ctx.push(
            "target.schema_create",
            Severity::Blocker,
            None,
            format!(
                "user \"{}\" may not create tables in schema(s) {}",
                info.user,
                locked_schemas.join(", ")
            ),
            locked_schemas
                .iter()
                .map(|s| format!("GRANT CREATE ON SCHEMA {} TO {user};", quote_ident(s)))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    Ok(())
}

/// Selected tables that already exist on the target, judged against
/// `target_table_prep_mode`.
pub(super) async fn tables_in_the_way(ctx: &mut Ctx<'_>) -> Result<()> {
    if !ctx.loads() {
        return tables_missing(ctx).await;
    }
    let maps = match transform::table_maps(&ctx.task.mapping, ctx.tables.iter().chain(&ctx.parents))
    {
        Ok(maps) => maps,
        Err(e) => {
            mapping_problem(ctx, &e);
            return Ok(());
        }
    };
    let names: Vec<QualifiedName> = ctx
        .tables
        .iter()
        .chain(&ctx.parents)
        .map(|t| transform::target_of(&maps, t))
        .collect();
    let existing = catalog::existing_relations(ctx.target, &names).await?;
    let mode = ctx.task.full_load.target_table_prep_mode;
    for name in existing {
        let (severity, message, fix) = match mode {
            TargetTablePrepMode::Fail => (
                Severity::Blocker,
                "already exists on the target, and target_table_prep_mode = fail refuses \
                 to start",
                format!(
                    "DROP TABLE {} on the target, or set target_table_prep_mode to \
                     drop_and_create, truncate or do_nothing",
                    name.quoted()
                ),
            ),
            TargetTablePrepMode::DropAndCreate => (
                Severity::Warning,
                "already exists on the target and will be dropped (with CASCADE) and \
                 created again",
                "nothing, if that is meant; otherwise set target_table_prep_mode = fail".to_owned(),
            ),
            TargetTablePrepMode::Truncate => (
                Severity::Warning,
                "already exists on the target and will be emptied before the load",
                "nothing, if that is meant; otherwise set target_table_prep_mode = fail".to_owned(),
            ),
            TargetTablePrepMode::DoNothing => (
                Severity::Warning,
                "already exists on the target; its rows stay and the load adds the \
                 source's, so a row on both sides makes the load fail",
                "empty it first, or set target_table_prep_mode = truncate".to_owned(),
            ),
        };
        ctx.push(
            "target.table_exists",
            severity,
            Some(name.to_string()),
            format!("{name} {message}"),
            fix,
        );
    }
    Ok(())
}

/// A CDC-only task streams into tables that must exist on the target already.
async fn tables_missing(ctx: &mut Ctx<'_>) -> Result<()> {
    let missing = match crate::load::planning::missing_for_cdc(
        ctx.target,
        ctx.task,
        &ctx.tables,
        &ctx.parents,
    )
    .await
    {
        Ok(missing) => missing,
        Err(e @ crate::error::EngineError::Pg(_)) => return Err(e),
        Err(e) => {
            mapping_problem(ctx, &e);
            return Ok(());
        }
    };
    for name in missing {
        ctx.push(
            "target.table_missing",
            Severity::Blocker,
            Some(name.to_string()),
            format!(
                "{name} does not exist on the target; migration_type = \"cdc\" streams \
                 changes into existing tables"
            ),
            "create and load it first, or use migration_type = \"full-load-and-cdc\", which \
             does both without a gap",
        );
    }
    Ok(())
}

/// Rules that cannot be carried out on the source's tables block the task.
fn mapping_problem(ctx: &mut Ctx<'_>, e: &dyn std::fmt::Display) {
    ctx.push(
        "task.mapping",
        Severity::Blocker,
        None,
        e.to_string(),
        "correct the transformation rules; `pgferry config explain` shows them",
    );
}
