//! `pgferry validate`: do source and target hold the same rows?
//!
//! For every selected table, both servers compute the row count and an order-independent
//! checksum: the sum of a 64-bit hash of each row's text form. Both computations run on the
//! servers, in parallel, so no row crosses the network. The text form is made canonical
//! (date style, float digits, time zone, money locale) so equal values print equally on
//! both sides. Duplicate rows count separately in a sum (unlike XOR), so a table that lost
//! one of two identical rows is caught too.
//!
//! The source side reads one exported snapshot, so all tables are compared at one instant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pgferry_config::Task;
use pgferry_config::mapping::TableMap;
use pgferry_pg::catalog;
use pgferry_pg::{PgClient, QualifiedName, Side, describe_pg_error, quote_ident};
use serde::Serialize;

use crate::control;
use crate::endpoints::Endpoints;
use crate::error::Result;
use crate::load::plan;
use crate::load::snapshot::{self, SnapshotHolder};
use crate::queue::WorkQueue;
use crate::session;

/// The verdict on one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Match,
    RowCountDiffers,
    ChecksumDiffers,
    MissingOnTarget,
    ColumnsDiffer,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::RowCountDiffers => "row-count-differs",
            Outcome::ChecksumDiffers => "checksum-differs",
            Outcome::MissingOnTarget => "missing-on-target",
            Outcome::ColumnsDiffer => "columns-differ",
            Outcome::Error => "error",
        }
    }
}

/// One table's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    #[serde(skip)]
    pub source_name: QualifiedName,
    #[serde(skip)]
    pub target_name: QualifiedName,
    pub table: String,
    pub target: String,
    pub outcome: Outcome,
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
    pub detail: Option<String>,
    pub seconds: f64,
}

/// All tables' comparisons.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub task: String,
    pub tables: Vec<TableCheck>,
    pub matched: usize,
    pub differing: usize,
    pub seconds: f64,
}

impl ValidationReport {
    pub fn all_match(&self) -> bool {
        self.differing == 0
    }
}

/// The checksum query for a table: row count and the sum of the rows' text hashes.
/// `values` are the SQL expressions of the row's columns, in a fixed order; `filter` keeps
/// only the rows a task's filter rules select.
pub fn checksum_sql(table: &QualifiedName, values: &[String], filter: Option<&str>) -> String {
    let filter = filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
    format!(
        "SELECT count(*), coalesce(sum(hashtextextended(ROW({})::text, 0)::numeric), 0)::text \
         FROM ONLY {}{filter}",
        values.join(", "),
        table.quoted()
    )
}

/// One table's comparison, as SQL for each side.
struct Job {
    source: QualifiedName,
    target: QualifiedName,
    source_sql: String,
    target_sql: String,
}

/// Compares every selected table. Results are also stored in the control schema when the
/// target has the task.
pub async fn validate(task: &Task, jobs: usize) -> Result<ValidationReport> {
    let started = Instant::now();
    let endpoints = Endpoints::resolve(task)?;
    let holder = SnapshotHolder::export(&endpoints.source).await?;
    let checks = compare(task, &endpoints, holder.name(), jobs).await?;
    drop(holder);
    let target = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry validate").await?;
    store(&target, &task.name, &checks).await?;
    let matched = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Match)
        .count();
    Ok(ValidationReport {
        task: task.name.clone(),
        differing: checks.len() - matched,
        matched,
        tables: checks,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Compares every selected table, the source as of `snapshot` (an exported snapshot the
/// caller holds), sorted by table name.
pub(crate) async fn compare(
    task: &Task,
    endpoints: &Endpoints,
    snapshot: &str,
    jobs: usize,
) -> Result<Vec<TableCheck>> {
    let reader = snapshot::reader(&endpoints.source, snapshot, "pgferry validate").await?;
    let all = catalog::list_tables(&reader).await?;
    let selected = plan::select_tables(&all, &task.selection);
    drop(reader);

    let maps = crate::transform::table_maps(&task.mapping, selected.tables.iter())?;
    let target = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry validate").await?;
    let target_columns = target_columns(
        &target,
        &selected
            .tables
            .iter()
            .map(|t| crate::transform::target_of(&maps, t))
            .collect::<Vec<_>>(),
    )
    .await?;

    let mut checks = Vec::new();
    let mut queue_items = Vec::new();
    let mut ordered: Vec<_> = selected.tables.iter().collect();
    ordered.sort_by_key(|t| std::cmp::Reverse(t.table_bytes));
    for (i, t) in ordered.into_iter().enumerate() {
        match plan_check(t, &maps, &target_columns) {
            Planned::Checksums(job) => queue_items.push((i, job, Vec::new())),
            Planned::Verdict(check) => checks.push(*check),
        }
    }
    checks.extend(run_checks(endpoints, snapshot, jobs, queue_items).await?);
    checks.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(checks)
}

/// What comparing one table takes: checksums on both sides, or nothing more.
enum Planned {
    Checksums(Job),
    /// The target's table is missing or lacks columns: the verdict needs no checksum.
    Verdict(Box<TableCheck>),
}

/// The checksum statements for one table, or the verdict without them when the target's
/// table is missing or lacks columns.
fn plan_check(
    t: &catalog::Table,
    maps: &HashMap<u32, TableMap>,
    target_columns: &HashMap<QualifiedName, Vec<String>>,
) -> Planned {
    let map = maps.get(&t.oid);
    let target_name = crate::transform::target_of(maps, t);
    let (source_values, target_names) = compared_columns(t, map);
    let mismatch = |outcome: Outcome, detail: String| TableCheck {
        source_name: t.name.clone(),
        target_name: target_name.clone(),
        table: t.name.to_string(),
        target: target_name.to_string(),
        outcome,
        source_rows: None,
        target_rows: None,
        detail: Some(detail),
        seconds: 0.0,
    };
    let Some(on_target) = target_columns.get(&target_name) else {
        return Planned::Verdict(Box::new(mismatch(
            Outcome::MissingOnTarget,
            "the table does not exist on the target".to_owned(),
        )));
    };
    let missing: Vec<&str> = target_names
        .iter()
        .filter(|c| !on_target.contains(c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Planned::Verdict(Box::new(mismatch(
            Outcome::ColumnsDiffer,
            format!("column(s) missing on the target: {}", missing.join(", ")),
        )));
    }
    let filter = map.and_then(crate::transform::table_filter_sql);
    let target_values: Vec<String> = target_names.iter().map(|c| quote_ident(c)).collect();
    Planned::Checksums(Job {
        source: t.name.clone(),
        target: target_name.clone(),
        source_sql: checksum_sql(&t.name, &source_values, filter.as_deref()),
        target_sql: checksum_sql(&target_name, &target_values, None),
    })
}

/// Each source column that reaches the target, as an expression in its target type, and
/// its name there. Columns a rule adds exist only on the target and are not compared.
fn compared_columns(t: &catalog::Table, map: Option<&TableMap>) -> (Vec<String>, Vec<String>) {
    let mut source_values = Vec::new();
    let mut target_names = Vec::new();
    for c in &t.columns {
        let (name, new_type) = match map.and_then(|m| m.columns.iter().find(|x| x.source == c.name))
        {
            Some(x) => match &x.target {
                Some(n) => (n.clone(), x.new_type.clone()),
                None => continue,
            },
            None => (c.name.clone(), None),
        };
        source_values.push(match new_type {
            Some(ty) => format!("{}::{ty}", quote_ident(&c.name)),
            None => quote_ident(&c.name),
        });
        target_names.push(name);
    }
    (source_values, target_names)
}

/// Runs the checksums on `jobs` workers, each with a connection to each server (never more
/// workers than tables).
async fn run_checks(
    endpoints: &Endpoints,
    snapshot: &str,
    jobs: usize,
    queue_items: Vec<(usize, Job, Vec<usize>)>,
) -> Result<Vec<TableCheck>> {
    let workers_wanted = jobs.clamp(1, queue_items.len().max(1));
    let queue = Arc::new(WorkQueue::new(queue_items));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..workers_wanted {
        let queue = queue.clone();
        let endpoints = endpoints.clone();
        let snapshot = snapshot.to_owned();
        workers.spawn(async move {
            let source = snapshot::reader(&endpoints.source, &snapshot, "pgferry validate").await?;
            let target =
                pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry validate").await?;
            target
                .batch(
                    "setting up a validation session",
                    &format!(
                        "{} {} BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;",
                        session::NO_TIMEOUTS,
                        session::CANONICAL_TEXT
                    ),
                )
                .await?;
            let mut results = Vec::new();
            while let Some((key, job)) = queue.next().await {
                results.push(check_table(&source, &target, &job).await);
                queue.complete(&key, true);
            }
            Ok::<_, crate::error::EngineError>(results)
        });
    }
    let mut checks = Vec::new();
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(results)) => checks.extend(results),
            Ok(Err(e)) => {
                queue.close();
                first_error.get_or_insert(e);
            }
            Err(_) => queue.close(),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(checks),
    }
}

async fn check_table(source: &PgClient, target: &PgClient, job: &Job) -> TableCheck {
    let started = Instant::now();
    let (s, t) = tokio::join!(
        source.query_one("computing the source checksum", &job.source_sql, &[]),
        target.query_one("computing the target checksum", &job.target_sql, &[]),
    );
    let mut check = TableCheck {
        source_name: job.source.clone(),
        target_name: job.target.clone(),
        table: job.source.to_string(),
        target: job.target.to_string(),
        outcome: Outcome::Match,
        source_rows: None,
        target_rows: None,
        detail: None,
        seconds: 0.0,
    };
    match (s, t) {
        (Ok(s), Ok(t)) => {
            let (sc, sd): (i64, String) = (s.get(0), s.get(1));
            let (tc, td): (i64, String) = (t.get(0), t.get(1));
            check.source_rows = Some(sc);
            check.target_rows = Some(tc);
            if sc != tc {
                check.outcome = Outcome::RowCountDiffers;
                check.detail = Some(format!("{sc} rows on the source, {tc} on the target"));
            } else if sd != td {
                check.outcome = Outcome::ChecksumDiffers;
                check.detail = Some("same row count, but some rows differ in content".to_owned());
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            check.outcome = Outcome::Error;
            check.detail = Some(match &e {
                pgferry_pg::PgError::Query { side, source, .. } => {
                    format!("{side}: {}", describe_pg_error(source))
                }
                other => other.to_string(),
            });
        }
    }
    check.seconds = started.elapsed().as_secs_f64();
    check
}

/// Column names of each target table that exists.
async fn target_columns(
    target: &PgClient,
    names: &[QualifiedName],
) -> Result<HashMap<QualifiedName, Vec<String>>> {
    let schemas: Vec<&str> = names.iter().map(|n| n.schema.as_str()).collect();
    let tables: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
    let rows = target
        .query(
            "reading target columns",
            "SELECT n.nspname::text, c.relname::text,
                    array(SELECT a.attname::text FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                          ORDER BY a.attnum)
             FROM unnest($1::text[], $2::text[]) AS w(s, t)
             JOIN pg_namespace n ON n.nspname = w.s
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.t",
            &[&schemas, &tables],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                r.get(2),
            )
        })
        .collect())
}

async fn store(target: &PgClient, task: &str, checks: &[TableCheck]) -> Result<()> {
    if control::find_task(target, task).await?.is_none() {
        return Ok(());
    }
    for c in checks {
        let record = control::ValidationRecord {
            source: &c.source_name,
            target: &c.target_name,
            outcome: c.outcome.as_str(),
            source_rows: c.source_rows,
            target_rows: c.target_rows,
            detail: c.detail.as_deref(),
        };
        control::store_validation(target, task, &record).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_sql_quotes_everything_and_sums_row_hashes() {
        let sql = checksum_sql(
            &QualifiedName::new("Weird \"Schema\"", "order"),
            &[
                quote_ident("group"),
                format!("{}::bigint", quote_ident("Order ID")),
            ],
            Some("(\"group\" = E'a')"),
        );
        assert_eq!(
            sql,
            "SELECT count(*), coalesce(sum(hashtextextended(ROW(\"group\", \"Order ID\"::bigint)::text, \
             0)::numeric), 0)::text FROM ONLY \"Weird \"\"Schema\"\"\".\"order\" WHERE (\"group\" = E'a')"
        );
    }
}
