//! Splitting a table by ranges of one key column: where block ranges cannot serve (before
//! PostgreSQL 14 a CTID range reads the whole table) and where the user names the
//! boundaries (DMS `ranges`).
//!
//! A chunk is `key >= lo AND key < hi`, either end open. The chunks of a table cover every
//! row exactly once because:
//! * the key is `NOT NULL` (no row escapes both comparisons);
//! * the boundaries strictly ascend in the order the comparisons use: the server orders
//!   and deduplicates them as values of the key's type ([`ordered`]), and only keys whose
//!   collation is the database default (or that have none) are used, so the chunk
//!   predicates compare the same way;
//! * the first range has no lower end and the last no upper end.
//!
//! Values travel as text. In the chunk's COPY (which takes no parameters) an integer is
//! written as the number it parses to, and any other value as hex digits decoded on the
//! server, so no value can end the literal it sits in.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::types::Oid;

use crate::connect::PgClient;
use crate::error::PgError;
use crate::ident::{QualifiedName, quote_ident};

/// The column a table is split on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitKey {
    pub column: String,
    /// The built-in type, as `pg_catalog."name"` (no type modifier, so no value is cut).
    pub type_name: String,
    /// `smallint`, `integer` or `bigint`: bounds are written as numbers.
    pub integer: bool,
    /// Part of the table's replica identity (or the identity is the full row): every
    /// change that alters the column sends its old value, so a change's chunk is known
    /// before and after it.
    #[serde(default)]
    pub identity: bool,
}

/// One chunk's rows: `lo <= key < hi`, `None` for an open end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRange {
    pub key: SplitKey,
    pub lo: Option<String>,
    pub hi: Option<String>,
}

impl KeyRange {
    /// The chunk's predicates, for a `WHERE` clause.
    pub fn predicates(&self) -> Vec<String> {
        let column = quote_ident(&self.key.column);
        let mut out = Vec::new();
        if let Some(lo) = &self.lo {
            out.push(format!("{column} >= {}", literal(&self.key, lo)));
        }
        if let Some(hi) = &self.hi {
            out.push(format!("{column} < {}", literal(&self.key, hi)));
        }
        out
    }
}

/// A value of `key`'s type as SQL: an integer as its number, anything else hex-encoded
/// and decoded by the server, then cast.
fn literal(key: &SplitKey, value: &str) -> String {
    if key.integer
        && let Ok(n) = value.trim().parse::<i64>()
    {
        return n.to_string();
    }
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    format!(
        "pg_catalog.convert_from(pg_catalog.decode('{hex}', 'hex'), 'UTF8')::{}",
        key.type_name
    )
}

/// Built-in types whose text form reads back as the same value in any session, and that
/// sort with a default btree operator class.
const SPLIT_TYPES: &str = "'int2', 'int4', 'int8', 'numeric', 'text', 'varchar', 'bpchar', \
     'uuid', 'date', 'timestamp', 'timestamptz'";

/// Why a table has no key to split on, for the plan and `status`.
pub const NO_KEY: &str = "no NOT NULL column of an integer, numeric, text, uuid, date or \
     timestamp type (with the database's default collation) leads a btree index";

/// The best split key of each table that has one: the leading column of a valid btree
/// index (the primary key first, then a unique index, then integers before other types),
/// `NOT NULL`, of a type in [`SPLIT_TYPES`].
pub async fn split_keys(
    client: &PgClient,
    oids: &[Oid],
) -> Result<HashMap<Oid, SplitKey>, PgError> {
    let rows = client
        .query(
            "looking for split keys",
            &format!(
                "SELECT DISTINCT ON (i.indrelid) i.indrelid, a.attname::text,
                        'pg_catalog.' || quote_ident(t.typname), t.typname IN ('int2', 'int4', 'int8'),
                        c.relreplident = 'f' OR EXISTS (
                            SELECT FROM pg_index ri
                            WHERE ri.indrelid = i.indrelid AND a.attnum = ANY(ri.indkey)
                              AND (ri.indisprimary AND c.relreplident = 'd'
                                   OR ri.indisreplident AND c.relreplident = 'i'))
                 FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indrelid
                 JOIN pg_class ic ON ic.oid = i.indexrelid
                 JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 JOIN pg_type t ON t.oid = a.atttypid
                 WHERE i.indrelid = ANY($1) AND i.indisvalid AND i.indpred IS NULL
                   AND i.indkey[0] <> 0 AND a.attnotnull
                   AND t.typnamespace = 'pg_catalog'::regnamespace
                   AND t.typname IN ({SPLIT_TYPES})
                   AND a.attcollation IN (0, 100)
                 ORDER BY i.indrelid, i.indisprimary DESC, i.indisunique DESC,
                          t.typname IN ('int2', 'int4', 'int8') DESC, i.indexrelid"
            ),
            &[&oids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                SplitKey {
                    column: r.get(1),
                    type_name: r.get(2),
                    integer: r.get(3),
                    identity: r.get(4),
                },
            )
        })
        .collect())
}

/// `column` of `table` as a split key, or why it cannot be one.
pub async fn column_key(
    client: &PgClient,
    table: Oid,
    column: &str,
) -> Result<Result<SplitKey, String>, PgError> {
    let row = client
        .query_opt(
            "reading a split column",
            &format!(
                "SELECT 'pg_catalog.' || quote_ident(t.typname),
                        t.typname IN ('int2', 'int4', 'int8'), a.attnotnull,
                        t.typnamespace = 'pg_catalog'::regnamespace
                            AND t.typname IN ({SPLIT_TYPES}),
                        a.attcollation IN (0, 100),
                        c.relreplident = 'f' OR EXISTS (
                            SELECT FROM pg_index ri
                            WHERE ri.indrelid = c.oid AND a.attnum = ANY(ri.indkey)
                              AND (ri.indisprimary AND c.relreplident = 'd'
                                   OR ri.indisreplident AND c.relreplident = 'i'))
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                 JOIN pg_class c ON c.oid = a.attrelid
                 WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0
                   AND NOT a.attisdropped"
            ),
            &[&table, &column],
        )
        .await?;
    let Some(r) = row else {
        return Ok(Err(format!("it has no column {column:?}")));
    };
    let (type_name, integer, not_null, supported, collation): (String, bool, bool, bool, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    let identity: bool = r.get(5);
    Ok(if !not_null {
        Err(format!(
            "column {column:?} may be NULL, and a NULL falls in no range"
        ))
    } else if !supported {
        Err(format!(
            "column {column:?} is not of an integer, numeric, text, uuid, date or timestamp \
             type"
        ))
    } else if !collation {
        Err(format!(
            "column {column:?} has a collation other than the database's default"
        ))
    } else {
        Ok(SplitKey {
            column: column.to_owned(),
            type_name,
            integer,
            identity,
        })
    })
}

/// `values` as values of `key`'s type, distinct and in ascending order, as the server
/// sorts them. A value that is not of the type is an error from the server.
pub async fn ordered(
    client: &PgClient,
    key: &SplitKey,
    values: &[String],
) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "ordering split boundaries",
            &format!(
                // `ORDER BY d.v`: a bare `v` would name the text output column and sort
                // the values as strings.
                "SELECT d.v::text AS bound
                 FROM (SELECT DISTINCT s::{} AS v FROM unnest($1::text[]) s) d
                 ORDER BY d.v",
                key.type_name
            ),
            &[&values],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Boundaries that cut `table` into about `parts` ranges of `key` holding similar numbers
/// of rows: from the planner's histogram when `ANALYZE` made one, else (integers) evenly
/// between the smallest and largest key. `Err` says why there are none.
pub async fn boundaries(
    client: &PgClient,
    table: &QualifiedName,
    key: &SplitKey,
    parts: usize,
) -> Result<Result<Vec<String>, String>, PgError> {
    let histogram: Option<String> = client
        .query_opt(
            "reading the key's histogram",
            "SELECT histogram_bounds::text FROM pg_stats
             WHERE schemaname = $1 AND tablename = $2 AND attname = $3
             ORDER BY inherited LIMIT 1",
            &[&table.schema, &table.name, &key.column],
        )
        .await?
        .and_then(|r| r.get(0));
    if let Some(histogram) = histogram {
        let bounds: Vec<String> = client
            .query(
                "reading the key's histogram",
                &format!(
                    "SELECT v::text FROM unnest($1::text::{}[]) v",
                    key.type_name
                ),
                &[&histogram],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let picked = pick(&bounds, parts);
        if !picked.is_empty() {
            return Ok(Ok(ordered(client, key, &picked).await?));
        }
    }
    if !key.integer {
        return Ok(Err(format!(
            "the key column {:?} has no statistics: run ANALYZE on the source table",
            key.column
        )));
    }
    let row = client
        .query_one(
            "reading the key's range",
            &format!(
                "SELECT min({c})::int8, max({c})::int8 FROM ONLY {}",
                table.quoted(),
                c = quote_ident(&key.column)
            ),
            &[],
        )
        .await?;
    let (Some(min), Some(max)): (Option<i64>, Option<i64>) = (row.get(0), row.get(1)) else {
        return Ok(Err("the table has no rows".to_owned()));
    };
    Ok(Ok(evenly(min, max, parts)))
}

/// `parts - 1` values spread evenly through a histogram's bounds (equal-frequency
/// buckets), without its two ends.
fn pick(bounds: &[String], parts: usize) -> Vec<String> {
    if bounds.len() < 3 || parts < 2 {
        return Vec::new();
    }
    let last = bounds.len() - 1;
    (1..parts)
        .map(|i| i * last / parts)
        .filter(|&i| i > 0 && i < last)
        .map(|i| bounds[i].clone())
        .collect()
}

/// `parts - 1` integers spread evenly over `[min, max]`.
fn evenly(min: i64, max: i64, parts: usize) -> Vec<String> {
    let span = i128::from(max) - i128::from(min) + 1;
    let mut out: Vec<String> = (1..parts.max(1))
        .map(|i| i128::from(min) + span * i as i128 / parts as i128)
        .filter(|&b| b > i128::from(min) && b <= i128::from(max))
        .map(|b| b.to_string())
        .collect();
    out.dedup();
    out
}

/// The ranges that `boundaries` (ascending, distinct) make: open below the first and
/// above the last.
pub fn ranges(key: &SplitKey, boundaries: &[String]) -> Vec<KeyRange> {
    let mut out = Vec::with_capacity(boundaries.len() + 1);
    let mut lo = None;
    for b in boundaries {
        out.push(KeyRange {
            key: key.clone(),
            lo: lo.take(),
            hi: Some(b.clone()),
        });
        lo = Some(b.clone());
    }
    out.push(KeyRange {
        key: key.clone(),
        lo,
        hi: None,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(integer: bool) -> SplitKey {
        SplitKey {
            column: "Order \"Id\"".into(),
            type_name: if integer {
                "pg_catalog.int8".into()
            } else {
                "pg_catalog.text".into()
            },
            integer,
            identity: true,
        }
    }

    #[test]
    fn integer_bounds_are_numbers_and_others_cannot_leave_their_literal() {
        let r = KeyRange {
            key: key(true),
            lo: Some("-5".into()),
            hi: Some("100".into()),
        };
        assert_eq!(
            r.predicates(),
            ["\"Order \"\"Id\"\"\" >= -5", "\"Order \"\"Id\"\"\" < 100"]
        );
        let hostile = KeyRange {
            key: key(false),
            lo: None,
            hi: Some("x'); DROP TABLE t; --\\".into()),
        };
        let p = hostile.predicates();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("\"Order \"\"Id\"\"\" < pg_catalog.convert_from(pg_catalog.decode('")
        );
        let inside = p[0].split('\'').nth(1).unwrap();
        assert!(inside.chars().all(|c| c.is_ascii_hexdigit()), "{inside}");
        // A non-number for an integer key is still only a literal.
        let odd = KeyRange {
            key: key(true),
            lo: Some("1; SELECT 1".into()),
            hi: None,
        };
        assert!(odd.predicates()[0].contains("decode('"));
    }

    #[test]
    fn ranges_cover_everything_with_open_ends() {
        let rs = ranges(&key(true), &["10".into(), "20".into()]);
        let ends: Vec<_> = rs.iter().map(|r| (r.lo.clone(), r.hi.clone())).collect();
        assert_eq!(
            ends,
            [
                (None, Some("10".into())),
                (Some("10".into()), Some("20".into())),
                (Some("20".into()), None)
            ]
        );
        assert_eq!(ranges(&key(true), &[]).len(), 1);
    }

    #[test]
    fn even_integer_bounds_stay_inside_the_range_and_never_repeat() {
        assert_eq!(evenly(1, 100, 4), ["26", "51", "76"]);
        assert_eq!(evenly(5, 6, 8), ["6"]);
        assert!(evenly(7, 7, 4).is_empty());
        assert_eq!(evenly(i64::MIN, i64::MAX, 2), ["0"]);
    }

    #[test]
    fn histogram_picks_are_interior_bounds() {
        let bounds: Vec<String> = (0..=100).map(|i| i.to_string()).collect();
        assert_eq!(pick(&bounds, 4), ["25", "50", "75"]);
        assert!(pick(&bounds[..2], 4).is_empty());
    }
}
