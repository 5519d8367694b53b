//! Session settings for each kind of connection pgferry opens.
//!
//! Text COPY and row checksums depend on how values print, so every connection that moves
//! or hashes rows fixes the settings that change the text form of a value. Timeouts are off
//! because a chunk of a big table legitimately runs for minutes.

/// Settings that fix the text form of every value.
pub const CANONICAL_TEXT: &str = "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
     SET extra_float_digits = 3; SET bytea_output = 'hex'; SET client_encoding = 'UTF8'; \
     SET TimeZone = 'UTC'; SET lc_monetary = 'C'; SET xmloption = content;";

/// No timeouts: a COPY of a big chunk, or an index build, may take a long time.
pub const NO_TIMEOUTS: &str = "SET statement_timeout = 0; SET lock_timeout = 0; \
     SET idle_in_transaction_session_timeout = 0;";

/// Reading on the source. `row_security = off` makes a table with row-level security that
/// would hide rows from us fail loudly instead of being copied incompletely.
pub fn source_reader() -> String {
    format!("{NO_TIMEOUTS} {CANONICAL_TEXT} SET row_security = off;")
}

/// Writing chunks on the target. Asynchronous commit is safe here: a chunk's rows and its
/// "done" mark commit in the same transaction, so a target crash loses both or neither,
/// and the chunk is simply copied again.
pub fn target_loader() -> String {
    format!("{NO_TIMEOUTS} {CANONICAL_TEXT} SET synchronous_commit = off;")
}

/// The largest `maintenance_work_mem` pgferry picks on its own for one index build: beyond
/// it an in-memory sort gains little, and a target shared with other work would feel it.
const AUTO_INDEX_MEMORY_CAP: i64 = 2 << 30;

/// Sets `maintenance_work_mem` for a worker's index builds, and returns the value set.
///
/// `budget` bytes are shared by the `workers` that may build at the same time. Without a
/// budget (the default) it is an eighth of the target's `effective_cache_size` (the memory
/// its DBA says the server may use for caching; nothing else runs on a target during its
/// load), never less than the server's own setting and at most 2 GiB per build. A big index
/// that sorts in memory builds about a third faster than one that spills to disk.
pub async fn index_memory(
    target: &pgferry_pg::PgClient,
    budget: Option<u64>,
    workers: usize,
) -> Result<String, pgferry_pg::PgError> {
    let budget = budget.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    let workers = i64::try_from(workers.max(1)).unwrap_or(i64::MAX);
    let row = target
        .query_one(
            "setting the index builds' memory",
            "SELECT set_config('maintenance_work_mem', (CASE
                 WHEN $1::bigint IS NOT NULL THEN greatest($1::bigint / $2::bigint, 1048576)
                 ELSE greatest(pg_size_bytes(current_setting('maintenance_work_mem')),
                               least(pg_size_bytes(current_setting('effective_cache_size'))
                                     / 8 / $2::bigint, $3::bigint))
               END / 1024)::text || 'kB', false)",
            &[&budget, &workers, &AUTO_INDEX_MEMORY_CAP],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use pgferry_pg::{ConnInfo, Side};
    use pgferry_testkit::{Cluster, ClusterOptions};

    async fn memory(c: &Cluster, budget: Option<u64>, workers: usize) -> String {
        let info = ConnInfo::resolve(&c.url("postgres"), None).unwrap();
        let client = pgferry_pg::connect(Side::Target, &info, "test")
            .await
            .unwrap();
        super::index_memory(&client, budget, workers).await.unwrap();
        let row = client
            .query_one("", "SELECT current_setting('maintenance_work_mem')", &[])
            .await
            .unwrap();
        row.get(0)
    }

    #[tokio::test]
    async fn index_builds_share_the_memory_the_target_declares_or_the_task_sets() {
        let c = Cluster::start_with(
            ClusterOptions::default()
                .setting("effective_cache_size", "'2GB'")
                .setting("maintenance_work_mem", "'64MB'"),
        )
        .unwrap();
        // An eighth of effective_cache_size, shared by two workers.
        assert_eq!(memory(&c, None, 2).await, "128MB");
        // Never below the server's own setting.
        assert_eq!(memory(&c, None, 8).await, "64MB");
        // A budget from the task file is divided as it is, even below the server's setting.
        assert_eq!(memory(&c, Some(64 << 20), 4).await, "16MB");
        assert_eq!(memory(&c, Some(1), 4).await, "1MB");

        let big = Cluster::start_with(
            ClusterOptions::default().setting("effective_cache_size", "'64GB'"),
        )
        .unwrap();
        // At most 2 GiB per build unless the task says more.
        assert_eq!(memory(&big, None, 1).await, "2GB");
        assert_eq!(memory(&big, Some(6 << 30), 2).await, "3GB");
    }
}
