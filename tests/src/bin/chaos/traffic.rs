//! The sender's side of a chaos run: simulated deliveries, sent at a steady rate with
//! NectarDesk's retry policy, and what became of each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use simulate::{Delivery, Generator, Scenario};

use crate::TOKEN;

/// The simulator's deliveries (duplicates and late retries included), with about 1% of
/// them swapped with the next delivery of the same entity: out of order.
pub(crate) fn traffic(events: usize, seed: u64) -> Vec<Delivery> {
    let mut generator = Generator::new(Scenario {
        seed,
        peak_calls_per_minute: 300.0,
        duplicate_ratio: 0.03,
        late_retry_ratio: 0.02,
        ..Scenario::default()
    });
    let mut out = Vec::with_capacity(events);
    // A weekday morning in the simulated center's time.
    let mut cursor = 1_793_700_000_000;
    while out.len() < events {
        out.extend(generator.window(cursor, cursor + 60_000));
        cursor += 60_000;
    }
    out.truncate(events);
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    for i in 0..out.len() {
        if rng.f64() < 0.01 {
            if let Some(j) =
                (i + 1..out.len().min(i + 50)).find(|&j| out[j].entity == out[i].entity)
            {
                out.swap(i, j);
            }
        }
    }
    out
}

/// What became of one delivery.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) delivery: Delivery,
    /// The event id ingest answered with, if it answered 200.
    pub(crate) event_id: Option<String>,
    /// Order of acceptance across the run (entity order is kept by the lanes).
    pub(crate) accepted_seq: u64,
    pub(crate) attempts: u32,
}

/// Sends at `rate`/s through lanes by entity, with NectarDesk's retry policy.
pub(crate) async fn send_all(url: &str, deliveries: Vec<Delivery>, rate: f64) -> Vec<Outcome> {
    const LANES: usize = 32;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let hook = format!("{url}/hooks/{TOKEN}");
    let seq = Arc::new(AtomicU64::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(deliveries.len())));
    let mut lanes = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..LANES {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(1024);
        let (client, hook, seq, outcomes) =
            (client.clone(), hook.clone(), seq.clone(), outcomes.clone());
        handles.push(tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                let outcome = deliver(&client, &hook, delivery, &seq).await;
                outcomes.lock().unwrap().push(outcome);
            }
        }));
        lanes.push(tx);
    }
    let started = Instant::now();
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        let lane = fnv(&delivery.entity) as usize % LANES;
        lanes[lane].send(delivery).await.expect("lane alive");
    }
    drop(lanes);
    for handle in handles {
        let _ = handle.await;
    }
    Arc::try_unwrap(outcomes)
        .expect("lanes finished")
        .into_inner()
        .unwrap()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// One delivery, retried after 1, 2 and 4 s on a connection error or a 5xx.
async fn deliver(
    client: &reqwest::Client,
    hook: &str,
    delivery: Delivery,
    seq: &AtomicU64,
) -> Outcome {
    let body = delivery.body.to_string();
    let mut attempts = 0;
    for pause in [0, 1, 2, 4] {
        tokio::time::sleep(Duration::from_secs(pause)).await;
        attempts += 1;
        let response = client
            .post(format!("{hook}/{}", delivery.event))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let Ok(response) = response else { continue };
        let status = response.status();
        if status.is_success() {
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let event_id = answer["event_id"].as_str().map(str::to_owned);
            return Outcome {
                delivery,
                event_id,
                accepted_seq: seq.fetch_add(1, Ordering::SeqCst),
                attempts,
            };
        }
        if status.is_client_error() {
            break;
        }
    }
    Outcome {
        delivery,
        event_id: None,
        accepted_seq: u64::MAX,
        attempts,
    }
}
