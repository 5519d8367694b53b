//! Shared helpers for CDC tests, used by `main.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgferry_config::{MigrationType, Task};
use pgferry_engine::{EngineError, RunProgress, RunSummary};
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

/// Runs the task in the background. Logs go to the test output (`RUST_LOG` filters).
pub fn spawn(task: &Task) -> JoinHandle<Result<RunSummary, EngineError>> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let task = task.clone();
    tokio::spawn(async move {
        let result = pgferry_engine::run(&task, Arc::new(RunProgress::default())).await;
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
    target
        .connect(db)
        .await
        .unwrap()
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
