//! Files: sync a directory tree to S3-compatible object storage (or a local directory),
//! resumably, and prove the copy complete and byte-exact.
//!
//! The semantics are those of `aws s3 sync`: a file is uploaded when the destination has no
//! object for it, or the object's size differs, or the file was modified after the object
//! was written (with `checksum`, when the content hashes differ). Every upload stores the
//! file's SHA-256 with the object (user metadata `sha256`), so [`verify`] can prove the
//! copy without downloading it. An interrupted sync is simply run again: files already
//! uploaded compare equal and are skipped.
//!
//! Memory is bounded by `jobs × part_size`: each request in flight holds at most one part,
//! and a fixed pool of workers (never one task per file) reads at most one file at a time.

mod destination;
mod error;
mod filter;
mod hash;
mod pool;
mod progress;
mod remote;
mod sync;
mod upload;
mod verify;
mod walk;

pub use destination::{Destination, StoreOptions};
pub use error::{FilesError, Problem};
pub use filter::{Filter, FilterRule};
pub use progress::Progress;
pub use sync::{SyncOptions, SyncReport, sync};
pub use upload::parse_metadata;
pub use verify::{Difference, DifferenceKind, VerifyOptions, VerifyReport, verify};

/// The user-metadata key under which each object's SHA-256 (hex) is stored.
pub const SHA256_METADATA_KEY: &str = "sha256";
