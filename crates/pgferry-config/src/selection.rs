//! Which tables a task moves.
//!
//! Include rules are ORed and exclude rules then take tables back out, as in DMS. With no
//! include rule at all, every table in every user schema is included, so the minimal task
//! file migrates the whole database.

use serde::{Deserialize, Serialize};

use crate::pattern::NamePattern;

fn any() -> String {
    "%".to_owned()
}

/// One include or exclude rule: a schema pattern and a table pattern, both with `%` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRule {
    #[serde(default = "any")]
    pub schema: String,
    #[serde(default = "any")]
    pub table: String,
}

impl TableRule {
    pub fn new(schema: &str, table: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    schema: NamePattern,
    table: NamePattern,
}

impl From<&TableRule> for CompiledRule {
    fn from(rule: &TableRule) -> Self {
        Self {
            schema: NamePattern::new(&rule.schema),
            table: NamePattern::new(&rule.table),
        }
    }
}

/// The compiled include and exclude rules of a task.
#[derive(Debug, Clone)]
pub struct Selection {
    include: Vec<CompiledRule>,
    exclude: Vec<CompiledRule>,
    rules: (Vec<TableRule>, Vec<TableRule>),
}

impl Selection {
    pub fn new(include: Vec<TableRule>, exclude: Vec<TableRule>) -> Self {
        let include_rules = if include.is_empty() {
            vec![TableRule::new("%", "%")]
        } else {
            include
        };
        Self {
            include: include_rules.iter().map(CompiledRule::from).collect(),
            exclude: exclude.iter().map(CompiledRule::from).collect(),
            rules: (include_rules, exclude),
        }
    }

    /// Everything in every user schema.
    pub fn everything() -> Self {
        Self::new(Vec::new(), Vec::new())
    }

    /// Whether the table `schema.table` is migrated.
    pub fn includes_table(&self, schema: &str, table: &str) -> bool {
        let hit = |r: &CompiledRule| r.schema.matches(schema) && r.table.matches(table);
        self.include.iter().any(hit) && !self.exclude.iter().any(hit)
    }

    /// Whether objects of `schema` other than tables (types, functions, views, sequences)
    /// are migrated. A schema is in scope when some include rule can match tables in it and
    /// no exclude rule takes the whole schema out (an exclude with table pattern `%`).
    pub fn includes_schema(&self, schema: &str) -> bool {
        self.include.iter().any(|r| r.schema.matches(schema))
            && !self
                .exclude
                .iter()
                .any(|r| r.schema.matches(schema) && r.table.matches_everything())
    }

    pub fn include_rules(&self) -> &[TableRule] {
        &self.rules.0
    }

    pub fn exclude_rules(&self) -> &[TableRule] {
        &self.rules.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rules_select_every_table() {
        let s = Selection::everything();
        assert!(s.includes_table("public", "orders"));
        assert!(s.includes_table("Weird Schema", "x"));
        assert!(s.includes_schema("anything"));
    }

    #[test]
    fn excludes_win_over_includes() {
        let s = Selection::new(
            vec![TableRule::new("public", "%")],
            vec![TableRule::new("public", "audit_%")],
        );
        assert!(s.includes_table("public", "orders"));
        assert!(!s.includes_table("public", "audit_log"));
        assert!(!s.includes_table("sales", "orders"));
    }

    #[test]
    fn schema_scope_follows_includes_and_whole_schema_excludes() {
        let s = Selection::new(
            vec![TableRule::new("%", "%")],
            vec![
                TableRule::new("scratch", "%"),
                TableRule::new("public", "tmp_%"),
            ],
        );
        assert!(
            s.includes_schema("public"),
            "a partial exclude keeps the schema"
        );
        assert!(
            !s.includes_schema("scratch"),
            "an exclude of every table drops the schema"
        );
        let only_public = Selection::new(vec![TableRule::new("public", "orders")], vec![]);
        assert!(only_public.includes_schema("public"));
        assert!(!only_public.includes_schema("sales"));
    }
}
