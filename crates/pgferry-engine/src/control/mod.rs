//! The control schema: all of a task's state, in the target database.
//!
//! The target is the source of truth. Any process (`run`, `status`, a second run after a
//! crash) reads the same state, and nothing that matters lives only in memory. The layout
//! is versioned in `pgferry.meta`; [`ensure_schema`] applies missing migrations in order,
//! under a transaction-level advisory lock so two processes never migrate at once.
//!
//! Invariants:
//! * A chunk is done exactly when its `pgferry.chunk` row says so, and that row is written
//!   in the same target transaction as the chunk's rows. A crash leaves either both or
//!   neither.
//! * A schema step is done exactly when its `pgferry.schema_step` row says so, written in the
//!   same transaction as the step's DDL (all pre-data steps share one transaction).
//! * Only one process runs a task at a time: `run` holds a session-level advisory lock on
//!   the task's name for its whole life; the lock dies with the connection.

pub mod alarms;
mod cdc;
mod chunks;
pub mod cutover;
mod ddl;
mod events;
mod migrate;
mod status;
mod steps;
mod tables;
mod task;
mod validation;

pub use cdc::{
    AppliedBatch, ApplyException, CdcSetup, CdcState, StreamFigures, StreamOrders, cancel_drain,
    cdc_state, checkpoint, cleaned_up_at, drained, excluded_tables, forget_identity_change,
    forget_retained_wal, identity_changes, mark_drained, mark_start_over, mark_stopped,
    record_exception, record_identity_change, request_drain, request_stop, restart_stream_at,
    save_checkpoint, save_lag, save_progress, set_snapshot_filter, start_over_began, stopped,
    store_cdc_setup, stream_objects, stream_orders, stream_tables, streaming_started,
    suspend_table,
};
pub use chunks::{
    chunk_done, claim_chunk, fail_chunk, finish_chunk, keep_finished_chunks,
    key_chunks_with_filters, unfinished_chunks,
};
pub use ddl::{DdlOutcome, DdlRecord, recent_ddl, record_ddl};
pub use events::{Event, Level, event, recent_events, warn};
pub use migrate::{ensure_schema, schema_exists};
pub use status::{
    CdcStatus, CutoverStatus, ExceptionSummary, ReverseStatus, SchemaStatus, StepProblem,
    TableStatus, TaskStatus, Totals, ValidationStatus, reverse_status, status,
};
pub use steps::{
    Step, StoredStep, mark_step, pending_steps, skipped_objects, step_done, step_skipped,
    steps_done, store_steps, table_step_ids, unfinished_steps,
};
pub use tables::{
    PlannedTable, StoredTable, mark_analyzed, mark_pending, store_tables, stored_tables,
    unanalyzed_tables,
};
pub use task::{
    NewTask, Phase, advance_phase, find_task, forget_load_times, insert_task, load_task,
    set_last_error, set_phase,
};
pub use validation::{ValidationRecord, store_validation};

use pgferry_pg::{ConnInfo, PgClient, PgError, Side};

use crate::error::{EngineError, Result};

/// Advisory lock class for pgferry: "pgfr" in ASCII. The second key is the task name's hash.
pub const LOCK_CLASS: i32 = 0x7067_6672;

/// Maps an error of a statement on the control schema, which always lives on the target.
fn target_err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> EngineError + use<> {
    let context = context.to_owned();
    move |e| EngineError::Pg(PgError::query(Side::Target, context, e))
}

/// The application name of a control connection: `pgferry control PID@HOST`, so that a
/// second process can say which pgferry holds a task (not just the server's backend).
pub fn control_application_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut name = format!("pgferry control {}@{host}", std::process::id());
    // application_name holds 63 bytes.
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// How long a lock held by someone else is tried again: a process that just ended (the
/// previous command of a script) holds it until its server session has gone, a few
/// milliseconds after its connection closed.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the task's lock for `wanted` (`run`, `cleanup`), or says who holds it.
pub async fn lock_task(client: &PgClient, task: &str, wanted: &'static str) -> Result<()> {
    let until = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        let row = client
            .query_one(
                "taking the task lock",
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &task],
            )
            .await?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        if std::time::Instant::now() >= until {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let holder = client
        .query_opt(
            "finding who runs the task",
            "SELECT CASE WHEN a.application_name LIKE 'pgferry control %@%'
                         THEN format('pgferry pid %s on %s',
                                     split_part(substr(a.application_name, 17), '@', 1),
                                     split_part(substr(a.application_name, 17), '@', 2))
                         ELSE format('%s (server pid %s)',
                                     coalesce(nullif(a.application_name, ''), 'a session'),
                                     a.pid)
                    END
                    || coalesce(' connected from ' || host(a.client_addr), '')
                    || ', since ' || to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ')
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.classid::int = $1
               AND l.objid::int = hashtext($2) AND l.granted
             LIMIT 1",
            &[&LOCK_CLASS, &task],
        )
        .await?
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_else(|| "another pgferry process".to_owned());
    Err(EngineError::TaskBusy {
        task: task.to_owned(),
        holder,
        wanted,
    })
}

/// Whether a `run` holds the task's lock right now.
pub async fn is_running(client: &PgClient, task: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "checking whether the task runs",
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                            AND classid::int = $1 AND objid::int = hashtext($2) AND granted)",
            &[&LOCK_CLASS, &task],
        )
        .await?
        .get(0))
}

/// After the target went away (a restart, a failover), a new control connection, which
/// takes the task lock again: the old one died with its session. The target is given
/// about a minute to come back; if another process took the task meanwhile, that is an
/// error that is not retried. Does nothing while the connection is alive.
pub async fn reconnect(
    task: &str,
    side: Side,
    info: &ConnInfo,
    client: &mut PgClient,
) -> Result<()> {
    if !client.is_closed() {
        return Ok(());
    }
    *client = crate::retry::retried("reconnecting to the control schema", || async {
        let fresh = pgferry_pg::connect(side, info, &control_application_name()).await?;
        lock_task(&fresh, task, "run").await?;
        Ok(fresh)
    })
    .await?;
    tracing::info!(%side, "reconnected to the control schema and took the task lock again");
    Ok(())
}
