//! One retry policy for every service: exponential backoff with jitter, so that several
//! instances retrying the same failed dependency do not retry in step.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff: the pause before retry `n` (1 for the first) is
/// `initial × 2^(n−1)`, capped at `max`, then jittered by ±50%.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max }
    }

    /// The pause before retry `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let base = self
            .initial
            .saturating_mul(1u32 << doublings.min(20))
            .min(self.max);
        let base_ms = base.as_millis() as u64;
        Duration::from_millis(base_ms / 2 + fastrand::u64(0..=base_ms))
    }

    /// Sleeps before retry `attempt`; `false` when `shutdown` came first.
    pub async fn wait(&self, attempt: u32, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(self.delay(attempt)) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_the_initial_pause_and_is_capped_with_jitter() {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        for _ in 0..100 {
            let first = backoff.delay(1);
            assert!(
                (Duration::from_millis(100)..=Duration::from_millis(300)).contains(&first),
                "{first:?}"
            );
            let third = backoff.delay(3);
            assert!(
                (Duration::from_millis(400)..=Duration::from_millis(1200)).contains(&third),
                "{third:?}"
            );
            let late = backoff.delay(u32::MAX);
            assert!(
                (Duration::from_secs(15)..=Duration::from_secs(45)).contains(&late),
                "{late:?}"
            );
        }
    }

    #[tokio::test]
    async fn waiting_stops_at_shutdown() {
        let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert!(!backoff.wait(1, &shutdown).await);
    }
}
