//! The statements the applier runs. Pure functions, so every shape is unit tested.
//!
//! Two families:
//! * **bulk** statements apply many rows of one table at once: each column travels as one
//!   array parameter, `unnest` turns the arrays back into rows. In text mode the arrays are
//!   `text[]` and each value is cast to its column's type (without its modifier, so that the
//!   column's own length and precision checks still apply on assignment); in binary mode the
//!   arrays are already of the column's type. A binary array of arrays would be flattened
//!   by `unnest`, so tables with array columns take their rows, in binary mode, from a
//!   `VALUES` list with one typed parameter per value instead ([`Rows::Values`]).
//! * **row** statements apply one change, with one parameter per value, for the careful
//!   path that finds which change failed and for tables without a key.
//!
//! Rows without a key (`REPLICA IDENTITY FULL`) are found by comparing every column's text
//! form, and exactly one of them is changed: `(tableoid, ctid) = (SELECT ... LIMIT 1)`, so
//! of two identical rows only one is updated or deleted, as on the source.

use pgferry_pg::{QualifiedName, quote_ident};

/// A column as the statements need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Col {
    pub name: String,
    /// The target column's type with its modifiers (`character(5)`, not `character`,
    /// which would mean `character(1)` in a cast), as SQL.
    pub type_sql: String,
}

fn v_alias(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}")
}

/// Where a bulk statement's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// One array parameter per column, turned back into rows by `unnest`.
    Arrays,
    /// `n` rows of typed parameters, row after row (binary mode only).
    Values(usize),
}

/// The row source of a bulk statement, `... AS v(...)`, with parameters numbered from 1.
fn rows_source(cols: &[(&Col, String)], binary: bool, rows: Rows) -> String {
    let names = cols
        .iter()
        .map(|(_, alias)| alias.clone())
        .collect::<Vec<_>>()
        .join(", ");
    if let Rows::Values(n) = rows {
        let width = cols.len();
        let list = (0..n)
            .map(|r| {
                let row = cols
                    .iter()
                    .enumerate()
                    .map(|(i, (c, _))| format!("${}::{}", r * width + i + 1, c.type_sql))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("({row})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        return format!("(VALUES {list}) AS v({names})");
    }
    let params = cols
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            if binary {
                format!("${}::{}[]", i + 1, c.type_sql)
            } else {
                format!("${}::text[]", i + 1)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("unnest({params}) AS v({names})")
}

/// A value from the unnested row, in the column's type.
fn cast(alias: &str, c: &Col, binary: bool) -> String {
    if binary {
        format!("v.{alias}")
    } else {
        format!("v.{alias}::{}", c.type_sql)
    }
}

/// `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`: rows whose key exists are
/// skipped, and the affected-row count tells whether any was. Inserts say `OVERRIDING
/// SYSTEM VALUE` so `GENERATED ALWAYS` identity columns take the source's value (it is a
/// no-op for other tables).
pub fn bulk_insert(table: &QualifiedName, cols: &[&Col], binary: bool, rows: Rows) -> String {
    let aliased: Vec<(&Col, String)> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, v_alias("c", i)))
        .collect();
    format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ON CONFLICT DO NOTHING",
        table.quoted(),
        cols.iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", "),
        aliased
            .iter()
            .map(|(c, a)| cast(a, c, binary))
            .collect::<Vec<_>>()
            .join(", "),
        rows_source(&aliased, binary, rows)
    )
}

/// `UPDATE ... FROM unnest(...) WHERE key = ...`. Parameters: the key columns (their values
/// before the batch), then the columns to set.
pub fn bulk_update(
    table: &QualifiedName,
    key: &[&Col],
    set: &[&Col],
    binary: bool,
    rows: Rows,
) -> String {
    let mut aliased: Vec<(&Col, String)> = key
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, v_alias("k", i)))
        .collect();
    aliased.extend(set.iter().enumerate().map(|(i, c)| (*c, v_alias("c", i))));
    let assignments = set
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{} = {}",
                quote_ident(&c.name),
                cast(&v_alias("c", i), c, binary)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE {} AS t SET {assignments} FROM {} WHERE {}",
        table.quoted(),
        rows_source(&aliased, binary, rows),
        key_match(key, binary)
    )
}

/// `DELETE ... USING unnest(...) WHERE key = ...`. Parameters: the key columns.
pub fn bulk_delete(table: &QualifiedName, key: &[&Col], binary: bool, rows: Rows) -> String {
    let aliased: Vec<(&Col, String)> = key
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, v_alias("k", i)))
        .collect();
    format!(
        "DELETE FROM {} AS t USING {} WHERE {}",
        table.quoted(),
        rows_source(&aliased, binary, rows),
        key_match(key, binary)
    )
}

fn key_match(key: &[&Col], binary: bool) -> String {
    key.iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "t.{} = {}",
                quote_ident(&c.name),
                cast(&v_alias("k", i), c, binary)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// One row: `INSERT INTO t (cols) VALUES ($1, ...)`.
pub fn row_insert(table: &QualifiedName, cols: &[&Col]) -> String {
    format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
        table.quoted(),
        cols.iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", "),
        (1..=cols.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The condition that finds one row: by key (`col = $n`), or, with no key, by every
/// column's text form (`col::text IS NOT DISTINCT FROM $n`, which also matches NULLs and
/// works for types without an equality operator). A binary parameter is read as the
/// column's type first, so both sides are text made by the same server.
fn row_match(ident: &[&Col], first_param: usize, by_key: bool, binary: bool) -> String {
    ident
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = first_param + i;
            if by_key {
                format!("{} = ${p}", quote_ident(&c.name))
            } else if binary {
                format!(
                    "{}::text IS NOT DISTINCT FROM ${p}::{}::text",
                    quote_ident(&c.name),
                    c.type_sql
                )
            } else {
                format!(
                    "{}::text IS NOT DISTINCT FROM ${p}::text",
                    quote_ident(&c.name)
                )
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// One row: `UPDATE t SET cols = $1.. WHERE ident`. Parameters: the new values, then the
/// identity values. `by_key` false means a full-row identity: exactly one matching row.
pub fn row_update(
    table: &QualifiedName,
    set: &[&Col],
    ident: &[&Col],
    by_key: bool,
    binary: bool,
) -> String {
    let assignments = set
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ${}", quote_ident(&c.name), i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let cond = row_match(ident, set.len() + 1, by_key, binary);
    if set.is_empty() {
        // Nothing to set (every sent column is left to the target): the row must still
        // exist, and the affected-row count says whether it does.
        format!("SELECT 1 FROM {} WHERE {cond} LIMIT 1", table.quoted())
    } else if by_key {
        format!("UPDATE {} SET {assignments} WHERE {cond}", table.quoted())
    } else {
        format!(
            "UPDATE {t} SET {assignments} WHERE (tableoid, ctid) = \
             (SELECT tableoid, ctid FROM {t} WHERE {cond} LIMIT 1)",
            t = table.quoted()
        )
    }
}

/// One row: `DELETE FROM t WHERE ident`. Parameters: the identity values.
pub fn row_delete(table: &QualifiedName, ident: &[&Col], by_key: bool, binary: bool) -> String {
    let cond = row_match(ident, 1, by_key, binary);
    if by_key {
        format!("DELETE FROM {} WHERE {cond}", table.quoted())
    } else {
        format!(
            "DELETE FROM {t} WHERE (tableoid, ctid) = \
             (SELECT tableoid, ctid FROM {t} WHERE {cond} LIMIT 1)",
            t = table.quoted()
        )
    }
}

/// `TRUNCATE t1, t2 [RESTART IDENTITY]`. Never `CASCADE`: that could empty target tables
/// the source never truncated.
pub fn truncate(tables: &[&QualifiedName], restart_identity: bool) -> String {
    format!(
        "TRUNCATE {}{}",
        tables
            .iter()
            .map(|t| t.quoted())
            .collect::<Vec<_>>()
            .join(", "),
        if restart_identity {
            " RESTART IDENTITY"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> Col {
        Col {
            name: name.to_owned(),
            type_sql: ty.to_owned(),
        }
    }

    fn t() -> QualifiedName {
        QualifiedName::new("Weird \"Schema\"", "order")
    }

    #[test]
    fn bulk_insert_casts_text_arrays_and_skips_existing_keys() {
        let (id, note) = (col("group", "integer"), col("Note", "\"public\".\"mood\""));
        assert_eq!(
            bulk_insert(&t(), &[&id, &note], false, Rows::Arrays),
            "INSERT INTO \"Weird \"\"Schema\"\"\".\"order\" (\"group\", \"Note\") \
             OVERRIDING SYSTEM VALUE SELECT v.c0::integer, v.c1::\"public\".\"mood\" FROM unnest($1::text[], $2::text[]) AS \
             v(c0, c1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            bulk_insert(&t(), &[&id], true, Rows::Arrays),
            "INSERT INTO \"Weird \"\"Schema\"\"\".\"order\" (\"group\") OVERRIDING SYSTEM \
             VALUE SELECT v.c0 FROM unnest($1::integer[]) AS v(c0) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn array_columns_take_their_rows_from_values_one_typed_parameter_each() {
        let (id, dims) = (col("id", "integer"), col("dims", "double precision[]"));
        assert_eq!(
            bulk_insert(&t(), &[&id, &dims], true, Rows::Values(2)),
            "INSERT INTO \"Weird \"\"Schema\"\"\".\"order\" (\"id\", \"dims\") OVERRIDING \
             SYSTEM VALUE SELECT v.c0, v.c1 FROM (VALUES ($1::integer, $2::double precision[]), \
             ($3::integer, $4::double precision[])) AS v(c0, c1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            bulk_delete(&t(), &[&id], true, Rows::Values(1)),
            "DELETE FROM \"Weird \"\"Schema\"\"\".\"order\" AS t USING (VALUES ($1::integer)) \
             AS v(k0) WHERE t.\"id\" = v.k0"
        );
    }

    #[test]
    fn bulk_update_and_delete_match_on_the_key() {
        let (id, name) = (col("id", "bigint"), col("t", "text"));
        assert_eq!(
            bulk_update(&t(), &[&id], &[&id, &name], false, Rows::Arrays),
            "UPDATE \"Weird \"\"Schema\"\"\".\"order\" AS t SET \"id\" = v.c0::bigint, \"t\" = \
             v.c1::text FROM unnest($1::text[], $2::text[], $3::text[]) AS v(k0, c0, c1) WHERE \
             t.\"id\" = v.k0::bigint"
        );
        assert_eq!(
            bulk_delete(&t(), &[&id], false, Rows::Arrays),
            "DELETE FROM \"Weird \"\"Schema\"\"\".\"order\" AS t USING unnest($1::text[]) AS \
             v(k0) WHERE t.\"id\" = v.k0::bigint"
        );
    }

    #[test]
    fn row_statements_without_a_key_change_exactly_one_row() {
        let (a, b) = (col("a", "integer"), col("b", "json"));
        let sql = row_delete(&t(), &[&a, &b], false, false);
        assert_eq!(
            sql,
            "DELETE FROM \"Weird \"\"Schema\"\"\".\"order\" WHERE (tableoid, ctid) = (SELECT \
             tableoid, ctid FROM \"Weird \"\"Schema\"\"\".\"order\" WHERE \"a\"::text IS NOT \
             DISTINCT FROM $1::text AND \"b\"::text IS NOT DISTINCT FROM $2::text LIMIT 1)"
        );
        let sql = row_update(&t(), &[&b], &[&a, &b], false, false);
        assert!(sql.starts_with(
            "UPDATE \"Weird \"\"Schema\"\"\".\"order\" SET \"b\" = $1 WHERE (tableoid, ctid)"
        ));
        assert!(sql.contains("\"a\"::text IS NOT DISTINCT FROM $2::text"));
        // Binary parameters are read as the column's type before becoming text.
        assert!(
            row_delete(&t(), &[&a, &b], false, true)
                .contains("\"b\"::text IS NOT DISTINCT FROM $2::json::text")
        );
        assert_eq!(
            row_update(&t(), &[], &[&a], true, false),
            "SELECT 1 FROM \"Weird \"\"Schema\"\"\".\"order\" WHERE \"a\" = $1 LIMIT 1"
        );
        assert_eq!(
            row_update(&t(), &[&b], &[&a], true, false),
            "UPDATE \"Weird \"\"Schema\"\"\".\"order\" SET \"b\" = $1 WHERE \"a\" = $2"
        );
        assert_eq!(
            row_insert(&t(), &[&a, &b]),
            "INSERT INTO \"Weird \"\"Schema\"\"\".\"order\" (\"a\", \"b\") OVERRIDING \
             SYSTEM VALUE VALUES ($1, $2)"
        );
    }

    #[test]
    fn truncates_never_cascade() {
        let (x, y) = (
            QualifiedName::new("public", "x"),
            QualifiedName::new("public", "y"),
        );
        assert_eq!(
            truncate(&[&x, &y], false),
            "TRUNCATE \"public\".\"x\", \"public\".\"y\""
        );
        assert_eq!(
            truncate(&[&x], true),
            "TRUNCATE \"public\".\"x\" RESTART IDENTITY"
        );
    }
}
