//! Exit codes, decided in one place so scripts can rely on them.

use pgferry_config::{ConfigError, ErrorKind};
use pgferry_engine::EngineError;
use pgferry_files::FilesError;
use pgferry_pg::PgError;

pub const OK: u8 = 0;
/// `validate` found tables that differ.
pub const DIFFERENCES: u8 = 1;
/// Bad usage or an invalid task file (clap also exits 2 on usage errors).
pub const USAGE: u8 = 2;
/// Cannot connect (or the connection was lost and did not come back within the retries),
/// or a prerequisite is missing: fix the environment, then run again.
pub const PREREQUISITE: u8 = 3;
/// The migration failed; its state is kept and `run` resumes.
pub const FAILED: u8 = 4;
/// Another process is running the task.
pub const BUSY: u8 = 5;
/// Interrupted by a signal; `run` resumes.
pub const INTERRUPTED: u8 = 130;

/// The kind of the first typed pgferry error in the chain; anything else failed.
fn kind_of(error: &anyhow::Error) -> ErrorKind {
    error
        .chain()
        .find_map(|e| {
            if let Some(e) = e.downcast_ref::<ConfigError>() {
                Some(e.kind())
            } else if let Some(e) = e.downcast_ref::<EngineError>() {
                Some(e.kind())
            } else if let Some(e) = e.downcast_ref::<PgError>() {
                Some(e.kind())
            } else if let Some(e) = e.downcast_ref::<FilesError>() {
                Some(e.kind())
            } else {
                e.downcast_ref::<pgferry_server::ServerError>()
                    .map(|e| e.kind())
            }
        })
        .unwrap_or(ErrorKind::Failed)
}

/// The exit code of a command that ended with `error`.
pub fn code_for(error: &anyhow::Error) -> u8 {
    match kind_of(error) {
        ErrorKind::Usage => USAGE,
        ErrorKind::Prerequisite | ErrorKind::Transient => PREREQUISITE,
        ErrorKind::Failed => FAILED,
        ErrorKind::Busy => BUSY,
        ErrorKind::Interrupted => INTERRUPTED,
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
