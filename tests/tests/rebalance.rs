//! Instances join and leave while events flow: a second `transform` and `loader` join
//! the groups, then the first transform stops and the first loader is killed. Each
//! call's events keep their order through the normalized topic, and every event is in
//! ClickHouse exactly once.

use std::time::Duration;

use tests::{assert_histories_complete, call_step, first_occurrences, Pipeline, Stages};

const CALLS: i64 = 60;
const STEPS: i64 = 9;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_call_order_and_counts_survive_instances_joining_and_leaving() {
    let mut pipeline = Pipeline::start(Stages::ALL).await;
    // Ids of the instances Stages::ALL started.
    let (first_transform, first_loader) = (1, 2);
    for step in 0..STEPS {
        match step {
            3 => {
                pipeline.start_transform();
                pipeline.start_loader();
            }
            6 => {
                pipeline.stop_instance(first_transform).await;
                pipeline.kill_instance(first_loader).await;
            }
            _ => {}
        }
        for call in 0..CALLS {
            let (event, body) = call_step(9_000_000 + call, step);
            let (status, answer) = pipeline.post(&event, &body).await;
            assert_eq!(status, 200, "{answer}");
        }
        // Let the groups rebalance while traffic continues.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    assert_histories_complete(&pipeline, CALLS, STEPS, Duration::from_secs(120)).await;
    let total = (CALLS * STEPS) as usize;
    let first_seen = first_occurrences(&pipeline, total).await;
    assert_eq!(first_seen.len() as i64, CALLS);
    for (call, steps) in &first_seen {
        assert_eq!(steps, &(0..STEPS).collect::<Vec<_>>(), "call {call}");
    }
    pipeline.stop().await;
}
