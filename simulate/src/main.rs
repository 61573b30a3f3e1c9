use std::path::PathBuf;

use clap::{Parser, Subcommand};
use simulate::Scenario;

/// Realistic NectarDesk traffic for one call center.
#[derive(Parser, Debug)]
#[command(name = "simulate", version)]
struct Cli {
    /// Random seed: the same seed gives the same traffic.
    #[arg(long, env = "SIMULATE_SEED", default_value_t = 42, global = true)]
    seed: u64,
    /// Calls per minute at the busiest weekday hour.
    #[arg(
        long,
        env = "SIMULATE_PEAK_CALLS_PER_MINUTE",
        default_value_t = 4.0,
        global = true
    )]
    peak_calls_per_minute: f64,
    /// The center's offset from UTC in hours (dates are sent in its local time).
    #[arg(long, env = "SIMULATE_UTC_OFFSET_HOURS", default_value_t = -5, allow_hyphen_values = true, global = true)]
    utc_offset_hours: i32,
    #[command(flatten)]
    log: runtime::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send the traffic to ingest.
    Send(simulate::send::SendArgs),
    /// Write the ClickHouse rows the traffic becomes, as JSON lines per table.
    Rows {
        /// Folder to write `<table>.jsonl` into.
        #[arg(long)]
        out: PathBuf,
        /// Hours of traffic, ending now.
        #[arg(long, default_value_t = 48)]
        hours: u32,
        /// Tenant of the rows.
        #[arg(long, default_value = "demo")]
        tenant: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = runtime::logging::init(&cli.log, "simulate");
    anyhow::ensure!(
        (-12..=14).contains(&cli.utc_offset_hours),
        "SIMULATE_UTC_OFFSET_HOURS must be from -12 to 14, got {}",
        cli.utc_offset_hours
    );
    anyhow::ensure!(
        cli.peak_calls_per_minute > 0.0 && cli.peak_calls_per_minute <= 600.0,
        "SIMULATE_PEAK_CALLS_PER_MINUTE must be above 0 and at most 600, got {}",
        cli.peak_calls_per_minute
    );
    let scenario = Scenario {
        seed: cli.seed,
        utc_offset_s: cli.utc_offset_hours * 3600,
        peak_calls_per_minute: cli.peak_calls_per_minute,
        ..Scenario::default()
    };
    match cli.command {
        Command::Send(args) => {
            let stats = simulate::send::run(&args, scenario).await?;
            anyhow::ensure!(
                stats.failed.load(std::sync::atomic::Ordering::Relaxed) == 0,
                "some deliveries failed after every retry"
            );
        }
        Command::Rows { out, hours, tenant } => {
            let start = runtime::now_ms() - i64::from(hours) * 3_600_000;
            let n = simulate::emit::write_rows(scenario, &tenant, start, hours, &out)?;
            eprintln!("wrote the rows of {n} deliveries to {}", out.display());
        }
    }
    Ok(())
}
