//! Checks of the source server: its settings, what runs on it now, and what the task's
//! user may do there.

use pgferry_pg::catalog::{ServerInfo, Table};
use pgferry_pg::{PgError, Side, quote_ident};

use super::{Ctx, Severity};
use crate::error::{EngineError, Result};

/// The oldest source pgferry supports: `pg_partition_root` and generated columns are 12.
pub const MIN_SOURCE_VERSION: i32 = 120000;

/// Settings, read once: version, `wal_level`, slots and senders, timeouts and memory.
pub(super) async fn settings(ctx: &mut Ctx<'_>) -> Result<()> {
    let info = ctx.source_info;
    if info.version_num < MIN_SOURCE_VERSION {
        ctx.push(
            "source.version",
            Severity::Blocker,
            None,
            format!(
                "the source runs PostgreSQL {}; pgferry needs 12 or newer",
                info.version
            ),
            "upgrade the source, or migrate it with pg_dump and pg_restore",
        );
        return Ok(());
    }
    if info.major() < 14 {
        ctx.push(
            "source.version",
            Severity::Info,
            None,
            format!(
                "the source runs PostgreSQL {}: big tables split by key ranges, and changes \
                 stream in text form, not binary",
                info.version
            ),
            "nothing to do; docs/full-load.md has the table of what differs per version",
        );
    }
    if !ctx.cdc() {
        return Ok(());
    }
    if info.in_recovery && info.major() < 16 {
        ctx.push(
            "source.standby",
            Severity::Blocker,
            None,
            format!(
                "the source is a standby running PostgreSQL {}; logical decoding on a \
                 standby needs 16 or newer",
                info.version
            ),
            "point the source at the primary (writer) endpoint",
        );
    }
    if info.wal_level != "logical" {
        ctx.push(
            "source.wal_level",
            Severity::Blocker,
            None,
            format!(
                "wal_level is {}, but change data capture needs wal_level = logical",
                info.wal_level
            ),
            "ALTER SYSTEM SET wal_level = logical, then restart the server; on RDS and \
             Aurora set rds.logical_replication = 1 in the parameter group and reboot",
        );
    }
    replication(ctx).await
}

/// Slots, WAL senders, `wal_sender_timeout`, `logical_decoding_work_mem` and
/// `max_slot_wal_keep_size` (kept for [`super::size`]'s WAL estimate).
async fn replication(ctx: &mut Ctx<'_>) -> Result<()> {
    let info = ctx.source_info;
    // A task that runs again has its slot already, and its old WAL sender may linger
    // until the source notices it is gone: neither counts against it.
    let slot = ctx
        .task
        .cdc
        .slot_name
        .clone()
        .unwrap_or_else(|| crate::cdc::source::default_name(&ctx.task.name));
    let row = ctx
        .source
        .query_one(
            "reading replication settings",
            "SELECT (SELECT count(*) FROM pg_replication_slots)::int,
                    (SELECT count(*) FROM pg_stat_replication r
                     WHERE r.pid IS DISTINCT FROM (SELECT active_pid FROM pg_replication_slots
                                                   WHERE slot_name = $1))::int,
                    current_setting('wal_sender_timeout'),
                    (SELECT setting::bigint * CASE unit WHEN 'ms' THEN 1 WHEN 's' THEN 1000
                            WHEN 'min' THEN 60000 ELSE 1 END
                     FROM pg_settings WHERE name = 'wal_sender_timeout'),
                    (SELECT setting::bigint FROM pg_settings
                     WHERE name = 'logical_decoding_work_mem'),
                    (SELECT setting::bigint FROM pg_settings
                     WHERE name = 'max_slot_wal_keep_size'),
                    EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await?;
    let (slots, senders, has_slot): (i32, i32, bool) = (row.get(0), row.get(1), row.get(6));
    let free_slots = info.max_replication_slots - slots;
    if free_slots < 1 && !has_slot {
        ctx.push(
            "source.max_replication_slots",
            Severity::Blocker,
            None,
            format!(
                "all {} replication slots are in use; the task needs one",
                info.max_replication_slots
            ),
            format!(
                "ALTER SYSTEM SET max_replication_slots = {} and restart, or drop a slot \
                 nobody uses (SELECT pg_drop_replication_slot('name'))",
                info.max_replication_slots + 2
            ),
        );
    }
    let free_senders = info.max_wal_senders - senders;
    if free_senders < 2 {
        ctx.push(
            "source.max_wal_senders",
            if free_senders < 1 {
                Severity::Blocker
            } else {
                Severity::Warning
            },
            None,
            format!(
                "{free_senders} of {} WAL senders are free; the task streams over one, and \
                 a reconnect needs a second while the first times out",
                info.max_wal_senders
            ),
            format!(
                "ALTER SYSTEM SET max_wal_senders = {} and restart",
                info.max_wal_senders + 4
            ),
        );
    }
    let (timeout_text, timeout_ms): (String, Option<i64>) = (row.get(2), row.get(3));
    match timeout_ms {
        Some(0) => ctx.push(
            "source.wal_sender_timeout",
            Severity::Warning,
            None,
            "wal_sender_timeout is 0: a stream whose network died keeps its WAL sender, and \
             the slot stays busy until TCP gives up",
            "ALTER SYSTEM SET wal_sender_timeout = '60s'; SELECT pg_reload_conf()",
        ),
        Some(ms) if ms < 10_000 => ctx.push(
            "source.wal_sender_timeout",
            Severity::Warning,
            None,
            format!(
                "wal_sender_timeout is {timeout_text}: a busy target can miss it while it \
                 applies a large transaction, and the stream restarts"
            ),
            "ALTER SYSTEM SET wal_sender_timeout = '60s'; SELECT pg_reload_conf()",
        ),
        _ => {}
    }
    // Both in kB; absent before 13.
    let work_mem: Option<i64> = row.get(4);
    if let Some(kb) = work_mem.filter(|kb| *kb < 65_536) {
        ctx.push(
            "source.logical_decoding_work_mem",
            Severity::Warning,
            None,
            format!(
                "logical_decoding_work_mem is {} MB: transactions bigger than that spill to \
                 disk on the source while they are decoded",
                kb / 1024
            ),
            "ALTER SYSTEM SET logical_decoding_work_mem = '256MB'; SELECT pg_reload_conf()",
        );
    }
    ctx.wal_keep_mb = row.get::<_, Option<i64>>(5).filter(|mb| *mb >= 0);
    Ok(())
}

/// What the task's user may do on the source: replicate, and read every selected table,
/// sequence and large object.
pub(super) async fn privileges(ctx: &mut Ctx<'_>) -> Result<()> {
    let info = ctx.source_info;
    let user = quote_ident(&info.user);
    if ctx.cdc() && !info.can_replicate {
        ctx.push(
            "source.replication_privilege",
            Severity::Blocker,
            None,
            format!(
                "user \"{}\" lacks the REPLICATION privilege that change data capture needs",
                info.user
            ),
            format!(
                "ALTER ROLE {user} WITH REPLICATION; on RDS and Aurora, GRANT rds_replication \
                 TO {user}"
            ),
        );
    }
    if let Some((problem, fix)) = unreadable(info, &ctx.tables) {
        ctx.push("source.select", Severity::Blocker, None, problem, fix);
    }
    let schemas: Vec<String> = ctx
        .tables
        .iter()
        .chain(&ctx.parents)
        .map(|t| t.name.schema.clone())
        .collect();
    let row = ctx
        .source
        .query_one(
            "checking sequence and large object privileges",
            "SELECT array(SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = ANY($1)
                            AND CASE WHEN c.relkind = 'S'
                                     THEN NOT has_sequence_privilege(c.oid, 'SELECT') END
                          ORDER BY 1),
                    (SELECT count(*) FROM pg_largeobject_metadata m
                     WHERE NOT r.rolsuper
                       AND current_setting('lo_compat_privileges') = 'off'
                       AND NOT pg_has_role(m.lomowner, 'USAGE')
                       AND NOT EXISTS (SELECT FROM aclexplode(m.lomacl) a
                                       WHERE a.privilege_type = 'SELECT'
                                         AND (a.grantee = 0 OR pg_has_role(a.grantee, 'USAGE'))))
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&schemas],
        )
        .await?;
    let sequences: Vec<String> = row.get(0);
    if !sequences.is_empty() {
        ctx.push(
            "source.sequence_select",
            if ctx.loads() {
                Severity::Blocker
            } else {
                Severity::Warning
            },
            None,
            format!(
                "user \"{}\" cannot read {} sequence(s), whose values the load and the \
                 cutover carry over: {}",
                info.user,
                sequences.len(),
                sequences.join(", ")
            ),
            format!(
                "GRANT SELECT ON SEQUENCE {} TO {user};",
                sequences.join(", ")
            ),
        );
    }
    let blobs: i64 = row.get(1);
    if blobs > 0 && ctx.loads() {
        ctx.push(
            "source.large_object_select",
            Severity::Blocker,
            None,
            format!("user \"{}\" cannot read {blobs} large object(s)", info.user),
            format!(
                "GRANT SELECT ON LARGE OBJECT <oid> TO {user} for each, run as a superuser, \
                 or set lo_compat_privileges = on for the load"
            ),
        );
    }
    if ctx.cdc() && ctx.task.cdc.ddl && !info.is_superuser {
        let rds: bool = ctx
            .source
            .query_one(
                "checking event trigger privileges",
                "SELECT EXISTS (SELECT FROM pg_roles g WHERE g.rolname = 'rds_superuser'
                                AND pg_has_role(current_user, g.oid, 'member'))",
                &[],
            )
            .await?
            .get(0);
        if !rds {
            ctx.push(
                "source.event_trigger_privilege",
                Severity::Warning,
                None,
                format!(
                    "user \"{}\" may not create event triggers, which capturing schema \
                     changes needs ([cdc] ddl): pgferry would warn and follow only added \
                     columns, from the stream itself",
                    info.user
                ),
                "run as a superuser (rds_superuser on RDS and Aurora), or make schema changes \
                 on the target by hand while the task streams",
            );
        }
    }
    Ok(())
}

/// The selected tables the user cannot read, as a problem and its fix.
fn unreadable(info: &ServerInfo, tables: &[Table]) -> Option<(String, String)> {
    let names: Vec<String> = tables
        .iter()
        .filter(|t| !t.can_select)
        .map(|t| t.name.to_string())
        .collect();
    if names.is_empty() {
        return None;
    }
    let schemas: std::collections::BTreeSet<&str> = tables
        .iter()
        .filter(|t| !t.can_select)
        .map(|t| t.name.schema.as_str())
        .collect();
    let user = quote_ident(&info.user);
    let fix = schemas
        .iter()
        .map(|s| {
            format!(
                "GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {user};",
                quote_ident(s)
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some((
        format!(
            "user \"{}\" cannot read {} selected table(s): {}",
            info.user,
            names.len(),
            names.join(", ")
        ),
        fix,
    ))
}

/// Checks again, when the plan lists the tables, that the user can read every one of them
/// (a grant may have changed since the run's preflight).
pub(crate) fn check_source_tables(info: &ServerInfo, tables: &[Table]) -> Result<()> {
    match unreadable(info, tables) {
        None => Ok(()),
        Some((problem, fix)) => Err(EngineError::Pg(PgError::Prerequisite {
            side: Side::Source,
            problem,
            fix,
        })),
    }
}

/// What runs on the source now: long and idle transactions, prepared transactions, and
/// the slots that already hold WAL.
pub(super) async fn activity(ctx: &mut Ctx<'_>, long: std::time::Duration) -> Result<()> {
    let rows = ctx
        .source
        .query(
            "reading long transactions",
            "SELECT pid, coalesce(usename::text, ''), coalesce(application_name, ''),
                    state, extract(epoch FROM now() - xact_start)::float8
             FROM pg_stat_activity
             WHERE xact_start < now() - make_interval(secs => $1)
               AND pid <> pg_backend_pid() AND backend_type = 'client backend'
             ORDER BY xact_start",
            &[&long.as_secs_f64()],
        )
        .await?;
    for r in rows {
        let (pid, user, app, state, age): (i32, String, String, Option<String>, f64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let idle = state.as_deref() == Some("idle in transaction");
        ctx.push(
            "source.long_transaction",
            Severity::Warning,
            None,
            format!(
                "session {pid} (user \"{user}\", application \"{app}\") has been {} for \
                 {:.0} s: it holds back the load's snapshot and the slot's creation",
                if idle {
                    "idle in a transaction"
                } else {
                    "in one transaction"
                },
                age
            ),
            format!(
                "end it (SELECT pg_terminate_backend({pid})) or wait for it{}",
                if idle {
                    "; set idle_in_transaction_session_timeout to stop such sessions"
                } else {
                    ""
                }
            ),
        );
    }
    let prepared = ctx
        .source
        .query(
            "reading prepared transactions",
            "SELECT gid, extract(epoch FROM now() - prepared)::float8 FROM pg_prepared_xacts
             WHERE database = current_database() ORDER BY prepared",
            &[],
        )
        .await?;
    for r in prepared {
        let (gid, age): (String, f64) = (r.get(0), r.get(1));
        ctx.push(
            "source.prepared_transaction",
            if ctx.cdc() {
                Severity::Blocker
            } else {
                Severity::Warning
            },
            None,
            format!(
                "prepared transaction {gid:?} has waited {:.0} s; creating the task's slot \
                 waits for it to end, and it holds back vacuum",
                age
            ),
            format!(
                "COMMIT PREPARED {} or ROLLBACK PREPARED {}",
                pgferry_pg::quote_literal(&gid),
                pgferry_pg::quote_literal(&gid)
            ),
        );
    }
    let slots = ctx
        .source
        .query(
            "reading replication slots",
            // `wal_status` came in 13: read through the row's JSON so 12 answers too.
            "SELECT slot_name::text, slot_type, active,
                    CASE WHEN pg_is_in_recovery() THEN NULL
                         ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 END,
                    to_jsonb(s) ->> 'wal_status' = 'lost'
             FROM pg_replication_slots s ORDER BY slot_name",
            &[],
        )
        .await?;
    for r in slots {
        let (name, kind, active, retained): (String, String, bool, Option<i64>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let drop = format!(
            "SELECT pg_drop_replication_slot({})",
            pgferry_pg::quote_literal(&name)
        );
        if r.get::<_, Option<bool>>(4) == Some(true) {
            ctx.push(
                "source.existing_slot",
                Severity::Warning,
                Some(name.clone()),
                format!(
                    "{kind} slot {name:?} was invalidated (max_slot_wal_keep_size): it can \
                     never stream again, and it still takes one of max_replication_slots"
                ),
                format!("drop it: {drop}"),
            );
            continue;
        }
        let retained = retained.unwrap_or(0);
        let idle_and_big = !active && retained > 1 << 30;
        ctx.push(
            "source.existing_slot",
            if idle_and_big {
                Severity::Warning
            } else {
                Severity::Info
            },
            Some(name.clone()),
            format!(
                "{kind} slot {name:?} is {} and retains {} of WAL",
                if active { "active" } else { "inactive" },
                crate::cdc::human_bytes(retained)
            ),
            if idle_and_big {
                format!("drop it if nothing uses it: {drop}")
            } else {
                "nothing to do; it shares the source's disk with the task's slot".to_owned()
            },
        );
    }
    Ok(())
}
