//! The key counters of every service move when events flow, and every metric the
//! pipeline-health dashboard charts is one the services export.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tests::{call_step, free_addr, scrape, Pipeline, Stages};

const EVENTS: i64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_key_counters_move_when_events_flow() {
    let mut pipeline = Pipeline::start(Stages {
        transform: false,
        loader: false,
    })
    .await;
    let transform_addr = free_addr();
    let loader_addr = free_addr();
    pipeline.transform_config.metrics_listen = transform_addr.clone();
    pipeline.loader_config.metrics_listen = loader_addr.clone();
    pipeline.start_transform();
    pipeline.start_loader();
    let urls = [
        format!("{}/metrics", pipeline.ingest_url),
        format!("http://{transform_addr}/metrics"),
        format!("http://{loader_addr}/metrics"),
    ];
    let before = scrape_all(&urls).await;

    for call in 0..EVENTS {
        let (event, body) = call_step(3_000_000 + call, 0);
        assert_eq!(pipeline.post(&event, &body).await.0, 200);
    }
    // A call body without an id: dead-lettered by transform.
    assert_eq!(
        pipeline
            .post("call-ended", &json!({"type": "inbound"}).to_string())
            .await
            .0,
        200
    );
    // Not JSON: kept whole (a 4xx would lose it), and dead-lettered by transform too.
    assert_eq!(pipeline.post("call-ended", "{not json").await.0, 200);
    // A body over the limit: refused with 413 and counted by reason.
    let too_large = format!(r#"{{"pad": "{}"}}"#, "x".repeat(600_000));
    assert_eq!(pipeline.post("call-ended", &too_large).await.0, 413);
    pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events",
            EVENTS as usize + 2,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    pipeline
        .wait_for_rows(
            "SELECT stage FROM {db}.dead_letters WHERE stage = 'transform'",
            2,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let n = EVENTS as f64;
    let expected = [
        (r#"ingest_requests_total{status="200"}"#, n + 2.0),
        (r#"ingest_requests_total{status="413"}"#, 1.0),
        (r#"ingest_rejected_total{reason="too_large"}"#, 1.0),
        ("ingest_produce_duration_seconds_count", n + 2.0),
        ("transform_records_in_total", n + 2.0),
        (
            r#"transform_records_out_total{output="normalized"}"#,
            n + 2.0,
        ),
        (r#"transform_records_out_total{output="dlq"}"#, 2.0),
        ("transform_batch_duration_seconds_count", 1.0),
        (r#"loader_records_in_total{source="normalized"}"#, n + 2.0),
        (r#"loader_records_in_total{source="dlq"}"#, 2.0),
        (
            r#"loader_rows_written_total{table="raw_events_store_v2"}"#,
            n + 2.0,
        ),
        (
            r#"loader_rows_written_total{table="call_events_store_v2"}"#,
            n,
        ),
        (
            r#"loader_rows_written_total{table="dead_letters_store_v2"}"#,
            2.0,
        ),
        ("loader_insert_duration_seconds_count", 1.0),
        ("loader_event_delay_seconds_count", n + 2.0),
    ];
    // A write's metrics are updated just after its rows become visible: poll briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        let after = scrape_all(&urls).await;
        let moved = |series: &str| {
            after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
        };
        let short: Vec<String> = expected
            .iter()
            .filter(|(series, at_least)| moved(series) < *at_least)
            .map(|(series, at_least)| {
                format!("{series} moved by {} (want >= {at_least})", moved(series))
            })
            .collect();
        if short.is_empty() {
            break after;
        }
        assert!(std::time::Instant::now() < deadline, "{short:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let flushes: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("loader_batches_total{"))
        .map(|(_, v)| v)
        .sum();
    assert!(flushes >= 2.0, "normalized and dlq batches: {flushes}");
    for gauge in [
        "ingest_spool_events",
        "transform_consumer_lag_records",
        "loader_consumer_lag_records",
    ] {
        assert!(after.contains_key(gauge), "{gauge} is exported");
    }

    // Every metric the pipeline-health dashboard queries exists.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/pipeline-health.json"
    ))
    .unwrap();
    let exported: Vec<&str> = after.keys().map(|k| k.split('{').next().unwrap()).collect();
    let mut charted = 0;
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if ["ingest_", "transform_", "loader_"]
            .iter()
            .any(|p| word.starts_with(p))
            && !word.ends_with('_')
        {
            charted += 1;
            assert!(
                exported.contains(&word),
                "the dashboard charts {word}, which no service exports"
            );
        }
    }
    assert!(charted >= 10, "the dashboard charts {charted} metrics");
    pipeline.stop().await;
}

async fn scrape_all(urls: &[String]) -> HashMap<String, f64> {
    let mut all = HashMap::new();
    for url in urls {
        all.extend(scrape(url).await);
    }
    all
}
