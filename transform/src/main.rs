use clap::Parser;
use transform::Command;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = transform::Config::parse();
    let _telemetry = runtime::logging::init(&config.log, "transform");
    let shutdown = runtime::shutdown::on_signal();
    match &config.command {
        None => transform::run(config, shutdown).await?,
        Some(Command::Replay(args)) => {
            let report = transform::replay(&config, args, &shutdown).await?;
            println!(
                "replayed {} raw records from {} partitions of {}: {} normalized, {} dead-lettered{}",
                report.read,
                report.partitions,
                config.topics.raw_topic,
                report.normalized,
                report.dead_lettered,
                if shutdown.is_cancelled() { " (interrupted)" } else { "" }
            );
        }
    }
    Ok(())
}
