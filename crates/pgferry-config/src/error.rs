use std::path::PathBuf;

/// Everything that can be wrong with a task file. Each variant names the file and, where it
/// can, the key, so the user knows exactly what to edit.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read task file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or a value has the wrong type. `message` is the parser's own
    /// report, which carries the line, the column and a snippet.
    #[error("task file {path} is not valid:\n{message}")]
    Parse { path: PathBuf, message: String },
    /// A DMS JSON file is malformed or says something pgferry cannot do; the message names
    /// the file, the line and the JSON path.
    #[error("{0}")]
    Dms(String),
    #[error("task file {path}: `{key}` {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// Config errors are the user's to fix: retrying never helps.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Usage
    }
}

/// What kind of failure an error is, for every error type in pgferry. Whether a retry loop
/// tries again and which exit code a command ends with both follow from it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The command line or the task file cannot work: fix it.
    Usage,
    /// The environment is missing something (a privilege, a setting, a reachable server
    /// that accepts the password): fix it, then run again.
    Prerequisite,
    /// A connection dropped or a server is restarting: the same work may succeed if tried
    /// again, and retry loops do so.
    Transient,
    /// The work itself failed (a table that could not be loaded, a change the target
    /// rejects under STOP_TASK); the state is kept and a later run resumes.
    Failed,
    /// Another process holds the task.
    Busy,
    /// A signal stopped it; running the same command again resumes.
    Interrupted,
}

impl ErrorKind {
    /// Whether trying the same work again, unchanged, may succeed.
    pub fn is_retryable(self) -> bool {
        self == ErrorKind::Transient
    }
}
