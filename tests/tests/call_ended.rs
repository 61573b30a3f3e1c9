//! One webhook from HTTP to a ClickHouse row, through the real broker and server.

use std::time::Duration;

use serde_json::json;
use tests::{sample, Pipeline, Stages};

const CALL_ROW: &str = "SELECT call_id, direction, toString(started_at) AS started_at, \
    toString(ended_at) AS ended_at, utc_offset_s, duration_s, talk_time_s, waiting_time_s, \
    abandoned, voicemail, disposition_code, disposition_note, recording_urls, agent_names, \
    contact_id, ring_group, campaign, tags, line_alias, events \
    FROM {db}.calls WHERE tenant = 'acme' AND call_id = 880142";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_ended_webhook_lands_in_calls_once_with_utc_times() {
    let pipeline = Pipeline::start(Stages::ALL).await;
    let body = sample("call-ended-full.json");

    let (status, receipt) = pipeline.post("call-ended", &body).await;
    assert_eq!(status, 200, "{receipt}");
    let event_id = receipt["event_id"]
        .as_str()
        .expect("receipt has event_id")
        .to_owned();
    // The sender's retry of the same delivery.
    let (status, retry) = pipeline.post("call-ended", &body).await;
    assert_eq!(status, 200);
    assert_eq!(retry["event_id"], event_id.as_str());

    let rows = pipeline
        .wait_for_rows(CALL_ROW, 1, Duration::from_secs(60))
        .await
        .unwrap();
    pipeline.assert_running();
    assert_eq!(rows.len(), 1, "one row per call: {rows:?}");
    let call = &rows[0];
    assert_eq!(call["call_id"], 880142);
    assert_eq!(call["direction"], "inbound");
    // 09:05:00-05:00 and 09:11:41-05:00 as UTC instants, offset kept beside them.
    assert_eq!(call["started_at"], "2026-03-02 14:05:00");
    assert_eq!(call["ended_at"], "2026-03-02 14:11:41");
    assert_eq!(call["utc_offset_s"], -18000);
    assert_eq!(
        (
            call["duration_s"].clone(),
            call["talk_time_s"].clone(),
            call["waiting_time_s"].clone()
        ),
        (json!(401), json!(352), json!(37))
    );
    assert_eq!(call["abandoned"], 0);
    assert_eq!(call["voicemail"], json!(null));
    assert_eq!(call["disposition_code"], "RESOLVED");
    assert_eq!(call["disposition_note"], "Refund issued");
    assert_eq!(
        call["recording_urls"],
        json!(["https://acme.nectardesk.io/api/call/recording/77120"])
    );
    assert_eq!(call["agent_names"], json!(["Dev Patel", "Lena Berg"]));
    assert_eq!(call["contact_id"], 30417);
    assert_eq!(call["ring_group"], "Billing");
    assert_eq!(call["campaign"], "Spring Renewals");
    assert_eq!(call["tags"], json!(["billing", "priority"]));
    assert_eq!(call["line_alias"], "Billing");

    // Both deliveries were written (at least once); readers see one event. Raw rows
    // are written just after the typed ones: wait for them.
    let raw = pipeline
        .wait_for_rows(
            "SELECT event_id, event, status, payload FROM {db}.raw_events",
            1,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert_eq!(raw[0]["event_id"], event_id.as_str());
    assert_eq!(raw[0]["event"], "call-ended");
    assert_eq!(raw[0]["status"], "normalized");
    assert_eq!(raw[0]["payload"], body.as_str());
    assert_eq!(call["events"], 1);

    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_retry_of_call_ended_keeps_the_newer_disposition() {
    let pipeline = Pipeline::start(Stages::ALL).await;
    let ended = json!({"id": 42, "type": "inbound", "startedDate": "2026-03-02T09:05:00-05:00",
        "endedDate": "2026-03-02T09:06:00-05:00", "duration": 60, "call_recordings": []});
    let saved = json!({"id": 42, "type": "inbound", "disposition": {"code": "SALE", "note": "upsell"},
        "call_recordings": ["acme.nectardesk.io/api/call/recording/9"]});
    assert_eq!(pipeline.post("call-ended", &ended.to_string()).await.0, 200);
    assert_eq!(
        pipeline
            .post("call-disposition-saved", &saved.to_string())
            .await
            .0,
        200
    );
    // The sender retries the first delivery after the second one went through.
    assert_eq!(pipeline.post("call-ended", &ended.to_string()).await.0, 200);

    let sql = "SELECT disposition_code, recording_urls, duration_s, events FROM {db}.calls WHERE call_id = 42";
    let rows = pipeline
        .wait_for_rows(&format!("{sql} AND events = 2"), 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(rows[0]["disposition_code"], "SALE");
    assert_eq!(
        rows[0]["recording_urls"],
        json!(["https://acme.nectardesk.io/api/call/recording/9"])
    );
    assert_eq!(rows[0]["duration_s"], 60);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_loader_nothing_reaches_clickhouse() {
    // Guards the test above against passing vacuously: with a stage missing, the same
    // wait must time out.
    let pipeline = Pipeline::start(Stages {
        transform: true,
        loader: false,
    })
    .await;
    assert_eq!(
        pipeline
            .post("call-ended", &sample("call-ended-full.json"))
            .await
            .0,
        200
    );
    let waited = pipeline
        .wait_for_rows(CALL_ROW, 1, Duration::from_secs(8))
        .await;
    assert!(
        waited.is_err(),
        "rows appeared without a loader: {waited:?}"
    );
    pipeline.stop().await;
}
