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
    pub fn is_retryable(&self) -> bool {
        false
    }
}
