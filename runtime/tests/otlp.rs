//! With OTEL_EXPORTER_OTLP_ENDPOINT set, spans leave the process as OTLP/HTTP protobuf
//! to `<endpoint>/v1/traces`, with the service's name.
//! The collector here is a plain socket that records what it receives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use runtime::LogArgs;

/// One HTTP request: the request line, the headers (lower-cased) and the body.
type Request = (String, Vec<String>, Vec<u8>);

fn collector() -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                headers.push(header.trim().to_lowercase());
            }
            let length = headers
                .iter()
                .find_map(|h| h.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            let _ = tx.send((line.trim().to_owned(), headers, body));
        }
    });
    (url, rx)
}

#[test]
fn spans_are_exported_to_the_configured_endpoint() {
    let (url, received) = collector();
    let telemetry = runtime::logging::init(
        &LogArgs {
            otlp_endpoint: url,
            log_filter: "off".into(),
            ..LogArgs::default()
        },
        "otlp-test",
    );
    tracing::info_span!("webhook", tenant = "acme").in_scope(|| {});
    drop(telemetry); // flushes the batch

    let (line, headers, body) = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the collector received a request");
    assert_eq!(line, "POST /v1/traces HTTP/1.1");
    assert!(
        headers.contains(&"content-type: application/x-protobuf".to_owned()),
        "{headers:?}"
    );
    // The protobuf carries the span and service names as plain strings.
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("webhook") && text.contains("otlp-test"),
        "{text}"
    );
}
