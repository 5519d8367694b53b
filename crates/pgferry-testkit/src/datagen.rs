//! Sample databases.
//!
//! * the awkward database: edge values of every type family and identifiers that break
//!   naive quoting, for correctness tests;
//! * the inventory database: the demo's products, stock levels, orders and order lines;
//! * a sized dataset for benchmarks.

use crate::cluster::{Cluster, ClusterError};

/// SQL that creates and fills the awkward database.
pub const AWKWARD_SQL: &str = include_str!("awkward.sql");

const INVENTORY_SQL: &str = include_str!("inventory.sql");

/// SQL for the inventory database; `scale` 1 is 2,000 products and 5,000 orders.
pub fn inventory_sql(scale: u32) -> String {
    INVENTORY_SQL.replace(":scale", &scale.max(1).to_string())
}

/// The awkward database for a server of `major`: before 14 there are no multiranges
/// (the column holds their text) and no infinite `numeric` (a huge finite value instead).
pub fn awkward_sql(major: u32) -> String {
    if major >= 14 {
        return AWKWARD_SQL.to_owned();
    }
    let sql = AWKWARD_SQL
        .replace("mr int4multirange,", "mr text,")
        .replace(
            "(2, 'Infinity', -99999999.9999",
            "(2, '1e100', -99999999.9999",
        );
    debug_assert!(
        sql != AWKWARD_SQL,
        "the awkward database changed; adapt this"
    );
    sql
}

/// Creates database `db` on `cluster` and fills it with the awkward database, as the
/// server's major version allows ([`awkward_sql`]).
pub async fn create_awkward(cluster: &Cluster, db: &str) -> Result<(), ClusterError> {
    cluster.create_database(db).await?;
    let major = cluster.major(db).await?;
    cluster.execute(db, &awkward_sql(major)).await
}

/// Creates database `db` on `cluster` and fills it with the inventory database.
pub async fn create_inventory(cluster: &Cluster, db: &str, scale: u32) -> Result<(), ClusterError> {
    cluster.create_database(db).await?;
    cluster.execute(db, &inventory_sql(scale)).await
}

/// SQL for a benchmark dataset of about `megabytes` MB of table data: one wide table with
/// most of the bytes (so chunking matters), a few medium ones, and indexes to rebuild.
pub fn bench_sql(megabytes: u64) -> String {
    // About 230 bytes per row on disk for `events`, which carries 70% of the data.
    let event_rows = megabytes * 1024 * 1024 * 7 / 10 / 230;
    let item_rows = megabytes * 1024 * 1024 * 2 / 10 / 160;
    let user_rows = megabytes * 1024 * 1024 / 10 / 120;
    format!(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, name text,
                             created_at timestamptz NOT NULL);
         CREATE TABLE items (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users,
                             title text, price numeric(10,2), tags text[]);
         CREATE TABLE events (id bigint PRIMARY KEY, item_id bigint NOT NULL REFERENCES items,
                              kind smallint NOT NULL, at timestamptz NOT NULL,
                              payload jsonb, note text);
         INSERT INTO users SELECT g, 'user' || g || '@example.com', md5(g::text),
                timestamptz '2024-01-01' + g * interval '1 second'
           FROM generate_series(1, {user_rows}) g;
         INSERT INTO items SELECT g, 1 + g % {user_rows}, 'item ' || md5(g::text),
                (g % 100000) / 100.0, ARRAY['t' || g % 10, 'u' || g % 7]
           FROM generate_series(1, {item_rows}) g;
         INSERT INTO events SELECT g, 1 + g % {item_rows}, g % 12,
                timestamptz '2024-01-01' + g * interval '10 ms',
                jsonb_build_object('a', g, 'b', md5(g::text)),
                repeat(md5((g * 3)::text), 2)
           FROM generate_series(1, {event_rows}) g;
         CREATE INDEX events_item ON events (item_id);
         CREATE INDEX events_at ON events (at);
         CREATE INDEX items_user ON items (user_id);
         CREATE UNIQUE INDEX users_email ON users (email);
         ANALYZE;"
    )
}
