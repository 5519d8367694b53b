//! What reaches the apply at all: the task's row filters (evaluated on the target), and
//! the chunk filters of a resumed load ([`crate::cdc::chunks`]).

use super::*;
use crate::error::MappingProblem;

impl Applier {
    /// The part of a change that the chunk filters of its table let through ([`super::chunks`]):
    /// all of it, nothing, the delete of the old row, or the insert of the new one (its
    /// unchanged large values read from the source's row; nothing when the source no longer
    /// has that row, whose later changes then come in the stream).
    pub(super) async fn through_chunk_filters(
        &mut self,
        table: &TableInfo,
        op: Op,
        xid: u32,
        commit_lsn: Lsn,
    ) -> Result<Option<Op>> {
        let Some(filters) = self.chunk_filters.get(&table.source) else {
            return Ok(Some(op));
        };
        // Past every later snapshot (the rest of the stream), nothing is placed.
        if !filters.any_saw(xid, commit_lsn) {
            return Ok(Some(op));
        }
        let Some(pos) = table.source_cols.iter().position(|c| *c == filters.column) else {
            return Ok(Some(op));
        };
        let (old, new) = match &op {
            Op::Insert(t) | Op::Delete(t) => (t.get(pos), t.get(pos)),
            Op::Update { old, new } => (
                old.as_ref().map(|(_, t)| t).unwrap_or(new).get(pos),
                new.get(pos),
            ),
        };
        let old_chunk = self.chunk_of(filters, old).await?;
        let new_chunk = if old == new {
            old_chunk
        } else {
            self.chunk_of(filters, new).await?
        };
        let verdict = Verdict::of(
            filters.saw(old_chunk, xid, commit_lsn),
            filters.saw(new_chunk, xid, commit_lsn),
        );
        match (verdict, op) {
            (Verdict::Apply, op) => Ok(Some(op)),
            (Verdict::Skip, _) => Ok(None),
            (
                Verdict::DeleteOld,
                Op::Update {
                    old: Some((_, old)),
                    ..
                },
            ) => Ok(Some(Op::Delete(old))),
            (Verdict::InsertNew, Op::Update { new, .. }) => {
                Ok(self.fill_unchanged(table, new, pos).await?.map(Op::Insert))
            }
            // Inserts and deletes have one key, and an update without an old image keeps
            // its key: the two verdicts agree.
            (_, op) => Ok(Some(op)),
        }
    }

    /// The chunk of a key value: placed here for an integer key, by the source for any
    /// other (one round trip, only for changes some later snapshot saw). `None` for a
    /// value that was not sent, which is then applied.
    async fn chunk_of(&self, filters: &ChunkFilters, key: Option<&Value>) -> Result<Option<usize>> {
        let lows = match &filters.order {
            KeyOrder::Integer(_) => {
                return Ok(filters.integer_chunk(crate::cdc::chunks::integer_key(key)));
            }
            KeyOrder::Server { lows, .. } if lows.is_empty() => return Ok(Some(0)),
            KeyOrder::Server { type_name, lows } => (type_name, lows),
        };
        let Some(value) = key.and_then(Value::bytes) else {
            return Ok(None);
        };
        let sql = crate::cdc::chunks::placing_sql(lows.0);
        let param = Param {
            value: Some(&value[..]),
            binary: self.binary,
        };
        let n: i64 = self
            .source
            .query_one("placing a key in its chunk", &sql, &[lows.1, &param])
            .await?
            .get(0);
        Ok(usize::try_from(n).ok())
    }

    /// `row` with its unchanged (unsent) values read from the source's current row of the
    /// same key, in the stream's form; `None` when the source has no such row.
    pub(super) async fn fill_unchanged(
        &self,
        table: &TableInfo,
        mut row: Tuple,
        key: usize,
    ) -> Result<Option<Tuple>> {
        let missing: Vec<usize> = (0..row.len())
            .filter(|i| row[*i] == Value::Unchanged)
            .collect();
        if missing.is_empty() {
            return Ok(Some(row));
        }
        let Some(k) = row.get(key).and_then(Value::bytes) else {
            return Ok(None);
        };
        let k = Param {
            value: Some(&k[..]),
            binary: self.binary,
        };
        let select: Vec<String> = missing
            .iter()
            .map(|i| {
                let c = pgferry_pg::quote_ident(&table.source_cols[*i]);
                if self.binary {
                    c
                } else {
                    format!("CASE WHEN {c} IS NULL THEN NULL ELSE pg_catalog.format('%s', {c}) END")
                }
            })
            .collect();
        // `$1` takes the key column's own type, so the key travels in the stream's form.
        let column = pgferry_pg::quote_ident(&table.source_cols[key]);
        let sql = format!(
            "SELECT {} FROM ONLY {} WHERE {column} = $1",
            select.join(", "),
            table.source.quoted(),
        );
        let Some(found) = self
            .source
            .query_opt("reading a row's unchanged values", &sql, &[&k])
            .await?
        else {
            return Ok(None);
        };
        for (n, i) in missing.iter().enumerate() {
            let raw: RawValue = found.get(n);
            row[*i] = match raw.0 {
                None => Value::Null,
                Some(b) if self.binary => Value::Binary(b),
                Some(b) => Value::Text(b),
            };
        }
        Ok(Some(row))
    }

    /// Applies the row filters of filtered tables: an insert whose row the filter keeps
    /// out is dropped, an update whose new row it keeps out becomes a delete (the row left
    /// the filter's range), and deletes stay (the row may be there). The filter runs on the
    /// target, in PostgreSQL's own comparison rules, once per table and sub-batch.
    pub(super) async fn apply_row_filters(&mut self, changes: Vec<Change>) -> Result<Vec<Change>> {
        if !changes.iter().any(|c| c.table.filter.is_some()) {
            return Ok(changes);
        }
        if self.binary {
            return Err(MappingProblem::FilterNeedsText.into());
        }
        // The rows to evaluate, per table description.
        let mut pending: HashMap<usize, (Arc<TableInfo>, Vec<usize>)> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            if c.table.filter.is_none() || matches!(c.op, Op::Delete(_)) {
                continue;
            }
            let entry = pending
                .entry(Arc::as_ptr(&c.table) as usize)
                .or_insert_with(|| (c.table.clone(), Vec::new()));
            entry.1.push(i);
        }
        let mut passes = vec![true; changes.len()];
        for (table, indexes) in pending.values() {
            let Some(filter) = &table.filter else {
                continue;
            };
            let value = |c: &Change, col: usize| -> Option<Option<String>> {
                let from = |t: &Tuple| match t.get(col) {
                    Some(Value::Unchanged) | None => None,
                    Some(v) => Some(v.bytes().map(|b| String::from_utf8_lossy(b).into_owned())),
                };
                match &c.op {
                    Op::Insert(new) => from(new),
                    Op::Update { old, new } => {
                        from(new).or_else(|| old.as_ref().and_then(|(_, t)| from(t)))
                    }
                    Op::Delete(_) => None,
                }
            };
            // A change whose filter column was not sent (an unchanged large value) keeps
            // its row where it is: it stays an update.
            let known: Vec<usize> = indexes
                .iter()
                .copied()
                .filter(|i| {
                    filter
                        .columns
                        .iter()
                        .all(|col| value(&changes[*i], *col).is_some())
                })
                .collect();
            if known.is_empty() {
                continue;
            }
            let arrays: Vec<Vec<Option<String>>> = filter
                .columns
                .iter()
                .map(|col| {
                    known
                        .iter()
                        .map(|i| value(&changes[*i], *col).flatten())
                        .collect()
                })
                .collect();
            let statement = self.statement(&filter.sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let rows = self
                .target
                .raw()
                .query(&statement, &refs)
                .await
                .map_err(|e| EngineError::Pg(self.target.err("evaluating a row filter", e)))?;
            let kept: HashSet<i64> = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
            for (n, i) in known.iter().enumerate() {
                passes[*i] = kept.contains(&(n as i64 + 1));
            }
        }
        let mut out = Vec::with_capacity(changes.len());
        for (c, pass) in changes.into_iter().zip(passes) {
            match (pass, c.op) {
                (true, op) => out.push(Change { op, ..c }),
                (false, Op::Insert(_)) => {}
                (false, Op::Update { old, new }) => {
                    let identity = old.map(|(_, t)| t).unwrap_or(new);
                    out.push(Change {
                        op: Op::Delete(identity),
                        ..c
                    });
                }
                (false, op @ Op::Delete(_)) => out.push(Change { op, ..c }),
            }
        }
        Ok(out)
    }
}
