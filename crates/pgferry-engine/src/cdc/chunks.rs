//! Per-chunk snapshot filters: the stream's side of chunk-level resume.
//!
//! A `full-load-and-cdc` load that lost its snapshot (a crash, a source restart) keeps the
//! chunks it finished and copies the rest from a new snapshot. A table split by ranges of
//! an integer key then holds, for each chunk, the rows of that key range as of the
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
    /// `[lo, hi)` per chunk, ascending; `None` for an open end.
    ranges: Vec<(Option<i64>, Option<i64>, Option<SnapshotFilter>)>,
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

impl ChunkFilters {
    /// Whether the chunk holding `key` was copied from a snapshot that saw `xid`. A key
    /// that could not be read counts as not seen (the change is applied).
    pub fn saw(&self, key: Option<i64>, xid: u32, commit_lsn: Lsn) -> bool {
        let Some(k) = key else {
            return false;
        };
        // Ranges ascend and the first is open below: the chunk is the last one whose lower
        // end is at most `k`.
        let n = self
            .ranges
            .partition_point(|(lo, _, _)| lo.is_none_or(|lo| lo <= k));
        n.checked_sub(1)
            .and_then(|i| self.ranges[i].2.as_ref())
            .is_some_and(|f| f.saw_commit(xid, commit_lsn))
    }

    /// The verdict for a change whose row had key `old` before it and `new` after it
    /// (the same for an insert or a delete).
    pub fn verdict(&self, old: Option<i64>, new: Option<i64>, xid: u32, lsn: Lsn) -> Verdict {
        match (self.saw(old, xid, lsn), self.saw(new, xid, lsn)) {
            (false, false) => Verdict::Apply,
            (true, true) => Verdict::Skip,
            (false, true) => Verdict::DeleteOld,
            (true, false) => Verdict::InsertNew,
        }
    }
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
        let bound = |b: &Option<String>| b.as_deref().and_then(|s| s.parse::<i64>().ok());
        let ranges = t
            .chunks
            .iter()
            .map(|(lo, hi, f)| {
                (
                    bound(lo),
                    bound(hi),
                    f.as_deref().and_then(SnapshotFilter::parse),
                )
            })
            .collect();
        out.insert(
            t.table,
            ChunkFilters {
                column: t.column,
                ranges,
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
            ranges: vec![
                (None, Some(100), None),
                (Some(100), Some(200), Some(later.clone())),
                (Some(200), None, Some(later)),
            ],
        }
    }

    #[test]
    fn a_change_applies_unless_its_rows_chunk_saw_it() {
        let f = filters();
        assert!(!f.saw(Some(5), 45, Lsn(1)), "first-snapshot chunk");
        assert!(f.saw(Some(150), 45, Lsn(1)));
        assert!(!f.saw(Some(150), 60, Lsn(1)), "after the later snapshot");
        assert!(f.saw(Some(10_000), 45, Lsn(1)), "open last range");
        assert!(!f.saw(None, 45, Lsn(1)), "an unreadable key is applied");
        assert_eq!(f.verdict(Some(150), Some(150), 45, Lsn(1)), Verdict::Skip);
        assert_eq!(f.verdict(Some(5), Some(5), 45, Lsn(1)), Verdict::Apply);
        assert_eq!(
            f.verdict(Some(5), Some(150), 45, Lsn(1)),
            Verdict::DeleteOld
        );
        assert_eq!(
            f.verdict(Some(150), Some(5), 45, Lsn(1)),
            Verdict::InsertNew
        );
        assert_eq!(f.verdict(Some(150), Some(5), 60, Lsn(1)), Verdict::Apply);
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
