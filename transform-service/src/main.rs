use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = transform_service::Config::parse();
    runtime::logging::init(&config.log);
    config.validate().context("invalid configuration")?;
    let shutdown = runtime::shutdown::on_signal();
    transform_service::run(config, shutdown).await?;
    Ok(())
}
