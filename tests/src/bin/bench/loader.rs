//! `bench loader`: fills a fresh `webhooks.normalized` with N call events once, then,
//! `--runs` times, starts a `loader` process on it (a new consumer group and database
//! each time) and measures events/s from its first record read to its last row
//! acknowledged in all three tables an event goes to (its own counters), and times
//! `clickhouse-client` inserting the very rows it wrote (`FORMAT Native`) in bulk into
//! the same tables of a new database (materialized views included): the server's limit. Reports the median, lowest and
//! highest of each figure and of their ratio.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use runtime::{KafkaArgs, TopicArgs};
use schemas::{avro, RawEnvelope};
use tests::procs::Procs;
use tests::{single_broker_env, unique, ClickHouse, Services};
use warehouse::migrations::MIGRATIONS;
use warehouse::Table;

use crate::util::{self, Spread, TENANT};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LoaderArgs {
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: usize,
    /// Extra bytes of text added to every call body (a `notes` field).
    #[arg(long, default_value_t = 0)]
    pub(crate) pad_bytes: usize,
    #[arg(long, default_value_t = 3)]
    pub(crate) partitions: i32,
    /// Loader and bulk measurements of the same filled topic; figures are their median
    /// with the lowest and highest.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) runs: u32,
    /// Where the service binaries are (default: beside this one).
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
}

pub(crate) struct LoaderResult {
    events: usize,
    record_bytes: usize,
    partitions: i32,
    /// Loader events/s and bulk events/s of each run.
    runs: Vec<(f64, f64)>,
}

impl LoaderResult {
    pub(crate) const HEADER: &'static str = "  events  record B  partitions  runs  \
         loader events/s (min–max)  bulk events/s (min–max)  ratio (min–max)";
}

impl std::fmt::Display for LoaderResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loader: Vec<f64> = self.runs.iter().map(|r| r.0).collect();
        let bulk: Vec<f64> = self.runs.iter().map(|r| r.1).collect();
        let ratio: Vec<f64> = self.runs.iter().map(|r| r.0 / r.1).collect();
        write!(
            f,
            "{:>8}  {:>8}  {:>10}  {:>4}  {:>25}  {:>23}  {:>15}",
            self.events,
            self.record_bytes,
            self.partitions,
            self.runs.len(),
            Spread::of(&loader).show(0),
            Spread::of(&bulk).show(0),
            Spread::of(&ratio).show(2),
        )
    }
}

pub(crate) async fn loader(args: &LoaderArgs) -> anyhow::Result<LoaderResult> {
    let services = Services::require().await;
    let name = unique("bench");
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
    let run_dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&run_dir)?;
    let measured = measure(args, &services, &kafka, &topics, &name, &run_dir).await;
    // Whatever happened: a run cut short by an error leaves nothing behind.
    for run in 0..args.runs {
        let database = format!("sb_{name}_{run}");
        let clickhouse = ClickHouse::new(&services.clickhouse_url, &database);
        let _ = clickhouse
            .execute(&format!("DROP DATABASE IF EXISTS {database}_bulk"))
            .await;
        let _ = clickhouse.execute("DROP DATABASE IF EXISTS {db}").await;
    }
    util::delete_topics(
        &services.kafka_brokers,
        &[topics.normalized_topic, topics.dlq_topic],
    )
    .await;
    util::keep_or_remove(&run_dir);
    let (record_bytes, runs) = measured?;
    Ok(LoaderResult {
        events: args.events,
        record_bytes: record_bytes / args.events,
        partitions: args.partitions,
        runs,
    })
}

/// Fills the topic, then runs the loader and the bulk baseline `args.runs` times;
/// returns the bytes of all records and each run's (loader, bulk) events/s.
async fn measure(
    args: &LoaderArgs,
    services: &Services,
    kafka: &KafkaArgs,
    topics: &TopicArgs,
    name: &str,
    run_dir: &Path,
) -> anyhow::Result<(usize, Vec<(f64, f64)>)> {
    kafka
        .create_missing_topics(&[topics.normalized(), topics.dlq()])
        .await?;
    let record_bytes = fill(kafka, topics, args).await?;
    let mut runs = Vec::new();
    for run in 0..args.runs {
        let database = format!("sb_{name}_{run}");
        let clickhouse = ClickHouse::new(&services.clickhouse_url, &database);
        let loader_eps = load(args, services, topics, &database, run_dir, run).await?;
        let bulk_eps = bulk(&clickhouse, run_dir, args.events).await?;
        if args.runs > 1 {
            eprintln!(
                "  run {}: loader {loader_eps:.0} events/s, bulk {bulk_eps:.0} events/s",
                run + 1
            );
        }
        runs.push((loader_eps, bulk_eps));
    }
    Ok((record_bytes, runs))
}

/// Fills the normalized topic; returns the bytes of all records.
async fn fill(kafka: &KafkaArgs, topics: &TopicArgs, args: &LoaderArgs) -> anyhow::Result<usize> {
    let template = util::call_template()?;
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
        let body = util::call_body(&template, 10_000_000 + i as i64, args.pad_bytes);
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
    Ok(record_bytes)
}

/// One loader process from the start of the topic into `database`; events/s from its
/// first events visible in every table to its last.
async fn load(
    args: &LoaderArgs,
    services: &Services,
    topics: &TopicArgs,
    database: &str,
    run_dir: &Path,
    run: u32,
) -> anyhow::Result<f64> {
    let mut procs = Procs::default();
    let metrics_addr = tests::free_addr();
    // The flush policy may be tried from the environment (the loader's own is cleared).
    let mut common = single_broker_env();
    for name in [
        "LOADER_BATCH_MAX_ROWS",
        "LOADER_BATCH_MAX_BYTES",
        "LOADER_BATCH_MAX_AGE_MS",
    ] {
        if let Ok(value) = std::env::var(name) {
            common.push((name, value));
        }
    }
    procs.add(
        "loader",
        &util::bin_dir(&args.bin_dir)?,
        run_dir,
        &common,
        &[
            ("KAFKA_BROKERS", services.kafka_brokers.clone()),
            ("KAFKA_TOPIC_NORMALIZED", topics.normalized_topic.clone()),
            ("KAFKA_TOPIC_DLQ", topics.dlq_topic.clone()),
            ("KAFKA_TOPIC_PARTITIONS", args.partitions.to_string()),
            ("LOADER_GROUP_ID", format!("{database}-loader-{run}")),
            ("CLICKHOUSE_URL", services.clickhouse_url.clone()),
            ("CLICKHOUSE_DATABASE", database.to_owned()),
            ("METRICS_LISTEN", metrics_addr.clone()),
            ("RUST_LOG", util::log_filter()),
        ],
    )?;
    procs.start("loader")?;
    let started = Instant::now();
    // Each event here is a call with a contact: a row in each of three tables. The
    // window runs from the loader's first record read (its start-up, migrations and group
    // join left out) to its last row acknowledged (inserts are synchronous, so visible),
    // both from its own counters, not by counting rows in ClickHouse: 18.16 reads a
    // column to answer `count()`, and polling it every 20 ms cost the server as much CPU
    // as a quarter of the inserts it was timing.
    let metrics_url = format!("http://{metrics_addr}/metrics");
    let tables = [Table::RawEvents, Table::CallEvents, Table::ContactEvents];
    let written = |counters: &std::collections::HashMap<String, f64>| {
        tables
            .iter()
            .map(|t| {
                let series = format!(
                    "{}{{table=\"{}\"}}",
                    loader::metrics::ROWS_WRITTEN_TOTAL,
                    t.name()
                );
                counters.get(&series).copied().unwrap_or(0.0) as usize
            })
            .min()
            .unwrap_or(0)
    };
    let read_series = format!(
        "{}{{source=\"normalized\"}}",
        loader::metrics::RECORDS_IN_TOTAL
    );
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (done, waits) = loop {
        let counters = tests::scrape(&metrics_url).await;
        let n = written(&counters);
        let now = Instant::now();
        let read = counters.get(&read_series).copied().unwrap_or(0.0);
        if read > 0.0 && first.is_none() {
            // Read at most 20 ms before this scrape.
            first = Some(now);
        }
        if n >= args.events {
            break (now, counters);
        }
        if now > deadline {
            procs.stop_all();
            bail!(
                "the loader wrote {n} of {} events in 10 minutes",
                args.events
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let peak = procs.pid("loader").and_then(peak_rss_mib);
    procs.stop_all();
    // The counters are the loader's word: the rows must be in ClickHouse too.
    let clickhouse = ClickHouse::new(&services.clickhouse_url, database);
    for table in tables {
        let rows = clickhouse
            .rows(&format!("SELECT count() AS n FROM {{db}}.{}", table.name()))
            .await
            .map_err(anyhow::Error::msg)?;
        let n = rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0) as usize;
        if n < args.events {
            bail!(
                "the loader counted at least {} rows written to {table}, which holds {n}",
                args.events
            );
        }
    }
    let peak = peak.map_or_else(|| "unknown".to_owned(), |mib| format!("{mib} MiB"));
    eprintln!(
        "  run {}: loader peak memory {peak}; {}",
        run + 1,
        waited(&waits, wall)
    );
    let first = first.expect("records were read before rows were written");
    Ok(args.events as f64 / (done - first).as_secs_f64().max(1e-3))
}

/// A process's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Where the loader waited on ClickHouse (`loader_clickhouse_seconds_total` by step)
/// over a run of `wall` seconds, largest first. The typed tables' inserts of a block run
/// at once, so their seconds overlap and the sum may exceed the time the loader waited.
fn waited(counters: &std::collections::HashMap<String, f64>, wall: f64) -> String {
    let prefix = format!("{}{{step=\"", loader::metrics::CLICKHOUSE_SECONDS_TOTAL);
    let mut steps: Vec<(&str, f64)> = counters
        .iter()
        .filter_map(|(series, seconds)| {
            let step = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            (*seconds > 0.0).then_some((step, *seconds))
        })
        .collect();
    steps.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = steps.iter().map(|s| s.1).sum();
    let parts: Vec<String> = steps
        .iter()
        .map(|(step, seconds)| format!("{step} {seconds:.2}"))
        .collect();
    format!(
        "requests to ClickHouse took {total:.1} s in all during the loader's {wall:.1} s \
         (concurrent ones each counted; seconds by step: {})",
        parts.join(", ")
    )
}

/// The rows the loader wrote, inserted by clickhouse-client in bulk into the same
/// storage tables of a new database with the same schema (every migration applied, so
/// the materialized views fed by those tables run as they do for the loader);
/// events/s. Drops both databases.
async fn bulk(clickhouse: &ClickHouse, run_dir: &Path, events: usize) -> anyhow::Result<f64> {
    let database = &clickhouse.database;
    let copy = ClickHouse::new(clickhouse.url(), &format!("{database}_bulk"));
    copy.execute("CREATE DATABASE {db}")
        .await
        .map_err(anyhow::Error::msg)?;
    for migration in MIGRATIONS {
        for statement in migration.statements(&copy.database) {
            copy.execute(&statement).await.map_err(anyhow::Error::msg)?;
        }
    }
    let mut took = Duration::ZERO;
    for table in Table::ALL.map(Table::name) {
        let rows = clickhouse
            .rows(&format!("SELECT count() AS n FROM {{db}}.{table}"))
            .await
            .map_err(anyhow::Error::msg)?;
        if rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0) == 0 {
            continue;
        }
        let file = run_dir.join(format!("{database}.{table}.native"));
        client(
            &format!("SELECT * FROM {database}.{table} FORMAT Native"),
            None,
            Some(&file),
        )?;
        let started = Instant::now();
        client(
            &format!("INSERT INTO {}.{table} FORMAT Native", copy.database),
            Some(&file),
            None,
        )?;
        took += started.elapsed();
        let _ = std::fs::remove_file(&file);
    }
    for db in [&copy.database, database] {
        let _ = clickhouse
            .execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .await;
    }
    Ok(events as f64 / took.as_secs_f64())
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
