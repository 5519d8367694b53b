//! What the capture's event triggers record (`cdc/capture.sql`): one row per command, with
//! the object's shape before and after it, as JSON the server wrote from its catalog.

use serde::Deserialize;

/// A column, as `pgferry_capture.table_shape` records it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Column {
    pub attnum: i16,
    pub name: String,
    #[serde(rename = "type")]
    pub type_sql: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub generated: Option<String>,
    /// `a` (ALWAYS) or `d` (BY DEFAULT).
    pub identity: Option<String>,
    /// A collation other than the type's, qualified and quoted.
    pub collation: Option<String>,
    /// Inherited from a parent (a partition's columns follow its parent's).
    pub inherited: bool,
}

/// A constraint by name, with `pg_get_constraintdef`'s text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Constraint {
    pub name: String,
    pub def: String,
}

/// An index that no constraint owns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Index {
    pub name: String,
    pub oid: u32,
    pub unique: bool,
    /// `pg_get_indexdef` after `ON <table> `: `USING btree (a) WHERE ...`. `None` when the
    /// definition did not start as expected.
    pub tail: Option<String>,
    pub def: String,
}

/// A relation by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Rel {
    pub schema: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TableShape {
    pub schema: String,
    pub name: String,
    pub relkind: String,
    pub columns: Vec<Column>,
    pub constraints: Vec<Constraint>,
    pub indexes: Vec<Index>,
    /// The parent, for a partition.
    pub parent: Option<Rel>,
    /// The topmost partitioned table, for a partition.
    pub root: Option<Rel>,
    /// `FOR VALUES ...` or `DEFAULT`, for a partition.
    pub bound: Option<String>,
    /// `RANGE (a)`, for a partitioned table.
    pub partition_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SequenceShape {
    pub schema: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_sql: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    pub cycle: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EnumShape {
    pub schema: String,
    pub name: String,
    pub values: Vec<String>,
}

/// A function, view or trigger: the server's own definition, replayed as is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Definition {
    pub schema: String,
    pub name: String,
    pub def: String,
    /// A trigger's table.
    pub table: Option<Rel>,
}

/// A dropped function, view or trigger: `pg_event_trigger_dropped_objects`' address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Dropped {
    pub names: Vec<String>,
    pub args: Vec<String>,
}

/// One row of `pgferry_capture.log`, as it arrived in the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The command tag: `ALTER TABLE`, `CREATE INDEX`, ...
    pub tag: String,
    /// `table`, `sequence`, `enum`, `function`, `procedure`, `view`, `trigger`, `schema`,
    /// `other` (a command pgferry does not carry) or `problem` (the capture failed).
    pub kind: String,
    /// The object, as the source names it.
    pub identity: String,
    pub old: Option<String>,
    pub new: Option<String>,
    /// Why the capture failed, for `problem`.
    pub problem: Option<String>,
}

impl Captured {
    /// Builds a row from its columns, by the log table's column names.
    pub fn from_columns<'a>(columns: impl Iterator<Item = (&'a str, Option<String>)>) -> Captured {
        let mut c = Captured::default();
        for (name, value) in columns {
            match name {
                "tag" => c.tag = value.unwrap_or_default(),
                "kind" => c.kind = value.unwrap_or_default(),
                "identity" => c.identity = value.unwrap_or_default(),
                "old_shape" => c.old = value,
                "new_shape" => c.new = value,
                "problem" => c.problem = value,
                _ => {}
            }
        }
        c
    }
}

/// Parses one side of a row's shape.
pub fn parse<T: serde::de::DeserializeOwned>(
    text: &Option<String>,
) -> Result<Option<T>, serde_json::Error> {
    text.as_deref().map(serde_json::from_str).transpose()
}
