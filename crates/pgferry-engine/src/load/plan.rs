//! Which tables to copy, in which format, split into which chunks.
//!
//! Planning is pure: it turns catalog facts into a plan, so every rule here is tested without
//! a database. The plan is stored in the control schema once and reused by every later run
//! of the task, so a resumed load copies exactly the chunks the first run planned.

use std::collections::HashMap;

use pgferry_config::mapping::ChunkHint;
use pgferry_config::{Selection, TableMap};
use pgferry_pg::catalog::Table;
use pgferry_pg::copy::{BlockRange, ChunkRange, CopyFormat};
use pgferry_pg::split::{self, SplitKey};

pub use crate::control::PlannedTable;

/// What the source said about splitting a table by key ranges, read before planning
/// (see [`key_split_parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySplit {
    /// A key and its boundaries, ascending and distinct.
    Bounds(SplitKey, Vec<String>),
    /// Why the table cannot be split by key.
    Unsplittable(String),
}

/// Settings that shape the plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanSettings {
    pub chunk_size: u64,
    pub block_size: i64,
    /// Whether the source can read a CTID range without scanning the whole table (14+).
    pub tid_range_scan: bool,
    /// Copy everything as text, e.g. because the two databases' encodings differ.
    pub force_text: bool,
    /// Split by an integer key even where block ranges would serve: a `full-load-and-cdc`
    /// load resumes such tables chunk by chunk after a crash ([`crate::cdc::chunks`]).
    pub prefer_integer_keys: bool,
}

/// The tables the selection picks, and the reasons others with rows were left out.
#[derive(Debug, Clone, Default)]
pub struct Selected {
    /// Selected tables with rows (regular tables and leaf partitions).
    pub tables: Vec<Table>,
    /// Selected partitioned parents: they have no rows but are created on the target.
    pub parents: Vec<Table>,
    pub warnings: Vec<String>,
}

/// Applies the task's selection. A partition goes with its root, so `orders` selects
/// `orders_2024` too. Tables that belong to an extension are left out: the extension
/// creates them on the target.
pub fn select_tables(all: &[Table], selection: &Selection) -> Selected {
    let mut selected = Selected::default();
    for table in all {
        let name = table.selection_name();
        if !selection.includes_table(&name.schema, &name.name) {
            continue;
        }
        if let Some(ext) = &table.extension {
            selected.warnings.push(format!(
                "{} belongs to extension {ext}; the extension creates it on the target, and \
                 its rows are not copied",
                table.name
            ));
            continue;
        }
        if table.kind == 'p' {
            selected.parents.push(table.clone());
        } else {
            selected.tables.push(table.clone());
        }
    }
    selected
}

/// Splits a table into block ranges of about `chunk_size` bytes each.
///
/// The number of chunks follows the table's total size (heap and TOAST), because TOASTed
/// values are read along with their rows; the ranges split the heap, where rows live. The
/// last range is open-ended. Without TID range scans (before PostgreSQL 14) every range
/// would scan the whole table: such tables split by key instead ([`key_split_parts`]).
pub fn chunk_ranges(table: &Table, settings: &PlanSettings) -> Vec<Option<BlockRange>> {
    let total = table.table_bytes.max(table.heap_bytes).max(0) as u64;
    let blocks = table.heap_bytes / settings.block_size.max(1);
    if !settings.tid_range_scan || total <= settings.chunk_size || blocks < 2 {
        return vec![None];
    }
    let count = total.div_ceil(settings.chunk_size).min(blocks as u64) as i64;
    let per_chunk = (blocks + count - 1) / count;
    let mut ranges = Vec::with_capacity(count as usize);
    let mut start = 0;
    while start < blocks {
        let end = start + per_chunk;
        ranges.push(Some(BlockRange {
            start,
            end: (end < blocks).then_some(end),
        }));
        start = end;
    }
    ranges
}

/// How many parts a table should be split into by key ranges, when it should be: the
/// user named boundaries (`ChunkHint::Ranges`, on every version), or the table is bigger
/// than a chunk and the source cannot read block ranges alone (before 14). `None` when
/// block ranges or one piece serve. The caller reads a [`KeySplit`] for these tables.
pub fn key_split_parts(
    table: &Table,
    hint: Option<&ChunkHint>,
    settings: &PlanSettings,
) -> Option<usize> {
    let total = table.table_bytes.max(table.heap_bytes).max(0) as u64;
    match hint {
        Some(ChunkHint::Whole) => None,
        Some(ChunkHint::Ranges { boundaries, .. }) => Some(boundaries.len() + 1),
        _ if settings.tid_range_scan && !settings.prefer_integer_keys => None,
        Some(ChunkHint::Parts(n)) if *n > 1 => Some(*n),
        _ if total > settings.chunk_size => {
            Some(total.div_ceil(settings.chunk_size.max(1)) as usize)
        }
        _ => None,
    }
}

/// A table's chunks, the key they split on and, for a big table left whole, why.
fn plan_chunks(
    t: &Table,
    hint: Option<&ChunkHint>,
    key: Option<&KeySplit>,
    settings: &PlanSettings,
) -> (Vec<Option<ChunkRange>>, Option<SplitKey>, Option<String>) {
    let blocks = |ranges: Vec<Option<BlockRange>>| {
        ranges
            .into_iter()
            .map(|r| r.map(ChunkRange::Blocks))
            .collect()
    };
    let users_ranges = matches!(hint, Some(ChunkHint::Ranges { .. }));
    if key_split_parts(t, hint, settings).is_some() {
        match key {
            Some(KeySplit::Bounds(k, bounds)) if !bounds.is_empty() => {
                return (
                    split::ranges(k, bounds)
                        .into_iter()
                        .map(|r| Some(ChunkRange::Key(r)))
                        .collect(),
                    Some(k.clone()),
                    None,
                );
            }
            // Block ranges serve where the source has them.
            _ if settings.tid_range_scan && !users_ranges => {}
            Some(KeySplit::Bounds(..)) => {
                return (
                    vec![None],
                    None,
                    Some("its key has a single value".to_owned()),
                );
            }
            Some(KeySplit::Unsplittable(why)) => return (vec![None], None, Some(why.clone())),
            None => return (vec![None], None, Some(split::NO_KEY.to_owned())),
        }
    }
    match hint {
        Some(ChunkHint::Whole) => (vec![None], None, None),
        Some(ChunkHint::Parts(n)) if *n > 1 => (
            blocks(chunk_ranges(
                t,
                &PlanSettings {
                    chunk_size: (t.table_bytes.max(t.heap_bytes).max(1) as u64)
                        .div_ceil(*n as u64)
                        .max(1),
                    ..*settings
                },
            )),
            None,
            None,
        ),
        _ => (blocks(chunk_ranges(t, settings)), None, None),
    }
}

/// Plans the selected tables, highest load order first, then biggest first, so the
/// longest copies start earliest. `maps` holds the rules' verdict for tables that have
/// rules (by source OID); a table without one is copied as it is.
pub fn plan_tables(
    tables: &[Table],
    maps: &HashMap<u32, TableMap>,
    keys: &HashMap<u32, KeySplit>,
    settings: &PlanSettings,
) -> Vec<PlannedTable> {
    let mut planned: Vec<PlannedTable> = tables
        .iter()
        .map(|t| {
            let map = maps.get(&t.oid);
            let (columns, target_columns): (Vec<String>, Vec<String>) = t
                .copy_columns()
                .filter_map(|c| {
                    let target = match map {
                        Some(m) => m.target_column(&c.name)?.to_owned(),
                        None => c.name.clone(),
                    };
                    Some((c.name.clone(), target))
                })
                .unzip();
            let (chunks, split_key, split_note) = plan_chunks(
                t,
                map.and_then(|m| m.chunks.as_ref()),
                keys.get(&t.oid),
                settings,
            );
            PlannedTable {
                table_id: 0,
                source_oid: t.oid,
                source: t.name.clone(),
                target: map
                    .map(crate::transform::target_name)
                    .unwrap_or_else(|| t.name.clone()),
                columns,
                target_columns,
                filter: map.and_then(crate::transform::table_filter_sql),
                load_order: map.map_or(0, |m| m.load_order),
                format: if t.binary_copy_safe
                    && !settings.force_text
                    && !map.is_some_and(TableMap::changes_types)
                {
                    CopyFormat::Binary
                } else {
                    CopyFormat::Text
                },
                estimated_rows: t.estimated_rows,
                estimated_bytes: t.table_bytes,
                chunks,
                split_key,
                split_note,
            }
        })
        .collect();
    planned.sort_by(|a, b| {
        b.load_order
            .cmp(&a.load_order)
            .then_with(|| b.estimated_bytes.cmp(&a.estimated_bytes))
            .then_with(|| a.source.cmp(&b.source))
    });
    for (i, t) in planned.iter_mut().enumerate() {
        t.table_id = i as i32 + 1;
    }
    planned
}

/// The in-scope schemas of the source.
pub(crate) async fn scope_schemas(
    source: &pgferry_pg::PgClient,
    task: &pgferry_config::Task,
) -> crate::error::Result<Vec<String>> {
    Ok(pgferry_pg::catalog::list_schemas(source)
        .await?
        .into_iter()
        .filter(|s| task.selection.includes_schema(s))
        .collect())
}

#[cfg(test)]
mod tests {
    use pgferry_config::TableRule;
    use pgferry_pg::QualifiedName;
    use pgferry_pg::catalog::Column;

    use super::*;

    fn table(schema: &str, name: &str, bytes: i64) -> Table {
        Table {
            oid: 1,
            name: QualifiedName::new(schema, name),
            kind: 'r',
            partition_root: None,
            heap_bytes: bytes,
            table_bytes: bytes,
            estimated_rows: Some(10),
            unlogged: false,
            has_primary_key: true,
            replica_identity: 'd',
            row_security: false,
            can_select: true,
            extension: None,
            columns: vec![
                Column {
                    name: "id".into(),
                    type_oid: 23,
                    type_name: "integer".into(),
                    generated: false,
                    not_null: true,
                },
                Column {
                    name: "double".into(),
                    type_oid: 23,
                    type_name: "integer".into(),
                    generated: true,
                    not_null: false,
                },
            ],
            binary_copy_safe: true,
        }
    }

    const SETTINGS: PlanSettings = PlanSettings {
        chunk_size: 100 * 8192,
        block_size: 8192,
        tid_range_scan: true,
        force_text: false,
        prefer_integer_keys: false,
    };

    #[test]
    fn small_tables_are_one_chunk() {
        assert_eq!(
            chunk_ranges(&table("s", "t", 8192 * 10), &SETTINGS),
            vec![None]
        );
    }

    #[test]
    fn big_tables_split_into_contiguous_ranges_with_an_open_end() {
        let ranges = chunk_ranges(&table("s", "t", 8192 * 1000), &SETTINGS);
        assert_eq!(ranges.len(), 10);
        assert_eq!(
            ranges[0],
            Some(BlockRange {
                start: 0,
                end: Some(100)
            })
        );
        assert_eq!(
            ranges[9],
            Some(BlockRange {
                start: 900,
                end: None
            })
        );
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].unwrap().end, Some(pair[1].unwrap().start));
        }
    }

    #[test]
    fn toast_heavy_tables_split_their_few_heap_blocks() {
        let mut t = table("s", "blobs", 8192 * 4);
        t.table_bytes = 8192 * 1000;
        let ranges = chunk_ranges(&t, &SETTINGS);
        assert_eq!(ranges.len(), 4, "never more chunks than blocks");
        assert_eq!(
            ranges[3],
            Some(BlockRange {
                start: 3,
                end: None
            })
        );
    }

    #[test]
    fn without_tid_range_scans_tables_stay_whole() {
        let settings = PlanSettings {
            tid_range_scan: false,
            ..SETTINGS
        };
        assert_eq!(
            chunk_ranges(&table("s", "t", 8192 * 1000), &settings),
            vec![None]
        );
    }

    #[test]
    fn before_14_big_tables_split_by_key_and_say_why_when_they_cannot() {
        let old = PlanSettings {
            tid_range_scan: false,
            ..SETTINGS
        };
        let big = table("s", "t", 8192 * 1000);
        assert_eq!(key_split_parts(&big, None, &old), Some(10));
        assert_eq!(
            key_split_parts(&big, None, &SETTINGS),
            None,
            "blocks on 14+"
        );
        assert_eq!(
            key_split_parts(&table("s", "t", 8192), None, &old),
            None,
            "small"
        );
        assert_eq!(key_split_parts(&big, Some(&ChunkHint::Whole), &old), None);
        let ranges = ChunkHint::Ranges {
            column: "id".into(),
            boundaries: vec!["5".into()],
        };
        assert_eq!(
            key_split_parts(&big, Some(&ranges), &SETTINGS),
            Some(2),
            "the user's ranges on every version"
        );

        let key = SplitKey {
            column: "id".into(),
            type_name: "pg_catalog.int4".into(),
            integer: true,
            identity: true,
        };
        let split = KeySplit::Bounds(key.clone(), vec!["10".into(), "20".into()]);
        let (chunks, k, note) = plan_chunks(&big, None, Some(&split), &old);
        assert_eq!(chunks.len(), 3);
        assert_eq!(k, Some(key.clone()));
        assert_eq!(note, None);
        assert!(matches!(&chunks[2], Some(ChunkRange::Key(r)) if r.hi.is_none()));

        let why = KeySplit::Unsplittable("no key".into());
        let (chunks, k, note) = plan_chunks(&big, None, Some(&why), &old);
        assert_eq!(
            (chunks, k, note.as_deref()),
            (vec![None], None, Some("no key"))
        );
        let single = KeySplit::Bounds(key, Vec::new());
        assert!(plan_chunks(&big, None, Some(&single), &old).2.is_some());

        // CDC tasks prefer an integer key on 14+ too, and fall back to blocks without one.
        let cdc = PlanSettings {
            prefer_integer_keys: true,
            ..SETTINGS
        };
        assert_eq!(key_split_parts(&big, None, &cdc), Some(10));
        assert_eq!(plan_chunks(&big, None, Some(&split), &cdc).0.len(), 3);
        let (chunks, k, note) = plan_chunks(&big, None, Some(&why), &cdc);
        assert!(matches!(chunks[0], Some(ChunkRange::Blocks(_))));
        assert_eq!((k, note), (None, None));
    }

    #[test]
    fn partitions_follow_their_root_and_extension_tables_are_left_out() {
        let mut part = table("public", "orders_2024", 10);
        part.partition_root = Some(QualifiedName::new("public", "orders"));
        let mut parent = table("public", "orders", 0);
        parent.kind = 'p';
        let mut ext = table("public", "spatial_ref_sys", 10);
        ext.extension = Some("postgis".into());
        let other = table("audit", "log", 10);
        let selection = Selection::new(vec![TableRule::new("public", "%")], vec![]);
        let s = select_tables(&[part, parent, ext, other], &selection);
        assert_eq!(s.tables.len(), 1);
        assert_eq!(s.tables[0].name.name, "orders_2024");
        assert_eq!(s.parents.len(), 1);
        assert!(s.warnings[0].contains("postgis"));
        let only_other = Selection::new(vec![TableRule::new("public", "orders")], vec![]);
        let mut part = table("public", "orders_2024", 10);
        part.partition_root = Some(QualifiedName::new("public", "orders"));
        assert_eq!(select_tables(&[part], &only_other).tables.len(), 1);
    }

    #[test]
    fn plans_put_big_tables_first_and_skip_generated_columns() {
        let mut odd = table("s", "odd", 10);
        odd.binary_copy_safe = false;
        let planned = plan_tables(
            &[table("s", "small", 1), odd, table("s", "big", 99)],
            &HashMap::new(),
            &HashMap::new(),
            &SETTINGS,
        );
        let names: Vec<_> = planned.iter().map(|p| p.source.name.as_str()).collect();
        assert_eq!(names, ["big", "odd", "small"]);
        assert_eq!(planned[0].table_id, 1);
        assert_eq!(planned[0].columns, ["id"]);
        assert_eq!(planned[1].format, CopyFormat::Text);
        assert_eq!(planned[0].format, CopyFormat::Binary);
        let text = plan_tables(
            &[table("s", "t", 1)],
            &HashMap::new(),
            &HashMap::new(),
            &PlanSettings {
                force_text: true,
                ..SETTINGS
            },
        );
        assert_eq!(text[0].format, CopyFormat::Text);
    }
}
