//! A loader refuses a database whose schema is newer than the migrations it knows (it
//! was written by a newer version), with a message that says what to do, instead of
//! writing rows that may no longer fit.

use std::time::Duration;

use tests::{Pipeline, Stages};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loader_refuses_a_schema_newer_than_it_knows() {
    let mut pipeline = Pipeline::start(Stages {
        transform: false,
        loader: false,
    })
    .await;
    let newer = warehouse::migrations::MIGRATIONS.len() + 1;
    pipeline.record_schema_versions(&[newer as u32]).await;
    let loader = pipeline.start_loader();
    let error = pipeline
        .instance_error(loader, Duration::from_secs(60))
        .await;
    assert!(
        error.contains(&format!(
            "schema version {newer}, newer than this loader knows"
        )) && error.contains("CLICKHOUSE_DATABASE"),
        "{error}"
    );
    pipeline.stop().await;
}
