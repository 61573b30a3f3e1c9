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
        Some(loader::config::Command::Retention(ref command)) => {
            for line in loader::retention::run(&config, command, &shutdown).await? {
                println!(
                    "{}.{} ({} days): {}{}",
                    line.table,
                    line.column,
                    line.days,
                    line.found,
                    if line.done.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", line.done)
                    }
                );
            }
        }
        Some(loader::config::Command::Erase(ref args)) => {
            let Some(report) = loader::erase::erase(&config, args, &shutdown).await? else {
                return Ok(());
            };
            if report.rows.is_empty() {
                println!(
                    "nothing stored for tenant {} matches contact ids {:?} or phone numbers {:?}: nothing was changed",
                    args.tenant, report.contact_ids, report.phones
                );
                return Ok(());
            }
            println!(
                "erasure {} for tenant {}: contact ids {:?}, phone numbers {:?}, {} of their calls; \
                 {} rows redacted ({})",
                report.request_id,
                args.tenant,
                report.contact_ids,
                report.phones,
                report.call_ids.len(),
                report.total_rows(),
                report
                    .rows
                    .iter()
                    .map(|(table, n)| format!("{table} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(warning) = report.warning {
                anyhow::bail!("{warning}");
            }
        }
    }
    Ok(())
}
