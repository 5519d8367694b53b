//! Size and time: what the load reads and writes, how the biggest tables split, how long
//! the load should take (from a timed, bounded sample read of the largest table), and
//! the WAL the slot holds meanwhile.
//!
//! The sample only reads: `COPY (SELECT * FROM ONLY t LIMIT n) TO STDOUT`, with `n` rows
//! worth about [`SAMPLE_BYTES`], stopped after [`SAMPLE_TIME`]. The target's side cannot
//! be measured (assessing writes nothing): it is taken as [`WRITE_FACTOR`] times the
//! reading, the factor `bench/full-load` measures.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pgferry_pg::catalog::Table;
use pgferry_pg::split;

use super::{Ctx, Estimate, Severity, TableSize};
use crate::cdc::human_bytes;
use crate::error::Result;

/// How much of the largest table the sample reads, at most.
const SAMPLE_BYTES: i64 = 64 << 20;
/// How long the sample reads, at most.
const SAMPLE_TIME: Duration = Duration::from_secs(10);
/// The sample's rate is taken per slice of this many bytes, for its spread.
const SLICE: u64 = 4 << 20;
/// A full load takes about this many times as long as reading its tables: pgferry's
/// measured loads took 5.0 to 8.4 times the read time `assess` estimated (6.0 on average),
/// over six runs from PostgreSQL 13 and 15 sources of 881 and 1768 MiB with 4 indexes and
/// 2 foreign keys on 2 jobs (bench/full-load prints the estimate against the measured load
/// on every run).
const WRITE_FACTOR: f64 = 6.0;
/// How many of the biggest tables are listed.
const BIGGEST: usize = 5;

pub(super) async fn assess(ctx: &mut Ctx<'_>, wal_sample: Duration) -> Result<Option<Estimate>> {
    if ctx.tables.is_empty() {
        ctx.push(
            "task.nothing_selected",
            Severity::Blocker,
            None,
            "the selection matches no table on the source",
            "correct the task's include and exclude rules (`pgferry config explain`)",
        );
        return Ok(None);
    }
    let wal_start = wal_position(ctx).await?;
    let started = Instant::now();
    let total = totals(ctx).await?;
    let unsplit = biggest(ctx).await?;
    if !ctx.loads() {
        return Ok(None);
    }
    let sample = sample(ctx).await?;
    let rest = wal_sample.saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let wal_rate = match (wal_start, wal_position(ctx).await?) {
        (Some(a), Some(b)) => Some((b - a).max(0) as f64 / started.elapsed().as_secs_f64()),
        _ => None,
    };
    let Some((rate, spread, sample_bytes)) = sample else {
        return Ok(None);
    };
    let jobs = ctx.task.full_load.jobs.max(1);
    let bytes = total;
    // Reading alone; a table that cannot split is read by one job whatever the others do.
    // The factor below was measured with 2 jobs; more jobs may scale only half as well.
    let read = |rate: f64, jobs: f64| (bytes as f64 / (rate * jobs)).max(unsplit as f64 / rate);
    let slow = (rate - 2.0 * spread).max(rate / 4.0);
    let (read_mid, read_low, read_high) = (
        read(rate, jobs as f64),
        read(rate + 2.0 * spread, jobs as f64),
        read(slow, (jobs as f64 / 2.0).max(jobs.min(2) as f64)),
    );
    // Writing, indexes and constraints on the target, which assessing cannot measure: as
    // long as the reading times WRITE_FACTOR, give or take half as much again.
    let seconds = read_mid * WRITE_FACTOR;
    let low = read_low * WRITE_FACTOR / 1.5;
    let high = read_high * WRITE_FACTOR * 1.5;
    let retained = wal_rate.map(|r| r * high);
    let estimate = Estimate {
        bytes,
        jobs,
        sample_bytes_per_second: rate,
        sample_bytes,
        seconds,
        seconds_low: low,
        seconds_high: high,
        wal_bytes_per_second: wal_rate,
        wal_retained_bytes: retained,
    };
    ctx.push(
        "size.estimate",
        Severity::Info,
        None,
        format!(
            "the load of {} should take about {} (between {} and {}) with jobs = {jobs}: \
             reading it takes about {} (the sample read {} of the largest table at {}/s per \
             session), and writing, indexes and constraints on the target about {WRITE_FACTOR} \
             times that, as measured by bench/full-load; a slower or busier target moves it \
             toward the upper end",
            human_bytes(bytes),
            duration(seconds),
            duration(low),
            duration(high),
            duration(read_mid),
            human_bytes(sample_bytes as i64),
            human_bytes(rate as i64)
        ),
        "raise jobs (and the source's max_connections) to shorten it; the bench compares \
         pgferry with pg_dump and pgcopydb on the same data",
    );
    if ctx.cdc()
        && let Some(retained) = retained
    {
        wal_retention(ctx, wal_rate.unwrap_or(0.0), retained);
    }
    Ok(Some(estimate))
}

/// The source's WAL position now (`None` on a standby).
async fn wal_position(ctx: &Ctx<'_>) -> Result<Option<i64>> {
    Ok(ctx
        .source
        .query_one(
            "reading the WAL position",
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL
                    ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8 END",
            &[],
        )
        .await?
        .get(0))
}

/// The slot holds the WAL written while the load runs.
fn wal_retention(ctx: &mut Ctx<'_>, rate: f64, retained: f64) {
    let limit = ctx.wal_keep_mb.map(|mb| mb as f64 * 1048576.0);
    let (severity, fix) = match limit {
        Some(l) if retained > l => (
            Severity::Warning,
            format!(
                "ALTER SYSTEM SET max_slot_wal_keep_size = '{}MB'; SELECT pg_reload_conf() \
                 (the slot is invalidated beyond it, and the load starts over)",
                (retained * 2.0 / 1048576.0).ceil() as i64
            ),
        ),
        Some(_) => (
            Severity::Info,
            "nothing to do: max_slot_wal_keep_size leaves room".to_owned(),
        ),
        None => (
            Severity::Info,
            "make sure the source's disk has that much room: max_slot_wal_keep_size = -1 \
             lets the slot hold any amount"
                .to_owned(),
        ),
    };
    ctx.push(
        "size.wal_retained",
        severity,
        None,
        format!(
            "the source writes {}/s of WAL now; the slot would hold about {} by the end of \
             the load{}",
            human_bytes(rate as i64),
            human_bytes(retained as i64),
            match limit {
                Some(l) => format!(" (max_slot_wal_keep_size is {})", human_bytes(l as i64)),
                None => String::new(),
            }
        ),
        fix,
    );
}

/// What the load reads, and what the target must hold. Returns the bytes read.
async fn totals(ctx: &mut Ctx<'_>) -> Result<i64> {
    let oids: Vec<u32> = ctx.tables.iter().map(|t| t.oid).collect();
    let row = ctx
        .source
        .query_one(
            "measuring the selected tables",
            "SELECT coalesce(sum(pg_table_size(o)), 0)::int8,
                    coalesce(sum(pg_indexes_size(o)), 0)::int8,
                    coalesce(sum(greatest(c.reltuples, 0)), 0)::int8
             FROM unnest($1::oid[]) AS o JOIN pg_class c ON c.oid = o",
            &[&oids],
        )
        .await?;
    let (tables, indexes, rows): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    ctx.push(
        "size.total",
        Severity::Info,
        None,
        format!(
            "{} selected table(s), about {rows} rows: {} of tables and {} of indexes",
            ctx.tables.len(),
            human_bytes(tables),
            human_bytes(indexes)
        ),
        "nothing to do",
    );
    if ctx.loads() {
        ctx.push(
            "size.target_space",
            Severity::Info,
            None,
            format!(
                "the target needs about {} free: {} of tables, {} of indexes, and WAL about \
                 as large as the tables while they load (recycled at checkpoints)",
                human_bytes(tables * 2 + indexes),
                human_bytes(tables),
                human_bytes(indexes)
            ),
            "check the target's free disk (df, or FreeStorageSpace on RDS); assess cannot \
             read it over SQL",
        );
    }
    Ok(tables)
}

/// Every table's size and how it will split, biggest first; the five biggest are
/// findings, and so is every big table that cannot split. Returns the size of the biggest
/// table that cannot split (one job reads it alone).
async fn biggest(ctx: &mut Ctx<'_>) -> Result<i64> {
    let mut tables: Vec<&Table> = ctx.tables.iter().collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.table_bytes));
    let chunk = ctx.task.full_load.chunk_size.max(1) as i64;
    let tid = ctx.source_info.has_tid_range_scan();
    let big: Vec<u32> = tables
        .iter()
        .filter(|t| t.table_bytes > chunk)
        .map(|t| t.oid)
        .collect();
    let keys = split::split_keys(ctx.source, &big).await?;
    let mut unsplit = 0;
    let (mut sizes, mut findings) = (Vec::new(), Vec::new());
    for (rank, t) in tables.iter().enumerate() {
        let parts = (t.table_bytes + chunk - 1) / chunk;
        let (splits, how) = if parts <= 1 {
            (true, "fits in one chunk".to_owned())
        } else if tid {
            (true, format!("splits into about {parts} block ranges"))
        } else if let Some(key) = keys.get(&t.oid) {
            (
                true,
                format!("splits into about {parts} ranges of key {:?}", key.column),
            )
        } else {
            (
                false,
                format!(
                    "cannot split on PostgreSQL {} ({}), so one job copies it alone",
                    ctx.source_info.major(),
                    split::NO_KEY
                ),
            )
        };
        sizes.push(TableSize {
            table: t.name.to_string(),
            bytes: t.table_bytes,
            estimated_rows: t.estimated_rows,
            split: how.clone(),
        });
        if !splits {
            unsplit = unsplit.max(t.table_bytes);
        } else if rank >= BIGGEST {
            continue;
        }
        let (severity, fix) = if splits {
            (Severity::Info, "nothing to do".to_owned())
        } else {
            (
                Severity::Warning,
                format!(
                    "add a primary key, or name a column in a `ranges` rule (table-settings, \
                     parallel-load) for {}",
                    t.name
                ),
            )
        };
        findings.push((
            severity,
            t.name.to_string(),
            format!("{} is {}: {how}", t.name, human_bytes(t.table_bytes)),
            fix,
        ));
    }
    ctx.sizes = sizes;
    for (severity, name, message, fix) in findings {
        ctx.push("size.biggest_table", severity, Some(name), message, fix);
    }
    Ok(unsplit)
}

/// Reads a bounded sample of the largest table with rows. Returns the rate in on-disk
/// bytes per second, its spread (standard deviation across slices) and the bytes read.
async fn sample(ctx: &Ctx<'_>) -> Result<Option<(f64, f64, u64)>> {
    let Some(t) = ctx
        .tables
        .iter()
        .filter(|t| t.can_select && t.estimated_rows.unwrap_or(0) > 0)
        .max_by_key(|t| t.table_bytes)
    else {
        return Ok(None);
    };
    let rows = t.estimated_rows.unwrap_or(1).max(1);
    let row_bytes = (t.table_bytes / rows).max(1);
    let limit = (SAMPLE_BYTES.min(t.table_bytes) / row_bytes).max(1);
    let sql = format!(
        "COPY (SELECT * FROM ONLY {} LIMIT {limit}) TO STDOUT (FORMAT binary)",
        t.name.quoted()
    );
    let err = |e| ctx.source.err("reading a sample of the largest table", e);
    let started = Instant::now();
    let stream = ctx.source.raw().copy_out(sql.as_str()).await.map_err(err)?;
    futures_util::pin_mut!(stream);
    let (mut copied, mut slice_bytes) = (0u64, 0u64);
    let mut slice_start = Instant::now();
    let mut rates = Vec::new();
    let mut whole = true;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(err)?;
        copied += chunk.len() as u64;
        slice_bytes += chunk.len() as u64;
        if slice_bytes >= SLICE {
            rates.push(slice_bytes as f64 / slice_start.elapsed().as_secs_f64().max(1e-6));
            slice_bytes = 0;
            slice_start = Instant::now();
        }
        if started.elapsed() > SAMPLE_TIME {
            whole = false;
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-6);
    if copied == 0 {
        return Ok(None);
    }
    // On-disk bytes per COPY byte, so the rate applies to the tables' sizes: known when
    // the sample read all its rows.
    let ratio = if whole {
        (limit * row_bytes) as f64 / copied as f64
    } else {
        1.0
    };
    let rate = copied as f64 / elapsed * ratio;
    let spread = if rates.len() >= 2 {
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (rates.len() - 1) as f64;
        var.sqrt() * ratio
    } else {
        rate / 4.0
    };
    Ok(Some((rate, spread, copied)))
}

/// A duration as a DBA reads it: seconds, minutes or hours.
pub(super) fn duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{:.0} s", seconds.max(1.0))
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}
