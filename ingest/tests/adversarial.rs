//! Ingest as an attacker, or a very odd sender, meets it: the real server on a socket,
//! raw clients that trickle, flood, pipeline and mis-frame, and an in-memory publisher.
//! The same server runs against a real broker in `tests/tests/adversarial.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ingest::access::{parse_networks, Access};
use ingest::budget::Budget;
use ingest::error::PublishError;
use ingest::metrics::Metrics;
use ingest::publisher::{BoxFuture, Publisher, Record};
use ingest::routes::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "tok_acme_0123456789";

/// Keeps what it is given; while `held`, waits before answering.
#[derive(Default)]
struct Recorder {
    records: Mutex<Vec<Record>>,
    held: Option<Arc<tokio::sync::Semaphore>>,
}

impl Publisher for Recorder {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            if let Some(gate) = &self.held {
                let _ = gate.acquire().await;
            }
            self.records.lock().unwrap().push(record);
            Ok(())
        })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    budget: Budget,
    recorder: Arc<Recorder>,
}

impl Server {
    async fn start(args: &[&str]) -> Server {
        Server::start_with(args, Recorder::default(), Access::default(), "127.0.0.1:0").await
    }

    async fn start_with(args: &[&str], recorder: Recorder, access: Access, bind: &str) -> Server {
        let base = ["ingest", "--tokens", "acme=tok_acme_0123456789"];
        let config = ingest::Config::try_parse_from(base.iter().chain(args)).unwrap();
        config.validate().unwrap();
        let recorder = Arc::new(recorder);
        let state = State::new(config.tokens, config.http, access, recorder.clone());
        let (metrics, budget) = (state.metrics.clone(), state.budget.clone());
        let listener = std::net::TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(ingest::server::serve(state, listener));
        Server {
            addr,
            metrics,
            budget,
            recorder,
        }
    }

    /// Checks (after a moment: connections are accounted once they close) that `n`
    /// answers `status` were counted, and refused for `reason`.
    async fn assert_refused(&self, status: u16, reason: &str, n: f64) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answered = format!(r#"ingest_requests_total{{status="{status}"}}"#);
        let refused = format!(r#"ingest_rejected_total{{reason="{reason}"}}"#);
        assert_eq!((self.counted(&answered), self.counted(&refused)), (n, n));
    }

    fn counted(&self, series: &str) -> f64 {
        let text = self.metrics.render();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// A POST head for `body_len` bytes of body.
fn head(body_len: usize) -> String {
    format!(
        "POST /hooks/{TOKEN}/call-ended HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
    )
}

/// Sends `request` and reads until the server closes: the whole answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// POSTs one call with `connection: close`; returns the status and how long it took.
async fn deliver(addr: SocketAddr, id: u64) -> (u16, Duration) {
    let body = format!(r#"{{"id": {id}, "type": "inbound"}}"#);
    let request = format!(
        "{}{body}",
        head(body.len()).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n")
    );
    let started = Instant::now();
    let answer = exchange(addr, request.as_bytes()).await;
    (status(&answer), started.elapsed())
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_get_a_431_that_is_counted_and_recorded() {
    let server = Server::start(&["--max-header-bytes=8192"]).await;
    // More headers than the HTTP library parses (it answers 431 itself) …
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("POST /hooks/{TOKEN}/call-ended HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    assert_eq!(
        status(&exchange(server.addr, request.as_bytes()).await),
        431
    );
    // … and a head over INGEST_MAX_HEADER_BYTES (the guard answers 431).
    let big = format!(
        "POST /hooks/{TOKEN}/call-ended HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(status(&exchange(server.addr, big.as_bytes()).await), 431);
    server.assert_refused(431, "header_too_large", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_library_cannot_parse_gets_a_400_that_is_counted_and_recorded() {
    let server = Server::start(&[]).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n",
    ] {
        assert_eq!(status(&exchange(server.addr, garbage).await), 400);
    }
    server.assert_refused(400, "malformed_request", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_missing_headers_are_cut_off_without_an_answer() {
    let server = Server::start(&["--header-timeout-ms=300"]).await;
    let started = Instant::now();
    let mut trickling = TcpStream::connect(server.addr).await.unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let trickle = tokio::spawn(async move {
        for b in head(10).bytes() {
            if trickling.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        read_to_close(&mut trickling).await
    });
    assert_eq!(
        read_to_close(&mut silent).await,
        "",
        "no answer, only the end"
    );
    assert_eq!(trickle.await.unwrap(), "");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        server.counted(r#"ingest_connections_dropped_total{reason="slow_headers"}"#),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_gets_a_503_by_the_deadline() {
    let server = Server::start(&["--body-timeout-ms=1000"]).await;
    let body =
        r#"{"id": 1, "type": "inbound", "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head(body.len()).as_bytes()).await.unwrap();
    let started = Instant::now();
    // Every gap (100 ms) is far below the timeout; the body as a whole (8 s) is not.
    let trickle = tokio::spawn(async move {
        for b in body.bytes() {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Read the answer's head as it comes (the connection closes a moment later).
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0; 1024];
        let read = tokio::time::timeout(Duration::from_secs(15), reader.read(&mut chunk));
        match read.await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let answered_after = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 503, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after"));
    assert!(
        answered_after < Duration::from_secs(2),
        "{answered_after:?}"
    );
    assert!(server.recorder.records.lock().unwrap().is_empty());
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_slow_senders_neither_slow_nor_refuse_a_normal_delivery() {
    let server = Server::start(&["--max-in-flight=50", "--body-timeout-ms=30000"]).await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(head(1000).as_bytes()).await.unwrap();
        slow.push(tokio::spawn(async move {
            for _ in 0..40 {
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut worst = Duration::ZERO;
    for id in 0..100 {
        let (status, took) = deliver(server.addr, id).await;
        assert_eq!(status, 200, "delivery {id}");
        worst = worst.max(took);
    }
    eprintln!("slowest of 100 deliveries beside 200 slow senders: {worst:?}");
    assert!(worst < Duration::from_millis(100), "{worst:?}");
    for task in slow {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_over_the_memory_budget_get_503_and_the_budget_comes_back() {
    // 164 MB in all and 40 connections leave about 7.7 MB for bodies: five bodies of
    // 500 kB with their copies.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let recorder = Recorder {
        held: Some(gate.clone()),
        ..Recorder::default()
    };
    let args = ["--memory-budget-bytes=164000000", "--max-connections=40"];
    let server = Server::start_with(&args, recorder, Access::default(), "127.0.0.1:0").await;
    let body = format!(r#"{{"id": 1, "pad": "{}"}}"#, "x".repeat(500_000));
    let request = format!("{}{body}", head(body.len()));
    let senders: Vec<_> = (0..20)
        .map(|_| {
            let request = request.clone();
            let addr = server.addr;
            tokio::spawn(async move { status(&exchange(addr, request.as_bytes()).await) })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = server.budget.held();
    assert!(
        held >= 2_000_000,
        "bodies waiting for durability hold {held} bytes"
    );
    gate.add_permits(1000);
    let mut statuses: Vec<u16> = Vec::new();
    for sender in senders {
        statuses.push(sender.await.unwrap());
    }
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert!((2..20).contains(&accepted), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert_eq!(server.budget.held(), 0);
    assert!(server.counted(r#"ingest_rejected_total{reason="over_memory_budget"}"#) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pipelined_and_chunked_requests_still_work() {
    let server = Server::start(&["--header-timeout-ms=300"]).await;
    let body = r#"{"id": 5}"#;
    let one = format!("{}{body}", head(body.len()));
    // Two requests in one write, then a third after a pause longer than the head timeout.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(format!("{one}{one}").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let chunked = format!(
        "POST /hooks/{TOKEN}/call-ended HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    stream.write_all(chunked.as_bytes()).await.unwrap();
    let answers = read_to_close(&mut stream).await;
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 3, "{answers}");
    assert_eq!(server.recorder.records.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_sender_on_a_dual_stack_listener_is_on_its_allow_list() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        panic!("this machine cannot listen on IPv6; the test needs a dual-stack listener");
    }
    let access = Access {
        allowed: parse_networks("127.0.0.0/8").unwrap(),
        trusted_proxies: Vec::new(),
    };
    let server = Server::start_with(&[], Recorder::default(), access, "[::]:0").await;
    let v4 = SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    assert_eq!(deliver(v4, 1).await.0, 200);
    let source = {
        let records = server.recorder.records.lock().unwrap();
        schemas::avro::raw_envelope()
            .decode(&records[0].payload)
            .unwrap()
            .source_addr
    };
    assert_eq!(source, "127.0.0.1");
}
