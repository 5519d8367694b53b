//! Shared helpers for CDC tests, used by `main.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgferry_config::{MigrationType, Task};
use pgferry_engine::{EngineError, RunOptions, RunProgress, RunSummary};
use pgferry_testkit::Cluster;
use tokio::task::JoinHandle;

/// A CDC task between `db` on both clusters, with short batches and heartbeats so tests
/// see changes quickly, and fast retries.
pub fn cdc_task(source: &Cluster, target: &Cluster, db: &str) -> Task {
    let mut t = Task::new(
        MigrationType::FullLoadAndCdc,
        &source.url(db),
        &target.url(db),
    );
    t.full_load.jobs = 2;
    t.cdc.heartbeat_interval = Duration::from_secs(1);
    t.cdc.errors.recoverable_error_interval = 1;
    t.cdc.errors.recoverable_error_throttling_max = 2;
    t
}

/// [`cdc_task`] with 256 kB chunks, so that megabyte tables split, and keyless tables
/// streamed with REPLICA IDENTITY FULL.
pub fn chunked_cdc_task(source: &Cluster, target: &Cluster, db: &str) -> Task {
    let mut t = cdc_task(source, target, db);
    t.full_load.chunk_size = 256 * 1024;
    t.cdc.no_key_tables = pgferry_config::NoKeyTables::ReplicaIdentityFull;
    t
}

/// Runs the task in the background. Logs go to the test output (`RUST_LOG` filters).
pub fn spawn(task: &Task) -> JoinHandle<Result<RunSummary, EngineError>> {
    spawn_with(task, RunOptions::default())
}

/// [`spawn`], with options.
pub fn spawn_with(task: &Task, options: RunOptions) -> JoinHandle<Result<RunSummary, EngineError>> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let task = task.clone();
    tokio::spawn(async move {
        let result =
            pgferry_engine::run_with(&task, Arc::new(RunProgress::default()), options).await;
        if let Err(e) = &result {
            eprintln!("the run ended with an error: {e} ({e:?})");
        }
        result
    })
}

/// Waits until the task streams.
pub async fn wait_for_phase(target: &Cluster, db: &str, task: &str, phase: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(c) = target.connect(db).await
            && let Ok(Some(row)) = c
                .query_opt("SELECT phase FROM pgferry.task WHERE name = $1", &[&task])
                .await
            && row.get::<_, String>(0) == phase
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task never reached phase {phase}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the target has applied everything the source wrote so far.
pub async fn wait_caught_up(source: &Cluster, db: &str, slot: &str) {
    source
        .wait_for_slot(db, slot, Duration::from_secs(120))
        .await
        .expect("the target catches up");
}

/// Asks the run to stop, as `pgferry stop` does, and waits for it.
pub async fn stop(
    target: &Cluster,
    db: &str,
    task: &str,
    run: JoinHandle<Result<RunSummary, EngineError>>,
) -> RunSummary {
    // pgferry's own sessions write through a rollback's fence on the target; so does this.
    let control = target.connect(db).await.unwrap();
    control
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    control
        .execute(
            "UPDATE pgferry.cdc_state SET stop_requested = true WHERE task = $1",
            &[&task],
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops within a minute")
        .unwrap()
        .expect("the run ends without error")
}

/// Writes to the awkward database's main table that every type family must survive in
/// CDC: copied rows, updated composites and arrays, TOASTed values, a delete.
pub const AWKWARD_WRITES: &[&str] = &[
    "INSERT INTO \"Weird \"\"Schema\"\"\".\"Awkward Types\"
         SELECT id + 1000, n, n_fixed, f8, f4, i2, ts, tstz, d, t, ttz, iv, arr_int, arr_text,
                arr_2d, e, e_arr, dom, zip, comp, comp_enum, comp_arr, r, tr, fr, mr, j, jb,
                b, txt, ch, vc, bits, u, ip, net, mac, pt, bx, tsv, hs, hs_arr, ci, flag,
                cash, x, \"select\", \"Mixed Case\", \"with space\", \"quote\"\"col\", now()
         FROM \"Weird \"\"Schema\"\"\".\"Awkward Types\"",
    "UPDATE \"Weird \"\"Schema\"\"\".\"Awkward Types\" SET e = 'happy', jb = '{\"x\": [1, null]}',
         arr_text = '{\"a,b\",NULL}', \"quote\"\"col\" = 'q\"' WHERE id IN (1, 2, 3, 4)",
    "UPDATE \"Weird \"\"Schema\"\"\".\"Awkward Types\" SET txt = txt || '!' WHERE id > 100",
    "DELETE FROM \"Weird \"\"Schema\"\"\".\"Awkward Types\" WHERE id = 103",
];

/// Ends a streaming test: waits until the target has applied everything written so far,
/// stops the run, and checks source and target row for row, with no change recorded as an
/// exception.
pub async fn finish_and_compare(
    p: &crate::Pair,
    db: &str,
    task: &str,
    run: JoinHandle<Result<RunSummary, EngineError>>,
) {
    let slot = pgferry_engine::slot_name(task);
    wait_caught_up(&p.source, db, &slot).await;
    stop(&p.target, db, task, run).await;
    crate::assert_identical(p, db).await;
    let exceptions: i64 = crate::scalar(
        &p.target,
        db,
        "SELECT count(*) FROM pgferry.apply_exceptions",
    )
    .await;
    assert_eq!(exceptions, 0, "no change may be skipped");
}
