//! Per-chunk snapshot filters: the stream's side of chunk-level resume.
//!
//! A `full-load-and-cdc` load that lost its snapshot (a crash, a source restart) keeps the
//! chunks it finished and copies the rest from a new snapshot. A table split by ranges of
//! a key then holds, for each chunk, the rows of that key range as of the
//! snapshot the chunk was copied from: the first snapshot, whose position the stream starts
//! at, or a later one. A change is applied to a row exactly when the row's chunk was copied
//! from a snapshot that did not see the change's transaction:
//! * a row's chunk is a function of its key, and the key column is part of the replica
//!   identity, so a change that alters it sends the old value too (tables whose split key
//!   is not are copied again whole); every version of a row with a given key
//!   lives in one chunk, and the copy of that chunk holds the row exactly as the chunk's
//!   snapshot saw it (row moves on disk do not matter, unlike with block ranges);
//! * an insert or a delete touches one key: applied unless that key's chunk saw the
//!   transaction;
//! * an update that keeps its key is the same; one that moves a row to another chunk is a
//!   delete in the old key's chunk and an insert in the new key's chunk, each applied by
//!   its own chunk's verdict ([`Verdict`]). Such an insert may lack large values the update
//!   left unchanged (pgoutput does not send them); they are read from the source's current
//!   row. That row may be newer than the change, but every later change of that key is
//!   applied too (its chunk did not see them either), so the row ends as the source has it.
//!
//! A row's chunk is found in the order that drew the chunks. An integer key is placed
//! here; any other key (text, numeric, uuid, dates) is placed by the source, in its type's
//! order and the database's collation, exactly as the chunks' `WHERE` ranges compare: one
//! round trip per key, and only for changes that some later snapshot saw (the stretch of
//! stream between the first snapshot and the last resume). Past that stretch no key is
//! placed at all.
//!
//! Chunks copied from the first snapshot have no filter. Partitioned tables (whose
//! changes arrive under their root) and tables split otherwise are copied again whole and
//! keep the table-level filter ([`super::tables::SnapshotFilter`]).

use std::collections::HashMap;

use pgferry_pg::pgoutput::Value;
use pgferry_pg::{Lsn, PgClient, QualifiedName};

use crate::cdc::tables::SnapshotFilter;
use crate::control;
use crate::error::Result;

/// One table's chunks, by key range, with the snapshot each was copied from when later
/// than the stream's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFilters {
    /// The split key's column name.
    pub column: String,
    /// How a key is placed in its chunk.
    pub order: KeyOrder,
    /// The snapshot of each chunk, in key order; `None` for the stream's own.
    filters: Vec<Option<SnapshotFilter>>,
}

/// How a key value is placed among the chunks' lower bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrder {
    /// An integer key, compared here: the lower bound of each chunk after the first.
    Integer(Vec<i64>),
    /// Any other key, compared by the source in the key type's own order (and the
    /// database's collation, the only one a split key may have): the same comparison that
    /// drew the chunks ([`pgferry_pg::split`]).
    Server {
        /// The key's type, as `pg_catalog."name"`.
        type_name: String,
        /// The lower bound of each chunk after the first, in text form.
        lows: Vec<String>,
    },
}

/// What to do with one change of a filtered table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    Skip,
    /// The old key's chunk applies it, the new key's chunk saw it: delete the old row.
    DeleteOld,
    /// The old key's chunk saw it, the new key's chunk did not: insert the new row.
    InsertNew,
}

impl Verdict {
    /// The verdict for a change whose old key's chunk did or did not see it, and likewise
    /// its new key's chunk (the same chunk for an insert or a delete).
    pub fn of(old_seen: bool, new_seen: bool) -> Verdict {
        match (old_seen, new_seen) {
            (false, false) => Verdict::Apply,
            (true, true) => Verdict::Skip,
            (false, true) => Verdict::DeleteOld,
            (true, false) => Verdict::InsertNew,
        }
    }
}

impl ChunkFilters {
    /// Whether any chunk was copied from a snapshot that saw `xid`: when none was, the
    /// change applies whatever its key, and no key needs placing.
    pub fn any_saw(&self, xid: u32, commit_lsn: Lsn) -> bool {
        self.filters
            .iter()
            .flatten()
            .any(|f| f.saw_commit(xid, commit_lsn))
    }

    /// Whether chunk `chunk` was copied from a snapshot that saw `xid`. A key that could
    /// not be placed (`None`) counts as not seen: the change is applied.
    pub fn saw(&self, chunk: Option<usize>, xid: u32, commit_lsn: Lsn) -> bool {
        chunk
            .and_then(|i| self.filters.get(i))
            .and_then(Option::as_ref)
            .is_some_and(|f| f.saw_commit(xid, commit_lsn))
    }

    /// The chunk of an integer key: the number of lower bounds at or below it (the first
    /// chunk is open below). `None` for a key that is not an integer or a table whose key
    /// is placed by the server.
    pub fn integer_chunk(&self, key: Option<i64>) -> Option<usize> {
        match (&self.order, key) {
            (KeyOrder::Integer(lows), Some(k)) => Some(lows.partition_point(|lo| *lo <= k)),
            _ => None,
        }
    }
}

/// The statement that places a key among server-ordered lower bounds: `$1` the bounds
/// as `text[]`, `$2` the key in the stream's form. The type name comes from the catalog
/// as a quoted identifier ([`pgferry_pg::split::SplitKey`]), never from a value.
pub fn placing_sql(type_name: &str) -> String {
    format!(
        "SELECT count(*)::int8 FROM pg_catalog.unnest($1::text[]) AS b(lo)
         WHERE b.lo::{type_name} <= $2::{type_name}"
    )
}

/// An integer key value as pgoutput sends it: text digits, or the binary send form of
/// `smallint`, `integer` or `bigint` (big-endian, by length).
pub fn integer_key(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Text(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        Value::Binary(b) => match b.len() {
            2 => Some(i64::from(i16::from_be_bytes([b[0], b[1]]))),
            4 => Some(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
            8 => Some(i64::from_be_bytes(b[..8].try_into().ok()?)),
            _ => None,
        },
        Value::Null | Value::Unchanged => None,
    }
}

/// The chunk filters of a task's tables that have any, by source table.
pub async fn load(client: &PgClient, task: &str) -> Result<HashMap<QualifiedName, ChunkFilters>> {
    let mut out = HashMap::new();
    for t in control::key_chunks_with_filters(client, task).await? {
        // The first chunk is open below; every other one has a lower bound.
        let lows: Vec<String> = t.chunks.iter().skip(1).flat_map(|c| c.0.clone()).collect();
        let integers: Option<Vec<i64>> = t
            .integer
            .then(|| lows.iter().map(|s| s.trim().parse().ok()).collect())
            .flatten();
        let order = match integers {
            Some(lows) => KeyOrder::Integer(lows),
            None => KeyOrder::Server {
                type_name: t.type_name.clone(),
                lows,
            },
        };
        let filters = t
            .chunks
            .iter()
            .map(|c| c.2.as_deref().and_then(SnapshotFilter::parse))
            .collect();
        out.insert(
            t.table,
            ChunkFilters {
                column: t.column,
                order,
                filters,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn filters() -> ChunkFilters {
        // Chunks [_, 100) from the first snapshot, [100, 200) and [200, _) from one that
        // saw every transaction before 50.
        let later = SnapshotFilter::parse("40:50:").unwrap();
        ChunkFilters {
            column: "id".into(),
            order: KeyOrder::Integer(vec![100, 200]),
            filters: vec![None, Some(later.clone()), Some(later)],
        }
    }

    #[test]
    fn a_change_applies_unless_its_rows_chunk_saw_it() {
        let f = filters();
        let saw = |k: Option<i64>, xid| f.saw(f.integer_chunk(k), xid, Lsn(1));
        assert!(!saw(Some(5), 45), "first-snapshot chunk");
        assert!(saw(Some(100), 45), "a lower bound is in its chunk");
        assert!(saw(Some(150), 45));
        assert!(!saw(Some(150), 60), "after the later snapshot");
        assert!(saw(Some(10_000), 45), "open last range");
        assert!(!saw(None, 45), "an unreadable key is applied");
        assert!(f.any_saw(45, Lsn(1)));
        assert!(!f.any_saw(60, Lsn(1)), "past every later snapshot");
        assert_eq!(Verdict::of(true, true), Verdict::Skip);
        assert_eq!(Verdict::of(false, false), Verdict::Apply);
        assert_eq!(Verdict::of(false, true), Verdict::DeleteOld);
        assert_eq!(Verdict::of(true, false), Verdict::InsertNew);
    }

    #[test]
    fn a_server_ordered_key_is_not_placed_here() {
        let f = ChunkFilters {
            column: "code".into(),
            order: KeyOrder::Server {
                type_name: "pg_catalog.\"text\"".into(),
                lows: vec!["m".into()],
            },
            filters: vec![None, SnapshotFilter::parse("40:50:")],
        };
        assert_eq!(f.integer_chunk(Some(5)), None);
        assert!(f.saw(Some(1), 45, Lsn(1)));
        assert!(placing_sql("pg_catalog.\"text\"").contains("b.lo::pg_catalog.\"text\" <= $2::"));
    }

    #[test]
    fn integer_keys_read_in_text_and_binary() {
        let text = Value::Text(Bytes::from_static(b"-42"));
        assert_eq!(integer_key(Some(&text)), Some(-42));
        let int4 = Value::Binary(Bytes::copy_from_slice(&7i32.to_be_bytes()));
        assert_eq!(integer_key(Some(&int4)), Some(7));
        let int8 = Value::Binary(Bytes::copy_from_slice(&(-9i64).to_be_bytes()));
        assert_eq!(integer_key(Some(&int8)), Some(-9));
        let int2 = Value::Binary(Bytes::copy_from_slice(&3i16.to_be_bytes()));
        assert_eq!(integer_key(Some(&int2)), Some(3));
        assert_eq!(integer_key(Some(&Value::Unchanged)), None);
        assert_eq!(integer_key(None), None);
    }
}
