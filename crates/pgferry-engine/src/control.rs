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

use pgferry_pg::{ConnInfo, PgClient, PgError, Side};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::error::{EngineError, Result};

/// The newest layout this build understands.
pub const CONTROL_SCHEMA_VERSION: i32 = 7;

/// Advisory lock class for pgferry: "pgfr" in ASCII. The second key is the task name's hash.
pub const LOCK_CLASS: i32 = 0x7067_6672;

/// Each migration moves the layout from version N to N+1.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE pgferry.task (
    name text PRIMARY KEY,
    migration_type text NOT NULL,
    settings jsonb NOT NULL,
    phase text NOT NULL,
    source text NOT NULL,
    target text NOT NULL,
    schema_archive bytea,
    schema_preamble text,
    existing_tables jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    load_started_at timestamptz,
    load_finished_at timestamptz,
    finished_at timestamptz,
    last_error text
);
COMMENT ON TABLE pgferry.task IS 'One row per pgferry task: what it moves and how far it got.';

CREATE TABLE pgferry.table_state (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    table_id integer NOT NULL,
    source_schema text NOT NULL,
    source_table text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    dump_id integer,
    state text NOT NULL DEFAULT 'pending',
    copy_format text NOT NULL,
    columns jsonb NOT NULL,
    estimated_rows bigint,
    estimated_bytes bigint NOT NULL,
    rows_copied bigint NOT NULL DEFAULT 0,
    bytes_copied bigint NOT NULL DEFAULT 0,
    chunks_total integer NOT NULL,
    chunks_done integer NOT NULL DEFAULT 0,
    existed_before boolean NOT NULL DEFAULT false,
    analyzed boolean NOT NULL DEFAULT false,
    started_at timestamptz,
    finished_at timestamptz,
    last_error text,
    PRIMARY KEY (task, table_id)
);

CREATE TABLE pgferry.chunk (
    task text NOT NULL,
    table_id integer NOT NULL,
    chunk_no integer NOT NULL,
    start_block bigint,
    end_block bigint,
    state text NOT NULL DEFAULT 'pending',
    rows bigint,
    bytes bigint,
    attempts integer NOT NULL DEFAULT 0,
    seconds double precision,
    finished_at timestamptz,
    PRIMARY KEY (task, table_id, chunk_no),
    FOREIGN KEY (task, table_id) REFERENCES pgferry.table_state ON DELETE CASCADE
);

CREATE TABLE pgferry.schema_step (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    dump_id integer NOT NULL,
    section text NOT NULL,
    ordinal integer NOT NULL,
    phase integer NOT NULL,
    kind text NOT NULL,
    label text NOT NULL,
    depends_on integer[] NOT NULL DEFAULT '{}',
    weight bigint NOT NULL DEFAULT 0,
    sql text NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    note text,
    seconds double precision,
    finished_at timestamptz,
    PRIMARY KEY (task, dump_id)
);

CREATE TABLE pgferry.event (
    id bigserial PRIMARY KEY,
    task text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    level text NOT NULL,
    kind text NOT NULL,
    message text NOT NULL,
    detail jsonb
);
CREATE INDEX event_task_id ON pgferry.event (task, id);

CREATE TABLE pgferry.validation (
    task text NOT NULL,
    source_schema text NOT NULL,
    source_table text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL,
    source_rows bigint,
    target_rows bigint,
    detail text,
    PRIMARY KEY (task, source_schema, source_table)
);
"#,
    r#"
CREATE TABLE pgferry.cdc_state (
    task text PRIMARY KEY REFERENCES pgferry.task ON DELETE CASCADE,
    slot_name text NOT NULL,
    publication text NOT NULL,
    publication_created boolean NOT NULL,
    consistent_lsn pg_lsn NOT NULL,
    applied_lsn pg_lsn,
    applied_commit_time timestamptz,
    received_lsn pg_lsn,
    inserts bigint NOT NULL DEFAULT 0,
    updates bigint NOT NULL DEFAULT 0,
    deletes bigint NOT NULL DEFAULT 0,
    truncates bigint NOT NULL DEFAULT 0,
    transactions bigint NOT NULL DEFAULT 0,
    exceptions bigint NOT NULL DEFAULT 0,
    source_latency_ms bigint,
    target_latency_ms bigint,
    wal_retained_bytes bigint,
    binary_mode boolean,
    stop_requested boolean NOT NULL DEFAULT false,
    streaming_since timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgferry.cdc_state IS
    'Change data capture per task; applied_lsn is the exactly-once checkpoint, written in the same transaction as the changes it covers.';

-- No reference to pgferry.task: a change is recorded before the task row exists, and the
-- record must outlive a planning that fails, so that cleanup can still undo it.
CREATE TABLE pgferry.replica_identity_change (
    task text NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    original text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, schema_name, table_name)
);

CREATE TABLE pgferry.apply_exceptions (
    id bigserial PRIMARY KEY,
    task text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    commit_lsn pg_lsn,
    xid bigint,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    operation text NOT NULL,
    policy text NOT NULL,
    error text NOT NULL,
    change jsonb
);
CREATE INDEX apply_exceptions_task_id ON pgferry.apply_exceptions (task, id);

CREATE TABLE pgferry.cdc_table (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    excluded boolean NOT NULL DEFAULT false,
    suspended boolean NOT NULL DEFAULT false,
    suspended_reason text,
    snapshot_filter text,
    PRIMARY KEY (task, schema_name, table_name)
);
COMMENT ON TABLE pgferry.cdc_table IS
    'Per published relation (the root, for partitions): left out, suspended, or copied from a later snapshot than the stream start (snapshot_filter, xmin:xmax:xip), whose transactions are then not applied again.';

ALTER TABLE pgferry.table_state
    ADD COLUMN root_schema text,
    ADD COLUMN root_table text;
"#,
    r#"
ALTER TABLE pgferry.table_state
    ADD COLUMN target_columns jsonb,
    ADD COLUMN row_filter text;
"#,
    r#"
CREATE TABLE pgferry.alarm (
    task text NOT NULL REFERENCES pgferry.task ON DELETE CASCADE,
    name text NOT NULL,
    state text NOT NULL,
    reason text NOT NULL,
    since timestamptz NOT NULL,
    value double precision,
    rule jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, name)
);
COMMENT ON TABLE pgferry.alarm IS
    'Each alarm''s rule and current state; its state changes are in pgferry.event (kind alarm).';
"#,
    r#"
ALTER TABLE pgferry.cdc_state ADD COLUMN start_over_since timestamptz;
COMMENT ON COLUMN pgferry.cdc_state.start_over_since IS
    'Set while `pgferry run --start-over` replaces a lost slot: the slot on the source may already be the new one, so the checkpoint must not be used with it.';
"#,
    r#"
ALTER TABLE pgferry.table_state
    ADD COLUMN split_key jsonb,
    ADD COLUMN split_note text;
ALTER TABLE pgferry.chunk
    ADD COLUMN key_lo text,
    ADD COLUMN key_hi text;
COMMENT ON COLUMN pgferry.table_state.split_key IS
    'The key column of key-range chunks (chunk.key_lo <= key < chunk.key_hi, NULL for an open end).';
COMMENT ON COLUMN pgferry.table_state.split_note IS
    'Why a table bigger than one chunk is copied in one piece.';
"#,
    r#"
ALTER TABLE pgferry.chunk ADD COLUMN snapshot_filter text;
COMMENT ON COLUMN pgferry.chunk.snapshot_filter IS
    'For a chunk of an integer-key-split table copied from a later snapshot than the stream''s start (a resumed load): that snapshot (xmin:xmax:xip), whose transactions are not applied again to rows of the chunk''s key range.';
"#,
];

/// Maps an error of a statement on the control schema, which always lives on the target.
fn target_err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> EngineError + use<> {
    let context = context.to_owned();
    move |e| EngineError::Pg(PgError::query(Side::Target, context, e))
}

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

/// Takes the run lock of `task` on this connection, or says who holds it.
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

/// Takes the task's lock for `wanted` (`run`, `cleanup`), or says who holds it.
pub async fn lock_task(client: &PgClient, task: &str, wanted: &'static str) -> Result<()> {
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

/// Where a task is. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The plan and schema are stored; the pre-data schema is not restored yet.
    Planned,
    /// Tables exist on the target; chunks are being copied.
    Loading,
    /// All rows are copied; indexes, constraints and the rest are being built.
    PostData,
    /// Sequences and statistics.
    Finishing,
    /// Streaming changes (full-load-and-cdc, cdc).
    Cdc,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Loading => "loading",
            Phase::PostData => "post-data",
            Phase::Finishing => "finishing",
            Phase::Cdc => "cdc",
            Phase::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "planned" => Phase::Planned,
            "loading" => Phase::Loading,
            "post-data" => Phase::PostData,
            "finishing" => Phase::Finishing,
            "cdc" => Phase::Cdc,
            "done" => Phase::Done,
            _ => return None,
        })
    }
}

/// The stored row of a task.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub name: String,
    pub migration_type: String,
    pub phase: Phase,
    pub settings: serde_json::Value,
    pub schema_archive: Option<Vec<u8>>,
    pub schema_preamble: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub load_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub load_finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub source: String,
    pub target: String,
}

pub async fn load_task(client: &PgClient, task: &str) -> Result<Option<TaskRow>> {
    let row = client
        .query_opt(
            "reading the task",
            "SELECT name, migration_type, phase, settings, schema_archive, schema_preamble,
                    created_at, updated_at, load_started_at, load_finished_at, finished_at,
                    last_error, source, target
             FROM pgferry.task WHERE name = $1",
            &[&task],
        )
        .await?;
    Ok(row.map(|r| TaskRow {
        name: r.get(0),
        migration_type: r.get(1),
        phase: Phase::parse(r.get::<_, &str>(2)).unwrap_or(Phase::Planned),
        settings: r.get(3),
        schema_archive: r.get(4),
        schema_preamble: r.get(5),
        created_at: r.get(6),
        updated_at: r.get(7),
        load_started_at: r.get(8),
        load_finished_at: r.get(9),
        finished_at: r.get(10),
        last_error: r.get(11),
        source: r.get(12),
        target: r.get(13),
    }))
}

/// After the target went away (a restart, a failover), a new control connection, which
/// takes the task lock again: the old one died with its session. The target is given
/// about a minute to come back; if another process took the task meanwhile, that is an
/// error that is not retried. Does nothing while the connection is alive.
pub async fn reconnect(task: &str, target: &ConnInfo, client: &mut PgClient) -> Result<()> {
    if !client.is_closed() {
        return Ok(());
    }
    *client = crate::load::retried("reconnecting to the target", || async {
        let fresh = pgferry_pg::connect(Side::Target, target, &control_application_name()).await?;
        lock_task(&fresh, task, "run").await?;
        Ok(fresh)
    })
    .await?;
    tracing::info!("reconnected to the target and took the task lock again");
    Ok(())
}

/// Moves the task to `phase` and commits at once, synchronously. Chunks and schema steps
/// commit asynchronously (their rows and their done mark together, so a crash loses both
/// or neither); a synchronous commit flushes the WAL up to itself, which makes every
/// earlier commit durable with it. So once a phase change is acknowledged, everything the
/// phase before it recorded as done survives any crash of the target. Callers check the
/// control schema, never their memory, before they call this (`build::load_done`).
pub async fn advance_phase(client: &mut PgClient, task: &str, phase: Phase) -> Result<()> {
    let tx = client
        .raw_mut()
        .transaction()
        .await
        .map_err(target_err("recording the task's phase"))?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(target_err("recording the task's phase"))?;
    set_phase(&tx, task, phase).await?;
    tx.commit()
        .await
        .map_err(target_err("recording the task's phase"))
}

/// Marks tables (emptied by the caller, in the same transaction) as not copied yet: all
/// their chunks pending, their counters at zero.
pub async fn mark_pending(tx: &impl GenericClient, task: &str, table_ids: &[i32]) -> Result<()> {
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "resetting tables", e));
    tx.execute(
        "UPDATE pgferry.chunk SET state = 'pending', rows = NULL, bytes = NULL,
                seconds = NULL, finished_at = NULL
         WHERE task = $1 AND table_id = ANY($2)",
        &[&task, &table_ids],
    )
    .await
    .map_err(err)?;
    tx.execute(
        "UPDATE pgferry.table_state SET chunks_done = 0, rows_copied = 0,
                bytes_copied = 0, state = 'pending', analyzed = false,
                started_at = NULL, finished_at = NULL, last_error = NULL
         WHERE task = $1 AND table_id = ANY($2)",
        &[&task, &table_ids],
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Records the planned tables and their chunks, inside the planning transaction. Returns
/// how many chunks. `existing` are the targets that were there before the load, `dump_ids`
/// the TABLE entries of the schema dump, `roots` the partitioned table of each partition.
pub async fn store_tables(
    tx: &impl GenericClient,
    task: &str,
    planned: &[crate::plan::PlannedTable],
    existing: &std::collections::HashSet<&pgferry_pg::QualifiedName>,
    dump_ids: &std::collections::HashMap<u32, i32>,
    roots: &std::collections::HashMap<u32, pgferry_pg::QualifiedName>,
) -> Result<usize> {
    const CONTEXT: &str = "storing the plan";
    let insert_table = tx
        .prepare(
            "INSERT INTO pgferry.table_state (task, table_id, source_schema, source_table,
                 target_schema, target_table, copy_format, columns, estimated_rows,
                 estimated_bytes, chunks_total, existed_before, dump_id, root_schema,
                 root_table, target_columns, row_filter, split_key, split_note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $19)",
        )
        .await
        .map_err(target_err(CONTEXT))?;
    let insert_chunk = tx
        .prepare(
            "INSERT INTO pgferry.chunk (task, table_id, chunk_no, start_block, end_block,
                                        key_lo, key_hi)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(target_err(CONTEXT))?;
    let mut chunk_count = 0;
    for t in planned {
        let columns = serde_json::to_value(&t.columns).unwrap_or_default();
        tx.execute(
            &insert_table,
            &[
                &task,
                &t.table_id,
                &t.source.schema,
                &t.source.name,
                &t.target.schema,
                &t.target.name,
                &t.format.as_str(),
                &columns,
                &t.estimated_rows,
                &t.estimated_bytes,
                &(t.chunks.len() as i32),
                &existing.contains(&t.target),
                &dump_ids.get(&t.source_oid),
                &roots.get(&t.source_oid).map(|r| r.schema.clone()),
                &roots.get(&t.source_oid).map(|r| r.name.clone()),
                &serde_json::to_value(&t.target_columns).unwrap_or_default(),
                &t.filter,
                &t.split_key
                    .as_ref()
                    .and_then(|k| serde_json::to_value(k).ok()),
                &t.split_note,
            ],
        )
        .await
        .map_err(target_err(CONTEXT))?;
        for (i, range) in t.chunks.iter().enumerate() {
            let (start, end, lo, hi) = match range {
                Some(pgferry_pg::copy::ChunkRange::Blocks(b)) => (Some(b.start), b.end, None, None),
                Some(pgferry_pg::copy::ChunkRange::Key(k)) => {
                    (None, None, k.lo.clone(), k.hi.clone())
                }
                None => (None, None, None, None),
            };
            tx.execute(
                &insert_chunk,
                &[&task, &t.table_id, &(i as i32), &start, &end, &lo, &hi],
            )
            .await
            .map_err(target_err(CONTEXT))?;
            chunk_count += 1;
        }
    }
    Ok(chunk_count)
}

/// Moves the task to `phase` inside the caller's transaction, stamping the matching times.
/// The caller commits, synchronously (see [`advance_phase`]).
pub async fn set_phase(client: &impl GenericClient, task: &str, phase: Phase) -> Result<()> {
    client
        .execute(
            "UPDATE pgferry.task SET phase = $2, updated_at = now(),
                    load_started_at = CASE WHEN $2 = 'loading'
                        THEN coalesce(load_started_at, now()) ELSE load_started_at END,
                    load_finished_at = CASE WHEN $2 = 'post-data'
                        THEN coalesce(load_finished_at, now()) ELSE load_finished_at END,
                    finished_at = CASE WHEN $2 = 'done' THEN now() ELSE finished_at END,
                    last_error = NULL
             WHERE name = $1",
            &[&task, &phase.as_str()],
        )
        .await
        .map_err(target_err("recording the task's phase"))?;
    Ok(())
}

/// Records the error that stopped a run, for `status`.
pub async fn set_last_error(client: &PgClient, task: &str, message: &str) -> Result<()> {
    client
        .execute(
            "recording the task's error",
            "UPDATE pgferry.task SET last_error = $2, updated_at = now() WHERE name = $1",
            &[&task, &message],
        )
        .await?;
    Ok(())
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// Appends to the task's event log. Events are for people: what happened, in words.
pub async fn event(
    client: &impl GenericClient,
    task: &str,
    level: Level,
    kind: &str,
    message: &str,
    detail: Option<serde_json::Value>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO pgferry.event (task, level, kind, message, detail)
             VALUES ($1, $2, $3, $4, $5)",
            &[&task, &level.as_str(), &kind, &message, &detail],
        )
        .await
        .map_err(target_err("writing to the event log"))?;
    Ok(())
}

/// Says `message` as a warning: in the log now, and in the task's event log for `status`.
pub async fn warn(client: &PgClient, task: &str, kind: &str, message: &str) -> Result<()> {
    tracing::warn!("{message}");
    event(client.raw(), task, Level::Warning, kind, message, None).await
}

/// One entry of the event log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub level: String,
    pub kind: String,
    pub message: String,
}

pub async fn recent_events(client: &PgClient, task: &str, limit: i64) -> Result<Vec<Event>> {
    let rows = client
        .query(
            "reading the event log",
            "SELECT id, at, level, kind, message FROM (
                 SELECT * FROM pgferry.event WHERE task = $1 ORDER BY id DESC LIMIT $2
             ) e ORDER BY id",
            &[&task, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Event {
            id: r.get(0),
            at: r.get(1),
            level: r.get(2),
            kind: r.get(3),
            message: r.get(4),
        })
        .collect())
}

/// Marks a chunk done and adds its counts to its table, inside the transaction that
/// copied its rows.
pub async fn finish_chunk(
    tx: &impl GenericClient,
    task: &str,
    table_id: i32,
    chunk_no: i32,
    rows: i64,
    bytes: i64,
    seconds: f64,
) -> Result<()> {
    tx.execute(
        "WITH c AS (
             UPDATE pgferry.chunk SET state = 'done', rows = $4, bytes = $5, seconds = $6,
                    finished_at = clock_timestamp(), attempts = attempts + 1
             WHERE task = $1 AND table_id = $2 AND chunk_no = $3 AND state <> 'done'
             RETURNING 1)
         UPDATE pgferry.table_state t
            SET rows_copied = rows_copied + $4, bytes_copied = bytes_copied + $5,
                chunks_done = chunks_done + 1,
                state = CASE WHEN chunks_done + 1 >= chunks_total THEN 'loaded' ELSE 'loading' END,
                started_at = coalesce(started_at, now()),
                finished_at = CASE WHEN chunks_done + 1 >= chunks_total THEN clock_timestamp() END,
                last_error = NULL
          WHERE t.task = $1 AND t.table_id = $2 AND EXISTS (SELECT 1 FROM c)",
        &[&task, &table_id, &chunk_no, &rows, &bytes, &seconds],
    )
    .await
    .map_err(target_err("recording a finished chunk"))?;
    Ok(())
}

/// Records a failed chunk attempt on its table, outside the failed transaction.
pub async fn fail_chunk(
    client: &PgClient,
    task: &str,
    table_id: i32,
    chunk_no: i32,
    message: &str,
) -> Result<()> {
    client
        .execute(
            "recording a failed chunk",
            "WITH c AS (UPDATE pgferry.chunk SET attempts = attempts + 1
                        WHERE task = $1 AND table_id = $2 AND chunk_no = $3 RETURNING 1)
             UPDATE pgferry.table_state SET state = 'failed', last_error = $4
             WHERE task = $1 AND table_id = $2",
            &[&task, &table_id, &chunk_no, &message],
        )
        .await?;
    Ok(())
}
