//! Reads from the source what key-range splitting needs ([`plan::key_split_parts`]): each
//! table's split key and its boundaries, inside the load's snapshot, so the boundaries
//! describe the rows the chunks copy. Read-only; nothing is stored until the plan is.

use std::collections::HashMap;

use pgferry_config::TableMap;
use pgferry_config::mapping::ChunkHint;
use pgferry_pg::catalog::Table;
use pgferry_pg::split;
use pgferry_pg::{PgClient, PgError, Side};

use crate::error::{EngineError, Result};
use crate::load::plan::{self, KeySplit, PlanSettings};

/// The key split of every table that should split by key. A `ranges` rule that cannot be
/// used (no such column, a nullable one, a boundary that is not a value of its type) is
/// an error that names the rule's table: the user asked for it.
pub(crate) async fn read(
    reader: &PgClient,
    tables: &[Table],
    maps: &HashMap<u32, TableMap>,
    settings: &PlanSettings,
) -> Result<HashMap<u32, KeySplit>> {
    let mut out = HashMap::new();
    let mut automatic = Vec::new();
    for t in tables {
        let hint = maps.get(&t.oid).and_then(|m| m.chunks.as_ref());
        let Some(parts) = plan::key_split_parts(t, hint, settings) else {
            continue;
        };
        match hint {
            Some(ChunkHint::Ranges { column, boundaries }) => {
                let refuse = |problem: String| {
                    EngineError::Pg(PgError::Prerequisite {
                        side: Side::Source,
                        problem: format!(
                            "the ranges rule (parallel-load) for {} cannot be used: {problem}",
                            t.name
                        ),
                        fix: "correct the table-settings rule's columns and boundaries, or \
                              remove it to let pgferry split the table itself"
                            .to_owned(),
                    })
                };
                let key = split::column_key(reader, t.oid, column)
                    .await?
                    .map_err(refuse)?;
                let ordered = split::ordered(reader, &key, boundaries)
                    .await
                    .map_err(|e| refuse(e.to_string()))?;
                out.insert(t.oid, KeySplit::Bounds(key, ordered));
            }
            _ => automatic.push((t, parts)),
        }
    }
    if automatic.is_empty() {
        return Ok(out);
    }
    let oids: Vec<u32> = automatic.iter().map(|(t, _)| t.oid).collect();
    let keys = split::split_keys(reader, &oids).await?;
    for (t, parts) in automatic {
        let split = match keys.get(&t.oid) {
            // Where block ranges serve, only a key that lets a CDC load resume chunk by
            // chunk is worth it: an integer in the replica identity.
            Some(key) if settings.tid_range_scan && !(key.integer && key.identity) => {
                KeySplit::Unsplittable("no integer key in the replica identity".to_owned())
            }
            Some(key) => match split::boundaries(reader, &t.name, key, parts).await? {
                Ok(bounds) => KeySplit::Bounds(key.clone(), bounds),
                Err(why) => KeySplit::Unsplittable(why),
            },
            None => KeySplit::Unsplittable(split::NO_KEY.to_owned()),
        };
        out.insert(t.oid, split);
    }
    Ok(out)
}
