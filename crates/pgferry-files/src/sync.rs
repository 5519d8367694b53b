//! `files sync`: list the destination once, walk the source in parallel, upload what is
//! new or changed with a fixed pool of workers, then (with `delete`) remove objects whose
//! files are gone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::pool::{self, lock};
use crate::remote::{self, RemoteObject};
use crate::upload::{Outcome, UploadSettings, Uploader};
use crate::walk::{self, Found, LocalFile};
use crate::{Destination, FilesError, Filter, Problem, Progress, hash};

/// What to sync and how.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub source: PathBuf,
    /// Requests in flight at once (and part buffers held at once).
    pub jobs: usize,
    /// Files up to this size go in one request; bigger ones in parts of this size.
    pub part_size: usize,
    /// Remove objects whose file no longer exists (only among files the filter includes).
    pub delete: bool,
    pub filter: Filter,
    /// User metadata sent with every upload.
    pub metadata: Vec<(String, String)>,
    pub storage_class: Option<String>,
    /// Compare content hashes instead of modification times when sizes are equal.
    pub checksum: bool,
    pub follow_symlinks: bool,
}

impl SyncOptions {
    /// Defaults: 16 requests in flight, 16 MiB parts (256 MiB of buffers at most).
    pub fn new(source: impl Into<PathBuf>) -> Self {
        SyncOptions {
            source: source.into(),
            jobs: 16,
            part_size: 16 << 20,
            delete: false,
            filter: Filter::default(),
            metadata: Vec::new(),
            storage_class: None,
            checksum: false,
            follow_symlinks: false,
        }
    }
}

/// The outcome of a sync, for the summary and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub source: String,
    pub destination: String,
    pub files_found: u64,
    pub bytes_found: u64,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub files_unchanged: u64,
    pub objects_deleted: u64,
    pub symlinks_skipped: u64,
    pub seconds: f64,
    /// Files that could not be synced; the rest of the tree was.
    pub problems: Vec<Problem>,
}

/// What to do with one file.
enum Job {
    Upload(LocalFile),
    /// Sizes match; upload only if the content hashes differ (`checksum`).
    CompareThenUpload(LocalFile),
}

/// Why a file is uploaded, the `aws s3 sync` way: no object, another size, or modified
/// after the object was written. S3 keeps whole seconds, so times compare in seconds
/// (otherwise a file written in the same second as its upload would go up twice).
fn needs_upload(file: &LocalFile, remote: Option<&RemoteObject>) -> bool {
    match remote {
        None => true,
        Some(r) if r.size != file.size => true,
        Some(r) => DateTime::<Utc>::from(file.modified).timestamp() > r.last_modified.timestamp(),
    }
}

/// Runs a sync. Progress is counted in `progress` as it goes.
pub async fn sync(
    dest: &Destination,
    options: &SyncOptions,
    progress: Arc<Progress>,
) -> Result<SyncReport, FilesError> {
    let started = Instant::now();
    check_options(dest, options)?;
    walk::check_root(&options.source)?;
    dest.check().await?;
    let mut remote = remote::list(dest).await?;

    let problems = Arc::new(Mutex::new(Vec::<Problem>::new()));
    let uploader = Arc::new(Uploader::new(
        dest.clone(),
        options.jobs,
        UploadSettings {
            part_size: options.part_size,
            metadata: options.metadata.clone(),
            storage_class: options.storage_class.clone(),
        },
        progress.clone(),
    ));
    let (job_tx, job_rx) = mpsc::channel::<Job>(options.jobs * 4);
    let workers = {
        let (problems, progress, dest) = (problems.clone(), progress.clone(), dest.clone());
        tokio::spawn(pool::for_each(options.jobs, job_rx, move |job| {
            let (uploader, problems, progress, dest) = (
                uploader.clone(),
                problems.clone(),
                progress.clone(),
                dest.clone(),
            );
            async move { run_job(job, &uploader, &problems, &progress, &dest).await }
        }))
    };

    // Walk and decide. Each file found is taken out of the listing; what is left at the
    // end has no file (candidates for --delete).
    let mut found = walk::spawn(
        options.source.clone(),
        options.filter.clone(),
        options.follow_symlinks,
        options.jobs.clamp(2, 8),
        progress.clone(),
    );
    let mut protected = Vec::<String>::new();
    while let Some(item) = found.recv().await {
        let job = match item {
            Found::Problem { problem, protect } => {
                protected.extend(protect);
                lock(&problems).push(problem);
                continue;
            }
            Found::File(file) => {
                let existing = remote.remove(&file.relative);
                if options.checksum && existing.as_ref().is_some_and(|r| r.size == file.size) {
                    Job::CompareThenUpload(file)
                } else if needs_upload(&file, existing.as_ref()) {
                    count_transfer(&progress, &file);
                    Job::Upload(file)
                } else {
                    Progress::add(&progress.files_unchanged, 1);
                    continue;
                }
            }
        };
        if job_tx.send(job).await.is_err() {
            break; // the workers stopped on an error, returned below
        }
    }
    drop(job_tx);
    drop(found);
    workers
        .await
        .map_err(|e| FilesError::bad_input(format!("the upload workers failed: {e}"), None))??;

    if options.delete {
        delete_missing(dest, options, remote, &protected, &progress).await?;
    }

    let mut problems = std::mem::take(&mut *lock(&problems));
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(SyncReport {
        source: options.source.display().to_string(),
        destination: dest.url().to_string(),
        files_found: Progress::get(&progress.files_found),
        bytes_found: Progress::get(&progress.bytes_found),
        files_uploaded: Progress::get(&progress.files_done),
        bytes_uploaded: Progress::get(&progress.bytes_done),
        files_unchanged: Progress::get(&progress.files_unchanged),
        objects_deleted: Progress::get(&progress.files_deleted),
        symlinks_skipped: Progress::get(&progress.symlinks_skipped),
        seconds: started.elapsed().as_secs_f64(),
        problems,
    })
}

/// Refuses options the destination cannot honour, before anything is read.
fn check_options(dest: &Destination, options: &SyncOptions) -> Result<(), FilesError> {
    if options.part_size < 5 << 20 {
        return Err(FilesError::bad_input(
            "the part size must be at least 5 MiB (S3's smallest multipart part)",
            Some("use --part-size 8MiB or more"),
        ));
    }
    if !options.metadata.is_empty() && !dest.supports_attributes() {
        return Err(FilesError::bad_input(
            "a local directory cannot store metadata",
            Some("drop --metadata, or sync to s3://"),
        ));
    }
    Ok(())
}

/// Uploads one file, or with `--checksum` first compares it and uploads it only if it
/// differs. A file that cannot be read is a problem recorded, not an error.
async fn run_job(
    job: Job,
    uploader: &Uploader,
    problems: &Mutex<Vec<Problem>>,
    progress: &Progress,
    dest: &Destination,
) -> Result<(), FilesError> {
    let file = match job {
        Job::Upload(file) => file,
        Job::CompareThenUpload(file) => {
            if same_content(dest, &file).await? {
                Progress::add(&progress.files_unchanged, 1);
                return Ok(());
            }
            count_transfer(progress, &file);
            file
        }
    };
    match uploader.upload(&file).await? {
        Outcome::Uploaded => Progress::add(&progress.files_done, 1),
        Outcome::Problem(p) => {
            Progress::add(&progress.problems, 1);
            lock(problems).push(p);
        }
    }
    Ok(())
}

/// `--checksum`: the stored hash (or, on a local directory, the content) against the file's.
async fn same_content(dest: &Destination, file: &LocalFile) -> Result<bool, FilesError> {
    let Ok(key) = dest.key(&file.relative) else {
        return Ok(false);
    };
    let remote = if dest.supports_attributes() {
        remote::stored_sha256(dest, &key).await?
    } else {
        Some(
            hash::of_object(dest.store.as_ref(), &key)
                .await
                .map_err(|e| dest.store_error(&format!("cannot read {key} in"), &e))?,
        )
    };
    let Some(remote) = remote else {
        return Ok(false);
    };
    match hash::of_file(&file.path).await {
        Ok((local, _)) => Ok(local == remote),
        Err(_) => Ok(false), // the upload reports the read error
    }
}

/// Deletes objects that have no file any more, except under paths the walk could not
/// read and paths the filter leaves out.
async fn delete_missing(
    dest: &Destination,
    options: &SyncOptions,
    remote: HashMap<String, RemoteObject>,
    protected: &[String],
    progress: &Progress,
) -> Result<(), FilesError> {
    let is_protected = |rel: &str| {
        protected.iter().any(|p| {
            rel == p
                || rel
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    let doomed: Vec<_> = remote
        .into_keys()
        .filter(|rel| options.filter.includes(rel) && !is_protected(rel))
        .filter_map(|rel| dest.key(&rel).ok())
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    let locations = futures_util::stream::iter(doomed.into_iter().map(Ok)).boxed();
    let mut results = dest.store.delete_stream(locations);
    while let Some(result) = results.next().await {
        match result {
            Ok(_) => Progress::add(&progress.files_deleted, 1),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(dest.store_error("cannot delete from", &e)),
        }
    }
    Ok(())
}

fn count_transfer(progress: &Progress, file: &LocalFile) {
    Progress::add(&progress.files_to_transfer, 1);
    Progress::add(&progress.bytes_to_transfer, file.size);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn file(size: u64, modified: SystemTime) -> LocalFile {
        LocalFile {
            relative: "a".into(),
            path: "a".into(),
            size,
            modified,
        }
    }

    #[test]
    fn new_bigger_or_newer_files_are_uploaded() {
        let written = SystemTime::now();
        let remote = RemoteObject {
            size: 10,
            last_modified: DateTime::<Utc>::from(written),
        };
        assert!(needs_upload(&file(10, written), None));
        assert!(needs_upload(&file(11, written), Some(&remote)));
        assert!(needs_upload(
            &file(10, written + Duration::from_secs(1)),
            Some(&remote)
        ));
        assert!(!needs_upload(
            &file(10, written - Duration::from_secs(60)),
            Some(&remote)
        ));
        assert!(!needs_upload(&file(10, written), Some(&remote)));
        let truncated = RemoteObject {
            size: 10,
            last_modified: DateTime::from_timestamp(DateTime::<Utc>::from(written).timestamp(), 0)
                .unwrap(),
        };
        assert!(!needs_upload(&file(10, written), Some(&truncated)));
    }
}
