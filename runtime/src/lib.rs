//! Plumbing the Switchboard services share: Kafka settings and topic set-up, logging, and
//! shutdown on signals. Nothing here knows about webhooks, records or ClickHouse.

mod compacted;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod retry;
pub mod shutdown;
pub mod throttle;
pub mod topics;
pub mod trace;

pub use kafka::{KafkaArgs, TopicArgs};
pub use topics::{Topic, TopicError};

/// The current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
pub use logging::{LogArgs, LogFormat, Telemetry};
