//! Creation of the topics a service needs when they are missing, with the durability
//! settings of [`KafkaArgs`]: partitions, replication factor, `min.insync.replicas`, and
//! the retention of the raw topic. An existing topic is never changed (its partition
//! count least of all: keys would move); a difference from the settings is logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::{KafkaArgs, KafkaConfigError, TopicArgs};

/// How long to wait for the brokers' answer about the cluster.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A topic a service creates when it is missing, by what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// Raw deliveries: kept `KAFKA_RAW_RETENTION_MS`, the window `transform replay` can
    /// rebuild the tables from.
    Raw(&'a str),
    /// Records derived from the raw ones (normalized, dead letters): kept as long as
    /// the broker's default retention says.
    Derived(&'a str),
}

impl Topic<'_> {
    pub fn name(&self) -> &str {
        match self {
            Topic::Raw(name) | Topic::Derived(name) => name,
        }
    }
}

impl TopicArgs {
    /// The raw topic, as ingest writes it and transform reads it.
    pub fn raw(&self) -> Topic<'_> {
        Topic::Raw(&self.raw_topic)
    }

    /// The normalized topic, written by transform, read by the loader.
    pub fn normalized(&self) -> Topic<'_> {
        Topic::Derived(&self.normalized_topic)
    }

    /// The dead-letter topic.
    pub fn dlq(&self) -> Topic<'_> {
        Topic::Derived(&self.dlq_topic)
    }
}

/// Why the topics a service needs could not be checked or created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Setting(#[from] KafkaConfigError),
    #[error("KAFKA_TOPIC_REPLICATION is {replication} but the cluster has {brokers} broker{s}: topic {topic} cannot be created; start more brokers, or lower KAFKA_TOPIC_REPLICATION and KAFKA_TOPIC_MIN_INSYNC_REPLICAS (1 and 1 for a single broker)", s = plural(.brokers))]
    TooFewBrokers {
        replication: i32,
        brokers: usize,
        topic: String,
    },
    #[error("kafka refused to create topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("kafka did not answer about its topics: {0}")]
    Kafka(#[from] KafkaError),
}

fn plural(n: &usize) -> &'static str {
    if *n == 1 {
        ""
    } else {
        "s"
    }
}

impl TopicError {
    /// Whether a setting is at fault (retrying cannot help; the service should stop
    /// with this message), rather than Kafka being unreachable for now.
    pub fn is_setting(&self) -> bool {
        matches!(
            self,
            TopicError::Setting(_) | TopicError::TooFewBrokers { .. }
        )
    }
}

/// For callers whose errors only know `KafkaError`: a setting at fault travels as the
/// message of an admin-operation error, so it still reaches the log whole.
impl From<TopicError> for KafkaError {
    fn from(error: TopicError) -> KafkaError {
        match error {
            TopicError::Kafka(e) => e,
            TopicError::Create { code, .. } => KafkaError::AdminOp(code),
            other => KafkaError::AdminOpCreation(other.to_string()),
        }
    }
}

/// What the brokers said about the cluster: live brokers, and each topic's partitions.
#[derive(Debug, Default)]
struct ClusterView {
    brokers: usize,
    partitions: HashMap<String, usize>,
}

impl KafkaArgs {
    /// Creates each of `topics` that does not exist yet, with the durability settings;
    /// existing topics are left as they are. Refuses, before creating anything, when
    /// the settings contradict each other or when the cluster has fewer brokers than
    /// the replication factor (Kafka would refuse anyway, less clearly).
    pub async fn create_missing_topics(&self, topics: &[Topic<'_>]) -> Result<(), TopicError> {
        self.validate()?;
        let admin: Arc<AdminClient<DefaultClientContext>> =
            Arc::new(self.client_config().create()?);
        let asked = admin.clone();
        // A blocking call: kept off the async workers, so a caller's timeout still fires.
        let view = tokio::task::spawn_blocking(move || {
            let metadata = asked.inner().fetch_metadata(None, METADATA_TIMEOUT)?;
            Ok::<_, KafkaError>(ClusterView {
                brokers: metadata.brokers().len(),
                partitions: metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| (t.name().to_owned(), t.partitions().len()))
                    .collect(),
            })
        })
        .await
        .map_err(|e| KafkaError::AdminOpCreation(format!("metadata request failed: {e}")))??;
        let missing = self.missing(topics, &view)?;
        if missing.is_empty() {
            return Ok(());
        }
        let min_insync = self.topic_min_insync_replicas.to_string();
        let retention = self.raw_retention_ms.to_string();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|topic| {
                let new = NewTopic::new(
                    topic.name(),
                    self.topic_partitions,
                    TopicReplication::Fixed(self.topic_replication),
                )
                .set("min.insync.replicas", &min_insync);
                match topic {
                    Topic::Raw(_) => new.set("retention.ms", &retention),
                    Topic::Derived(_) => new,
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&new_topics, &options).await? {
            match result {
                Ok(topic) => tracing::info!(
                    topic,
                    partitions = self.topic_partitions,
                    replication = self.topic_replication,
                    min_insync_replicas = self.topic_min_insync_replicas,
                    "Created topic"
                ),
                // Another service created it meanwhile.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(TopicError::Create { topic, code }),
            }
        }
        Ok(())
    }

    /// The topics to create, given what the cluster has; logs an existing topic whose
    /// partition count differs from the setting (left as it is: changing it moves keys).
    fn missing<'t>(
        &self,
        topics: &[Topic<'t>],
        view: &ClusterView,
    ) -> Result<Vec<Topic<'t>>, TopicError> {
        let mut missing = Vec::new();
        for topic in topics {
            match view.partitions.get(topic.name()) {
                Some(&partitions) if partitions != self.topic_partitions as usize => {
                    tracing::warn!(
                        topic = topic.name(),
                        partitions,
                        setting = self.topic_partitions,
                        "Topic exists with another partition count than KAFKA_TOPIC_PARTITIONS; left as it is"
                    );
                }
                Some(_) => {}
                None => missing.push(*topic),
            }
        }
        // Only a topic to create needs the brokers: a service that restarts while one
        // broker of three is down still starts.
        if let Some(topic) = missing.first() {
            if view.brokers < self.topic_replication as usize {
                return Err(TopicError::TooFewBrokers {
                    replication: self.topic_replication,
                    brokers: view.brokers,
                    topic: topic.name().to_owned(),
                });
            }
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(replication: i32, min_insync: i32) -> KafkaArgs {
        KafkaArgs {
            brokers: "127.0.0.1:9092".into(),
            topic_partitions: 12,
            topic_replication: replication,
            topic_min_insync_replicas: min_insync,
            raw_retention_ms: 1000,
        }
    }

    fn view(brokers: usize, topics: &[(&str, usize)]) -> ClusterView {
        ClusterView {
            brokers,
            partitions: topics.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn creates_only_the_topics_the_cluster_lacks() {
        let wanted = [Topic::Raw("raw"), Topic::Derived("normalized")];
        let missing = kafka(3, 2)
            .missing(&wanted, &view(3, &[("normalized", 12)]))
            .unwrap();
        assert_eq!(missing, [Topic::Raw("raw")]);
    }

    #[test]
    fn too_few_brokers_for_the_replication_factor_is_a_clear_start_up_error() {
        let error = kafka(3, 2)
            .missing(&[Topic::Raw("webhooks.raw")], &view(1, &[]))
            .unwrap_err();
        assert!(error.is_setting());
        assert_eq!(
            error.to_string(),
            "KAFKA_TOPIC_REPLICATION is 3 but the cluster has 1 broker: topic webhooks.raw \
             cannot be created; start more brokers, or lower KAFKA_TOPIC_REPLICATION and \
             KAFKA_TOPIC_MIN_INSYNC_REPLICAS (1 and 1 for a single broker)"
        );
        let two = kafka(3, 2).missing(&[Topic::Raw("r")], &view(2, &[]));
        assert!(two.unwrap_err().to_string().contains("has 2 brokers:"));
    }

    #[test]
    fn existing_topics_need_no_broker_count_so_a_restart_with_a_broker_down_works() {
        let wanted = [Topic::Raw("raw"), Topic::Derived("dlq")];
        let missing = kafka(3, 2)
            .missing(&wanted, &view(2, &[("raw", 12), ("dlq", 3)]))
            .unwrap();
        assert!(missing.is_empty());
    }

    #[test]
    fn a_setting_at_fault_keeps_its_message_through_kafka_error() {
        let error: KafkaError = TopicError::TooFewBrokers {
            replication: 3,
            brokers: 1,
            topic: "t".into(),
        }
        .into();
        assert!(
            error.to_string().contains("KAFKA_TOPIC_REPLICATION is 3"),
            "{error}"
        );
        let error: KafkaError = TopicError::Setting(KafkaConfigError::MinInsyncAboveReplication {
            min_insync: 2,
            replication: 1,
        })
        .into();
        assert!(
            error.to_string().contains("MIN_INSYNC_REPLICAS is 2"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn contradicting_settings_are_refused_before_kafka_is_asked() {
        // No broker listens on port 9: the refusal must come from the settings alone.
        let mut args = kafka(1, 2);
        args.brokers = "127.0.0.1:9".into();
        let error = args
            .create_missing_topics(&[Topic::Raw("raw")])
            .await
            .unwrap_err();
        assert!(matches!(error, TopicError::Setting(_)), "{error}");
    }

    #[test]
    fn the_pipeline_topics_say_which_one_is_raw() {
        let topics = TopicArgs {
            raw_topic: "r".into(),
            normalized_topic: "n".into(),
            dlq_topic: "d".into(),
        };
        assert_eq!(
            [topics.raw(), topics.normalized(), topics.dlq()],
            [Topic::Raw("r"), Topic::Derived("n"), Topic::Derived("d")]
        );
    }
}
