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

    // Duplicates collapse, so raw_events has at most one row per delivery sent.
    let raw = pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events_store",
            accepted as usize,
            Duration::from_secs(90),
        )
        .await
        .unwrap();
    assert_eq!(raw.len() as u64, accepted);
    for table in [
        "calls",
        "call_agents",
        "contacts",
        "contact_lists",
        "messages",
    ] {
        let rows = pipeline
            .clickhouse
            .rows(&format!("SELECT count() AS n FROM {{db}}.{table}"))
            .await
            .unwrap();
        assert!(rows[0]["n"].as_u64().unwrap() > 0, "{table} is empty");
    }
    pipeline.stop().await;
}
