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
    /// Largest accepted request body; larger ones are answered 413. Keep it well under
    /// the topic's `max.message.bytes` (1 MB by default).
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
    /// Deepest JSON nesting accepted; deeper bodies are answered 400.
    #[arg(long, env = "INGEST_MAX_JSON_DEPTH", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=128))]
    pub max_json_depth: usize,
    /// How long a body may take to arrive once the headers are in; a slower one is
    /// answered 503 (the sender retries). Slow headers are for the reverse proxy in front:
    /// the HTTP server's own header timeout would answer 408, which the sender never
    /// retries, so it is off.
    #[arg(long, env = "INGEST_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// Deliveries handled at once; more are answered 503 at once (overload).
    #[arg(long, env = "INGEST_MAX_IN_FLIGHT", default_value_t = 4096,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_in_flight: usize,
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
    /// Refused deliveries recorded per second in the dead-letter topic (all are counted).
    #[arg(long, env = "INGEST_RECORD_REJECTIONS_PER_S", default_value_t = 20)]
    pub record_rejections_per_s: u32,
}

/// The local spool that takes deliveries Kafka could not acknowledge in time.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SpoolArgs {
    /// Directory of the spool; unset disables it (then Kafka trouble means 503).
    #[arg(long, env = "INGEST_SPOOL_DIR")]
    pub spool_dir: Option<std::path::PathBuf>,
    /// Largest spool; when full, deliveries Kafka cannot take are answered 503.
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
    #[error(transparent)]
    Kafka(#[from] runtime::kafka::KafkaConfigError),
}

impl Config {
    /// Checks the rules that span several settings (each setting is checked as it is
    /// parsed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.spool.sink == Sink::Spool && self.spool.spool_dir.is_none() {
            return Err(ConfigError::SpoolSinkWithoutDir);
        }
        self.kafka.validate()?;
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
