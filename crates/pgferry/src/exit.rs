//! Exit codes, decided in one place so scripts can rely on them.

use pgferry_config::ConfigError;
use pgferry_engine::EngineError;
use pgferry_files::FilesError;
use pgferry_pg::PgError;

pub const OK: u8 = 0;
/// `validate` found tables that differ.
pub const DIFFERENCES: u8 = 1;
/// Bad usage or an invalid task file (clap also exits 2 on usage errors).
pub const USAGE: u8 = 2;
/// Cannot connect, or a prerequisite is missing: fix the environment, then run again.
pub const PREREQUISITE: u8 = 3;
/// The migration failed; its state is kept and `run` resumes.
pub const FAILED: u8 = 4;
/// Another process is running the task.
pub const BUSY: u8 = 5;
/// Interrupted by a signal; `run` resumes.
pub const INTERRUPTED: u8 = 130;

fn pg_code(e: &PgError) -> u8 {
    match e {
        PgError::ConnInfo { .. } => USAGE,
        PgError::Unreachable { .. }
        | PgError::TooManyConnections { .. }
        | PgError::AuthFailed { .. }
        | PgError::DatabaseMissing { .. }
        | PgError::Tls { .. }
        | PgError::Prerequisite { .. }
        | PgError::Tool { .. } => PREREQUISITE,
        PgError::Query { .. }
        | PgError::Server { .. }
        | PgError::Protocol { .. }
        | PgError::Io { .. } => FAILED,
    }
}

pub fn code_for(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<ConfigError>().is_some() {
        return USAGE;
    }
    if let Some(e) = error.downcast_ref::<PgError>() {
        return pg_code(e);
    }
    if let Some(e) = error.downcast_ref::<pgferry_server::ServerError>() {
        return match e {
            pgferry_server::ServerError::TokenNeeded(_) => USAGE,
            pgferry_server::ServerError::Bind { .. } => PREREQUISITE,
        };
    }
    if let Some(e) = error.downcast_ref::<FilesError>() {
        return if e.is_prerequisite() {
            PREREQUISITE
        } else {
            USAGE
        };
    }
    match error.downcast_ref::<EngineError>() {
        Some(EngineError::Pg(e)) => pg_code(e),
        Some(
            EngineError::NothingSelected
            | EngineError::TaskChanged { .. }
            | EngineError::Mapping(_),
        ) => USAGE,
        Some(
            EngineError::TablesInTheWay { .. }
            | EngineError::MissingDependency { .. }
            | EngineError::ControlSchemaTooNew { .. }
            | EngineError::UnknownTask { .. }
            | EngineError::CannotStream { .. }
            | EngineError::CannotStartOver { .. },
        ) => PREREQUISITE,
        Some(EngineError::TaskBusy { .. }) => BUSY,
        Some(EngineError::Interrupted) => INTERRUPTED,
        Some(
            EngineError::SchemaRestore { .. }
            | EngineError::LoadFailed { .. }
            | EngineError::PostDataFailed { .. }
            | EngineError::SnapshotLost
            | EngineError::ApplyStopped { .. },
        ) => FAILED,
        None => FAILED,
    }
}

fn hint_for(error: &anyhow::Error) -> Option<String> {
    if let Some(e) = error.downcast_ref::<EngineError>() {
        return e.hint();
    }
    if let Some(e) = error.downcast_ref::<PgError>() {
        return e.hint();
    }
    if let Some(e) = error.downcast_ref::<FilesError>() {
        return e.hint();
    }
    None
}

/// Prints one clear message: what failed, then what to do. Never a backtrace. With
/// `--json`, the same as an object on standard output for scripts.
pub fn report(error: &anyhow::Error, code: u8, json: bool) {
    crate::progress::clear();
    // A hint is prose: one space between words, whatever line breaks its source had.
    let hint = hint_for(error).map(|h| h.split_whitespace().collect::<Vec<_>>().join(" "));
    eprintln!("error: {error}");
    if let Some(hint) = &hint {
        eprintln!("  hint: {hint}");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "error": error.to_string(),
                "hint": hint,
                "exit_code": code,
            })
        );
    }
}
