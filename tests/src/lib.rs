//! Helpers for the end-to-end tests: the real Kafka broker and ClickHouse server started
//! by `scripts/dev-services`, and the three services started in this process on their
//! own topics, consumer groups and database, so tests never see each other's data.
//!
//! Services are found through `KAFKA_BROKERS` and `CLICKHOUSE_URL` (defaults: the
//! dev-services addresses). A service that does not answer fails the test; nothing here
//! skips.

pub mod procs;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runtime::{KafkaArgs, TopicArgs};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The tenant and token every pipeline accepts.
pub const TENANT: &str = "acme";
pub const TOKEN: &str = "tok_acme_e2e_0123456789";

/// Where the development services are.
#[derive(Debug, Clone)]
pub struct Services {
    pub kafka_brokers: String,
    pub clickhouse_url: String,
}

impl Services {
    /// Reads the addresses and checks both services answer, failing with what to do.
    pub async fn require() -> Services {
        let services = Services {
            kafka_brokers: std::env::var("KAFKA_BROKERS")
                .unwrap_or_else(|_| "127.0.0.1:19092".into()),
            clickhouse_url: std::env::var("CLICKHOUSE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:18123".into()),
        };
        let hint = "start them with `scripts/dev-services up`, or run the whole suite with `scripts/test.sh`";
        for broker in services.kafka_brokers.split(',') {
            let reachable = tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::TcpStream::connect(broker.trim()),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            assert!(reachable, "Kafka is not reachable at {broker}: {hint}");
        }
        let ping = reqwest::get(format!("{}/ping", services.clickhouse_url)).await;
        assert!(
            ping.is_ok_and(|r| r.status().is_success()),
            "ClickHouse is not reachable at {}: {hint}",
            services.clickhouse_url
        );
        services
    }
}

/// The settings a service process needs on the single-node development broker (the
/// defaults are those of a three-broker cluster).
pub fn single_broker_env() -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_TOPIC_REPLICATION", "1".into()),
        ("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", "1".into()),
    ]
}

/// A name no other test run uses: `prefix_<pid>_<time>_<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Which stages to start.
#[derive(Debug, Clone, Copy)]
pub struct Stages {
    pub transform: bool,
    pub loader: bool,
}

impl Stages {
    pub const ALL: Stages = Stages {
        transform: true,
        loader: true,
    };
}

/// How ingest is set up in a test pipeline.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub spool_dir: Option<std::path::PathBuf>,
    pub produce_timeout_ms: u64,
    pub max_in_flight: usize,
    /// Partitions of the pipeline's topics.
    pub partitions: i32,
    /// Brokers for ingest alone (e.g. a closed port: Kafka down for ingest only, without
    /// touching the shared broker); `None`: the pipeline's.
    pub kafka_brokers: Option<String>,
    /// More ingest arguments (`--name=value`).
    pub args: Vec<String>,
}

impl Default for IngestOptions {
    fn default() -> IngestOptions {
        IngestOptions {
            spool_dir: None,
            produce_timeout_ms: 10_000,
            max_in_flight: 4096,
            partitions: 3,
            kafka_brokers: None,
            args: Vec::new(),
        }
    }
}

type Task = JoinHandle<Result<(), String>>;

/// The three services running in this process against the real broker and server.
pub struct Pipeline {
    pub ingest_url: String,
    pub clickhouse: ClickHouse,
    pub topics: TopicArgs,
    pub kafka: KafkaArgs,
    /// Settings for the next `transform` started with [`Pipeline::start_transform`].
    pub transform_config: transform::Config,
    /// Settings for the next `loader` started with [`Pipeline::start_loader`].
    pub loader_config: loader::Config,
    shutdown: CancellationToken,
    ingest: (CancellationToken, Task),
    ingest_options: IngestOptions,
    /// The Kafka, topic and log arguments every service of the pipeline gets.
    common: Vec<String>,
    instances: Vec<Instance>,
    next_id: usize,
}

/// A running `transform` or `loader`, with its own stop token.
struct Instance {
    id: usize,
    name: &'static str,
    stop: CancellationToken,
    task: Task,
}

impl Pipeline {
    pub async fn start(stages: Stages) -> Pipeline {
        Pipeline::start_with(stages, IngestOptions::default()).await
    }

    pub async fn start_with(stages: Stages, ingest_options: IngestOptions) -> Pipeline {
        let services = Services::require().await;
        let name = unique("e2e");
        let database = format!("sb_{name}");
        // Every service gets its settings as its command line would: the defaults are
        // the binaries' own.
        let log_filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into());
        let common = vec![
            format!("--kafka-brokers={}", services.kafka_brokers),
            format!("--raw-topic={name}.raw"),
            format!("--normalized-topic={name}.normalized"),
            format!("--dlq-topic={name}.dlq"),
            format!("--topic-partitions={}", ingest_options.partitions),
            // The development broker is a single node.
            "--topic-replication=1".into(),
            "--topic-min-insync-replicas=1".into(),
            format!("--log-filter={log_filter}"),
        ];
        let transform_config: transform::Config = parse(
            "transform",
            &common,
            &[
                format!("--group-id={name}-transform"),
                format!("--erasures-topic={name}.erasures"),
                "--delivery-timeout-ms=30000".into(),
                "--metrics-listen=".into(),
            ],
        );
        let loader_config: loader::Config = parse(
            "loader",
            &common,
            &[
                format!("--group-id={name}-loader"),
                format!("--erasures-topic={name}.erasures"),
                format!("--clickhouse-url={}", services.clickhouse_url),
                format!("--clickhouse-database={database}"),
                "--clickhouse-compression=lz4".into(),
                "--batch-max-age-ms=200".into(),
                "--metrics-listen=".into(),
            ],
        );
        let (kafka, topics) = (
            transform_config.kafka.clone(),
            transform_config.topics.clone(),
        );
        let _ = runtime::logging::init(&transform_config.log, "tests");
        let shutdown = CancellationToken::new();

        let (ingest_url, ingest) = start_ingest(&common, &ingest_options);

        let pipeline = Pipeline {
            ingest_url,
            clickhouse: ClickHouse::new(&services.clickhouse_url, &database),
            topics,
            kafka,
            shutdown,
            ingest,
            ingest_options,
            common,
            transform_config,
            loader_config,
            instances: Vec::new(),
            next_id: 0,
        };
        let mut pipeline = pipeline;
        if stages.transform {
            pipeline.start_transform();
        }
        if stages.loader {
            pipeline.start_loader();
        }
        pipeline.wait_until_ingest_answers().await;
        // A test's faults are for a running pipeline: wait until the services started
        // here have finished starting (each joins its group once it consumes).
        if stages.transform {
            pipeline
                .wait_until_consuming(&format!("{name}-transform"))
                .await;
        }
        if stages.loader {
            pipeline
                .wait_until_consuming(&format!("{name}-loader"))
                .await;
        }
        pipeline
    }

    /// Waits (up to 60 s) until the consumer group `group` has a member, failing the test
    /// if a service stops meanwhile.
    async fn wait_until_consuming(&self, group: &str) {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = self
            .kafka
            .client_config()
            .set("group.id", format!("{group}-observer"))
            .create()
            .expect("a Kafka client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let members = client
                .fetch_group_list(Some(group), Duration::from_secs(5))
                .map(|list| {
                    list.groups()
                        .iter()
                        .map(|g| g.members().len())
                        .sum::<usize>()
                })
                .unwrap_or(0);
            if members > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{group} had no member within 60 s"
            );
            self.assert_running();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts one more `transform` (same consumer group); returns its id.
    pub fn start_transform(&mut self) -> usize {
        let config = self.transform_config.clone();
        let stop = self.shutdown.child_token();
        let token = stop.clone();
        let task = tokio::spawn(async move { transform::run(config, token).await.map_err(failed) });
        self.add_instance("transform", stop, task)
    }

    /// Starts one more `loader` (same consumer group); returns its id.
    pub fn start_loader(&mut self) -> usize {
        let config = self.loader_config.clone();
        let stop = self.shutdown.child_token();
        let token = stop.clone();
        let task = tokio::spawn(async move { loader::run(config, token).await.map_err(failed) });
        self.add_instance("loader", stop, task)
    }

    fn add_instance(&mut self, name: &'static str, stop: CancellationToken, task: Task) -> usize {
        self.next_id += 1;
        self.instances.push(Instance {
            id: self.next_id,
            name,
            stop,
            task,
        });
        self.next_id
    }

    /// Stops an instance gracefully, as on SIGTERM, and waits for it.
    pub async fn stop_instance(&mut self, id: usize) {
        let instance = self.take_instance(id);
        instance.stop.cancel();
        finish(instance.name, instance.task).await;
    }

    /// Kills an instance at whatever it is doing, without its shutdown steps (its Kafka
    /// clients are dropped, so the broker sees it leave).
    pub async fn kill_instance(&mut self, id: usize) {
        let instance = self.take_instance(id);
        instance.task.abort();
        let _ = instance.task.await;
    }

    /// Waits (up to `within`) for an instance to stop on its own, and returns its error.
    pub async fn instance_error(&mut self, id: usize, within: Duration) -> String {
        let instance = self.take_instance(id);
        match tokio::time::timeout(within, instance.task).await {
            Ok(Ok(Err(e))) => e,
            Ok(Ok(Ok(()))) => panic!("{} stopped without an error", instance.name),
            Ok(Err(e)) => panic!("{} panicked: {e}", instance.name),
            Err(_) => panic!("{} still running after {within:?}", instance.name),
        }
    }

    fn take_instance(&mut self, id: usize) -> Instance {
        let index = self
            .instances
            .iter()
            .position(|i| i.id == id)
            .expect("a running instance");
        self.instances.remove(index)
    }

    /// Waits until ingest says it can accept durably (its topic has leaders, or it has a
    /// spool with room).
    async fn wait_until_ingest_answers(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.ingest_url)).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "ingest was not ready within 60 s"
            );
            self.assert_running();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops ingest gracefully and starts a new one (same spool, new port) with
    /// `options`.
    pub async fn restart_ingest_with(&mut self, options: IngestOptions) {
        self.ingest_options = options;
        self.restart_ingest().await;
    }

    /// Stops ingest gracefully and starts a new one (same settings and spool, new port).
    pub async fn restart_ingest(&mut self) {
        self.ingest.0.cancel();
        let (url, ingest) = start_ingest(&self.common, &self.ingest_options);
        let (_, old) = std::mem::replace(&mut self.ingest, ingest);
        match tokio::time::timeout(Duration::from_secs(60), old).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("ingest did not stop cleanly: {other:?}"),
        }
        self.ingest_url = url;
        self.wait_until_ingest_answers().await;
    }

    /// Waits for the loader's migrations; on a server with insert deduplication tokens,
    /// stops background merges of the storage tables, so that their physical row counts
    /// show what each insert stored (a merge would collapse repeated rows and hide a
    /// repeated insert). Returns whether physical counts can be asserted.
    pub async fn stop_merges_when_ready(&self) -> bool {
        self.wait_for_rows(
            "SELECT version FROM {db}.schema_migrations",
            warehouse::migrations::MIGRATIONS.len(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        if !self.clickhouse.has_dedup_tokens().await {
            return false;
        }
        for table in warehouse::Table::ALL {
            self.clickhouse
                .execute(&format!("SYSTEM STOP MERGES {{db}}.{table}"))
                .await
                .unwrap();
        }
        true
    }

    /// Deletes the pipeline's topics and creates them again, empty, as when Kafka's data
    /// is wiped: offsets start again at 0. Stop transform and loader first.
    pub async fn recreate_topics(&self) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        use rdkafka::client::DefaultClientContext;
        let names = [
            self.topics.raw_topic.as_str(),
            self.topics.normalized_topic.as_str(),
            self.topics.dlq_topic.as_str(),
        ];
        let admin: AdminClient<DefaultClientContext> = self.kafka.client_config().create().unwrap();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.delete_topics(&names, &options).await.unwrap() {
            result.unwrap_or_else(|(topic, code)| panic!("deleting {topic}: {code}"));
        }
        // Deletion completes in the background: wait until no topic is listed.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let metadata = admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(10))
                .unwrap();
            let left = metadata
                .topics()
                .iter()
                .filter(|t| names.contains(&t.name()))
                .count();
            if left == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "topics not deleted within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let topics = [
            self.topics.raw(),
            self.topics.normalized(),
            self.topics.dlq(),
        ];
        self.kafka.create_missing_topics(&topics).await.unwrap();
    }

    /// Fails the test if a service stopped on its own (its error is in the log).
    pub fn assert_running(&self) {
        assert!(
            !self.ingest.1.is_finished(),
            "ingest stopped unexpectedly; rerun with TEST_LOG=info to see why"
        );
        for instance in &self.instances {
            assert!(
                !instance.task.is_finished(),
                "{} stopped unexpectedly; rerun with TEST_LOG=info to see why",
                instance.name
            );
        }
    }

    /// POSTs `body` to `/hooks/<token>/<event>`; returns the status and the JSON answer.
    pub async fn post(&self, event: &str, body: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/hooks/{TOKEN}/{event}", self.ingest_url))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST to ingest");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `sql` against the pipeline's database until it returns at least `n` rows,
    /// failing after `within` or as soon as a service stops on its own.
    pub async fn wait_for_rows(
        &self,
        sql: &str,
        n: usize,
        within: Duration,
    ) -> Result<Vec<Value>, String> {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running();
            let last = match self.clickhouse.rows(sql).await {
                Ok(rows) if rows.len() >= n => return Ok(rows),
                Ok(rows) => format!("{} of {n} rows", rows.len()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("after {within:?}: {last} for `{sql}`"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The event ids in `raw_events`, once there are at least `n` (see
    /// [`Pipeline::wait_for_rows`]).
    pub async fn stored_event_ids(&self, n: usize, within: Duration) -> HashSet<String> {
        let rows = self
            .wait_for_rows("SELECT event_id FROM {db}.raw_events", n, within)
            .await
            .unwrap();
        rows.iter()
            .map(|r| r["event_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Records `versions` in the database's `schema_migrations`, as a loader that applied
    /// them would (creating both if missing), without applying any migration.
    pub async fn record_schema_versions(&self, versions: &[u32]) {
        let values: Vec<String> = versions
            .iter()
            .map(|v| format!("({v}, 'recorded')"))
            .collect();
        for sql in [
            "CREATE DATABASE IF NOT EXISTS {db}".to_owned(),
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
             (version UInt32, name String, applied_at DateTime('UTC') DEFAULT now()) \
             ENGINE = MergeTree ORDER BY version"
                .to_owned(),
            format!(
                "INSERT INTO {{db}}.schema_migrations (version, name) VALUES {}",
                values.join(", ")
            ),
        ] {
            self.clickhouse.execute(&sql).await.unwrap();
        }
    }

    /// Stops every service, reports any that failed, and drops the test database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.ingest.0.cancel();
        for instance in self.instances {
            finish(instance.name, instance.task).await;
        }
        finish("ingest", self.ingest.1).await;
        self.clickhouse.drop_database().await;
    }
}

/// A service's error as the test reports it; printed at once, since the test may only
/// notice later that the service stopped.
fn failed(e: impl std::fmt::Display) -> String {
    eprintln!("service failed: {e}");
    e.to_string()
}

/// Waits for a stopping service and fails the test if it failed.
async fn finish(name: &str, task: Task) {
    match tokio::time::timeout(Duration::from_secs(30), task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("{name} failed: {e}"),
        Ok(Err(e)) => panic!("{name} panicked: {e}"),
        Err(_) => panic!("{name} did not stop within 30 s"),
    }
}

/// A service's configuration from command-line arguments, as its binary reads them.
pub fn parse<C: clap::Parser>(bin: &str, common: &[String], own: &[String]) -> C {
    let argv = std::iter::once(bin.to_owned()).chain(common.iter().chain(own).cloned());
    C::try_parse_from(argv).unwrap_or_else(|e| panic!("{bin} arguments: {e}"))
}

/// Starts ingest on a free port; returns its URL, and its own shutdown token and task.
fn start_ingest(common: &[String], options: &IngestOptions) -> (String, (CancellationToken, Task)) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut own = vec![
        format!("--listen={}", listener.local_addr().unwrap()),
        format!("--tokens={TENANT}={TOKEN}"),
        format!("--produce-timeout-ms={}", options.produce_timeout_ms),
        "--retry-after-s=1".into(),
        format!("--max-in-flight={}", options.max_in_flight),
    ];
    if let Some(dir) = &options.spool_dir {
        own.push(format!("--spool-dir={}", dir.display()));
    }
    own.extend(options.args.iter().cloned());
    let mut common = common.to_vec();
    if let Some(brokers) = &options.kafka_brokers {
        common.retain(|arg| !arg.starts_with("--kafka-brokers="));
        common.push(format!("--kafka-brokers={brokers}"));
    }
    let config: ingest::Config = parse("ingest", &common, &own);
    config.validate().unwrap();
    let token = CancellationToken::new();
    let stop = token.clone();
    let task =
        tokio::spawn(async move { ingest::run(config, listener, stop).await.map_err(failed) });
    (url, (token, task))
}

/// A ClickHouse database queried over HTTP, as an analyst's client would.
pub struct ClickHouse {
    url: String,
    pub database: String,
    http: reqwest::Client,
}

impl ClickHouse {
    pub fn new(url: &str, database: &str) -> ClickHouse {
        ClickHouse {
            url: url.to_owned(),
            database: database.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The server's HTTP endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` (with `{db}` replaced by the database) and returns its rows.
    pub async fn rows(&self, sql: &str) -> Result<Vec<Value>, String> {
        let sql = format!("{} FORMAT JSONEachRow", sql.replace("{db}", &self.database));
        let response = self
            .http
            .post(&self.url)
            .query(&[
                ("output_format_json_quote_64bit_integers", "0"),
                ("max_execution_time", "10"),
            ])
            .body(sql.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        text.lines()
            .map(|line| serde_json::from_str(line).map_err(|e| format!("{e}: {line}")))
            .collect()
    }

    /// Runs a statement that returns nothing (DDL, INSERT … VALUES).
    pub async fn execute(&self, sql: &str) -> Result<(), String> {
        let response = self
            .http
            .post(&self.url)
            .body(sql.replace("{db}", &self.database))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{status}: {text}"))
        }
    }

    /// The server's version, e.g. `18.16.1` or `26.9.2.1`.
    pub async fn version(&self) -> String {
        let rows = self.rows("SELECT version() AS v").await.unwrap();
        rows[0]["v"].as_str().unwrap_or_default().to_owned()
    }

    /// Whether the server deduplicates inserts by token (the loader then sends them).
    pub async fn has_dedup_tokens(&self) -> bool {
        loader::sink::supports_dedup_token(&self.version().await)
    }

    async fn drop_database(&self) {
        let _ = self
            .http
            .post(&self.url)
            .body(format!("DROP DATABASE IF EXISTS {}", self.database))
            .send()
            .await;
    }
}

/// A golden fixture of the `normalize` crate: its event slug and the body to send.
pub fn fixture(name: &str) -> (String, String) {
    let path = format!(
        "{}/../normalize/tests/fixtures/{name}.input.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading fixture {path}: {e}"));
    let input: Value = serde_json::from_str(&text).unwrap();
    let body = match input["body_text"].as_str() {
        Some(text) => text.to_owned(),
        None => input["body"].to_string(),
    };
    (input["event"].as_str().unwrap().to_owned(), body)
}

/// The names of every golden fixture of the `normalize` crate.
pub fn fixture_names() -> Vec<String> {
    let dir = format!("{}/../normalize/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".input.json")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Runs `scripts/dev-services <action> <service>` (`up`, `down`, `kill`; `kafka` or
/// `clickhouse`), for fault tests.
pub fn dev_services(action: &str, service: &str) {
    run_script("dev-services", &[action, service]);
}

/// Runs `scripts/cluster-services <action> <node>` (`up`, `kill`; `kafka-1`…`kafka-3`,
/// `clickhouse-1`, `clickhouse-2`), for the fault tests of cluster mode.
pub fn cluster_services(action: &str, node: &str) {
    run_script("cluster-services", &[action, node]);
}

/// Runs `scripts/<name> <args>`; fails unless it succeeds.
fn run_script(name: &str, args: &[&str]) {
    let script = format!("{}/../scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new(&script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running scripts/{name}: {e}"));
    assert!(status.success(), "scripts/{name} {} failed", args.join(" "));
}

/// One step of a call's ordered history: step 0 is `call-ended`, later steps modify the
/// disposition to `STEP_<n>`; `duration` carries the step so the order can be read back.
pub fn call_step(call: i64, step: i64) -> (String, String) {
    let event = if step == 0 {
        "call-ended"
    } else {
        "call-disposition-modified"
    };
    let body = serde_json::json!({"id": call, "type": "inbound", "duration": step,
                                  "disposition": {"code": format!("STEP_{step}")}});
    (event.to_owned(), body.to_string())
}

/// Checks the effect of `calls` histories of `steps` events each (see [`call_step`]):
/// waits up to `within` for `calls × steps` events in `raw_events`, then for every call
/// merged at its last step with `steps` events; fails on a duplicate or a loss.
pub async fn assert_histories_complete(
    pipeline: &Pipeline,
    calls: i64,
    steps: i64,
    within: Duration,
) {
    let total = (calls * steps) as usize;
    let rows = pipeline
        .wait_for_rows("SELECT event_id FROM {db}.raw_events", total, within)
        .await
        .unwrap();
    assert_eq!(rows.len(), total, "every accepted event exactly once");
    let want = vec![serde_json::json!({
        "disposition_code": format!("STEP_{}", steps - 1), "events": steps, "n": calls
    })];
    let sql = "SELECT disposition_code, events, count() AS n FROM {db}.calls \
               GROUP BY disposition_code, events";
    // Raw rows are written just before call rows: allow the latter a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let merged = pipeline.clickhouse.rows(sql).await.unwrap();
        if merged == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "merged calls {merged:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per call id, the steps (see [`call_step`]) in the order of their first appearance in
/// the pipeline's normalized topic, read until `total` distinct events were seen.
pub async fn first_occurrences(pipeline: &Pipeline, total: usize) -> HashMap<String, Vec<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let topic = &pipeline.topics.normalized_topic;
    let consumer: BaseConsumer = pipeline
        .kafka
        .client_config()
        .set("group.id", unique("order-check"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut seen = HashMap::<String, Vec<i64>>::new();
    let mut distinct = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct.len() < total && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let event = schemas::avro::normalized_event()
            .decode(message.payload().unwrap())
            .unwrap();
        let step = event.call.as_ref().and_then(|c| c.duration_s).unwrap();
        let steps = seen.entry(event.entity_id.clone()).or_default();
        if distinct.insert(event.event_id) {
            steps.push(step);
        }
    }
    assert_eq!(distinct.len(), total, "normalized topic holds every event");
    seen
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().unwrap().to_string()
}

/// Fetches a Prometheus `/metrics` page and returns `name{labels} value` pairs; waits
/// up to 30 s for a service that is still starting.
pub async fn scrape(url: &str) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        match reqwest::get(url).await {
            Ok(response) => break response.text().await.unwrap(),
            Err(e) if Instant::now() >= deadline => panic!("GET {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A NectarDesk payload sample (`normalize/tests/samples/`).
pub fn sample(name: &str) -> String {
    let path = format!(
        "{}/../normalize/tests/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading sample {path}: {e}"))
}
