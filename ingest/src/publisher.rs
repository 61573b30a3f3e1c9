//! Where accepted events go: a small trait so the HTTP layer can be tested without a
//! broker, and its Kafka implementation (idempotent producer, `acks=all`).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use runtime::KafkaArgs;

use crate::error::PublishError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes an event durable. `publish` resolves only once the event is stored.
pub trait Publisher: Send + Sync + 'static {
    fn publish<'a>(
        &'a self,
        key: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), PublishError>>;
    /// Whether the publisher can accept durably right now (for `/readyz`).
    fn ready(&self) -> BoxFuture<'_, bool>;
}

/// Publishes to a Kafka topic and waits for the acknowledgement of all in-sync replicas.
pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
}

impl KafkaPublisher {
    /// A producer whose every delivery either is acknowledged by all in-sync replicas or
    /// fails within `produce_timeout`.
    pub fn new(
        kafka: &KafkaArgs,
        topic: &str,
        produce_timeout: Duration,
    ) -> Result<KafkaPublisher, KafkaError> {
        let producer: FutureProducer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                produce_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .create()?;
        Ok(KafkaPublisher {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Waits until queued deliveries are done (on shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "Producer flush did not complete");
        }
    }
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(
        &'a self,
        key: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            let record = FutureRecord::to(&self.topic).key(key).payload(&payload);
            // A full local queue means we are over capacity: fail at once with a 503
            // rather than hold the request.
            match self
                .producer
                .send(record, Timeout::After(Duration::ZERO))
                .await
            {
                Ok(_) => Ok(()),
                Err((e, _)) => Err(classify(e)),
            }
        })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let producer = self.producer.clone();
            let topic = self.topic.clone();
            let check = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .map(|m| {
                        m.topics()
                            .iter()
                            .any(|t| t.error().is_none() && !t.partitions().is_empty())
                    })
                    .unwrap_or(false)
            });
            check.await.unwrap_or(false)
        })
    }
}

fn classify(e: KafkaError) -> PublishError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage) => {
            PublishError::Refused(e.to_string())
        }
        _ => PublishError::Unavailable(e.to_string()),
    }
}
