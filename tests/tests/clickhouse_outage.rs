//! ClickHouse stops while events flow: the loader backs off, keeps its offsets, and
//! once the server is back every accepted event is in ClickHouse exactly once.
//!
//! This file stops and starts the shared development ClickHouse, so it holds one test
//! (test binaries run one after another). `CLICKHOUSE_OUTAGE_S` sets the outage
//! (default 15 s; the chaos harness runs a minute).

use std::time::{Duration, Instant};

use tests::{assert_histories_complete, call_step, dev_services, Pipeline, Stages};

const CALLS: i64 = 50;
const STEPS: i64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loader_waits_out_a_clickhouse_outage_and_loses_nothing() {
    let outage = Duration::from_secs(
        std::env::var("CLICKHOUSE_OUTAGE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15),
    );
    let pipeline = Pipeline::start(Stages::ALL).await;
    let post_step = |step| {
        let pipeline = &pipeline;
        async move {
            for call in 0..CALLS {
                let (event, body) = call_step(8_000_000 + call, step);
                let (status, answer) = pipeline.post(&event, &body).await;
                assert_eq!(status, 200, "{answer}");
            }
        }
    };
    post_step(0).await;
    pipeline
        .wait_for_rows(
            "SELECT call_id FROM {db}.calls",
            CALLS as usize,
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    dev_services("down", "clickhouse");
    let stopped = Instant::now();
    for step in 1..STEPS {
        post_step(step).await;
    }
    // Writes fail and are retried for the whole outage; the loader must not give up.
    tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
    pipeline.assert_running();
    dev_services("up", "clickhouse");
    eprintln!("ClickHouse was down for {:?}", stopped.elapsed());

    assert_histories_complete(&pipeline, CALLS, STEPS, Duration::from_secs(120)).await;
    pipeline.stop().await;
}
