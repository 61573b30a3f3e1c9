//! `ingest`: the HTTP receiver for NectarDesk webhooks.
//!
//! It does as little as it can: check the source and the token, read and parse the body,
//! and write the delivery unchanged to Kafka (`webhooks.raw`), keyed so one call's events
//! stay in order. It answers 200 only once the delivery is durable (acknowledged by Kafka,
//! or fsync'd to the local spool when Kafka is slow or down), and 503 (never a 4xx) for
//! anything a retry could fix, because the sender never retries a 4xx.
//! Normalization is not done here; see the `normalize` crate.

pub mod access;
pub mod config;
pub mod error;
pub mod metrics;
pub mod publisher;
pub mod rejections;
pub mod routes;
pub mod spool;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::{web, App, HttpServer};
use tokio_util::sync::CancellationToken;

pub use config::Config;
use config::Sink;
use metrics::Metrics;
use publisher::{
    DiscardPublisher, DurablePublisher, KafkaPublisher, Publisher, SpoolOnlyPublisher,
};
use rejections::Rejections;
use routes::State;
use spool::{Spool, SpoolError};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka client could not be created: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Topics(#[from] runtime::TopicError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("http server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs `ingest` on `listener` until `shutdown` is cancelled, then answers 503 to new
/// deliveries, finishes those in flight, and flushes the producer. The spool keeps what
/// Kafka has not acknowledged; the next start drains it.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let produce_timeout = Duration::from_millis(config.http.produce_timeout_ms);
    let spool = match &config.spool.spool_dir {
        Some(dir) => Some(Arc::new(Spool::open(dir, config.spool.spool_max_bytes)?)),
        None => None,
    };
    let draining = CancellationToken::new();
    let mut kafka_publisher = None;
    let publisher: Arc<dyn Publisher> = match (config.spool.sink, &spool) {
        (Sink::Discard, _) => Arc::new(DiscardPublisher),
        (Sink::Spool, Some(spool)) => Arc::new(SpoolOnlyPublisher(spool.clone())),
        (_, spool) => {
            // Never wait for Kafka to start: the spool (or a 503) covers its absence.
            let raw_topic = [config.topics.raw()];
            let ensure = config.kafka.create_missing_topics(&raw_topic);
            match tokio::time::timeout(Duration::from_secs(5), ensure).await {
                Ok(Ok(())) => {}
                // A setting that cannot work (too few brokers for the replication
                // factor): waiting cannot fix it, so stop with its message.
                Ok(Err(e)) if e.is_setting() => return Err(e.into()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Could not check the raw topic; continuing")
                }
                Err(_) => tracing::warn!("Kafka did not answer within 5 s; continuing"),
            }
            let kafka = Arc::new(KafkaPublisher::new(
                &config.kafka,
                &config.topics.raw_topic,
                produce_timeout,
                metrics.clone(),
            )?);
            kafka_publisher = Some(kafka.clone());
            match spool {
                Some(spool) => {
                    if spool.events() > 0 {
                        tracing::info!(events = spool.events(), "Replaying the spool");
                    }
                    tokio::spawn(DurablePublisher::drain(
                        kafka.clone(),
                        spool.clone(),
                        metrics.clone(),
                        draining.clone(),
                    ));
                    Arc::new(DurablePublisher::new(kafka, spool.clone(), metrics.clone()))
                }
                None => kafka,
            }
        }
    };
    let dlq = match config.spool.sink {
        Sink::Kafka => Some((
            config.kafka.reliable_producer(Duration::from_secs(30))?,
            config.topics.dlq_topic.clone(),
        )),
        _ => None,
    };
    let state = State {
        rejections: Arc::new(Rejections::new(
            metrics.clone(),
            dlq,
            config.access.record_rejections_per_s,
        )),
        metrics,
        access: config.access.access(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.http.max_in_flight)),
        tokens: config.tokens.clone(),
        http: config.http.clone(),
        publisher,
        shutdown: shutdown.clone(),
    };
    tracing::info!(tenants = ?config.tokens.tenants(), sink = %config.spool.sink, spool = ?config.spool.spool_dir, "Ingest configured");
    serve(state, listener).await?;
    draining.cancel();
    if let Some(kafka) = kafka_publisher {
        tokio::task::spawn_blocking(move || kafka.flush(Duration::from_secs(10)))
            .await
            .ok();
    }
    Ok(())
}

/// Serves the routes until `state.shutdown` is cancelled; from then on deliveries get 503
/// while requests in flight finish (up to 30 s).
pub async fn serve(state: State, listener: TcpListener) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let shutdown = state.shutdown.clone();
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        let metrics = state.metrics.clone();
        App::new()
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let metrics = metrics.clone();
                let response = srv.call(req);
                async move {
                    let response = response.await?;
                    metrics.request(response.status().as_u16(), started.elapsed());
                    Ok(response)
                }
            })
            .configure(|cfg| routes::configure(cfg, state.clone()))
    })
    // The header-read timeout answers 408, which the sender never retries: off. Slow
    // bodies get 503 (INGEST_BODY_TIMEOUT_MS); slow headers are the front proxy's job.
    .client_request_timeout(Duration::ZERO)
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(30)
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        // Let deliveries see the flag (503) before the listener closes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        handle.stop(true).await;
    });
    tracing::info!(%addr, "Ingest listening");
    server.await
}
