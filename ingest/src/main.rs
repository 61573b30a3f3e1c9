use anyhow::Context;
use clap::Parser;

// mimalloc, as the loader: glibc's malloc keeps much of what the request threads free in
// per-thread arenas, where mimalloc gives freed pages back, which keeps resident memory
// close to what the memory budget counts.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ingest::Config::parse();
    let _telemetry = runtime::logging::init(&config.log, "ingest");
    config.validate().context("invalid configuration")?;
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("cannot listen on INGEST_LISTEN={}", config.listen))?;
    let shutdown = runtime::shutdown::on_signal();
    ingest::run(config, listener, shutdown).await?;
    Ok(())
}
