//! DDL capture on the stream's `from` side: the `pgferry_capture` schema, its event
//! triggers, and its log table in the task's publication (`capture.sql` says what they
//! record).
//!
//! Installed at planning, before the slot exists, so every command after the slot's
//! starting point is in the stream, and the baseline shapes match the snapshot the load
//! copies. One transaction: a crash leaves all of it or none. Shared by the tasks that
//! stream from one database (`pgferry_capture.tasks`); the last task's `cleanup` drops it.
//!
//! Creating an event trigger takes a superuser (`rds_superuser` on RDS and Aurora).
//! Without it, the install is rolled back, and the task streams as before: added columns
//! follow from the stream's own relation messages, other DDL is not carried. The caller
//! warns once.

use pgferry_pg::{PgClient, quote_ident};

use crate::error::Result;

/// The schema, and the published table whose rows carry the captured commands.
pub const SCHEMA: &str = "pgferry_capture";
pub const LOG: &str = "log";

const SCRIPT: &str = include_str!("capture.sql");

/// Whether a relation, as the stream names it, is the capture's log.
pub fn is_log(schema: &str, name: &str) -> bool {
    schema == SCHEMA && name == LOG
}

/// What installing the capture did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Yes,
    /// Not allowed: the warning to give.
    Refused(String),
}

/// Installs (or joins) the capture and adds its log to `publication`.
pub async fn install(source: &PgClient, task: &str, publication: &str) -> Result<Installed> {
    source.batch("starting the DDL capture", "BEGIN").await?;
    match install_in_transaction(source, task, publication).await {
        Ok(()) => {
            source.batch("installing the DDL capture", "COMMIT").await?;
            Ok(Installed::Yes)
        }
        Err(e) => {
            let _ = source.batch("", "ROLLBACK").await;
            if e.sqlstate() == Some("42501") {
                Ok(Installed::Refused(format!(
                    "the source user may not create event triggers, or add the capture's log \
                     to the publication ({e}), so schema changes are not captured: pgferry \
                     follows added columns from the stream, and other DDL must be made on the \
                     target by hand. Run pgferry as a superuser (rds_superuser on RDS and \
                     Aurora), owning the publication, to capture them"
                )))
            } else {
                Err(e.into())
            }
        }
    }
}

async fn install_in_transaction(
    source: &PgClient,
    task: &str,
    publication: &str,
) -> std::result::Result<(), pgferry_pg::PgError> {
    source.batch("installing the DDL capture", SCRIPT).await?;
    source
        .execute(
            "registering the task with the DDL capture",
            "INSERT INTO pgferry_capture.tasks VALUES ($1) ON CONFLICT DO NOTHING",
            &[&task],
        )
        .await?;
    let listed: bool = source
        .query_one(
            "looking at the publication",
            "SELECT p.puballtables OR EXISTS (
                 SELECT FROM pg_publication_rel r
                 WHERE r.prpubid = p.oid AND r.prrelid = 'pgferry_capture.log'::regclass)
             FROM pg_publication p WHERE p.pubname = $1",
            &[&publication],
        )
        .await?
        .get(0);
    if !listed {
        source
            .batch(
                "publishing the DDL capture's log",
                &format!(
                    "ALTER PUBLICATION {} ADD TABLE ONLY pgferry_capture.log",
                    quote_ident(publication)
                ),
            )
            .await?;
    }
    Ok(())
}

/// Whether the capture is installed on this database.
pub async fn installed(source: &PgClient) -> Result<bool> {
    Ok(source
        .query_one(
            "looking for the DDL capture",
            "SELECT to_regclass('pgferry_capture.tasks') IS NOT NULL",
            &[],
        )
        .await?
        .get(0))
}

/// Takes `task` out of the capture, and removes the capture when no task is left. Returns
/// whether it was removed. Safe to repeat.
pub async fn remove(source: &PgClient, task: &str) -> Result<bool> {
    if !installed(source).await? {
        return Ok(false);
    }
    source
        .execute(
            "leaving the DDL capture",
            "DELETE FROM pgferry_capture.tasks WHERE task = $1",
            &[&task],
        )
        .await?;
    let others: bool = source
        .query_one(
            "looking for other tasks using the DDL capture",
            "SELECT EXISTS (SELECT FROM pgferry_capture.tasks)",
            &[],
        )
        .await?
        .get(0);
    if others {
        return Ok(false);
    }
    source
        .batch(
            "removing the DDL capture",
            // One simple query: one implicit transaction.
            "DROP EVENT TRIGGER IF EXISTS pgferry_capture_ddl;
             DROP EVENT TRIGGER IF EXISTS pgferry_capture_drop;
             DROP SCHEMA IF EXISTS pgferry_capture CASCADE;",
        )
        .await?;
    Ok(true)
}
