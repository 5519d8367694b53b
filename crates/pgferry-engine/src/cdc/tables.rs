//! From a source relation, as pgoutput describes it, to the target table changes go to.
//!
//! A Relation message arrives before the first change of each relation in a stream, and
//! again when the relation changes. Resolving it decides:
//! * the target table (its name after the task's rules; a table outside the task's
//!   selection is ignored);
//! * for each source column, the target column (renamed by the rules), or nothing when the
//!   target computes it (a generated column) or a rule removes it; a column the source
//!   gained and the target lacks is added to the target first (`ALTER TABLE ... ADD
//!   COLUMN`), before the change that uses it, unless the task says not to;
//! * the row filter, if the rules give the table one, as a statement that picks the rows
//!   of a batch that pass it;
//! * the key that finds a row: the target's primary key, or the source's replica identity
//!   index, or, with `REPLICA IDENTITY FULL` and no key, the whole row.

use std::collections::HashSet;
use std::sync::Arc;

use pgferry_config::mapping::{SourceColumn, TableMap};
use pgferry_config::{Mapping, Selection};
use pgferry_pg::pgoutput::{Relation, RelationColumn};
use pgferry_pg::{PgClient, PgError, QualifiedName, quote_ident};

use crate::cdc::sql::Col;
use crate::error::{EngineError, MappingProblem, Result};

/// A target column a source column maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCol {
    pub col: Col,
    /// The target type's OID, for binary array parameters.
    pub type_oid: u32,
    /// A `GENERATED ALWAYS` identity column: an UPDATE may only set it to DEFAULT.
    pub always_identity: bool,
}

/// Where one relation's changes go.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The relation as published (the root, for a partitioned table).
    pub source: QualifiedName,
    pub target: QualifiedName,
    /// One entry per relation column: the target column, or `None` when the target
    /// computes it.
    pub cols: Vec<Option<TargetCol>>,
    /// Relation column positions of the key; empty for a full-row identity.
    pub key: Vec<usize>,
    /// The table's row filter, when the rules give it one.
    pub filter: Option<RowFilter>,
    /// The relation's column names on the source, in relation order.
    pub source_cols: Vec<String>,
}

/// A row filter as the applier runs it: one statement that takes the filter's columns as
/// `text[]` arrays, one element per row, and returns the (1-based) positions of the rows
/// that pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    pub sql: String,
    /// Relation column positions of the arrays, in parameter order.
    pub columns: Vec<usize>,
}

impl TableInfo {
    pub fn has_key(&self) -> bool {
        !self.key.is_empty()
    }

    /// The target columns that identify a row: the key, or every mapped column.
    pub fn identity(&self) -> Vec<usize> {
        if self.has_key() {
            self.key.clone()
        } else {
            (0..self.cols.len())
                .filter(|i| self.cols[*i].is_some())
                .collect()
        }
    }

    pub fn col(&self, i: usize) -> Option<&Col> {
        self.cols.get(i).and_then(|c| c.as_ref()).map(|c| &c.col)
    }

    /// Whether an UPDATE may name column `i` in SET, given whether the change alters its
    /// value as far as the identity shows. PostgreSQL refuses any value but DEFAULT for a
    /// `GENERATED ALWAYS` identity column, so it is left out unless its value changes
    /// (then the target's error goes to the data error policy). `changed` is `None` when
    /// the column is not in the identity: its old value is unknown, and it is left out.
    pub fn settable(&self, i: usize, changed: Option<bool>) -> bool {
        match self.cols.get(i).and_then(|c| c.as_ref()) {
            None => false,
            Some(c) if c.always_identity => changed == Some(true),
            Some(_) => true,
        }
    }
}

/// What a relation resolves to.
#[derive(Debug, Clone)]
pub enum Resolution {
    Apply(Arc<TableInfo>),
    /// Not part of this task: its changes are skipped.
    Ignore,
    /// The DDL capture's log (`cdc::capture`): its inserts are schema changes, read by
    /// these column names.
    Capture(Arc<Vec<String>>),
}

/// Which source relations the task applies.
#[derive(Debug, Clone)]
pub struct Scope {
    pub selection: Selection,
    pub mapping: Mapping,
    /// Add a column the source gained to the target (DMS's `HandleSourceTableAltered`).
    pub add_new_columns: bool,
    /// Selected tables left out by the no-key policy.
    pub excluded: HashSet<QualifiedName>,
}

impl Scope {
    pub fn includes(&self, name: &QualifiedName) -> bool {
        self.selection.includes_table(&name.schema, &name.name) && !self.excluded.contains(name)
    }
}

/// The topmost partitioned table above `table` on the source, if it is a partition.
async fn partition_root(source: &PgClient, table: &QualifiedName) -> Result<Option<QualifiedName>> {
    let row = source
        .query_opt(
            "finding a partition's root",
            "SELECT n.nspname, c.relname
             FROM pg_class r JOIN pg_namespace s ON s.oid = r.relnamespace
             JOIN pg_class c ON c.oid = pg_partition_root(r.oid) AND c.oid <> r.oid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE s.nspname = $1 AND r.relname = $2",
            &[&table.schema, &table.name],
        )
        .await?;
    Ok(row.map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1))))
}

/// Resolves `rel`. May add columns to the target table, in the caller's transaction.
pub async fn resolve(
    target: &PgClient,
    source: &PgClient,
    rel: &Relation,
    scope: &Scope,
) -> Result<Resolution> {
    let source_name = QualifiedName::new(&rel.namespace, &rel.name);
    // Rules name a partition by its root. Changes arrive under the root's name where the
    // source publishes through it (13 and later); before 13, under the partition's own.
    let rule_name = if scope.includes(&source_name) {
        source_name.clone()
    } else {
        match partition_root(source, &source_name).await? {
            Some(root) if scope.includes(&root) => root,
            _ => return Ok(Resolution::Ignore),
        }
    };
    let type_names = source_type_names(source, rel, scope).await?;
    let source_columns: Vec<SourceColumn<'_>> = rel
        .columns
        .iter()
        .zip(&type_names)
        .map(|(c, t)| SourceColumn {
            name: &c.name,
            type_name: t,
        })
        .collect();
    let map = scope
        .mapping
        .table(
            &rel.namespace,
            &rel.name,
            (&rule_name.schema, &rule_name.name),
            &source_columns,
        )
        .map_err(|e| EngineError::from(MappingProblem::Rule(e)))?;
    let target_name = crate::transform::target_name(&map);
    let mut columns = target_columns(target, &target_name).await?;
    if columns.is_empty() {
        return Err(EngineError::Pg(PgError::Prerequisite {
            side: target.side(),
            problem: format!(
                "changes arrive for {source_name}, but {target_name} does not exist on the {}",
                target.side()
            ),
            fix: "create the table on the target (or exclude it from the task), then run again"
                .to_owned(),
        }));
    }
    if add_missing_columns(target, source, rel, &map, &target_name, &columns, scope).await? {
        columns = target_columns(target, &target_name).await?;
    }
    let cols: Vec<Option<TargetCol>> = rel
        .columns
        .iter()
        .map(|c| {
            let name = map.target_column(&c.name)?;
            columns
                .iter()
                .find(|t| t.name == name && !t.generated)
                .map(|t| TargetCol {
                    col: Col {
                        name: t.name.clone(),
                        type_sql: t.type_sql.clone(),
                    },
                    type_oid: t.type_oid,
                    always_identity: t.always_identity,
                })
        })
        .collect();
    let key = key_positions(target, &target_name, rel, &cols).await?;
    let filter = row_filter(&map.filters, rel, &type_names);
    Ok(Resolution::Apply(Arc::new(TableInfo {
        source: source_name,
        target: target_name,
        cols,
        key,
        filter,
        source_cols: rel.columns.iter().map(|c| c.name.clone()).collect(),
    })))
}

/// The source's column types, for rules that match a type and for filters; empty names
/// when the task has no rules.
async fn source_type_names(
    source: &PgClient,
    rel: &Relation,
    scope: &Scope,
) -> Result<Vec<String>> {
    if scope.mapping.is_empty() {
        return Ok(vec![String::new(); rel.columns.len()]);
    }
    let oids: Vec<u32> = rel.columns.iter().map(|c| c.type_oid).collect();
    let mods: Vec<i32> = rel.columns.iter().map(|c| c.type_modifier).collect();
    Ok(source
        .query(
            "reading column types",
            "SELECT format_type(t, m) FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY
             AS x(t, m, n) ORDER BY n",
            &[&oids, &mods],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Columns the source has and the target lacks: adds them with the source's type, or warns
/// when the task says not to. Returns whether any was added.
async fn add_missing_columns(
    target: &PgClient,
    source: &PgClient,
    rel: &Relation,
    map: &TableMap,
    target_name: &QualifiedName,
    columns: &[TargetColumn],
    scope: &Scope,
) -> Result<bool> {
    let missing: Vec<(&RelationColumn, &str)> = rel
        .columns
        .iter()
        .filter_map(|c| Some((c, map.target_column(&c.name)?)))
        .filter(|(_, name)| !columns.iter().any(|t| t.name == *name))
        .collect();
    if !scope.add_new_columns {
        for (c, _) in &missing {
            tracing::warn!(table = %target_name, column = %c.name,
                "the source has a column the target lacks; its values are not applied \
                 (add_new_columns = false)");
        }
        return Ok(false);
    }
    for (c, name) in &missing {
        let type_sql: String = source
            .query_one(
                "reading a new column's type",
                "SELECT format_type($1::oid, $2::int)",
                &[&c.type_oid, &c.type_modifier],
            )
            .await?
            .get(0);
        let sql = format!(
            "ALTER TABLE {} ADD COLUMN {} {type_sql}",
            target_name.quoted(),
            quote_ident(name)
        );
        target
            .batch(&format!("adding column {name} to {target_name}"), &sql)
            .await?;
        tracing::info!(table = %target_name, column = %name, r#type = %type_sql,
            "added a column the source gained");
    }
    Ok(!missing.is_empty())
}

/// The positions of the key that finds a row: the target's primary key, else the source's
/// replica identity, else (with `REPLICA IDENTITY FULL`) none, meaning the whole row.
async fn key_positions(
    target: &PgClient,
    target_name: &QualifiedName,
    rel: &Relation,
    cols: &[Option<TargetCol>],
) -> Result<Vec<usize>> {
    let pk = primary_key(target, target_name).await?;
    let pk_positions: Option<Vec<usize>> = (!pk.is_empty())
        .then(|| {
            pk.iter()
                .map(|name| {
                    cols.iter()
                        .position(|c| c.as_ref().is_some_and(|c| &c.col.name == name))
                })
                .collect::<Option<Vec<_>>>()
        })
        .flatten();
    Ok(match pk_positions {
        Some(k) => k,
        None if rel.replica_identity == b'f' => Vec::new(),
        None => rel
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect(),
    })
}

/// The statement that evaluates a table's filters on a batch of rows.
fn row_filter(
    filters: &[pgferry_config::mapping::Filter],
    rel: &Relation,
    type_names: &[String],
) -> Option<RowFilter> {
    let mut columns: Vec<usize> = Vec::new();
    for f in filters {
        if let Some(i) = rel.columns.iter().position(|c| c.name == f.column)
            && !columns.contains(&i)
        {
            columns.push(i);
        }
    }
    let reference = |name: &str| {
        columns
            .iter()
            .position(|i| rel.columns[*i].name == name)
            .map(|k| format!("v.c{k}::{}", type_names[columns[k]]))
            .unwrap_or_else(|| "NULL".to_owned())
    };
    let predicate = crate::transform::filter_sql(filters, &reference)?;
    let params = (0..columns.len())
        .map(|k| format!("${}::text[]", k + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (0..columns.len())
        .map(|k| format!("c{k}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(RowFilter {
        sql: format!(
            "SELECT v.n FROM unnest({params}) WITH ORDINALITY AS v({names}, n) WHERE {predicate}"
        ),
        columns,
    })
}

struct TargetColumn {
    name: String,
    type_sql: String,
    type_oid: u32,
    generated: bool,
    always_identity: bool,
}

async fn target_columns(target: &PgClient, table: &QualifiedName) -> Result<Vec<TargetColumn>> {
    let rows = target
        .query(
            "reading target columns",
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid,
                    a.attgenerated <> '', a.attidentity = 'a'
             FROM pg_attribute a
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table.quoted()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TargetColumn {
            name: r.get(0),
            type_sql: r.get(1),
            type_oid: r.get(2),
            generated: r.get(3),
            always_identity: r.get(4),
        })
        .collect())
}

async fn primary_key(target: &PgClient, table: &QualifiedName) -> Result<Vec<String>> {
    let rows = target
        .query(
            "reading the target's primary key",
            "SELECT a.attname::text
             FROM pg_index i
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary
             ORDER BY k.n",
            &[&table.quoted()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A source snapshot that a table was copied with, when that was later than the stream's
/// start: the changes of transactions it already saw must not be applied again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFilter {
    xmax: u32,
    in_progress: HashSet<u32>,
    /// The source's WAL insert position when the snapshot was taken: a transaction whose
    /// commit comes after it was not seen, whatever its xid (32-bit xids wrap around in a
    /// long stream). `None` for filters recorded without it.
    until: Option<pgferry_pg::Lsn>,
}

impl SnapshotFilter {
    /// Parses `txid_current_snapshot()`'s text form, `xmin:xmax:xip,xip,...` (64-bit),
    /// optionally followed by `@` and the WAL position at the snapshot.
    pub fn parse(s: &str) -> Option<SnapshotFilter> {
        let (s, until) = match s.trim().split_once('@') {
            Some((snapshot, lsn)) => (snapshot, Some(lsn.trim().parse().ok()?)),
            None => (s, None),
        };
        let mut parts = s.trim().split(':');
        let _xmin: u64 = parts.next()?.parse().ok()?;
        let xmax: u64 = parts.next()?.parse().ok()?;
        let xip = parts.next().unwrap_or("");
        let in_progress = xip
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse::<u64>().map(|v| v as u32))
            .collect::<std::result::Result<HashSet<u32>, _>>()
            .ok()?;
        Some(SnapshotFilter {
            xmax: xmax as u32,
            in_progress,
            until,
        })
    }

    /// Whether the snapshot saw the committed transaction `xid` (32-bit, as pgoutput
    /// sends it): it did when `xid` precedes `xmax` and was not in progress.
    pub fn saw(&self, xid: u32) -> bool {
        (xid.wrapping_sub(self.xmax) as i32) < 0 && !self.in_progress.contains(&xid)
    }

    /// [`saw`](Self::saw), for a transaction that committed at `commit_lsn`: one that
    /// committed after the snapshot's WAL position was never seen.
    pub fn saw_commit(&self, xid: u32, commit_lsn: pgferry_pg::Lsn) -> bool {
        self.until.is_none_or(|until| commit_lsn <= until) && self.saw(xid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_filters_know_which_transactions_they_saw() {
        let f = SnapshotFilter::parse("100:110:103,107").unwrap();
        assert!(f.saw(99), "before xmin");
        assert!(f.saw(104), "between, finished");
        assert!(!f.saw(103), "in progress at the snapshot");
        assert!(!f.saw(110), "xmax itself is not visible");
        assert!(!f.saw(200), "after");
        let empty = SnapshotFilter::parse("5:5:").unwrap();
        assert!(empty.saw(4) && !empty.saw(5));
        // 64-bit xids: only the low 32 bits travel in pgoutput.
        let wide = SnapshotFilter::parse("4294967390:4294967400:").unwrap();
        assert!(wide.saw(100) && !wide.saw(104));
        // With the WAL position, a far later transaction whose xid wrapped is not seen.
        let at = SnapshotFilter::parse("100:110:103@0/5000").unwrap();
        let wrapped = 110u32.wrapping_add(3_000_000_000);
        assert!(at.saw(wrapped), "32-bit xids alone cannot tell");
        assert!(!at.saw_commit(wrapped, pgferry_pg::Lsn(0x9000)));
        assert!(at.saw_commit(104, pgferry_pg::Lsn(0x4000)));
        assert!(SnapshotFilter::parse("1:2:@nonsense").is_none());
        assert!(SnapshotFilter::parse("garbage").is_none());
    }

    #[test]
    fn identity_is_the_key_or_every_mapped_column() {
        let col = |n: &str| {
            Some(TargetCol {
                col: Col {
                    name: n.to_owned(),
                    type_sql: "integer".to_owned(),
                },
                type_oid: 23,
                always_identity: false,
            })
        };
        let t = TableInfo {
            source: QualifiedName::new("s", "t"),
            target: QualifiedName::new("s", "t"),
            cols: vec![col("a"), None, col("c")],
            key: vec![],
            filter: None,
            source_cols: Vec::new(),
        };
        assert_eq!(t.identity(), [0, 2], "generated columns are not compared");
        let keyed = TableInfo { key: vec![2], ..t };
        assert_eq!(keyed.identity(), [2]);
    }
}
