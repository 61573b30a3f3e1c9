//! In a cluster, loaders do not migrate at start (`loader migrate` does, once): a loader
//! started in cluster mode on a database that was never migrated, or that is behind the
//! migrations it knows, refuses to write and says to run `loader migrate`. The
//! development server defines a one-server cluster for this (`switchboard_dev_single`,
//! scripts/dev-services); nothing replicated is created, so no ZooKeeper is needed.

use std::time::Duration;

use tests::{Pipeline, Stages};

const DEV_CLUSTER: &str = "switchboard_dev_single";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loader_in_a_cluster_refuses_a_schema_older_than_it_needs_and_names_loader_migrate() {
    let mut pipeline = Pipeline::start(Stages {
        transform: false,
        loader: false,
    })
    .await;
    pipeline.loader_config.clickhouse.cluster = DEV_CLUSTER.to_owned();
    let known = warehouse::migrations::MIGRATIONS.len();

    // Never migrated: not even the database exists.
    assert_refused_as_older(&mut pipeline, 0, known).await;

    // Migrated by an older version: the newest migration is missing.
    let behind: Vec<u32> = (1..known as u32).collect();
    pipeline.record_schema_versions(&behind).await;
    assert_refused_as_older(&mut pipeline, known - 1, known).await;
    pipeline.stop().await;
}

/// Starts a loader and asserts that it stops, refusing schema version `found`.
async fn assert_refused_as_older(pipeline: &mut Pipeline, found: usize, known: usize) {
    let loader = pipeline.start_loader();
    let error = pipeline
        .instance_error(loader, Duration::from_secs(60))
        .await;
    assert!(
        error.contains(&format!(
            "has schema version {found}, older than this loader needs ({known})"
        )) && error.contains("run `loader migrate`"),
        "{error}"
    );
}
