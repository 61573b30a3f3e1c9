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
use rdkafka::consumer::{BaseConsumer, Consumer};
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
        let consumer: BaseConsumer = kafka
            .client_config()
            // Assigned, not subscribed: the group only names the client; nothing is
            // committed, and every instance reads every record.
            .set(
                "group.id",
                format!(
                    "switchboard-erasures-{}-{}",
                    std::process::id(),
                    runtime::now_ms()
                ),
            )
            .set("enable.auto.commit", "false")
            // The list is read whole: should the start offset be lost (a topic created a
            // moment before, its leader not known yet), start again from the beginning,
            // never from the end.
            .set("auto.offset.reset", "earliest")
            .create()?;
        let timeout = Duration::from_secs(30);
        let mut assignment = TopicPartitionList::new();
        let mut ends = Vec::new();
        for partition in partitions(&consumer, topic, shutdown).await? {
            let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            if high > low {
                ends.push((partition, high));
            }
        }
        consumer.assign(&assignment)?;
        let list = ErasureList::default();
        let (ready, read) = tokio::sync::oneshot::channel();
        let follower = Follower {
            consumer,
            list: list.clone(),
            topic: topic.to_owned(),
            stop: shutdown.clone(),
        };
        // A thread of its own polls the consumer: the list is small and mostly idle,
        // and its reads stay off the service's runtime.
        std::thread::Builder::new()
            .name("erasure-list".into())
            .spawn(move || follower.run(ends, ready))
            .map_err(|_| KafkaError::Canceled)?;
        tokio::select! {
            _ = shutdown.cancelled() => Ok(None),
            read = read => match read {
                Ok(()) => Ok(Some(list)),
                Err(_) => Ok(None),
            },
        }
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

/// The partitions of `topic`, once each has a leader. Right after a topic is created the
/// broker may list it without partitions for a moment: assigning nothing then would
/// leave the list empty for good.
async fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    shutdown: &CancellationToken,
) -> Result<Vec<i32>, KafkaError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Metadata borrows the client: read what is needed before awaiting.
        let ready = {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let partitions: Vec<_> = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .collect();
            (!partitions.is_empty() && partitions.iter().all(|p| p.leader() >= 0))
                .then(|| partitions.iter().map(|p| p.id()).collect::<Vec<i32>>())
        };
        if let Some(partitions) = ready {
            return Ok(partitions);
        }
        if std::time::Instant::now() >= deadline || shutdown.is_cancelled() {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::LeaderNotAvailable,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The thread that reads the topic into a list.
struct Follower {
    consumer: BaseConsumer,
    list: ErasureList,
    topic: String,
    stop: CancellationToken,
}

impl Follower {
    /// Reads up to `ends` (per partition, the end when the list was asked for), says so
    /// on `ready`, then follows until stopped.
    fn run(self, mut ends: Vec<(i32, i64)>, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut errors = runtime::throttle::Throttle::new(Duration::from_secs(10));
        while !self.stop.is_cancelled() {
            if ends.is_empty() {
                if let Some(ready) = ready.take() {
                    let subjects = self.list.current().len();
                    tracing::info!(topic = %self.topic, subjects, "Erasure list read");
                    let _ = ready.send(());
                }
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(message)) => {
                    let grew = self.list.apply(message.payload());
                    if grew && ready.is_none() {
                        let subjects = self.list.current().len();
                        tracing::info!(topic = %self.topic, subjects, "Erasure list grew");
                    }
                    let (partition, offset) = (message.partition(), message.offset());
                    ends.retain(|&(p, end)| p != partition || offset + 1 < end);
                }
                // Usually the broker is unreachable; librdkafka reconnects by itself.
                Some(Err(e)) => {
                    if let Some(held_back) = errors.admit(std::time::Instant::now()) {
                        tracing::warn!(error = %e, held_back, "Erasure list consumer error");
                    }
                }
            }
        }
    }
}
