//! The task's rules turned round: which target relations the reverse stream reads, and the
//! source names its changes go to.
//!
//! The forward rules are not inverted in general; the load's stored plan says what each
//! source table became (its target name, and the target column of each source column), and
//! that is written back as exact rename rules: one per renamed schema, table and column.
//! Rules that cannot be turned round are refused before the cutover fences anything:
//! * row filters (the source holds rows the target never saw; a key the target reuses
//!   would collide with them);
//! * columns computed by an expression or given another type (the source's value cannot
//!   be derived back);
//! * removed columns (the source would keep stale values in them);
//! * two source schemas moved into one target schema (no schema rule can split them).
//!
//! Columns the rules added on the target have no source column and are left out.

use std::collections::{BTreeMap, BTreeSet};

use pgferry_config::mapping::{RuleTarget, Transform, TransformAction};
use pgferry_config::{Mapping, Selection, TableRule, exact_pattern};
use pgferry_pg::QualifiedName;

use crate::control::StoredTable;

/// What the reverse stream applies, and where to.
#[derive(Debug, Clone)]
pub struct ReverseRules {
    /// The target relations the reverse stream reads (a partitioned table by its root).
    pub selection: Selection,
    /// Target names back to source names.
    pub mapping: Mapping,
}

/// Why the forward rules cannot be turned round, if they cannot.
pub fn refusal(forward: &Mapping) -> Option<String> {
    let why = if forward.has_filters() {
        "it filters rows"
    } else if forward.has_expressions() {
        "it computes columns by expressions"
    } else if forward.changes_types() {
        "it changes column types"
    } else if forward
        .transforms
        .iter()
        .any(|t| t.action == TransformAction::RemoveColumn)
    {
        "it removes columns"
    } else {
        return None;
    };
    Some(format!(
        "the task's rules cannot be reversed: {why}, so the target's changes cannot be \
         applied back to the source exactly"
    ))
}

/// The reverse rules from the forward rules and the load's plan. `streamed` says which
/// stored tables the forward stream carries (excluded and unlogged tables are not).
pub fn reverse(
    forward: &Mapping,
    tables: &[StoredTable],
    streamed: impl Fn(&StoredTable) -> bool,
) -> Result<ReverseRules, String> {
    if let Some(why) = refusal(forward) {
        return Err(why);
    }
    let mut relations: BTreeMap<QualifiedName, QualifiedName> = BTreeMap::new();
    let mut columns: BTreeSet<(QualifiedName, String, String)> = BTreeSet::new();
    for t in tables.iter().filter(|t| streamed(t)) {
        // A partition's changes travel under its root's name, on both sides.
        let (target, source) = if t.relation == t.source {
            (t.target.clone(), t.source.clone())
        } else {
            (target_root(forward, t), t.relation.clone())
        };
        if let Some(earlier) = relations.get(&target)
            && *earlier != source
        {
            return Err(format!(
                "{earlier} and {source} both went to {target}; the reverse stream cannot tell \
                 them apart"
            ));
        }
        for (s, c) in t.columns.iter().zip(&t.target_columns) {
            if s != c {
                columns.insert((target.clone(), c.clone(), s.clone()));
            }
        }
        relations.insert(target, source);
    }
    if relations.is_empty() {
        return Err(
            "the forward stream carries no table, so there is nothing to stream back".to_owned(),
        );
    }
    let mut schemas: BTreeMap<&str, &str> = BTreeMap::new();
    for (target, source) in &relations {
        match schemas.insert(&target.schema, &source.schema) {
            Some(other) if other != source.schema => {
                return Err(format!(
                    "tables of the source schemas {other:?} and {:?} share the target schema \
                     {:?}; the reverse stream cannot split them again",
                    source.schema, target.schema
                ));
            }
            _ => {}
        }
    }
    let mut transforms = Vec::new();
    for (target, source) in &schemas {
        if target != source {
            transforms.push(rule(RuleTarget::Schema, (target, "%", "%"), source));
        }
    }
    for (target, source) in &relations {
        if target.name != source.name {
            let at = (exact_pattern(&target.schema), exact_pattern(&target.name));
            transforms.push(rule(RuleTarget::Table, (&at.0, &at.1, "%"), &source.name));
        }
    }
    for (table, target_col, source_col) in &columns {
        let at = (
            exact_pattern(&table.schema),
            exact_pattern(&table.name),
            exact_pattern(target_col),
        );
        transforms.push(rule(RuleTarget::Column, (&at.0, &at.1, &at.2), source_col));
    }
    let include = relations
        .keys()
        .map(|t| TableRule::new(&exact_pattern(&t.schema), &exact_pattern(&t.name)))
        .collect();
    Ok(ReverseRules {
        selection: Selection::new(include, Vec::new()),
        mapping: Mapping {
            transforms,
            ..Mapping::default()
        },
    })
}

/// The target name of a partition's root, by the forward rules.
fn target_root(forward: &Mapping, t: &StoredTable) -> QualifiedName {
    let root = &t.relation;
    match forward.table(&root.schema, &root.name, (&root.schema, &root.name), &[]) {
        Ok(map) => QualifiedName::new(map.target_schema, map.target_table),
        Err(_) => QualifiedName::new(&t.target.schema, &root.name),
    }
}

fn rule(target: RuleTarget, at: (&str, &str, &str), value: &str) -> Transform {
    let mut t = Transform::rename_every_schema(value, "the reverse of the task's rules");
    t.target = target;
    t.schema = at.0.to_owned();
    t.table = at.1.to_owned();
    t.column = at.2.to_owned();
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgferry_config::mapping::SourceColumn;
    use pgferry_pg::copy::CopyFormat;

    fn stored(source: (&str, &str), target: (&str, &str), cols: &[(&str, &str)]) -> StoredTable {
        StoredTable {
            table_id: 1,
            source: QualifiedName::new(source.0, source.1),
            relation: QualifiedName::new(source.0, source.1),
            target: QualifiedName::new(target.0, target.1),
            format: CopyFormat::Text,
            columns: cols.iter().map(|c| c.0.to_owned()).collect(),
            target_columns: cols.iter().map(|c| c.1.to_owned()).collect(),
            filter: None,
            estimated_rows: None,
            estimated_bytes: 0,
            chunks_total: 1,
            chunks_done: 1,
            rows_copied: 0,
            bytes_copied: 0,
            loaded: true,
            existed_before: false,
            analyzed: true,
            dump_id: None,
            split_key: None,
            resumes_by_chunk: false,
            post_data_built: true,
            copy_seconds: 0.0,
        }
    }

    fn column<'a>(name: &'a str) -> SourceColumn<'a> {
        SourceColumn {
            name,
            type_name: "integer",
        }
    }

    #[test]
    fn renames_are_written_back_exactly() {
        let tables = [
            stored(
                ("app", "order_lines"),
                ("shop", "lines"),
                &[("id", "id"), ("q_ty", "qty")],
            ),
            stored(("app", "users"), ("shop", "users"), &[("id", "id")]),
        ];
        let rules = reverse(&Mapping::default(), &tables, |_| true).unwrap();
        assert!(rules.selection.includes_table("shop", "lines"));
        assert!(rules.selection.includes_table("shop", "users"));
        assert!(!rules.selection.includes_table("shop", "lines2"));
        assert!(!rules.selection.includes_table("app", "users"));
        let map = rules
            .mapping
            .table(
                "shop",
                "lines",
                ("shop", "lines"),
                &[column("id"), column("qty")],
            )
            .unwrap();
        assert_eq!(
            (map.target_schema.as_str(), map.target_table.as_str()),
            ("app", "order_lines")
        );
        assert_eq!(map.target_column("qty"), Some("q_ty"));
        assert_eq!(map.target_column("id"), Some("id"));
        assert_eq!(rules.mapping.target_schema("shop").unwrap(), "app");
        // A wildcard character in a name is matched literally.
        let other = rules
            .mapping
            .table("shop", "users", ("shop", "users"), &[column("id")])
            .unwrap();
        assert_eq!(other.target_table, "users");
    }

    #[test]
    fn rules_that_cannot_be_turned_round_are_refused() {
        let task = |rules: &str| {
            pgferry_config::Task::parse(
                &format!(
                    "migration_type = \"full-load-and-cdc\"\n[source]\n\
                     url = \"postgres://a@h/d\"\n[target]\nurl = \"postgres://a@h2/d\"\n{rules}"
                ),
                None,
            )
            .unwrap()
        };
        let removed = task(
            "[[transform]]\naction = \"remove-column\"\ntarget = \"column\"\ncolumn = \"x\"\n",
        );
        assert!(
            refusal(&removed.mapping)
                .unwrap()
                .contains("removes columns")
        );
        assert!(refusal(&task("").mapping).is_none());
        let merged = [
            stored(("a", "t1"), ("one", "t1"), &[]),
            stored(("b", "t2"), ("one", "t2"), &[]),
        ];
        let e = reverse(&Mapping::default(), &merged, |_| true).unwrap_err();
        assert!(e.contains("share the target schema"), "{e}");
        let clash = [
            stored(("a", "t"), ("one", "t"), &[]),
            stored(("b", "t"), ("one", "t"), &[]),
        ];
        assert!(reverse(&Mapping::default(), &clash, |_| true).is_err());
        // A table the forward stream leaves out is not streamed back either.
        let e = reverse(&Mapping::default(), &merged[..1], |_| false).unwrap_err();
        assert!(e.contains("no table"), "{e}");
    }
}
