//! The build stage: copying chunks and creating post-data objects, as one graph.
//!
//! ```text
//!   chunks of t1 ─┐                 ┌─► indexes and keys of t1 ─┐
//!   chunks of t2 ─┼─► (t1 loaded) ──┤                           ├─► FKs t1↔t2 ─► triggers …
//!   …             │                 └─► indexes and keys of t2 ─┘
//!                 └─► load done ──► snapshot released; objects that touch no table
//! ```
//!
//! A post-data object waits only for the tables it touches: the indexes of a table start as
//! soon as its last chunk is committed, while other tables are still being copied. Workers
//! take the ready work with the longest chain of work behind it first (critical-path
//! list scheduling): the chunks of the biggest table, then its indexes, then the foreign
//! key that needs them, with small tables' chunks and indexes filling the gaps. Objects
//! that touch no table directly (materialized view contents, for one) wait for the whole
//! load. When the last chunk is committed, the source snapshot is released at once, so the
//! source's vacuum is not held back while indexes build. Each table is analysed as soon as
//! everything on it is built (ANALYZE's lock would otherwise queue behind those builds).
//!
//! Every unit of work commits with its own done-mark (see [`crate::control`]); a crash
//! anywhere leaves the next run exactly the units that are not marked.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgferry_pg::{PgClient, PgError, Side, describe_pg_error};

use crate::control::{self, Level, Phase};
use crate::error::{EngineError, Result, TableFailure};
use crate::load::copy::{self, ChunkJob, LoadContext, TableJob};
use crate::load::schema::{
    self, DUPLICATE_OBJECT, RETRY_SQLSTATES, STEP_ATTEMPTS, StoredStep, sqlstate,
};
use crate::load::snapshot::SnapshotHolder;
use crate::progress::{RunProgress, TableState};
use crate::queue::WorkQueue;
use crate::{retry, session};

/// A node of the build graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Chunk(i32, i32),
    /// Every chunk is copied.
    LoadDone,
    Step(i32),
    Analyze(i32),
}

#[derive(Debug)]
enum Work {
    Chunk(ChunkJob),
    LoadDone,
    Step(StoredStep),
    Analyze(Arc<TableJob>),
}

/// Everything the build needs.
pub struct BuildInput {
    pub ctx: Arc<LoadContext>,
    /// Every table of the task; those not analysed yet are analysed here.
    pub tables: Vec<Arc<TableJob>>,
    pub chunks: Vec<ChunkJob>,
    pub steps: Vec<StoredStep>,
    /// Dump ids of every TABLE step.
    pub table_dump_ids: HashSet<i32>,
    /// Schema steps that never completed: whatever depends on them cannot run.
    pub unfinished: HashSet<i32>,
    /// Session settings of the rendered schema script, for running steps.
    pub preamble: String,
    pub skip_duplicates: bool,
    pub jobs: usize,
    /// The task's `index_memory`: shared by the workers' index builds.
    pub index_memory: Option<u64>,
    /// Held until the last chunk is copied, then released.
    pub snapshot: Option<SnapshotHolder>,
}

/// What the build did.
#[derive(Debug, Default)]
pub struct BuildOutcome {
    pub chunks_copied: usize,
    pub steps_done: usize,
    /// Tables that could not be loaded, with the error.
    pub failed_tables: Vec<TableFailure>,
    /// Objects kept as they were on the target.
    pub skipped: Vec<String>,
    /// Objects that could not be created (or could not start because of an earlier failure).
    pub failed_steps: Vec<String>,
}

struct Shared {
    ctx: Arc<LoadContext>,
    /// Every table of the load, to find chunks the control schema still lists as pending.
    tables: Vec<Arc<TableJob>>,
    preamble: String,
    skip_duplicates: bool,
    index_memory: Option<u64>,
    jobs: usize,
    snapshot: Mutex<Option<SnapshotHolder>>,
    progress: Arc<RunProgress>,
}

/// Builds the graph and runs it with `jobs` workers.
pub async fn run(input: BuildInput, progress: Arc<RunProgress>) -> Result<BuildOutcome> {
    let mut outcome = BuildOutcome::default();
    let (graph, blocked) =
        schema::post_data_graph(&input.steps, &input.table_dump_ids, &input.unfinished);
    for s in blocked {
        outcome
            .failed_steps
            .push(format!("{} (blocked by an earlier failure)", s.label));
    }
    progress
        .steps_total
        .store(graph.len() as u32, Ordering::Relaxed);
    progress.steps_done.store(0, Ordering::Relaxed);

    let mut chunks_of: HashMap<i32, Vec<Key>> = HashMap::new();
    let mut items: Vec<(Key, Work, Vec<Key>)> = Vec::new();
    for c in input.chunks {
        let key = Key::Chunk(c.table.table_id, c.chunk_no);
        chunks_of
            .entry(c.table.table_id)
            .or_default()
            .push(key.clone());
        items.push((key, Work::Chunk(c), Vec::new()));
    }
    let all_chunks: Vec<Key> = items.iter().map(|(k, _, _)| k.clone()).collect();
    items.push((Key::LoadDone, Work::LoadDone, all_chunks));
    let table_of_dump_id: HashMap<i32, i32> = input
        .tables
        .iter()
        .filter_map(|t| Some((t.dump_id?, t.table_id)))
        .collect();
    let mut steps_on: HashMap<i32, Vec<Key>> = HashMap::new();
    for g in graph {
        let mut deps: Vec<Key> = g.deps.iter().map(|d| Key::Step(*d)).collect();
        for t in &g.tables {
            if let Some(id) = table_of_dump_id.get(t) {
                steps_on
                    .entry(*id)
                    .or_default()
                    .push(Key::Step(g.step.dump_id));
                if let Some(chunks) = chunks_of.get(id) {
                    deps.extend(chunks.iter().cloned());
                }
            }
        }
        // An object that touches no table directly may read any of them (a materialized
        // view's contents): it waits for the whole load.
        if g.tables.is_empty() || g.step.kind == "MATERIALIZED VIEW DATA" {
            deps.push(Key::LoadDone);
        }
        items.push((Key::Step(g.step.dump_id), Work::Step(g.step), deps));
    }
    for table in input.tables.iter().filter(|t| !t.analyzed) {
        let mut deps = chunks_of.get(&table.table_id).cloned().unwrap_or_default();
        deps.extend(steps_on.remove(&table.table_id).unwrap_or_default());
        items.push((
            Key::Analyze(table.table_id),
            Work::Analyze(table.clone()),
            deps,
        ));
    }

    // Each worker holds connections: never more workers than pieces of work.
    let jobs = input.jobs.clamp(1, items.len().max(1));
    let queue = Arc::new(WorkQueue::new(critical_path_first(items)));
    let shared = Arc::new(Shared {
        ctx: input.ctx,
        tables: input.tables.clone(),
        preamble: input.preamble,
        skip_duplicates: input.skip_duplicates,
        index_memory: input.index_memory,
        jobs,
        snapshot: Mutex::new(input.snapshot),
        progress,
    });
    let mut workers = tokio::task::JoinSet::new();
    for n in 0..jobs {
        let queue = queue.clone();
        let shared = shared.clone();
        workers.spawn(async move { worker(n, &shared, &queue).await });
    }
    let mut fatal = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(w)) => {
                outcome.chunks_copied += w.chunks_copied;
                outcome.steps_done += w.steps_done;
                outcome.failed_tables.extend(w.failed_tables);
                outcome.skipped.extend(w.skipped);
                outcome.failed_steps.extend(w.failed_steps);
            }
            Ok(Err(e)) => {
                queue.close();
                fatal.get_or_insert(e);
            }
            Err(join) => {
                queue.close();
                fatal.get_or_insert(EngineError::Pg(PgError::Protocol {
                    side: Side::Target,
                    message: format!("a build worker stopped unexpectedly: {join}"),
                }));
            }
        }
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    // Steps that never ran because a table or step they need failed. (The load-done
    // marker itself is not an object; a failed load is reported per table.)
    let mut blocked_steps: Vec<String> = Vec::new();
    for key in queue.blocked() {
        if let Key::Step(id) = key
            && let Some(label) = shared_label(&input.steps, id)
        {
            blocked_steps.push(format!("{label} (blocked by an earlier failure)"));
        }
    }
    blocked_steps.sort();
    outcome.failed_steps.extend(blocked_steps);
    Ok(outcome)
}

/// Relative cost of an item, in bytes of table data handled. Copying a chunk handles its
/// bytes once. Measured on the benchmark dataset: an index build costs about a sixth of
/// copying its table; a foreign-key check, a hash join over both its tables (its weight
/// counts both), about a third of copying them; triggers, rules and the like almost
/// nothing.
fn cost(work: &Work) -> u64 {
    match work {
        Work::Chunk(c) => {
            (c.table.progress.estimated_bytes.max(0) as u64)
                / u64::from(c.table.progress.chunks_total.max(1))
        }
        Work::LoadDone => 0,
        Work::Step(s) => match s.phase {
            1 => (s.weight.max(0) as u64) / 6,
            2 => (s.weight.max(0) as u64) / 3,
            _ => (s.weight.max(0) as u64) / 100,
        },
        Work::Analyze(t) => (t.progress.estimated_bytes.max(0) as u64) / 100,
    }
}

/// Orders items by their upward rank: their own cost plus the costliest chain of items
/// that wait for them. Taking the highest-ranked ready item first keeps the longest chain
/// moving, so the build ends when the work runs out rather than on a straggler.
fn critical_path_first(items: Vec<(Key, Work, Vec<Key>)>) -> Vec<(Key, Work, Vec<Key>)> {
    let index: HashMap<Key, usize> = items
        .iter()
        .enumerate()
        .map(|(i, (k, _, _))| (k.clone(), i))
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for (i, (_, _, deps)) in items.iter().enumerate() {
        for d in deps {
            if let Some(&j) = index.get(d) {
                dependents[j].push(i);
            }
        }
    }
    // Items are listed with dependencies before dependents, except where pg_dump's order
    // says otherwise; iterate to a fixed point (bounded by the graph's depth).
    let costs: Vec<u64> = items.iter().map(|(_, w, _)| cost(w)).collect();
    let mut rank = costs.clone();
    loop {
        let mut changed = false;
        for i in (0..items.len()).rev() {
            let best = dependents[i].iter().map(|&d| rank[d]).max().unwrap_or(0);
            let r = costs[i] + best;
            if r > rank[i] {
                rank[i] = r;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|a, b| rank[*b].cmp(&rank[*a]).then(a.cmp(b)));
    let mut slots: Vec<Option<(Key, Work, Vec<Key>)>> = items.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

fn shared_label(steps: &[StoredStep], id: i32) -> Option<String> {
    steps
        .iter()
        .find(|s| s.dump_id == id)
        .map(|s| s.label.clone())
}

/// A worker's connections: the target always, the source once it copies a chunk.
struct Connections {
    target: PgClient,
    source: Option<PgClient>,
}

async fn open_target(shared: &Shared, n: usize) -> Result<PgClient> {
    let name = format!("pgferry worker {n}");
    let target = pgferry_pg::connect(Side::Target, &shared.ctx.target, &name).await?;
    target
        .batch("setting up a target session", &session::target_loader())
        .await?;
    // Triggers and foreign keys of tables that existed before the load stay quiet, as DMS
    // does; it needs a superuser, and tables pgferry creates have neither until post-data.
    if target
        .batch("", "SET session_replication_role = replica")
        .await
        .is_err()
    {
        tracing::debug!("target user may not set session_replication_role; continuing");
    }
    // pgferry already builds one object per worker; PostgreSQL's own parallel workers
    // would only compete for the same cores.
    target
        .batch(
            "setting up a target session",
            "SET max_parallel_maintenance_workers = 0; SET max_parallel_workers_per_gather = 0;",
        )
        .await?;
    target
        .batch("setting up a target session", &shared.preamble)
        .await?;
    let memory = session::index_memory(&target, shared.index_memory, shared.jobs).await?;
    if n == 0 {
        tracing::info!("index builds use maintenance_work_mem = {memory} each");
    }
    Ok(target)
}

async fn open_source(shared: &Shared, n: usize) -> Result<PgClient> {
    let source = pgferry_pg::connect(
        Side::Source,
        &shared.ctx.source,
        &format!("pgferry worker {n}"),
    )
    .await?;
    source
        .batch("setting up a source session", &session::source_reader())
        .await?;
    Ok(source)
}

async fn worker(n: usize, shared: &Shared, queue: &WorkQueue<Key, Work>) -> Result<BuildOutcome> {
    let mut outcome = BuildOutcome::default();
    let mut conns: Option<Connections> = None;
    while let Some((key, work)) = queue.next().await {
        let ok = match work {
            Work::Chunk(job) => copy(n, shared, &mut conns, &job, &mut outcome).await?,
            Work::LoadDone => load_done(n, shared, &mut conns, &mut outcome).await?,
            Work::Step(step) => {
                let ok = build_step(n, shared, &mut conns, &step, &mut outcome).await?;
                shared.progress.steps_done.fetch_add(1, Ordering::Relaxed);
                ok
            }
            Work::Analyze(table) => {
                analyze(n, shared, &mut conns, &table).await?;
                true
            }
        };
        queue.complete(&key, ok);
    }
    Ok(outcome)
}

async fn connections<'a>(
    n: usize,
    shared: &Shared,
    conns: &'a mut Option<Connections>,
) -> Result<&'a mut Connections> {
    if conns.as_ref().is_some_and(|c| c.target.is_closed()) {
        *conns = None;
    }
    if conns.is_none() {
        *conns = Some(Connections {
            target: open_target(shared, n).await?,
            source: None,
        });
    }
    Ok(conns.as_mut().expect("just opened"))
}

/// Copies a chunk with retries. `Ok(false)` when its table failed for good (recorded).
async fn copy(
    n: usize,
    shared: &Shared,
    conns: &mut Option<Connections>,
    job: &ChunkJob,
    outcome: &mut BuildOutcome,
) -> Result<bool> {
    let table = &job.table;
    if table.progress.state() == TableState::Failed {
        // Another chunk of this table failed for good; the rest would too.
        return Ok(false);
    }
    table.progress.set_state(TableState::Loading);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let c = connections(n, shared, conns).await?;
            if c.source.as_ref().is_none_or(PgClient::is_closed) {
                c.source = Some(open_source(shared, n).await?);
            }
            let source = c.source.as_ref().expect("just opened");
            copy::copy_chunk(&shared.ctx, source, &mut c.target, job).await
        }
        .await;
        match result {
            Ok(()) => {
                outcome.chunks_copied += 1;
                let done = table.progress.chunks_done.fetch_add(1, Ordering::Relaxed) + 1;
                if done >= table.progress.chunks_total {
                    table.progress.set_state(TableState::Loaded);
                    tracing::info!(
                        table = %table.source,
                        rows = table.progress.rows(),
                        bytes = table.progress.bytes(),
                        "table loaded"
                    );
                }
                return Ok(true);
            }
            // Not this table's fault, and no retry helps: the build ends, `run` goes on.
            Err(EngineError::SnapshotLost) => return Err(EngineError::SnapshotLost),
            Err(e) if retry::again(&e, attempt) => {
                let wait = retry::backoff(attempt);
                tracing::warn!(
                    table = %table.source,
                    chunk = job.chunk_no,
                    attempt,
                    error = %e,
                    "chunk failed; retrying in {} s",
                    wait.as_secs()
                );
                // Connections may be broken or mid-transaction: start afresh.
                *conns = None;
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(table = %table.source, chunk = job.chunk_no, error = %message,
                    "chunk failed");
                table.progress.set_state(TableState::Failed);
                *table
                    .progress
                    .error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                let c = connections(n, shared, conns).await?;
                control::fail_chunk(
                    &c.target,
                    &shared.ctx.task,
                    table.table_id,
                    job.chunk_no,
                    &message,
                )
                .await?;
                control::event(
                    c.target.raw(),
                    &shared.ctx.task,
                    Level::Error,
                    "load",
                    &format!("loading {} failed: {message}", table.source),
                    None,
                )
                .await?;
                outcome.failed_tables.push(TableFailure {
                    table: table.source.clone(),
                    error: Box::new(e),
                });
                return Ok(false);
            }
        }
    }
}

/// Gathers statistics for a loaded table, and records it, in one transaction. A failure
/// is only logged: the finishing phase tries again.
async fn analyze(
    n: usize,
    shared: &Shared,
    conns: &mut Option<Connections>,
    table: &TableJob,
) -> Result<()> {
    let c = connections(n, shared, conns).await?;
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "analyzing a loaded table", e));
    let result: Result<()> = async {
        let tx = c.target.raw_mut().transaction().await.map_err(err)?;
        tx.batch_execute(&format!("ANALYZE {}", table.target.quoted()))
            .await
            .map_err(err)?;
        control::mark_analyzed(&tx, &shared.ctx.task, table.table_id).await?;
        tx.commit().await.map_err(err)
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(table = %table.target, error = %e, "ANALYZE failed");
        if c.target.is_closed() {
            *conns = None;
        }
    }
    Ok(())
}

/// Ends the load and moves the task to post-data, on what the control schema says rather
/// than on what this process believes. Chunks commit asynchronously; a target that crashed
/// and came back may have lost the last of them (rows and done mark together) while their
/// workers counted them done. Such chunks are copied again here, from the same snapshot,
/// until the control schema lists none; then the phase change commits synchronously, which
/// makes every chunk before it durable ([`control::advance_phase`]). A crash at any point
/// leaves the task in `loading` with the lost chunks pending, and `run` copies them.
/// `Ok(false)` when a chunk failed for good: the load is not done.
async fn load_done(
    n: usize,
    shared: &Shared,
    conns: &mut Option<Connections>,
    outcome: &mut BuildOutcome,
) -> Result<bool> {
    let task = &shared.ctx.task;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let c = connections(n, shared, conns).await?;
            let lost = copy::pending_chunks(&c.target, task, &shared.tables).await?;
            if lost.is_empty() {
                // Large objects, from the same snapshot; none when resuming after it.
                if !shared.ctx.snapshot.is_empty() {
                    crate::load::blobs::copy_all(
                        &shared.ctx.source,
                        &shared.ctx.snapshot,
                        &mut c.target,
                    )
                    .await?;
                }
                control::advance_phase(&mut c.target, task, Phase::PostData).await?;
            }
            Ok::<_, EngineError>(lost)
        }
        .await;
        let lost = match result {
            Ok(lost) => lost,
            Err(e) if retry::again(&e, attempt) => {
                let wait = retry::backoff(attempt);
                tracing::warn!(attempt, error = %e, "ending the load failed; retrying in {} s",
                    wait.as_secs());
                *conns = None;
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if lost.is_empty() {
            break;
        }
        let message = format!(
            "{} chunk(s) counted as copied are not recorded on the target (it restarted and \
             lost their asynchronous commits); copying them again from the same snapshot",
            lost.len()
        );
        tracing::warn!("{message}");
        if let Ok(c) = connections(n, shared, conns).await {
            let _ =
                control::event(c.target.raw(), task, Level::Warning, "load", &message, None).await;
        }
        for job in &lost {
            // Counted once already, by the copy whose commit was lost.
            let _ = job.table.progress.chunks_done.fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |n| Some(n.saturating_sub(1)),
            );
            if !copy(n, shared, conns, job, outcome).await? {
                return Ok(false);
            }
        }
    }
    let holder = shared
        .snapshot
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    drop(holder);
    shared.progress.set_phase("indexes and constraints");
    let c = connections(n, shared, conns).await?;
    control::event(
        c.target.raw(),
        task,
        Level::Info,
        "load",
        "every chunk is copied; the source snapshot is released",
        None,
    )
    .await?;
    Ok(true)
}

/// Creates one post-data object with retries. `Ok(false)` when it failed (recorded).
async fn build_step(
    n: usize,
    shared: &Shared,
    conns: &mut Option<Connections>,
    step: &StoredStep,
    outcome: &mut BuildOutcome,
) -> Result<bool> {
    let task = &shared.ctx.task;
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let c = connections(n, shared, conns).await?;
        let error = match schema::run_step(&mut c.target, task, step, started).await {
            Ok(()) => {
                outcome.steps_done += 1;
                return Ok(true);
            }
            Err(e) => e,
        };
        let code = sqlstate(&error).unwrap_or("");
        let transient = RETRY_SQLSTATES.contains(&code)
            || c.target.is_closed()
            || pgferry_pg::error::is_transient(&error);
        if transient && attempt < STEP_ATTEMPTS {
            // A deadlock with a neighbouring step, or a lost connection: try again.
            if c.target.is_closed() {
                *conns = None;
            }
            tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            continue;
        }
        if c.target.is_closed() {
            return Err(EngineError::Pg(PgError::query(
                Side::Target,
                format!("creating {}", step.label),
                error,
            )));
        }
        if shared.skip_duplicates && DUPLICATE_OBJECT.contains(&code) {
            let note = format!(
                "{} already exists on the target; the existing one is kept",
                step.label
            );
            schema::mark_step(&c.target, task, step.dump_id, "skipped", &note).await?;
            outcome.skipped.push(note);
            return Ok(true);
        }
        let message = describe_pg_error(&error);
        schema::mark_step(&c.target, task, step.dump_id, "failed", &message).await?;
        control::event(
            c.target.raw(),
            task,
            Level::Error,
            "post-data",
            &format!("creating {} failed: {message}", step.label),
            None,
        )
        .await?;
        tracing::warn!(step = %step.label, error = %message, "post-data step failed");
        outcome
            .failed_steps
            .push(format!("{}: {message}", step.label));
        return Ok(false);
    }
}
