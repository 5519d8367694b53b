//! The pgferry migration engine.
//!
//! * [`run`] drives a task through its phases: plan, schema, load, post-data, finish;
//!   `planning` creates a new task's CDC setup and stores its plan in one transaction;
//!   `resume` carries a CDC load across a lost snapshot;
//! * [`plan`] decides tables, formats and chunks (`keysplit` reads key bounds for it);
//!   [`schema`] decides schema objects and
//!   creates the pre-data ones; [`build`] copies chunks ([`load`]) and creates post-data
//!   objects as one graph; [`finish`] sets sequences and statistics;
//! * [`control`] keeps all state in the target's `pgferry` schema;
//! * [`startover`] replaces a lost slot and resynchronises what no longer matches;
//! * [`validate`] compares source and target; [`status`] reports a task's state;
//! * [`transform`] carries out transformation and filter rules in SQL;
//! * [`progress`] exposes live counters to whatever draws them.

pub mod blobs;
pub mod build;
pub mod cdc;
pub mod control;
mod endpoints;
pub mod error;
pub mod finish;
mod keysplit;
pub mod load;
pub mod monitor;
pub mod plan;
mod planning;
pub mod preflight;
pub mod progress;
pub mod queue;
mod resume;
mod retry;
pub mod run;
pub mod schema;
pub mod session;
pub mod snapshot;
pub mod startover;
pub mod status;
pub mod transform;
pub mod validate;

pub use endpoints::Endpoints;
pub use error::{EngineError, Result};
pub use progress::{PhaseTime, RunProgress, TableProgress, TableState};
pub use run::{RunOptions, RunSummary, TableSummary, run, run_with};
