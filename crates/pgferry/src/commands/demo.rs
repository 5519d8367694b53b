//! `pgferry demo`: the whole story on one machine, with nothing to install beyond the
//! PostgreSQL server binaries.
//!
//! Two throwaway clusters start under the system's temporary directory, a sample inventory
//! database is seeded on one, and pgferry migrates it to the other with live progress,
//! then validates every table. The servers keep running until Ctrl-C so you can look
//! around with psql; then both are stopped and their files removed.

use std::time::Instant;

use anyhow::Context;
use pgferry_config::{MigrationType, Task};
use pgferry_testkit::{Cluster, datagen};

use crate::cli::DemoArgs;
use crate::commands::{self, run, validate};
use crate::{exit, progress};

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

    let mut task = Task::new(
        MigrationType::FullLoad,
        &source.url("inventory"),
        &target.url("inventory"),
    );
    task.name = "demo".to_owned();
    task.full_load.chunk_size = DEMO_CHUNK_SIZE;
    if let Some(jobs) = args.jobs {
        task.full_load.jobs = jobs.max(1);
    }
    println!(
        "\nMigrating with {} parallel workers (full load: schema, COPY, indexes and \
         constraints, sequences)…",
        task.full_load.jobs
    );
    let summary = run::run_with_progress(&task, interactive).await?;
    run::print_summary(&summary);

    println!("\nValidating every table on both servers (row count and checksum)…");
    let report = pgferry_engine::validate::validate(&task, task.full_load.jobs).await?;
    validate::print_report(&report);

    // A task file for the two servers, so the other commands can be tried on them.
    let task_file = std::env::temp_dir().join(format!("pgferry-demo-{}.toml", std::process::id()));
    std::fs::write(
        &task_file,
        format!(
            "# Written by `pgferry demo`; removed when the demo ends.\nname = \"demo\"\n\
             migration_type = \"full-load\"\n[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n",
            source.url("inventory"),
            target.url("inventory")
        ),
    )
    .context("writing the demo's task file")?;
    println!("\nBoth servers are still running. Try:");
    println!("  pgferry status --task {}", task_file.display());
    println!("  pgferry validate --task {}", task_file.display());
    println!("  psql '{}' -c '\\dt+'", target.url("inventory"));
    if !args.no_wait {
        println!("Press Ctrl-C to stop both servers and remove their files.");
        commands::shutdown_signal().await;
        println!("Stopping both servers and removing their files.");
    }
    let _ = std::fs::remove_file(&task_file);
    Ok(if report.all_match() {
        exit::OK
    } else {
        exit::DIFFERENCES
    })
}
