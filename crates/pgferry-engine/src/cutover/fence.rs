//! The fence: no application session can write on a database any more, none that was open
//! and none that connects later.
//!
//! The mechanism holds for ordinary roles without any privilege on them:
//! 1. the database's default becomes read-only (`ALTER DATABASE ... SET
//!    default_transaction_read_only = on`), so every session that connects from now on
//!    starts read-only;
//! 2. the roles named in `cutover.fence_roles` lose `LOGIN`, so not even a session that
//!    turns the default off can be theirs;
//! 3. every other session of the database is terminated, and the fence waits until none
//!    that began before it is left and no transaction holds an xid.
//!
//! Replication connections (the walsender pgferry streams from) are not sessions of this
//! kind and stay. pgferry's own sessions start read-write whatever the database's default
//! (`pgferry_pg::connect`), so its applier and control schema write through the fence. What a superuser, or a role not in `fence_roles` that runs `SET
//! default_transaction_read_only = off`, can still do is written in `docs/cutover.md`.
//!
//! The plan (what the fence changes, as found before) is recorded in the control schema
//! before the fence goes up, so a crash half-way can always be undone exactly ([`lift`]).

use std::time::{Duration, Instant};

use pgferry_pg::{Lsn, PgClient, PgError, quote_ident};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// What the fence changes on one database, as found before it went up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencePlan {
    pub database: String,
    /// The database's own `default_transaction_read_only` before the fence (`None`: not
    /// set, the server's default applies).
    pub read_only_before: Option<String>,
    /// Roles of `fence_roles` that could log in, and are made `NOLOGIN`.
    pub roles: Vec<String>,
}

/// How long the fence waits for terminated sessions to go and open transactions to end.
const SETTLE: Duration = Duration::from_secs(15);

/// Reads what the fence would change. With `missing_ok`, a role of `fence_roles` that does
/// not exist on this server is passed over (no one logs in as it); otherwise it is an
/// error, since a misspelt role would leave the application unfenced.
pub async fn plan(
    client: &PgClient,
    fence_roles: &[String],
    missing_ok: bool,
) -> Result<FencePlan> {
    let row = client
        .query_one(
            "reading the database's settings",
            "SELECT current_database()::text,
                    (SELECT substr(c, length('default_transaction_read_only=') + 1)
                     FROM pg_db_role_setting s, unnest(s.setconfig) c
                     WHERE s.setdatabase = (SELECT oid FROM pg_database
                                            WHERE datname = current_database())
                       AND s.setrole = 0 AND c LIKE 'default\\_transaction\\_read\\_only=%')",
            &[],
        )
        .await?;
    let mut roles = Vec::new();
    for role in fence_roles {
        let found = client
            .query_opt(
                "reading a role",
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
                &[role],
            )
            .await?;
        if found.is_none() && missing_ok {
            continue;
        }
        let can_login = found
            .ok_or_else(|| {
                EngineError::Pg(PgError::Prerequisite {
                    side: client.side(),
                    problem: format!("cutover.fence_roles names {role:?}, which does not exist"),
                    fix: "name the roles the application logs in as".to_owned(),
                })
            })?
            .get::<_, bool>(0);
        if can_login {
            roles.push(role.clone());
        }
    }
    Ok(FencePlan {
        database: row.get(0),
        read_only_before: row.get(1),
        roles,
    })
}

/// Puts the fence up and verifies it; returns the WAL position after it. Safe to repeat.
pub async fn put_up(client: &PgClient, plan: &FencePlan) -> Result<Lsn> {
    let started = Instant::now();
    let db = quote_ident(&plan.database);
    client
        .batch(
            "fencing the database",
            &format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
        )
        .await
        .map_err(|e| privilege_hint(e, client, "ALTER DATABASE"))?;
    for role in &plan.roles {
        client
            .batch(
                &format!("fencing role {role}"),
                &format!("ALTER ROLE {} NOLOGIN", quote_ident(role)),
            )
            .await
            .map_err(|e| privilege_hint(e, client, "ALTER ROLE"))?;
    }
    let fenced_at: chrono::DateTime<chrono::Utc> = client
        .query_one("reading the clock", "SELECT clock_timestamp()", &[])
        .await?
        .get(0);
    loop {
        let left = others(client, fenced_at).await?;
        if left.is_empty() {
            break;
        }
        if started.elapsed() > SETTLE {
            return Err(EngineError::Pg(PgError::Prerequisite {
                side: client.side(),
                problem: format!(
                    "the fence is up, but {} session(s) would not end: {}",
                    left.len(),
                    left.join(", ")
                ),
                fix: "end them (pg_terminate_backend needs the pg_signal_backend role for \
                      other roles' sessions), then run `pgferry cutover` again, or \
                      `pgferry cutover --abort` to lift the fence"
                    .to_owned(),
            }));
        }
        client
            .query(
                "ending the application's sessions",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND backend_type = 'client backend'
                   AND (backend_start < $1 OR backend_xid IS NOT NULL)",
                &[&fenced_at],
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crate::cdc::current_wal_lsn(client).await
}

/// Sessions that could still write: begun before the fence, or holding an xid, and
/// prepared transactions of the database.
async fn others(
    client: &PgClient,
    fenced_at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "checking the fence",
            "SELECT format('pid %s (%s, %s)', pid, usename, coalesce(application_name, ''))
             FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend'
               AND (backend_start < $1 OR backend_xid IS NOT NULL)
             UNION ALL
             SELECT format('prepared transaction %L', gid) FROM pg_prepared_xacts
             WHERE database = current_database()",
            &[&fenced_at],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Lifts the fence: the database's setting and the roles as they were. Safe to repeat.
pub async fn lift(client: &PgClient, plan: &FencePlan) -> Result<()> {
    let db = quote_ident(&plan.database);
    let restore = match &plan.read_only_before {
        None => format!("ALTER DATABASE {db} RESET default_transaction_read_only"),
        // A setting's value as the catalog stores it: on, off, true, false, 1, 0.
        Some(v) if ["on", "off", "true", "false", "1", "0"].contains(&v.as_str()) => {
            format!("ALTER DATABASE {db} SET default_transaction_read_only = {v}")
        }
        Some(v) => {
            return Err(EngineError::Pg(PgError::Protocol {
                side: client.side(),
                message: format!("unexpected recorded setting {v:?}"),
            }));
        }
    };
    client.batch("lifting the fence", &restore).await?;
    for role in &plan.roles {
        client
            .batch(
                &format!("lifting the fence on role {role}"),
                &format!("ALTER ROLE {} LOGIN", quote_ident(role)),
            )
            .await?;
    }
    Ok(())
}

fn privilege_hint(e: PgError, client: &PgClient, what: &str) -> EngineError {
    if e.sqlstate() == Some("42501") {
        return EngineError::Pg(PgError::Prerequisite {
            side: client.side(),
            problem: format!("the fence needs {what}, which pgferry's role may not run: {e}"),
            fix: "run the cutover as the database's owner (ALTER DATABASE) with CREATEROLE \
                  (ALTER ROLE for cutover.fence_roles); on RDS and Aurora, a member of \
                  rds_superuser"
                .to_owned(),
        });
    }
    EngineError::Pg(e)
}
