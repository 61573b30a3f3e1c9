//! Plumbing the Switchboard services share: Kafka settings and topic set-up, logging, and
//! shutdown on signals. Nothing here knows about webhooks, records or ClickHouse.

pub mod kafka;
pub mod logging;
pub mod shutdown;

pub use kafka::{KafkaArgs, TopicArgs};
pub use logging::LogArgs;
