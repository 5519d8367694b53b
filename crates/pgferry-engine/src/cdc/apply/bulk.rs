//! The fast path: one bulk statement per table, operation and column set, each row count
//! checked. A [`Fallback`] names why a sub-batch goes to the careful path instead; the
//! stream counts each (`pgferry_cdc_bulk_fallbacks_total`).

use std::sync::Arc;

use super::*;

/// Why a sub-batch left the fast path for the careful, change-by-change one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The target's triggers and foreign keys would fire (pgferry may not set
    /// `session_replication_role`), so changes must go in source order.
    TriggersFire,
    /// A key is reused within the sub-batch, or a key value was not sent: net effects per
    /// key would not reproduce the changes faithfully.
    NotCoalescable,
    /// A key column has no column on the target (a rule removed it).
    KeyNotMapped,
    /// A delete or an update touched fewer rows than it named: a row is missing.
    RowMissing,
    /// An insert row lacks a large value the source did not send, so it cannot be
    /// inserted whole.
    UnsentValue,
    /// An insert touched fewer rows than it carried: a key already exists.
    KeyExists,
    /// A change of a table without a key did not touch exactly one row.
    KeylessMismatch,
    /// The bulk statement failed (one of its rows breaks a constraint, say).
    StatementFailed,
}

impl Fallback {
    /// Every reason, for metrics that show zero before the first.
    pub const ALL: [Fallback; 8] = [
        Fallback::TriggersFire,
        Fallback::NotCoalescable,
        Fallback::KeyNotMapped,
        Fallback::RowMissing,
        Fallback::UnsentValue,
        Fallback::KeyExists,
        Fallback::KeylessMismatch,
        Fallback::StatementFailed,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::TriggersFire => "triggers_fire",
            Fallback::NotCoalescable => "not_coalescable",
            Fallback::KeyNotMapped => "key_not_mapped",
            Fallback::RowMissing => "row_missing",
            Fallback::UnsentValue => "unsent_value",
            Fallback::KeyExists => "key_exists",
            Fallback::KeylessMismatch => "keyless_mismatch",
            Fallback::StatementFailed => "statement_failed",
        }
    }
}

/// What the fast path did with a sub-batch: applied it, or why not.
pub type Fast = std::result::Result<(), Fallback>;

impl Applier {
    /// Bulk apply, or the reason it did not go as planned.
    pub(super) async fn fast_apply(&mut self, changes: &[Change]) -> Result<Fast> {
        // Grouped by table description (its address): changes before and after a
        // Relation message that altered the table stay apart.
        let mut order: Vec<Arc<TableInfo>> = Vec::new();
        let mut by_table: HashMap<usize, Vec<&Change>> = HashMap::new();
        for c in changes {
            let ptr = Arc::as_ptr(&c.table) as usize;
            let entry = by_table.entry(ptr).or_default();
            if entry.is_empty() {
                order.push(c.table.clone());
            }
            entry.push(c);
        }
        for table in order {
            let list = &by_table[&(Arc::as_ptr(&table) as usize)];
            let applied = if table.has_key() {
                match coalesce(list) {
                    Some(nets) => self.apply_nets(&table, &nets).await?,
                    None => Err(Fallback::NotCoalescable),
                }
            } else {
                self.apply_keyless(&table, list).await?
            };
            if applied.is_err() {
                return Ok(applied);
            }
        }
        Ok(Ok(()))
    }

    pub(super) async fn apply_nets(
        &mut self,
        table: &Arc<TableInfo>,
        nets: &[Net],
    ) -> Result<Fast> {
        let key_cols: Vec<&sql::Col> = table.key.iter().filter_map(|i| table.col(*i)).collect();
        if key_cols.len() != table.key.len() {
            return Ok(Err(Fallback::KeyNotMapped));
        }
        // Deletes (including the old rows of replaced ones) first, then updates, then
        // inserts: a key freed in this sub-batch is free before it is taken again.
        let deletes: Vec<&KeyBytes> = nets
            .iter()
            .filter_map(|n| match n {
                Net::Deleted(k) | Net::Replaced(k, _) => Some(k),
                _ => None,
            })
            .collect();
        if !deletes.is_empty() {
            let binary = self.binary;
            let sql = |rows| sql::bulk_delete(&table.target, &key_cols, binary, rows);
            let columns: Vec<Vec<Option<&[u8]>>> = (0..table.key.len())
                .map(|k| deletes.iter().map(|key| key[k].as_deref()).collect())
                .collect();
            let n = self.bulk(&sql, table, &table.key, &columns).await?;
            // A filtered table lacks the rows its filter keeps out: deleting one is no error.
            let expected = deletes.len() as u64;
            if n != expected && !(table.filter.is_some() && n < expected) {
                return Ok(Err(Fallback::RowMissing));
            }
        }
        // Updates, grouped by the set of columns they set.
        /// An updated row: its original key and the columns it sets.
        type UpdatedRow<'a> = (&'a KeyBytes, &'a BTreeMap<usize, Value>);
        let mut groups: BTreeMap<Vec<usize>, Vec<UpdatedRow<'_>>> = BTreeMap::new();
        for n in nets {
            if let Net::Updated { original, set } = n {
                let cols: Vec<usize> = set
                    .iter()
                    .filter(|(i, v)| {
                        let changed = table
                            .key
                            .iter()
                            .position(|k| k == *i)
                            .map(|k| v.bytes() != original[k].as_ref());
                        table.settable(**i, changed)
                    })
                    .map(|(i, _)| *i)
                    .collect();
                groups.entry(cols).or_default().push((original, set));
            }
        }
        for (cols, rows) in &groups {
            if cols.is_empty() {
                continue;
            }
            let set_cols: Vec<&sql::Col> = cols.iter().filter_map(|i| table.col(*i)).collect();
            let binary = self.binary;
            let sql = |rows| sql::bulk_update(&table.target, &key_cols, &set_cols, binary, rows);
            let mut positions = table.key.clone();
            positions.extend(cols.iter().copied());
            let mut columns: Vec<Vec<Option<&[u8]>>> = (0..table.key.len())
                .map(|k| rows.iter().map(|(key, _)| key[k].as_deref()).collect())
                .collect();
            for c in cols {
                columns.push(
                    rows.iter()
                        .map(|(_, set)| set.get(c).and_then(|v| v.bytes()).map(|b| &b[..]))
                        .collect(),
                );
            }
            let n = self.bulk(&sql, table, &positions, &columns).await?;
            if n != rows.len() as u64 {
                return Ok(Err(Fallback::RowMissing));
            }
        }
        let inserts: Vec<&Tuple> = nets
            .iter()
            .filter_map(|n| match n {
                Net::Inserted(row) | Net::Replaced(_, row) => Some(row),
                _ => None,
            })
            .collect();
        self.bulk_insert(table, &inserts).await
    }

    /// Inserts whole rows with one statement, unless a row cannot be inserted whole (an
    /// unsent TOAST value) or a row was skipped (its key exists).
    pub(super) async fn bulk_insert(
        &mut self,
        table: &Arc<TableInfo>,
        rows: &[&Tuple],
    ) -> Result<Fast> {
        if rows.is_empty() {
            return Ok(Ok(()));
        }
        let cols: Vec<usize> = (0..table.cols.len())
            .filter(|i| table.cols[*i].is_some())
            .collect();
        if rows
            .iter()
            .any(|row| cols.iter().any(|i| row.get(*i) == Some(&Value::Unchanged)))
        {
            return Ok(Err(Fallback::UnsentValue));
        }
        let insert_cols: Vec<&sql::Col> = cols.iter().filter_map(|i| table.col(*i)).collect();
        let binary = self.binary;
        let sql = |rows| sql::bulk_insert(&table.target, &insert_cols, binary, rows);
        let columns: Vec<Vec<Option<&[u8]>>> = cols
            .iter()
            .map(|i| {
                rows.iter()
                    .map(|row| row.get(*i).and_then(|v| v.bytes()).map(|b| &b[..]))
                    .collect()
            })
            .collect();
        let n = self.bulk(&sql, table, &cols, &columns).await?;
        Ok(if n == rows.len() as u64 {
            Ok(())
        } else {
            Err(Fallback::KeyExists)
        })
    }

    /// A table without a key, in the fast path: inserts only (an append-only log, the
    /// common case) go in one statement; anything else goes change by change, in order,
    /// each expected to touch exactly one row.
    pub(super) async fn apply_keyless(
        &mut self,
        table: &Arc<TableInfo>,
        changes: &[&Change],
    ) -> Result<Fast> {
        let inserts: Vec<&Tuple> = changes
            .iter()
            .filter_map(|c| match &c.op {
                Op::Insert(row) => Some(row),
                _ => None,
            })
            .collect();
        if inserts.len() == changes.len() {
            return self.bulk_insert(table, &inserts).await;
        }
        for c in changes {
            if !matches!(self.apply_one(c).await?, Outcome::Applied) {
                return Ok(Err(Fallback::KeylessMismatch));
            }
        }
        Ok(Ok(()))
    }

    /// Runs a bulk statement with one array parameter per column.
    pub(super) async fn bulk(
        &mut self,
        sql: &(dyn Fn(sql::Rows) -> String + Sync),
        table: &TableInfo,
        positions: &[usize],
        columns: &[Vec<Option<&[u8]>>],
    ) -> Result<u64> {
        let arrays = positions
            .iter()
            .any(|i| table.col(*i).is_some_and(|c| c.type_sql.ends_with("[]")));
        if self.binary && arrays {
            return self.bulk_values(sql, positions, columns).await;
        }
        let statement = self.statement(&sql(sql::Rows::Arrays)).await?;
        let rows = if self.binary {
            let params: Vec<ArrayParam<'_>> = positions
                .iter()
                .zip(columns)
                .map(|(i, values)| ArrayParam {
                    element_oid: table.cols[*i].as_ref().map_or(0, |c| c.type_oid),
                    values: values.clone(),
                })
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            self.target.raw().execute(&statement, &refs).await
        } else {
            let mut params: Vec<Vec<Option<&str>>> = Vec::with_capacity(columns.len());
            for values in columns {
                let mut texts = Vec::with_capacity(values.len());
                for v in values {
                    texts.push(match v {
                        Some(b) => Some(std::str::from_utf8(b).map_err(|_| {
                            EngineError::Pg(PgError::Protocol {
                                side: self.source.side(),
                                message: "a text value is not valid UTF-8".to_owned(),
                            })
                        })?),
                        None => None,
                    });
                }
                params.push(texts);
            }
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            self.target.raw().execute(&statement, &refs).await
        };
        rows.map_err(|e| EngineError::Pg(self.target.err("applying a bulk change", e)))
    }

    /// A bulk statement whose rows come from `VALUES`, one binary parameter per value: a
    /// binary array of array values would be flattened by `unnest`. Rows go in pieces of
    /// [`VALUES_PIECES`] sizes, so a handful of prepared statements serve every batch, and
    /// no statement passes PostgreSQL's 65,535 parameters.
    pub(super) async fn bulk_values(
        &mut self,
        sql: &(dyn Fn(sql::Rows) -> String + Sync),
        positions: &[usize],
        columns: &[Vec<Option<&[u8]>>],
    ) -> Result<u64> {
        let rows = columns.first().map_or(0, Vec::len);
        let width = positions.len().max(1);
        let mut done = 0;
        let mut total = 0;
        while done < rows {
            let piece = VALUES_PIECES
                .iter()
                .copied()
                .find(|p| *p <= rows - done && p * width <= u16::MAX as usize)
                .unwrap_or(1);
            let statement = self.statement(&sql(sql::Rows::Values(piece))).await?;
            let params: Vec<Param<'_>> = (done..done + piece)
                .flat_map(|r| {
                    columns.iter().map(move |column| Param {
                        value: column[r],
                        binary: true,
                    })
                })
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            total += self
                .target
                .raw()
                .execute(&statement, &refs)
                .await
                .map_err(|e| EngineError::Pg(self.target.err("applying a bulk change", e)))?;
            done += piece;
        }
        Ok(total)
    }
}
