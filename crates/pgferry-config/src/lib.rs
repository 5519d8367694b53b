//! The task model: what to migrate, from where, to where, and how.
//!
//! A task file is TOML. It names a source and a target by libpq connection string, says which
//! tables to move with DMS-style include and exclude rules, and sets the migration type and
//! the load's parallelism. Everything here is pure data and validation: no I/O beyond reading
//! the file, so every rule can be unit tested without a database.

pub mod alarm;
mod cdc;
pub mod convert;
pub mod cutover;
pub mod dms;
mod error;
pub mod explain;
pub mod mapping;
pub mod metrics;
pub mod monitoring;
pub mod notifier;
mod pattern;
pub mod retry;
mod selection;
mod suggest;
mod task;

pub use cdc::{CdcSettings, ErrorBehavior, ErrorPolicy, NoKeyTables};
pub use cutover::{CutoverSettings, SwitchCommand};
pub use error::{ConfigError, ErrorKind};
pub use mapping::{Mapping, MappingError, TableMap};
pub use monitoring::{CommandMetric, HttpSettings, InactiveAlarm, Monitoring};
pub use pattern::{NamePattern, exact as exact_pattern};
pub use selection::{Selection, TableRule};
pub use task::{
    DEFAULT_CHUNK_SIZE, Endpoint, FullLoadSettings, MAX_JOBS, MigrationType, PasswordSource,
    TargetTablePrepMode, Task, check_jobs,
};
