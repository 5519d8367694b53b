//! What pgferry needs to know from the system catalogs.
//!
//! Every query here is read-only and runs in whatever transaction the caller holds. That
//! matters on the source: the planner reads the catalog inside the exported snapshot, so the
//! table list and the data it copies are the same moment in time.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tokio_postgres::types::Oid;

use crate::connect::PgClient;
use crate::error::PgError;
use crate::ident::QualifiedName;

/// Types with OIDs below this are built in, and have the same OID on every server. Binary
/// COPY embeds type OIDs for array elements and composite fields, so it is only safe when
/// those are built in.
pub const FIRST_NORMAL_OBJECT_ID: Oid = 16384;

/// Schemas that are never migrated: the system's, and pgferry's own (the control schema,
/// the DDL capture).
pub const SYSTEM_SCHEMAS_SQL: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', \
     'pgferry', 'pgferry_capture') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// Facts about a server and our session on it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub version_num: i32,
    pub version: String,
    pub database: String,
    pub encoding: String,
    pub user: String,
    pub is_superuser: bool,
    /// REPLICATION attribute, superuser, or RDS's `rds_replication` role.
    pub can_replicate: bool,
    pub wal_level: String,
    pub block_size: i64,
    pub max_replication_slots: i32,
    pub max_wal_senders: i32,
    pub in_recovery: bool,
}

impl ServerInfo {
    pub async fn load(client: &PgClient) -> Result<Self, PgError> {
        let row = client
            .query_one(
                "reading server settings",
                "SELECT current_setting('server_version_num')::int,
                        current_setting('server_version'),
                        current_database()::text,
                        pg_encoding_to_char(d.encoding)::text,
                        current_user::text,
                        r.rolsuper,
                        r.rolsuper OR r.rolreplication OR EXISTS (
                            SELECT 1 FROM pg_roles g
                            WHERE g.rolname = 'rds_replication'
                              AND pg_has_role(current_user, g.oid, 'member')),
                        current_setting('wal_level'),
                        current_setting('block_size')::bigint,
                        current_setting('max_replication_slots')::int,
                        current_setting('max_wal_senders')::int,
                        pg_is_in_recovery()
                 FROM pg_database d, pg_roles r
                 WHERE d.datname = current_database() AND r.rolname = current_user",
                &[],
            )
            .await?;
        Ok(ServerInfo {
            version_num: row.get(0),
            version: row.get(1),
            database: row.get(2),
            encoding: row.get(3),
            user: row.get(4),
            is_superuser: row.get(5),
            can_replicate: row.get(6),
            wal_level: row.get(7),
            block_size: row.get(8),
            max_replication_slots: row.get(9),
            max_wal_senders: row.get(10),
            in_recovery: row.get(11),
        })
    }

    pub fn major(&self) -> i32 {
        self.version_num / 10000
    }

    /// TID range scans (`ctid >= ... AND ctid < ...` read only those blocks) arrived in 14.
    pub fn has_tid_range_scan(&self) -> bool {
        self.version_num >= 140000
    }
}

/// A column as COPY sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    pub type_oid: Oid,
    /// `format_type` output, for messages and for comparing both sides.
    pub type_name: String,
    /// `GENERATED ALWAYS AS (...) STORED`: the target computes it, so COPY leaves it out.
    pub generated: bool,
    pub not_null: bool,
}

/// A table on the source.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub oid: Oid,
    pub name: QualifiedName,
    /// `r` for a table with rows, `p` for a partitioned parent (no rows of its own).
    pub kind: char,
    /// For a partition, its top-level partitioned table, whose name selection rules match.
    pub partition_root: Option<QualifiedName>,
    /// Size of the main fork: what a CTID range scan reads.
    pub heap_bytes: i64,
    /// Heap plus TOAST, without indexes: what a COPY of the table reads in all.
    pub table_bytes: i64,
    /// The planner's row estimate; `None` when the table was never analysed.
    pub estimated_rows: Option<i64>,
    pub unlogged: bool,
    pub has_primary_key: bool,
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    pub row_security: bool,
    pub can_select: bool,
    /// The extension that owns the table, if any (its contents belong to the extension).
    pub extension: Option<String>,
    pub columns: Vec<Column>,
    /// Whether binary COPY is safe for every column (see [`binary_copy_safe_types`]).
    pub binary_copy_safe: bool,
}

impl Table {
    /// The name selection rules are matched against: a partition is selected with its root.
    pub fn selection_name(&self) -> &QualifiedName {
        self.partition_root.as_ref().unwrap_or(&self.name)
    }

    /// Columns COPY moves: all but generated ones.
    pub fn copy_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }
}

/// Lists every user table (regular and partitioned, not temporary) with sizes, keys and
/// columns.
pub async fn list_tables(client: &PgClient) -> Result<Vec<Table>, PgError> {
    let rows = client
        .query(
            "listing tables",
            &format!(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text,
                        rn.nspname::text, rc.relname::text,
                        pg_relation_size(c.oid), pg_table_size(c.oid),
                        c.reltuples::float8, c.relpersistence = 'u',
                        EXISTS (SELECT 1 FROM pg_constraint k
                                WHERE k.conrelid = c.oid AND k.contype = 'p'),
                        c.relreplident::text, c.relrowsecurity,
                        has_table_privilege(c.oid, 'SELECT'),
                        (SELECT e.extname::text FROM pg_depend dep
                           JOIN pg_extension e ON e.oid = dep.refobjid
                          WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid
                            AND dep.refclassid = 'pg_extension'::regclass
                            AND dep.deptype = 'e' LIMIT 1)
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_class rc ON c.relispartition
                      AND rc.oid = pg_partition_root(c.oid)
                 LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
                   AND {SYSTEM_SCHEMAS_SQL}
                 ORDER BY n.nspname, c.relname"
            ),
            &[],
        )
        .await?;
    let mut tables: Vec<Table> = rows
        .iter()
        .map(|r| {
            let reltuples: f64 = r.get(8);
            Table {
                oid: r.get(0),
                name: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
                kind: r.get::<_, String>(3).chars().next().unwrap_or('r'),
                partition_root: match (r.get::<_, Option<String>>(4), r.get::<_, Option<String>>(5))
                {
                    (Some(s), Some(n)) => Some(QualifiedName::new(s, n)),
                    _ => None,
                },
                heap_bytes: r.get(6),
                table_bytes: r.get(7),
                estimated_rows: (reltuples >= 0.0).then_some(reltuples as i64),
                unlogged: r.get(9),
                has_primary_key: r.get(10),
                replica_identity: r.get::<_, String>(11).chars().next().unwrap_or('d'),
                row_security: r.get(12),
                can_select: r.get(13),
                extension: r.get(14),
                columns: Vec::new(),
                binary_copy_safe: true,
            }
        })
        .collect();
    if tables.is_empty() {
        return Ok(tables);
    }
    let oids: Vec<Oid> = tables.iter().map(|t| t.oid).collect();
    let columns = list_columns(client, &oids).await?;
    let safe = binary_copy_safe_types(client, &oids).await?;
    for table in &mut tables {
        table.columns = columns.get(&table.oid).cloned().unwrap_or_default();
        let binary_copy_safe = table
            .copy_columns()
            .all(|c| safe.get(&c.type_oid).copied().unwrap_or(false));
        table.binary_copy_safe = binary_copy_safe;
    }
    Ok(tables)
}

/// Columns of the given relations, in attribute order.
pub async fn list_columns(
    client: &PgClient,
    oids: &[Oid],
) -> Result<HashMap<Oid, Vec<Column>>, PgError> {
    let rows = client
        .query(
            "listing columns",
            "SELECT a.attrelid, a.attname::text, a.atttypid,
                    format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', a.attnotnull
             FROM pg_attribute a
             WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attrelid, a.attnum",
            &[&oids],
        )
        .await?;
    let mut map: HashMap<Oid, Vec<Column>> = HashMap::new();
    for r in rows {
        map.entry(r.get(0)).or_default().push(Column {
            name: r.get(1),
            type_oid: r.get(2),
            type_name: r.get(3),
            generated: r.get(4),
            not_null: r.get(5),
        });
    }
    Ok(map)
}

/// A type as binary COPY sees it.
#[derive(Debug, Clone)]
struct TypeFacts {
    typtype: char,
    element: Oid,
    base: Oid,
    is_varlena: bool,
    has_binary_io: bool,
    fields: Vec<Oid>,
}

/// For every column type of the given tables, whether binary COPY can carry it from one
/// server to another.
///
/// Binary COPY is not portable for all types. `array_recv` checks that an array's element
/// type OID matches, and `record_recv` checks each composite field's type OID; a
/// user-defined type has a different OID on the target, so those values are rejected
/// there. Types without binary send/receive functions cannot be sent in binary at all.
/// Tables with such columns are copied in text format instead.
pub async fn binary_copy_safe_types(
    client: &PgClient,
    table_oids: &[Oid],
) -> Result<HashMap<Oid, bool>, PgError> {
    let rows = client
        .query(
            "reading column types",
            "WITH RECURSIVE used(oid) AS (
                 SELECT DISTINCT a.atttypid FROM pg_attribute a
                 WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
               UNION
                 SELECT x.child FROM used u JOIN pg_type t ON t.oid = u.oid
                 CROSS JOIN LATERAL (
                     SELECT t.typbasetype WHERE t.typtype = 'd'
                     UNION ALL SELECT t.typelem WHERE t.typelem <> 0
                     UNION ALL SELECT f.atttypid FROM pg_attribute f
                       WHERE t.typtype = 'c' AND f.attrelid = t.typrelid
                         AND f.attnum > 0 AND NOT f.attisdropped
                 ) AS x(child)
             )
             SELECT t.oid, t.typtype::text, t.typelem, t.typbasetype, t.typlen = -1,
                    t.typsend <> 0 AND t.typreceive <> 0,
                    COALESCE((SELECT array_agg(f.atttypid ORDER BY f.attnum) FROM pg_attribute f
                               WHERE t.typtype = 'c' AND f.attrelid = t.typrelid
                                 AND f.attnum > 0 AND NOT f.attisdropped), '{}')
             FROM pg_type t WHERE t.oid IN (SELECT oid FROM used)",
            &[&table_oids],
        )
        .await?;
    let facts: HashMap<Oid, TypeFacts> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, Oid>(0),
                TypeFacts {
                    typtype: r.get::<_, String>(1).chars().next().unwrap_or('b'),
                    element: r.get(2),
                    base: r.get(3),
                    is_varlena: r.get(4),
                    has_binary_io: r.get(5),
                    fields: r.get(6),
                },
            )
        })
        .collect();
    let mut memo = HashMap::new();
    let oids: Vec<Oid> = facts.keys().copied().collect();
    for oid in oids {
        binary_safe(oid, &facts, &mut memo, 0);
    }
    Ok(memo)
}

fn binary_safe(
    oid: Oid,
    facts: &HashMap<Oid, TypeFacts>,
    memo: &mut HashMap<Oid, bool>,
    depth: usize,
) -> bool {
    if let Some(v) = memo.get(&oid) {
        return *v;
    }
    // Deeply nested or unknown types are sent as text: always correct, only slower.
    let Some(t) = facts.get(&oid).filter(|_| depth < 32) else {
        return false;
    };
    let safe = t.has_binary_io
        && match t.typtype {
            'd' => binary_safe(t.base, facts, memo, depth + 1),
            'c' => t
                .fields
                .iter()
                .all(|f| *f < FIRST_NORMAL_OBJECT_ID && binary_safe(*f, facts, memo, depth + 1)),
            _ if t.element != 0 && t.is_varlena => {
                t.element < FIRST_NORMAL_OBJECT_ID && binary_safe(t.element, facts, memo, depth + 1)
            }
            _ => true,
        };
    memo.insert(oid, safe);
    safe
}

/// A sequence and its current state on the source.
#[derive(Debug, Clone, Serialize)]
pub struct Sequence {
    pub name: QualifiedName,
    /// The last value handed out, or `None` if the sequence was never used.
    pub last_value: Option<i64>,
    pub start_value: i64,
}

/// Every user sequence in the given schemas, with its current value.
pub async fn list_sequences(
    client: &PgClient,
    schemas: &[String],
) -> Result<Vec<Sequence>, PgError> {
    let rows = client
        .query(
            "reading sequences",
            "SELECT n.nspname::text, c.relname::text, pg_sequence_last_value(c.oid), s.seqstart
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_sequence s ON s.seqrelid = c.oid
             WHERE c.relkind = 'S' AND n.nspname = ANY($1)
             ORDER BY 1, 2",
            &[&schemas],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Sequence {
            name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            last_value: r.get(2),
            start_value: r.get(3),
        })
        .collect())
}

/// User schemas of a database.
pub async fn list_schemas(client: &PgClient) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "listing schemas",
            &format!(
                "SELECT n.nspname::text FROM pg_namespace n WHERE {SYSTEM_SCHEMAS_SQL} ORDER BY 1"
            ),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Which of `names` exist as tables, views or other relations on this server.
pub async fn existing_relations(
    client: &PgClient,
    names: &[QualifiedName],
) -> Result<Vec<QualifiedName>, PgError> {
    let schemas: Vec<&str> = names.iter().map(|n| n.schema.as_str()).collect();
    let rels: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
    let rows = client
        .query(
            "looking for existing tables",
            "SELECT n.nspname::text, c.relname::text
             FROM unnest($1::text[], $2::text[]) AS w(s, r)
             JOIN pg_namespace n ON n.nspname = w.s
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.r
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
             ORDER BY 1, 2",
            &[&schemas, &rels],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// Row count of each table in a target, for `status` and tests.
pub async fn exact_row_count(client: &PgClient, table: &QualifiedName) -> Result<i64, PgError> {
    let row = client
        .query_one(
            "counting rows",
            &format!("SELECT count(*) FROM ONLY {}", table.quoted()),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Counts of schema objects per kind, to compare source and target after a load.
pub async fn object_counts(
    client: &PgClient,
    schemas: &[String],
) -> Result<BTreeMap<String, i64>, PgError> {
    let rows = client
        .query(
            "counting schema objects",
            "SELECT 'index', count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1)
             UNION ALL
             SELECT 'constraint ' || k.contype::text, count(*) FROM pg_constraint k
               JOIN pg_namespace n ON n.oid = k.connamespace
              WHERE n.nspname = ANY($1) AND k.contype IN ('p','u','f','c','x')
              GROUP BY k.contype::text
             UNION ALL
             SELECT 'sequence', count(*) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'S' AND n.nspname = ANY($1)
             UNION ALL
             SELECT 'trigger', count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE NOT t.tgisinternal AND n.nspname = ANY($1)
             UNION ALL
             SELECT 'view', count(*) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'v' AND n.nspname = ANY($1)
             UNION ALL
             SELECT 'materialized view', count(*) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'm' AND n.nspname = ANY($1)",
            &[&schemas],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(oid, typtype, element, base, varlena, binary I/O, composite fields)`
    type Fact<'a> = (Oid, char, Oid, Oid, bool, bool, &'a [Oid]);

    fn facts(entries: &[Fact<'_>]) -> HashMap<Oid, TypeFacts> {
        entries
            .iter()
            .map(|(oid, typtype, element, base, varlena, io, fields)| {
                (
                    *oid,
                    TypeFacts {
                        typtype: *typtype,
                        element: *element,
                        base: *base,
                        is_varlena: *varlena,
                        has_binary_io: *io,
                        fields: fields.to_vec(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn arrays_and_composites_of_user_types_need_text_copy() {
        let f = facts(&[
            (23, 'b', 0, 0, false, true, &[]),        // int4
            (1007, 'b', 23, 0, true, true, &[]),      // int4[]
            (20000, 'e', 0, 0, false, true, &[]),     // an enum
            (20001, 'b', 20000, 0, true, true, &[]),  // enum[]
            (20002, 'c', 0, 0, true, true, &[23]),    // composite of int4
            (20003, 'c', 0, 0, true, true, &[20000]), // composite with an enum field
            (20004, 'd', 0, 1007, true, true, &[]),   // domain over int4[]
            (20005, 'b', 0, 0, true, false, &[]),     // no binary I/O
            (600, 'b', 701, 0, false, true, &[]),     // point: fixed length with typelem
        ]);
        let mut memo = HashMap::new();
        let mut safe = |oid| binary_safe(oid, &f, &mut memo, 0);
        assert!(safe(23));
        assert!(safe(1007));
        assert!(safe(20000), "enums travel as labels");
        assert!(!safe(20001), "element OID differs between servers");
        assert!(safe(20002), "fields are built in");
        assert!(!safe(20003), "field OID differs between servers");
        assert!(safe(20004), "a domain is sent as its base type");
        assert!(!safe(20005));
        assert!(safe(600), "fixed-length types with typelem are not arrays");
        assert!(!safe(99999), "unknown types fall back to text");
    }
}
