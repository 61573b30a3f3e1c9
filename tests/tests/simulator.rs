//! The traffic simulator against the real pipeline: what it sends is what analysts see.

use std::sync::atomic::Ordering;
use std::time::Duration;

use simulate::send::SendArgs;
use simulate::Scenario;
use tests::{Pipeline, Stages, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simulated_backfill_reaches_every_table() {
    let pipeline = Pipeline::start(Stages::ALL).await;
    let args = SendArgs {
        url: pipeline.ingest_url.clone(),
        token: TOKEN.to_owned(),
        backfill_hours: 3,
        duration_s: 1,
        concurrency: 8,
    };
    // A busy center, so three hours give every kind of event whatever the time of day.
    let scenario = Scenario {
        seed: 7,
        peak_calls_per_minute: 30.0,
        ..Scenario::default()
    };
    let stats = simulate::send::run(&args, scenario).await.unwrap();
    let accepted = stats.accepted.load(Ordering::Relaxed);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 0);
    assert!(accepted > 100, "only {accepted} deliveries");

    // Every accepted delivery is in raw_events, once per distinct event id (the
    // simulator's duplicates share one).
    let accepted_ids = stats.event_ids.lock().unwrap().clone();
    let raw = pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events",
            accepted_ids.len(),
            Duration::from_secs(90),
        )
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = raw
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(raw.len(), stored.len(), "no event twice");
    assert_eq!(stored, accepted_ids);
    for table in [
        "calls",
        "call_agents",
        "contacts",
        "contact_lists",
        "messages",
    ] {
        // Entity rows follow the raw rows of the same block by a moment.
        pipeline
            .wait_for_rows(
                &format!("SELECT 1 FROM {{db}}.{table} LIMIT 1"),
                1,
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|e| panic!("{table} is empty: {e}"));
    }
    pipeline.stop().await;
}
