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
//! services); `scripts/chaos --help` lists the knobs. With `--clickhouse-cluster` it runs
//! against the brokers and servers of `scripts/cluster-services` (see `cluster.rs`;
//! `scripts/cluster-test` runs it so).

mod cluster;
mod reconcile;
mod traffic;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tests::procs::Procs;
use tests::{cluster_services, dev_services, unique, ClickHouse, Services};

use cluster::ClusterArgs;
use reconcile::{settle, stop_merges, stored_duplicates, Expected};
use traffic::{send_all, traffic};

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
    #[command(flatten)]
    cluster: ClusterArgs,
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
    let layout = args.cluster.layout();
    let urls = args.cluster.urls(&services.clickhouse_url);
    let mut common = vec![
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
    common.extend(args.cluster.kafka_env());
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
    let mut loader_env = vec![
        ("LOADER_GROUP_ID", format!("{name}-loader")),
        ("CLICKHOUSE_URL", services.clickhouse_url.clone()),
        ("CLICKHOUSE_DATABASE", database.clone()),
        ("LOADER_BLOCK_LOG", "on".into()),
        ("LOADER_BATCH_MAX_AGE_MS", "500".into()),
    ];
    loader_env.extend(args.cluster.loader_env(&services.clickhouse_url));
    procs.add("loader", &bin_dir, &run_dir, &common, &loader_env)?;
    if let Some(cluster) = layout.cluster() {
        // In a cluster the schema is created once, ON CLUSTER, before any loader starts.
        println!("applying migrations on cluster {cluster}: loader migrate");
        procs.run_once("loader", &["migrate"])?;
        cluster::check_schema(&urls, &database).await?;
    }
    let procs = Arc::new(Mutex::new(procs));
    for service in ["ingest", "transform", "loader"] {
        procs.lock().unwrap().start(service)?;
    }
    println!("chaos run {name}: logs in {}", run_dir.display());
    wait_ready(&ingest_url).await?;
    let clickhouse = ClickHouse::new(&services.clickhouse_url, &database);
    // Where inserts are deduplicated by token, the storage tables must physically hold
    // each event once: merges are stopped so that none can hide a repeated insert (on a
    // single server: a cluster's merges run per replica, behind Distributed tables).
    let physical = layout.cluster().is_none() && clickhouse.has_dedup_tokens().await;
    if physical {
        stop_merges(&clickhouse).await?;
    }

    let deliveries = traffic(args.events, args.seed);
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
    let placement = match layout.cluster() {
        Some(_) => Some(cluster::check_placement(&layout, &urls, &database).await?),
        None => None,
    };
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
    if let Some(placement) = &placement {
        println!();
        print!("{}", placement.table());
    }
    println!();
    let knobs = format!(
        "--events {} --rate {} --clickhouse-outage-s {} --broker-outage-s {} --seed {}",
        args.events, args.rate, args.clickhouse_outage_s, args.broker_outage_s, args.seed
    );
    match &placement {
        Some(placement) => println!(
            "reproduce: scripts/cluster-test --layout {} {knobs}{}",
            placement.layout(),
            args.cluster.fault_flags()
        ),
        None => println!("reproduce: scripts/chaos {knobs}"),
    }
    if args.clickhouse_service != "clickhouse" {
        println!("  (with --clickhouse-service {})", args.clickhouse_service);
    }
    if args.keep {
        println!("database kept: {database}");
    } else {
        // On every server of a cluster, so no ZooKeeper path is left behind.
        let on_cluster = layout
            .cluster()
            .map(|c| format!(" ON CLUSTER {c}"))
            .unwrap_or_default();
        let _ = clickhouse
            .execute(&format!("DROP DATABASE IF EXISTS {database}{on_cluster}"))
            .await;
    }
    if placement.as_ref().is_some_and(|p| p.failed()) {
        println!("RESULT: FAILED (rows on a shard their shard key does not name)");
        std::process::exit(1);
    }
    if report.failed() {
        println!("RESULT: FAILED (loss, visible duplicates or calls out of order)");
        std::process::exit(1);
    }
    let placed = if placement.is_some() {
        ", every key on its shard"
    } else {
        ""
    };
    println!("RESULT: OK: 0 lost, 0 visible duplicates, per-call order intact{placed}");
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
        let cluster = args.cluster.clickhouse_cluster.is_some();
        let down = match target {
            "kafka" | "clickhouse" if cluster => {
                let (what, node, outage_s) = if target == "kafka" {
                    ("broker", &args.cluster.kill_broker, args.broker_outage_s)
                } else {
                    let node = &args.cluster.kill_clickhouse;
                    ("ClickHouse", node, args.clickhouse_outage_s)
                };
                cluster_outage(node, Duration::from_secs(outage_s)).await;
                format!("{what} {node} SIGKILL at {t:.1} s, restarted after {outage_s} s")
            }
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

/// SIGKILLs `node` of scripts/cluster-services, and starts it again after `outage`.
async fn cluster_outage(node: &str, outage: Duration) {
    let (kill, up) = (node.to_owned(), node.to_owned());
    blocking(move || cluster_services("kill", &kill)).await;
    tokio::time::sleep(outage).await;
    blocking(move || cluster_services("up", &up)).await;
}

async fn blocking(f: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the services script ran");
}
