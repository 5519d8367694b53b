//! `files verify`: prove the destination holds the source tree, byte for byte. It compares
//! the set of files and objects both ways, their sizes, and SHA-256 checksums: the file's
//! against the one stored with the object at upload, or (with `deep`, for a local
//! directory, or for objects another tool uploaded) against the object's content itself.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::pool::{self, lock};
use crate::remote::{self, RemoteObject};
use crate::walk::{self, Found, LocalFile};
use crate::{Destination, FilesError, Filter, Problem, Progress, hash};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub source: PathBuf,
    pub jobs: usize,
    pub filter: Filter,
    pub follow_symlinks: bool,
    /// Download and hash every object, rather than trusting the checksum stored with it.
    pub deep: bool,
}

impl VerifyOptions {
    pub fn new(source: impl Into<PathBuf>) -> Self {
        VerifyOptions {
            source: source.into(),
            jobs: 16,
            filter: Filter::default(),
            follow_symlinks: false,
            deep: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DifferenceKind {
    /// A file with no object.
    MissingInDestination,
    /// An object with no file.
    NotInSource,
    SizeDiffers {
        source: u64,
        destination: u64,
    },
    /// `destination` is the stored checksum, or the content's with `deep`.
    ChecksumDiffers {
        source: String,
        destination: String,
    },
    /// The checksum stored with the object does not match the object's own content.
    StoredChecksumWrong {
        stored: String,
        content: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The path relative to the source root (and the destination prefix).
    pub path: String,
    #[serde(flatten)]
    pub kind: DifferenceKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub source: String,
    pub destination: String,
    pub files: u64,
    pub bytes: u64,
    /// Files whose object matched in size and checksum.
    pub matched: u64,
    /// Checksums taken by downloading the object (no stored checksum, `deep`, or local).
    pub downloaded: u64,
    pub seconds: f64,
    pub differences: Vec<Difference>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when every file has an identical object and nothing else is there.
    pub fn is_identical(&self) -> bool {
        self.differences.is_empty() && self.problems.is_empty()
    }
}

#[derive(Default)]
struct Findings {
    differences: Vec<Difference>,
    problems: Vec<Problem>,
    matched: u64,
    downloaded: u64,
}

impl Findings {
    fn record(&mut self, file: LocalFile, result: Compared) {
        match result {
            Compared::Same { downloaded } => {
                self.matched += 1;
                self.downloaded += u64::from(downloaded);
            }
            Compared::Differs { kind, downloaded } => {
                self.downloaded += u64::from(downloaded);
                self.differences.push(Difference {
                    path: file.relative,
                    kind,
                });
            }
            Compared::Unreadable(reason) => self.problems.push(Problem {
                path: file.path.display().to_string(),
                reason,
            }),
        }
    }

    /// Objects the walk did not find in the source. Under a directory the walk could not
    /// read (`unread`: its path and its problem's index), an object is not "not in the
    /// source": it could not be compared, and that directory's problem says how many.
    fn not_in_source(&mut self, left: Vec<String>, unread: &[(String, usize)]) {
        let mut not_compared = vec![0usize; unread.len()];
        for path in left {
            let under = unread.iter().position(|(dir, _)| {
                dir.is_empty() || path == *dir || path.starts_with(&format!("{dir}/"))
            });
            match under {
                Some(i) => not_compared[i] += 1,
                None => self.differences.push(Difference {
                    path,
                    kind: DifferenceKind::NotInSource,
                }),
            }
        }
        for ((_, problem), count) in unread.iter().zip(not_compared) {
            if count > 0
                && let Some(p) = self.problems.get_mut(*problem)
            {
                p.reason.push_str(&format!(
                    "; {count} object(s) under it in the destination could not be compared"
                ));
            }
        }
    }
}

/// Runs a verification. Nothing is changed anywhere.
pub async fn verify(
    dest: &Destination,
    options: &VerifyOptions,
    progress: Arc<Progress>,
) -> Result<VerifyReport, FilesError> {
    let started = Instant::now();
    walk::check_root(&options.source)?;
    dest.check().await?;
    let mut remote = remote::list(dest).await?;
    let findings = Arc::new(Mutex::new(Findings::default()));

    let (tx, rx) = mpsc::channel::<(LocalFile, RemoteObject)>(options.jobs * 4);
    let workers = {
        let (dest, findings, progress, deep) = (
            dest.clone(),
            findings.clone(),
            progress.clone(),
            options.deep,
        );
        tokio::spawn(pool::for_each(options.jobs, rx, move |(file, object)| {
            let (dest, findings, progress) = (dest.clone(), findings.clone(), progress.clone());
            async move {
                let result = compare(&dest, &file, deep).await?;
                Progress::add(&progress.files_done, 1);
                Progress::add(&progress.bytes_done, object.size);
                lock(&findings).record(file, result);
                Ok(())
            }
        }))
    };

    let mut found = walk::spawn(
        options.source.clone(),
        options.filter.clone(),
        options.follow_symlinks,
        options.jobs.clamp(2, 8),
        progress.clone(),
    );
    // Directories the walk could not read: what lies under them in the destination is not
    // "not in the source"; it could not be compared.
    let mut unread: Vec<(String, usize)> = Vec::new();
    while let Some(item) = found.recv().await {
        match item {
            Found::Problem { problem, protect } => {
                if let Some(p) = protect {
                    unread.push((p, lock(&findings).problems.len()));
                }
                lock(&findings).problems.push(problem)
            }
            Found::File(file) => match remote.remove(&file.relative) {
                None => lock(&findings).differences.push(Difference {
                    path: file.relative,
                    kind: DifferenceKind::MissingInDestination,
                }),
                Some(object) if object.size != file.size => {
                    lock(&findings).differences.push(Difference {
                        path: file.relative,
                        kind: DifferenceKind::SizeDiffers {
                            source: file.size,
                            destination: object.size,
                        },
                    })
                }
                Some(object) => {
                    Progress::add(&progress.files_to_transfer, 1);
                    Progress::add(&progress.bytes_to_transfer, object.size);
                    if tx.send((file, object)).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    drop(tx);
    drop(found);
    workers
        .await
        .map_err(|e| FilesError::bad_input(format!("the verify workers failed: {e}"), None))??;

    let mut findings = std::mem::take(&mut *lock(&findings));
    let left: Vec<String> = remote
        .into_keys()
        .filter(|rel| options.filter.includes(rel))
        .collect();
    findings.not_in_source(left, &unread);
    findings.differences.sort_by(|a, b| a.path.cmp(&b.path));
    findings.problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(VerifyReport {
        source: options.source.display().to_string(),
        destination: dest.url().to_string(),
        files: Progress::get(&progress.files_found),
        bytes: Progress::get(&progress.bytes_found),
        matched: findings.matched,
        downloaded: findings.downloaded,
        seconds: started.elapsed().as_secs_f64(),
        differences: findings.differences,
        problems: findings.problems,
    })
}

enum Compared {
    Same {
        downloaded: bool,
    },
    Differs {
        kind: DifferenceKind,
        downloaded: bool,
    },
    Unreadable(String),
}

async fn compare(dest: &Destination, file: &LocalFile, deep: bool) -> Result<Compared, FilesError> {
    let key = match dest.key(&file.relative) {
        Ok(key) => key,
        Err(reason) => return Ok(Compared::Unreadable(reason)),
    };
    let local = match hash::of_file(&file.path).await {
        Ok((h, _)) => h,
        Err(e) => return Ok(Compared::Unreadable(format!("cannot read it: {e}"))),
    };
    let stored = if dest.supports_attributes() {
        remote::stored_sha256(dest, &key).await?
    } else {
        None
    };
    let content = if deep || stored.is_none() {
        Some(
            hash::of_object(dest.store.as_ref(), &key)
                .await
                .map_err(|e| dest.store_error(&format!("cannot read {key} in"), &e))?,
        )
    } else {
        None
    };
    let downloaded = content.is_some();
    if let (Some(stored), Some(content)) = (&stored, &content)
        && stored != content
    {
        return Ok(Compared::Differs {
            kind: DifferenceKind::StoredChecksumWrong {
                stored: stored.clone(),
                content: content.clone(),
            },
            downloaded,
        });
    }
    let remote = content.or(stored).unwrap_or_default();
    if remote == local {
        Ok(Compared::Same { downloaded })
    } else {
        Ok(Compared::Differs {
            kind: DifferenceKind::ChecksumDiffers {
                source: local,
                destination: remote,
            },
            downloaded,
        })
    }
}
