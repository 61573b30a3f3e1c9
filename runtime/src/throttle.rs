//! Logging of repeated errors without flooding the log or slowing the caller.

use std::time::{Duration, Instant};

/// Logs an error at most once per interval and counts the ones it held back.
///
/// Kafka clients report every failed reconnect as an error event while a broker is
/// down. Those events must be consumed at full speed (pausing per event builds a backlog
/// that delays recovery), but logging each one floods the log.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when the caller should log now, `n` being how many were held back since
    /// the last log; `None` when this one is held back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_one_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(throttle.admit(t0), Some(0));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(throttle.admit(t0 + Duration::from_secs(2)), None);
        assert_eq!(throttle.admit(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(11)), None);
    }
}
