//! The erasure list as the transform holds it: every record of the compacted topic
//! `webhooks.erasures`, read from its start before the first raw record is normalized,
//! then followed in the background, so that a person erased while the service runs is
//! redacted from what it normalizes next (live and `transform replay` alike).
//!
//! `loader erase` produces a record before it redacts ClickHouse, and waits for the
//! pipeline to drain before it does (README, "Erasure"): from the moment it is
//! acknowledged, the followers take it within about a poll.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use normalize::Erasures;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use runtime::KafkaArgs;
use tokio_util::sync::CancellationToken;

/// The current list, shared between the follower and the readers.
#[derive(Clone, Default)]
pub struct ErasureList {
    current: Arc<RwLock<Arc<Erasures>>>,
}

impl ErasureList {
    /// A list with these erasures and no follower (for tests and tools).
    pub fn fixed(erasures: Erasures) -> ErasureList {
        ErasureList {
            current: Arc::new(RwLock::new(Arc::new(erasures))),
        }
    }

    /// Reads `topic` (created, compacted, if missing) from its start up to its end as it
    /// is now, then keeps following it until `shutdown`. Returns once the list holds
    /// everything that was in the topic; `None` on shutdown before that.
    pub async fn follow(
        kafka: &KafkaArgs,
        topic: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<ErasureList>, KafkaError> {
        kafka.ensure_compacted_topic(topic).await?;
        let consumer: StreamConsumer = kafka
            .client_config()
            // Assigned, not subscribed: the group only names the client; nothing is
            // committed, and every instance reads every record.
            .set(
                "group.id",
                format!("switchboard-erasures-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .create()?;
        let timeout = Duration::from_secs(30);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let mut assignment = TopicPartitionList::new();
        let mut ends = Vec::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
            if high > low {
                ends.push((partition.id(), high));
            }
        }
        consumer.assign(&assignment)?;
        let list = ErasureList::default();
        while !ends.is_empty() {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                message = consumer.recv() => message?,
            };
            list.apply(message.payload());
            let (partition, offset) = (message.partition(), message.offset());
            ends.retain(|&(p, end)| p != partition || offset + 1 < end);
        }
        tracing::info!(topic, subjects = list.current().len(), "Erasure list read");
        let follower = list.clone();
        let shutdown = shutdown.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            let mut errors = runtime::throttle::Throttle::new(Duration::from_secs(10));
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    message = consumer.recv() => message,
                };
                match message {
                    Ok(message) => {
                        if follower.apply(message.payload()) {
                            tracing::info!(topic = %topic, subjects = follower.current().len(), "Erasure list grew");
                        }
                    }
                    Err(e) => {
                        if let Some(held_back) = errors.admit(std::time::Instant::now()) {
                            tracing::warn!(error = %e, held_back, "Erasure list consumer error");
                        }
                    }
                }
            }
        });
        Ok(Some(list))
    }

    /// The list as it is now.
    pub fn current(&self) -> Arc<Erasures> {
        self.current.read().expect("erasure list lock").clone()
    }

    /// Adds one record of the topic; `true` if it named a subject not held yet.
    fn apply(&self, payload: Option<&[u8]>) -> bool {
        let Some(payload) = payload else {
            // A tombstone: erasures are never withdrawn, so there is nothing to undo.
            return false;
        };
        let erasure = match schemas::avro::erasure().decode(payload) {
            Ok(erasure) => erasure,
            Err(e) => {
                tracing::warn!(error = %e, "Unreadable erasure record skipped");
                return false;
            }
        };
        let mut current = self.current.write().expect("erasure list lock");
        let mut next = (**current).clone();
        if !next.add(&erasure) {
            return false;
        }
        *current = Arc::new(next);
        true
    }
}
