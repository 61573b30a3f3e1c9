//! `transform replay` rebuilds the tables from webhooks.raw while the pipeline runs:
//! rows written by an older normalization are replaced in place, nothing is duplicated,
//! and a replay from a point in time reads only what was written after it.

use std::time::Duration;

use serde_json::json;
use tests::{call_step, Pipeline, Stages};
use tokio_util::sync::CancellationToken;
use transform::{ReplayArgs, Report};

const CALLS: i64 = 10;
const STALE_CALL: i64 = 5_000_007;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_replaces_rows_in_place_without_duplicates() {
    let pipeline = Pipeline::start(Stages::ALL).await;
    let post = |call: i64, step: i64| {
        let pipeline = &pipeline;
        async move {
            let (event, body) = call_step(call, step);
            let (status, answer) = pipeline.post(&event, &body).await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    for step in 0..2 {
        for call in 0..CALLS {
            post(5_000_000 + call, step).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let midpoint = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for call in 0..5 {
        post(5_000_000 + call, 2).await;
    }
    // Call rows are written just after raw rows: wait for the call events themselves.
    pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.call_events",
            25,
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    // What an older, wrong normalization would have stored for one event: same event
    // id and receipt time, another disposition, loaded after the right one. Readers see
    // it (for one event, the row of the newest load wins).
    pipeline
        .clickhouse
        .execute(&format!(
            "INSERT INTO {{db}}.call_events_store_v2 \
             (event_id, tenant, event, call_id, key_day, received_at, received_at_ms, direction, \
              disposition_code, loaded_at_ms) \
             SELECT event_id, tenant, event, call_id, key_day, received_at, received_at_ms, direction, \
              'STALE', loaded_at_ms + 1 \
             FROM {{db}}.call_events_store_v2 FINAL \
             WHERE call_id = {STALE_CALL} AND event = 'call-disposition-modified'"
        ))
        .await
        .unwrap();
    let stale =
        format!("SELECT disposition_code, events FROM {{db}}.calls WHERE call_id = {STALE_CALL}");
    assert_eq!(
        pipeline.clickhouse.rows(&stale).await.unwrap(),
        [json!({"disposition_code": "STALE", "events": 2})]
    );

    let report = replay(&pipeline, "earliest").await;
    assert_eq!(
        report,
        Report {
            partitions: report.partitions,
            read: 25,
            normalized: 25,
            dead_lettered: 0
        }
    );
    pipeline
        .wait_for_rows(
            &format!("SELECT 1 FROM {{db}}.calls WHERE call_id = {STALE_CALL} AND disposition_code = 'STEP_1'"),
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let counts = pipeline
        .clickhouse
        .rows(
            "SELECT (SELECT count() FROM {db}.raw_events) AS raw, \
             (SELECT count() FROM {db}.call_events) AS call_events, \
             (SELECT count() FROM {db}.calls) AS calls, \
             (SELECT sum(events) FROM {db}.calls) AS events",
        )
        .await
        .unwrap();
    assert_eq!(
        counts,
        [json!({"raw": 25, "call_events": 25, "calls": CALLS, "events": 25})],
        "no duplicates after the replay"
    );

    let since_midpoint = replay(&pipeline, &midpoint.to_rfc3339()).await;
    assert_eq!((since_midpoint.read, since_midpoint.normalized), (5, 5));
    pipeline.stop().await;
}

async fn replay(pipeline: &Pipeline, from: &str) -> Report {
    let args = ReplayArgs {
        from: transform::Point::parse(from).unwrap(),
        until: None,
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        transform::replay(&pipeline.transform_config, &args, &CancellationToken::new()),
    )
    .await
    .expect("the replay finishes")
    .unwrap()
}
