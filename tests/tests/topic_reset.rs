//! Kafka's data is wiped (here: every topic of the pipeline deleted and created again)
//! while ClickHouse keeps its data. Offsets start again at 0, so the loader cuts blocks
//! over the same offset ranges as before; it must notice the restart and name the new
//! blocks apart from the old ones, or a server with insert deduplication tokens would
//! drop every new event as a duplicate of an old block, silently.

use std::time::Duration;

use tests::{call_step, IngestOptions, Pipeline, Stages};

/// A multiple of the block size: every block is cut by size.
const CALLS: i64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_after_the_topics_are_recreated_all_land() {
    // One partition, and blocks cut by size from a backlog: the same ranges in both
    // lives of the topics, so without epochs the second life's blocks would carry the
    // first life's names.
    let mut pipeline = Pipeline::start_with(
        Stages {
            transform: false,
            loader: false,
        },
        IngestOptions {
            partitions: 1,
            ..IngestOptions::default()
        },
    )
    .await;
    pipeline.loader_config.block_log = loader::config::Switch::On;
    pipeline.loader_config.batch.batch_max_rows = 5;
    pipeline.loader_config.batch.batch_max_age_ms = 60_000;
    let transform = pipeline.start_transform();
    post_calls(&pipeline, 7_000_000).await;
    let loader = pipeline.start_loader();
    let physical = pipeline.stop_merges_when_ready().await;
    let first_life = CALLS as usize;
    pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events",
            first_life,
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    pipeline.stop_instance(transform).await;
    pipeline.stop_instance(loader).await;
    pipeline.recreate_topics().await;
    pipeline.start_transform();
    post_calls(&pipeline, 7_100_000).await;
    pipeline.start_loader();

    let total = 2 * CALLS as usize;
    pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events",
            total,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        pipeline
            .clickhouse
            .rows("SELECT call_id FROM {db}.calls")
            .await
            .unwrap()
            .len(),
        total,
        "every call of both lives of the topics"
    );
    if physical {
        // No insert was dropped as a duplicate, and none was stored twice.
        let stored = pipeline
            .clickhouse
            .rows(
                "SELECT count() AS rows, uniqExact(event_id) AS events FROM {db}.raw_events_store_v2",
            )
            .await
            .unwrap();
        assert_eq!(
            stored,
            [serde_json::json!({"rows": total, "events": total})]
        );
    }
    // What the loader detected: a second epoch of blocks.
    let epochs = pipeline
        .clickhouse
        .rows("SELECT max(epoch) AS epoch FROM {db}.loader_blocks")
        .await
        .unwrap();
    assert!(epochs[0]["epoch"].as_u64() >= Some(1), "{epochs:?}");
    pipeline.stop().await;
}

async fn post_calls(pipeline: &Pipeline, first: i64) {
    for call in first..first + CALLS {
        let (event, body) = call_step(call, 0);
        let (status, answer) = pipeline.post(&event, &body).await;
        assert_eq!(status, 200, "{answer}");
    }
}
