//! `pgferry stop` and `pgferry cleanup`.

use std::time::Duration;

use crate::cli::{StopArgs, TaskArgs};
use crate::{commands, exit, output};

pub async fn stop(args: StopArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task.task)?;
    let stopped = pgferry_engine::request_stop(&task, Duration::from_secs(args.wait)).await?;
    if args.task.json {
        output::print_json(&serde_json::json!({ "task": task.name, "stopped": stopped }))?;
    } else if stopped {
        println!(
            "Task \"{}\" stopped; `pgferry run` resumes it from its checkpoint.",
            task.name
        );
    } else {
        println!("Task \"{}\" is not running.", task.name);
    }
    Ok(exit::OK)
}

pub async fn cleanup(args: TaskArgs) -> anyhow::Result<u8> {
    let task = commands::load_task(&args.task)?;
    let cleaned = pgferry_engine::cleanup(&task).await?;
    if args.json {
        output::print_json(&cleaned)?;
    } else {
        match &cleaned.slot_dropped {
            Some(s) => {
                println!("Dropped replication slot {s}: the source no longer keeps WAL for it.")
            }
            None => println!("No replication slot to drop."),
        }
        match &cleaned.publication_dropped {
            Some(p) => println!("Dropped publication {p}."),
            None => println!("No publication of pgferry's to drop."),
        }
        for t in &cleaned.identities_restored {
            println!("Restored the replica identity of {t}.");
        }
        if cleaned.capture_removed {
            println!(
                "Removed the DDL capture (event triggers pgferry_capture_ddl and \
                 pgferry_capture_drop, schema pgferry_capture)."
            );
        }
    }
    Ok(exit::OK)
}
