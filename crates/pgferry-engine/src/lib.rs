//! The pgferry migration engine. Its modules are private; this facade is the whole API the
//! command line, the HTTP server and the tests use.
//!
//! * `run` drives a task through its phases (a phase machine: plan, schema, load,
//!   post-data, finish, CDC); `load/` is the full load, `cdc/` the change stream;
//! * `control/` keeps all state in the target's `pgferry` schema, one file per record;
//! * `startover` replaces a lost slot and resynchronises what no longer matches;
//! * `validate` compares source and target; `status` reports a task's state;
//! * `transform` carries out transformation and filter rules in SQL;
//! * `monitor` samples metrics and evaluates alarms; `progress` exposes live counters.
//!
//! `docs/architecture.md` draws the map.

mod assess;
mod cdc;
mod control;
mod cutover;
mod endpoints;
mod error;
mod load;
mod monitor;
mod progress;
mod queue;
mod retry;
mod reverse;
mod route;
mod run;
mod schema_compare;
mod session;
mod startover;
mod transform;
mod validate;

pub use assess::{Assessment, Depth, Finding, Severity, assess, markdown as assessment_markdown};
pub use cdc::source::{Cleaned, default_name as slot_name};
pub use cdc::{CdcLive, Lag, OpCounts, cleanup, drain, request_stop, signal_stop};
pub use control::alarms::{AlarmsReport, report as alarms_report};
pub use control::{
    CdcStatus, CutoverStatus, DdlRecord, ExceptionSummary, ReverseStatus, SchemaStatus,
    StepProblem, TableStatus, TaskStatus, Totals, ValidationStatus, status,
};
pub use control::{Event, Level, recent_events};
pub use cutover::{
    CutoverOptions, CutoverReport, FinishOptions, FinishReport, StepReport, cutover, finish,
    rollback,
};
pub use endpoints::Endpoints;
pub use error::{EngineError, MappingProblem, Refusal, Result, TableFailure};
pub use monitor::Monitor;
pub use progress::{PhaseTime, RunProgress, TableProgress, TableState};
pub use reverse::{TornDown, status as reverse_status};
pub use run::{RunOptions, RunSummary, TableSummary, run, run_with};
pub use schema_compare::{SchemaDifference, SchemaReport, compare_schema};
pub use validate::{Outcome, TableCheck, ValidationReport, validate};
