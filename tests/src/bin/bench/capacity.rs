//! `bench capacity`: the highest steady rate the whole pipeline sustains on this
//! machine, everything co-located (ingest, transform, loader, the broker, ClickHouse and
//! the load generator), and where the CPU goes at that rate.
//!
//! A rate passes when, over a window of `duration_s` after a warm-up, every planned
//! call was answered 2xx, the achieved rate is at least 97% of the target, every call
//! became visible in `calls`, and p99 freshness is under the goal (2 s). Each trial
//! runs on a fresh pipeline (new topics, database and processes), and stops early once
//! more than 1% of its calls are known to be late (the verdict is then certain).
//!
//! The search doubles from the start rate until a rate fails, then bisects between the
//! highest passing and the lowest failing rate until they are within the tolerance.
//! Each rate is tried once: on a busy machine a noisy failure makes the answer low,
//! never high.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cpu::{self, Meter, Target, Usage};
use crate::freshness::{self, FreshnessArgs, Trial};
use crate::load::{Load, LoadSpec};
use crate::pipeline::{Pipeline, Stages};
use crate::report::Report;
use crate::util::{self, CallBodies};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct CapacityArgs {
    /// A short search: 15 s windows, 3 s warm-ups, within 25%, at most 6 trials, a 5 s
    /// generator ceiling (each still overridable).
    #[arg(long)]
    quick: bool,
    /// First rate tried, calls/s.
    #[arg(long, default_value_t = 500)]
    start_rate: u32,
    /// Measured window of each trial [default: 60; 15 with --quick].
    #[arg(long)]
    duration_s: Option<u64>,
    /// Warm-up of each trial at its rate [default: 5; 3 with --quick].
    #[arg(long)]
    warmup_s: Option<u64>,
    /// Stop once the lowest failing rate is within this fraction above the highest
    /// passing one [default: 0.10; 0.25 with --quick].
    #[arg(long)]
    tolerance: Option<f64>,
    /// Most trials of the search [default: 10; 6 with --quick].
    #[arg(long)]
    max_trials: Option<usize>,
    /// How long the generator runs flat out against a discarding ingest [default: 15;
    /// 5 with --quick].
    #[arg(long)]
    ceiling_s: Option<u64>,
    /// The freshness goal: p99 under this many ms.
    #[arg(long, default_value_t = 2000)]
    p99_goal_ms: u64,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Requests the load generator keeps in flight at most.
    #[arg(long, default_value_t = 128)]
    connections: usize,
    /// One call in this many is polled for its freshness (every call is checked for
    /// visibility at the end); 1 polls every call, at a cost to ClickHouse.
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    poll_sample: u64,
    /// The Kafka broker's pid [default: read from kafka/kafka.pid of
    /// --dev-services-dir before each trial].
    #[arg(long, env = "BENCH_BROKER_PID")]
    broker_pid: Option<u32>,
    /// The ClickHouse server's pid [default: read from clickhouse/clickhouse.pid of
    /// --dev-services-dir before each trial].
    #[arg(long, env = "BENCH_CLICKHOUSE_PID")]
    clickhouse_pid: Option<u32>,
    /// State directory of `scripts/dev-services` [default: .dev-services of this
    /// repository].
    #[arg(long, env = "BENCH_DEV_SERVICES_DIR")]
    dev_services_dir: Option<PathBuf>,
    /// Where the service binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// The slowest rate tried before giving up, calls/s.
pub(crate) const MIN_RATE: u32 = 50;
/// The achieved rate must reach this share of the target.
const MIN_SENT_SHARE: f64 = 0.97;

/// The rate search (values only; the caller runs the trials).
#[derive(Debug, Clone)]
pub(crate) struct Search {
    start: u32,
    tolerance: f64,
    pass: Option<u32>,
    fail: Option<u32>,
}

impl Search {
    pub(crate) fn new(start: u32, tolerance: f64) -> Search {
        Search {
            start,
            tolerance,
            pass: None,
            fail: None,
        }
    }

    /// The next rate to try, or `None` when the search is done.
    pub(crate) fn next(&self) -> Option<u32> {
        match (self.pass, self.fail) {
            (None, None) => Some(self.start),
            (Some(pass), None) => Some(pass * 2),
            (None, Some(fail)) => Some(fail / 2).filter(|r| *r >= MIN_RATE),
            (Some(pass), Some(fail)) => {
                if f64::from(fail) <= f64::from(pass) * (1.0 + self.tolerance) {
                    return None;
                }
                let mid = round_rate((pass + fail) / 2);
                Some(mid).filter(|m| *m > pass && *m < fail)
            }
        }
    }

    pub(crate) fn record(&mut self, rate: u32, passed: bool) {
        if passed {
            self.pass = self.pass.max(Some(rate));
        } else {
            self.fail = Some(self.fail.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The highest rate that passed.
    pub(crate) fn found(&self) -> Option<u32> {
        self.pass
    }
}

/// Rates in round steps: 10/s under 1,000, 50/s above.
fn round_rate(rate: u32) -> u32 {
    let step = if rate >= 1000 { 50 } else { 10 };
    (rate + step / 2) / step * step
}

/// Whether a trial sustained its rate; `Err` says why not.
pub(crate) fn verdict(trial: &Trial, goal: Duration) -> Result<(), String> {
    let outcome = &trial.outcome;
    if let Some(at) = outcome.stopped_after {
        return Err(format!(
            "stopped after {:.0} s: over 1% of calls past {} ms",
            at.as_secs_f64(),
            goal.as_millis()
        ));
    }
    if outcome.unsent > 0 {
        return Err(format!(
            "{} calls not sent in time (answer p99 {} ms)",
            outcome.unsent,
            freshness::ms(outcome.answer_quantile(0.99))
        ));
    }
    if let Some(detail) = outcome.errors_detail() {
        return Err(detail);
    }
    if outcome.answered_per_s < f64::from(trial.rate) * MIN_SENT_SHARE {
        return Err(format!(
            "only {:.0} calls/s answered",
            outcome.answered_per_s
        ));
    }
    let fresh = outcome.freshness.clone().unwrap_or_default();
    if fresh.not_visible() > 0 {
        return Err(format!("{} calls never visible", fresh.not_visible()));
    }
    match fresh.quantile(0.99) {
        Some(p99) if p99 < goal => Ok(()),
        p99 => Err(format!("p99 {} ms", freshness::ms(p99))),
    }
}

/// The machine counts as full from this share of all its cores.
pub(crate) const MACHINE_FULL: f64 = 0.85;
/// A process counts as saturated from this share of what it can use.
pub(crate) const SATURATED: f64 = 0.80;

/// The bottleneck at a rate, by this rule: when the machine is at least 85% busy (all
/// processes, ours and others'), it is the cores themselves; otherwise the process
/// nearest its own ceiling, if that is at least 80%, where a process's use of its
/// ceiling is the larger of its CPU over all cores and its busiest thread over one core
/// (a thread at 100% is a serial limit that idle cores cannot lift); otherwise nothing
/// on CPU is near a limit and the limit is latency (flush ages, batching, polling).
pub(crate) fn bottleneck(window: &cpu::Window) -> String {
    let all = window.cores * 100.0;
    if window.machine_pct >= MACHINE_FULL * all {
        let largest = window
            .usages
            .iter()
            .max_by(|a, b| a.cpu_pct.total_cmp(&b.cpu_pct));
        let largest = largest.map_or(String::new(), |u| {
            format!("; largest share: {} {:.0}%", u.name, u.cpu_pct)
        });
        return format!(
            "the {:.0} cores: the machine was {:.0}% busy of {all:.0}% (others' processes \
             {:.0}%){largest}",
            window.cores,
            window.machine_pct,
            window.others_pct()
        );
    }
    let use_of_ceiling = |u: &Usage| (u.cpu_pct / all).max(u.busiest_thread_pct / 100.0);
    let Some(nearest) = window
        .usages
        .iter()
        .max_by(|a, b| use_of_ceiling(a).total_cmp(&use_of_ceiling(b)))
    else {
        return "unknown: nothing measured".into();
    };
    let share = use_of_ceiling(nearest);
    if share < SATURATED {
        return format!(
            "none on CPU: the nearest to its limit is {} at {:.0}%, the machine at {:.0}% \
             of {all:.0}%; the limit is latency (batching, flush ages, polling)",
            nearest.name,
            share * 100.0,
            window.machine_pct
        );
    }
    if nearest.busiest_thread_pct / 100.0 >= nearest.cpu_pct / all {
        format!(
            "{}: its busiest thread at {:.0}% of a core (a serial limit)",
            nearest.name, nearest.busiest_thread_pct
        )
    } else {
        format!("{}: {:.0}% of {all:.0}%", nearest.name, nearest.cpu_pct)
    }
}

/// The generator flat out against ingest with `INGEST_SINK=discard`.
pub(crate) struct Ceiling {
    pub(crate) per_s: f64,
    pub(crate) errors: u64,
    pub(crate) seconds: u64,
    pub(crate) cpu: cpu::Window,
}

async fn ceiling(args: &CapacityArgs, seconds: u64) -> anyhow::Result<Ceiling> {
    let bins = util::bin_dir(&args.bin_dir)?;
    let bodies = CallBodies::new(&util::call_template()?);
    let pipeline = Pipeline::start(&bins, 1, Stages::DiscardingIngest).await?;
    let spec = LoadSpec {
        rate: None,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(seconds),
        connections: args.connections,
        freshness: None,
    };
    let load = Load::start(spec, &pipeline.hook, bodies);
    load.warmed_up().await;
    let mut targets = pipeline.cpu_targets();
    targets.extend(freshness::generator_targets(None));
    let meter = Meter::start(targets);
    load.window_over().await;
    let cpu = meter.finish();
    let outcome = load.finish().await;
    pipeline.stop().await;
    Ok(Ceiling {
        per_s: outcome.answered_per_s,
        errors: outcome.errors,
        seconds,
        cpu,
    })
}

/// The broker and ClickHouse as CPU targets. Pids not given are read from the
/// dev-services state again each time: a fault test on a shared machine may have
/// restarted a service since the last trial (one being restarted gets 30 s).
async fn shared_services(args: &CapacityArgs) -> anyhow::Result<Vec<Target>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match shared_services_now(args) {
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            result => return result,
        }
    }
}

fn shared_services_now(args: &CapacityArgs) -> anyhow::Result<Vec<Target>> {
    let dir = args
        .dev_services_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.dev-services"));
    let pid = |given: Option<u32>, service: &str, flag: &str| -> anyhow::Result<u32> {
        let pid = match given {
            Some(pid) => pid,
            None => {
                let file = dir.join(service).join(format!("{service}.pid"));
                std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .with_context(|| {
                        format!(
                            "no {service} pid in {}: pass {flag} or --dev-services-dir",
                            file.display()
                        )
                    })?
            }
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("{service} pid {pid} is not running: pass {flag} or --dev-services-dir");
        }
        Ok(pid)
    };
    Ok(vec![
        Target::process(
            "kafka broker",
            pid(args.broker_pid, "kafka", "--broker-pid")?,
        ),
        Target::process(
            "clickhouse",
            pid(args.clickhouse_pid, "clickhouse", "--clickhouse-pid")?,
        ),
    ])
}

pub(crate) async fn capacity(args: &CapacityArgs) -> anyhow::Result<()> {
    fn pick<T>(quick: bool, normal: T, short: T) -> T {
        if quick {
            short
        } else {
            normal
        }
    }
    let q = args.quick;
    let duration_s = args.duration_s.unwrap_or(pick(q, 60, 15));
    let warmup_s = args.warmup_s.unwrap_or(pick(q, 5, 3));
    let tolerance = args.tolerance.unwrap_or(pick(q, 0.10, 0.25));
    let max_trials = args.max_trials.unwrap_or(pick(q, 10, 6));
    let ceiling_s = args.ceiling_s.unwrap_or(pick(q, 15, 5));
    let goal = Duration::from_millis(args.p99_goal_ms);
    // The shared services and the machine with nothing of ours running, for comparison.
    let rest = Meter::start(shared_services(args).await?);
    tokio::time::sleep(Duration::from_secs(warmup_s)).await;
    let rest = rest.finish();

    let mut search = Search::new(args.start_rate, tolerance);
    let mut trials: Vec<(Trial, Result<(), String>)> = Vec::new();
    eprintln!("{}  result", freshness::HEADER);
    while let Some(rate) = search.next().filter(|_| trials.len() < max_trials) {
        let trial_args = FreshnessArgs {
            rate,
            duration_s,
            warmup_s,
            partitions: args.partitions,
            connections: args.connections,
            poll_sample: args.poll_sample,
            bin_dir: args.bin_dir.clone(),
        };
        let extra = shared_services(args).await?;
        let trial = freshness::trial(&trial_args, goal, true, &extra).await?;
        let result = verdict(&trial, goal);
        eprintln!("{trial}  {}", result.as_ref().err().map_or("pass", |e| e));
        search.record(rate, result.is_ok());
        trials.push((trial, result));
    }
    let ceiling = ceiling(args, ceiling_s).await?;
    Report {
        duration_s,
        goal,
        partitions: args.partitions,
        trials: &trials,
        found: search.found(),
        rest: &rest,
        ceiling: &ceiling,
    }
    .print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a pipeline that sustains up to `limit` calls/s.
    fn run(start: u32, tolerance: f64, limit: u32) -> (Option<u32>, Vec<u32>) {
        let mut search = Search::new(start, tolerance);
        let mut tried = Vec::new();
        while let Some(rate) = search.next() {
            tried.push(rate);
            search.record(rate, rate <= limit);
            assert!(tried.len() < 30, "the search ends: {tried:?}");
        }
        (search.found(), tried)
    }

    #[test]
    fn doubles_until_a_failure_then_bisects_to_within_the_tolerance() {
        let (found, tried) = run(500, 0.10, 2_900);
        assert_eq!(tried, vec![500, 1000, 2000, 4000, 3000, 2500, 2750]);
        assert_eq!(found, Some(2750));
    }

    #[test]
    fn halves_from_the_start_when_the_start_rate_fails() {
        let (found, tried) = run(500, 0.10, 300);
        assert_eq!(tried, vec![500, 250, 380, 320, 290, 310]);
        assert_eq!(found, Some(290));
    }

    #[test]
    fn gives_up_below_the_slowest_rate() {
        assert_eq!(run(500, 0.10, 10), (None, vec![500, 250, 125, 62]));
    }

    #[test]
    fn a_wider_tolerance_stops_sooner() {
        let (found, tried) = run(500, 0.25, 2_900);
        assert_eq!(tried, vec![500, 1000, 2000, 4000, 3000, 2500]);
        assert_eq!(found, Some(2500));
    }

    fn window(machine_pct: f64, usages: &[(&str, f64, f64)]) -> cpu::Window {
        cpu::Window {
            seconds: 60.0,
            cores: 2.0,
            machine_pct,
            usages: usages
                .iter()
                .map(|(name, cpu_pct, busiest_thread_pct)| Usage {
                    name: (*name).into(),
                    cpu_pct: *cpu_pct,
                    busiest_thread_pct: *busiest_thread_pct,
                    gone: false,
                })
                .collect(),
        }
    }

    #[test]
    fn a_busy_machine_makes_the_cores_the_bottleneck() {
        let w = window(190.0, &[("loader", 60.0, 40.0), ("clickhouse", 70.0, 30.0)]);
        let b = bottleneck(&w);
        assert!(b.starts_with("the 2 cores"), "{b}");
        assert!(b.contains("largest share: clickhouse 70%"), "{b}");
        assert!(b.contains("others' processes 60%"), "{b}");
    }

    #[test]
    fn a_thread_at_a_full_core_is_a_serial_limit() {
        let w = window(120.0, &[("loader", 95.0, 92.0), ("clickhouse", 20.0, 10.0)]);
        assert_eq!(
            bottleneck(&w),
            "loader: its busiest thread at 92% of a core (a serial limit)"
        );
    }

    #[test]
    fn a_process_using_most_of_all_cores_is_the_bottleneck() {
        let w = window(168.0, &[("clickhouse", 165.0, 45.0), ("loader", 3.0, 2.0)]);
        assert_eq!(bottleneck(&w), "clickhouse: 165% of 200%");
    }

    #[test]
    fn nothing_near_a_limit_means_latency() {
        let w = window(60.0, &[("loader", 30.0, 20.0), ("ingest", 20.0, 10.0)]);
        assert!(bottleneck(&w).starts_with("none on CPU"));
    }
}
