//! A parallel walk of the source tree. It streams what it finds through a bounded channel,
//! so a tree of millions of files never sits in memory at once, and reports what it
//! cannot use (unreadable directories, broken links, names that are not UTF-8) without
//! stopping.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ignore::{WalkBuilder, WalkState};
use tokio::sync::mpsc;

use crate::{Filter, Problem, Progress};

/// A regular file to sync.
#[derive(Debug, Clone)]
pub(crate) struct LocalFile {
    /// `/`-separated path relative to the source root: the object key's tail.
    pub relative: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug)]
pub(crate) enum Found {
    File(LocalFile),
    /// Something that cannot be synced. `protect` is a relative path whose objects must
    /// not be deleted, since the source could not be read there.
    Problem {
        problem: Problem,
        protect: Option<String>,
    },
}

/// Checks the root before walking, so a wrong path is one clear error.
pub(crate) fn check_root(root: &Path) -> Result<(), crate::FilesError> {
    let meta = std::fs::metadata(root).map_err(|source| crate::FilesError::Source {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(crate::FilesError::bad_input(
            format!("the source {} is not a directory", root.display()),
            Some("give the directory that holds the files"),
        ));
    }
    Ok(())
}

/// The `/`-separated relative path, or `None` when a component is not UTF-8.
fn relative_of(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// Starts the walk on blocking threads. The receiver ends when the walk is done.
pub(crate) fn spawn(
    root: PathBuf,
    filter: Filter,
    follow_symlinks: bool,
    threads: usize,
    progress: Arc<Progress>,
) -> mpsc::Receiver<Found> {
    let (tx, rx) = mpsc::channel(4096);
    tokio::task::spawn_blocking(move || {
        let walker = WalkBuilder::new(&root)
            .standard_filters(false)
            .hidden(false)
            .follow_links(follow_symlinks)
            .threads(threads)
            .build_parallel();
        walker.run(|| {
            let tx = tx.clone();
            let root = root.clone();
            let filter = filter.clone();
            let progress = progress.clone();
            Box::new(move |entry| {
                let found = match entry {
                    Ok(entry) => classify(&root, &filter, &progress, &entry),
                    Err(error) => Some(walk_problem(&root, error)),
                };
                if let Some(found) = found {
                    if let Found::Problem { .. } = found {
                        Progress::add(&progress.problems, 1);
                    }
                    if tx.blocking_send(found).is_err() {
                        return WalkState::Quit;
                    }
                }
                WalkState::Continue
            })
        });
        progress
            .walk_done
            .store(true, std::sync::atomic::Ordering::Relaxed);
    });
    rx
}

fn classify(
    root: &Path,
    filter: &Filter,
    progress: &Progress,
    entry: &ignore::DirEntry,
) -> Option<Found> {
    let file_type = entry.file_type()?; // None only for stdin
    if file_type.is_dir() {
        return None;
    }
    let path = entry.path();
    let Some(relative) = relative_of(root, path) else {
        return Some(Found::Problem {
            problem: Problem {
                path: path.display().to_string(),
                reason: "the name is not valid UTF-8, so it cannot be an object key; rename it"
                    .into(),
            },
            protect: None,
        });
    };
    if !filter.includes(&relative) {
        return None;
    }
    if file_type.is_symlink() {
        Progress::add(&progress.symlinks_skipped, 1);
        return None;
    }
    if !file_type.is_file() {
        return Some(Found::Problem {
            problem: Problem {
                path: path.display().to_string(),
                reason: "not a regular file (socket, FIFO or device); skipped".into(),
            },
            protect: Some(relative),
        });
    }
    match entry.metadata() {
        Ok(meta) => {
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Progress::add(&progress.files_found, 1);
            Progress::add(&progress.bytes_found, meta.len());
            Some(Found::File(LocalFile {
                relative,
                path: path.to_path_buf(),
                size: meta.len(),
                modified,
            }))
        }
        Err(e) => Some(Found::Problem {
            problem: Problem {
                path: path.display().to_string(),
                reason: format!("cannot read its metadata: {e}"),
            },
            protect: Some(relative),
        }),
    }
}

/// Describes a walk error. Errors carry the path they concern (possibly nested).
fn walk_problem(root: &Path, error: ignore::Error) -> Found {
    fn path_of(e: &ignore::Error) -> Option<&Path> {
        match e {
            ignore::Error::WithPath { path, .. } => Some(path),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                path_of(err)
            }
            ignore::Error::Loop { child, .. } => Some(child),
            _ => None,
        }
    }
    let path = path_of(&error).map(Path::to_path_buf);
    let protect = path.as_deref().and_then(|p| relative_of(root, p));
    let reason = match error.io_error().map(std::io::Error::kind) {
        Some(std::io::ErrorKind::NotFound) => {
            "a broken symbolic link (its target does not exist); skipped".to_string()
        }
        Some(std::io::ErrorKind::PermissionDenied) => {
            "permission denied; skipped, and nothing under it is deleted from the destination"
                .to_string()
        }
        _ => format!("{error}"),
    };
    Found::Problem {
        problem: Problem {
            path: path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| root.display().to_string()),
            reason,
        },
        protect,
    }
}
