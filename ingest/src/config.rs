//! The `ingest` configuration: flags, each also read from the environment.

use std::collections::HashSet;
use std::str::FromStr;

use runtime::{KafkaArgs, LogArgs, TopicArgs};

use crate::access::{Access, Networks};
use subtle::ConstantTimeEq;

/// Settings of the `ingest` binary.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "ingest",
    version,
    about = "Receives NectarDesk webhooks and writes them durably to Kafka."
)]
pub struct Config {
    /// Address to listen on, `host:port`.
    #[arg(long, env = "INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Accepted URL tokens as `tenant=token` pairs, comma-separated. A tenant may have
    /// several tokens at once, so a token can be rotated without losing deliveries.
    #[arg(long, env = "INGEST_TOKENS", hide_env_values = true)]
    pub tokens: Tokens,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub spool: SpoolArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// HTTP limits and answers.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Largest accepted request body, compressed or not (the limit applies again after
    /// decompression); larger ones are answered 413. Must fit, with the envelope, in
    /// `INGEST_KAFKA_MESSAGE_MAX_BYTES`.
    #[arg(long, env = "INGEST_MAX_BODY_BYTES", default_value_t = 524_288,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..))]
    pub max_body_bytes: usize,
    /// How long to wait for Kafka to acknowledge (acks=all) before answering 503.
    #[arg(long, env = "INGEST_PRODUCE_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub produce_timeout_ms: u64,
    /// The `Retry-After` value sent with every 503.
    #[arg(long, env = "INGEST_RETRY_AFTER_S", default_value_t = 2)]
    pub retry_after_s: u32,
    /// Deepest nesting of arrays and objects ingest reads for the event name and the
    /// entity id (a scalar is 0); a deeper body is still accepted and kept whole, keyed
    /// by its event id.
    #[arg(long, env = "INGEST_MAX_JSON_DEPTH", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=128))]
    pub max_json_depth: usize,
    /// How long the whole body may take to arrive once the headers are in; a slower one
    /// is answered 503 (the sender retries).
    #[arg(long, env = "INGEST_BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub body_timeout_ms: u64,
    /// How long a request's headers may take from their first byte; a slower client's
    /// connection is closed without an answer, which the sender retries (the HTTP
    /// server's own header timeout answers 408, which it would not).
    #[arg(long, env = "INGEST_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub header_timeout_ms: u64,
    /// Largest request head (request line and headers); a larger one is answered 431.
    #[arg(long, env = "INGEST_MAX_HEADER_BYTES", default_value_t = 32_768,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=65_536))]
    pub max_header_bytes: usize,
    /// Deliveries whose body has arrived and that wait to be made durable; more are
    /// answered 503 at once (overload). Bodies still arriving do not count.
    #[arg(long, env = "INGEST_MAX_IN_FLIGHT", default_value_t = 4096,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_in_flight: usize,
    /// Open connections at once; more wait in the listen queue.
    #[arg(long, env = "INGEST_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Memory ingest may use in all. What is left after a fixed part (the program, the
    /// Kafka client, the spool's cache, parsing) and the connections' buffers bounds the
    /// bodies held at once (see README, "Putting ingest on the internet").
    #[arg(long, env = "INGEST_MEMORY_BUDGET_BYTES", default_value_t = 256 << 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(64 << 20..))]
    pub memory_budget_bytes: usize,
    /// The Kafka client's largest record (`message.max.bytes`); the raw topic's
    /// `max.message.bytes` must be as large. A body of `INGEST_MAX_BODY_BYTES` must fit
    /// in it with its envelope.
    #[arg(long, env = "INGEST_KAFKA_MESSAGE_MAX_BYTES", default_value_t = 1_000_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(4096..=1_000_000_000))]
    pub kafka_message_max_bytes: usize,
}

/// Memory outside the body budget that does not grow with the load: the program and its
/// runtime (threads and their stacks, the allocator's own slack), the Kafka clients' own
/// buffers, the spool's page cache (16 MiB), the spool drain's batch (8 MiB, held twice
/// while Kafka takes it) and the dead-letter producer's buffer (16 MiB).
pub const FIXED_MEMORY_BYTES: usize = 128 << 20;
/// The pool for parsing bodies (see [`crate::budget`]).
pub const PARSE_MEMORY_BYTES: usize = 16 << 20;
/// What one open connection may hold in the HTTP library's buffers (a request head up to
/// the limit, the body's read-ahead, the answer).
pub const CONNECTION_MEMORY_BYTES: usize = 128 << 10;
/// What a record adds to its body: the envelope's fields, the Kafka key and headers.
pub const ENVELOPE_OVERHEAD_BYTES: usize = 1024;

impl HttpArgs {
    /// Bytes of the budget left for bodies and their copies.
    pub fn body_memory_bytes(&self) -> usize {
        self.memory_budget_bytes
            .saturating_sub(FIXED_MEMORY_BYTES + PARSE_MEMORY_BYTES)
            .saturating_sub(self.max_connections.saturating_mul(CONNECTION_MEMORY_BYTES))
    }

    /// The memory budget these settings give.
    pub fn budget(&self) -> crate::budget::Budget {
        crate::budget::Budget::new(self.body_memory_bytes(), PARSE_MEMORY_BYTES)
    }

    /// The largest record a delivery can make.
    pub fn largest_record_bytes(&self) -> usize {
        self.max_body_bytes + ENVELOPE_OVERHEAD_BYTES
    }
}

/// Who may deliver.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// Networks allowed to deliver (CIDRs or addresses, comma-separated); empty allows all.
    #[arg(long, env = "INGEST_ALLOWED_CIDRS", default_value = "")]
    pub allowed_cidrs: Networks,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs or addresses); empty trusts none.
    #[arg(long, env = "INGEST_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: Networks,
    /// Refused deliveries recorded per second in the dead-letter topic, each with its whole
    /// body (all are counted).
    #[arg(long, env = "INGEST_RECORD_REJECTIONS_PER_S", default_value_t = 20)]
    pub record_rejections_per_s: u32,
}

/// The local spool that takes deliveries Kafka could not acknowledge in time.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SpoolArgs {
    /// Directory of the spool; unset disables it (then Kafka trouble means 503).
    #[arg(long, env = "INGEST_SPOOL_DIR")]
    pub spool_dir: Option<std::path::PathBuf>,
    /// Size of the spool file; when it has no room, deliveries Kafka cannot take are
    /// answered 503. redb doubles its file as it grows and rounds large entries up, so the
    /// deliveries it holds take a third to a half of this; the file itself may pass it by
    /// a few percent (6% measured at 1 GiB).
    #[arg(long, env = "INGEST_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// Where accepted deliveries go: `kafka` (with the spool as fallback). `spool` and
    /// `discard` exist for the load benchmark only: `discard` keeps nothing.
    #[arg(long, env = "INGEST_SINK", value_enum, default_value = "kafka")]
    pub sink: Sink,
}

/// Where accepted deliveries go.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sink {
    /// Kafka, with the spool (when configured) for what Kafka does not take in time.
    #[default]
    Kafka,
    /// The spool only, never drained (load benchmark).
    Spool,
    /// Nowhere: accepted and forgotten (load benchmark).
    Discard,
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Sink::Kafka => "kafka",
            Sink::Spool => "spool",
            Sink::Discard => "discard",
        };
        f.write_str(name)
    }
}

/// A configuration mistake, reported at start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("INGEST_TOKENS is empty: give at least one tenant=token pair")]
    NoTokens,
    #[error("INGEST_TOKENS entry #{0} is not tenant=token")]
    NotAPair(usize),
    #[error("INGEST_TOKENS tenant {0:?} is invalid: use 1 to 64 of [a-z0-9_-]")]
    BadTenant(String),
    #[error("INGEST_TOKENS token #{0} is too short: use at least 16 characters of [A-Za-z0-9_-]")]
    WeakToken(usize),
    #[error("INGEST_TOKENS token #{0} is listed twice")]
    DuplicateToken(usize),
    #[error("INGEST_SINK=spool needs INGEST_SPOOL_DIR")]
    SpoolSinkWithoutDir,
    #[error("INGEST_MAX_BODY_BYTES={max_body_bytes} does not fit in a Kafka record: with its envelope it needs INGEST_KAFKA_MESSAGE_MAX_BYTES >= {needed} (now {message_max_bytes})")]
    BodyOverMessageSize {
        max_body_bytes: usize,
        needed: usize,
        message_max_bytes: usize,
    },
    #[error("INGEST_MEMORY_BUDGET_BYTES={budget} leaves {left} bytes for bodies, less than {needed} for two bodies of INGEST_MAX_BODY_BYTES with their copies; raise it, or lower INGEST_MAX_CONNECTIONS or INGEST_MAX_BODY_BYTES")]
    MemoryBudgetTooSmall {
        budget: usize,
        left: usize,
        needed: usize,
    },
    #[error("INGEST_SPOOL_MAX_BYTES={max_bytes} cannot hold one delivery of INGEST_MAX_BODY_BYTES (the file needs about {needed} bytes for it)")]
    SpoolTooSmall { max_bytes: u64, needed: u64 },
    #[error(transparent)]
    Kafka(#[from] runtime::kafka::KafkaConfigError),
}

impl Config {
    /// Checks the rules that span several settings (each setting is checked as it is
    /// parsed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let http = &self.http;
        if self.spool.sink == Sink::Spool && self.spool.spool_dir.is_none() {
            return Err(ConfigError::SpoolSinkWithoutDir);
        }
        self.kafka.validate()?;
        // Checked here rather than met at run time: a record Kafka's client refuses as
        // too large would be a 500, which the sender retries to no end.
        if http.largest_record_bytes() > http.kafka_message_max_bytes {
            return Err(ConfigError::BodyOverMessageSize {
                max_body_bytes: http.max_body_bytes,
                needed: http.largest_record_bytes(),
                message_max_bytes: http.kafka_message_max_bytes,
            });
        }
        let needed = 2 * crate::budget::COPIES * http.max_body_bytes;
        if http.body_memory_bytes() < needed {
            return Err(ConfigError::MemoryBudgetTooSmall {
                budget: http.memory_budget_bytes,
                left: http.body_memory_bytes(),
                needed,
            });
        }
        let largest = crate::spool::file_cost(http.largest_record_bytes() as u64);
        if self.spool.spool_dir.is_some()
            && crate::spool::Spool::capacity(self.spool.spool_max_bytes) < largest
        {
            return Err(ConfigError::SpoolTooSmall {
                max_bytes: self.spool.spool_max_bytes,
                needed: 2 * largest,
            });
        }
        Ok(())
    }
}

impl AccessArgs {
    /// The source-address rules.
    pub fn access(&self) -> Access {
        Access {
            allowed: self.allowed_cidrs.0.clone(),
            trusted_proxies: self.trusted_proxies.0.clone(),
        }
    }
}

/// The accepted tokens and the tenant each one belongs to.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    // Tokens are secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenants: Vec<&str> = self.entries.iter().map(|(t, _)| t.as_str()).collect();
        f.debug_struct("Tokens")
            .field("tenants", &tenants)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// The tenant whose token `candidate` is. Every entry is compared in constant time,
    /// so the answer's timing does not tell how much of a guess was right.
    pub fn tenant_for(&self, candidate: &str) -> Option<&str> {
        let mut found = None;
        for (tenant, token) in &self.entries {
            if bool::from(token.as_slice().ct_eq(candidate.as_bytes())) {
                found = Some(tenant.as_str());
            }
        }
        found
    }

    /// The tenants that have at least one token.
    pub fn tenants(&self) -> Vec<&str> {
        let mut tenants: Vec<&str> = self.entries.iter().map(|(t, _)| t.as_str()).collect();
        tenants.dedup();
        tenants
    }
}

impl FromStr for Tokens {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Tokens, ConfigError> {
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        for (i, pair) in text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let n = i + 1;
            let (tenant, token) = pair.split_once('=').ok_or(ConfigError::NotAPair(n))?;
            let (tenant, token) = (tenant.trim(), token.trim());
            let tenant_ok = (1..=64).contains(&tenant.len())
                && tenant.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !tenant_ok {
                return Err(ConfigError::BadTenant(tenant.to_owned()));
            }
            let token_ok = token.len() >= 16
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !token_ok {
                return Err(ConfigError::WeakToken(n));
            }
            if !seen.insert(token.to_owned()) {
                return Err(ConfigError::DuplicateToken(n));
            }
            entries.push((tenant.to_owned(), token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err(ConfigError::NoTokens);
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Tokens { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const A: &str = "tok_acme_0123456789";
    const B: &str = "tok_acme_rotated_99";

    #[test]
    fn maps_each_token_to_its_tenant_and_allows_several_per_tenant() {
        let tokens: Tokens = format!("acme={A}, acme={B},beta=tok_beta_0123456789")
            .parse()
            .unwrap();
        assert_eq!(tokens.tenant_for(A), Some("acme"));
        assert_eq!(tokens.tenant_for(B), Some("acme"));
        assert_eq!(tokens.tenant_for("tok_beta_0123456789"), Some("beta"));
        assert_eq!(tokens.tenant_for("tok_acme_012345678"), None);
        assert_eq!(tokens.tenant_for(""), None);
        assert_eq!(tokens.tenants(), ["acme", "beta"]);
    }

    #[test]
    fn says_which_entry_is_wrong() {
        assert_eq!("".parse::<Tokens>().err(), Some(ConfigError::NoTokens));
        assert_eq!(" , ".parse::<Tokens>().err(), Some(ConfigError::NoTokens));
        assert_eq!(
            format!("acme={A},beta").parse::<Tokens>().err(),
            Some(ConfigError::NotAPair(2))
        );
        assert_eq!(
            format!("Acme={A}").parse::<Tokens>().err(),
            Some(ConfigError::BadTenant("Acme".into()))
        );
        assert_eq!(
            "acme=short".parse::<Tokens>().err(),
            Some(ConfigError::WeakToken(1))
        );
        assert_eq!(
            format!("acme={A},beta={A}").parse::<Tokens>().err(),
            Some(ConfigError::DuplicateToken(2))
        );
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let tokens: Tokens = format!("acme={A}").parse().unwrap();
        let shown = format!("{tokens:?}");
        assert!(shown.contains("acme") && !shown.contains(A), "{shown}");
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let base = ["ingest", "--tokens", "acme=tok_acme_0123456789"];
        Config::try_parse_from(base.iter().chain(args)).map_err(|e| e.to_string())
    }

    #[test]
    fn rejects_limits_that_cannot_work() {
        let config = parse(&["--max-body-bytes", "1048576"]).unwrap();
        assert_eq!(config.http.max_body_bytes, 1_048_576);
        for (flag, value) in [
            ("--max-body-bytes", "10"),
            ("--produce-timeout-ms", "0"),
            ("--max-json-depth", "1"),
            ("--max-in-flight", "0"),
        ] {
            let error = parse(&[flag, value]).unwrap_err();
            assert!(error.contains(flag), "{flag}: {error}");
        }
    }

    #[test]
    fn names_the_network_entry_that_is_wrong() {
        let error = parse(&["--allowed-cidrs", "10.0.0.0/8,10.0.0.0/33"]).unwrap_err();
        assert!(
            error.contains("--allowed-cidrs") && error.contains("\"10.0.0.0/33\""),
            "{error}"
        );
        let config = parse(&["--trusted-proxies", "10.0.0.0/8, ::1"]).unwrap();
        assert_eq!(config.access.access().trusted_proxies.len(), 2);
    }

    #[test]
    fn a_body_limit_over_the_kafka_record_limit_stops_the_start() {
        let config = parse(&["--max-body-bytes", "2000000"]).unwrap();
        let error = config.validate().unwrap_err();
        assert!(matches!(error, ConfigError::BodyOverMessageSize { .. }));
        assert!(
            error.to_string().contains("INGEST_KAFKA_MESSAGE_MAX_BYTES"),
            "{error}"
        );
        let config = parse(&[
            "--max-body-bytes",
            "2000000",
            "--kafka-message-max-bytes",
            "2001024",
        ])
        .unwrap();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(parse(&[]).unwrap().validate(), Ok(()));
    }

    #[test]
    fn a_memory_budget_that_cannot_hold_two_bodies_stops_the_start() {
        // 160 MB leave about 9 MB once the fixed part and the parsing pool are taken: 100
        // connections' buffers take all of it, 10 connections' leave room for two bodies.
        let config = parse(&[
            "--memory-budget-bytes",
            "160000000",
            "--max-connections",
            "100",
        ]);
        let error = config.unwrap().validate().unwrap_err();
        assert!(
            matches!(error, ConfigError::MemoryBudgetTooSmall { .. }),
            "{error}"
        );
        let config = parse(&[
            "--memory-budget-bytes",
            "160000000",
            "--max-connections",
            "10",
        ]);
        assert_eq!(config.unwrap().validate(), Ok(()));
    }

    #[test]
    fn a_spool_that_cannot_hold_one_delivery_stops_the_start() {
        let config = parse(&["--spool-dir", "/tmp/s", "--spool-max-bytes", "1000000"]).unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::SpoolTooSmall { .. })
        ));
        let config = parse(&["--spool-dir", "/tmp/s", "--spool-max-bytes", "4000000"]).unwrap();
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn the_spool_sink_needs_a_spool_directory() {
        let config = parse(&["--sink", "spool"]).unwrap();
        assert_eq!(config.validate(), Err(ConfigError::SpoolSinkWithoutDir));
        assert!(parse(&["--sink", "nowhere"])
            .unwrap_err()
            .contains("--sink"));
        let config = parse(&["--sink", "spool", "--spool-dir", "/tmp/s"]).unwrap();
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn min_insync_replicas_above_the_replication_factor_stops_ingest_at_start() {
        // Both flags are given: the environment of a test run may set either.
        let config = parse(&[
            "--topic-replication",
            "1",
            "--topic-min-insync-replicas",
            "2",
        ])
        .unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Kafka(
                runtime::kafka::KafkaConfigError::MinInsyncAboveReplication { .. }
            ))
        ));
    }
}
