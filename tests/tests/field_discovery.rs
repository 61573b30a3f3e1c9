//! Field discovery end to end: a delivery with a key no reader maps, and one with a
//! number sent as a string, show up in `unmapped_fields` per tenant, event and path, with
//! distinct deliveries counted and an example cut from the body.

use std::time::Duration;

use serde_json::json;
use tests::{Pipeline, Stages};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_no_reader_maps_shows_up_in_unmapped_fields() {
    let pipeline = Pipeline::start(Stages::ALL).await;
    for (id, queue) in [(7001, "Main queue"), (7002, "Overflow")] {
        let body = json!({"id": id, "type": "inbound", "duration": "26", "queueName": queue,
                          "agents": [{"id": 21, "name": "Dev Patel", "skill": "billing"}]});
        let (status, answer) = pipeline.post("call-ended", &body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
    }
    // The sender retries one of them: still two deliveries.
    let again = json!({"id": 7001, "type": "inbound", "duration": "26", "queueName": "Main queue",
                       "agents": [{"id": 21, "name": "Dev Patel", "skill": "billing"}]});
    assert_eq!(pipeline.post("call-ended", &again.to_string()).await.0, 200);
    let found = pipeline
        .wait_for_rows(
            "SELECT tenant, event, kind, path, expected, found, deliveries, example FROM {db}.unmapped_fields \
             WHERE deliveries = 2 ORDER BY kind, path",
            3,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        found,
        [
            json!({"tenant": "acme", "event": "call-ended", "kind": "mistyped", "path": "duration",
                   "expected": "integer", "found": "string", "deliveries": 2, "example": "\"26\""}),
            json!({"tenant": "acme", "event": "call-ended", "kind": "unmapped", "path": "agents[].skill",
                   "expected": "", "found": "", "deliveries": 2, "example": "\"billing\""}),
            json!({"tenant": "acme", "event": "call-ended", "kind": "unmapped", "path": "queueName",
                   "expected": "", "found": "", "deliveries": 2, "example": found[2]["example"]}),
        ]
    );
    assert!(
        ["\"Main queue\"", "\"Overflow\""].contains(&found[2]["example"].as_str().unwrap()),
        "{found:?}"
    );
    pipeline.stop().await;
}
