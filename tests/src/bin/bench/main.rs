//! `bench`: loader throughput and end-to-end freshness, measured on this machine against
//! the development broker and server (run it with `scripts/bench-pipeline`).
//!
//! - `bench loader` ([`loader`]): a loader process from a pre-filled normalized topic,
//!   beside `clickhouse-client` inserting the same rows in bulk; `--runs` repeats it.
//! - `bench freshness`: runs ingest, transform and loader processes, sends a new call
//!   at a steady rate, and measures the delay from each 200 answer to the call being
//!   visible in the `calls` view (polled every 100 ms, which bounds the resolution).
//! - `bench matrix`: both, across event sizes and partition counts, as one table.

mod loader;
mod util;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use serde_json::Value;
use tests::procs::Procs;
use tests::{sample, single_broker_env, unique, ClickHouse, Services};

use crate::loader::{LoaderArgs, LoaderResult};
use crate::util::{bin_dir, call_body, keep_or_remove, log_filter, TENANT, TOKEN};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Loader throughput and end-to-end freshness benchmarks."
)]
enum Cli {
    /// Loader events/s from a pre-filled normalized topic, beside clickhouse-client bulk.
    Loader(LoaderArgs),
    /// Delay from the 200 answer to visibility in `calls` at a steady rate.
    Freshness(FreshnessArgs),
    /// Both, across event sizes and partition counts.
    Matrix {
        /// Where the service binaries are (default: beside this one).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct FreshnessArgs {
    /// Calls sent per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Loader(args) => {
            let r = loader::loader(&args).await?;
            println!("{}", LoaderResult::HEADER);
            println!("{r}");
        }
        Cli::Freshness(args) => {
            let r = freshness(&args).await?;
            println!("{}", FreshnessResult::HEADER);
            println!("{r}");
        }
        Cli::Matrix { bin_dir } => matrix(bin_dir).await?,
    }
    Ok(())
}

async fn matrix(bin_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let loader_runs = [
        (100_000, 0, 3),
        (50_000, 4_000, 3),
        (20_000, 16_000, 3),
        (100_000, 0, 1),
        (100_000, 0, 6),
    ];
    let mut lines = Vec::new();
    for (events, pad_bytes, partitions) in loader_runs {
        let args = LoaderArgs {
            events,
            pad_bytes,
            partitions,
            runs: 3,
            bin_dir: bin_dir.clone(),
        };
        let r = loader::loader(&args).await?;
        eprintln!("{r}");
        lines.push(r.to_string());
    }
    let mut fresh = Vec::new();
    for partitions in [3, 1, 6] {
        let args = FreshnessArgs {
            rate: 1000,
            duration_s: 30,
            partitions,
            bin_dir: bin_dir.clone(),
        };
        let r = freshness(&args).await?;
        eprintln!("{r}");
        fresh.push(r.to_string());
    }
    println!(
        "\nloader (median of 3 runs, lowest–highest in brackets; events carry 3 rows: raw, \
         call and contact)"
    );
    println!("{}", LoaderResult::HEADER);
    for line in lines {
        println!("{line}");
    }
    println!("\nfreshness (200 answer → visible in `calls`; polled every 100 ms)");
    println!("{}", FreshnessResult::HEADER);
    for line in fresh {
        println!("{line}");
    }
    Ok(())
}

// --- Freshness ----------------------------------------------------------------------

struct FreshnessResult {
    rate: u32,
    sent_per_s: f64,
    partitions: i32,
    p50: Duration,
    p99: Duration,
    max: Duration,
    unseen: usize,
}

impl FreshnessResult {
    const HEADER: &'static str =
        "  target/s  sent/s  partitions  p50 ms  p99 ms  max ms  not visible";
}

impl std::fmt::Display for FreshnessResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>10}  {:>6.0}  {:>10}  {:>6}  {:>6}  {:>6}  {:>11}",
            self.rate,
            self.sent_per_s,
            self.partitions,
            self.p50.as_millis(),
            self.p99.as_millis(),
            self.max.as_millis(),
            self.unseen
        )
    }
}

async fn freshness(args: &FreshnessArgs) -> anyhow::Result<FreshnessResult> {
    let services = Services::require().await;
    let name = unique("fresh");
    let database = format!("sb_{name}");
    let run_dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&run_dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut common = vec![
        ("KAFKA_BROKERS", services.kafka_brokers.clone()),
        ("KAFKA_TOPIC_RAW", format!("{name}.raw")),
        ("KAFKA_TOPIC_NORMALIZED", format!("{name}.normalized")),
        ("KAFKA_TOPIC_DLQ", format!("{name}.dlq")),
        ("KAFKA_TOPIC_PARTITIONS", args.partitions.to_string()),
        ("METRICS_LISTEN", String::new()),
        ("RUST_LOG", log_filter()),
    ];
    common.extend(single_broker_env());
    let bins = bin_dir(&args.bin_dir)?;
    let mut procs = Procs::default();
    procs.add(
        "ingest",
        &bins,
        &run_dir,
        &common,
        &[
            ("INGEST_LISTEN", format!("127.0.0.1:{port}")),
            ("INGEST_TOKENS", format!("{TENANT}={TOKEN}")),
        ],
    )?;
    procs.add(
        "transform",
        &bins,
        &run_dir,
        &common,
        &[("TRANSFORM_GROUP_ID", format!("{name}-t"))],
    )?;
    procs.add(
        "loader",
        &bins,
        &run_dir,
        &common,
        &[
            ("LOADER_GROUP_ID", format!("{name}-l")),
            ("CLICKHOUSE_URL", services.clickhouse_url.clone()),
            ("CLICKHOUSE_DATABASE", database.clone()),
        ],
    )?;
    for service in ["ingest", "transform", "loader"] {
        procs.start(service)?;
    }
    let url = format!("http://127.0.0.1:{port}");
    let clickhouse = ClickHouse::new(&services.clickhouse_url, &database);
    // Ready: ingest answers, and a first call went all the way through.
    let template: Value = serde_json::from_str(&sample("call-ended-full.json"))?;
    let client = reqwest::Client::new();
    let hook = format!("{url}/hooks/{TOKEN}/call-ended");
    let warm = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = client
            .post(&hook)
            .body(call_body(&template, 1, 0).to_string())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let visible = ok
            && clickhouse
                .rows("SELECT call_id FROM {db}.calls")
                .await
                .is_ok_and(|r| !r.is_empty());
        if visible {
            break;
        }
        if Instant::now() > warm {
            bail!("the pipeline did not deliver a first call in 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let total = (args.rate as u64 * args.duration_s) as usize;
    let base = 20_000_000i64;
    let started = Instant::now();
    let answered: Arc<Mutex<HashMap<i64, Duration>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<i64, Duration>>> = Arc::default();
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));

    let poller = {
        let (seen, sending) = (seen.clone(), sending.clone());
        let clickhouse = ClickHouse::new(&services.clickhouse_url, &database);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut idle_after = None;
            loop {
                tick.tick().await;
                let sql = format!(
                    "SELECT call_id FROM {{db}}.calls WHERE call_id >= {base} \
                     SETTINGS enable_optimize_predicate_expression = 1"
                );
                if let Ok(rows) = clickhouse.rows(&sql).await {
                    let at = started.elapsed();
                    let mut seen = seen.lock().unwrap();
                    for row in rows {
                        if let Some(id) = row["call_id"].as_i64() {
                            seen.entry(id).or_insert(at);
                        }
                    }
                    if seen.len() >= total {
                        break;
                    }
                }
                if !sending.load(std::sync::atomic::Ordering::Relaxed) {
                    let until = *idle_after.get_or_insert(Instant::now() + Duration::from_secs(20));
                    if Instant::now() > until {
                        break;
                    }
                }
            }
        })
    };

    let (tx, rx) = async_channel(4096);
    let mut workers = Vec::new();
    for _ in 0..64 {
        let (rx, client, hook, answered, template) = (
            rx.clone(),
            client.clone(),
            hook.clone(),
            answered.clone(),
            template.clone(),
        );
        workers.push(tokio::spawn(async move {
            while let Ok(id) = rx.recv().await {
                let response = client
                    .post(&hook)
                    .body(call_body(&template, id, 0).to_string())
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    answered.lock().unwrap().insert(id, started.elapsed());
                }
            }
        }));
    }
    // Every 5 ms, hand out the calls due by then (sleeping per call would fall behind).
    let mut next = 0;
    while next < total {
        let due = ((started.elapsed().as_secs_f64() * f64::from(args.rate)) as usize).min(total);
        while next < due {
            tx.send(base + next as i64).await?;
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tx);
    for worker in workers {
        let _ = worker.await;
    }
    let sent_for = started.elapsed();
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = poller.await;
    procs.stop_all();
    let _ = clickhouse
        .execute(&format!("DROP DATABASE IF EXISTS {database}"))
        .await;
    keep_or_remove(&run_dir);

    let answered = answered.lock().unwrap();
    let seen = seen.lock().unwrap();
    let mut delays: Vec<Duration> = answered
        .iter()
        .filter_map(|(id, at)| Some(seen.get(id)?.saturating_sub(*at)))
        .collect();
    delays.sort();
    let quantile = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    Ok(FreshnessResult {
        rate: args.rate,
        sent_per_s: answered.len() as f64 / sent_for.as_secs_f64(),
        partitions: args.partitions,
        p50: quantile(0.5),
        p99: quantile(0.99),
        max: *delays.last().unwrap(),
        unseen: answered.len() - delays.len(),
    })
}

/// A multi-consumer channel from tokio's primitives.
fn async_channel(capacity: usize) -> (tokio::sync::mpsc::Sender<i64>, SharedReceiver) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (tx, SharedReceiver(Arc::new(tokio::sync::Mutex::new(rx))))
}

#[derive(Clone)]
struct SharedReceiver(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<i64>>>);

impl SharedReceiver {
    async fn recv(&self) -> Result<i64, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}
