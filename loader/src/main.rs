use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = loader::Config::parse();
    runtime::logging::init(&config.log);
    config.validate().context("invalid configuration")?;
    let shutdown = runtime::shutdown::on_signal();
    loader::run(config, shutdown).await?;
    Ok(())
}
