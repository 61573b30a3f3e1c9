//! Kafka goes away: ingest keeps answering 200 from its fsync'd spool, survives its own
//! restart, and once the broker is back every accepted event reaches ClickHouse exactly
//! once, each call's events in the order they were accepted.
//!
//! This file stops and starts the shared development broker, so it holds one test (test
//! binaries run one after another).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use schemas::avro;
use serde_json::json;
use tests::{kafka_broker, IngestOptions, Pipeline, Stages};

const CALLS: i64 = 100;
const STEPS: i64 = 10;

fn body(call: i64, step: i64) -> (String, String) {
    let event = if step == 0 {
        "call-ended"
    } else {
        "call-disposition-modified"
    };
    let body = json!({"id": 7_000_000 + call, "type": "inbound", "duration": step,
                      "disposition": {"code": format!("STEP_{step}")}});
    (event.to_owned(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_events_survive_a_broker_outage_and_an_ingest_restart() {
    let spool = tempfile_dir();
    let mut pipeline = Pipeline::start_with(
        Stages::ALL,
        IngestOptions {
            spool_dir: Some(spool.clone()),
            produce_timeout_ms: 1_000,
            ..IngestOptions::default()
        },
    )
    .await;

    kafka_broker("down");
    let started = Instant::now();
    let mut accepted = 0;
    for step in 0..STEPS {
        if step == STEPS / 2 {
            pipeline.restart_ingest().await;
        }
        for call in 0..CALLS {
            let (event, body) = body(call, step);
            let (status, answer) = pipeline.post(&event, &body).await;
            assert_eq!(status, 200, "call {call} step {step}: {answer}");
            accepted += 1;
        }
    }
    eprintln!(
        "{accepted} deliveries accepted with the broker down in {:?}",
        started.elapsed()
    );
    kafka_broker("up");

    let total = (CALLS * STEPS) as usize;
    let rows = pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events",
            total,
            Duration::from_secs(180),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), total, "every accepted event exactly once");
    let calls = pipeline
        .clickhouse
        .rows("SELECT disposition_code, events, count() AS n FROM {db}.calls GROUP BY disposition_code, events")
        .await
        .unwrap();
    assert_eq!(
        calls,
        [json!({"disposition_code": "STEP_9", "events": STEPS, "n": CALLS})]
    );

    // Order: in the normalized topic the loader read, each call's steps first appear in
    // the order they were accepted (a replay may repeat a suffix, never reorder).
    let first_seen = first_occurrences(&pipeline, total).await;
    for (call, steps) in &first_seen {
        assert_eq!(steps, &(0..STEPS).collect::<Vec<_>>(), "call {call}");
    }
    assert_eq!(first_seen.len() as i64, CALLS);
    pipeline.stop().await;
    let _ = std::fs::remove_dir_all(spool);
}

/// Per call, the steps in the order of their first appearance in the normalized topic.
async fn first_occurrences(pipeline: &Pipeline, total: usize) -> HashMap<String, Vec<i64>> {
    let consumer: BaseConsumer = pipeline
        .kafka
        .client_config()
        .set("group.id", tests::unique("order-check"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(
            Some(&pipeline.topics.normalized_topic),
            Duration::from_secs(10),
        )
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(
                &pipeline.topics.normalized_topic,
                partition.id(),
                Offset::Beginning,
            )
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut seen = HashMap::<String, Vec<i64>>::new();
    let mut distinct = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct.len() < total && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let event = avro::normalized_event()
            .decode(message.payload().unwrap())
            .unwrap();
        let step = event.call.as_ref().and_then(|c| c.duration_s).unwrap();
        let steps = seen.entry(event.entity_id.clone()).or_default();
        if distinct.insert(event.event_id) {
            steps.push(step);
        }
    }
    assert_eq!(distinct.len(), total, "normalized topic holds every event");
    seen
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(tests::unique("spool"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
