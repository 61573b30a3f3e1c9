//! The HTTP contract (README, "Webhook URLs"), checked against an in-memory publisher. The same
//! routes run against a real broker in the end-to-end tests (`tests/` crate).

use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{test, web, App};
use ingest::access::{parse_networks, Access};
use ingest::config::{HttpArgs, Tokens};
use ingest::error::PublishError;
use ingest::publisher::{BoxFuture, Publisher, Record};
use ingest::routes::{configure, State};
use schemas::avro;

const TOKEN: &str = "tok_acme_0123456789";
const OLD_TOKEN: &str = "tok_acme_previous_1";

#[derive(Default)]
struct Recorder {
    records: Mutex<Vec<(String, Vec<u8>)>>,
    down: bool,
    /// When set, publishing waits for this before it completes.
    gate: Option<Arc<tokio::sync::Notify>>,
}

impl Publisher for Recorder {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), PublishError>> {
        let Record { key, payload, .. } = record;
        Box::pin(async move {
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            if self.down {
                return Err(PublishError::Unavailable("broker down".into()));
            }
            self.records.lock().unwrap().push((key, payload));
            Ok(())
        })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { !self.down })
    }
}

/// Small limits, so that each one is easy to cross.
fn config() -> ingest::Config {
    use clap::Parser;
    ingest::Config::try_parse_from([
        "ingest".to_owned(),
        format!("--tokens=acme={TOKEN},acme={OLD_TOKEN}"),
        "--max-body-bytes=4096".into(),
        "--produce-timeout-ms=1000".into(),
        "--retry-after-s=3".into(),
        "--max-json-depth=8".into(),
        "--body-timeout-ms=1000".into(),
        "--max-in-flight=1".into(),
    ])
    .unwrap()
}

fn http() -> HttpArgs {
    config().http
}

fn tokens() -> Tokens {
    config().tokens
}

fn state(publisher: Arc<Recorder>) -> web::Data<State> {
    web::Data::new(State::new(tokens(), http(), Access::default(), publisher))
}

macro_rules! app {
    ($publisher:expr) => {{
        let state = state($publisher);
        test::init_service(App::new().configure(move |cfg| configure(cfg, state))).await
    }};
    (state $state:expr) => {{
        let state = $state.clone();
        test::init_service(App::new().configure(move |cfg| configure(cfg, state))).await
    }};
}

fn post(path: &str, body: &str) -> actix_web::test::TestRequest {
    test::TestRequest::post()
        .uri(path)
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_owned())
}

const CALL: &str = r#"{"id": 880142, "type": "inbound", "duration": 12}"#;

#[actix_web::test]
async fn accepted_event_is_published_with_its_key_and_unchanged_body() {
    let recorder = Arc::new(Recorder::default());
    let app = app!(recorder.clone());
    let resp = test::call_service(
        &app,
        post(&format!("/hooks/{TOKEN}/call-ended"), CALL).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let receipt: serde_json::Value = test::read_body_json(resp).await;
    let event_id = receipt["event_id"].as_str().unwrap().to_owned();
    assert_eq!(event_id.len(), 32);

    let records = recorder.records.lock().unwrap();
    assert_eq!(records.len(), 1);
    let (key, payload) = &records[0];
    assert_eq!(key, "acme:call:880142");
    let envelope = avro::raw_envelope().decode(payload).unwrap();
    assert_eq!(envelope.event_id, event_id);
    assert_eq!(
        (envelope.tenant.as_str(), envelope.event.as_str()),
        ("acme", "call-ended")
    );
    assert_eq!(envelope.body, CALL.as_bytes());
    assert!(envelope.received_at > 1_700_000_000_000);
}

#[actix_web::test]
async fn a_retry_gets_the_same_event_id_with_either_token() {
    let app = app!(Arc::new(Recorder::default()));
    let mut ids = Vec::new();
    for (token, body) in [
        (TOKEN, CALL),
        (OLD_TOKEN, r#"{"duration":12,"type":"inbound","id":880142}"#),
    ] {
        let resp = test::call_service(
            &app,
            post(&format!("/hooks/{token}/call-ended"), body).to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let receipt: serde_json::Value = test::read_body_json(resp).await;
        ids.push(receipt["event_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
}

#[actix_web::test]
async fn unknown_token_answers_exactly_like_an_unknown_path() {
    let app = app!(Arc::new(Recorder::default()));
    let by_token = test::call_service(
        &app,
        post("/hooks/tok_wrong_0123456789/call-ended", CALL).to_request(),
    )
    .await;
    assert_eq!(by_token.status(), StatusCode::NOT_FOUND);
    let by_token = test::read_body(by_token).await;
    let by_path = test::call_service(&app, post("/nothing/here", CALL).to_request()).await;
    assert_eq!(by_path.status(), StatusCode::NOT_FOUND);
    assert_eq!(by_token, test::read_body(by_path).await);
    // A known path with another method: the same answer, not the library's 405.
    let get = test::TestRequest::get().uri(&format!("/hooks/{TOKEN}/call-ended"));
    let by_method = test::call_service(&app, get.to_request()).await;
    assert_eq!(by_method.status(), StatusCode::NOT_FOUND);
    assert_eq!(by_token, test::read_body(by_method).await);
}

/// The record published for the one delivery `recorder` got: its key and envelope.
fn only_record(recorder: &Recorder) -> (String, schemas::RawEnvelope) {
    let records = recorder.records.lock().unwrap();
    assert_eq!(records.len(), 1);
    let (key, payload) = &records[0];
    (key.clone(), avro::raw_envelope().decode(payload).unwrap())
}

#[actix_web::test]
async fn a_body_that_is_not_json_is_kept_whole_and_keyed_by_its_event_id() {
    // A 400 would lose it (the sender never retries a 4xx); kept raw, the normalizer
    // marks it invalid with the reason, and a replay can read it once that is fixed.
    for body in [
        &b"{\"id\": "[..],
        b"",
        b"not json",
        b"\xff\xfe{\"id\":1}\x00",
    ] {
        let recorder = Arc::new(Recorder::default());
        let app = app!(recorder.clone());
        let resp = test::call_service(
            &app,
            post(&format!("/hooks/{TOKEN}/call-ended"), "")
                .set_payload(body.to_vec())
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "{body:?}");
        let receipt: serde_json::Value = test::read_body_json(resp).await;
        let (key, envelope) = only_record(&recorder);
        assert_eq!(envelope.body, body, "kept whole");
        assert_eq!(envelope.event, "call-ended");
        assert_eq!(
            key,
            format!("acme:event:{}", receipt["event_id"].as_str().unwrap())
        );
    }
}

#[actix_web::test]
async fn json_nested_deeper_than_the_limit_is_kept_and_keyed_by_its_event_id() {
    let recorder = Arc::new(Recorder::default());
    let app = app!(recorder.clone());
    let deep = format!(r#"{{"id": 5, "x": {}1{}}}"#, "[".repeat(9), "]".repeat(9));
    let resp = test::call_service(
        &app,
        post(&format!("/hooks/{TOKEN}/call-ended"), &deep).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (key, envelope) = only_record(&recorder);
    assert_eq!(key, format!("acme:event:{}", envelope.event_id));
    assert_eq!(envelope.body, deep.as_bytes());
}

#[actix_web::test]
async fn recoverable_bodies_are_accepted() {
    // A byte-order mark, numbers beyond a double, a lone surrogate (JavaScript cutting
    // text inside an emoji): all JSON a sender may produce.
    let cases: [(&[u8], &[u8]); 4] = [
        (b"\xef\xbb\xbf{\"id\": 7}", b"{\"id\": 7}"),
        (
            b"{\"id\": 7, \"rate\": 1e400}",
            b"{\"id\": 7, \"rate\": 1e400}",
        ),
        (
            b"{\"id\": 7, \"note\": \"\\ud83d\"}",
            b"{\"id\": 7, \"note\": \"\\ud83d\"}",
        ),
        (
            b"{\"id\": 18446744073709551616}",
            b"{\"id\": 18446744073709551616}",
        ),
    ];
    for (sent, stored) in cases {
        let recorder = Arc::new(Recorder::default());
        let app = app!(recorder.clone());
        let req = post(&format!("/hooks/{TOKEN}/call-ended"), "").set_payload(sent.to_vec());
        let resp = test::call_service(&app, req.to_request()).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{:?}",
            String::from_utf8_lossy(sent)
        );
        let (_, envelope) = only_record(&recorder);
        assert_eq!(envelope.body, stored);
    }
}

#[actix_web::test]
async fn compressed_bodies_are_stored_decompressed() {
    use std::io::Write;
    let gzip = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
        e.write_all(CALL.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let deflate = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
        e.write_all(CALL.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let brotli = brotli_stored(CALL.as_bytes());
    for (encoding, body) in [("gzip", gzip), ("deflate", deflate), ("br", brotli)] {
        let recorder = Arc::new(Recorder::default());
        let app = app!(recorder.clone());
        let req = post(&format!("/hooks/{TOKEN}/call-ended"), "")
            .insert_header(("content-encoding", encoding))
            .set_payload(body);
        let resp = test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{encoding}");
        let (key, envelope) = only_record(&recorder);
        assert_eq!(
            (key.as_str(), envelope.body.as_slice()),
            ("acme:call:880142", CALL.as_bytes())
        );
    }
}

/// `data` as a brotli stream of one uncompressed meta-block (RFC 7932, section 9.2): a
/// valid stream, without a brotli encoder among the dependencies.
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 16);
    // Bits, first bit lowest: WBITS=16 (0), ISLAST=0, MNIBBLES=4 (00), MLEN-1 (16 bits),
    // ISUNCOMPRESSED=1; then the data from the next byte; then ISLAST=1, ISLASTEMPTY=1.
    let header = ((data.len() as u32 - 1) << 4) | (1 << 20);
    let mut out = header.to_le_bytes()[..3].to_vec();
    out.extend_from_slice(data);
    out.push(0b11);
    out
}

#[actix_web::test]
async fn a_compressed_body_over_the_limit_once_decompressed_is_a_413() {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(format!(r#"{{"id": 1, "pad": "{}"}}"#, " ".repeat(100_000)).as_bytes())
        .unwrap();
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 4096);
    let app = app!(Arc::new(Recorder::default()));
    let req = post(&format!("/hooks/{TOKEN}/call-ended"), "")
        .insert_header(("content-encoding", "gzip"))
        .set_payload(bomb);
    let resp = test::call_service(&app, req.to_request()).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[actix_web::test]
async fn a_body_in_an_encoding_ingest_cannot_undo_is_kept_as_received() {
    for (encoding, body) in [("zstd", &b"\x28\xb5\x2f\xfd"[..]), ("gzip", b"{\"id\": 1}")] {
        let recorder = Arc::new(Recorder::default());
        let app = app!(recorder.clone());
        let req = post(&format!("/hooks/{TOKEN}/call-ended"), "")
            .insert_header(("content-encoding", encoding))
            .set_payload(body.to_vec());
        let resp = test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{encoding}");
        assert_eq!(only_record(&recorder).1.body, body);
    }
}

#[actix_web::test]
async fn body_over_the_limit_is_a_413() {
    let app = app!(Arc::new(Recorder::default()));
    let big = format!(r#"{{"id": 1, "pad": "{}"}}"#, "x".repeat(5000));
    let resp = test::call_service(
        &app,
        post(&format!("/hooks/{TOKEN}/call-ended"), &big).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[actix_web::test]
async fn broker_unavailable_is_a_503_with_retry_after_never_a_4xx() {
    let app = app!(Arc::new(Recorder {
        down: true,
        ..Recorder::default()
    }));
    let resp = test::call_service(
        &app,
        post(&format!("/hooks/{TOKEN}/call-ended"), CALL).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "3");
    let ready =
        test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health =
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(health.status(), StatusCode::OK);
}

#[actix_web::test]
async fn unknown_but_well_formed_event_is_accepted_and_keyed_by_event_id() {
    let recorder = Arc::new(Recorder::default());
    let app = app!(recorder.clone());
    let resp = test::call_service(
        &app,
        post(&format!("/hooks/{TOKEN}/call-transferred"), CALL).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let receipt: serde_json::Value = test::read_body_json(resp).await;
    let (key, payload) = recorder.records.lock().unwrap()[0].clone();
    assert_eq!(
        key,
        format!("acme:event:{}", receipt["event_id"].as_str().unwrap())
    );
    assert_eq!(
        avro::raw_envelope().decode(&payload).unwrap().event,
        "call-transferred"
    );
}

#[actix_web::test]
async fn without_a_slug_the_event_comes_from_a_header_or_the_body() {
    let recorder = Arc::new(Recorder::default());
    let app = app!(recorder.clone());
    let by_header =
        post(&format!("/hooks/{TOKEN}"), CALL).insert_header(("X-NectarDesk-Event", "Call Ended"));
    assert_eq!(
        test::call_service(&app, by_header.to_request())
            .await
            .status(),
        StatusCode::OK
    );
    let by_body = post(
        &format!("/hooks/{TOKEN}"),
        r#"{"event": "message-sent", "id": 5}"#,
    );
    assert_eq!(
        test::call_service(&app, by_body.to_request())
            .await
            .status(),
        StatusCode::OK
    );
    let unnamed = post(&format!("/hooks/{TOKEN}"), CALL);
    assert_eq!(
        test::call_service(&app, unnamed.to_request())
            .await
            .status(),
        StatusCode::OK
    );

    let events: Vec<(String, String)> = recorder
        .records
        .lock()
        .unwrap()
        .iter()
        .map(|(key, payload)| {
            (
                key.clone(),
                avro::raw_envelope().decode(payload).unwrap().event,
            )
        })
        .collect();
    assert_eq!(
        events[0],
        ("acme:call:880142".to_owned(), "call-ended".to_owned())
    );
    assert_eq!(
        events[1],
        ("acme:message:5".to_owned(), "message-sent".to_owned())
    );
    assert_eq!(events[2].1, "");
}

#[actix_web::test]
async fn a_source_off_the_allow_list_is_a_403_even_with_a_valid_token() {
    let access = Access {
        allowed: parse_networks("198.51.100.0/24").unwrap(),
        trusted_proxies: parse_networks("10.0.0.0/8").unwrap(),
    };
    let recorder = Arc::new(Recorder::default());
    let state = web::Data::new(State::new(tokens(), http(), access, recorder.clone()));
    let app = app!(state state);
    let from = |peer: &str, forwarded: Option<&str>| {
        let mut req =
            post(&format!("/hooks/{TOKEN}/call-ended"), CALL).peer_addr(peer.parse().unwrap());
        if let Some(forwarded) = forwarded {
            req = req.insert_header(("x-forwarded-for", forwarded));
        }
        req.to_request()
    };
    assert_eq!(
        test::call_service(&app, from("203.0.113.9:4000", None))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // An untrusted peer cannot claim an allowed address.
    assert_eq!(
        test::call_service(&app, from("203.0.113.9:4000", Some("198.51.100.7")))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // Through our proxy, the forwarded address counts.
    assert_eq!(
        test::call_service(&app, from("10.1.2.3:4000", Some("198.51.100.7")))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        test::call_service(&app, from("198.51.100.8:4000", None))
            .await
            .status(),
        StatusCode::OK
    );
    // HAProxy's forwardfor appends its hop as a line of its own: the client's spoofed
    // line comes first, and does not win.
    let two_lines = post(&format!("/hooks/{TOKEN}/call-ended"), CALL)
        .peer_addr("10.1.2.3:4000".parse().unwrap())
        .append_header(("x-forwarded-for", "198.51.100.7"))
        .append_header(("x-forwarded-for", "203.0.113.9"));
    assert_eq!(
        test::call_service(&app, two_lines.to_request())
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // An IPv4 sender on a dual-stack listener arrives IPv4-mapped.
    assert_eq!(
        test::call_service(&app, from("[::ffff:198.51.100.8]:4000", None))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        test::call_service(
            &app,
            from("[::ffff:10.1.2.3]:4000", Some("::ffff:198.51.100.9"))
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(recorder.records.lock().unwrap().len(), 4);
    let metrics = state.metrics.render();
    assert!(
        metrics.contains(r#"ingest_rejected_total{reason="forbidden"} 3"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn over_capacity_is_a_503_never_a_429() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let recorder = Arc::new(Recorder {
        gate: Some(gate.clone()),
        ..Recorder::default()
    });
    let state = state(recorder.clone());
    let app = app!(state state);
    let first = test::call_service(
        &app,
        post(&format!("/hooks/{TOKEN}/call-ended"), CALL).to_request(),
    );
    let second = async {
        // The first delivery holds the only slot while its publish waits at the gate.
        tokio::task::yield_now().await;
        let resp = test::call_service(
            &app,
            post(&format!("/hooks/{TOKEN}/call-ended"), r#"{"id": 2}"#).to_request(),
        )
        .await;
        gate.notify_one();
        resp
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers().get("retry-after").unwrap(), "3");
}

#[actix_web::test]
async fn during_shutdown_deliveries_get_a_503() {
    let state = state(Arc::new(Recorder::default()));
    let app = app!(state state);
    state.shutdown.cancel();
    let resp = test::call_service(
        &app,
        post(&format!("/hooks/{TOKEN}/call-ended"), CALL).to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
}

#[actix_web::test]
async fn metrics_count_refusals_by_reason() {
    let state = state(Arc::new(Recorder::default()));
    let app = app!(state state);
    test::call_service(
        &app,
        post("/hooks/tok_wrong_0123456789/call-ended", CALL).to_request(),
    )
    .await;
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(5000));
    test::call_service(
        &app,
        post(&format!("/hooks/{TOKEN}/call-ended"), &big).to_request(),
    )
    .await;
    test::call_service(&app, post("/nothing/here", CALL).to_request()).await;
    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(
        text.contains(r#"ingest_rejected_total{reason="not_found"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ingest_rejected_total{reason="too_large"} 1"#),
        "{text}"
    );
}
