// The loader allocates and frees many small strings per record (Avro values, rows);
// glibc's allocator spent about half of its CPU time on that (measured with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = loader::Config::parse();
    let _telemetry = runtime::logging::init(&config.log, "loader");
    let shutdown = runtime::shutdown::on_signal();
    loader::run(config, shutdown).await?;
    Ok(())
}
