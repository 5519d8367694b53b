//! Folding a sub-batch's changes into their net effect per key, for the bulk path: an
//! insert then two updates of a row become one insert of the final row; an update keeps
//! only the columns it sent, so unchanged TOAST values are never overwritten.

use std::collections::{BTreeMap, HashMap};

use pgferry_pg::pgoutput::{Tuple, Value};

use super::{Change, KeyBytes, Op};

/// The net effect of a sub-batch's changes on one row.
#[derive(Debug, Clone)]
pub(super) enum Net {
    /// Inserted (and maybe updated) in this sub-batch: the final row.
    Inserted(Tuple),
    /// Existed before: its original key, and the final value of each column set.
    Updated {
        original: KeyBytes,
        set: BTreeMap<usize, Value>,
    },
    /// Existed before and is deleted.
    Deleted(KeyBytes),
    /// Existed before, deleted, and inserted again: original key and the final row.
    Replaced(KeyBytes, Tuple),
    /// Inserted and deleted within the sub-batch: nothing to do.
    Gone,
}

/// Folds one table's changes, in order, into net effects per key. `None` when the
/// sequence is not one a bulk apply reproduces faithfully (a key reused in the same
/// sub-batch, an unchanged TOAST value in a key); the careful path handles those.
pub(super) fn coalesce(changes: &[&Change]) -> Option<Vec<Net>> {
    let mut by_key: HashMap<KeyBytes, usize> = HashMap::with_capacity(changes.len());
    let mut nets: Vec<Net> = Vec::with_capacity(changes.len());
    for c in changes {
        match &c.op {
            Op::Insert(new) => {
                let k = c.key_of(new);
                match by_key.get(&k) {
                    None => {
                        by_key.insert(k, nets.len());
                        nets.push(Net::Inserted(new.clone()));
                    }
                    Some(&i) => {
                        nets[i] = match std::mem::replace(&mut nets[i], Net::Gone) {
                            Net::Deleted(orig) => Net::Replaced(orig, new.clone()),
                            Net::Gone => Net::Inserted(new.clone()),
                            _ => return None,
                        };
                    }
                }
            }
            Op::Update { old, new } => {
                let old_key = c.key_of(old.as_ref().map(|(_, t)| t).unwrap_or(new));
                let new_key = c.key_of(new);
                if new_key.iter().any(Option::is_none) {
                    return None;
                }
                let i = match by_key.remove(&old_key) {
                    None => {
                        nets.push(Net::Updated {
                            original: old_key,
                            set: sent_columns(new),
                        });
                        nets.len() - 1
                    }
                    Some(i) => {
                        nets[i] = match std::mem::replace(&mut nets[i], Net::Gone) {
                            Net::Inserted(row) => Net::Inserted(merge_row(row, new)),
                            Net::Replaced(orig, row) => Net::Replaced(orig, merge_row(row, new)),
                            Net::Updated { original, mut set } => {
                                set.extend(sent_columns(new));
                                Net::Updated { original, set }
                            }
                            Net::Deleted(_) | Net::Gone => return None,
                        };
                        i
                    }
                };
                if by_key.contains_key(&new_key) {
                    return None;
                }
                by_key.insert(new_key, i);
            }
            Op::Delete(old) => {
                let k = c.key_of(old);
                match by_key.get(&k) {
                    None => {
                        by_key.insert(k.clone(), nets.len());
                        nets.push(Net::Deleted(k));
                    }
                    Some(&i) => {
                        nets[i] = match std::mem::replace(&mut nets[i], Net::Gone) {
                            Net::Inserted(_) => Net::Gone,
                            Net::Replaced(orig, _) | Net::Updated { original: orig, .. } => {
                                Net::Deleted(orig)
                            }
                            Net::Deleted(_) | Net::Gone => return None,
                        };
                    }
                }
            }
        }
    }
    Some(nets)
}

/// The columns an update sent (all but unchanged TOAST values).
fn sent_columns(new: &Tuple) -> BTreeMap<usize, Value> {
    new.iter()
        .enumerate()
        .filter(|(_, v)| **v != Value::Unchanged)
        .map(|(i, v)| (i, v.clone()))
        .collect()
}

fn merge_row(mut row: Tuple, new: &Tuple) -> Tuple {
    for (i, v) in new.iter().enumerate() {
        if *v != Value::Unchanged
            && let Some(slot) = row.get_mut(i)
        {
            *slot = v.clone();
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use pgferry_pg::pgoutput::OldImage;
    use pgferry_pg::{Lsn, QualifiedName};

    use super::*;
    use crate::cdc::sql;
    use crate::cdc::tables::{TableInfo, TargetCol};

    fn table() -> Arc<TableInfo> {
        let col = |n: &str| {
            Some(TargetCol {
                col: sql::Col {
                    name: n.to_owned(),
                    type_sql: "text".to_owned(),
                },
                type_oid: 25,
                always_identity: false,
            })
        };
        Arc::new(TableInfo {
            source: QualifiedName::new("s", "t"),
            target: QualifiedName::new("s", "t"),
            cols: vec![col("id"), col("a"), col("b")],
            key: vec![0],
            filter: None,
            source_cols: vec!["id".into(), "a".into(), "b".into()],
        })
    }

    fn v(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn change(t: &Arc<TableInfo>, op: Op) -> Change {
        Change {
            table: t.clone(),
            op,
            xid: 1,
            commit_lsn: Lsn(1),
        }
    }

    #[test]
    fn an_insert_and_its_updates_become_one_insert_of_the_final_row() {
        let t = table();
        let cs = [
            change(&t, Op::Insert(vec![v("1"), v("a0"), v("b0")])),
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("1"), v("a1"), Value::Unchanged],
                },
            ),
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("1"), Value::Unchanged, v("b2")],
                },
            ),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let nets = coalesce(&refs).unwrap();
        assert_eq!(nets.len(), 1);
        let Net::Inserted(row) = &nets[0] else {
            panic!("{nets:?}")
        };
        assert_eq!(row, &vec![v("1"), v("a1"), v("b2")]);
    }

    #[test]
    fn updates_of_an_existing_row_keep_only_the_sent_columns() {
        let t = table();
        let cs = [
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("1"), v("a1"), Value::Unchanged],
                },
            ),
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("1"), v("a2"), Value::Unchanged],
                },
            ),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let nets = coalesce(&refs).unwrap();
        let Net::Updated { original, set } = &nets[0] else {
            panic!()
        };
        assert_eq!(original, &vec![Some(Bytes::from_static(b"1"))]);
        assert_eq!(
            set.keys().copied().collect::<Vec<_>>(),
            [0, 1],
            "TOAST column untouched"
        );
        assert_eq!(set[&1], v("a2"));
    }

    #[test]
    fn key_changes_follow_the_row_and_deletes_cancel_inserts() {
        let t = table();
        let cs = [
            change(
                &t,
                Op::Update {
                    old: Some((OldImage::Key, vec![v("1"), Value::Null, Value::Null])),
                    new: vec![v("2"), v("a"), v("b")],
                },
            ),
            change(
                &t,
                Op::Update {
                    old: None,
                    new: vec![v("2"), v("a2"), v("b")],
                },
            ),
            change(&t, Op::Insert(vec![v("9"), v("x"), v("y")])),
            change(&t, Op::Delete(vec![v("9"), Value::Null, Value::Null])),
            change(&t, Op::Delete(vec![v("5"), Value::Null, Value::Null])),
            change(&t, Op::Insert(vec![v("5"), v("new"), v("row")])),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let nets = coalesce(&refs).unwrap();
        assert_eq!(nets.len(), 3);
        let Net::Updated { original, set } = &nets[0] else {
            panic!()
        };
        assert_eq!(
            original,
            &vec![Some(Bytes::from_static(b"1"))],
            "found by its old key"
        );
        assert_eq!(set[&0], v("2"));
        assert_eq!(set[&1], v("a2"));
        assert!(matches!(nets[1], Net::Gone));
        assert!(
            matches!(&nets[2], Net::Replaced(k, _) if k == &vec![Some(Bytes::from_static(b"5"))])
        );
    }

    #[test]
    fn sequences_a_bulk_apply_cannot_reproduce_go_the_careful_way() {
        let t = table();
        let twice = [
            change(&t, Op::Insert(vec![v("1"), v("a"), v("b")])),
            change(&t, Op::Insert(vec![v("1"), v("a"), v("b")])),
        ];
        assert!(coalesce(&twice.iter().collect::<Vec<_>>()).is_none());
        let onto_taken_key = [
            change(&t, Op::Delete(vec![v("2"), Value::Null, Value::Null])),
            change(
                &t,
                Op::Update {
                    old: Some((OldImage::Key, vec![v("1"), Value::Null, Value::Null])),
                    new: vec![v("2"), v("a"), v("b")],
                },
            ),
        ];
        assert!(coalesce(&onto_taken_key.iter().collect::<Vec<_>>()).is_none());
    }
}
