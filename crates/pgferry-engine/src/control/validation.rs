//! The latest comparison of each table (`pgferry.validation`), written by `validate` and
//! read by `status`. One row per source table, replaced by each comparison.

use pgferry_pg::{PgClient, QualifiedName};

use crate::error::Result;

/// One table's verdict, as stored.
#[derive(Debug, Clone)]
pub struct ValidationRecord<'a> {
    pub source: &'a QualifiedName,
    pub target: &'a QualifiedName,
    pub outcome: &'a str,
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
    pub detail: Option<&'a str>,
}

pub async fn store_validation(
    client: &PgClient,
    task: &str,
    v: &ValidationRecord<'_>,
) -> Result<()> {
    client
        .execute(
            "storing validation results",
            "INSERT INTO pgferry.validation (task, source_schema, source_table, target_schema,
                 target_table, outcome, source_rows, target_rows, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (task, source_schema, source_table) DO UPDATE SET
                 checked_at = now(), outcome = excluded.outcome,
                 source_rows = excluded.source_rows, target_rows = excluded.target_rows,
                 detail = excluded.detail",
            &[
                &task,
                &v.source.schema,
                &v.source.name,
                &v.target.schema,
                &v.target.name,
                &v.outcome,
                &v.source_rows,
                &v.target_rows,
                &v.detail,
            ],
        )
        .await?;
    Ok(())
}
