//! A row ClickHouse refuses for its values goes to the DLQ and `dead_letters`; the rest
//! of its batch loads, and the loader keeps going.

use std::time::Duration;

use serde_json::json;
use tests::{call_step, Pipeline, Stages};

const POISON: i64 = 4_242_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_row_is_dead_lettered_and_the_rest_of_its_batch_loads() {
    let pipeline = Pipeline::start(Stages::ALL).await;
    // Wait for the loader's migrations, then make the server refuse one call's rows, as
    // a CHECK constraint would on a current server (18.16 has throwIf, not constraints).
    pipeline
        .wait_for_rows(
            "SELECT version FROM {db}.schema_migrations",
            warehouse::migrations::MIGRATIONS.len(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    pipeline
        .clickhouse
        .execute(&format!(
            "ALTER TABLE {{db}}.call_events_store_v2 ADD COLUMN poison UInt8 \
             MATERIALIZED throwIf(call_id = {POISON})"
        ))
        .await
        .unwrap();

    let mut poison_event = String::new();
    for call in POISON - 5..POISON + 5 {
        let (event, body) = call_step(call, 0);
        let (status, answer) = pipeline.post(&event, &body).await;
        assert_eq!(status, 200, "{answer}");
        if call == POISON {
            poison_event = answer["event_id"].as_str().unwrap().to_owned();
        }
    }

    let letters = pipeline
        .wait_for_rows(
            "SELECT event_id, stage, reason, source_offset, payload FROM {db}.dead_letters",
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["event_id"], poison_event.as_str());
    assert_eq!(letter["stage"], "loader");
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("call_events_store") && reason.contains("throwIf"),
        "{reason}"
    );
    assert!(letter["source_offset"].as_i64().unwrap() >= 0);
    let row: serde_json::Value = serde_json::from_str(letter["payload"].as_str().unwrap()).unwrap();
    assert_eq!(row["call_id"], POISON, "the refused row is kept as JSON");

    let calls = pipeline
        .wait_for_rows("SELECT call_id FROM {db}.calls", 9, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(calls.len(), 9);
    assert!(!calls.contains(&json!({"call_id": POISON})));
    // Its raw event is stored like any other: the refusal is of the call row only.
    // It is written after the typed rows of its block: wait for all ten.
    let raw = pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events",
            10,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(raw.len(), 10);

    // The loader goes on with later events.
    let (event, body) = call_step(POISON + 100, 0);
    assert_eq!(pipeline.post(&event, &body).await.0, 200);
    pipeline
        .wait_for_rows(
            "SELECT call_id FROM {db}.calls",
            10,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    pipeline.stop().await;
}
