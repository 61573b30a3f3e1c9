//! The loader is killed at random moments while events flow and started again each
//! time. Every event is in ClickHouse exactly once, and with the block log on, the
//! blocks redone after each crash are cut exactly as recorded before it, so a server
//! with insert deduplication tokens drops the repeated inserts: there, the storage
//! tables physically hold each event once (merges are stopped so none can hide a
//! repeated insert).

use std::time::Duration;

use tests::{assert_histories_complete, call_step, Pipeline, Stages};

const CALLS: i64 = 40;
const STEPS: i64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loader_killed_at_random_moments_redoes_the_same_blocks_and_loses_nothing() {
    let mut pipeline = Pipeline::start(Stages {
        transform: true,
        loader: false,
    })
    .await;
    pipeline.loader_config.block_log = loader::config::Switch::On;
    pipeline.loader_config.batch.batch_max_rows = 25;
    let mut loader = pipeline.start_loader();
    let physical = pipeline.stop_merges_when_ready().await;
    let mut kills = 0;
    for step in 0..STEPS {
        for call in 0..CALLS {
            let (event, body) = call_step(6_000_000 + call, step);
            let (status, answer) = pipeline.post(&event, &body).await;
            assert_eq!(status, 200, "{answer}");
        }
        // Kill it while it loads: once some of this step is in, at a random moment.
        let some = (CALLS * step + 1) as usize;
        pipeline
            .wait_for_rows(
                "SELECT event_id FROM {db}.raw_events_store_v2",
                some,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(fastrand_ms(0, 300))).await;
        pipeline.kill_instance(loader).await;
        kills += 1;
        loader = pipeline.start_loader();
    }

    eprintln!("loader killed {kills} times");
    assert_histories_complete(&pipeline, CALLS, STEPS, Duration::from_secs(120)).await;
    let stored = pipeline
        .clickhouse
        .rows("SELECT count() AS rows, uniqExact(event_id) AS events FROM {db}.raw_events_store_v2")
        .await
        .unwrap();
    eprintln!("raw_events_store_v2 after {kills} kills: {stored:?}");
    if physical {
        let total = (CALLS * STEPS) as usize;
        for table in ["raw_events_store_v2", "call_events_store_v2"] {
            let stored = pipeline
                .clickhouse
                .rows(&format!(
                    "SELECT count() AS rows, uniqExact(event_id) AS events FROM {{db}}.{table}"
                ))
                .await
                .unwrap();
            assert_eq!(
                stored,
                [serde_json::json!({"rows": total, "events": total})],
                "{table}: every insert repeated after a kill was dropped by its token"
            );
        }
    }

    // Recorded blocks of a partition never overlap: a redone block starts where the
    // recorded one did and ends where it ended.
    let blocks = pipeline
        .clickhouse
        .rows(
            "SELECT topic, partition, first_offset, last_offset FROM {db}.loader_blocks FINAL \
             ORDER BY topic, partition, first_offset",
        )
        .await
        .unwrap();
    assert!(blocks.len() >= STEPS as usize, "{blocks:?}");
    for pair in blocks.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if (&a["topic"], &a["partition"]) == (&b["topic"], &b["partition"]) {
            assert!(
                b["first_offset"].as_i64() > a["last_offset"].as_i64(),
                "overlapping blocks {a} and {b}"
            );
        }
    }
    pipeline.stop().await;
}

/// A pseudo-random number of milliseconds in `lo..hi`, different on every run.
fn fastrand_ms(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    lo + nanos % (hi - lo)
}
