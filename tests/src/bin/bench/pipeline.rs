//! The services as processes on their own topics and database: ingest, transform and
//! loader for freshness and capacity, or ingest alone with a sink that keeps nothing for
//! the load generator's ceiling. Every run starts empty and cleans up after itself
//! (database dropped, topics deleted), so repeated runs do not load the broker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use tests::procs::Procs;
use tests::{unique, ClickHouse, Services};

use crate::cpu::Target;
use crate::util::{self, CallBodies, TENANT, TOKEN};

/// Which services run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stages {
    /// ingest → Kafka → transform → Kafka → loader → ClickHouse.
    All,
    /// ingest with `INGEST_SINK=discard`: accepted and forgotten.
    DiscardingIngest,
}

pub(crate) struct Pipeline {
    procs: Procs,
    services: Services,
    topics: Vec<String>,
    run_dir: PathBuf,
    pub(crate) clickhouse: ClickHouse,
    /// `http://…/hooks/<token>/call-ended`.
    pub(crate) hook: String,
    /// The loader's `/metrics` (with [`Stages::All`]).
    loader_metrics: Option<String>,
}

impl Pipeline {
    pub(crate) async fn start(
        bins: &Path,
        partitions: i32,
        stages: Stages,
    ) -> anyhow::Result<Pipeline> {
        let services = Services::require().await;
        let name = unique("bench");
        let database = format!("sb_{name}");
        let run_dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&run_dir)?;
        let topics = ["raw", "normalized", "dlq"].map(|t| format!("{name}.{t}"));
        let mut common = vec![
            ("KAFKA_BROKERS", services.kafka_brokers.clone()),
            ("KAFKA_TOPIC_RAW", topics[0].clone()),
            ("KAFKA_TOPIC_NORMALIZED", topics[1].clone()),
            ("KAFKA_TOPIC_DLQ", topics[2].clone()),
            ("KAFKA_TOPIC_PARTITIONS", partitions.to_string()),
            ("METRICS_LISTEN", String::new()),
            ("RUST_LOG", util::log_filter()),
        ];
        common.extend(tests::single_broker_env());
        let ingest_addr = tests::free_addr();
        let sink = match stages {
            Stages::All => "kafka",
            Stages::DiscardingIngest => "discard",
        };
        let mut procs = Procs::default();
        procs.add(
            "ingest",
            bins,
            &run_dir,
            &common,
            &[
                ("INGEST_LISTEN", ingest_addr.clone()),
                ("INGEST_TOKENS", format!("{TENANT}={TOKEN}")),
                ("INGEST_SINK", sink.into()),
            ],
        )?;
        let mut loader_metrics = None;
        if stages == Stages::All {
            procs.add(
                "transform",
                bins,
                &run_dir,
                &common,
                &[("TRANSFORM_GROUP_ID", format!("{name}-t"))],
            )?;
            let metrics_addr = tests::free_addr();
            procs.add(
                "loader",
                bins,
                &run_dir,
                &common,
                &[
                    ("LOADER_GROUP_ID", format!("{name}-l")),
                    ("CLICKHOUSE_URL", services.clickhouse_url.clone()),
                    ("CLICKHOUSE_DATABASE", database.clone()),
                    // Set after `common`, so this one wins.
                    ("METRICS_LISTEN", metrics_addr.clone()),
                ],
            )?;
            loader_metrics = Some(format!("http://{metrics_addr}/metrics"));
        }
        for service in Pipeline::names(stages) {
            procs.start(service)?;
        }
        let pipeline = Pipeline {
            procs,
            clickhouse: ClickHouse::new(&services.clickhouse_url, &database),
            services,
            topics: topics.into(),
            run_dir,
            hook: format!("http://{ingest_addr}/hooks/{TOKEN}/call-ended"),
            loader_metrics,
        };
        if let Err(e) = pipeline.wait_until_ready(stages).await {
            pipeline.stop().await;
            return Err(e);
        }
        Ok(pipeline)
    }

    fn names(stages: Stages) -> &'static [&'static str] {
        match stages {
            Stages::All => &["ingest", "transform", "loader"],
            Stages::DiscardingIngest => &["ingest"],
        }
    }

    /// Ingest answers; with every stage, a first call went all the way to `calls` (so
    /// topics exist, groups have joined and the loader's migrations ran).
    async fn wait_until_ready(&self, stages: Stages) -> anyhow::Result<()> {
        let body = CallBodies::new(&util::call_template()?).body(1);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ok = client
                .post(&self.hook)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let ready = ok
                && (stages == Stages::DiscardingIngest
                    || self
                        .clickhouse
                        .rows("SELECT call_id FROM {db}.calls")
                        .await
                        .is_ok_and(|r| !r.is_empty()));
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the pipeline did not deliver a first call in 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Each running service as a CPU target.
    pub(crate) fn cpu_targets(&self) -> Vec<Target> {
        ["ingest", "transform", "loader"]
            .into_iter()
            .filter_map(|name| Some(Target::process(name, self.procs.pid(name)?)))
            .collect()
    }

    /// The loader's counters now (`name{labels}` → value); empty without a loader.
    pub(crate) async fn loader_counters(&self) -> HashMap<String, f64> {
        match &self.loader_metrics {
            Some(url) => tests::scrape(url).await,
            None => HashMap::new(),
        }
    }

    /// Stops the services, drops the database and deletes the topics.
    pub(crate) async fn stop(mut self) {
        self.procs.stop_all();
        let _ = self
            .clickhouse
            .execute("DROP DATABASE IF EXISTS {db}")
            .await;
        util::delete_topics(&self.services.kafka_brokers, &self.topics).await;
        util::keep_or_remove(&self.run_dir);
    }
}
