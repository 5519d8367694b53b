//! Errors of the engine. Each says what failed and on which object; [`EngineError::hint`]
//! says what to do.

use pgferry_config::ErrorKind;
use pgferry_config::MappingError;
use pgferry_pg::{PgError, QualifiedName, describe_pg_error};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Pg(#[from] PgError),

    #[error(
        "the target already holds {} of the selected tables: {}",
        tables.len(),
        list(tables)
    )]
    TablesInTheWay { tables: Vec<QualifiedName> },

    #[error("the selection matches no table on the source")]
    NothingSelected,

    /// A transformation or filter rule cannot be carried out on the source's tables, or
    /// two rules contradict each other.
    #[error(transparent)]
    Mapping(Box<MappingProblem>),

    #[error("{table} is selected, but it depends on {dependency}, which the selection leaves out")]
    MissingDependency { table: String, dependency: String },

    #[error(
        "the target's pgferry control schema is version {found}; this pgferry understands up \
         to version {supported}"
    )]
    ControlSchemaTooNew { found: i32, supported: i32 },

    #[error("task \"{task}\" is already running: {holder}")]
    TaskBusy {
        task: String,
        holder: String,
        /// What this process wanted to do: `run` or `cleanup`.
        wanted: &'static str,
    },

    /// The task's replication slot is gone or invalidated: it cannot stream again.
    #[error("task \"{task}\" cannot stream: {problem}")]
    CannotStream { task: String, problem: String },

    /// `run --start-over` does not apply to the task as it stands.
    #[error("task \"{task}\" cannot start over: {problem}")]
    CannotStartOver { task: String, problem: String },

    #[error("no task named \"{task}\" in the target's pgferry schema")]
    UnknownTask { task: String },

    #[error(
        "task \"{task}\" was started as {was}, but the task file now says {now}; a task's \
         migration type cannot change"
    )]
    TaskChanged {
        task: String,
        was: String,
        now: String,
    },

    #[error("restoring {entry} on the target failed: {message}")]
    SchemaRestore { entry: String, message: String },

    #[error("{failed} of {total} tables failed to load: {}", list_items(.tables))]
    LoadFailed {
        failed: usize,
        total: usize,
        tables: Vec<TableFailure>,
    },

    /// An earlier attempt's transaction still holds the chunk (its commit's outcome never
    /// reached pgferry): the retry waits for it to end rather than copy the rows twice.
    #[error("chunk {chunk_no} of {table} is held by an earlier attempt that has not ended yet")]
    ChunkBusy { table: String, chunk_no: i32 },

    /// The session that exported the load's snapshot is gone (the source restarted, say):
    /// no chunk can read it any more, and the load goes on from a new snapshot.
    #[error("the load's snapshot on the source is gone (its session ended)")]
    SnapshotLost,

    #[error("{} schema object(s) could not be created after the load: {}", .steps.len(), list_strs(.steps))]
    PostDataFailed { steps: Vec<String> },

    #[error("stopped by STOP_TASK: {operation} on {table} failed: {refusal}")]
    ApplyStopped {
        table: QualifiedName,
        operation: &'static str,
        #[source]
        refusal: Refusal,
    },

    #[error(
        "stopped by cdc.ddl_error_policy = STOP_TASK: the source's {tag} on {object} could not \
         be applied: {error}{}",
        statement.as_deref().map(|s| format!(" (statement: {s})")).unwrap_or_default()
    )]
    DdlStopped {
        tag: String,
        object: String,
        statement: Option<String>,
        error: String,
    },

    #[error("interrupted")]
    Interrupted,

    /// The task's cutover is done: the target is the application's database now.
    #[error("task \"{task}\" is cut over: the application writes to the target now")]
    CutOver { task: String },

    /// A cutover (or rollback, or finish) refused to start, or stopped before the side it
    /// opens was opened. `what` names the command.
    #[error("the {what} of task \"{task}\" cannot go on: {}", .problems.join("; "))]
    CutoverRefused {
        what: &'static str,
        task: String,
        problems: Vec<String>,
    },
}

/// Why the task's transformation and filter rules cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum MappingProblem {
    /// A rule does not fit a table (a column it names is missing, say).
    #[error(transparent)]
    Rule(#[from] MappingError),
    /// The source's parser rejects an `add-column` expression.
    #[error(
        "{origin}: the expression of column {column:?} is not valid SQL for {table}: {}",
        describe_pg_error(.source)
    )]
    Expression {
        origin: String,
        column: String,
        table: QualifiedName,
        #[source]
        source: tokio_postgres::Error,
    },
    /// An `add-column` expression is a list, not one value.
    #[error("{origin}: the expression of column {column:?} parses as {values} values, not one")]
    NotOneValue {
        origin: String,
        column: String,
        values: usize,
    },
    /// Two source tables would land in the same target table.
    #[error(
        "{first} and {second} would both become {target} on the target; change one of the \
         rules that rename them"
    )]
    SameTarget {
        first: QualifiedName,
        second: QualifiedName,
        target: QualifiedName,
    },
    /// Row filters are evaluated on text values, and the stream is binary.
    #[error(
        "a filter needs changes in text form, but this task's stream was set up in binary; \
         set cdc.binary = false, run `pgferry cleanup`, and start the task again"
    )]
    FilterNeedsText,
}

impl From<MappingProblem> for EngineError {
    fn from(p: MappingProblem) -> Self {
        EngineError::Mapping(Box::new(p))
    }
}

fn list(names: &[QualifiedName]) -> String {
    list_items(names)
}

/// A table whose load failed, with the error that ended its last attempt.
#[derive(Debug)]
pub struct TableFailure {
    pub table: QualifiedName,
    pub error: Box<EngineError>,
}

impl std::fmt::Display for TableFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.table, self.error)
    }
}

/// Why the target refused one streamed change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server rejected the statement: a key that already exists, or a value the
    /// column does not accept.
    #[error("{message}")]
    Server { sqlstate: String, message: String },
    /// An update or delete found no row to change.
    #[error("the row does not exist on the target")]
    RowMissing,
    /// An update brings a row into a filtered table's range, but left a large value
    /// unchanged, so the row cannot be built from the change.
    #[error(
        "the row enters the filter's range, but the change left a large value unchanged, so \
         the row cannot be built from it"
    )]
    UnchangedValueEntersFilter,
    /// The policy's second statement (an update as an insert, or the reverse) failed too.
    #[error("{first}; then {then}")]
    RetryFailed {
        first: Box<Refusal>,
        then: Box<Refusal>,
    },
}

fn list_items<T: ToString>(items: &[T]) -> String {
    list_strs(&items.iter().map(ToString::to_string).collect::<Vec<_>>())
}

fn list_strs(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

impl EngineError {
    /// What the user should do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            EngineError::Pg(e) => e.hint(),
            EngineError::TablesInTheWay { .. } => Some(
                "choose what to do with them in the task file: target_table_prep_mode = \
                 \"drop_and_create\" (replace them), \"truncate\" (keep their definition, empty \
                 them) or \"do_nothing\" (load into them as they are); or exclude them"
                    .to_owned(),
            ),
            EngineError::NothingSelected => Some(
                "check the [[include]] and [[exclude]] rules; patterns are case-sensitive and \
                 use % and _ as wildcards"
                    .to_owned(),
            ),
            EngineError::Mapping(_) => Some(
                "fix the rule in the task file or the DMS table-mappings file; `pgferry config \
                 explain --task FILE` shows every rule pgferry read"
                    .to_owned(),
            ),
            EngineError::MissingDependency { .. } => Some(
                "include the schema that holds the dependency, or exclude the table".to_owned(),
            ),
            EngineError::ControlSchemaTooNew { .. } => {
                Some("upgrade pgferry to the version that wrote this schema".to_owned())
            }
            EngineError::TaskBusy { wanted, .. } if *wanted == "cleanup" => Some(
                "stop it first (`pgferry stop --task FILE`), then clean up: cleanup drops the \
                 replication slot and publication that run is streaming from"
                    .to_owned(),
            ),
            EngineError::TaskBusy { .. } => Some(
                "one process runs a task at a time: wait for it to finish, or stop it with \
                 `pgferry stop --task FILE` (or Ctrl-C where it runs), then run again"
                    .to_owned(),
            ),
            EngineError::CannotStream { .. } => Some(
                "the target holds the tables as of the last change applied, and the changes \
                 since are gone with the slot. Start over: `pgferry run --task FILE \
                 --start-over` makes a new slot, keeps every table that still matches the \
                 source, copies the others again and streams from the new slot"
                    .to_owned(),
            ),
            EngineError::CannotStartOver { .. } => Some(
                "`pgferry status --task FILE` shows where the task stands; to begin afresh \
                 instead, `pgferry cleanup` and run the task under a new name with \
                 target_table_prep_mode = \"drop_and_create\""
                    .to_owned(),
            ),
            EngineError::UnknownTask { .. } => Some(
                "check the task name and the target connection, or start the task with \
                 `pgferry run`"
                    .to_owned(),
            ),
            EngineError::TaskChanged { task, .. } => Some(format!(
                "give the new task another name, or drop the old state with `pgferry reset \
                 --task ...` (task \"{task}\")"
            )),
            EngineError::SchemaRestore { .. } => Some(
                "fix the cause on the target (a missing extension or role, for example), then \
                 run again: pgferry resumes where it stopped"
                    .to_owned(),
            ),
            EngineError::LoadFailed { .. } | EngineError::PostDataFailed { .. } => Some(
                "`pgferry status` shows each error; fix the cause and run again: finished work \
                 is not repeated"
                    .to_owned(),
            ),
            EngineError::CutOver { .. } => Some(
                "`pgferry status --task FILE` shows the cutover's report; `pgferry rollback` \
                 returns to the source (when the cutover streams back), `pgferry finish` ends \
                 the migration and cleans up both sides"
                    .to_owned(),
            ),
            EngineError::CutoverRefused { what, .. } => Some(format!(
                "fix what is listed, then run `pgferry {what}` again; one that fenced resumes \
                 from its last step, and `pgferry {what} --abort` lifts the fence and lets \
                 streaming go on"
            )),
            EngineError::ChunkBusy { .. } => Some(
                "pgferry retries on its own; if this persists, look for an old pgferry session \
                 on the target (pg_stat_activity, application_name pgferry) and end it"
                    .to_owned(),
            ),
            EngineError::Interrupted => Some(
                "run the same command again to resume; finished work is not repeated".to_owned(),
            ),
            EngineError::SnapshotLost => Some(
                "the source restarted or ended the session that held the snapshot; run again: \
                 finished chunks stay, and the load goes on from a new snapshot"
                    .to_owned(),
            ),
            EngineError::ApplyStopped { .. } => Some(
                "the error policy says STOP_TASK; fix the target (or relax the policy in \
                 [error_behavior]) and run again: the change is applied again from the \
                 checkpoint"
                    .to_owned(),
            ),
            EngineError::DdlStopped { .. } => Some(
                "make the target able to take the change (or make it there by hand so that \
                 the statement is no longer needed, or set [cdc] ddl_error_policy = \
                 \"SUSPEND_TABLE\"), then run again: the schema change is applied again \
                 from the checkpoint"
                    .to_owned(),
            ),
        }
    }

    /// Whether the same work, tried again unchanged, may succeed: only a transient failure.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// What kind of failure this is; the exit code follows from it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Pg(e) => e.kind(),
            EngineError::NothingSelected
            | EngineError::TaskChanged { .. }
            | EngineError::Mapping(_) => ErrorKind::Usage,
            EngineError::TablesInTheWay { .. }
            | EngineError::MissingDependency { .. }
            | EngineError::ControlSchemaTooNew { .. }
            | EngineError::UnknownTask { .. }
            | EngineError::CannotStream { .. }
            | EngineError::CannotStartOver { .. }
            | EngineError::CutOver { .. }
            | EngineError::CutoverRefused { .. } => ErrorKind::Prerequisite,
            EngineError::TaskBusy { .. } => ErrorKind::Busy,
            EngineError::ChunkBusy { .. } => ErrorKind::Transient,
            EngineError::Interrupted => ErrorKind::Interrupted,
            EngineError::SchemaRestore { .. }
            | EngineError::LoadFailed { .. }
            | EngineError::PostDataFailed { .. }
            | EngineError::SnapshotLost
            | EngineError::ApplyStopped { .. }
            | EngineError::DdlStopped { .. } => ErrorKind::Failed,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
