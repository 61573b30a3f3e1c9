//! Compacted topics: Kafka keeps the newest record of every key for ever, which is what a
//! list that must never be forgotten needs (the erasure list). Kept apart from
//! `topics.rs`, whose `Topic` kinds all take the pipeline's partition count; a
//! `Topic::Compacted` kind there would be its natural home.

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
        // As durable as the pipeline's topics: an erasure that a broker loses would let
        // a replay bring the person back.
        let min_insync = self.topic_min_insync_replicas.to_string();
        let topic = NewTopic::new(name, 1, TopicReplication::Fixed(self.topic_replication))
            .set("cleanup.policy", "compact")
            .set("min.insync.replicas", &min_insync);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        match admin.create_topics([&topic], &options).await?.pop() {
            Some(Ok(_)) => tracing::info!(topic = name, "Created compacted topic"),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => {}
            Some(Err((_, code))) => return Err(KafkaError::AdminOp(code)),
        }
        Ok(())
    }
}
