//! Retrying work that a server restart or a dropped connection interrupts. Whether an
//! error is worth another attempt is the error's own verdict ([`EngineError::is_retryable`]);
//! the wait follows the one schedule in [`pgferry_config::retry::Backoff`].

use std::time::Duration;

use pgferry_config::retry::Backoff;

use crate::error::{EngineError, Result};

/// Attempts per piece of work (a chunk, a schema step, a snapshot export) before it is
/// given up for this run. With the default backoff that rides out about a minute of
/// network or server trouble.
pub const ATTEMPTS: u32 = 6;

/// How long to wait before retry `attempt` (1-based) of a piece of the load.
pub fn backoff(attempt: u32) -> Duration {
    Backoff::DEFAULT.wait(attempt)
}

/// Runs `op` until it succeeds, fails for good, or has failed [`ATTEMPTS`] times, waiting
/// [`backoff`] between attempts: for a server that is coming back from a restart.
pub async fn retried<T, Fut>(what: &str, mut op: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                let wait = backoff(attempt);
                tracing::warn!(error = %e, "{what} failed; retrying in {} s", wait.as_secs());
                tokio::time::sleep(wait).await;
            }
            result => return result,
        }
    }
}

/// Whether a failed attempt should be tried again: retryable, and attempts left.
pub fn again(e: &EngineError, attempt: u32) -> bool {
    e.is_retryable() && attempt < ATTEMPTS
}
