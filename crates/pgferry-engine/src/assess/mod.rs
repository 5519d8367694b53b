//! `pgferry assess`: everything that would stop or hurt the migration, found before it
//! starts, each with its fix.
//!
//! Invariants:
//! * **Read-only.** Both sessions run with `default_transaction_read_only = on`, so no
//!   check can create or change anything on either server: no control schema, slot,
//!   publication or replica identity. A crash at any point leaves nothing behind.
//! * **One set of checks.** `pgferry run` runs the [`Depth::Preflight`] checks through
//!   [`preflight`] before it changes anything, and stops on a blocker, as `assess` exits 3
//!   on one. `assess` adds the checks that read more ([`Depth::Full`]): activity, every
//!   table, objects left behind, collations, sizes and the timed sample.
//!
//! Each check lives in the room of what it reads: [`source`] (settings, activity,
//! privileges), [`target`], [`tables`] (keys, kinds, types), [`objects`] (what pgferry does
//! not move, text and collation), [`size`] (sizes and time), [`task`] (the task file and
//! the tools).

mod objects;
mod report;
mod size;
mod source;
mod tables;
mod target;
mod task;

use std::time::Duration;

use pgferry_config::Task;
use pgferry_pg::catalog::{self, ServerInfo, Table};
use pgferry_pg::{PgClient, PgError, Side};
use serde::Serialize;

use crate::endpoints::Endpoints;
use crate::error::{EngineError, Result};
use crate::load::plan;

pub use report::markdown;
pub(crate) use source::check_source_tables;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The migration cannot run (or cannot stay correct) until it is fixed.
    Blocker,
    /// The migration runs, but something will be slower, riskier or left behind.
    Warning,
    /// Worth knowing; nothing to fix.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Blocker => "blocker",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One thing the assessment found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// A stable check id (`source.wal_level`), listed in `docs/assess.md`.
    pub check: &'static str,
    pub severity: Severity,
    /// The object it is about, schema-qualified, when there is one.
    pub object: Option<String>,
    pub message: String,
    /// The command or setting that resolves it (for an info finding, what to look at).
    pub fix: String,
}

/// Counts of findings, and what they mean for a script.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub blockers: usize,
    pub warnings: usize,
    pub infos: usize,
    /// `ready`, `warnings` or `blocked`.
    pub verdict: &'static str,
}

/// The load time estimated from a timed sample read of the largest table.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// Bytes the load reads (heap and TOAST of every selected table).
    pub bytes: i64,
    pub jobs: usize,
    /// What one session read per second in the sample, and the sample's size.
    pub sample_bytes_per_second: f64,
    pub sample_bytes: u64,
    /// The load's time, most likely and its range (the sample's spread and how well the
    /// jobs scale).
    pub seconds: f64,
    pub seconds_low: f64,
    pub seconds_high: f64,
    /// The source's WAL rate, measured over a few seconds, and what the slot would hold
    /// by the end of the load.
    pub wal_bytes_per_second: Option<f64>,
    pub wal_retained_bytes: Option<f64>,
}

/// One selected table's size and how the load will split it.
#[derive(Debug, Clone, Serialize)]
pub struct TableSize {
    pub table: String,
    /// Heap and TOAST: what the load reads.
    pub bytes: i64,
    pub estimated_rows: Option<i64>,
    /// Block ranges, key ranges (and the key), one chunk, or why it cannot split.
    pub split: String,
}

/// Everything one assessment found.
#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    pub task: String,
    pub migration_type: String,
    pub source_version: String,
    pub target_version: String,
    pub assessed_at: chrono::DateTime<chrono::Utc>,
    pub findings: Vec<Finding>,
    pub summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    /// Every selected table, biggest first (a full assessment only).
    pub tables: Vec<TableSize>,
}

impl Assessment {
    /// The exit code scripts rely on: 0 nothing blocks, 1 warnings only, 3 a blocker.
    pub fn exit_code(&self) -> u8 {
        match self.summary.verdict {
            "blocked" => 3,
            "warnings" => 1,
            _ => 0,
        }
    }

    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
    }
}

/// Which checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// What every `pgferry run` checks before it changes anything: versions, settings and
    /// privileges. Cheap: a few catalog reads.
    Preflight,
    /// Everything, with the timed sample read and the WAL rate (`pgferry assess`).
    Full {
        /// How long the source's WAL rate is watched.
        wal_sample: Duration,
        /// A transaction open longer than this is reported.
        long_transaction: Duration,
    },
}

/// What the checks read, once.
pub(crate) struct Ctx<'a> {
    pub task: &'a Task,
    pub source: &'a PgClient,
    pub target: &'a PgClient,
    pub source_info: &'a ServerInfo,
    pub target_info: &'a ServerInfo,
    /// The selected tables (partitions and plain tables), and the partitioned parents.
    pub tables: Vec<Table>,
    pub parents: Vec<Table>,
    pub findings: Vec<Finding>,
    /// The source's `max_slot_wal_keep_size` in MB, when it limits a slot (13+).
    pub wal_keep_mb: Option<i64>,
    /// The source schemas in the task's scope.
    pub schemas: &'a [String],
    /// Every selected table's size and split, biggest first ([`size`]).
    pub sizes: Vec<TableSize>,
}

impl Ctx<'_> {
    pub fn push(
        &mut self,
        check: &'static str,
        severity: Severity,
        object: Option<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            check,
            severity,
            object,
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// The selected tables' oids, partitioned parents included.
    pub fn all_oids(&self) -> Vec<u32> {
        self.tables
            .iter()
            .chain(&self.parents)
            .map(|t| t.oid)
            .collect()
    }

    pub fn cdc(&self) -> bool {
        self.task.migration_type.needs_cdc()
    }

    pub fn loads(&self) -> bool {
        self.task.migration_type.needs_full_load()
    }
}

/// Assesses the task: connects to both servers read-only, runs the checks of `depth`,
/// and returns what they found. Errors only when a server cannot be reached or read.
pub async fn assess(task: &Task, endpoints: &Endpoints, depth: Depth) -> Result<Assessment> {
    let source = read_only(Side::Source, endpoints, "pgferry assess").await?;
    let target = read_only(Side::Target, endpoints, "pgferry assess").await?;
    let source_info = ServerInfo::load(&source).await?;
    let target_info = ServerInfo::load(&target).await?;
    let schemas = plan::scope_schemas(&source, task).await?;
    run_checks(
        task,
        &source,
        &target,
        &source_info,
        &target_info,
        &schemas,
        depth,
    )
    .await
}

/// The preflight of `pgferry run`: the [`Depth::Preflight`] checks on the run's own
/// sessions (which only read here), and an error listing every blocker with its fix.
/// `schemas` are the source schemas in the task's scope, which the run reads anyway.
/// Returns the assessment, for the API.
pub async fn preflight(
    task: &Task,
    source: &PgClient,
    target: &PgClient,
    (source_info, target_info): (&ServerInfo, &ServerInfo),
    schemas: &[String],
) -> Result<Assessment> {
    let assessment = run_checks(
        task,
        source,
        target,
        source_info,
        target_info,
        schemas,
        Depth::Preflight,
    )
    .await?;
    let blockers: Vec<&Finding> = assessment.blockers().collect();
    let Some(first) = blockers.first() else {
        return Ok(assessment);
    };
    let side = if first.check.starts_with("target.") {
        Side::Target
    } else {
        Side::Source
    };
    let (problem, fix) = if blockers.len() == 1 {
        (first.message.clone(), first.fix.clone())
    } else {
        let list = |f: fn(&Finding) -> &str| {
            blockers
                .iter()
                .enumerate()
                .map(|(i, b)| format!("({}) {}", i + 1, f(b)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        (
            format!(
                "{} problems block the run: {}",
                blockers.len(),
                list(|b| &b.message)
            ),
            list(|b| &b.fix),
        )
    };
    Err(EngineError::Pg(PgError::Prerequisite {
        side,
        problem,
        fix,
    }))
}

async fn run_checks(
    task: &Task,
    source: &PgClient,
    target: &PgClient,
    source_info: &ServerInfo,
    target_info: &ServerInfo,
    schemas: &[String],
    depth: Depth,
) -> Result<Assessment> {
    let live = catalog::list_tables(source).await?;
    let selected = plan::select_tables(&live, &task.selection);
    let mut ctx = Ctx {
        task,
        source,
        target,
        source_info,
        target_info,
        tables: selected.tables,
        parents: selected.parents,
        findings: Vec::new(),
        wal_keep_mb: None,
        schemas,
        sizes: Vec::new(),
    };
    source::settings(&mut ctx).await?;
    source::privileges(&mut ctx).await?;
    target::privileges(&mut ctx).await?;
    task::tooling(&mut ctx).await;
    let mut estimate = None;
    if let Depth::Full {
        wal_sample,
        long_transaction,
    } = depth
    {
        source::activity(&mut ctx, long_transaction).await?;
        task::rules(&mut ctx, &live);
        tables::keys(&mut ctx).await?;
        tables::kinds(&mut ctx).await?;
        tables::types(&mut ctx).await?;
        target::tables_in_the_way(&mut ctx).await?;
        objects::left_behind(&mut ctx).await?;
        objects::extensions(&mut ctx).await?;
        objects::text(&mut ctx).await?;
        estimate = size::assess(&mut ctx, wal_sample).await?;
    }
    let tables = std::mem::take(&mut ctx.sizes);
    let mut findings = ctx.findings;
    findings.sort_by(|a, b| (a.severity, a.check).cmp(&(b.severity, b.check)));
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    let (blockers, warnings, infos) = (
        count(Severity::Blocker),
        count(Severity::Warning),
        count(Severity::Info),
    );
    let verdict = if blockers > 0 {
        "blocked"
    } else if warnings > 0 {
        "warnings"
    } else {
        "ready"
    };
    Ok(Assessment {
        task: task.name.clone(),
        migration_type: task.migration_type.as_str().to_owned(),
        source_version: source_info.version.clone(),
        target_version: target_info.version.clone(),
        assessed_at: chrono::Utc::now(),
        findings,
        summary: Summary {
            blockers,
            warnings,
            infos,
            verdict,
        },
        estimate,
        tables,
    })
}

/// A session that cannot write: every transaction in it is read-only, whatever a check
/// runs.
async fn read_only(side: Side, endpoints: &Endpoints, name: &str) -> Result<PgClient> {
    let info = match side {
        Side::Source => &endpoints.source,
        Side::Target => &endpoints.target,
    };
    let client = pgferry_pg::connect(side, info, name).await?;
    client
        .batch(
            "making the session read-only",
            "SET default_transaction_read_only = on; SET statement_timeout = '60s'",
        )
        .await?;
    Ok(client)
}
