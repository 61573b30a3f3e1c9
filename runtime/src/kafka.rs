//! Kafka client settings shared by every service, and creation of missing topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};

use crate::metrics::LagContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

/// How to reach Kafka, and how to create the topics a service needs when they are missing.
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:19092",
        value_parser = brokers
    )]
    pub brokers: String,
    /// Partitions of a topic this service creates because it is missing. Per-key order
    /// holds for any count; more partitions allow more parallel consumers.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_partitions: i32,
    /// Replication factor of a topic this service creates (1 for a single broker).
    #[arg(long, env = "KAFKA_TOPIC_REPLICATION", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_replication: i32,
}

/// The pipeline's topic names (the defaults are the names the README documents).
#[derive(clap::Args, Debug, Clone)]
pub struct TopicArgs {
    /// Raw deliveries, written by ingest.
    #[arg(long, env = "KAFKA_TOPIC_RAW", default_value = "webhooks.raw", value_parser = topic)]
    pub raw_topic: String,
    /// Normalized records, written by transform.
    #[arg(
        long,
        env = "KAFKA_TOPIC_NORMALIZED",
        default_value = "webhooks.normalized",
        value_parser = topic
    )]
    pub normalized_topic: String,
    /// Dead letters: anything that could not be processed, with the reason.
    #[arg(long, env = "KAFKA_TOPIC_DLQ", default_value = "webhooks.dlq", value_parser = topic)]
    pub dlq_topic: String,
}

/// A Kafka setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KafkaConfigError {
    #[error("no broker given: list at least one host:port")]
    NoBrokers,
    #[error("broker entry {0:?} is not host:port with a port from 1 to 65535")]
    BadBroker(String),
    #[error("topic name {0:?} is invalid: use 1 to 249 of [A-Za-z0-9._-]")]
    BadTopic(String),
    #[error("the consumer group id must not be empty")]
    EmptyGroup,
}

/// Reads `KAFKA_BROKERS`: comma-separated `host:port` entries.
pub fn brokers(text: &str) -> Result<String, KafkaConfigError> {
    let brokers: Vec<&str> = text.split(',').map(str::trim).collect();
    if brokers.iter().all(|b| b.is_empty()) {
        return Err(KafkaConfigError::NoBrokers);
    }
    for broker in brokers {
        let valid = broker.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(KafkaConfigError::BadBroker(broker.to_owned()));
        }
    }
    Ok(text.to_owned())
}

/// Reads a consumer group id: any non-blank text.
pub fn group_id(text: &str) -> Result<String, KafkaConfigError> {
    if text.trim().is_empty() {
        Err(KafkaConfigError::EmptyGroup)
    } else {
        Ok(text.to_owned())
    }
}

/// Reads a topic name Kafka accepts.
pub fn topic(name: &str) -> Result<String, KafkaConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(KafkaConfigError::BadTopic(name.to_owned()))
    }
}

impl KafkaArgs {
    /// A client configuration with the brokers set and quiet, bounded defaults.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.max.ms", "2000");
        config
    }

    /// A consumer for at-least-once processing: offsets are stored by the application
    /// only after the output of a message is durable, and committed in the background.
    /// A new group starts from the earliest record, so nothing written before the first
    /// start is skipped.
    /// The group's lag is published to `lag` every 5 s.
    pub fn at_least_once_consumer(
        &self,
        group_id: &str,
        lag: prometheus::IntGauge,
    ) -> Result<StreamConsumer<LagContext>, KafkaError> {
        self.client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A member that vanished (crash, broker restart) is replaced in 10 s rather
            // than the default 45 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000")
            .set("statistics.interval.ms", "5000")
            // Larger fetches per partition: at the default 1 MB a local broker's round
            // trips, not the consumer, bounded the loader (measured with bench loader).
            .set("max.partition.fetch.bytes", "8388608")
            .create_with_context(LagContext::new(lag))
    }

    /// An idempotent producer that waits for all in-sync replicas, so a delivery that is
    /// reported done is durable and per-partition order survives retries. A delivery
    /// fails after `delivery_timeout`.
    pub fn reliable_producer(
        &self,
        delivery_timeout: Duration,
    ) -> Result<FutureProducer, KafkaError> {
        self.reliable_config(delivery_timeout).create()
    }

    /// The settings of [`KafkaArgs::reliable_producer`], to adjust before creating it.
    pub fn reliable_config(&self, delivery_timeout: Duration) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        config
    }

    /// Creates each topic that does not exist yet; existing topics are left as they are.
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.topic_partitions,
                    TopicReplication::Fixed(self.topic_replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&new_topics, &options).await? {
            match result {
                Ok(topic) => tracing::info!(topic, "Created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(topic, %code, "Could not create topic");
                    })
                }
            }
        }
        Ok(())
    }
}

/// Commits the offsets a consumer stored, on the way out, so a restart does not redo
/// them. A failure only means more records are processed again after the restart (and
/// collapsed downstream by event id), so it is logged, not returned.
pub fn commit_on_exit<C: ConsumerContext>(consumer: &StreamConsumer<C>) {
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
            tracing::warn!(error = %e, "Final offset commit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        topics: TopicArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_a_list_of_host_port_pairs() {
        let cli = parse(&["--kafka-brokers", "127.0.0.1:9092, kafka:9093"]).unwrap();
        assert_eq!(cli.kafka.brokers, "127.0.0.1:9092, kafka:9093");
    }

    #[test]
    fn names_the_broker_entry_that_is_wrong() {
        assert_eq!(brokers(""), Err(KafkaConfigError::NoBrokers));
        assert_eq!(
            brokers("kafka:9092,kafka"),
            Err(KafkaConfigError::BadBroker("kafka".into()))
        );
        assert_eq!(
            brokers("kafka:0"),
            Err(KafkaConfigError::BadBroker("kafka:0".into()))
        );
        assert!(brokers("kafka:99999").is_err());
        let error = parse(&["--kafka-brokers", "kafka"]).unwrap_err();
        assert!(
            error.contains("--kafka-brokers") && error.contains("\"kafka\""),
            "{error}"
        );
    }

    #[test]
    fn rejects_zero_partitions_and_replication() {
        for flag in ["--topic-partitions", "--topic-replication"] {
            let error = parse(&[flag, "0"]).unwrap_err();
            assert!(
                error.contains(flag) && error.contains("0 is not in 1.."),
                "{error}"
            );
        }
    }

    #[test]
    fn rejects_topic_names_kafka_would_refuse() {
        assert_eq!(topic("webhooks.raw"), Ok("webhooks.raw".into()));
        for bad in ["", "..", "a b", "a/b"] {
            assert_eq!(topic(bad), Err(KafkaConfigError::BadTopic(bad.into())));
        }
        assert!(parse(&["--dlq-topic", "a b"])
            .unwrap_err()
            .contains("--dlq-topic"));
    }
}
