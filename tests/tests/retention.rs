//! Retention on the real server (ClickHouse 18.16: mutations and state rebuilds) and,
//! with `CLICKHOUSE_URL=$CHDB_URL`, on the current engine (column TTLs the server applies
//! at merges): old raw payloads, dead-letter payloads, field examples and message texts
//! are emptied, in the per-event tables and in the aggregate states that copy them,
//! recent ones are kept, and applying again changes nothing.

use loader::retention::{run, Line, RetentionCommand};
use serde_json::{json, Value};
use tests::{Pipeline, Stages};
use tokio_util::sync::CancellationToken;

/// 2026-01-01 00:00 UTC: long past any retention below.
const OLD: i64 = 1_767_225_600;

fn insert(table: &str, rows: &[Value]) -> String {
    let lines: Vec<String> = rows.iter().map(Value::to_string).collect();
    format!(
        "INSERT INTO {{db}}.{table} FORMAT JSONEachRow\n{}",
        lines.join("\n")
    )
}

async fn apply(config: &loader::Config) -> Vec<Line> {
    run(
        config,
        &RetentionCommand { apply: true },
        &CancellationToken::new(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_personal_texts_are_emptied_everywhere_and_recent_ones_kept() {
    let pipeline = Pipeline::start(Stages {
        transform: false,
        loader: false,
    })
    .await;
    let mut config = pipeline.loader_config.clone();
    config.retention.raw_payload_days = 30;
    config.retention.dead_letter_payload_days = 30;
    config.retention.message_text_days = 30;
    loader::migrate(&config, &CancellationToken::new())
        .await
        .unwrap();
    let ch = &pipeline.clickhouse;
    let now = runtime::now_ms() / 1000;
    let day = |s: i64| {
        chrono::DateTime::from_timestamp(s, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    for (id, at) in [("old", OLD), ("new", now)] {
        let common = json!({"event_id": id, "tenant": "acme", "event": "message-received",
                            "received_at": at, "received_at_ms": at * 1000, "loaded_at_ms": at * 1000 + 1});
        let with = |extra: Value| {
            let mut row = common.clone();
            row.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            row
        };
        for sql in [
            insert(
                "raw_events_store_v2",
                &[with(
                    json!({"status": "normalized", "payload": "{\"text\":\"hello\"}"}),
                )],
            ),
            insert(
                "message_events_store_v2",
                &[with(
                    json!({"message_id": format!("m-{id}"), "key_day": day(at), "text": "hello"}),
                )],
            ),
            insert(
                "unmapped_fields_store",
                &[with(
                    json!({"kind": "unmapped", "path": format!("{id}Path"), "example": "\"x\""}),
                )],
            ),
            insert(
                "dead_letters_store_v2",
                &[
                    json!({"stage": "transform", "reason": "r", "source_topic": "raw",
                "source_offset": at, "payload": "{\"text\":\"hello\"}", "failed_at": at, "failed_at_ms": at * 1000,
                "loaded_at_ms": at * 1000 + 1}),
                ],
            ),
        ] {
            ch.execute(&sql).await.unwrap();
        }
    }

    let lines = apply(&config).await;
    assert_eq!(lines.len(), 9, "{lines:?}");
    let ttl = loader::sink::supports_ttl(&ch.version().await);
    if ttl {
        // The server expires at merges; force them.
        for table in [
            "raw_events_store_v2",
            "dead_letters_store_v2",
            "message_events_store_v2",
            "messages_state",
            "unmapped_fields_store",
            "unmapped_fields_state",
        ] {
            ch.execute(&format!("OPTIMIZE TABLE {{db}}.{table} FINAL"))
                .await
                .unwrap();
        }
    }
    let read = |sql: &'static str| async move { ch.rows(sql).await.unwrap() };
    assert_eq!(
        read("SELECT event_id, payload FROM {db}.raw_events ORDER BY event_id").await,
        [
            json!({"event_id": "new", "payload": "{\"text\":\"hello\"}"}),
            json!({"event_id": "old", "payload": ""})
        ]
    );
    assert_eq!(
        read("SELECT payload FROM {db}.dead_letters ORDER BY failed_at").await,
        [
            json!({"payload": ""}),
            json!({"payload": "{\"text\":\"hello\"}"})
        ]
    );
    assert_eq!(
        read("SELECT message_id, text FROM {db}.messages ORDER BY message_id").await,
        [
            json!({"message_id": "m-new", "text": "hello"}),
            json!({"message_id": "m-old", "text": ""})
        ],
        "the merged state forgets the text too"
    );
    assert_eq!(
        read("SELECT text FROM {db}.message_events_store_v2 ORDER BY received_at").await,
        [json!({"text": ""}), json!({"text": "hello"})]
    );
    assert_eq!(
        read("SELECT path, example, deliveries FROM {db}.unmapped_fields ORDER BY path").await,
        [
            json!({"path": "newPath", "example": "\"x\"", "deliveries": 1}),
            json!({"path": "oldPath", "example": "", "deliveries": 1})
        ]
    );

    // Applying again finds nothing left to do.
    let again = apply(&config).await;
    assert!(again.iter().all(|l| l.done.is_empty()), "{again:?}");
    if ttl {
        // Keeping message texts for ever again removes their TTLs.
        config.retention.message_text_days = 0;
        let lines = apply(&config).await;
        let changed: Vec<&str> = lines
            .iter()
            .filter(|l| !l.done.is_empty())
            .map(|l| l.table)
            .collect();
        assert_eq!(
            changed,
            [
                "message_events_store_v2",
                "messages_state",
                "message_events_store"
            ]
        );
        assert!(apply(&config).await.iter().all(|l| l.done.is_empty()));
    } else {
        assert!(
            again
                .iter()
                .filter(|l| l.days > 0)
                .all(|l| l.found.starts_with('0')),
            "{again:?}"
        );
    }
    pipeline.stop().await;
}
