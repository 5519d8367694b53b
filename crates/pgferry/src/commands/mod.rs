//! One module per subcommand.

pub mod alarms;
pub mod assess;
pub mod cdc;
pub mod config;
pub mod cutover;
pub mod demo;
pub mod files;
pub mod run;
pub mod status;
pub mod validate;

use std::path::Path;

use pgferry_config::Task;

/// Reads the task file, for commands that take `--task`. The task's log filter (its own
/// or its DMS `Logging` section) takes effect unless `RUST_LOG` or `-v` chose one.
pub fn load_task(path: &Path) -> anyhow::Result<Task> {
    let task = Task::load(path)?;
    if let Some(filter) = &task.log_filter {
        crate::logging::apply_task_filter(filter);
    }
    Ok(task)
}

/// Runs a command that has no stop of its own until it ends or the process is asked to
/// stop, whichever comes first. Dropping the command closes its connections, so the
/// servers end its sessions (and any snapshot it held) at once.
pub async fn interruptible(
    command: impl std::future::Future<Output = anyhow::Result<u8>>,
) -> anyhow::Result<u8> {
    tokio::select! {
        result = command => result,
        _ = shutdown_signal() => Err(pgferry_engine::EngineError::Interrupted.into()),
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
