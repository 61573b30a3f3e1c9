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
    #[arg(long, env = "LOADER_GROUP_ID", default_value = "switchboard-loader")]
    pub group_id: String,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Whether each insert's offset range is recorded in `loader_blocks` before it is
    /// written, so that after a crash the same blocks are inserted again (which servers
    /// with insert deduplication tokens then drop): `auto` records them on those servers.
    #[arg(long, env = "LOADER_BLOCK_LOG", default_value = "auto")]
    pub block_log: Switch,
    /// Address of the Prometheus `/metrics` endpoint, `host:port`; empty: none.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:9102")]
    pub metrics_listen: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// How to reach ClickHouse.
#[derive(clap::Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint.
    #[arg(
        long = "clickhouse-url",
        env = "CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:18123"
    )]
    pub url: String,
    /// Database the tables live in; created at start if missing.
    #[arg(
        long = "clickhouse-database",
        env = "CLICKHOUSE_DATABASE",
        default_value = "switchboard"
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

/// When a batch is written to ClickHouse.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchArgs {
    /// Write once this many events are pending.
    #[arg(long, env = "LOADER_BATCH_MAX_ROWS", default_value_t = 10_000)]
    pub batch_max_rows: usize,
    /// Write once the pending rows take about this many bytes.
    #[arg(long, env = "LOADER_BATCH_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub batch_max_bytes: usize,
    /// Write once the oldest pending event has waited this long.
    #[arg(long, env = "LOADER_BATCH_MAX_AGE_MS", default_value_t = 1_000)]
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

/// A configuration mistake, reported at start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("LOADER_GROUP_ID must not be empty")]
    EmptyGroup,
    #[error("CLICKHOUSE_URL {0:?} must start with http:// or https://")]
    BadUrl(String),
    #[error(
        "CLICKHOUSE_DATABASE {0:?} is invalid: use [A-Za-z_][A-Za-z0-9_]*, at most 64 characters"
    )]
    BadDatabase(String),
    #[error("LOADER_BATCH_MAX_ROWS must be from 1 to 1000000, got {0}")]
    BadRows(usize),
    #[error("LOADER_BATCH_MAX_BYTES must be from 1024 to 1073741824, got {0}")]
    BadBytes(usize),
    #[error("LOADER_BATCH_MAX_AGE_MS must be from 10 to 600000, got {0}")]
    BadAge(u64),
    #[error(transparent)]
    Kafka(#[from] runtime::kafka::KafkaConfigError),
    #[error(transparent)]
    Log(#[from] runtime::logging::LogConfigError),
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::EmptyGroup);
        }
        self.clickhouse.validate()?;
        self.batch.validate()?;
        self.kafka.validate()?;
        self.log.validate()?;
        self.topics.validate()?;
        Ok(())
    }
}

impl ClickHouseArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(ConfigError::BadUrl(self.url.clone()));
        }
        if !is_valid_database_name(&self.database) {
            return Err(ConfigError::BadDatabase(self.database.clone()));
        }
        Ok(())
    }
}

impl BatchArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1_000_000).contains(&self.batch_max_rows) {
            return Err(ConfigError::BadRows(self.batch_max_rows));
        }
        if !(1024..=1 << 30).contains(&self.batch_max_bytes) {
            return Err(ConfigError::BadBytes(self.batch_max_bytes));
        }
        if !(10..=600_000).contains(&self.batch_max_age_ms) {
            return Err(ConfigError::BadAge(self.batch_max_age_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clickhouse(url: &str, database: &str) -> ClickHouseArgs {
        ClickHouseArgs {
            url: url.into(),
            database: database.into(),
            user: "default".into(),
            password: String::new(),
            validation: Switch::Auto,
            compression: WireCompression::None,
        }
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
        assert_eq!(
            clickhouse("http://ch:8123", "switchboard").validate(),
            Ok(())
        );
        assert_eq!(
            clickhouse("ch:8123", "switchboard").validate(),
            Err(ConfigError::BadUrl("ch:8123".into()))
        );
        assert_eq!(
            clickhouse("http://ch:8123", "switch-board").validate(),
            Err(ConfigError::BadDatabase("switch-board".into()))
        );
    }

    #[test]
    fn rejects_batch_limits_that_cannot_work() {
        let batch = |rows, bytes, age| BatchArgs {
            batch_max_rows: rows,
            batch_max_bytes: bytes,
            batch_max_age_ms: age,
        };
        assert_eq!(batch(10_000, 1 << 24, 1000).validate(), Ok(()));
        assert_eq!(
            batch(0, 1 << 24, 1000).validate(),
            Err(ConfigError::BadRows(0))
        );
        assert_eq!(
            batch(1, 10, 1000).validate(),
            Err(ConfigError::BadBytes(10))
        );
        assert_eq!(batch(1, 1 << 24, 0).validate(), Err(ConfigError::BadAge(0)));
    }
}
