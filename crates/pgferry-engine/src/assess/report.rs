//! The assessment as Markdown, for a change ticket.

use std::fmt::Write;

use super::size::duration;
use super::{Assessment, Severity};
use crate::cdc::human_bytes;

/// A Markdown report: the verdict, the estimate, then blockers, warnings and infos, each
/// with its fix. Table cells escape `|` so a message cannot break the table.
pub fn markdown(a: &Assessment) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# pgferry assessment: task `{}`\n", a.task);
    let _ = writeln!(
        out,
        "- Assessed: {}\n- Migration type: {}\n- Source: PostgreSQL {}\n- Target: PostgreSQL {}\n- Verdict: **{}** ({} blocker(s), {} warning(s), {} info)\n",
        a.assessed_at.format("%Y-%m-%d %H:%M:%S UTC"),
        a.migration_type,
        a.source_version,
        a.target_version,
        a.summary.verdict,
        a.summary.blockers,
        a.summary.warnings,
        a.summary.infos
    );
    if let Some(e) = &a.estimate {
        let _ = writeln!(
            out,
            "Estimated load time with {} job(s): **{}** (between {} and {}), from a {} sample \
             read at {}/s per session.\n",
            e.jobs,
            duration(e.seconds),
            duration(e.seconds_low),
            duration(e.seconds_high),
            human_bytes(e.sample_bytes as i64),
            human_bytes(e.sample_bytes_per_second as i64)
        );
    }
    if !a.tables.is_empty() {
        let _ = writeln!(out, "## Biggest tables\n");
        let _ = writeln!(
            out,
            "| Table | Size | Rows (estimate) | Split |\n|---|---|---|---|"
        );
        for t in a.tables.iter().take(10) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                cell(&t.table),
                human_bytes(t.bytes),
                t.estimated_rows.map(|r| r.to_string()).unwrap_or_default(),
                cell(&t.split)
            );
        }
        out.push('\n');
    }
    for (severity, title) in [
        (Severity::Blocker, "Blockers"),
        (Severity::Warning, "Warnings"),
        (Severity::Info, "Information"),
    ] {
        let rows: Vec<_> = a
            .findings
            .iter()
            .filter(|f| f.severity == severity)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {title}\n");
        let _ = writeln!(out, "| Check | Object | Finding | Fix |\n|---|---|---|---|");
        for f in rows {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                f.check,
                cell(f.object.as_deref().unwrap_or("")),
                cell(&f.message),
                cell(&f.fix)
            );
        }
        out.push('\n');
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::super::{Finding, Summary};
    use super::*;

    #[test]
    fn findings_are_grouped_and_cells_escaped() {
        let a = Assessment {
            task: "t".into(),
            migration_type: "full-load".into(),
            source_version: "13.12".into(),
            target_version: "15.4".into(),
            assessed_at: chrono::Utc::now(),
            findings: vec![Finding {
                check: "source.wal_level",
                severity: Severity::Blocker,
                object: Some("a|b".into()),
                message: "m".into(),
                fix: "f".into(),
            }],
            summary: Summary {
                blockers: 1,
                verdict: "blocked",
                ..Default::default()
            },
            estimate: None,
            tables: Vec::new(),
        };
        let md = markdown(&a);
        assert!(md.contains("Verdict: **blocked**"));
        assert!(md.contains("## Blockers"));
        assert!(!md.contains("## Warnings"));
        assert!(md.contains("| `source.wal_level` | a\\|b | m | f |"));
    }
}
