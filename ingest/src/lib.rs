//! `ingest`: the HTTP receiver for NectarDesk webhooks.
//!
//! It does as little as it can: check the token, read and parse the body, and write the
//! delivery unchanged to Kafka (`webhooks.raw`), keyed so one call's events stay in order.
//! It answers 200 only once Kafka has acknowledged the write, and 503 (never a 4xx) for
//! anything a retry could fix, because the sender never retries a 4xx.
//! Normalization is not done here; see the `transform` crate.

pub mod config;
pub mod error;
pub mod publisher;
pub mod routes;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use tokio_util::sync::CancellationToken;

pub use config::Config;
use publisher::KafkaPublisher;
use routes::State;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka client could not be created: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("http server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs `ingest` on `listener` until `shutdown` is cancelled, then stops accepting,
/// finishes requests in flight and flushes the producer.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    config
        .kafka
        .ensure_topics(&[&config.topics.raw_topic])
        .await?;
    let publisher = Arc::new(KafkaPublisher::new(
        &config.kafka,
        &config.topics.raw_topic,
        Duration::from_millis(config.http.produce_timeout_ms),
    )?);
    let state = State {
        tokens: config.tokens.clone(),
        http: config.http.clone(),
        publisher: publisher.clone(),
    };
    serve(state, listener, shutdown).await?;
    let flush = publisher.clone();
    tokio::task::spawn_blocking(move || flush.flush(Duration::from_secs(10)))
        .await
        .ok();
    Ok(())
}

/// Serves the routes with any publisher until `shutdown` is cancelled.
pub async fn serve(
    state: State,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let state = web::Data::new(state);
    let server =
        HttpServer::new(move || App::new().configure(|cfg| routes::configure(cfg, state.clone())))
            .listen(listener)?
            .disable_signals()
            .shutdown_timeout(30)
            .run();
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    tracing::info!(%addr, "Ingest listening");
    server.await
}
