//! `chaos`: the fault-injection harness. Sends N simulated NectarDesk webhooks (with the
//! sender's duplicates, late retries and some deliveries of one entity swapped) through
//! real `ingest`, `transform` and `loader` processes, at a steady rate, while it kills
//! them with SIGKILL, kills the broker and stops ClickHouse; then waits for the pipeline
//! to settle and reconciles: sent, answered 200, in `raw_events`, in each table, visible
//! duplicates, lost, and each call's merged state against the order its events were
//! accepted. Prints the table; exits 1 on any loss, visible duplicate or call out of
//! order.
//!
//! Run it with `scripts/chaos` (which builds the binaries and starts the development
//! services); `scripts/chaos --help` lists the knobs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::path::PathBuf;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use schemas::RawEnvelope;
use serde_json::Value;
use simulate::{Delivery, Generator, Scenario};
use tests::procs::Procs;
use tests::{dev_services, unique, ClickHouse, Services};
use warehouse::Table;

/// Settings of a chaos run.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "chaos",
    about = "Sends webhooks through the whole stack while killing its parts, then reconciles."
)]
struct Args {
    /// Webhook deliveries to send.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Deliveries per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long ClickHouse stays stopped.
    #[arg(long, default_value_t = 60)]
    clickhouse_outage_s: u64,
    /// The development service that serves CLICKHOUSE_URL, stopped and started for the
    /// ClickHouse fault: `clickhouse` (18.16) or `chdb` (the current-engine fixture).
    #[arg(long, default_value = "clickhouse", value_parser = ["clickhouse", "chdb"])]
    clickhouse_service: String,
    /// How long the broker stays down after its SIGKILL.
    #[arg(long, default_value_t = 8)]
    broker_outage_s: u64,
    /// Seed of the traffic and of the fault moments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the ingest, transform and loader binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Give up waiting for the pipeline to settle after this long.
    #[arg(long, default_value_t = 600)]
    settle_timeout_s: u64,
    /// Keep the ClickHouse database after the run (its name is printed).
    #[arg(long)]
    keep: bool,
}

const TENANT: &str = "chaos";
const TOKEN: &str = "chaos_token_0123456789abcdef";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let services = Services::require().await;
    let name = unique("chaos");
    let run_dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(run_dir.join("spool"))?;
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the harness binary has no directory")?
            .to_path_buf(),
    };
    let port = free_port()?;
    let ingest_url = format!("http://127.0.0.1:{port}");
    let database = format!("sb_{name}");
    let common = vec![
        ("KAFKA_BROKERS", services.kafka_brokers.clone()),
        ("KAFKA_TOPIC_RAW", format!("{name}.raw")),
        ("KAFKA_TOPIC_NORMALIZED", format!("{name}.normalized")),
        ("KAFKA_TOPIC_DLQ", format!("{name}.dlq")),
        ("KAFKA_TOPIC_ERASURES", format!("{name}.erasures")),
        ("KAFKA_TOPIC_PARTITIONS", "3".into()),
        ("LOG_FORMAT", "text".into()),
        ("RUST_LOG", "info".into()),
        // No metrics endpoint: its fixed port may be taken by another process here.
        ("METRICS_LISTEN", String::new()),
    ];
    let mut procs = Procs::default();
    procs.add(
        "ingest",
        &bin_dir,
        &run_dir,
        &common,
        &[
            ("INGEST_LISTEN", format!("127.0.0.1:{port}")),
            ("INGEST_TOKENS", format!("{TENANT}={TOKEN}")),
            (
                "INGEST_SPOOL_DIR",
                run_dir.join("spool").display().to_string(),
            ),
            ("INGEST_PRODUCE_TIMEOUT_MS", "2000".into()),
        ],
    )?;
    procs.add(
        "transform",
        &bin_dir,
        &run_dir,
        &common,
        &[("TRANSFORM_GROUP_ID", format!("{name}-transform"))],
    )?;
    procs.add(
        "loader",
        &bin_dir,
        &run_dir,
        &common,
        &[
            ("LOADER_GROUP_ID", format!("{name}-loader")),
            ("CLICKHOUSE_URL", services.clickhouse_url.clone()),
            ("CLICKHOUSE_DATABASE", database.clone()),
            ("LOADER_BLOCK_LOG", "on".into()),
            ("LOADER_BATCH_MAX_AGE_MS", "500".into()),
        ],
    )?;
    let procs = Arc::new(Mutex::new(procs));
    for service in ["ingest", "transform", "loader"] {
        procs.lock().unwrap().start(service)?;
    }
    println!("chaos run {name}: logs in {}", run_dir.display());
    wait_ready(&ingest_url).await?;
    let clickhouse = ClickHouse::new(&services.clickhouse_url, &database);
    // Where inserts are deduplicated by token, the storage tables must physically hold
    // each event once: merges are stopped so that none can hide a repeated insert.
    let physical = clickhouse.has_dedup_tokens().await;
    if physical {
        stop_merges(&clickhouse).await?;
    }

    let deliveries = traffic(&args);
    let send_s = deliveries.len() as f64 / args.rate;
    println!(
        "sending {} deliveries at {}/s (~{send_s:.0} s) while killing components",
        deliveries.len(),
        args.rate
    );
    let started = Instant::now();
    let after_restart = physical.then(|| ClickHouse::new(&services.clickhouse_url, &database));
    let faults = tokio::spawn(run_faults(
        args.clone(),
        send_s,
        procs.clone(),
        started,
        after_restart,
    ));
    let supervisor = tokio::spawn(supervise(procs.clone()));
    let outcomes = send_all(&ingest_url, deliveries, args.rate).await;
    println!("sending done in {:.0} s", started.elapsed().as_secs_f64());
    let fault_log = faults.await??;
    let expected = Expected::from(&outcomes);
    let mut report = settle(
        &clickhouse,
        &expected,
        Duration::from_secs(args.settle_timeout_s),
    )
    .await;
    if physical {
        report.stored = Some(stored_duplicates(&clickhouse).await?);
    }
    supervisor.abort();
    let exits = procs.lock().unwrap().unexpected_exits;
    procs.lock().unwrap().stop_all();

    println!();
    println!("faults:");
    for line in &fault_log {
        println!("  {line}");
    }
    println!("  services that exited on their own and were restarted: {exits}");
    println!();
    print!("{}", report.table(&outcomes));
    println!();
    println!(
        "reproduce: scripts/chaos --events {} --rate {} --clickhouse-outage-s {} --broker-outage-s {} --seed {}",
        args.events, args.rate, args.clickhouse_outage_s, args.broker_outage_s, args.seed
    );
    if args.clickhouse_service != "clickhouse" {
        println!("  (with --clickhouse-service {})", args.clickhouse_service);
    }
    if args.keep {
        println!("database kept: {database}");
    } else {
        let _ = clickhouse
            .execute(&format!("DROP DATABASE IF EXISTS {database}"))
            .await;
    }
    if report.failed() {
        println!("RESULT: FAILED (loss, visible duplicates or calls out of order)");
        std::process::exit(1);
    }
    println!("RESULT: OK: 0 lost, 0 visible duplicates, per-call order intact");
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn supervise(procs: Arc<Mutex<Procs>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for name in procs.lock().unwrap().restart_exited() {
            eprintln!("chaos: {name} exited on its own; restarted it");
        }
    }
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{url}/readyz")).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("ingest at {url} was not ready within 60 s")
}

// --- Faults -------------------------------------------------------------------------

/// Kills each component at least once at seeded random moments of the sending window;
/// returns a line per fault. `physical`: the database whose merges to stop again once
/// ClickHouse is back.
async fn run_faults(
    args: Args,
    send_s: f64,
    procs: Arc<Mutex<Procs>>,
    started: Instant,
    physical: Option<ClickHouse>,
) -> anyhow::Result<Vec<String>> {
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut at = |share: f64| {
        let jitter = (rng.f64() - 0.5) * 0.06;
        Duration::from_secs_f64(send_s * (share + jitter).max(0.02))
    };
    let plan = [
        (at(0.10), "transform"),
        (at(0.20), "loader"),
        (at(0.30), "ingest"),
        (at(0.45), "kafka"),
        (at(0.60), "clickhouse"),
        (at(0.75), "transform"),
        (at(0.85), "loader"),
    ];
    let mut log = Vec::new();
    for (when, target) in plan {
        tokio::time::sleep(when.saturating_sub(started.elapsed())).await;
        let t = started.elapsed().as_secs_f64();
        let down = match target {
            "kafka" => {
                blocking(|| dev_services("kill", "kafka")).await;
                tokio::time::sleep(Duration::from_secs(args.broker_outage_s)).await;
                blocking(|| dev_services("up", "kafka")).await;
                format!(
                    "broker SIGKILL at {t:.1} s, restarted after {} s",
                    args.broker_outage_s
                )
            }
            "clickhouse" => {
                let service = args.clickhouse_service.clone();
                let again = service.clone();
                blocking(move || dev_services("down", &service)).await;
                tokio::time::sleep(Duration::from_secs(args.clickhouse_outage_s)).await;
                blocking(move || dev_services("up", &again)).await;
                if let Some(clickhouse) = &physical {
                    stop_merges(clickhouse).await?;
                }
                format!(
                    "ClickHouse stopped at {t:.1} s, started again after {} s",
                    args.clickhouse_outage_s
                )
            }
            service => {
                procs.lock().unwrap().kill(service);
                let pause = Duration::from_millis(500 + (t * 1000.0) as u64 % 2500);
                tokio::time::sleep(pause).await;
                procs.lock().unwrap().start(service)?;
                format!(
                    "{service} SIGKILL at {t:.1} s, restarted after {:.1} s",
                    pause.as_secs_f64()
                )
            }
        };
        println!("  fault: {down}");
        log.push(down);
    }
    Ok(log)
}

async fn blocking(f: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(f)
        .await
        .expect("dev-services ran");
}

// --- Traffic ------------------------------------------------------------------------

/// The simulator's deliveries (duplicates and late retries included), with about 1% of
/// them swapped with the next delivery of the same entity: out of order.
fn traffic(args: &Args) -> Vec<Delivery> {
    let mut generator = Generator::new(Scenario {
        seed: args.seed,
        peak_calls_per_minute: 300.0,
        duplicate_ratio: 0.03,
        late_retry_ratio: 0.02,
        ..Scenario::default()
    });
    let mut out = Vec::with_capacity(args.events);
    // A weekday morning in the simulated center's time.
    let mut cursor = 1_793_700_000_000;
    while out.len() < args.events {
        out.extend(generator.window(cursor, cursor + 60_000));
        cursor += 60_000;
    }
    out.truncate(args.events);
    let mut rng = fastrand::Rng::with_seed(args.seed ^ 0x5eed);
    for i in 0..out.len() {
        if rng.f64() < 0.01 {
            if let Some(j) =
                (i + 1..out.len().min(i + 50)).find(|&j| out[j].entity == out[i].entity)
            {
                out.swap(i, j);
            }
        }
    }
    out
}

/// What became of one delivery.
#[derive(Debug, Clone)]
struct Outcome {
    delivery: Delivery,
    /// The event id ingest answered with, if it answered 200.
    event_id: Option<String>,
    /// Order of acceptance across the run (entity order is kept by the lanes).
    accepted_seq: u64,
    attempts: u32,
}

/// Sends at `rate`/s through lanes by entity, with NectarDesk's retry policy.
async fn send_all(url: &str, deliveries: Vec<Delivery>, rate: f64) -> Vec<Outcome> {
    const LANES: usize = 32;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let hook = format!("{url}/hooks/{TOKEN}");
    let seq = Arc::new(AtomicU64::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(deliveries.len())));
    let mut lanes = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..LANES {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(1024);
        let (client, hook, seq, outcomes) =
            (client.clone(), hook.clone(), seq.clone(), outcomes.clone());
        handles.push(tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                let outcome = deliver(&client, &hook, delivery, &seq).await;
                outcomes.lock().unwrap().push(outcome);
            }
        }));
        lanes.push(tx);
    }
    let started = Instant::now();
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        let lane = fnv(&delivery.entity) as usize % LANES;
        lanes[lane].send(delivery).await.expect("lane alive");
    }
    drop(lanes);
    for handle in handles {
        let _ = handle.await;
    }
    Arc::try_unwrap(outcomes)
        .expect("lanes finished")
        .into_inner()
        .unwrap()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// One delivery, retried after 1, 2 and 4 s on a connection error or a 5xx.
async fn deliver(
    client: &reqwest::Client,
    hook: &str,
    delivery: Delivery,
    seq: &AtomicU64,
) -> Outcome {
    let body = delivery.body.to_string();
    let mut attempts = 0;
    for pause in [0, 1, 2, 4] {
        tokio::time::sleep(Duration::from_secs(pause)).await;
        attempts += 1;
        let response = client
            .post(format!("{hook}/{}", delivery.event))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let Ok(response) = response else { continue };
        let status = response.status();
        if status.is_success() {
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let event_id = answer["event_id"].as_str().map(str::to_owned);
            return Outcome {
                delivery,
                event_id,
                accepted_seq: seq.fetch_add(1, Ordering::SeqCst),
                attempts,
            };
        }
        if status.is_client_error() {
            break;
        }
    }
    Outcome {
        delivery,
        event_id: None,
        accepted_seq: u64::MAX,
        attempts,
    }
}

// --- Reconciliation -----------------------------------------------------------------

/// What ClickHouse must show for the accepted deliveries, computed with the same pure
/// normalization and row mapping the services use.
#[derive(Debug, Default)]
struct Expected {
    raw: BTreeSet<String>,
    call_events: BTreeSet<String>,
    calls: BTreeSet<i64>,
    contacts: BTreeSet<i64>,
    contact_lists: BTreeSet<i64>,
    messages: BTreeSet<String>,
    /// Per call: its distinct event ids, and the disposition of the last accepted one
    /// that had a disposition.
    call_state: BTreeMap<i64, (BTreeSet<String>, String)>,
}

impl Expected {
    fn from(outcomes: &[Outcome]) -> Expected {
        let mut accepted: Vec<&Outcome> =
            outcomes.iter().filter(|o| o.event_id.is_some()).collect();
        accepted.sort_by_key(|o| o.accepted_seq);
        let mut expected = Expected::default();
        for outcome in accepted {
            let event_id = outcome.event_id.clone().unwrap();
            if !expected.raw.insert(event_id.clone()) {
                continue; // A duplicate: the first receipt is the one kept.
            }
            let envelope = RawEnvelope {
                event_id: event_id.clone(),
                tenant: TENANT.into(),
                event: outcome.delivery.event.into(),
                received_at: 0,
                source_addr: String::new(),
                body: outcome.delivery.body.to_string().into_bytes(),
            };
            let mut tables = warehouse::Tables::default();
            tables.add_event(normalize::normalize(&envelope));
            for row in &tables.calls {
                expected.call_events.insert(row.event_id.clone());
                expected.calls.insert(row.call_id);
                let state = expected.call_state.entry(row.call_id).or_default();
                state.0.insert(row.event_id.clone());
                if !row.disposition_code.is_empty() {
                    state.1 = row.disposition_code.clone();
                }
            }
            expected
                .contacts
                .extend(tables.contacts.iter().map(|r| r.contact_id));
            expected
                .contact_lists
                .extend(tables.contact_lists.iter().map(|r| r.list_id));
            expected
                .messages
                .extend(tables.messages.iter().map(|r| r.message_id.clone()));
        }
        expected
    }
}

/// Keys found in one table or view.
#[derive(Debug, Default, Clone)]
struct Found {
    rows: usize,
    keys: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Report {
    /// (name, expected keys, found)
    tables: Vec<(&'static str, BTreeSet<String>, Found)>,
    /// Where inserts are deduplicated by token: per storage table, rows stored more than
    /// once (physically, merges stopped).
    stored: Option<Vec<(Table, u64)>>,
    calls_checked: usize,
    calls_out_of_order: Vec<String>,
    calls_with_unanswered_events: usize,
}

impl Report {
    fn lost(&self) -> usize {
        self.tables
            .iter()
            .map(|(_, want, found)| want.difference(&found.keys).count())
            .sum()
    }

    fn duplicates(&self) -> usize {
        self.tables
            .iter()
            .map(|(_, _, found)| found.rows - found.keys.len())
            .sum()
    }

    fn stored_duplicates(&self) -> u64 {
        self.stored.iter().flatten().map(|(_, n)| n).sum()
    }

    fn failed(&self) -> bool {
        self.lost() > 0
            || self.duplicates() > 0
            || self.stored_duplicates() > 0
            || !self.calls_out_of_order.is_empty()
    }

    fn table(&self, outcomes: &[Outcome]) -> String {
        let answered = outcomes.iter().filter(|o| o.event_id.is_some()).count();
        let retried = outcomes.iter().filter(|o| o.attempts > 1).count();
        let gave_up = outcomes.len() - answered;
        let mut out = String::new();
        out.push_str(&format!(
            "{:<34}{:>10}\n",
            "deliveries sent",
            outcomes.len()
        ));
        out.push_str(&format!("{:<34}{:>10}\n", "answered 200", answered));
        out.push_str(&format!(
            "{:<34}{:>10}\n",
            "needed a retry (5xx / no answer)", retried
        ));
        out.push_str(&format!(
            "{:<34}{:>10}\n",
            "never answered 200 (sender gave up)", gave_up
        ));
        out.push('\n');
        out.push_str(&format!(
            "{:<16}{:>10}{:>10}{:>8}{:>8}{:>14}\n",
            "table", "expected", "present", "lost", "extra", "visible dups"
        ));
        for (name, want, found) in &self.tables {
            out.push_str(&format!(
                "{:<16}{:>10}{:>10}{:>8}{:>8}{:>14}\n",
                name,
                want.len(),
                found.keys.intersection(want).count(),
                want.difference(&found.keys).count(),
                found.keys.difference(want).count(),
                found.rows - found.keys.len()
            ));
        }
        if let Some(stored) = &self.stored {
            out.push_str(
                "\nrows an insert stored again (insert deduplication tokens; merges stopped):\n",
            );
            for (table, n) in stored {
                out.push_str(&format!("  {:<28}{:>8}\n", table.name(), n));
            }
        }
        out.push('\n');
        out.push_str(&format!(
            "per-call order: {} calls checked, {} with a merged state that differs from the last accepted event{}\n",
            self.calls_checked,
            self.calls_out_of_order.len(),
            if self.calls_with_unanswered_events > 0 {
                format!(" ({} calls skipped: they hold an event whose 200 was lost in a kill)", self.calls_with_unanswered_events)
            } else {
                String::new()
            }
        ));
        for line in self.calls_out_of_order.iter().take(10) {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

/// Polls ClickHouse until every expected key is present (or `within` passes with no
/// progress), then builds the report.
async fn settle(clickhouse: &ClickHouse, expected: &Expected, within: Duration) -> Report {
    let started = Instant::now();
    let mut last_progress = (Instant::now(), usize::MAX);
    loop {
        match reconcile(clickhouse, expected).await {
            Ok(report) => {
                let lost = report.lost();
                if lost == 0 && report.calls_out_of_order.is_empty() {
                    println!(
                        "settled {:.0} s after the last fault",
                        started.elapsed().as_secs_f64()
                    );
                    return report;
                }
                if lost != last_progress.1 {
                    last_progress = (Instant::now(), lost);
                }
                if last_progress.0.elapsed() >= within {
                    println!("no progress for {within:?}; reporting what is there");
                    return report;
                }
            }
            Err(e) => {
                if started.elapsed() >= within {
                    println!("ClickHouse unreadable: {e}");
                    return Report::default();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Stops background merges of the storage tables (see `physical` in `main`), once the
/// loader has created them.
async fn stop_merges(clickhouse: &ClickHouse) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = warehouse::migrations::MIGRATIONS.len();
    loop {
        let applied = clickhouse
            .rows("SELECT version FROM {db}.schema_migrations")
            .await
            .map(|rows| rows.len())
            .unwrap_or(0);
        if applied >= want {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the loader did not create the tables within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for table in Table::ALL {
        clickhouse
            .execute(&format!("SYSTEM STOP MERGES {{db}}.{table}"))
            .await
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Per storage table, how many rows one insert stored again: physical rows minus
/// distinct rows, a row being named by its event (or dead letter's source record), its
/// receipt and its block's `loaded_at_ms`. A record that came twice through Kafka (a
/// stage redoing a suffix after a crash) is written by another block, with another
/// `loaded_at_ms`: only a block whose insert went in twice counts here.
async fn stored_duplicates(clickhouse: &ClickHouse) -> anyhow::Result<Vec<(Table, u64)>> {
    let mut out = Vec::new();
    for table in Table::ALL {
        let identity = match table {
            Table::DeadLetters => {
                "stage, source_topic, source_partition, source_offset, failed_at_ms, loaded_at_ms"
            }
            // One row per path of a delivery.
            Table::UnmappedFields => "event_id, received_at_ms, loaded_at_ms, kind, path",
            _ => "event_id, received_at_ms, loaded_at_ms",
        };
        let rows = clickhouse
            .rows(&format!(
                "SELECT count() - uniqExact({identity}) AS n FROM {{db}}.{table}"
            ))
            .await
            .map_err(anyhow::Error::msg)?;
        out.push((table, rows[0]["n"].as_u64().unwrap_or_default()));
    }
    Ok(out)
}

async fn reconcile(clickhouse: &ClickHouse, expected: &Expected) -> Result<Report, String> {
    let strings = |set: &BTreeSet<i64>| set.iter().map(i64::to_string).collect::<BTreeSet<_>>();
    let mut report = Report::default();
    let sources: [(&'static str, &str, BTreeSet<String>); 6] = [
        (
            "raw_events",
            "SELECT event_id AS k FROM {db}.raw_events",
            expected.raw.clone(),
        ),
        (
            "call_events",
            "SELECT event_id AS k FROM {db}.call_events",
            expected.call_events.clone(),
        ),
        (
            "calls",
            "SELECT toString(call_id) AS k FROM {db}.calls",
            strings(&expected.calls),
        ),
        (
            "contacts",
            "SELECT toString(contact_id) AS k FROM {db}.contacts",
            strings(&expected.contacts),
        ),
        (
            "contact_lists",
            "SELECT toString(list_id) AS k FROM {db}.contact_lists",
            strings(&expected.contact_lists),
        ),
        (
            "messages",
            "SELECT message_id AS k FROM {db}.messages",
            expected.messages.clone(),
        ),
    ];
    for (name, sql, want) in sources {
        let rows = clickhouse.rows(sql).await?;
        let keys = rows
            .iter()
            .filter_map(|r| r["k"].as_str().map(str::to_owned))
            .collect();
        report.tables.push((
            name,
            want,
            Found {
                rows: rows.len(),
                keys,
            },
        ));
    }

    let mut stored: HashMap<i64, (String, BTreeSet<String>)> = HashMap::new();
    for r in clickhouse
        .rows("SELECT call_id, disposition_code FROM {db}.calls")
        .await?
    {
        if let (Some(call), Some(code)) = (r["call_id"].as_i64(), r["disposition_code"].as_str()) {
            stored.entry(call).or_default().0 = code.to_owned();
        }
    }
    for r in clickhouse
        .rows("SELECT call_id, groupUniqArray(event_id) AS ids FROM {db}.call_events GROUP BY call_id")
        .await?
    {
        if let (Some(call), Some(ids)) = (r["call_id"].as_i64(), r["ids"].as_array()) {
            stored.entry(call).or_default().1 =
                ids.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        }
    }
    for (call, (ids, disposition)) in &expected.call_state {
        let Some((got, stored_ids)) = stored.get(call) else {
            continue;
        };
        if stored_ids != ids {
            if stored_ids.is_superset(ids) {
                report.calls_with_unanswered_events += 1;
            }
            continue; // Missing events are counted as lost above.
        }
        report.calls_checked += 1;
        if got != disposition {
            report.calls_out_of_order.push(format!(
                "call {call}: merged disposition {got:?}, last accepted {disposition:?}"
            ));
        }
    }
    Ok(report)
}
