//! `bench`: loader throughput and end-to-end freshness, measured on this machine against
//! the development broker and server (run it with `scripts/bench-pipeline`).
//!
//! - `bench loader`: fills a fresh `webhooks.normalized` with N call events, starts a
//!   `loader` process on it and measures events/s from its first visible rows to its
//!   last; then copies the same rows out (`clickhouse-client … FORMAT Native`) and times
//!   `clickhouse-client` inserting them in bulk into empty copies of the tables: the
//!   server's limit. Prints both and their ratio.
//! - `bench freshness`: runs ingest, transform and loader processes, sends a new call
//!   at a steady rate, and measures the delay from each 200 answer to the call being
//!   visible in the `calls` view (polled every 100 ms, which bounds the resolution).
//! - `bench matrix`: both, across event sizes and partition counts, as one table.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use runtime::{KafkaArgs, TopicArgs};
use schemas::{avro, RawEnvelope};
use serde_json::Value;
use tests::procs::Procs;
use tests::{sample, single_broker_env, unique, ClickHouse, Services};

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
struct LoaderArgs {
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Extra bytes of text added to every call body (a `notes` field).
    #[arg(long, default_value_t = 0)]
    pad_bytes: usize,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
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

const TENANT: &str = "bench";
const TOKEN: &str = "bench_token_0123456789";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Loader(args) => {
            let r = loader(&args).await?;
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
            bin_dir: bin_dir.clone(),
        };
        let r = loader(&args).await?;
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
        "\nloader (one run each; events carry 2 rows: raw_events_store and call_events_store)"
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

/// The services' log filter: `BENCH_LOG` (their logs are then kept), else `warn`.
fn log_filter() -> String {
    std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into())
}

fn keep_or_remove(run_dir: &std::path::Path) {
    if std::env::var("BENCH_LOG").is_ok() {
        eprintln!("logs kept in {}", run_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(run_dir);
    }
}

fn bin_dir(arg: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match arg {
        Some(dir) => Ok(dir.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("no directory")?
            .to_path_buf()),
    }
}

/// A call body with id `id`, padded with `pad` bytes of notes.
fn call_body(template: &Value, id: i64, pad: usize) -> Value {
    let mut body = template.clone();
    body["id"] = Value::from(id);
    if pad > 0 {
        body["notes"] = Value::from("n".repeat(pad));
    }
    body
}

// --- Loader -------------------------------------------------------------------------

struct LoaderResult {
    events: usize,
    record_bytes: usize,
    partitions: i32,
    loader_eps: f64,
    bulk_eps: f64,
}

impl LoaderResult {
    const HEADER: &'static str =
        "  events  record B  partitions  loader events/s  clickhouse-client bulk events/s  ratio";
}

impl std::fmt::Display for LoaderResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8}  {:>8}  {:>10}  {:>15.0}  {:>31.0}  {:>5.2}",
            self.events,
            self.record_bytes,
            self.partitions,
            self.loader_eps,
            self.bulk_eps,
            self.loader_eps / self.bulk_eps
        )
    }
}

async fn loader(args: &LoaderArgs) -> anyhow::Result<LoaderResult> {
    let services = Services::require().await;
    let name = unique("bench");
    let database = format!("sb_{name}");
    let topics = TopicArgs {
        raw_topic: format!("{name}.raw"),
        normalized_topic: format!("{name}.normalized"),
        dlq_topic: format!("{name}.dlq"),
    };
    let kafka = KafkaArgs {
        brokers: services.kafka_brokers.clone(),
        topic_partitions: args.partitions,
        topic_replication: 1,
        topic_min_insync_replicas: 1,
        raw_retention_ms: -1,
    };
    kafka
        .create_missing_topics(&[topics.normalized(), topics.dlq()])
        .await?;

    // Fill the normalized topic.
    let template: Value = serde_json::from_str(&sample("call-ended-full.json"))?;
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .create()?;
    let mut record_bytes = 0;
    let now = runtime::now_ms();
    let mut deliveries = Vec::with_capacity(args.events);
    for i in 0..args.events {
        let body = call_body(&template, 10_000_000 + i as i64, args.pad_bytes);
        let event_id = normalize::identity::event_id(TENANT, "call-ended", &body);
        let key = normalize::identity::kafka_key(TENANT, "call-ended", &body, &event_id);
        let envelope = RawEnvelope {
            event_id,
            tenant: TENANT.into(),
            event: "call-ended".into(),
            received_at: now,
            source_addr: "127.0.0.1".into(),
            body: body.to_string().into_bytes(),
        };
        let payload = avro::normalized_event().encode(&normalize::normalize(&envelope))?;
        record_bytes += payload.len();
        loop {
            let record = FutureRecord::to(&topics.normalized_topic)
                .key(&key)
                .payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for delivery in deliveries {
        if let Ok(Err((e, _))) = delivery.await {
            bail!("filling the topic failed: {e}");
        }
    }
    producer.flush(Duration::from_secs(30))?;

    // The loader on it.
    let run_dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&run_dir)?;
    let mut procs = Procs::default();
    procs.add(
        "loader",
        &bin_dir(&args.bin_dir)?,
        &run_dir,
        &single_broker_env(),
        &[
            ("KAFKA_BROKERS", services.kafka_brokers.clone()),
            ("KAFKA_TOPIC_NORMALIZED", topics.normalized_topic.clone()),
            ("KAFKA_TOPIC_DLQ", topics.dlq_topic.clone()),
            ("KAFKA_TOPIC_PARTITIONS", args.partitions.to_string()),
            ("LOADER_GROUP_ID", format!("{name}-loader")),
            ("CLICKHOUSE_URL", services.clickhouse_url.clone()),
            ("CLICKHOUSE_DATABASE", database.clone()),
            ("METRICS_LISTEN", String::new()),
            ("RUST_LOG", log_filter()),
        ],
    )?;
    procs.start("loader")?;
    let clickhouse = ClickHouse::new(&services.clickhouse_url, &database);
    let count = "SELECT count() AS n FROM {db}.raw_events_store";
    let (mut first, mut base) = (None, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = loop {
        let n = clickhouse
            .rows(count)
            .await
            .ok()
            .and_then(|r| r.first().and_then(|r| r["n"].as_u64()))
            .unwrap_or(0) as usize;
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some(now);
            base = n;
        }
        if n >= args.events {
            break now;
        }
        if now > deadline {
            bail!(
                "the loader wrote {n} of {} events in 10 minutes",
                args.events
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    procs.stop_all();
    let first = first.expect("rows appeared");
    let loader_eps = (args.events - base) as f64 / (done - first).as_secs_f64().max(1e-3);

    // The same rows, inserted in bulk by clickhouse-client into empty copies.
    let copy = format!("{database}_bulk");
    clickhouse
        .execute(&format!("CREATE DATABASE {copy}"))
        .await
        .map_err(anyhow::Error::msg)?;
    let mut bulk = Duration::ZERO;
    for table in ["raw_events_store", "call_events_store"] {
        clickhouse
            .execute(&format!(
                "CREATE TABLE {copy}.{table} AS {database}.{table}"
            ))
            .await
            .map_err(anyhow::Error::msg)?;
        let file = run_dir.join(format!("{table}.native"));
        client(
            &format!("SELECT * FROM {database}.{table} FORMAT Native"),
            None,
            Some(&file),
        )?;
        let started = Instant::now();
        client(
            &format!("INSERT INTO {copy}.{table} FORMAT Native"),
            Some(&file),
            None,
        )?;
        bulk += started.elapsed();
    }
    let bulk_eps = args.events as f64 / bulk.as_secs_f64();
    for db in [&copy, &database] {
        let _ = clickhouse
            .execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .await;
    }
    keep_or_remove(&run_dir);
    Ok(LoaderResult {
        events: args.events,
        record_bytes: record_bytes / args.events,
        partitions: args.partitions,
        loader_eps,
        bulk_eps,
    })
}

/// Runs `clickhouse-client` on the development server's native port.
fn client(query: &str, stdin: Option<&PathBuf>, stdout: Option<&PathBuf>) -> anyhow::Result<()> {
    let port = std::env::var("CLICKHOUSE_NATIVE_PORT").unwrap_or_else(|_| "19000".into());
    let mut command = Command::new("clickhouse-client");
    command.args(["--port", &port, "--query", query]);
    command.stdin(match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path)?),
        None => Stdio::null(),
    });
    if let Some(path) = stdout {
        command.stdout(Stdio::from(std::fs::File::create(path)?));
    }
    let status = command.status().context("running clickhouse-client")?;
    if !status.success() {
        bail!("clickhouse-client failed on `{query}`");
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
