//! Row-for-row comparison of two databases, independent of pgferry's own validation.
//!
//! Tests must not trust the code they test, so this module shares nothing with
//! `pgferry validate`: it fetches every row of every table as text, sorted, from both
//! sides, and compares them exactly. That is slow for big tables and fine for tests.

use tokio_postgres::Client;

use crate::cluster::ClusterError;

/// Session settings that make the text form of every value identical on both sides.
const CANONICAL_SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD';
    SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex';";

/// A table whose rows differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDifference {
    pub table: String,
    pub source_rows: usize,
    pub target_rows: usize,
    /// The first row found on one side and not the other, cut to 200 characters.
    pub example: Option<String>,
}

fn sql_err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> ClusterError + '_ {
    move |source| ClusterError::Sql {
        context: context.to_owned(),
        source,
    }
}

/// Every table with rows (regular tables and partitions) outside system schemas, the
/// `pgferry` control schema and the `pgferry_capture` DDL capture, as quoted names.
pub async fn user_tables(client: &Client) -> Result<Vec<String>, ClusterError> {
    let rows = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema',
                   'pgferry', 'pgferry_capture') AND n.nspname NOT LIKE 'pg\\_%'
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(sql_err("listing tables"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// All rows of `table` as sorted text.
pub async fn table_rows(client: &Client, table: &str) -> Result<Vec<String>, ClusterError> {
    client
        .batch_execute(CANONICAL_SESSION)
        .await
        .map_err(sql_err("setting up the session"))?;
    let rows = client
        .query(
            // `ROW(t.*)`, not `t`: a bare `t` would mean a column named t, if there is one.
            &format!(
                "SELECT ROW(t.*)::text FROM ONLY {table} AS t ORDER BY ROW(t.*)::text COLLATE \"C\""
            ),
            &[],
        )
        .await
        .map_err(sql_err("reading rows"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Compares every table of `source` with the same table on `target`. An empty result means
/// the two hold exactly the same rows.
pub async fn compare_databases(
    source: &Client,
    target: &Client,
) -> Result<Vec<TableDifference>, ClusterError> {
    let mut differences = Vec::new();
    let source_tables = user_tables(source).await?;
    let target_tables = user_tables(target).await?;
    for table in &source_tables {
        if !target_tables.contains(table) {
            differences.push(TableDifference {
                table: table.clone(),
                source_rows: table_rows(source, table).await?.len(),
                target_rows: 0,
                example: Some("table missing on the target".to_owned()),
            });
            continue;
        }
        let a = table_rows(source, table).await?;
        let b = table_rows(target, table).await?;
        if a != b {
            let example = describe_difference(&a, &b);
            differences.push(TableDifference {
                table: table.clone(),
                source_rows: a.len(),
                target_rows: b.len(),
                example,
            });
        }
    }
    for table in target_tables {
        if !source_tables.contains(&table) {
            differences.push(TableDifference {
                table,
                source_rows: 0,
                target_rows: 0,
                example: Some("table only on the target".to_owned()),
            });
        }
    }
    Ok(differences)
}

/// Describes the first row only on one side. When both sides have such a row, the two are
/// shown from just before the first character where they part, which is where the eye needs
/// to look.
fn describe_difference(source: &[String], target: &[String]) -> Option<String> {
    let only_source = source.iter().find(|r| !target.contains(r));
    let only_target = target.iter().find(|r| !source.contains(r));
    let clip = |s: &str, from: usize| -> String { s.chars().skip(from).take(300).collect() };
    Some(match (only_source, only_target) {
        (Some(a), Some(b)) => {
            let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
            let from = common.saturating_sub(40);
            format!(
                "rows part at character {common}: source \"…{}\" target \"…{}\"",
                clip(a, from),
                clip(b, from)
            )
        }
        (Some(a), None) => format!("only on source: {}", clip(a, 0)),
        (None, Some(b)) => format!("only on target: {}", clip(b, 0)),
        (None, None) => "same rows, different multiplicity".to_owned(),
    })
}
