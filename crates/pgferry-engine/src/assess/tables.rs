//! Checks of the selected tables: keys, kinds (unlogged, temporary, partitioned,
//! generated columns) and the types the copy or the stream treat differently.

use pgferry_config::NoKeyTables;

use super::{Ctx, Severity};
use crate::cdc::source::lacks_identity;
use crate::error::Result;

/// Key types that identify a row cheaply; any other makes every applied change compare
/// a wide or unusual value.
const PLAIN_KEY_TYPES: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "uuid",
    "text",
    "character varying",
    "character",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
    "numeric",
];

/// Rows wider than this on average (on disk, TOAST included) are reported.
const WIDE_ROW: i64 = 256 << 10;

/// Tables without a key, judged against `no_key_tables`; keys of large or unusual types.
pub(super) async fn keys(ctx: &mut Ctx<'_>) -> Result<()> {
    if ctx.cdc() {
        let policy = ctx.task.cdc.no_key_tables;
        let keyless: Vec<String> = ctx
            .tables
            .iter()
            .filter(|t| !t.unlogged && lacks_identity(t))
            .map(|t| t.name.to_string())
            .collect();
        if policy == NoKeyTables::ReplicaIdentityFull {
            identity_owners(ctx).await?;
        }
        for name in keyless {
            let quoted = ctx
                .tables
                .iter()
                .find(|t| t.name.to_string() == name)
                .map(|t| t.name.quoted())
                .unwrap_or_default();
            let (severity, message, fix) = match policy {
                NoKeyTables::Fail => (
                    Severity::Blocker,
                    "has no primary key and no replica identity: once published, the source \
                     would reject its updates and deletes, so no_key_tables = fail refuses \
                     to start",
                    format!(
                        "add a primary key, or ALTER TABLE {quoted} REPLICA IDENTITY FULL, or \
                         set [cdc] no_key_tables = \"replica-identity-full\" or \"exclude\""
                    ),
                ),
                NoKeyTables::ReplicaIdentityFull => (
                    Severity::Warning,
                    "has no primary key: pgferry will set REPLICA IDENTITY FULL on it, so its \
                     updates and deletes log whole rows and apply by comparing every column",
                    "add a primary key to make its changes smaller and faster to apply".to_owned(),
                ),
                NoKeyTables::Exclude => (
                    Severity::Warning,
                    "has no primary key and no replica identity: it is left out of the \
                     migration (no_key_tables = exclude)",
                    format!("add a primary key, or ALTER TABLE {quoted} REPLICA IDENTITY FULL"),
                ),
            };
            ctx.push(
                "table.no_key",
                severity,
                Some(name.clone()),
                format!("{name} {message}"),
                fix,
            );
        }
    }
    let oids = ctx.all_oids();
    let rows = ctx
        .source
        .query(
            "reading key types",
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                    a.attname::text, format_type(a.atttypid, a.atttypmod),
                    coalesce(s.avg_width, 0)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
                  AND s.attname = a.attname
             WHERE i.indisprimary AND i.indrelid = ANY($1)
             ORDER BY 1, 2",
            &[&oids],
        )
        .await?;
    for r in rows {
        let (table, column, type_name, width): (String, String, String, i32) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let base = type_name.split('(').next().unwrap_or("").trim().to_owned();
        let unusual = !PLAIN_KEY_TYPES.contains(&base.as_str());
        if !unusual && width <= 256 {
            continue;
        }
        let why = if unusual {
            format!("of type {type_name}")
        } else {
            format!("{width} bytes wide on average")
        };
        ctx.push(
            "table.key_type",
            Severity::Warning,
            Some(table.clone()),
            format!(
                "{table} has primary key column {column:?} {why}: every change carries it \
                 and is applied by comparing it, and a large value can leave the stream \
                 unable to name its row"
            ),
            "prefer an integer or uuid key; if the key must stay, expect slower apply",
        );
    }
    Ok(())
}

/// `no_key_tables = "replica-identity-full"` makes pgferry run `ALTER TABLE ... REPLICA
/// IDENTITY FULL`, which only the table's owner (or a member of its role) may.
async fn identity_owners(ctx: &mut Ctx<'_>) -> Result<()> {
    let oids: Vec<u32> = ctx
        .tables
        .iter()
        .filter(|t| !t.unlogged && lacks_identity(t))
        .map(|t| t.oid)
        .collect();
    let rows = ctx
        .source
        .query(
            "checking table owners",
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                    pg_get_userbyid(c.relowner)::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = ANY($1) AND NOT pg_has_role(c.relowner, 'USAGE')
             ORDER BY 1",
            &[&oids],
        )
        .await?;
    let user = pgferry_pg::quote_ident(&ctx.source_info.user);
    for r in rows {
        let (table, owner): (String, String) = (r.get(0), r.get(1));
        ctx.push(
            "table.replica_identity_owner",
            Severity::Blocker,
            Some(table.clone()),
            format!(
                "{table} has no key, and pgferry would set REPLICA IDENTITY FULL on it, but \
                 only its owner \"{owner}\" may"
            ),
            format!(
                "ALTER TABLE {table} REPLICA IDENTITY FULL as {owner} before the task starts, \
                 or GRANT {} TO {user}",
                pgferry_pg::quote_ident(&owner)
            ),
        );
    }
    Ok(())
}

/// Unlogged, temporary and partitioned tables, and generated columns.
pub(super) async fn kinds(ctx: &mut Ctx<'_>) -> Result<()> {
    let unlogged: Vec<(String, String)> = ctx
        .tables
        .iter()
        .filter(|t| t.unlogged)
        .map(|t| (t.name.to_string(), t.name.quoted()))
        .collect();
    for (name, quoted) in unlogged {
        ctx.push(
            "table.unlogged",
            if ctx.cdc() {
                Severity::Warning
            } else {
                Severity::Info
            },
            Some(name.clone()),
            format!(
                "{name} is UNLOGGED: the full load copies it, but its changes write no WAL \
                 and cannot be streamed"
            ),
            format!(
                "ALTER TABLE {quoted} SET LOGGED before the task starts, if its changes matter"
            ),
        );
    }
    let temporary: i64 = ctx
        .source
        .query_one(
            "counting temporary tables",
            "SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relkind IN ('r', 'p')",
            &[],
        )
        .await?
        .get(0);
    if temporary > 0 {
        ctx.push(
            "table.temporary",
            Severity::Info,
            None,
            format!(
                "{temporary} temporary table(s) exist in sessions on the source; temporary \
                 tables belong to their session and are never migrated"
            ),
            "nothing to do",
        );
    }
    let by_root = ctx.source_info.major() >= 13;
    let parents: Vec<String> = ctx.parents.iter().map(|t| t.name.to_string()).collect();
    for name in parents {
        ctx.push(
            "table.partitioned",
            Severity::Info,
            Some(name.clone()),
            if by_root {
                format!(
                    "{name} is partitioned: its partitions are copied one by one, and their \
                     changes are published under {name} (publish_via_partition_root)"
                )
            } else {
                format!(
                    "{name} is partitioned: on PostgreSQL 12 each partition is published and \
                     streamed as its own table"
                )
            },
            "nothing to do; the target gets the same partitions",
        );
    }
    let generated: Vec<(String, Vec<String>)> = ctx
        .tables
        .iter()
        .map(|t| {
            let cols: Vec<String> = t
                .columns
                .iter()
                .filter(|c| c.generated)
                .map(|c| c.name.clone())
                .collect();
            (t.name.to_string(), cols)
        })
        .filter(|(_, cols)| !cols.is_empty())
        .collect();
    for (name, cols) in generated {
        ctx.push(
            "table.generated_columns",
            Severity::Info,
            Some(name.clone()),
            format!(
                "{name} has generated column(s) {}: the target computes them, so they are \
                 not copied or streamed",
                cols.join(", ")
            ),
            "nothing to do; validation compares them as the target computed them",
        );
    }
    Ok(())
}

/// Types the copy or the stream handle differently or cannot handle: `reg*` types that
/// store object ids, types from extensions, very wide rows.
pub(super) async fn types(ctx: &mut Ctx<'_>) -> Result<()> {
    let oids: Vec<u32> = ctx.tables.iter().map(|t| t.oid).collect();
    let rows = ctx
        .source
        .query(
            "reading column types",
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname::text,
                    format_type(a.atttypid, a.atttypmod), t.typname::text,
                    (SELECT e.extname::text FROM pg_depend d
                       JOIN pg_extension e ON e.oid = d.refobjid
                      WHERE d.classid = 'pg_type'::regclass
                        AND d.objid = coalesce(nullif(t.typelem, 0), t.oid)
                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                      LIMIT 1)
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY 1, a.attnum",
            &[&oids],
        )
        .await?;
    let target_extensions: Vec<String> = ctx
        .target
        .query(
            "reading available extensions",
            "SELECT name::text FROM pg_available_extensions",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for r in rows {
        let (table, column, type_name, typname, extension): (
            String,
            String,
            String,
            String,
            Option<String>,
        ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let base = typname.trim_start_matches('_');
        if base.starts_with("reg") && !matches!(base, "regclass" | "regtype" | "regproc") {
            ctx.push(
                "types.reg",
                Severity::Warning,
                Some(table.clone()),
                format!(
                    "{table}.{column} is of type {type_name}, which stores object ids: its \
                     values name objects that must exist on the target with the same names, \
                     and comparisons after the move compare new ids"
                ),
                "store the names as text, or make sure the named objects exist on the target",
            );
        }
        if let Some(ext) = extension
            && !target_extensions.contains(&ext)
        {
            ctx.push(
                "types.extension",
                Severity::Blocker,
                Some(table.clone()),
                format!(
                    "{table}.{column} is of type {type_name} from extension {ext}, which the \
                     target cannot install"
                ),
                format!("install extension {ext}'s package on the target server"),
            );
        }
    }
    // From the table's size on disk (TOAST included) per row: `pg_stats` counts an
    // out-of-line value as its pointer.
    let wide: Vec<(String, i64)> = ctx
        .tables
        .iter()
        .filter_map(|t| {
            let rows = t.estimated_rows.filter(|r| *r > 0)?;
            let width = t.table_bytes / rows;
            (width > WIDE_ROW).then(|| (t.name.to_string(), width))
        })
        .collect();
    for (table, width) in wide {
        ctx.push(
            "types.wide_rows",
            Severity::Warning,
            Some(table.clone()),
            format!(
                "{table}'s rows are {} wide on average: each change of a row carries that \
                 much, and a large transaction of them spills on the source",
                crate::cdc::human_bytes(width)
            ),
            "raise logical_decoding_work_mem on the source; pgferry's own memory stays \
             bounded (values are streamed, not held)",
        );
    }
    Ok(())
}
