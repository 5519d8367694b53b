//! Uploads one file: in one request up to the part size, as a multipart upload above it.
//!
//! Memory: every request body is a buffer of at most `part_size`, and each needs a permit
//! from one semaphore of `jobs` permits, shared by all files. So `jobs × part_size` bounds
//! what is held, whether the tree is many small files or a few huge ones, and the parts of
//! one big file go up in parallel when the small files leave permits free.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use object_store::{
    Attribute, AttributeValue, Attributes, PutMultipartOptions, PutOptions, PutPayload,
};
use tokio::sync::Semaphore;

use crate::walk::LocalFile;
use crate::{Destination, FilesError, Problem, Progress, SHA256_METADATA_KEY, hash};

/// What every upload sends besides the content.
#[derive(Debug, Clone, Default)]
pub(crate) struct UploadSettings {
    pub part_size: usize,
    pub metadata: Vec<(String, String)>,
    pub storage_class: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Uploader {
    dest: Destination,
    buffers: Arc<Semaphore>,
    settings: UploadSettings,
    progress: Arc<Progress>,
}

/// How one upload ended, short of a fatal error.
pub(crate) enum Outcome {
    Uploaded,
    Problem(Problem),
}

/// Checks `KEY=VALUE` user metadata: keys that S3 accepts as header names, ASCII values,
/// and not the key pgferry keeps its checksum in.
pub fn parse_metadata(pairs: &[String]) -> Result<Vec<(String, String)>, FilesError> {
    pairs
        .iter()
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                FilesError::bad_input(
                    format!("--metadata {pair:?} is not KEY=VALUE"),
                    Some("write --metadata migration-date=2026-11-21"),
                )
            })?;
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(FilesError::bad_input(
                    format!("--metadata key {key:?} must be letters, digits, '-' or '_'"),
                    None,
                ));
            }
            if key == SHA256_METADATA_KEY {
                return Err(FilesError::bad_input(
                    "--metadata key \"sha256\" is reserved: pgferry stores each file's checksum there",
                    None,
                ));
            }
            if !value.is_ascii() || value.chars().any(|c| c.is_ascii_control()) {
                return Err(FilesError::bad_input(
                    format!("--metadata value {value:?} must be printable ASCII (S3 sends metadata as HTTP headers)"),
                    None,
                ));
            }
            Ok((key, value.to_string()))
        })
        .collect()
}

fn problem(file: &LocalFile, reason: impl Into<String>) -> Outcome {
    Outcome::Problem(Problem {
        path: file.path.display().to_string(),
        reason: reason.into(),
    })
}

impl Uploader {
    pub fn new(
        dest: Destination,
        jobs: usize,
        settings: UploadSettings,
        progress: Arc<Progress>,
    ) -> Self {
        Uploader {
            dest,
            buffers: Arc::new(Semaphore::new(jobs.max(1))),
            settings,
            progress,
        }
    }

    fn attributes(&self, file: &LocalFile, sha256: String) -> Attributes {
        let mut attributes = Attributes::new();
        if !self.dest.supports_attributes() {
            return attributes;
        }
        let mime = mime_guess::from_path(&file.path).first_or_octet_stream();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from(mime.essence_str().to_string()),
        );
        attributes.insert(
            Attribute::Metadata(SHA256_METADATA_KEY.into()),
            sha256.into(),
        );
        for (key, value) in &self.settings.metadata {
            attributes.insert(
                Attribute::Metadata(key.clone().into()),
                value.clone().into(),
            );
        }
        if let Some(class) = &self.settings.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        attributes
    }

    /// Uploads `file`. Local problems (unreadable, changed while uploading) come back as
    /// [`Outcome::Problem`]; a store error is fatal.
    pub async fn upload(&self, file: &LocalFile) -> Result<Outcome, FilesError> {
        let key = match self.dest.key(&file.relative) {
            Ok(key) => key,
            Err(reason) => return Ok(problem(file, reason)),
        };
        if file.size as usize <= self.settings.part_size {
            self.upload_whole(file, key).await
        } else {
            self.upload_parts(file, key).await
        }
    }

    async fn upload_whole(
        &self,
        file: &LocalFile,
        key: object_store::path::Path,
    ) -> Result<Outcome, FilesError> {
        let _permit = self.buffers.acquire().await.map_err(|_| closed())?;
        // Read at most one byte more than a part: a file that grew since the walk must not
        // be read whole into memory.
        let limit = self.settings.part_size as u64 + 1;
        let path = file.path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut buffer = Vec::new();
            std::fs::File::open(&path)?
                .take(limit)
                .read_to_end(&mut buffer)?;
            Ok::<_, std::io::Error>(buffer)
        })
        .await
        .map_err(|e| closed_with(&e))?;
        let data = match read {
            Ok(data) if data.len() as u64 == limit => {
                return Ok(problem(
                    file,
                    "it grew while being synced; run the sync again to upload it",
                ));
            }
            Ok(data) => Bytes::from(data),
            Err(e) => return Ok(problem(file, format!("cannot read it: {e}"))),
        };
        let sha256 = if data.len() > 1 << 20 {
            let d = data.clone();
            tokio::task::spawn_blocking(move || hash::of_bytes(&d))
                .await
                .map_err(|e| closed_with(&e))?
        } else {
            hash::of_bytes(&data)
        };
        let len = data.len() as u64;
        let options = PutOptions {
            attributes: self.attributes(file, sha256),
            ..Default::default()
        };
        self.dest
            .store
            .put_opts(&key, PutPayload::from_bytes(data), options)
            .await
            .map_err(|e| {
                self.dest
                    .store_error(&format!("cannot upload {key} to"), &e)
            })?;
        Progress::add(&self.progress.bytes_done, len);
        Ok(Outcome::Uploaded)
    }

    async fn upload_parts(
        &self,
        file: &LocalFile,
        key: object_store::path::Path,
    ) -> Result<Outcome, FilesError> {
        // The hash goes in the metadata, which the first request carries: hash first.
        let (sha256, hashed_len) = match hash::of_file(&file.path).await {
            Ok(h) => h,
            Err(e) => return Ok(problem(file, format!("cannot read it: {e}"))),
        };
        let reader = match std::fs::File::open(&file.path) {
            Ok(f) => f,
            Err(e) => return Ok(problem(file, format!("cannot read it: {e}"))),
        };
        let options = PutMultipartOptions {
            attributes: self.attributes(file, sha256),
            ..Default::default()
        };
        let mut upload = self
            .dest
            .store
            .put_multipart_opts(&key, options)
            .await
            .map_err(|e| {
                self.dest
                    .store_error(&format!("cannot start the upload of {key} to"), &e)
            })?;

        let part_size = self.settings.part_size;
        let mut reader = reader;
        let mut in_flight = FuturesUnordered::new();
        let mut sent = 0u64;
        let mut failure: Option<Result<Outcome, FilesError>> = None;
        loop {
            let permit = self
                .buffers
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| closed())?;
            let read = tokio::task::spawn_blocking(move || {
                let mut buffer = Vec::with_capacity(part_size);
                let result = (&mut reader)
                    .take(part_size as u64)
                    .read_to_end(&mut buffer);
                (reader, buffer, result)
            })
            .await
            .map_err(|e| closed_with(&e))?;
            let (handle, buffer, result) = read;
            reader = handle;
            if let Err(e) = result {
                failure = Some(Ok(problem(file, format!("cannot read it: {e}"))));
                break;
            }
            if buffer.is_empty() {
                break;
            }
            let len = buffer.len() as u64;
            sent += len;
            let part = upload.put_part(PutPayload::from(buffer));
            let progress = self.progress.clone();
            in_flight.push(tokio::spawn(async move {
                let result = part.await;
                drop(permit);
                if result.is_ok() {
                    Progress::add(&progress.bytes_done, len);
                }
                result
            }));
            // Collect finished parts as we go, so an error stops the file early.
            while let Some(Some(done)) = in_flight.next().now_or_never() {
                if let Err(e) = done.map_err(|e| closed_with(&e))? {
                    failure = Some(Err(self
                        .dest
                        .store_error(&format!("cannot upload a part of {key} to"), &e)));
                    break;
                }
            }
            if failure.is_some() || (len as usize) < part_size {
                break;
            }
        }
        while let Some(done) = in_flight.next().await {
            if let Err(e) = done.map_err(|e| closed_with(&e))?
                && failure.is_none()
            {
                failure = Some(Err(self
                    .dest
                    .store_error(&format!("cannot upload a part of {key} to"), &e)));
            }
        }
        if failure.is_none() && sent != hashed_len {
            failure = Some(Ok(problem(
                file,
                "it changed while being uploaded; run the sync again to upload it",
            )));
        }
        if let Some(outcome) = failure {
            // Abort, so no incomplete upload lingers (and is billed) in the bucket.
            let _ = upload.abort().await;
            return outcome;
        }
        upload.complete().await.map_err(|e| {
            self.dest
                .store_error(&format!("cannot complete the upload of {key} to"), &e)
        })?;
        Ok(Outcome::Uploaded)
    }
}

use futures_util::FutureExt as _;

fn closed() -> FilesError {
    FilesError::bad_input("the upload pool was closed", None)
}

fn closed_with(e: &tokio::task::JoinError) -> FilesError {
    FilesError::bad_input(format!("an upload task failed: {e}"), None)
}
