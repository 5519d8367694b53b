//! `cutover.on_switch`: the commands that point the application at the target (flip DNS,
//! update a secret, reload PgBouncer), run in order when the target opens. Each runs by
//! `sh -c` with the task's name in `PGFERRY_TASK`, within its timeout; its output is
//! logged. A command that fails or times out stops the cutover before the write probe: a
//! rerun runs the commands again, so they must be safe to repeat.

use std::time::Instant;

use pgferry_config::SwitchCommand;
use pgferry_pg::{PgError, Side};
use serde::Serialize;

use crate::error::{EngineError, Result};

/// One command as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Switched {
    pub command: String,
    pub seconds: f64,
}

pub async fn run_all(commands: &[SwitchCommand], task: &str) -> Result<Vec<Switched>> {
    let mut out = Vec::new();
    for c in commands {
        let started = Instant::now();
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&c.command)
            .env("PGFERRY_TASK", task)
            .kill_on_drop(true)
            .output();
        let failed = |problem: String| {
            EngineError::Pg(PgError::Prerequisite {
                side: Side::Target,
                problem,
                fix: "fix the command (cutover.on_switch), then run `pgferry cutover` again: \
                      it goes on from the switch"
                    .to_owned(),
            })
        };
        let output = match tokio::time::timeout(c.timeout, child).await {
            Err(_) => {
                return Err(failed(format!(
                    "the switch command {:?} did not finish within {} s",
                    c.command,
                    c.timeout.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(failed(format!("cannot run {:?}: {e}", c.command))),
            Ok(Ok(o)) => o,
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        tracing::info!(command = %c.command, status = %output.status, stdout = %stdout.trim(),
            stderr = %stderr.trim(), "switch command ran");
        if !output.status.success() {
            return Err(failed(format!(
                "the switch command {:?} failed ({}): {}",
                c.command,
                output.status,
                stderr.trim()
            )));
        }
        out.push(Switched {
            command: c.command.clone(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(out)
}
