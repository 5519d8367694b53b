//! Errors that stop a sync, and problems that are reported while the rest goes on.

use std::path::PathBuf;

use pgferry_config::ErrorKind;
use serde::Serialize;

/// Why a sync or verify could not run at all. Each names what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The command line or its values cannot work.
    #[error("{message}")]
    BadInput {
        message: String,
        hint: Option<String>,
    },

    /// The source directory cannot be read.
    #[error("cannot read the source directory {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The destination refused or could not be reached.
    #[error("{what}: {detail}")]
    Store {
        what: String,
        detail: String,
        hint: Option<String>,
    },
}

impl FilesError {
    /// What the user should do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            FilesError::BadInput { hint, .. } | FilesError::Store { hint, .. } => hint.clone(),
            FilesError::Source { .. } => Some("check the path and its permissions".into()),
        }
    }

    /// An unreadable source or a destination that refuses (unreachable endpoint,
    /// credentials, a missing bucket) is the environment's; a bad value is the command
    /// line's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FilesError::BadInput { .. } => ErrorKind::Usage,
            FilesError::Store { .. } | FilesError::Source { .. } => ErrorKind::Prerequisite,
        }
    }

    pub(crate) fn bad_input(message: impl Into<String>, hint: Option<&str>) -> Self {
        FilesError::BadInput {
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
}

/// A file that could not be synced or checked; the rest of the tree goes on.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The local path, as far as it can be printed.
    pub path: String,
    pub reason: String,
}
