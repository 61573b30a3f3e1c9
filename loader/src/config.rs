//! The `loader` configuration: flags, each also read from the environment.

use std::time::Duration;

use runtime::{KafkaArgs, LogArgs, TopicArgs};
use warehouse::migrations::is_valid_database_name;

use crate::batch::FlushPolicy;

/// Settings of the `loader` binary.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "loader",
    version,
    about = "Loads normalized webhooks from Kafka into ClickHouse, idempotently."
)]
pub struct Config {
    /// Consumer group; every instance of the service shares it.
    #[arg(long, env = "LOADER_GROUP_ID", default_value = "switchboard-loader",
          value_parser = runtime::kafka::group_id)]
    pub group_id: String,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub dedup: DedupArgs,
    /// Whether each insert's offset range is recorded in `loader_blocks` before it is
    /// written, so that after a crash the same blocks are inserted again (which servers
    /// with insert deduplication tokens then drop): `auto` records them on those servers.
    #[arg(long, env = "LOADER_BLOCK_LOG", default_value = "auto")]
    pub block_log: Switch,
    /// Address of the Prometheus `/metrics` endpoint, `host:port`; empty: none.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:9102")]
    pub metrics_listen: String,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// The erasure list (compacted), which `loader erase` adds to and `transform` reads.
    #[arg(long, env = "KAFKA_TOPIC_ERASURES", default_value = "webhooks.erasures",
          value_parser = runtime::kafka::topic)]
    pub erasures_topic: String,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of running the service.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Create the database and apply the migrations it has not seen, then exit (the
    /// service also does this at start on a single server).
    Migrate,
    /// Show how the retention settings apply to this server and what they would empty;
    /// with --apply, apply them: column TTLs on servers that have them (the service also
    /// sets those at start), mutations on ClickHouse 18.16 (run it daily there).
    Retention(crate::retention::RetentionCommand),
    /// Erase one person of one tenant everywhere analysts can read it, add them to the
    /// erasure list so no replay or late delivery brings them back, and record it.
    Erase(crate::erase::EraseArgs),
}

/// How long personal texts are kept (days; 0 keeps them for ever).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RetentionArgs {
    /// Raw webhook bodies (`raw_events.payload`, and the field examples cut from them).
    #[arg(long = "retention-raw-payload-days", env = "RETENTION_RAW_PAYLOAD_DAYS",
          default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub raw_payload_days: u32,
    /// Dead-letter payloads (`dead_letters.payload`).
    #[arg(long = "retention-dead-letter-payload-days", env = "RETENTION_DEAD_LETTER_PAYLOAD_DAYS",
          default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub dead_letter_payload_days: u32,
    /// Text messages' text (`messages.text`), counted from the message's day.
    #[arg(long = "retention-message-text-days", env = "RETENTION_MESSAGE_TEXT_DAYS",
          default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub message_text_days: u32,
}

impl RetentionArgs {
    pub fn settings(&self) -> warehouse::retention::Retention {
        warehouse::retention::Retention {
            raw_payload_days: self.raw_payload_days,
            dead_letter_payload_days: self.dead_letter_payload_days,
            message_text_days: self.message_text_days,
        }
    }
}

/// How to reach ClickHouse.
#[derive(clap::Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint.
    #[arg(
        long = "clickhouse-url",
        env = "CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:18123",
        value_parser = http_url
    )]
    pub url: String,
    /// Every server the loader may use, comma-separated http(s) URLs, tried in order
    /// when one cannot be reached (a cluster's replicas); empty: `CLICKHOUSE_URL` only.
    #[arg(
        long = "clickhouse-urls",
        env = "CLICKHOUSE_URLS",
        default_value = "",
        value_parser = http_urls
    )]
    pub urls: HttpUrls,
    /// The ClickHouse cluster (`remote_servers`) the tables live on; empty: one server.
    /// In a cluster the tables are Replicated and Distributed, `loader migrate` applies
    /// the migrations once, and loaders only check the schema version at start.
    #[arg(
        long = "clickhouse-cluster",
        env = "CLICKHOUSE_CLUSTER",
        default_value = "",
        value_parser = cluster_name
    )]
    pub cluster: String,
    /// Database the tables live in; created at start if missing.
    #[arg(
        long = "clickhouse-database",
        env = "CLICKHOUSE_DATABASE",
        default_value = "switchboard",
        value_parser = database_name
    )]
    pub database: String,
    #[arg(
        long = "clickhouse-user",
        env = "CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    #[arg(
        long = "clickhouse-password",
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
    /// Whether the client checks rows against the table schema before inserting:
    /// `auto` turns it on for servers that support it (ClickHouse 24 and later).
    #[arg(
        long = "clickhouse-validation",
        env = "CLICKHOUSE_VALIDATION",
        default_value = "auto"
    )]
    pub validation: Switch,
    /// Compression of inserts on the wire: `none` (cheapest when ClickHouse is on the
    /// same host or network) or `lz4` (for a slow link).
    #[arg(
        long = "clickhouse-compression",
        env = "CLICKHOUSE_COMPRESSION",
        default_value = "none"
    )]
    pub compression: WireCompression,
}

/// Compression of the loader's inserts.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireCompression {
    None,
    Lz4,
}

/// A feature that is on, off, or chosen from what the server supports.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Auto,
    On,
    Off,
}

impl Switch {
    /// Whether the feature is on, given whether the server supports it.
    pub fn resolve(self, supported: bool) -> bool {
        match self {
            Switch::On => true,
            Switch::Off => false,
            Switch::Auto => supported,
        }
    }
}

/// How far back a sender's duplicate is recognized before it is written.
#[derive(clap::Args, Debug, Clone)]
pub struct DedupArgs {
    /// Receipts of the events of this many past seconds are held in memory, so that a
    /// sender's late retry of one of them is not written again (an older one is).
    #[arg(long, env = "LOADER_DEDUP_WINDOW_S", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=30 * 86_400))]
    pub dedup_window_s: u64,
    /// At most this many receipts are held (about 50 bytes each); the oldest go first.
    #[arg(long, env = "LOADER_DEDUP_MAX_EVENTS", default_value_t = 2_000_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1000..))]
    pub dedup_max_events: usize,
}

/// When a batch is written to ClickHouse.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchArgs {
    /// Write once this many events are pending. The row and byte caps bind only while
    /// the loader catches up (at a steady rate the age does): then each block is a part
    /// of every table the server merges later, and larger blocks cost far less merging
    /// (README, "Loader and freshness benchmarks"). While the loader catches up (it reads
    /// records more than the age after Kafka stored them) and no block of the topic is
    /// being written, an eighth of this count (or of the byte size) is enough, and never
    /// fewer than 1,000 events (or 1 MiB).
    #[arg(long, env = "LOADER_BATCH_MAX_ROWS", default_value_t = 50_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub batch_max_rows: usize,
    /// Write once the pending rows take about this many bytes.
    #[arg(long, env = "LOADER_BATCH_MAX_BYTES", default_value_t = 128 * 1024 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=1 << 30))]
    pub batch_max_bytes: usize,
    /// Write once the oldest pending event has waited this long.
    #[arg(long, env = "LOADER_BATCH_MAX_AGE_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub batch_max_age_ms: u64,
}

impl BatchArgs {
    pub fn policy(&self) -> FlushPolicy {
        FlushPolicy {
            max_rows: self.batch_max_rows,
            max_bytes: self.batch_max_bytes,
            max_age: Duration::from_millis(self.batch_max_age_ms),
        }
    }
}

/// A ClickHouse setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0:?} must start with http:// or https://")]
    BadUrl(String),
    #[error("{0:?} is invalid: use [A-Za-z_][A-Za-z0-9_]*, at most 64 characters")]
    BadDatabase(String),
    #[error("{0}")]
    BadCluster(String),
}

/// Reads `CLICKHOUSE_URL`.
pub fn http_url(text: &str) -> Result<String, ConfigError> {
    if text.starts_with("http://") || text.starts_with("https://") {
        Ok(text.to_owned())
    } else {
        Err(ConfigError::BadUrl(text.to_owned()))
    }
}

/// A list of http(s) URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpUrls(pub Vec<String>);

/// Reads `CLICKHOUSE_URLS`.
pub fn http_urls(text: &str) -> Result<HttpUrls, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(http_url)
        .collect::<Result<Vec<_>, _>>()
        .map(HttpUrls)
}

/// Reads `CLICKHOUSE_CLUSTER`: empty, or a cluster name statements can use unquoted.
pub fn cluster_name(text: &str) -> Result<String, ConfigError> {
    warehouse::layout::Layout::from_cluster_setting(text)
        .map(|_| text.to_owned())
        .map_err(|e| ConfigError::BadCluster(e.to_string()))
}

impl ClickHouseArgs {
    /// The servers to use, in order.
    pub fn urls(&self) -> Vec<String> {
        if self.urls.0.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.0.clone()
        }
    }
}

/// Reads `CLICKHOUSE_DATABASE`: a name every statement can use unquoted.
pub fn database_name(text: &str) -> Result<String, ConfigError> {
    if is_valid_database_name(text) {
        Ok(text.to_owned())
    } else {
        Err(ConfigError::BadDatabase(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, String> {
        Config::try_parse_from(std::iter::once(&"loader").chain(args)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_switch_follows_the_server_only_on_auto() {
        assert!(Switch::Auto.resolve(true));
        assert!(!Switch::Auto.resolve(false));
        assert!(Switch::On.resolve(false));
        assert!(!Switch::Off.resolve(true));
    }

    #[test]
    fn names_the_clickhouse_setting_that_is_wrong() {
        let config = parse(&[
            "--clickhouse-url",
            "http://ch:8123",
            "--clickhouse-database",
            "switchboard",
        ])
        .unwrap();
        assert_eq!(config.clickhouse.url, "http://ch:8123");
        assert_eq!(
            http_url("ch:8123"),
            Err(ConfigError::BadUrl("ch:8123".into()))
        );
        assert_eq!(
            database_name("switch-board"),
            Err(ConfigError::BadDatabase("switch-board".into()))
        );
        let error = parse(&["--clickhouse-database", "switch-board"]).unwrap_err();
        assert!(
            error.contains("--clickhouse-database") && error.contains("switch-board"),
            "{error}"
        );
    }

    #[test]
    fn retention_defaults_to_keeping_everything_and_names_a_bad_setting() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.retention.settings(), Default::default());
        let config = parse(&["--retention-message-text-days", "30"]).unwrap();
        assert_eq!(config.retention.message_text_days, 30);
        let error = parse(&["--retention-raw-payload-days=-1"]).unwrap_err();
        assert!(error.contains("--retention-raw-payload-days"), "{error}");
    }

    #[test]
    fn rejects_batch_limits_that_cannot_work() {
        let config = parse(&["--batch-max-rows", "10000", "--batch-max-age-ms", "1000"]).unwrap();
        assert_eq!(config.batch.policy().max_rows, 10_000);
        for (flag, value) in [
            ("--batch-max-rows", "0"),
            ("--batch-max-bytes", "10"),
            ("--batch-max-age-ms", "0"),
        ] {
            let error = parse(&[flag, value]).unwrap_err();
            assert!(error.contains(flag), "{flag}: {error}");
        }
    }
}
