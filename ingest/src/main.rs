use anyhow::Context;
use clap::Parser;

// glibc's malloc keeps what the request threads free in per-thread arenas, so ingest's
// resident memory stayed near its peak (and over its memory budget) after load; mimalloc
// gives freed pages back.
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
