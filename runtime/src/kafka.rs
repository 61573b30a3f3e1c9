//! Kafka client settings shared by every service, and the durability settings of the
//! topics they create (applied in [`crate::topics`]).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};

use crate::metrics::LagContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

/// How to reach Kafka, and how to create the topics a service needs when they are missing.
/// The defaults are those of a three-broker production cluster; a single broker (local
/// development, the single-node compose file) needs replication and min.insync.replicas
/// of 1.
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
    /// Partitions of a topic this service creates because it is missing. Fixed up
    /// front: a record goes to partition hash(key) mod count, so adding partitions later
    /// moves keys, and a call's events written before and after the change could be read
    /// out of order; Kafka never removes partitions. Choose it for the most consumers a
    /// group will ever run (one partition is read by one consumer of a group).
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 12,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_partitions: i32,
    /// Copies of each partition of a topic this service creates: 3 keeps two copies while
    /// a broker is down. 1 for a single broker. The cluster must have at least this many
    /// brokers when the topic is created.
    #[arg(long, env = "KAFKA_TOPIC_REPLICATION", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_replication: i32,
    /// `min.insync.replicas` of a topic this service creates: how many copies hold a
    /// record before Kafka acknowledges it to an `acks=all` producer (every service's).
    /// 2 of 3 copies: writes go on with one broker down, and an acknowledged record
    /// survives the loss of any one broker. At most `KAFKA_TOPIC_REPLICATION`; 1 for a
    /// single broker.
    #[arg(long, env = "KAFKA_TOPIC_MIN_INSYNC_REPLICAS", default_value_t = 2,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_min_insync_replicas: i32,
    /// `retention.ms` of the raw topic when a service creates it: how far back
    /// `transform replay` can rebuild the tables after a normalization fix (30 days);
    /// -1 keeps raw records forever. Other topics get the broker's retention.
    #[arg(long, env = "KAFKA_RAW_RETENTION_MS", default_value_t = 2_592_000_000,
          value_parser = retention_ms)]
    pub raw_retention_ms: i64,
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
    #[error("retention {0:?} is not a number of milliseconds above 0, or -1 (forever)")]
    BadRetention(String),
    #[error("KAFKA_TOPIC_MIN_INSYNC_REPLICAS is {min_insync} but KAFKA_TOPIC_REPLICATION is {replication}: no write could ever be acknowledged; set it to at most the replication factor")]
    MinInsyncAboveReplication { min_insync: i32, replication: i32 },
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

/// Reads a retention in milliseconds: above 0, or -1 for unlimited (Kafka's spelling).
pub fn retention_ms(text: &str) -> Result<i64, KafkaConfigError> {
    match text.trim().parse::<i64>() {
        Ok(ms) if ms > 0 || ms == -1 => Ok(ms),
        _ => Err(KafkaConfigError::BadRetention(text.to_owned())),
    }
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
    /// Checks the rules that span several settings (each setting alone is checked as it
    /// is parsed).
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        if self.topic_min_insync_replicas > self.topic_replication {
            return Err(KafkaConfigError::MinInsyncAboveReplication {
                min_insync: self.topic_min_insync_replicas,
                replication: self.topic_replication,
            });
        }
        Ok(())
    }

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
    fn defaults_suit_a_three_broker_cluster() {
        // The declared defaults, read from the parser: a test run's environment (which
        // sets KAFKA_TOPIC_* for one broker) must not decide this test.
        use clap::CommandFactory;
        let command = Cli::command();
        let default = |name: &str| -> String {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == name)
                .unwrap_or_else(|| panic!("no argument {name}"));
            arg.get_default_values()[0].to_string_lossy().into_owned()
        };
        assert_eq!(
            (
                default("topic_partitions"),
                default("topic_replication"),
                default("topic_min_insync_replicas"),
                default("raw_retention_ms")
            ),
            (
                "12".to_owned(),
                "3".to_owned(),
                "2".to_owned(),
                (30u64 * 24 * 3600 * 1000).to_string()
            )
        );
        let args = [
            "--topic-partitions=12",
            "--topic-replication=3",
            "--topic-min-insync-replicas=2",
        ];
        assert_eq!(parse(&args).unwrap().kafka.validate(), Ok(()));
    }

    #[test]
    fn a_single_broker_says_so_with_replication_and_min_insync_of_one() {
        let args = ["--topic-replication=1", "--topic-min-insync-replicas=1"];
        let kafka = parse(&args).unwrap().kafka;
        assert_eq!(kafka.validate(), Ok(()));
    }

    #[test]
    fn min_insync_replicas_above_the_replication_factor_is_refused_naming_both() {
        // Both flags are given: the environment of a test run may set either.
        let args = ["--topic-replication=1", "--topic-min-insync-replicas=2"];
        let kafka = parse(&args).unwrap().kafka;
        let error = kafka.validate().unwrap_err();
        assert_eq!(
            error,
            KafkaConfigError::MinInsyncAboveReplication {
                min_insync: 2,
                replication: 1
            }
        );
        let text = error.to_string();
        assert!(
            text.contains("KAFKA_TOPIC_MIN_INSYNC_REPLICAS is 2")
                && text.contains("KAFKA_TOPIC_REPLICATION is 1"),
            "{text}"
        );
    }

    #[test]
    fn raw_retention_is_positive_milliseconds_or_forever() {
        assert_eq!(retention_ms("604800000"), Ok(604_800_000));
        assert_eq!(retention_ms("-1"), Ok(-1));
        for bad in ["0", "-2", "30d", ""] {
            assert_eq!(
                retention_ms(bad),
                Err(KafkaConfigError::BadRetention(bad.into()))
            );
        }
        let error = parse(&["--raw-retention-ms", "30d"]).unwrap_err();
        assert!(
            error.contains("--raw-retention-ms") && error.contains("30d"),
            "{error}"
        );
    }

    #[test]
    fn rejects_zero_partitions_and_replication() {
        for flag in [
            "--topic-partitions",
            "--topic-replication",
            "--topic-min-insync-replicas",
        ] {
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
