use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = loader::Config::parse();
    let _telemetry = runtime::logging::init(&config.log, "loader");
    config.validate().context("invalid configuration")?;
    let shutdown = runtime::shutdown::on_signal();
    loader::run(config, shutdown).await?;
    Ok(())
}
