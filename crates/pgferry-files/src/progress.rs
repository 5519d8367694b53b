//! Counters a sync or verify updates as it goes, for progress bars and metrics. Reading
//! them never blocks the work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live counts. Totals grow while the directory walk runs; `walk_done` says when they
/// are final (and an ETA means something).
#[derive(Debug, Default)]
pub struct Progress {
    /// Files found in the source (after filters).
    pub files_found: AtomicU64,
    pub bytes_found: AtomicU64,
    /// Files that need an upload (new or changed), and their bytes.
    pub files_to_transfer: AtomicU64,
    pub bytes_to_transfer: AtomicU64,
    /// Uploaded (or, for verify, checked) so far.
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    /// Already identical in the destination.
    pub files_unchanged: AtomicU64,
    pub files_deleted: AtomicU64,
    /// Files skipped with a problem, and symbolic links skipped.
    pub problems: AtomicU64,
    pub symlinks_skipped: AtomicU64,
    pub walk_done: AtomicBool,
}

impl Progress {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
