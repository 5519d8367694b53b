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
  1  validate (or files verify) found differences; files sync skipped some files
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
    /// Find everything that would stop or hurt the migration before it starts, each with
    /// its fix: source settings and activity, privileges, tables without keys, objects
    /// pgferry does not move, extensions, encodings and collations, types, sizes, the
    /// estimated load time (from a bounded, timed sample read) and the WAL the slot would
    /// hold meanwhile. Reads both servers and writes nothing on either. See docs/assess.md.
    ///
    /// Exit codes: 0 nothing blocks, 1 warnings only, 3 something blocks (or a server
    /// cannot be reached), 2 bad usage.
    Assess(AssessArgs),

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

    /// Cut over to the target: check (lag, exceptions, suspended tables), fence the source
    /// (read-only, sessions ended), drain every change committed before the fence, set the
    /// sequences, validate every table, then open the target (stop streaming, run the
    /// task's on_switch commands, write probe). Prints the steps and the downtime, and
    /// writes a Markdown report beside the task file.
    ///
    /// `pgferry run` must be streaming the task. Each step is recorded: after any failure
    /// or kill, run `cutover` again to go on, or `cutover --abort` (before the target
    /// opens) to lift the fence and keep streaming. See docs/cutover.md.
    ///
    /// When the target opens, the target's changes start streaming back to the source
    /// (`cutover.reverse`, on by default), and the running `pgferry run` carries on with
    /// that stream, so `pgferry rollback` loses nothing.
    Cutover(CutoverArgs),

    /// Go back to the source after a cutover, losing no write made on the target since:
    /// fence the target, drain the reverse stream to the target's fence position, set the
    /// sequences on the source, validate every table, then reopen the source (the forward
    /// stream goes on, the source's fence is lifted, the task's on_rollback commands run,
    /// write probe). The target stays fenced until the next cutover.
    ///
    /// `pgferry run` must be streaming back. Resumable and abortable like `cutover`; writes
    /// a Markdown report beside the task file.
    Rollback(CutoverArgs),

    /// End the migration after the confidence period: drain and stop the reverse stream,
    /// drop the slots and publications on both sides and the reverse stream's control
    /// schema on the source, restore replica identities. Refused while the target holds
    /// changes the source has not received, unless --force. The source stays fenced unless
    /// --unfence-source.
    Finish(FinishArgs),

    /// Drop the task's replication slot and (if pgferry created it) its publication on the
    /// source, restore replica identities pgferry changed, and remove the DDL capture
    /// ([cdc] ddl) once no other task uses it. Until then the slot keeps WAL on the source.
    /// Refused while the task runs.
    Cleanup(TaskArgs),

    /// Show a task's progress: phase, per-table state, rows, schema steps and recent events.
    /// Reads the target's control schema, so it works from any machine, during or after a run.
    Status(TaskArgs),

    /// Show each alarm's state, reason and recent history, as the last or current run
    /// evaluated it. Alarms are declared in the task file; the seed's four (replication
    /// lag, CPU, connections, storage) and one on the slot nearing the source's
    /// max_slot_wal_keep_size are there by default.
    ///
    /// Exit codes: 0 no alarm in ALARM, 1 at least one in ALARM, 2 bad usage, 3 the target
    /// cannot be reached or has no such task.
    Alarms(TaskArgs),

    /// Compare every selected table on source and target: row count and an
    /// order-independent checksum of all rows, computed on both servers. Exits 1 if any
    /// table differs.
    Validate(ValidateArgs),

    /// See pgferry work: start two throwaway PostgreSQL servers, seed an inventory
    /// database, and migrate it while an application writes to it: full load, then
    /// streaming changes with live lag, then a cutover (fence, drain, sequences), and
    /// validation. Cleans up on Ctrl-C.
    Demo(DemoArgs),

    /// Copy a directory tree to S3-compatible storage (or a local directory), the way
    /// `aws s3 sync` does, and prove the copy byte-exact. See docs/files.md.
    #[command(subcommand)]
    Files(FilesCommand),

    /// Inspect and convert task definitions, including AWS DMS table-mappings and
    /// task-settings JSON. See docs/dms-compatibility.md.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the effective settings of a task, each marked default, from TOML, from DMS
    /// JSON or DMS default; every transformation, filter and table-settings rule; and a
    /// warning for each DMS setting pgferry ignores or treats differently, with the reason.
    /// Reads only the files: no database is contacted.
    Explain(TaskArgs),

    /// Write a TOML task file equivalent to DMS JSON files on standard output, with the
    /// settings pgferry treats differently listed in a comment at the top.
    #[command(
        after_help = "Example:\n  pgferry config convert --dms-mappings table-mappings.json \\\n      --dms-settings task-settings.json > task.toml"
    )]
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// A DMS table-mappings JSON file.
    #[arg(long, value_name = "FILE")]
    pub dms_mappings: Option<PathBuf>,

    /// A DMS task-settings JSON file.
    #[arg(long, value_name = "FILE")]
    pub dms_settings: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Upload new and changed files (a different size, a newer modification time, or with
    /// --checksum a different SHA-256), each with its SHA-256 stored as metadata. Run it
    /// again after any interruption: what is already there is not uploaded again.
    ///
    /// Exit codes: 0 all synced, 1 some files were skipped with a problem (listed), 2 bad
    /// usage, 3 the destination or source cannot be used, 130 interrupted.
    #[command(after_help = FILES_AFTER_HELP)]
    Sync(Box<FilesSyncArgs>),

    /// Compare a directory tree with the destination: files and objects both ways, sizes,
    /// and SHA-256 checksums. Lists every difference and exits 1 when there is any.
    #[command(after_help = FILES_AFTER_HELP)]
    Verify(Box<FilesVerifyArgs>),
}

const FILES_AFTER_HELP: &str = "\
Destinations: s3://bucket/prefix (AWS S3 or any S3-compatible server with --endpoint), or
file:///absolute/dir.
Credentials, as the AWS CLI finds them: --profile, else AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), else the AWS_PROFILE or default profile in
~/.aws/credentials, else the instance role. Region: --region, AWS_REGION,
AWS_DEFAULT_REGION, the profile, us-east-1. Endpoint: --endpoint, AWS_ENDPOINT_URL.

Examples:
  pgferry files sync /srv/product-images s3://inventory-migration/product-images \\
      --exclude '*.tmp' --metadata migration-date=2026-11-21 --storage-class STANDARD_IA
  pgferry files verify /srv/product-images s3://inventory-migration/product-images --json";

/// Where the files go and how to reach it.
#[derive(Debug, Args)]
pub struct FilesTargetArgs {
    /// The directory to copy.
    #[arg(value_name = "SOURCE_DIR")]
    pub source: PathBuf,

    /// s3://bucket/prefix or file:///absolute/dir.
    #[arg(value_name = "DESTINATION")]
    pub destination: String,

    /// An S3-compatible endpoint (MinIO, Ceph, moto, ...), e.g. http://127.0.0.1:9000.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// The bucket's region.
    #[arg(long)]
    pub region: Option<String>,

    /// A profile from ~/.aws/credentials and ~/.aws/config.
    #[arg(long)]
    pub profile: Option<String>,

    /// Files and requests handled at once; memory is at most jobs × part size.
    #[arg(short, long, default_value_t = 16, value_parser = parse_jobs)]
    pub jobs: usize,

    /// Sync only matching files (relative paths; `*` also matches `/`). Applied in order
    /// with --exclude: the last matching rule decides. Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Leave matching files out. Repeatable; see --include.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Follow symbolic links (they are skipped by default).
    #[arg(long)]
    pub follow_symlinks: bool,

    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,

    /// Never draw progress bars (the default when standard error is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct FilesSyncArgs {
    #[command(flatten)]
    pub target: FilesTargetArgs,

    /// Files bigger than this go up in parts of this size, several at once (min 5MiB).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,

    /// Delete objects whose file no longer exists (among files the filters include).
    #[arg(long)]
    pub delete: bool,

    /// User metadata for every object: KEY=VALUE, repeatable or comma-separated.
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub metadata: Vec<String>,

    /// Storage class for every object, e.g. STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR.
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,

    /// Server-side encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS).
    #[arg(long, value_name = "AES256|aws:kms")]
    pub sse: Option<String>,

    /// The KMS key for --sse aws:kms (default: the account's S3 key).
    #[arg(long, value_name = "KEY")]
    pub sse_kms_key_id: Option<String>,

    /// When sizes match, compare SHA-256 checksums instead of modification times.
    #[arg(long)]
    pub checksum: bool,

    /// Run `files verify` at the end; exit 1 if it finds a difference.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct FilesVerifyArgs {
    #[command(flatten)]
    pub target: FilesTargetArgs,

    /// Download and hash every object instead of trusting the checksum stored with it.
    #[arg(long)]
    pub deep: bool,
}

/// `64MiB`, `8MB`, `5242880`.
/// Every `--jobs` obeys the same limits as the task file's `jobs`.
fn parse_jobs(text: &str) -> Result<usize, String> {
    let jobs: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of workers"))?;
    pgferry_config::check_jobs(jobs)
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e}; write a size like 16MiB"))
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
    #[arg(short, long, value_parser = parse_jobs)]
    pub jobs: Option<usize>,

    /// Never draw progress bars; log progress lines instead (the default when standard
    /// error is not a terminal).
    #[arg(long)]
    pub no_progress: bool,

    /// Serve the dashboard, /metrics and the JSON API at this address (default
    /// 127.0.0.1:9187, or the task file's [http] listen). An address beyond loopback needs
    /// a bearer token in PGFERRY_HTTP_TOKEN or the task file.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "")]
    pub http: Option<String>,

    /// After the source lost the task's replication slot (max_slot_wal_keep_size, a
    /// cleanup, a drop by hand): make a new slot, compare every table with the source as of
    /// its snapshot, keep those that match, copy the others again, then stream from the new
    /// slot. Refused while the slot is healthy.
    #[arg(long)]
    pub start_over: bool,
}

#[derive(Debug, Args)]
pub struct AssessArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Also write the findings as a Markdown report to FILE, for a change ticket.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,

    /// Seconds to watch the source's WAL rate (the slot holds that WAL while the load
    /// runs).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub wal_sample: u64,

    /// Report transactions open longer than this many seconds (they hold back the load's
    /// snapshot and the slot's creation).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub long_transaction: u64,
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
pub struct CutoverArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Run the checks and print the plan; change nothing.
    #[arg(long, conflicts_with = "abort")]
    pub dry_run: bool,

    /// Lift the fence and let streaming go on. Only before the other side opens.
    #[arg(long)]
    pub abort: bool,

    /// Seconds the drain may take before the cutover stops (fenced; run it again or abort).
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub drain_wait: u64,
}

#[derive(Debug, Args)]
pub struct FinishArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Finish even though the target holds changes the source has not received: they are
    /// given up on the source.
    #[arg(long)]
    pub force: bool,

    /// Keep the reverse stream's `pgferry` schema on the source, for its history.
    #[arg(long)]
    pub keep_control_schema: bool,

    /// Lift the cutover's fence on the source (by default it stays read-only: it is the
    /// old copy now).
    #[arg(long)]
    pub unfence_source: bool,

    /// Seconds the reverse stream may take to catch up before it stops.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub drain_wait: u64,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub task: TaskArgs,

    /// Tables compared at the same time, overriding the task file's `jobs`.
    #[arg(short, long, value_parser = parse_jobs)]
    pub jobs: Option<usize>,

    /// Compare the schema instead of the rows: tables and columns (type, nullability,
    /// default), indexes, constraints, triggers, views, functions (body hashes),
    /// sequences and extensions, with the task's rules applied.
    #[arg(long)]
    pub schema: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the sample database: 1 is about 13 MB (2,000 products, 5,000 orders).
    #[arg(long, default_value_t = 8)]
    pub scale: u32,

    /// Parallel workers.
    #[arg(short, long, value_parser = parse_jobs)]
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

    /// Serve the dashboard, /metrics and the JSON API while the demo runs, and until
    /// Ctrl-C (default 127.0.0.1:9187).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "")]
    pub http: Option<String>,
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
