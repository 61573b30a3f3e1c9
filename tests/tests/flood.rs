//! More deliveries at once than ingest will handle: the excess gets 503 (which the sender
//! retries), never a 4xx, and every delivery answered 200 reaches ClickHouse.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tests::{IngestOptions, Pipeline, Stages, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_gets_503s_never_4xx_and_every_200_is_stored() {
    let pipeline = Pipeline::start_with(
        Stages::ALL,
        IngestOptions {
            max_in_flight: 4,
            ..IngestOptions::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let senders: Vec<_> = (0..64)
        .map(|sender| {
            let client = client.clone();
            let url = format!("{}/hooks/{TOKEN}/call-ended", pipeline.ingest_url);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..20 {
                    let body = json!({"id": 8_000_000 + sender * 100 + i, "duration": i});
                    let response = client
                        .post(&url)
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let answer: serde_json::Value = response.json().await.unwrap_or_default();
                    answers.push((
                        status,
                        retry_after,
                        answer["event_id"].as_str().map(str::to_owned),
                    ));
                }
                answers
            })
        })
        .collect();
    let mut accepted = HashSet::new();
    let mut unavailable = 0;
    for sender in senders {
        for (status, retry_after, event_id) in sender.await.unwrap() {
            match status {
                200 => {
                    accepted.insert(event_id.expect("a 200 carries the event id"));
                }
                503 => {
                    assert!(retry_after, "a 503 without Retry-After");
                    unavailable += 1;
                }
                other => panic!("flood answered {other}"),
            }
        }
    }
    eprintln!("{} accepted, {unavailable} answered 503", accepted.len());
    assert!(unavailable > 0, "the flood never exceeded capacity");
    assert!(!accepted.is_empty());

    let rows = pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events",
            accepted.len(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let stored: HashSet<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stored, accepted,
        "exactly the accepted deliveries are stored"
    );
    pipeline.stop().await;
}
