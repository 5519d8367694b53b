//! The full load: one consistent copy of the source's selected tables and the schema around
//! them, resumable at any point.
//!
//! ```text
//!  snapshot ──► plan ──► pre-data ──► copy chunks ─┬─► indexes, keys ──► FKs, triggers …
//!  (exported)  (stored  (one target   (one txn     └─► ANALYZE per table   ──► finish:
//!              in one    txn)          per chunk)       (one graph, jobs workers)    sequences
//!              txn)
//! ```
//!
//! 1. [`snapshot`]: a source session exports a snapshot (or a replication slot creates
//!    one, for CDC) that every chunk reads, so the target is the source as of one instant.
//! 2. [`plan`] decides tables, formats and chunks ([`keysplit`] reads key bounds where
//!    block ranges cannot split); [`planning`] stores the plan, the schema dump and the CDC
//!    setup in one target transaction: a crash before it leaves nothing, after it the
//!    whole plan.
//! 3. [`schema`] creates the pre-data objects in one target transaction with their marks.
//! 4. [`graph`] runs the copy of every chunk ([`copy`]) and every post-data object as one
//!    dependency graph on `jobs` workers. Each unit commits with its own done-mark; a crash
//!    leaves exactly the unmarked units to the next run.
//! 5. [`finish`] sets sequences from the source.
//!
//! [`resume`] carries a CDC task's load across a lost snapshot; [`blobs`] copies large
//! objects under the same snapshot.

pub mod blobs;
pub mod copy;
pub mod finish;
pub mod graph;
pub mod keysplit;
pub mod plan;
pub mod planning;
pub mod resume;
pub mod schema;
pub mod snapshot;
