//! Sending traffic to ingest the way NectarDesk does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::traffic::{Delivery, Generator, Scenario};

/// Where and how fast to send.
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// Base URL of ingest.
    #[arg(
        long,
        env = "SIMULATE_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// URL token of the simulated tenant (one of INGEST_TOKENS).
    #[arg(
        long,
        env = "SIMULATE_TOKEN",
        default_value = "demo_token_change_me_0001"
    )]
    pub token: String,
    /// Hours of past traffic sent first, as fast as ingest accepts it.
    #[arg(long, env = "SIMULATE_BACKFILL_HOURS", default_value_t = 24)]
    pub backfill_hours: u32,
    /// Stop after this many seconds of real-time traffic; 0 runs until stopped.
    #[arg(long, env = "SIMULATE_DURATION_S", default_value_t = 0)]
    pub duration_s: u64,
    /// Requests in flight at once (each entity's events stay in order).
    #[arg(long, env = "SIMULATE_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
}

/// Counts of what was sent.
#[derive(Debug, Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    pub retries: AtomicU64,
    /// Distinct event ids ingest answered with (duplicates share one).
    pub event_ids: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Stats {
    fn line(&self) -> String {
        format!(
            "sent {} accepted {} rejected {} failed {} retries {}",
            self.sent.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed)
        )
    }
}

/// Sends the scenario's traffic until the duration is over (or forever).
pub async fn run(args: &SendArgs, scenario: Scenario) -> anyhow::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::default());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let lanes: Vec<mpsc::Sender<Delivery>> = (0..args.concurrency.max(1))
        .map(|_| {
            let (tx, mut rx) = mpsc::channel::<Delivery>(64);
            let (client, stats) = (client.clone(), stats.clone());
            let url = format!("{}/hooks/{}", args.url.trim_end_matches('/'), args.token);
            tokio::spawn(async move {
                while let Some(delivery) = rx.recv().await {
                    deliver(&client, &url, &delivery, &stats).await;
                }
            });
            tx
        })
        .collect();

    let started = runtime::now_ms();
    let end = (args.duration_s > 0).then(|| started + args.duration_s as i64 * 1000);
    let mut generator = Generator::new(scenario);
    let mut cursor = started - i64::from(args.backfill_hours) * 3_600_000;
    let mut pending: BTreeMap<(i64, u64), Delivery> = BTreeMap::new();
    let mut seq = 0u64;
    let mut last_report = started;
    loop {
        let now = runtime::now_ms();
        while cursor < now + 60_000 && end.is_none_or(|end| cursor < end) {
            for delivery in generator.window(cursor, cursor + 60_000) {
                seq += 1;
                pending.insert((delivery.at_ms, seq), delivery);
            }
            cursor += 60_000;
        }
        while let Some(entry) = pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let delivery = entry.remove();
            let lane = lane_of(&delivery.entity, lanes.len());
            lanes[lane].send(delivery).await?;
        }
        if now - last_report >= 10_000 {
            tracing::info!(stats = %stats.line(), queued = pending.len(), "Simulating");
            last_report = now;
        }
        if end.is_some_and(|end| now >= end) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(lanes);
    // Let the lanes finish what they hold.
    while stats.sent.load(Ordering::Relaxed)
        > stats.accepted.load(Ordering::Relaxed)
            + stats.rejected.load(Ordering::Relaxed)
            + stats.failed.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(stats = %stats.line(), "Simulation done");
    Ok(stats)
}

fn lane_of(entity: &str, lanes: usize) -> usize {
    // FNV-1a: stable across runs, unlike the std hasher.
    let hash = entity.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % lanes as u64) as usize
}

/// Posts one delivery with NectarDesk's retry policy: on a connection error or a 5xx, up
/// to 3 retries after 1, 2 and 4 seconds; a 4xx is final.
async fn deliver(client: &reqwest::Client, url: &str, delivery: &Delivery, stats: &Stats) {
    stats.sent.fetch_add(1, Ordering::Relaxed);
    let url = format!("{url}/{}", delivery.event);
    for attempt in 0..4u32 {
        if attempt > 0 {
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(delivery.body.to_string())
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let receipt: serde_json::Value = r.json().await.unwrap_or_default();
                if let Some(id) = receipt["event_id"].as_str() {
                    stats.event_ids.lock().unwrap().insert(id.to_owned());
                }
                return;
            }
            Ok(r) if r.status().is_client_error() => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    event = delivery.event,
                    "Delivery rejected"
                );
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
    }
    stats.failed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entity_always_uses_the_same_lane() {
        assert_eq!(lane_of("call:1000001", 8), lane_of("call:1000001", 8));
        let used: std::collections::HashSet<usize> =
            (0..100).map(|i| lane_of(&format!("call:{i}"), 8)).collect();
        assert!(used.len() > 4, "entities spread over lanes: {used:?}");
    }
}
