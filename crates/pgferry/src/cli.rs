//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Connections take libpq connection strings in the task file, and PG* environment variables
(PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE, ...) fill what a string leaves out.
Passwords never go in the task file: use password_env, password_file, password_command,
PGPASSWORD or ~/.pgpass.

Exit codes:
  0  success
  1  validate found differences
  2  bad usage or an invalid task file
  3  cannot connect, or a prerequisite is missing (settings, privileges, tables in the way)
  4  the migration failed; `pgferry status` shows where, and `pgferry run` resumes
  5  another pgferry process is running this task
  130 interrupted; `pgferry run` resumes

Documentation: docs/ in the source tree (task-file.md, full-load.md, cli.md).";

/// pgferry moves a live PostgreSQL database to a new home: a consistent parallel copy,
/// then (with CDC) every change, with validation at each step.
#[derive(Debug, Parser)]
#[command(name = "pgferry", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// More detail in the logs (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a task: create the schema, copy every selected table in parallel from one
    /// consistent snapshot, then build indexes and constraints, set sequences and ANALYZE;
    /// with CDC, then stream every change until stopped.
    ///
    /// State lives in the target's `pgferry` schema. If a run stops for any reason
    /// (even `kill -9`), run it again: finished chunks and schema objects are not repeated,
    /// and streaming resumes from its checkpoint, applying each change exactly once.
    Run(RunArgs),

    /// Stop a task that is streaming changes, cleanly: it commits what is complete and
    /// exits. The next `pgferry run` resumes from the checkpoint.
    Stop(StopArgs),

    /// Drop the task's replication slot and (if pgferry created it) its publication on the
    /// source, and restore replica identities pgferry changed. Until then the slot keeps
    /// WAL on the source. Refused while the task runs.
    Cleanup(TaskArgs),

    /// Show a task's progress: phase, per-table state, rows, schema steps and recent events.
    /// Reads the target's control schema, so it works from any machine, during or after a run.
    Status(TaskArgs),

    /// Compare every selected table on source and target: row count and an
    /// order-independent checksum of all rows, computed on both servers. Exits 1 if any
    /// table differs.
    Validate(ValidateArgs),

    /// See pgferry work: start two throwaway PostgreSQL servers, seed an inventory
    /// database, and migrate it while an application writes to it: full load, then
    /// streaming changes with live lag, then a cutover (fence, drain, sequences), and
    /// validation. Cleans up on Ctrl-C.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The task file (TOML); see docs/task-file.md.
    #[arg(short, long, value_name = "FILE")]
    pub task: PathBuf,

    /// Print JSON on standard output instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Parallel workers, overriding the task file's `jobs`.
    #[arg(short, long)]
    pub jobs: Option<usize>,

    /// Never draw progress bars; log progress lines instead (the default when standard
    /// error is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Seconds to wait for the run to stop.
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Tables compared at the same time, overriding the task file's `jobs`.
    #[arg(short, long)]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the sample database: 1 is about 13 MB (2,000 products, 5,000 orders).
    #[arg(long, default_value_t = 8)]
    pub scale: u32,

    /// Parallel workers.
    #[arg(short, long)]
    pub jobs: Option<usize>,

    /// Seconds of streaming under the live workload, after the full load, before the
    /// cutover.
    #[arg(long, default_value_t = 10)]
    pub stream_seconds: u64,

    /// Finish without waiting for Ctrl-C (the servers are removed at once).
    #[arg(long)]
    pub no_wait: bool,

    /// Never draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
