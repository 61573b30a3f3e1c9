//! Compacted topics: Kafka keeps the newest record of every key for ever, which is what a
//! list that must never be forgotten needs (the erasure list). Kept apart from `kafka.rs`
//! so that the shared topic settings stay in one place for every other topic.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaArgs;

impl KafkaArgs {
    /// Creates `name` as a compacted topic with one partition (its records are few and
    /// read whole) if it does not exist; an existing topic is left as it is.
    pub async fn ensure_compacted_topic(&self, name: &str) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let topic = NewTopic::new(name, 1, TopicReplication::Fixed(self.topic_replication))
            .set("cleanup.policy", "compact");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        match admin.create_topics([&topic], &options).await?.pop() {
            Some(Ok(_)) => tracing::info!(topic = name, "Created compacted topic"),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => {}
            Some(Err((_, code))) => return Err(KafkaError::AdminOp(code)),
        }
        Ok(())
    }
}
