//! A captured schema change in the stream: a barrier. The changes before it are applied,
//! then its statements, under a savepoint, in the same target transaction; the record in
//! `pgferry.ddl_log` commits with them and with the checkpoint. pgoutput describes a
//! relation again after a change to it, so the changes after the barrier resolve the new
//! shape (`tables::resolve`), and the prepared statements are dropped with the old one.
//!
//! A statement the target refuses rolls back to the savepoint and follows
//! `cdc.ddl_error_policy`: `SUSPEND_TABLE` records it as failed and stops the table's
//! changes; `STOP_TASK` ends the run, and the next run applies it again from the
//! checkpoint. Nothing is skipped without a record.

use pgferry_pg::QualifiedName;
use pgferry_pg::pgoutput::{Tuple, Value};

use super::Applier;
use crate::cdc::ddl::shape::Captured;
use crate::cdc::ddl::{self, Plan, Verdict, Why};
use crate::error::{EngineError, Result};

/// A `text` column's value: the same bytes in the text and the binary format.
fn text(v: &Value) -> Option<String> {
    v.bytes().map(|b| String::from_utf8_lossy(b).into_owned())
}

impl Applier {
    /// A row of `pgferry_capture.log`, with the relation's column names.
    pub(super) async fn captured(&mut self, columns: &[String], row: &Tuple) -> Result<()> {
        let captured =
            Captured::from_columns(columns.iter().map(String::as_str).zip(row.iter().map(text)));
        let verdict = ddl::plan(&captured, &self.scope, &self.settings);
        if verdict == Ok(Verdict::Outside) {
            return Ok(());
        }
        // Everything before the command first, then the command.
        self.flush_changes().await?;
        self.ensure_open().await?;
        if let Some(t) = self.txn.as_mut() {
            t.changes += 1;
        }
        self.batch
            .started
            .get_or_insert_with(std::time::Instant::now);
        match verdict {
            Ok(Verdict::Apply(plan)) => self.run_plan(&captured, plan).await,
            Ok(Verdict::Outside) => Ok(()),
            Err(why) if why.kept => self.kept(&captured, why).await,
            Err(why) => {
                let object = why
                    .table
                    .as_ref()
                    .map_or_else(|| captured.identity.clone(), QualifiedName::to_string);
                self.ddl_failed(&captured, why.table, &object, &[], None, why.reason)
                    .await
            }
        }
    }

    async fn run_plan(&mut self, c: &Captured, plan: Plan) -> Result<()> {
        if plan
            .table
            .as_ref()
            .is_some_and(|t| self.suspended.contains(t))
        {
            let why = Why::kept(
                plan.table.clone(),
                "the table's changes are suspended; its schema changes are not applied either"
                    .to_owned(),
            );
            return self.kept(c, why).await;
        }
        self.target
            .batch("starting a schema change", "SAVEPOINT pgferry_ddl")
            .await?;
        for statement in &plan.statements {
            // The extended protocol runs exactly one statement.
            if let Err(e) = self.target.raw().execute(statement.as_str(), &[]).await {
                if self.target.is_closed() {
                    return Err(EngineError::Pg(
                        self.target.err("applying a schema change", e),
                    ));
                }
                let error = pgferry_pg::describe_pg_error(&e);
                self.target
                    .batch(
                        "undoing a schema change",
                        "ROLLBACK TO SAVEPOINT pgferry_ddl",
                    )
                    .await?;
                return self
                    .ddl_failed(
                        c,
                        plan.table,
                        &plan.object,
                        &plan.statements,
                        Some(statement),
                        error,
                    )
                    .await;
            }
        }
        self.target
            .batch("finishing a schema change", "RELEASE SAVEPOINT pgferry_ddl")
            .await?;
        self.record_ddl(c, &plan.object, "applied", &plan.statements, None)
            .await?;
        tracing::info!(tag = %c.tag, object = %plan.object, statements = plan.statements.len(),
            "applied a schema change");
        // Statements prepared for the old shape must not outlive it.
        self.statements.clear();
        self.commit_after_txn |= plan.commit_after;
        *self.schema_changes.entry("applied").or_default() += 1;
        Ok(())
    }

    async fn kept(&mut self, c: &Captured, why: Why) -> Result<()> {
        let object = why
            .table
            .as_ref()
            .map_or_else(|| c.identity.clone(), QualifiedName::to_string);
        self.record_ddl(c, &object, "kept", &[], Some(&why.reason))
            .await?;
        *self.schema_changes.entry("kept").or_default() += 1;
        tracing::warn!(tag = %c.tag, object = %object, reason = %why.reason,
            "a schema change of the source is not applied");
        crate::control::event(
            self.target.raw(),
            &self.task,
            crate::control::Level::Warning,
            "cdc",
            &format!("{} on {object} not applied: {}", c.tag, why.reason),
            None,
        )
        .await
    }

    async fn ddl_failed(
        &mut self,
        c: &Captured,
        table: Option<QualifiedName>,
        object: &str,
        statements: &[String],
        failed: Option<&String>,
        error: String,
    ) -> Result<()> {
        if self.settings.ddl_error_policy == pgferry_config::ErrorPolicy::StopTask {
            return Err(EngineError::DdlStopped {
                tag: c.tag.clone(),
                object: object.to_owned(),
                statement: failed.cloned(),
                error,
            });
        }
        let detail = match failed {
            Some(s) => format!("{error} (statement: {s})"),
            None => error,
        };
        self.record_ddl(c, object, "failed", statements, Some(&detail))
            .await?;
        *self.schema_changes.entry("failed").or_default() += 1;
        let reason = format!("the source's {} could not be applied: {detail}", c.tag);
        match table {
            Some(t) => self.suspend(&t, &reason).await,
            None => {
                crate::control::event(
                    self.target.raw(),
                    &self.task,
                    crate::control::Level::Error,
                    "cdc",
                    &format!("{object}: {reason}"),
                    None,
                )
                .await
            }
        }
    }

    async fn record_ddl(
        &mut self,
        c: &Captured,
        object: &str,
        outcome: &str,
        statements: &[String],
        error: Option<&str>,
    ) -> Result<()> {
        let (commit_lsn, xid) = self
            .txn
            .as_ref()
            .map(|t| (t.final_lsn, t.xid))
            .unwrap_or_default();
        crate::control::record_ddl(
            &self.target,
            &self.task,
            crate::control::DdlOutcome {
                commit_lsn,
                xid,
                tag: &c.tag,
                object,
                outcome,
                statements,
                error,
            },
        )
        .await
    }
}
