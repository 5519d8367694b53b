//! Running a user's command: `sh -c`, no standard input, a time limit, and an error that
//! quotes the last line it wrote to standard error. For command notifiers and command
//! metrics alike.

use std::process::Stdio;
use std::time::Duration;

/// Runs `command` with `env` added; returns its standard output when it exits 0.
pub async fn run(command: &str, env: &[(&str, String)], limit: Duration) -> Result<String, String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the command: {e}"))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "the command ran longer than {} s and was killed",
                limit.as_secs()
            )
        })?
        .map_err(|e| format!("the command failed to run: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("").trim();
        return Err(format!("the command exited with {}: {last}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_environment_failures_and_the_time_limit() {
        let limit = Duration::from_secs(5);
        let env = [("PGFERRY_X", "42".to_owned())];
        assert_eq!(run("echo $PGFERRY_X", &env, limit).await.unwrap(), "42\n");
        let failed = run("echo oops >&2; exit 2", &[], limit).await.unwrap_err();
        assert!(failed.contains("oops"), "{failed}");
        let slow = run("sleep 3", &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(slow.contains("longer than 1 s"), "{slow}");
    }
}
