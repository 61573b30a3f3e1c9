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
    match config.command {
        None => loader::run(config, shutdown).await?,
        Some(loader::config::Command::Migrate) => {
            let version = loader::migrate(&config, &shutdown).await?;
            println!(
                "database {} is at schema version {version}",
                config.clickhouse.database
            );
        }
    }
    Ok(())
}
