//! Small pieces every benchmark shares: where the binaries are, what happens to the
//! services' logs, call bodies, and spreads of repeated measurements.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use runtime::KafkaArgs;
use serde_json::Value;

pub(crate) const TENANT: &str = "bench";
pub(crate) const TOKEN: &str = "bench_token_0123456789";

/// The services' log filter: `BENCH_LOG` (their logs are then kept), else `warn`.
pub(crate) fn log_filter() -> String {
    std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into())
}

pub(crate) fn keep_or_remove(run_dir: &Path) {
    if std::env::var("BENCH_LOG").is_ok() {
        eprintln!("logs kept in {}", run_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(run_dir);
    }
}

pub(crate) fn bin_dir(arg: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match arg {
        Some(dir) => Ok(dir.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("no directory")?
            .to_path_buf()),
    }
}

/// Deletes a run's topics (those never created are reported missing: nothing to do).
pub(crate) async fn delete_topics(brokers: &str, topics: &[String]) {
    let kafka = KafkaArgs {
        brokers: brokers.to_owned(),
        topic_partitions: 1,
        topic_replication: 1,
        topic_min_insync_replicas: 1,
        raw_retention_ms: -1,
    };
    if let Ok(admin) = kafka
        .client_config()
        .create::<AdminClient<DefaultClientContext>>()
    {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let _ = admin.delete_topics(&names, &options).await;
    }
}

/// The call-ended sample as a JSON value.
pub(crate) fn call_template() -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&::tests::sample(
        "call-ended-full.json",
    ))?)
}

/// A call body with id `id`, padded with `pad` bytes of notes.
pub(crate) fn call_body(template: &Value, id: i64, pad: usize) -> Value {
    let mut body = template.clone();
    body["id"] = Value::from(id);
    if pad > 0 {
        body["notes"] = Value::from("n".repeat(pad));
    }
    body
}

/// The call sample split around its id, so the load generator writes a body by
/// concatenation instead of building and serialising a JSON value per request.
#[derive(Debug, Clone)]
pub(crate) struct CallBodies {
    before_id: String,
    after_id: String,
}

impl CallBodies {
    pub(crate) fn new(template: &Value) -> CallBodies {
        const MARK: i64 = 987_654_321_987;
        let text = call_body(template, MARK, 0).to_string();
        let (before, after) = text
            .split_once(&MARK.to_string())
            .expect("the id appears in the body");
        CallBodies {
            before_id: before.to_owned(),
            after_id: after.to_owned(),
        }
    }

    pub(crate) fn body(&self, id: u64) -> String {
        format!("{}{id}{}", self.before_id, self.after_id)
    }
}

/// Lowest, median and highest of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// The spread of `values` (at least one); the median of an even count is the mean
    /// of the middle two.
    pub(crate) fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            min: v[0],
            median,
            max: v[n - 1],
        }
    }

    /// `median (min–max)` with `decimals` digits; the median alone for one value.
    pub(crate) fn show(&self, decimals: usize) -> String {
        if self.min == self.max {
            format!("{:.decimals$}", self.median)
        } else {
            format!(
                "{:.decimals$} ({:.decimals$}–{:.decimals$})",
                self.median, self.min, self.max
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_concatenation_equal_the_json_built_ones() {
        let template = call_template().unwrap();
        let bodies = CallBodies::new(&template);
        let built: Value = serde_json::from_str(&bodies.body(20_000_042)).unwrap();
        assert_eq!(built, call_body(&template, 20_000_042, 0));
    }

    #[test]
    fn spread_of_three_runs_is_their_min_median_and_max() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(s.show(0), "2 (1–3)");
        assert_eq!(Spread::of(&[5.0]).show(1), "5.0");
        assert_eq!(Spread::of(&[1.0, 4.0]).median, 2.5);
    }
}
