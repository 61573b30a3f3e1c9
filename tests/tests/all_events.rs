//! One of each of the twelve NectarDesk events, and the odd variants, from HTTP to every
//! analytics table, through the real broker and server. The bodies are the golden
//! fixtures of the `normalize` crate.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tests::{fixture, fixture_names, Pipeline, Stages};

/// The order deliveries are sent in: call 880142's events in a plausible life cycle
/// (with its disposition changing), contacts and lists after the calls that embed them.
const ORDER: &[&str] = &[
    "call-abandoned-sparse",
    "call-abandoned-full",
    "call-overflowed-to-voicemail-full",
    "call-overflowed-to-voicemail-sparse",
    "call-disposition-saved-real-world",
    "call-ended-sparse",
    "call-ended-wrong-types",
    "call-disposition-saved-sparse",
    "call-ended-full",
    "call-disposition-saved-full",
    "call-disposition-modified-sparse",
    "call-recording-received-sparse",
    "call-recording-received-full",
    "call-disposition-modified-full",
    "contact-created-full",
    "contact-created-sparse",
    "contact-created-wrapped",
    "contact-modified-full",
    "contact-modified-null-names",
    "contact-modified-sparse",
    "contact-list-created-full",
    "contact-list-created-sparse",
    "contact-list-modified-full",
    "contact-list-modified-sparse",
    "message-received-full",
    "message-received-sparse",
    "message-sent-full",
    "message-sent-sparse",
    "unrecognized-event",
    "call-ended-no-id",
    "call-ended-array-body",
];

async fn rows(pipeline: &Pipeline, sql: &str) -> Vec<Value> {
    pipeline.clickhouse.rows(sql).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_lands_in_its_tables() {
    let all: BTreeSet<String> = fixture_names().into_iter().collect();
    let sent: BTreeSet<String> = ORDER.iter().map(|s| s.to_string()).collect();
    let unsent: Vec<&String> = all.difference(&sent).collect();
    assert_eq!(
        unsent,
        ["call-ended-not-json"],
        "every other fixture is sent"
    );

    let pipeline = Pipeline::start(Stages::ALL).await;
    for name in ORDER {
        let (event, body) = fixture(name);
        let (status, answer) = pipeline.post(&event, &body).await;
        assert_eq!(status, 200, "{name}: {answer}");
    }
    // The sender retries call-ended late; it must change nothing.
    let (event, body) = fixture("call-ended-full");
    assert_eq!(pipeline.post(&event, &body).await.0, 200);
    // A body that is not JSON is kept whole (the sender never retries a 4xx, so a refusal
    // would lose it) and marked invalid by transform, with the reason.
    let (event, body) = fixture("call-ended-not-json");
    assert_eq!(pipeline.post(&event, &body).await.0, 200);

    // Dead letters go through the DLQ topic, after the normalized records: wait for them.
    pipeline
        .wait_for_rows(
            "SELECT * FROM {db}.dead_letters",
            3,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    pipeline
        .wait_for_rows(
            "SELECT * FROM {db}.raw_events",
            ORDER.len() + 1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    let statuses = rows(
        &pipeline,
        "SELECT status, count() AS n FROM {db}.raw_events GROUP BY status ORDER BY status",
    )
    .await;
    assert_eq!(
        statuses,
        [
            json!({"status": "invalid", "n": 3}),
            json!({"status": "normalized", "n": ORDER.len() - 3}),
            json!({"status": "unrecognized", "n": 1})
        ]
    );
    let letters = rows(
        &pipeline,
        "SELECT stage, reason, tenant, event FROM {db}.dead_letters ORDER BY reason",
    )
    .await;
    assert_eq!(
        letters,
        [
            json!({"stage": "transform", "reason": "body is a JSON array, expected an object", "tenant": "acme", "event": "call-ended"}),
            json!({"stage": "transform", "reason": "body is not valid JSON: EOF while parsing a value at line 1 column 9", "tenant": "acme", "event": "call-ended"}),
            json!({"stage": "transform", "reason": "call event has no usable integer id", "tenant": "acme", "event": "call-ended"}),
        ]
    );

    // Calls: one row each, merged.
    let calls = rows(&pipeline, "SELECT call_id FROM {db}.calls ORDER BY call_id").await;
    let ids: Vec<i64> = calls
        .iter()
        .map(|r| r["call_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [880142, 880143, 880144, 880145, 880146, 880150, 880160, 880170]
    );
    let call = &rows(
        &pipeline,
        "SELECT disposition_code, disposition_note, recording_urls, agent_names, events, contact_phone_digits \
         FROM {db}.calls WHERE call_id = 880142",
    )
    .await[0];
    assert_eq!(call["disposition_code"], "REFUND");
    assert_eq!(call["disposition_note"], "refund approved by manager");
    assert_eq!(
        call["recording_urls"],
        json!([
            "https://acme.nectardesk.io/api/call/recording/77120",
            "https://acme.nectardesk.io/api/call/recording/77122",
            "https://acme.nectardesk.io/api/call/recording/77123"
        ])
    );
    assert_eq!(call["agent_names"], json!(["Dev Patel", "Lena Berg"]));
    assert_eq!(
        call["events"], 7,
        "seven distinct events, the late retry collapsed"
    );
    assert_eq!(call["contact_phone_digits"], "15557654321");
    let flags = rows(&pipeline, "SELECT call_id, abandoned, voicemail FROM {db}.calls WHERE call_id IN (880143, 880146) ORDER BY call_id").await;
    assert_eq!(
        flags,
        [
            json!({"call_id": 880143, "abandoned": 1, "voicemail": null}),
            json!({"call_id": 880146, "abandoned": null, "voicemail": 1})
        ]
    );
    let agents = rows(&pipeline, "SELECT agent_id, agent_name, agent_action, agent_type FROM {db}.call_agents WHERE call_id = 880142 ORDER BY agent_id").await;
    assert_eq!(
        agents,
        [
            json!({"agent_id": 21, "agent_name": "Dev Patel", "agent_action": "Answered", "agent_type": "Normal call"}),
            json!({"agent_id": 34, "agent_name": "Lena Berg", "agent_action": "Contact hangup", "agent_type": "Transfer Call"}),
        ]
    );

    // Contacts: from contact events and from the contacts embedded in calls.
    let contacts = rows(
        &pipeline,
        "SELECT contact_id, full_name, email, phone_digits, additional_fields FROM {db}.contacts ORDER BY contact_id",
    )
    .await;
    assert_eq!(
        contacts,
        [
            json!({"contact_id": 30417, "full_name": "Maria Okafor-Reyes", "email": "maria@example.org", "phone_digits": "15557654321", "additional_fields": "{\"plan\":\"gold\"}"}),
            json!({"contact_id": 30502, "full_name": "", "email": "", "phone_digits": "15557001234", "additional_fields": ""}),
            json!({"contact_id": 30600, "full_name": "Ana Diaz", "email": "", "phone_digits": "", "additional_fields": ""}),
        ]
    );

    let lists = rows(
        &pipeline,
        "SELECT list_id, name, size, member_ids FROM {db}.contact_lists ORDER BY list_id",
    )
    .await;
    assert_eq!(
        lists,
        [
            json!({"list_id": 12, "name": "Spring Renewals 2026", "size": 3, "member_ids": [30417, 30502, 30600]}),
            json!({"list_id": 13, "name": "", "size": null, "member_ids": []}),
        ]
    );

    let messages = rows(
        &pipeline,
        "SELECT message_id, direction, channel, from_digits, text, contact_id, agent_name FROM {db}.messages ORDER BY message_id",
    )
    .await;
    assert_eq!(
        messages,
        [
            json!({"message_id": "9001", "direction": "inbound", "channel": "sms", "from_digits": "15557654321", "text": "Is my refund done?", "contact_id": 30417, "agent_name": ""}),
            json!({"message_id": "9004", "direction": "outbound", "channel": "", "from_digits": "", "text": "", "contact_id": null, "agent_name": ""}),
            json!({"message_id": "SM9002", "direction": "inbound", "channel": "", "from_digits": "", "text": "", "contact_id": null, "agent_name": ""}),
            json!({"message_id": "SM9003", "direction": "outbound", "channel": "whatsapp", "from_digits": "15550100", "text": "Yes, refunded today.", "contact_id": null, "agent_name": "Dev Patel"}),
        ]
    );

    pipeline.stop().await;
}
