//! The cutover's report: every step with its times, the positions, the validation, the
//! sequences and the downtime. Stored with the task, printed as JSON, and written as
//! Markdown for the change ticket.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::control::cutover::StepRecord;
use crate::validate::TableCheck;

/// One table of the final validation.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckedTable {
    pub table: String,
    pub target: String,
    pub outcome: String,
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
}

impl From<&TableCheck> for CheckedTable {
    fn from(c: &TableCheck) -> Self {
        CheckedTable {
            table: c.table.clone(),
            target: c.target.clone(),
            outcome: c.outcome.as_str().to_owned(),
            source_rows: c.source_rows,
            target_rows: c.target_rows,
        }
    }
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub seconds: Option<f64>,
    pub detail: Option<serde_json::Value>,
}

impl From<StepRecord> for StepReport {
    fn from(r: StepRecord) -> Self {
        StepReport {
            seconds: r
                .finished_at
                .map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0),
            step: r.step,
            state: r.state,
            started_at: r.started_at,
            finished_at: r.finished_at,
            detail: r.detail,
        }
    }
}

/// What `pgferry cutover` did, or (with `--dry-run`) would do.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    pub task: String,
    /// `cutover` or `rollback`.
    pub kind: String,
    /// `done`, `aborted`, or `planned` for a dry run.
    pub state: String,
    pub steps: Vec<StepReport>,
    /// The source's WAL position once the fence was verified.
    pub fence_lsn: Option<String>,
    /// Where the drain ended: every transaction committed before the fence is applied.
    pub drained_lsn: Option<String>,
    /// From the fence going up to the write probe on the opened target.
    pub downtime_seconds: Option<f64>,
    pub sequences: Option<i64>,
    pub validation: Vec<CheckedTable>,
    /// The reverse stream the cutover set up (slot, publication, start), if any.
    pub reverse: Option<serde_json::Value>,
    /// What a dry run checked and would do.
    pub plan: Vec<String>,
}

impl CutoverReport {
    /// The report as Markdown a DBA pastes into a change ticket.
    pub fn to_markdown(&self) -> String {
        let (title, fenced, opened) = if self.kind == "rollback" {
            ("Rollback", "target", "source")
        } else {
            ("Cutover", "source", "target")
        };
        let mut md = format!("# {title} of task `{}`: {}\n\n", self.task, self.state);
        if let Some(d) = self.downtime_seconds {
            md.push_str(&format!(
                "**Downtime** (fence on the {fenced} to write probe on the {opened}): \
                 **{d:.1} s**\n\n"
            ));
        }
        for (label, value) in [
            ("Fence LSN", &self.fence_lsn),
            ("Drained to", &self.drained_lsn),
        ] {
            if let Some(v) = value {
                md.push_str(&format!("- {label}: `{v}`\n"));
            }
        }
        if let Some(n) = self.sequences {
            md.push_str(&format!("- Sequences set on the {opened}: {n}\n"));
        }
        if let Some(r) = &self.reverse {
            md.push_str(&format!(
                "- Reverse stream: slot `{}`, publication `{}` on the target, from `{}`\n",
                r.get("slot").and_then(|v| v.as_str()).unwrap_or_default(),
                r.get("publication")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default(),
                r.get("start_lsn")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
            ));
        }
        if !self.plan.is_empty() {
            md.push_str("\n## Plan\n\n");
            for p in &self.plan {
                md.push_str(&format!("- {p}\n"));
            }
        }
        if !self.steps.is_empty() {
            md.push_str(
                "\n## Steps\n\n| step | state | started (UTC) | seconds |\n|---|---|---|---|\n",
            );
            for s in &self.steps {
                md.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    s.step,
                    s.state,
                    s.started_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    s.seconds.map(|x| format!("{x:.2}")).unwrap_or_default()
                ));
            }
        }
        if !self.validation.is_empty() {
            md.push_str(
                &format!("\n## Validation on the fenced {fenced}\n\n| table | outcome | source rows | target rows |\n|---|---|---|---|\n"),
            );
            for c in &self.validation {
                md.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    c.table,
                    c.outcome,
                    c.source_rows.map(|r| r.to_string()).unwrap_or_default(),
                    c.target_rows.map(|r| r.to_string()).unwrap_or_default()
                ));
            }
        }
        md
    }
}
