//! The receiver as an attacker, or a very odd sender, meets it, end to end against the
//! real broker and ClickHouse: odd bodies are all kept and never share an event id, every
//! refusal lands in `dead_letters` as its own row with its whole body, 2,000 concurrent
//! deliveries with Kafka down are all accepted and stored, slow senders do not delay
//! anyone, and a raw topic too small for the body limit stops the start.
//!
//! Kafka is "down" for ingest alone (it is pointed at a closed port): the shared broker
//! is never stopped. The faster checks of the same defects, against an in-memory
//! publisher, are in `ingest/tests/adversarial.rs`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{temp_dir, unique, IngestOptions, Pipeline, Services, Stages, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Tests that load the machine take turns, so timings stay meaningful.
static HEAVY: Semaphore = Semaphore::const_new(1);

/// A body a sender may produce: what is sent, its `Content-Encoding`, what must be
/// stored, and its status in `raw_events`.
struct Odd {
    sent: Vec<u8>,
    encoding: Option<&'static str>,
    stored: Vec<u8>,
    status: &'static str,
}

impl Odd {
    /// A body stored exactly as sent.
    fn kept(body: &[u8], status: &'static str) -> Odd {
        Odd {
            sent: body.to_vec(),
            encoding: None,
            stored: body.to_vec(),
            status,
        }
    }
}

async fn post_bytes(url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST to ingest");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_bodies_are_all_kept_and_never_share_an_event_id() {
    let _turn = HEAVY.acquire().await.unwrap();
    let pipeline = Pipeline::start(Stages::ALL).await;
    let url = format!("{}/hooks/{TOKEN}/call-ended", pipeline.ingest_url);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases = [
        Odd::kept(b"{\"id\": 18446744073709551616}", "invalid"),
        Odd::kept(b"{\"id\": 18446744073709551617}", "invalid"),
        Odd::kept(b"{\"id\": 18446744073709551618}", "invalid"),
        Odd::kept(br#"{"id":9100201,"id":9100202}"#, "normalized"),
        Odd::kept(br#"{"id":9100202}"#, "normalized"),
        Odd::kept(b"this is not JSON at all {", "invalid"),
        Odd {
            sent: b"\xef\xbb\xbf{\"id\": 9100203}".to_vec(),
            encoding: None,
            stored: b"{\"id\": 9100203}".to_vec(),
            status: "normalized",
        },
        Odd {
            sent: gzip(br#"{"id": 9100204}"#),
            encoding: Some("gzip"),
            stored: br#"{"id": 9100204}"#.to_vec(),
            status: "normalized",
        },
        Odd::kept(br#"{"id": 9100205, "note": "\ud83d"}"#, "invalid"),
        Odd::kept(br#"{"id": 9100206, "rate": 1e400}"#, "invalid"),
        Odd::kept(deep.as_bytes(), "invalid"),
    ];
    let mut expected = HashMap::new();
    for case in &cases {
        let headers: Vec<(&str, &str)> = case
            .encoding
            .map(|e| ("content-encoding", e))
            .into_iter()
            .collect();
        let (code, receipt) = post_bytes(&url, case.sent.clone(), &headers).await;
        let shown = String::from_utf8_lossy(&case.sent);
        assert_eq!(code, 200, "{shown}");
        let id = receipt["event_id"].as_str().unwrap().to_owned();
        let stored = (
            String::from_utf8_lossy(&case.stored).into_owned(),
            case.status,
        );
        assert!(
            expected.insert(id, stored).is_none(),
            "two bodies share an event id: {shown}"
        );
    }
    let rows = pipeline
        .wait_for_rows(
            "SELECT event_id, status, payload FROM {db}.raw_events",
            cases.len(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let stored: HashMap<String, (String, String)> = rows
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap().to_owned();
            (field("event_id"), (field("payload"), field("status")))
        })
        .collect();
    assert_eq!(stored.len(), cases.len(), "one row per delivery");
    for (id, (payload, status)) in &expected {
        let (got_payload, got_status) = &stored[id];
        assert_eq!(
            (got_payload, got_status.as_str()),
            (payload, *status),
            "{payload}"
        );
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_lands_as_its_own_dead_letter_with_its_whole_body() {
    const REFUSALS: usize = 1_200;
    let _turn = HEAVY.acquire().await.unwrap();
    let options = IngestOptions {
        args: vec!["--record-rejections-per-s=100000".into()],
        ..IngestOptions::default()
    };
    let pipeline = Pipeline::start_with(Stages::ALL, options).await;
    // A burst of deliveries with a token that is not (or no longer) valid: each is a 404
    // the sender will not retry, so each must be kept, in full, apart from the others.
    let client = reqwest::Client::new();
    let url = format!(
        "{}/hooks/tok_old_rotated_0123456789/call-ended",
        pipeline.ingest_url
    );
    let sends = (0..REFUSALS).map(|i| {
        let body = json!({"id": i, "pad": "x".repeat(3_000)}).to_string();
        let request = client.post(&url).body(body).send();
        async move { request.await.unwrap().status().as_u16() }
    });
    let statuses = futures_join(sends).await;
    assert!(statuses.iter().all(|s| *s == 404), "{statuses:?}");
    // And one the HTTP library refuses itself: more headers than it parses.
    let head_flood: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("POST /hooks/{TOKEN}/call-ended HTTP/1.1\r\nhost: x\r\n{head_flood}\r\n");
    let addr = pipeline.ingest_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let sql = "SELECT source_offset, http_status, length(payload) AS bytes, reason \
               FROM {db}.dead_letters WHERE stage = 'ingest'";
    let rows = pipeline
        .wait_for_rows(sql, REFUSALS + 1, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(rows.len(), REFUSALS + 1, "every refusal is its own row");
    let offsets: HashSet<i64> = rows
        .iter()
        .map(|r| r["source_offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets.len(), REFUSALS + 1, "refusal identities are unique");
    let whole = json!({"id": 0, "pad": "x".repeat(3_000)}).to_string().len() as i64;
    let refused: Vec<&Value> = rows.iter().filter(|r| r["http_status"] == 404).collect();
    assert_eq!(refused.len(), REFUSALS);
    assert!(
        refused
            .iter()
            .all(|r| r["bytes"].as_i64().unwrap() >= whole),
        "every refused body is kept whole"
    );
    let library: Vec<&Value> = rows.iter().filter(|r| r["http_status"] == 431).collect();
    assert_eq!(library.len(), 1, "the library's own 431 is recorded");
    assert!(library[0]["reason"]
        .as_str()
        .unwrap()
        .contains("header_too_large"));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_concurrent_deliveries_with_kafka_down_are_all_accepted_and_stored() {
    const DELIVERIES: usize = 2_000;
    let _turn = HEAVY.acquire().await.unwrap();
    let spool = temp_dir("spool");
    let down = IngestOptions {
        spool_dir: Some(spool.clone()),
        produce_timeout_ms: 1_000,
        kafka_brokers: Some(closed_port()),
        ..IngestOptions::default()
    };
    let mut pipeline = Pipeline::start_with(Stages::ALL, down).await;
    let client = reqwest::Client::new();
    let url = format!("{}/hooks/{TOKEN}/call-ended", pipeline.ingest_url);
    let started = Instant::now();
    let sends = (0..DELIVERIES).map(|i| {
        let body = json!({"id": 9_200_000 + i, "type": "inbound", "duration": i}).to_string();
        let request = client.post(&url).body(body).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            let receipt: Value = response.json().await.unwrap_or_default();
            (status, receipt["event_id"].as_str().map(str::to_owned))
        }
    });
    let answers = futures_join(sends).await;
    eprintln!(
        "{DELIVERIES} concurrent deliveries with Kafka down answered in {:?}",
        started.elapsed()
    );
    let accepted: HashSet<String> = answers.iter().filter_map(|(_, id)| id.clone()).collect();
    let statuses: HashSet<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        HashSet::from([200]),
        "every delivery is accepted from the spool"
    );
    assert_eq!(accepted.len(), DELIVERIES);

    // Kafka back (for ingest): the spool drains and every accepted event is stored once.
    let up = IngestOptions {
        spool_dir: Some(spool.clone()),
        ..IngestOptions::default()
    };
    pipeline.restart_ingest_with(up).await;
    let stored = pipeline
        .stored_event_ids(DELIVERIES, Duration::from_secs(180))
        .await;
    assert_eq!(stored, accepted);
    pipeline.stop().await;
    let _ = std::fs::remove_dir_all(spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_slow_senders_do_not_delay_deliveries_to_kafka() {
    let _turn = HEAVY.acquire().await.unwrap();
    let options = IngestOptions {
        max_in_flight: 50,
        ..IngestOptions::default()
    };
    let no_stages = Stages {
        transform: false,
        loader: false,
    };
    let pipeline = Pipeline::start_with(no_stages, options).await;
    let addr = pipeline.ingest_url.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /hooks/{TOKEN}/call-ended HTTP/1.1\r\nhost: x\r\ncontent-length: 10000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(tokio::spawn(async move {
            // One byte every 2 s, as in the report: 48 s for a short body.
            while stream.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut took = Vec::new();
    for call in 0..100 {
        let (event, body) = tests::call_step(9_300_000 + call, 0);
        let started = Instant::now();
        let (status, answer) = pipeline.post(&event, &body).await;
        took.push(started.elapsed());
        assert_eq!(status, 200, "delivery {call}: {answer}");
    }
    took.sort();
    let (p50, worst) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!("100 deliveries to Kafka beside 200 slow senders: p50 {p50:?}, slowest {worst:?}");
    assert!(worst < Duration::from_millis(100), "slowest {worst:?}");
    for task in slow {
        task.abort();
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_topic_too_small_for_the_body_limit_stops_the_start() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let services = Services::require().await;
    let topic = format!("{}.raw", unique("small"));
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &services.kafka_brokers)
        .create()
        .unwrap();
    let small =
        NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "100000");
    admin
        .create_topics([&small], &AdminOptions::new())
        .await
        .unwrap();
    let config: ingest::Config = tests::parse(
        "ingest",
        &[],
        &[
            format!("--kafka-brokers={}", services.kafka_brokers),
            format!("--raw-topic={topic}"),
            format!("--tokens=acme={TOKEN}"),
        ],
    );
    config.validate().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let run = ingest::run(config, listener, tokio_util::sync::CancellationToken::new());
    let error = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("ingest stops at start")
        .expect_err("a topic smaller than the body limit is a start error");
    assert!(error.to_string().contains("max.message.bytes"), "{error}");
}

/// A loopback port nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// Runs all of `futures` at once; their outputs in order.
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}
