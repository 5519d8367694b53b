//! The CDC benchmark's workloads: what the source holds and what its application writes,
//! as pgbench runs it. Every transaction of either workload makes exactly
//! [`CHANGES_PER_TXN`] row changes, so a backlog's size is known from pgbench's count.

use std::path::Path;

use anyhow::bail;

/// Row changes in one transaction of either workload.
pub const CHANGES_PER_TXN: u64 = 4;

/// Which application writes to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// pgbench's TPC-B-like transaction: three updates and one insert on narrow rows.
    Pgbench,
    /// The inventory database, whose rows carry what narrow benchmarks miss: a `jsonb`
    /// document, `text[]` and `float8[]` arrays, and descriptions of 3 kB stored out of
    /// line (TOAST), some changed and many left unchanged by an update.
    Inventory,
}

impl Workload {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "pgbench" => Ok(Workload::Pgbench),
            "inventory" => Ok(Workload::Inventory),
            other => bail!("unknown workload {other:?}: pgbench or inventory"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Pgbench => "pgbench",
            Workload::Inventory => "inventory",
        }
    }

    /// Changes written while the apply is stopped, unless asked otherwise: the inventory's
    /// transactions write about 4 kB of WAL each, pgbench's about 400 bytes.
    pub fn default_backlog(self) -> u64 {
        match self {
            Workload::Pgbench => 2_000_000,
            Workload::Inventory => 400_000,
        }
    }

    /// The tables compared between source and target at the end.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Workload::Pgbench => &[
                "pgbench_accounts",
                "pgbench_branches",
                "pgbench_tellers",
                "pgbench_history",
            ],
            Workload::Inventory => &[
                "warehouses",
                "products",
                "stock_levels",
                "customers",
                "orders",
                "order_lines",
            ],
        }
    }

    /// SQL that fills the inventory source at `scale` (pgbench's own `-i` fills the other).
    pub fn inventory_setup(scale: u32) -> String {
        format!(
            "{}
             ALTER TABLE products ADD COLUMN dims float8[] NOT NULL DEFAULT '{{10, 20, 2.5}}';
             ALTER TABLE products ALTER description SET STORAGE EXTERNAL;",
            pgferry_testkit::datagen::inventory_sql(scale)
        )
    }

    /// Writes the pgbench script of this workload into `dir` and returns pgbench's
    /// arguments for it (none for pgbench's built-in transaction).
    pub fn script_args(self, scale: u32, dir: &Path) -> anyhow::Result<Vec<String>> {
        let Workload::Inventory = self else {
            return Ok(Vec::new());
        };
        // Two product updates in disjoint id ranges, lower range first, so concurrent
        // clients never lock rows in opposite orders.
        let half = 1000 * u64::from(scale.max(1));
        let script = format!(
            "\\set pid random(1, {half})
\\set other random({}, {})
\\set cust random(1, {})
\\set qty random(1, 500)
BEGIN;
UPDATE products SET attributes = attributes || jsonb_build_object('views', :qty, 'seen', now()),
    tags = tags[1:2] || ARRAY['v' || :qty], dims = ARRAY[:qty / 10.0, :qty / 7.0, 2.5]::float8[],
    updated_at = now() WHERE id = :pid;
UPDATE products SET description = (SELECT string_agg(md5(random()::text), '')
    FROM generate_series(1, 100)) WHERE id = :other;
INSERT INTO orders (customer_id, shipping_address, total) VALUES (:cust,
    jsonb_build_object('city', 'Lyon', 'zip', :qty, 'products', jsonb_build_array(:pid, :other)),
    :qty);
INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price)
    VALUES (currval('orders_id_seq'), 1, :pid, 1 + :qty % 4, 9.99);
END;
",
            half + 1,
            2 * half,
            1000 * u64::from(scale.max(1)),
        );
        let path = dir.join("inventory.pgbench");
        std::fs::write(&path, script)?;
        Ok(vec!["-f".to_owned(), path.display().to_string()])
    }
}
