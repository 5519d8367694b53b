//! The one retry schedule in pgferry: wait `first`, then double per attempt up to `max`.
//! DMS's `RecoverableErrorInterval` and `RecoverableErrorThrottlingMax` describe the same
//! schedule for the change stream; chunk copies and notifier deliveries use
//! [`Backoff::DEFAULT`].

use std::time::Duration;

/// A doubling wait between attempts, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// One second, doubling to at most thirty.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(30),
    };

    /// How long to wait before retry `attempt` (1-based).
    pub fn wait(&self, attempt: u32) -> Duration {
        self.first
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_wait_up_to_the_cap() {
        let waits: Vec<u64> = (1..=8)
            .map(|a| Backoff::DEFAULT.wait(a).as_secs())
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        let dms = Backoff {
            first: Duration::from_secs(5),
            max: Duration::from_secs(1800),
        };
        assert_eq!(dms.wait(1), Duration::from_secs(5));
        assert_eq!(dms.wait(3), Duration::from_secs(20));
        assert_eq!(dms.wait(40), Duration::from_secs(1800));
    }
}
