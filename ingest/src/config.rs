//! The `ingest` configuration: flags, each also read from the environment.

use std::collections::HashSet;
use std::str::FromStr;

use runtime::{KafkaArgs, LogArgs, TopicArgs};
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
    #[arg(long, env = "INGEST_MAX_BODY_BYTES", default_value_t = 524_288)]
    pub max_body_bytes: usize,
    /// How long to wait for Kafka to acknowledge (acks=all) before answering 503.
    #[arg(long, env = "INGEST_PRODUCE_TIMEOUT_MS", default_value_t = 5_000)]
    pub produce_timeout_ms: u64,
    /// The `Retry-After` value sent with every 503.
    #[arg(long, env = "INGEST_RETRY_AFTER_S", default_value_t = 2)]
    pub retry_after_s: u32,
    /// Deepest JSON nesting accepted; deeper bodies are answered 400.
    #[arg(long, env = "INGEST_MAX_JSON_DEPTH", default_value_t = 64)]
    pub max_json_depth: usize,
    /// How long a body may take to arrive once the headers are in; a slower one is
    /// answered 503 (the sender retries). Slow headers are for the reverse proxy in front:
    /// the HTTP server's own header timeout would answer 408, which the sender never
    /// retries, so it is off.
    #[arg(long, env = "INGEST_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// Deliveries handled at once; more are answered 503 at once (overload).
    #[arg(long, env = "INGEST_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
}

/// Who may deliver.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// Networks allowed to deliver (CIDRs or addresses, comma-separated); empty allows all.
    #[arg(long, env = "INGEST_ALLOWED_CIDRS", default_value = "")]
    pub allowed_cidrs: String,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs or addresses); empty trusts none.
    #[arg(long, env = "INGEST_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
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
    #[arg(long, env = "INGEST_SINK", default_value = "kafka", value_parser = ["kafka", "spool", "discard"])]
    pub sink: String,
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
    #[error("INGEST_MAX_BODY_BYTES must be at least 1024, got {0}")]
    BodyLimitTooSmall(usize),
    #[error("INGEST_PRODUCE_TIMEOUT_MS must be from 100 to 300000, got {0}")]
    BadProduceTimeout(u64),
    #[error("{0} entry {1:?} is not a CIDR (like 10.0.0.0/8) or an address")]
    BadNetwork(&'static str, String),
    #[error("INGEST_MAX_JSON_DEPTH must be from 2 to 128, got {0}")]
    BadDepth(usize),
    #[error("INGEST_MAX_IN_FLIGHT must be at least 1, got {0}")]
    BadInFlight(usize),
    #[error("INGEST_SINK=spool needs INGEST_SPOOL_DIR")]
    SpoolSinkWithoutDir,
    #[error(transparent)]
    Kafka(#[from] runtime::kafka::KafkaConfigError),
    #[error(transparent)]
    Log(#[from] runtime::logging::LogConfigError),
}

impl Config {
    /// Checks everything that can be checked before binding a port.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.validate()?;
        self.access.access()?;
        if self.spool.sink == "spool" && self.spool.spool_dir.is_none() {
            return Err(ConfigError::SpoolSinkWithoutDir);
        }
        self.kafka.validate()?;
        self.log.validate()?;
        self.topics.validate()?;
        Ok(())
    }
}

impl HttpArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::BodyLimitTooSmall(self.max_body_bytes));
        }
        if !(100..=300_000).contains(&self.produce_timeout_ms) {
            return Err(ConfigError::BadProduceTimeout(self.produce_timeout_ms));
        }
        if !(2..=128).contains(&self.max_json_depth) {
            return Err(ConfigError::BadDepth(self.max_json_depth));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::BadInFlight(0));
        }
        Ok(())
    }
}

impl AccessArgs {
    /// The parsed rules; names the entry that is not a network.
    pub fn access(&self) -> Result<crate::access::Access, ConfigError> {
        use crate::access::parse_networks;
        Ok(crate::access::Access {
            allowed: parse_networks(&self.allowed_cidrs)
                .map_err(|e| ConfigError::BadNetwork("INGEST_ALLOWED_CIDRS", e))?,
            trusted_proxies: parse_networks(&self.trusted_proxies)
                .map_err(|e| ConfigError::BadNetwork("INGEST_TRUSTED_PROXIES", e))?,
        })
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

    #[test]
    fn rejects_limits_that_cannot_work() {
        let http = |max_body_bytes, produce_timeout_ms| HttpArgs {
            max_body_bytes,
            produce_timeout_ms,
            retry_after_s: 2,
            max_json_depth: 64,
            body_timeout_ms: 10_000,
            max_in_flight: 16,
        };
        assert_eq!(http(1_048_576, 5_000).validate(), Ok(()));
        assert_eq!(
            http(10, 5_000).validate(),
            Err(ConfigError::BodyLimitTooSmall(10))
        );
        assert_eq!(
            http(4096, 0).validate(),
            Err(ConfigError::BadProduceTimeout(0))
        );
    }
}
