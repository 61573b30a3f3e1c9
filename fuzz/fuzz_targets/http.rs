//! The webhook handler with arbitrary bodies, headers, paths and source addresses. It
//! never panics and keeps the HTTP contract: no answer a retry could fix is a 4xx, no
//! body within the limit is refused (no 400), and what is accepted is stored whole, with
//! the event id of what was stored and a key that names the tenant.

#![no_main]

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, App};
use arbitrary::Arbitrary;
use clap::Parser;
use ingest::access::{parse_networks, Access};
use ingest::error::PublishError;
use ingest::publisher::{BoxFuture, Publisher, Record};
use ingest::routes::{configure, State};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "tok_acme_0123456789";

#[derive(Default)]
struct Recorder(Mutex<Vec<Record>>);

impl Publisher for Recorder {
    fn publish(&self, record: Record) -> BoxFuture<'_, Result<(), PublishError>> {
        self.0.lock().unwrap().push(record);
        Box::pin(async { Ok(()) })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

#[derive(Arbitrary, Debug)]
enum Path {
    WithSlug(String),
    WithoutSlug,
    WrongToken,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Encoding {
    None,
    Gzip,
    Deflate,
    Claimed(String),
}

#[derive(Arbitrary, Debug)]
struct Delivery {
    path: Path,
    post: bool,
    /// The peer: a trusted proxy (10.0.0.0/8) or not, IPv4 or IPv6 (maybe IPv4-mapped).
    peer: [u8; 16],
    peer_is_v4: bool,
    forwarded_for: Vec<Vec<u8>>,
    event_header: Option<Vec<u8>>,
    other_headers: Vec<(u8, Vec<u8>)>,
    encoding: Encoding,
    body: Vec<u8>,
}

type Handler = actix_service::boxed::BoxService<actix_http::Request, ServiceResponse, actix_web::Error>;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    static APP: RefCell<Option<(Handler, Arc<Recorder>)>> = const { RefCell::new(None) };
}

fn app() -> (Handler, Arc<Recorder>) {
    let config = ingest::Config::try_parse_from([
        "ingest",
        "--tokens=acme=tok_acme_0123456789",
        "--max-body-bytes=4096",
        "--max-json-depth=16",
    ])
    .unwrap();
    let access = Access {
        allowed: parse_networks("0.0.0.0/1, 128.0.0.0/2, 2000::/3").unwrap(),
        trusted_proxies: parse_networks("10.0.0.0/8, ::1").unwrap(),
    };
    let recorder = Arc::new(Recorder::default());
    let state = actix_web::web::Data::new(State::new(
        config.tokens,
        config.http,
        access,
        recorder.clone(),
    ));
    let app = RUNTIME.with(|rt| {
        rt.block_on(test::init_service(App::new().configure(|cfg| configure(cfg, state))))
    });
    (actix_service::boxed::service(app), recorder)
}

fn compress(encoding: &Encoding, body: &[u8]) -> (Vec<u8>, Option<String>) {
    fn written<W: Write>(mut writer: W, body: &[u8]) -> W {
        writer.write_all(body).unwrap();
        writer
    }
    let level = flate2::Compression::fast();
    match encoding {
        Encoding::None => (body.to_vec(), None),
        Encoding::Gzip => {
            let encoder = written(flate2::write::GzEncoder::new(Vec::new(), level), body);
            (encoder.finish().unwrap(), Some("gzip".into()))
        }
        Encoding::Deflate => {
            let encoder = written(flate2::write::ZlibEncoder::new(Vec::new(), level), body);
            (encoder.finish().unwrap(), Some("deflate".into()))
        }
        Encoding::Claimed(name) => (body.to_vec(), Some(name.clone())),
    }
}

fuzz_target!(|delivery: Delivery| {
    let uri = match &delivery.path {
        Path::WithSlug(slug) => format!("/hooks/{TOKEN}/{slug}"),
        Path::WithoutSlug => format!("/hooks/{TOKEN}"),
        Path::WrongToken => "/hooks/tok_wrong_0123456789/call-ended".to_owned(),
        Path::Raw(raw) => raw.clone(),
    };
    if uri.parse::<actix_web::http::Uri>().is_err() || !uri.starts_with('/') {
        return;
    }
    let peer = if delivery.peer_is_v4 {
        let [a, b, c, d, ..] = delivery.peer;
        std::net::SocketAddr::from(([a, b, c, d], 4711))
    } else {
        std::net::SocketAddr::from((delivery.peer, 4711))
    };
    let (body, encoding) = compress(&delivery.encoding, &delivery.body);
    let mut request = if delivery.post {
        test::TestRequest::post()
    } else {
        test::TestRequest::get()
    }
    .uri(&uri)
    .peer_addr(peer);
    for line in &delivery.forwarded_for {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_bytes(line) {
            request = request.append_header(("x-forwarded-for", value));
        }
    }
    let named = [
        "content-type",
        "x-event",
        "x-nectardesk-event",
        "transfer-encoding",
        "content-length",
        "expect",
    ];
    let event_header = delivery.event_header.iter().map(|value| (2, value));
    let headers = delivery.other_headers.iter().map(|(name, value)| (*name, value));
    for (name, value) in headers.chain(event_header) {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_bytes(value) {
            request = request.append_header((named[name as usize % named.len()], value));
        }
    }
    if let Some(encoding) = &encoding {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(encoding) {
            request = request.insert_header(("content-encoding", value));
        }
    }
    let request = request.set_payload(body).to_request();
    APP.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (app, recorder) = cell.get_or_insert_with(app);
        let response = RUNTIME.with(|rt| rt.block_on(app.call(request))).unwrap();
        let status = response.status().as_u16();
        let records: Vec<Record> = std::mem::take(&mut *recorder.0.lock().unwrap());
        // The contract: never a 4xx a retry could fix, never a body refused for its
        // content.
        assert!(
            [200, 403, 404, 413, 503].contains(&status),
            "answered {status} for {delivery:?}"
        );
        if status != 200 {
            assert!(records.is_empty());
            return;
        }
        if !delivery.post || !uri.starts_with("/hooks/") {
            return; // healthz, readyz, metrics
        }
        assert_eq!(records.len(), 1, "{delivery:?}");
        let envelope = schemas::avro::raw_envelope()
            .decode(&records[0].payload)
            .expect("a record ingest wrote decodes");
        assert_eq!(envelope.tenant, "acme");
        let id = normalize::identity::event_id_of_body("acme", &envelope.event, &envelope.body);
        assert_eq!(envelope.event_id, id, "the id is the stored body's");
        assert!(records[0].key.starts_with("acme:"), "{}", records[0].key);
        assert!(envelope.body.len() <= 4096);
        let marked = [&b"\xef\xbb\xbf"[..], b"\xff\xfe", b"\xfe\xff"]
            .iter()
            .any(|mark| delivery.body.starts_with(mark));
        if matches!(delivery.encoding, Encoding::None) && !marked {
            assert_eq!(envelope.body, delivery.body, "stored whole");
        }
    });
});
