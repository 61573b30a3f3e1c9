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
    let loader = pipeline.start_loader();
    let error = pipeline
        .instance_error(loader, Duration::from_secs(60))
        .await;
    assert!(
        error.contains(&format!(
            "has schema version 0, older than this loader needs ({known})"
        )) && error.contains("run `loader migrate`"),
        "{error}"
    );

    // Migrated by an older version: the newest migration is missing.
    let behind = known - 1;
    for sql in [
        "CREATE DATABASE IF NOT EXISTS {db}".to_owned(),
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
         (version UInt32, name String, applied_at DateTime('UTC') DEFAULT now()) \
         ENGINE = MergeTree ORDER BY version"
            .to_owned(),
        format!(
            "INSERT INTO {{db}}.schema_migrations (version, name) SELECT toUInt32(number + 1), 'older' FROM numbers({behind})"
        ),
    ] {
        pipeline.clickhouse.execute(&sql).await.unwrap();
    }
    let loader = pipeline.start_loader();
    let error = pipeline
        .instance_error(loader, Duration::from_secs(60))
        .await;
    assert!(
        error.contains(&format!(
            "has schema version {behind}, older than this loader needs ({known})"
        )) && error.contains("run `loader migrate`"),
        "{error}"
    );
    pipeline.stop().await;
}
