//! Checks of the task itself: DMS settings pgferry ignores or treats differently,
//! selection rules that match nothing, and the client tools the load runs.

use pgferry_config::NamePattern;
use pgferry_config::explain::Treatment;
use pgferry_pg::catalog::Table;
use pgferry_pg::dump::PgTools;

use super::{Ctx, Severity};

/// A `pg_dump` at least as new as the source; its output is adapted to the target.
pub(super) async fn tooling(ctx: &mut Ctx<'_>) {
    if !ctx.loads() {
        return;
    }
    let major = ctx.source_info.major();
    if let Err(e) = PgTools::locate(major).await {
        ctx.push(
            "tooling.pg_dump",
            Severity::Blocker,
            None,
            e.to_string(),
            format!(
                "install postgresql-client-{major} or newer, or point PGFERRY_PG_BINDIR at \
                 its bin directory"
            ),
        );
    }
}

/// DMS settings that are ignored or behave differently, and include rules that match no
/// table.
pub(super) fn rules(ctx: &mut Ctx<'_>, live: &[Table]) {
    let warnings = ctx.task.explanation.warnings.clone();
    for w in warnings {
        ctx.push(
            "task.dms_setting",
            match w.treatment {
                Treatment::Ignored => Severity::Info,
                Treatment::Different => Severity::Warning,
            },
            Some(w.setting.clone()),
            format!(
                "{} is {}: {}",
                w.setting,
                match w.treatment {
                    Treatment::Ignored => "ignored",
                    Treatment::Different => "carried out differently",
                },
                w.reason
            ),
            "`pgferry config explain` lists every setting; remove it or accept the difference",
        );
    }
    let rules = ctx.task.selection.include_rules().to_vec();
    for rule in rules {
        let (schema, table) = (
            NamePattern::new(&rule.schema),
            NamePattern::new(&rule.table),
        );
        let hits = live.iter().any(|t| {
            let n = t.selection_name();
            schema.matches(&n.schema) && table.matches(&n.name)
        });
        if !hits {
            ctx.push(
                "task.rule_matches_nothing",
                Severity::Warning,
                Some(format!("{}.{}", rule.schema, rule.table)),
                format!(
                    "the include rule for schema {:?}, table {:?} matches no table on the \
                     source",
                    rule.schema, rule.table
                ),
                "correct the rule's names (patterns use % and _, and are case-sensitive)",
            );
        }
    }
}
