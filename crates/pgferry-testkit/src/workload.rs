//! Write workloads for a source under migration: the demo's (orders placed, stock moving)
//! and a mixed one that exercises every hard case of change data capture.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::cluster::{ClusterError, Connector};

/// The mixed workload's schema: keyed rows whose keys change, large TOASTed documents,
/// an append-only log, a table without a key holding duplicate rows, and a table that is
/// truncated now and then.
pub const MIXED_SCHEMA: &str = "
CREATE TABLE acct (id bigint PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE doc (id integer PRIMARY KEY, body text NOT NULL, version integer NOT NULL);
CREATE TABLE event (id bigserial PRIMARY KEY, acct bigint, kind text, at timestamptz DEFAULT now());
CREATE TABLE dupes (k integer, v text);
CREATE TABLE tmp_log (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, msg text);
INSERT INTO acct SELECT g, g * 10, 'acct ' || g FROM generate_series(1, 2000) g;
INSERT INTO doc SELECT g, (SELECT string_agg(md5(g::text || i::text), '')
                           FROM generate_series(1, 120) i), 1 FROM generate_series(1, 200) g;
INSERT INTO dupes SELECT g % 10, 'v' || (g % 3) FROM generate_series(1, 300) g;
INSERT INTO tmp_log (msg) SELECT 'm' || g FROM generate_series(1, 50) g;
";

/// Counts of what a workload did.
#[derive(Debug, Default)]
pub struct WorkloadCounts {
    pub transactions: AtomicU64,
    pub errors: AtomicU64,
}

/// Runs the mixed workload on `db` until `stop` is set. Transactions that fail (a key
/// already taken, a lock timeout, a server restarting) are counted and skipped; the source
/// stays consistent.
pub async fn mixed(
    cluster: Connector,
    db: &str,
    seed: u64,
    stop: Arc<AtomicBool>,
    counts: Arc<WorkloadCounts>,
) -> Result<(), ClusterError> {
    let mut client = cluster.connect(db).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        // The server may be restarted under the workload: connect again and go on.
        if client.is_closed() {
            match cluster.connect(db).await {
                Ok(c) => client = c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let sql = mixed_transaction(&mut rng);
        match client.batch_execute(&sql).await {
            Ok(()) => counts.transactions.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                let _ = client.batch_execute("ROLLBACK").await;
                counts.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
    }
    Ok(())
}

fn mixed_transaction(rng: &mut StdRng) -> String {
    let mut sql = String::from("BEGIN;");
    for _ in 0..rng.random_range(1..6) {
        let id = rng.random_range(1..2500);
        let statement = match rng.random_range(0..12) {
            0 => format!(
                "INSERT INTO acct VALUES ({}, {}, 'new') ON CONFLICT DO NOTHING;",
                rng.random_range(1..100_000),
                rng.random_range(0..1000)
            ),
            1 | 2 => format!("UPDATE acct SET balance = balance + 1 WHERE id = {id};"),
            // A key change, to a key nobody has.
            3 => format!(
                "UPDATE acct SET id = id + 1000000 WHERE id = {id}
                   AND NOT EXISTS (SELECT 1 FROM acct WHERE id = {id} + 1000000);"
            ),
            4 => format!("DELETE FROM acct WHERE id = {id};"),
            5 => format!("INSERT INTO event (acct, kind) VALUES ({id}, 'touch');"),
            // Only the version: the TOASTed body travels as 'unchanged'.
            6 | 7 => format!(
                "UPDATE doc SET version = version + 1 WHERE id = {};",
                id % 200 + 1
            ),
            8 => format!(
                "UPDATE doc SET body = repeat(md5(random()::text), 120), version = version + 1
                 WHERE id = {};",
                id % 200 + 1
            ),
            // One of several identical rows.
            9 => format!(
                "DELETE FROM dupes WHERE ctid = (SELECT ctid FROM dupes WHERE k = {} LIMIT 1);
                 INSERT INTO dupes VALUES ({}, 'v0');",
                id % 10,
                id % 10
            ),
            10 => format!(
                "UPDATE dupes SET v = 'u' || v WHERE ctid = (SELECT ctid FROM dupes
                   WHERE k = {} LIMIT 1);",
                id % 10
            ),
            _ => {
                if rng.random_range(0..10) == 0 {
                    "TRUNCATE tmp_log RESTART IDENTITY; INSERT INTO tmp_log (msg) VALUES ('t');"
                        .to_owned()
                } else {
                    "INSERT INTO tmp_log (msg) VALUES ('x');".to_owned()
                }
            }
        };
        sql.push_str(&statement);
    }
    sql.push_str("COMMIT;");
    sql
}

/// Runs the demo's inventory workload until `stop` is set: orders placed with their lines,
/// stock moving, prices changing, a few orders cancelled and removed.
pub async fn inventory(
    client: &Client,
    seed: u64,
    stop: Arc<AtomicBool>,
    counts: Arc<WorkloadCounts>,
    pause: Duration,
) -> Result<(), ClusterError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let products: i64 = client
        .query_one("SELECT max(id) FROM products", &[])
        .await
        .map_err(|source| ClusterError::Sql {
            context: "reading the inventory".to_owned(),
            source,
        })?
        .get(0);
    while !stop.load(Ordering::Relaxed) {
        let product = rng.random_range(1..=products);
        let sql = match rng.random_range(0..10) {
            0..=4 => format!(
                "WITH o AS (INSERT INTO orders (customer_id, status, shipping_address)
                            VALUES ({}, 'paid', '{{\"city\": \"Lyon\"}}') RETURNING id)
                 INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price)
                 SELECT o.id, 1, {product}, {}, price FROM o, products WHERE products.id = {product};
                 UPDATE stock_levels SET quantity = greatest(quantity - 1, 0), updated_at = now()
                  WHERE product_id = {product};",
                rng.random_range(1..=1000),
                rng.random_range(1..4)
            ),
            5 | 6 => format!(
                "UPDATE stock_levels SET quantity = quantity + {}, updated_at = now()
                  WHERE product_id = {product};",
                rng.random_range(5..50)
            ),
            7 => format!(
                "UPDATE products SET price = round(price * 1.01, 2), updated_at = now()
                  WHERE id = {product};"
            ),
            8 => "UPDATE orders SET status = 'shipped' WHERE id = (SELECT max(id) FROM orders
                    WHERE status = 'paid');"
                .to_owned(),
            _ => "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders
                    WHERE status = 'cancelled');"
                .to_owned(),
        };
        match client.batch_execute(&sql).await {
            Ok(()) => counts.transactions.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(pause).await;
    }
    Ok(())
}
