//! `bench`: loader throughput, end-to-end freshness and the pipeline's capacity,
//! measured on this machine against the development broker and server (run it with
//! `scripts/bench-pipeline`).
//!
//! - `bench loader` ([`loader`]): a loader process from a pre-filled normalized topic,
//!   beside `clickhouse-client` inserting the same rows in bulk; `--runs` repeats it.
//! - `bench freshness` ([`freshness`]): ingest, transform and loader processes at a
//!   steady rate; delay from the 200 answer to visibility in `calls`, and the loader's
//!   inserts per second per table.
//! - `bench capacity` ([`capacity`]): the highest rate with p99 freshness under 2 s,
//!   the CPU of every process at that rate, the bottleneck and the load generator's own
//!   ceiling.
//! - `bench matrix`: loader and freshness across event sizes and partition counts.
//!
//! Every run uses its own topics, consumer groups and database, and removes them.

mod capacity;
mod cpu;
mod freshness;
mod load;
mod loader;
mod pipeline;
mod report;
mod util;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::capacity::CapacityArgs;
use crate::freshness::FreshnessArgs;
use crate::loader::{LoaderArgs, LoaderResult};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Loader throughput, end-to-end freshness and capacity benchmarks."
)]
enum Cli {
    /// Loader events/s from a pre-filled normalized topic, beside clickhouse-client bulk.
    Loader(LoaderArgs),
    /// Delay from the 200 answer to visibility in `calls` at a steady rate, and the
    /// loader's inserts per second per table.
    Freshness(FreshnessArgs),
    /// The highest rate sustained with p99 freshness under 2 s, and where the CPU goes.
    Capacity(CapacityArgs),
    /// Loader (3 runs each) and freshness, across event sizes and partition counts.
    Matrix {
        /// Where the service binaries are (default: beside this one).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
}

/// The freshness goal the freshness runs are read against.
const P99_GOAL: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Loader(args) => {
            let r = loader::loader(&args).await?;
            println!("{}", LoaderResult::HEADER);
            println!("{r}");
        }
        Cli::Freshness(args) => {
            let r = freshness::trial(&args, P99_GOAL, false, &[]).await?;
            println!("{}", freshness::HEADER);
            println!("{r}");
            if let Some(detail) = r.outcome.errors_detail() {
                println!("  {detail}");
            }
        }
        Cli::Capacity(args) => capacity::capacity(&args).await?,
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
    for partitions in [1, 3, 6, 12] {
        let args = FreshnessArgs {
            rate: 1000,
            duration_s: 30,
            warmup_s: 5,
            partitions,
            connections: 128,
            poll_sample: 10,
            bin_dir: bin_dir.clone(),
        };
        let r = freshness::trial(&args, P99_GOAL, false, &[]).await?;
        eprintln!("{r}");
        fresh.push(r.to_string());
        if let Some(detail) = r.outcome.errors_detail() {
            fresh.push(format!("  at {partitions} partitions: {detail}"));
        }
    }
    println!(
        "\nloader (median of 3 runs, lowest–highest in brackets; events carry 3 rows: raw, \
         call and contact)"
    );
    println!("{}", LoaderResult::HEADER);
    for line in lines {
        println!("{line}");
    }
    println!(
        "\nfreshness (200 answer → visible in `calls`; 1 call in 10 polled every 100 ms, every \
         call looked for at the end) and the loader's insert statements per second"
    );
    println!("{}", freshness::HEADER);
    for line in fresh {
        println!("{line}");
    }
    Ok(())
}
