//! The broker is killed (SIGKILL): ingest keeps answering 200 from its fsync'd spool,
//! survives its own restart, and once the broker is back every accepted event reaches ClickHouse exactly
//! once, each call's events in the order they were accepted.
//!
//! This file stops and starts the shared development broker, so it holds one test (test
//! binaries run one after another).

use std::time::{Duration, Instant};

use tests::{
    assert_histories_complete, call_step, dev_services, first_occurrences, temp_dir, IngestOptions,
    Pipeline, Stages,
};

const CALLS: i64 = 100;
const STEPS: i64 = 10;

fn body(call: i64, step: i64) -> (String, String) {
    call_step(7_000_000 + call, step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_events_survive_a_broker_outage_and_an_ingest_restart() {
    let spool = temp_dir("spool");
    let mut pipeline = Pipeline::start_with(
        Stages::ALL,
        IngestOptions {
            spool_dir: Some(spool.clone()),
            produce_timeout_ms: 1_000,
            ..IngestOptions::default()
        },
    )
    .await;

    dev_services("kill", "kafka");
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
    dev_services("up", "kafka");

    assert_histories_complete(&pipeline, CALLS, STEPS, Duration::from_secs(180)).await;
    let total = (CALLS * STEPS) as usize;

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
