//! The HTTP surface: webhook routes, health, readiness, metrics.
//!
//! A delivery is checked in the order of cost: shutdown, source address, token, event
//! slug (refusals are recorded with the body, read within the same bounds); then its body
//! is read whole (one deadline, a size limit, the memory budget) and unwrapped; only then
//! does it take an in-flight slot, so a slow sender holds none. What it becomes is
//! decided, the body is let go once its record is encoded, and the answer waits for
//! durability. Every body within the limit is accepted, JSON or not: the sender never
//! retries a 4xx, so refusing one would lose it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_http::ConnectionType;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use runtime::throttle::Throttle;
use schemas::{avro, RawEnvelope};

use crate::access::Access;
use crate::body::{self, BodyError, Decoded};
use crate::budget::{Budget, Charge};
use crate::config::{HttpArgs, Tokens};
use crate::delivery::{self, Identity};
use crate::error::{IngestError, PublishError};
use crate::metrics::Metrics;
use crate::publisher::{Publisher, Record};
use crate::rejections::{Rejection, Rejections};
use tracing::Instrument as _;

/// What every handler shares.
pub struct State {
    pub tokens: Tokens,
    pub http: HttpArgs,
    pub access: Access,
    pub publisher: Arc<dyn Publisher>,
    pub metrics: Arc<Metrics>,
    pub rejections: Arc<Rejections>,
    /// Deliveries whose body is in and that wait for durability; when none is left, the
    /// answer is 503 (overload).
    pub in_flight: Arc<Semaphore>,
    /// The memory bodies may take.
    pub budget: Budget,
    /// Cancelled when shutdown begins: from then on deliveries are answered 503.
    pub shutdown: CancellationToken,
    /// Deliveries that could not be stored are logged at most once per 10 s (they are
    /// all counted).
    pub not_stored: Mutex<Throttle>,
}

impl State {
    /// A state with the given publisher and default access rules, metrics and limits.
    pub fn new(
        tokens: Tokens,
        http: HttpArgs,
        access: Access,
        publisher: Arc<dyn Publisher>,
    ) -> State {
        let metrics = Arc::new(Metrics::new());
        State {
            in_flight: Arc::new(Semaphore::new(http.max_in_flight)),
            rejections: Arc::new(Rejections::new(metrics.clone(), None, 20)),
            budget: http.budget(),
            tokens,
            http,
            access,
            publisher,
            metrics,
            shutdown: CancellationToken::new(),
            not_stored: State::log_throttle(),
        }
    }

    /// The throttle for [`State::not_stored`].
    pub fn log_throttle() -> Mutex<Throttle> {
        Mutex::new(Throttle::new(Duration::from_secs(10)))
    }

    /// A 503 for `reason` (counted, not recorded: the sender retries it).
    fn unavailable(&self, reason: &str) -> IngestError {
        self.metrics.rejected(reason);
        IngestError::Unavailable {
            retry_after_s: self.http.retry_after_s,
        }
    }
}

/// Registers every route on an actix app. A known path with another method is answered
/// like an unknown path (404, counted and recorded), not with the library's own 405.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<State>) {
    let only = |path: &str, route: actix_web::Route| {
        web::resource(path)
            .route(route)
            .default_service(web::to(not_found))
    };
    cfg.app_data(state)
        .service(only(
            "/hooks/{token}/{event}",
            web::post().to(receive_with_event),
        ))
        .service(only(
            "/hooks/{token}",
            web::post().to(receive_without_event),
        ))
        .service(only("/healthz", web::get().to(healthz)))
        .service(only("/readyz", web::get().to(readyz)))
        .service(only("/metrics", web::get().to(metrics)))
        .default_service(web::to(not_found));
}

#[derive(Serialize)]
struct Receipt {
    event_id: String,
}

async fn receive_with_event(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> HttpResponse {
    let (token, event) = path.into_inner();
    receive(&state, &req, &token, Some(&event), body).await
}

async fn receive_without_event(
    state: web::Data<State>,
    req: HttpRequest,
    token: web::Path<String>,
    body: web::Payload,
) -> HttpResponse {
    receive(&state, &req, &token, None, body).await
}

/// How a delivery was answered, and whether its body was read to the end (if not, the
/// connection closes after the answer rather than reading on).
type Answer = Result<HttpResponse, (IngestError, bool)>;

async fn receive(
    state: &State,
    req: &HttpRequest,
    token: &str,
    path_event: Option<&str>,
    payload: web::Payload,
) -> HttpResponse {
    match deliver(state, req, token, path_event, payload).await {
        Ok(response) => response,
        Err((error, body_read)) => answer(&error, body_read),
    }
}

fn answer(error: &IngestError, body_read: bool) -> HttpResponse {
    let mut response = error.error_response();
    if !body_read {
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    response
}

async fn deliver(
    state: &State,
    req: &HttpRequest,
    token: &str,
    path_event: Option<&str>,
    payload: web::Payload,
) -> Answer {
    let deadline = Instant::now() + Duration::from_millis(state.http.body_timeout_ms);
    let client = client(state, req);
    let refusal = |reason, error, tenant, event: String| Refusal {
        reason,
        error,
        tenant,
        event,
        source: client.map(|ip| ip.to_string()).unwrap_or_default(),
    };
    if state.shutdown.is_cancelled() {
        return Err((state.unavailable("shutting_down"), false));
    }
    if !state.access.allows(client) {
        let refused = refusal("forbidden", IngestError::Forbidden, "", String::new());
        return Err(refuse(state, refused, payload, deadline).await);
    }
    let Some(tenant) = state.tokens.tenant_for(token) else {
        let hint: String = token.chars().take(4).collect();
        let refused = refusal(
            "not_found",
            IngestError::NotFound,
            "",
            format!("token {hint}…"),
        );
        return Err(refuse(state, refused, payload, deadline).await);
    };
    let event = match path_event.map(delivery::slugify) {
        Some(None) => {
            let refused = refusal("not_found", IngestError::NotFound, tenant, String::new());
            return Err(refuse(state, refused, payload, deadline).await);
        }
        Some(slug) => slug,
        None => None,
    };
    let mut charge = state.budget.charge();
    let body = match read_body(state, req, payload, deadline, &mut charge).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { limit, partial }) => {
            let event = event.unwrap_or_default();
            let refused = refusal("too_large", IngestError::TooLarge { limit }, tenant, event);
            state.rejections.refuse(refused.with_body(&partial));
            return Err((refused.error, false));
        }
        Err(BodyError::TooSlow) => return Err((state.unavailable("body_timeout"), false)),
        Err(BodyError::Broken) => return Err((state.unavailable("body_incomplete"), false)),
        Err(BodyError::OverBudget(_)) => {
            return Err((state.unavailable("over_memory_budget"), false))
        }
    };
    let Ok(_slot) = state.in_flight.try_acquire() else {
        return Err((state.unavailable("overloaded"), true));
    };
    let named = event.or_else(|| delivery::event_from_headers(req));
    let identity = {
        let _parsing = state.budget.parsing(delivery::parse_cost(&body)).await;
        delivery::identify(tenant, named, &body, state.http.max_json_depth)
    };
    let source = client.map(|ip| ip.to_string()).unwrap_or_default();
    accept(state, tenant, identity, source, body, charge)
        .await
        .map_err(|e| (e, true))
}

/// The client's address: the peer, or what our trusted proxies say it was; `None` when
/// a trusted proxy forwarded something unreadable.
fn client(state: &State, req: &HttpRequest) -> Option<IpAddr> {
    let forwarded: Vec<&[u8]> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.as_bytes())
        .collect();
    let peer = req.peer_addr()?.ip();
    state.access.client(peer, &forwarded)
}

/// The body as stored: read whole, decompressed, without a byte-order mark. A body in an
/// encoding ingest cannot undo is kept as received.
async fn read_body(
    state: &State,
    req: &HttpRequest,
    payload: web::Payload,
    deadline: Instant,
    charge: &mut Charge,
) -> Result<Vec<u8>, BodyError> {
    let limit = state.http.max_body_bytes;
    let received = body::read(payload, limit, deadline, charge).await?;
    let decoded = match body::encodings(req.headers()) {
        Ok(encodings) if encodings.is_empty() => received,
        Ok(encodings) => match body::decode(&received, &encodings, limit, charge)? {
            Decoded::Body(decoded) => decoded,
            Decoded::Undecodable => return Ok(received),
        },
        Err(_unknown) => return Ok(received),
    };
    Ok(body::without_byte_order_mark(decoded, limit))
}

/// Makes the delivery durable, then answers with its receipt.
async fn accept(
    state: &State,
    tenant: &str,
    identity: Identity,
    source_addr: String,
    body: Vec<u8>,
    charge: Charge,
) -> Result<HttpResponse, IngestError> {
    let Identity {
        event,
        key,
        event_id,
    } = identity;
    let envelope = RawEnvelope {
        event_id: event_id.clone(),
        tenant: tenant.to_owned(),
        event: event.clone(),
        received_at: runtime::now_ms(),
        source_addr: source_addr.clone(),
        body,
    };
    let encoded = avro::raw_envelope().encode(&envelope);
    // Only the record is held while waiting for durability; the body goes now.
    drop(envelope);
    let payload = encoded.map_err(|e| {
        tracing::error!(error = %e, tenant, event, "Could not encode the raw envelope");
        IngestError::Internal
    })?;
    state.metrics.body_memory(state.budget.held());
    // The trace of this delivery starts here and follows it through Kafka headers.
    let span = tracing::info_span!("webhook", tenant, event, event_id = %event_id, key = %key);
    let record = Record {
        key,
        payload,
        traceparent: runtime::trace::traceparent(&span),
    };
    let published = state.publisher.publish(record).instrument(span).await;
    drop(charge);
    match published {
        Ok(()) => Ok(HttpResponse::Ok().json(Receipt { event_id })),
        Err(PublishError::Unavailable(reason)) => {
            if let Some(held_back) = crate::publisher::admit(&state.not_stored) {
                tracing::warn!(%reason, tenant, event, held_back, "Event not stored; answering 503");
            }
            Err(state.unavailable("unavailable"))
        }
        Err(PublishError::Refused { reason, record }) => {
            tracing::error!(%reason, tenant, event, "Kafka refused the event");
            let body = record
                .and_then(|r| avro::raw_envelope().decode(&r.payload).ok())
                .map(|envelope| envelope.body)
                .unwrap_or_default();
            state.rejections.refuse(Rejection {
                reason: "kafka_refused",
                status: 500,
                detail: reason,
                tenant,
                event: &event,
                source: source_addr,
                body: &body,
            });
            Err(IngestError::Internal)
        }
    }
}

/// A refusal, before its body is known.
struct Refusal<'a> {
    reason: &'static str,
    error: IngestError,
    tenant: &'a str,
    event: String,
    source: String,
}

impl<'a> Refusal<'a> {
    fn with_body(&'a self, body: &'a [u8]) -> Rejection<'a> {
        Rejection {
            reason: self.reason,
            status: self.error.status_code().as_u16(),
            detail: self.error.to_string(),
            tenant: self.tenant,
            event: &self.event,
            source: self.source.clone(),
            body,
        }
    }
}

/// Counts a refusal and, within the recording bound, reads its body (within the usual
/// bounds) and records it whole: a delivery refused by mistake (an old token) can then
/// be recovered from `dead_letters`.
async fn refuse(
    state: &State,
    refusal: Refusal<'_>,
    payload: web::Payload,
    deadline: Instant,
) -> (IngestError, bool) {
    let Some(ticket) = state.rejections.admit(refusal.reason) else {
        return (refusal.error, false);
    };
    let mut charge = state.budget.charge();
    let limit = state.http.max_body_bytes;
    let (body, read) = match body::read(payload, limit, deadline, &mut charge).await {
        Ok(body) => (body, true),
        Err(BodyError::TooLarge { partial, .. }) => (partial, false),
        Err(_) => (Vec::new(), false),
    };
    ticket.record(refusal.with_body(&body));
    (refusal.error, read)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    if state.publisher.ready().await {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, state.http.retry_after_s.to_string()))
            .json(serde_json::json!({"status": "not ready"}))
    }
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    state.metrics.body_memory(state.budget.held());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// Unknown paths: the same answer as an unknown token, counted and recorded like it.
async fn not_found(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let deadline = Instant::now() + Duration::from_millis(state.http.body_timeout_ms);
    let source = client(&state, &req)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let refusal = Refusal {
        reason: "not_found",
        error: IngestError::NotFound,
        tenant: "",
        event: String::new(),
        source,
    };
    let (error, read) = refuse(&state, refusal, payload, deadline).await;
    answer(&error, read)
}
