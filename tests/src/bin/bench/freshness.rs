//! `bench freshness`: ingest, transform and loader processes take new calls at a steady
//! rate; the delay from each 200 answer to the call being visible in `calls` is
//! measured, and the loader's insert statements per second per table are read from its
//! `/metrics` (`loader_inserts_total{table}` deltas over the window). [`trial`] is one
//! such run, also the step of the capacity search.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use warehouse::Table;

use crate::cpu::{self, Meter, Target};
use crate::load::{FreshnessSpec, Load, LoadSpec, Outcome};
use crate::pipeline::{Pipeline, Stages};
use crate::util::{self, CallBodies};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct FreshnessArgs {
    /// Calls sent per second.
    #[arg(long, default_value_t = 1000)]
    pub(crate) rate: u32,
    /// Length of the measured window.
    #[arg(long, default_value_t = 30)]
    pub(crate) duration_s: u64,
    /// Seconds at the same rate before the window (sent, not measured).
    #[arg(long, default_value_t = 5)]
    pub(crate) warmup_s: u64,
    #[arg(long, default_value_t = 3)]
    pub(crate) partitions: i32,
    /// Requests the load generator keeps in flight at most.
    #[arg(long, default_value_t = 128)]
    pub(crate) connections: usize,
    /// One call in this many is polled for its freshness (every call is checked for
    /// visibility at the end); 1 polls every call, at a cost to ClickHouse.
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) poll_sample: u64,
    /// Where the service binaries are (default: beside this one).
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
}

/// One run at a steady rate on a fresh pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Trial {
    pub(crate) rate: u32,
    pub(crate) partitions: i32,
    /// One call in this many was polled for its freshness.
    pub(crate) poll_sample: u64,
    pub(crate) outcome: Outcome,
    pub(crate) inserts: InsertRates,
    /// CPU over the window: the services, then `extra` targets, the load generator and
    /// the poller.
    pub(crate) cpu: cpu::Window,
}

/// Insert statements per second, by storage table, over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct InsertRates(pub(crate) Vec<(Table, f64)>);

impl InsertRates {
    /// Rates from two scrapes of the loader's counters `seconds` apart.
    pub(crate) fn between(
        before: &HashMap<String, f64>,
        after: &HashMap<String, f64>,
        seconds: f64,
    ) -> InsertRates {
        let rate = |table: Table| {
            let key = format!(
                "{}{{table=\"{}\"}}",
                loader::metrics::INSERTS_TOTAL,
                table.name()
            );
            let delta =
                after.get(&key).copied().unwrap_or(0.0) - before.get(&key).copied().unwrap_or(0.0);
            delta.max(0.0) / seconds.max(1e-3)
        };
        InsertRates(Table::ALL.iter().map(|t| (*t, rate(*t))).collect())
    }

    /// The rate of one table.
    pub(crate) fn of(&self, table: Table) -> f64 {
        self.0
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0.0, |(_, r)| *r)
    }

    /// The tables a call-ended event writes to (raw, call, contact), then the other
    /// three together (0 for a load of calls).
    pub(crate) fn columns(&self) -> [f64; 4] {
        let shown = [Table::RawEvents, Table::CallEvents, Table::ContactEvents];
        let other = self
            .0
            .iter()
            .filter(|(t, _)| !shown.contains(t))
            .map(|(_, r)| r)
            .sum();
        [
            self.of(Table::RawEvents),
            self.of(Table::CallEvents),
            self.of(Table::ContactEvents),
            other,
        ]
    }
}

/// Starts a pipeline with `partitions`, sends at `rate` for the warm-up and the window,
/// measures freshness, inserts/s and CPU over the window, and cleans up. With
/// `stop_when_missed`, stops as soon as a p99 under `limit` is out of reach.
pub(crate) async fn trial(
    args: &FreshnessArgs,
    limit: Duration,
    stop_when_missed: bool,
    extra: &[Target],
) -> anyhow::Result<Trial> {
    let bins = util::bin_dir(&args.bin_dir)?;
    // Everything that may fail comes before the pipeline, which is stopped whatever
    // happens after it started.
    let bodies = CallBodies::new(&util::call_template()?);
    let pipeline = Pipeline::start(&bins, args.partitions, Stages::All).await?;
    let spec = LoadSpec {
        rate: Some(args.rate),
        warmup: Duration::from_secs(args.warmup_s),
        duration: Duration::from_secs(args.duration_s),
        connections: args.connections,
        freshness: Some(FreshnessSpec {
            clickhouse_url: pipeline.clickhouse.url().to_owned(),
            database: pipeline.clickhouse.database.clone(),
            limit,
            stop_when_missed,
            sample: args.poll_sample,
        }),
    };
    let load = Load::start(spec, &pipeline.hook, bodies);
    load.warmed_up().await;
    let mut targets = pipeline.cpu_targets();
    targets.extend_from_slice(extra);
    targets.extend(generator_targets(load.poller_tid));
    let before = pipeline.loader_counters().await;
    let meter = Meter::start(targets);
    load.window_over().await;
    let cpu = meter.finish();
    let after = pipeline.loader_counters().await;
    let inserts = InsertRates::between(&before, &after, cpu.seconds);
    let outcome = load.finish().await;
    pipeline.stop().await;
    Ok(Trial {
        rate: args.rate,
        partitions: args.partitions,
        poll_sample: args.poll_sample,
        outcome,
        inserts,
        cpu,
    })
}

/// This process as two targets: the load generator (every thread but the poller's)
/// and the poller.
pub(crate) fn generator_targets(poller_tid: Option<u32>) -> Vec<Target> {
    let pid = std::process::id();
    let mut generator = Target::process("load generator", pid);
    generator.without_tid = poller_tid;
    let mut targets = vec![generator];
    if let Some(tid) = poller_tid {
        let mut poller = Target::process("freshness poller", pid);
        poller.only_tid = Some(tid);
        targets.push(poller);
    }
    targets
}

/// Inserts/s columns: the raw, call and contact storage tables, and the other three
/// together.
pub(crate) const HEADER: &str = "  target/s  sent/s  partitions  p50 ms  p99 ms  max ms  \
     not visible  errors  answer p99 ms  inserts/s: raw   calls  contacts  other";

/// A quantile in ms, or `-` when it falls among calls never seen.
pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| d.as_millis().to_string())
}

impl std::fmt::Display for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fresh = self.outcome.freshness.clone().unwrap_or_default();
        let [raw, calls, contacts, other] = self.inserts.columns();
        write!(
            f,
            "{:>10}  {:>6.0}  {:>10}  {:>6}  {:>6}  {:>6}  {:>11}  {:>6}  {:>13}  {:>14.1}  {:>6.1}  {:>8.1}  {:>5.1}",
            self.rate,
            self.outcome.answered_per_s,
            self.partitions,
            ms(fresh.quantile(0.5)),
            ms(fresh.quantile(0.99)),
            ms(fresh.quantile(1.0)),
            fresh.not_visible(),
            self.outcome.errors,
            ms(self.outcome.answer_quantile(0.99)),
            raw,
            calls,
            contacts,
            other,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_rates_are_counter_deltas_per_second_by_table() {
        let series = |raw: f64, calls: f64, dead: f64| {
            let key = |metric: &str, table: Table| format!("{metric}{{table=\"{table}\"}}");
            let inserts = "loader_inserts_total";
            HashMap::from([
                (key(inserts, Table::RawEvents), raw),
                (key(inserts, Table::CallEvents), calls),
                (key(inserts, Table::DeadLetters), dead),
                (key("loader_rows_written_total", Table::RawEvents), 9e9),
            ])
        };
        let rates = InsertRates::between(&series(10.0, 10.0, 0.0), &series(40.0, 25.0, 2.0), 10.0);
        assert_eq!(rates.of(Table::RawEvents), 3.0);
        assert_eq!(rates.columns(), [3.0, 1.5, 0.0, 0.2]);
    }
}
