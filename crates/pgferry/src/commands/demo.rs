//! `pgferry demo`: the whole story on one machine, with nothing to install beyond the
//! PostgreSQL server binaries.
//!
//! Two throwaway clusters start under the system's temporary directory, and a sample
//! inventory database is seeded on one. An application (the inventory workload) writes to
//! it from then on. pgferry migrates it to the other server: full load, then streaming
//! changes with live lag. Then the cutover, as `pgferry cutover` runs it, while the
//! application still writes: the source is fenced (read-only, sessions ended), the last
//! changes drain, the sequences are set, every table is validated, and the target opens.
//! The application moves to the target, whose writes stream back to the source; a
//! rollback returns to the source with all of them; the application writes there again,
//! and a second cutover ends the story. The servers keep running until Ctrl-C so you can
//! look around with psql; then both are stopped and their files removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use pgferry_config::{MigrationType, Task};
use pgferry_engine::{CutoverOptions, EngineError, RunProgress, RunSummary};
use pgferry_testkit::{Cluster, datagen, workload};

use crate::cli::DemoArgs;
use crate::commands::{self, run, validate};
use crate::exit;
use crate::progress::{self, Display};
use crate::watch::{self, Watch};

/// Small chunks, so even the demo's tables show parallel chunked copies.
const DEMO_CHUNK_SIZE: u64 = 8 * 1024 * 1024;

pub async fn demo(args: DemoArgs) -> anyhow::Result<u8> {
    let interactive = progress::interactive(args.no_progress);
    println!("pgferry demo: starting two throwaway PostgreSQL servers…");
    let (source, target) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let source = Cluster::start().context("starting the source server")?;
        let target = Cluster::start().context("starting the target server")?;
        Ok((source, target))
    })
    .await??;
    println!("  source: {}", source.url("inventory"));
    println!("  target: {}", target.url("inventory"));
    // Clusters live until this function returns, whatever happens inside.
    let result = tokio::select! {
        r = story(&args, interactive, &source, &target) => r,
        _ = commands::shutdown_signal() => {
            println!("\nInterrupted; stopping both servers and removing their files.");
            Ok(exit::INTERRUPTED)
        }
    };
    drop((source, target));
    result
}

async fn story(
    args: &DemoArgs,
    interactive: bool,
    source: &Cluster,
    target: &Cluster,
) -> anyhow::Result<u8> {
    seed(args, source, target).await?;
    let task = demo_task(args, source, target);
    assess(&task).await?;

    // The application: orders placed, stock moving, prices changing, all through the
    // migration.
    let app = App::start(source).await?;
    println!(
        "\nAn application now writes to the source: orders, order lines, stock moves, price \
         changes."
    );
    println!(
        "Migrating with {} parallel workers: full load (schema, COPY, indexes and \
         constraints, sequences) on one snapshot, then the changes made since, streamed by \
         logical replication…",
        task.full_load.jobs
    );
    let progress = Arc::new(RunProgress::default());
    let http = watch::listen_address(args.http.as_deref(), &task)?;
    let watch = Watch::start(
        &task,
        progress.clone(),
        http,
        Arc::new(|| tracing::warn!("the demo cuts over by itself; Ctrl-C ends it")),
    )
    .await?;
    if let Some(addr) = watch.addr() {
        println!("Dashboard: http://{addr}/   Prometheus: http://{addr}/metrics");
    }
    let display = Display::start(progress.clone(), interactive);
    let running = {
        let (task, progress) = (task.clone(), progress.clone());
        tokio::spawn(async move { pgferry_engine::run(&task, progress).await })
    };
    if !stream_for(args.stream_seconds, &progress, &running).await {
        display.finish().await;
        watch.finish().await;
        app.stop().await;
        running.await??;
        anyhow::bail!("the run ended before it streamed changes");
    }

    schema_change(source, target).await?;

    // The cutover, as `pgferry cutover` runs it, while the application still writes.
    let options = CutoverOptions {
        validation_jobs: task.full_load.jobs,
        ..CutoverOptions::default()
    };
    let (app, _) = switch(&task, options, app, false).await?;
    let app = app_moves(app, target, "target").await?;
    let (app, _) = switch(&task, options, app, true).await?;
    let app = app_moves(app, source, "source").await?;
    let (app, _) = switch(&task, options, app, false).await?;
    app.stop().await;
    // The run streams the target's writes back until it is told to stop.
    pgferry_engine::request_stop(&task, Duration::from_secs(60)).await?;
    let summary = running.await?;
    display.finish().await;
    let summary = summary?;
    run::print_summary(&summary);

    println!("\nValidating every table on both servers (row count and checksum)…");
    let report = pgferry_engine::validate(&task, task.full_load.jobs).await?;
    validate::print_report(&report);
    if report.all_match() {
        println!(
            "Cut over, rolled back and cut over again: the target holds every row the \
             application wrote on either side, and its sequences continue where the \
             source's stopped. Point the application at:\n  {}",
            target.url("inventory")
        );
    }

    let files_identical = product_images().await?;
    leave_running(args, source, target, &watch).await?;
    watch.finish().await;
    Ok(if report.all_match() && files_identical {
        exit::OK
    } else {
        exit::DIFFERENCES
    })
}

/// What `pgferry assess` says of the demo's task, in a few lines: nothing blocks, and the
/// load's estimate.
async fn assess(task: &Task) -> anyhow::Result<()> {
    println!("\nAssessing the migration (read-only, as `pgferry assess` does)…");
    let endpoints = pgferry_engine::Endpoints::resolve(task)?;
    let depth = pgferry_engine::Depth::Full {
        wal_sample: Duration::from_secs(1),
        long_transaction: Duration::from_secs(300),
    };
    let a = pgferry_engine::assess(task, &endpoints, depth).await?;
    println!(
        "  {}: {} blocker(s), {} warning(s), {} info",
        a.summary.verdict, a.summary.blockers, a.summary.warnings, a.summary.infos
    );
    for f in a
        .findings
        .iter()
        .filter(|f| f.severity != pgferry_engine::Severity::Info)
    {
        println!("  {} {}: {}", f.severity.as_str(), f.check, f.message);
    }
    if let Some(e) = &a.estimate {
        println!(
            "  estimated load: {:.1}s (between {:.1}s and {:.1}s) with {} jobs",
            e.seconds, e.seconds_low, e.seconds_high, e.jobs
        );
    }
    if a.summary.blockers > 0 {
        anyhow::bail!("the assessment found blockers; see above");
    }
    Ok(())
}

/// The application ships a schema change while it writes; pgferry's capture carries it to
/// the target at its place in the stream (`[cdc] ddl`). Waits until the target applied it.
async fn schema_change(source: &Cluster, target: &Cluster) -> anyhow::Result<()> {
    const DDL: [&str; 3] = [
        "ALTER TABLE products ADD COLUMN discontinued boolean NOT NULL DEFAULT false",
        "CREATE INDEX products_discontinued ON products (id) WHERE discontinued",
        "UPDATE products SET discontinued = true WHERE id % 50 = 0",
    ];
    progress::say("The application ships a schema change while it writes:");
    for sql in DDL {
        progress::say(&format!("  {sql};"));
        source
            .execute("inventory", sql)
            .await
            .context("changing the source's schema")?;
    }
    let control = target
        .connect("inventory")
        .await
        .context("reading the target")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = control
            .query(
                "SELECT tag || ' ' || object || ': ' || outcome FROM pgferry.ddl_log
                 WHERE task = 'demo' ORDER BY id",
                &[],
            )
            .await
            .context("reading pgferry.ddl_log")?;
        if rows.len() >= 2 {
            for r in &rows {
                progress::say(&format!("  on the target: {}", r.get::<_, String>(0)));
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the schema change did not reach the target within a minute");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A cutover (or, with `back`, a rollback) while the application writes, as the commands
/// run them; prints the steps and the downtime.
async fn switch(
    task: &Task,
    options: CutoverOptions,
    app: App,
    back: bool,
) -> anyhow::Result<(App, pgferry_engine::CutoverReport)> {
    progress::say(if back {
        "Rolling back (pgferry rollback): checks, fence the target, drain the reverse stream \
         to the fence, sequences on the source, validate every table, reopen the source…"
    } else {
        "Cutting over (pgferry cutover): checks, fence the source, drain to the fence, \
         sequences, validate every table, open the target and stream its writes back…"
    });
    let report = if back {
        pgferry_engine::rollback(task, options).await
    } else {
        pgferry_engine::cutover(task, options).await
    };
    let written = app.stop().await;
    let report = report?;
    for s in &report.steps {
        progress::say(&format!(
            "  {:<10} {:>6.2} s",
            s.step,
            s.seconds.unwrap_or_default()
        ));
    }
    progress::say(&format!(
        "  the application committed {written} transactions; downtime (fence to write \
         probe): {:.1} s",
        report.downtime_seconds.unwrap_or_default()
    ));
    // It was fenced; it reconnects to whichever side is open now.
    Ok((App::idle(), report))
}

/// The application writes to `side` for a few seconds.
async fn app_moves(app: App, cluster: &Cluster, side: &str) -> anyhow::Result<App> {
    app.stop().await;
    let app = App::start(cluster).await?;
    progress::say(&format!(
        "The application writes to the {side} now; pgferry streams its changes to the other \
         side…"
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    Ok(app)
}

async fn seed(args: &DemoArgs, source: &Cluster, target: &Cluster) -> anyhow::Result<()> {
    let seeding = Instant::now();
    println!(
        "Seeding the sample inventory database (scale {}: {} products, {} orders)…",
        args.scale,
        2000 * args.scale,
        5000 * args.scale
    );
    datagen::create_inventory(source, "inventory", args.scale)
        .await
        .context("seeding the source")?;
    target
        .create_database("inventory")
        .await
        .context("creating the target database")?;
    println!("  seeded in {:.1}s", seeding.elapsed().as_secs_f64());
    Ok(())
}

fn demo_task(args: &DemoArgs, source: &Cluster, target: &Cluster) -> Task {
    let mut task = Task::new(
        MigrationType::FullLoadAndCdc,
        &source.url("inventory"),
        &target.url("inventory"),
    );
    task.name = "demo".to_owned();
    task.full_load.chunk_size = DEMO_CHUNK_SIZE;
    task.cdc.heartbeat_interval = Duration::from_secs(1);
    // Schema changes made during the migration are carried too.
    task.cdc.ddl = true;
    task.monitoring.sample_interval = Duration::from_secs(1);
    if let Some(jobs) = args.jobs {
        task.full_load.jobs = jobs;
    }
    task
}

/// Waits for streaming, then lets it run `seconds` under the application's writes.
/// Returns false if the run ended before it streamed.
async fn stream_for(
    seconds: u64,
    progress: &RunProgress,
    running: &tokio::task::JoinHandle<Result<RunSummary, EngineError>>,
) -> bool {
    while progress.phase() != "cdc" {
        if running.is_finished() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress::say(&format!(
        "Full load done; streaming changes for {seconds} s while the application writes…"
    ));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    !running.is_finished()
}

/// Writes a task file for the two servers so the other commands can be tried on them,
/// and waits for Ctrl-C unless told not to.
async fn leave_running(
    args: &DemoArgs,
    source: &Cluster,
    target: &Cluster,
    watch: &Watch,
) -> anyhow::Result<()> {
    let task_file = std::env::temp_dir().join(format!("pgferry-demo-{}.toml", std::process::id()));
    std::fs::write(
        &task_file,
        format!(
            "# Written by `pgferry demo`; removed when the demo ends.\nname = \"demo\"\n\
             migration_type = \"full-load-and-cdc\"\n[source]\nurl = \"{}\"\n[target]\n\
             url = \"{}\"\n[cdc]\nddl = true\n",
            source.url("inventory"),
            target.url("inventory")
        ),
    )
    .context("writing the demo's task file")?;
    println!(
        "\nBoth servers are still running (cut over for the second time: the source is \
         read-only). Try:"
    );
    println!("  pgferry status --task {}", task_file.display());
    println!("  pgferry validate --task {}", task_file.display());
    println!("  psql '{}' -c '\\dt+'", target.url("inventory"));
    if let Some(addr) = watch.addr() {
        println!("  the dashboard stays at http://{addr}/ until the demo ends");
    }
    if !args.no_wait {
        println!("Press Ctrl-C to stop both servers and remove their files.");
        commands::shutdown_signal().await;
        println!("Stopping both servers and removing their files.");
    }
    let _ = std::fs::remove_file(&task_file);
    Ok(())
}

/// The files that go with the database: a tree of product images, synced to a local
/// "bucket" (a `file://` destination) and verified, then removed.
async fn product_images() -> anyhow::Result<bool> {
    let root = std::env::temp_dir().join(format!("pgferry-demo-files-{}", std::process::id()));
    let source = root.join("product-images");
    for i in 0..400u32 {
        let dir = source.join(format!("{:02}", i % 20));
        std::fs::create_dir_all(&dir)?;
        let line = format!("product {i} image bytes ");
        std::fs::write(
            dir.join(format!("product {i}.jpg")),
            line.repeat(50 + (i as usize * 37) % 1500),
        )?;
    }
    let destination = format!("file://{}", root.join("bucket").display());
    println!(
        "\nMoving the product images too: pgferry files sync {} {destination}",
        source.display()
    );
    let dest =
        pgferry_files::Destination::open(&destination, &pgferry_files::StoreOptions::default())?;
    let sync = pgferry_files::sync(
        &dest,
        &pgferry_files::SyncOptions::new(&source),
        Arc::new(pgferry_files::Progress::default()),
    )
    .await?;
    let verify = pgferry_files::verify(
        &dest,
        &pgferry_files::VerifyOptions::new(&source),
        Arc::new(pgferry_files::Progress::default()),
    )
    .await?;
    println!(
        "  {} files uploaded ({:.1} MiB) in {:.2}s; verify: {} of {} match by SHA-256, {} differences",
        sync.files_uploaded,
        sync.bytes_uploaded as f64 / 1048576.0,
        sync.seconds,
        verify.matched,
        verify.files,
        verify.differences.len()
    );
    let _ = std::fs::remove_dir_all(&root);
    Ok(verify.is_identical() && sync.problems.is_empty())
}

/// The demo's application: the inventory workload on the source, in the background.
struct App {
    stop: Arc<AtomicBool>,
    counts: Arc<workload::WorkloadCounts>,
    writer: tokio::task::JoinHandle<()>,
}

impl App {
    async fn start(source: &Cluster) -> anyhow::Result<App> {
        let client = source
            .connect("inventory")
            .await
            .context("connecting the demo application")?;
        client
            .batch_execute("SET application_name = 'pgferry demo app'")
            .await
            .context("connecting the demo application")?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(workload::WorkloadCounts::default());
        let writer = {
            let (stop, counts) = (stop.clone(), counts.clone());
            tokio::spawn(async move {
                let _ =
                    workload::inventory(&client, 7, stop, counts, Duration::from_millis(2)).await;
            })
        };
        Ok(App {
            stop,
            counts,
            writer,
        })
    }

    /// No application (between two switches).
    fn idle() -> App {
        App {
            stop: Arc::new(AtomicBool::new(true)),
            counts: Arc::new(workload::WorkloadCounts::default()),
            writer: tokio::spawn(async {}),
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.writer.await;
        self.counts.transactions.load(Ordering::Relaxed)
    }
}
