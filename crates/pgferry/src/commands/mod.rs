//! One module per subcommand.

pub mod cdc;
pub mod demo;
pub mod files;
pub mod run;
pub mod status;
pub mod validate;

use std::path::Path;

use pgferry_config::Task;

/// Reads the task file, for commands that take `--task`.
pub fn load_task(path: &Path) -> anyhow::Result<Task> {
    Ok(Task::load(path)?)
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
