//! The HTTP surface: webhook routes, health, readiness.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use schemas::event::is_well_formed_slug;
use schemas::{avro, RawEnvelope};

use crate::access::Access;
use crate::config::{HttpArgs, Tokens};
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
    /// Deliveries in progress; when none is left, the answer is 503 (overload).
    pub in_flight: Arc<Semaphore>,
    /// Cancelled when shutdown begins: from then on deliveries are answered 503.
    pub shutdown: CancellationToken,
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
            tokens,
            http,
            access,
            publisher,
            metrics,
            shutdown: CancellationToken::new(),
        }
    }

    fn unavailable(&self) -> IngestError {
        IngestError::Unavailable {
            retry_after_s: self.http.retry_after_s,
        }
    }
}

/// Registers every route on an actix app.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<State>) {
    cfg.app_data(state)
        .route("/hooks/{token}/{event}", web::post().to(receive_with_event))
        .route("/hooks/{token}", web::post().to(receive_without_event))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
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
) -> Result<HttpResponse, IngestError> {
    let (token, event) = path.into_inner();
    receive(&state, &req, &token, Some(&event), body).await
}

async fn receive_without_event(
    state: web::Data<State>,
    req: HttpRequest,
    token: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, IngestError> {
    receive(&state, &req, &token, None, body).await
}

/// One delivery: checks in the order of cost, refusing (and recording) what fails.
async fn receive(
    state: &State,
    req: &HttpRequest,
    token: &str,
    path_event: Option<&str>,
    payload: web::Payload,
) -> Result<HttpResponse, IngestError> {
    let peer = req.peer_addr().map(|a| a.ip());
    let forwarded: Vec<&[u8]> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.as_bytes())
        .collect();
    let client = peer.and_then(|peer| state.access.client(peer, &forwarded));
    let source = client.map(|ip| ip.to_string()).unwrap_or_default();
    let refuse =
        |reason: &'static str, error: IngestError, tenant: &str, event: &str, body: &[u8]| {
            state.rejections.record(Rejection {
                reason,
                status: error.status_code().as_u16(),
                detail: error.to_string(),
                tenant,
                event,
                source: source.clone(),
                body,
            });
            error
        };
    if state.shutdown.is_cancelled() {
        state.metrics.rejected("shutting_down");
        return Err(state.unavailable());
    }
    let Ok(_permit) = state.in_flight.try_acquire() else {
        state.metrics.rejected("overloaded");
        return Err(state.unavailable());
    };
    if !state.access.allows(client) {
        return Err(refuse("forbidden", IngestError::Forbidden, "", "", b""));
    }
    let Some(tenant) = state.tokens.tenant_for(token) else {
        let hint: String = token.chars().take(4).collect();
        return Err(refuse(
            "not_found",
            IngestError::NotFound,
            "",
            &format!("token {hint}…"),
            b"",
        ));
    };
    let event = match path_event {
        Some(raw) => match slugify(raw) {
            Some(slug) => Some(slug),
            None => return Err(refuse("not_found", IngestError::NotFound, tenant, "", b"")),
        },
        None => None,
    };
    let event_name = event.as_deref().unwrap_or_default();
    let body = match read_body(
        payload,
        state.http.max_body_bytes,
        state.http.body_timeout_ms,
    )
    .await
    {
        Ok(body) => body,
        Err((IngestError::Unavailable { .. }, _)) => {
            state.metrics.rejected("body_timeout");
            return Err(state.unavailable());
        }
        Err((error, partial)) => {
            return Err(refuse("too_large", error, tenant, event_name, &partial))
        }
    };
    let json = match parse(&body, state.http.max_json_depth) {
        Ok(json) => json,
        Err(error) => {
            let reason = if matches!(error, IngestError::TooDeep { .. }) {
                "too_deep"
            } else {
                "bad_json"
            };
            return Err(refuse(reason, error, tenant, event_name, &body));
        }
    };
    let event = event
        .or_else(|| event_from_headers(req))
        .or_else(|| event_from_body(&json))
        .unwrap_or_default();
    accept(state, tenant, &event, source, body, &json).await
}

/// Makes the delivery durable, then answers with its receipt.
async fn accept(
    state: &State,
    tenant: &str,
    event: &str,
    source_addr: String,
    body: Vec<u8>,
    json: &Value,
) -> Result<HttpResponse, IngestError> {
    let event_id = normalize::identity::event_id(tenant, event, json);
    let key = normalize::identity::kafka_key(tenant, event, json, &event_id);
    let envelope = RawEnvelope {
        event_id: event_id.clone(),
        tenant: tenant.to_owned(),
        event: event.to_owned(),
        received_at: runtime::now_ms(),
        source_addr,
        body,
    };
    let payload = avro::raw_envelope().encode(&envelope).map_err(|e| {
        tracing::error!(error = %e, tenant, event, "Could not encode the raw envelope");
        IngestError::Internal
    })?;
    // The trace of this delivery starts here and follows it through Kafka headers.
    let span = tracing::info_span!("webhook", tenant, event, event_id = %event_id, key = %key);
    let record = Record {
        key,
        payload,
        traceparent: runtime::trace::traceparent(&span),
    };
    let published = state.publisher.publish(record).instrument(span).await;
    match published {
        Ok(()) => Ok(HttpResponse::Ok().json(Receipt { event_id })),
        Err(PublishError::Unavailable(reason)) => {
            tracing::warn!(%reason, tenant, event, "Event not stored; answering 503");
            state.metrics.rejected("unavailable");
            Err(state.unavailable())
        }
        Err(PublishError::Refused(reason)) => {
            tracing::error!(%reason, tenant, event, "Kafka refused the event");
            Err(IngestError::Internal)
        }
    }
}

/// Reads the body, refusing more than `limit` bytes without reading them all, and
/// giving up (503) when a chunk takes longer than `timeout_ms`. On error, also returns
/// what was read, for the record of the refusal.
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    timeout_ms: u64,
) -> Result<Vec<u8>, (IngestError, Vec<u8>)> {
    let mut body = Vec::new();
    let timeout = Duration::from_millis(timeout_ms);
    loop {
        let chunk = match tokio::time::timeout(timeout, payload.next()).await {
            Err(_elapsed) => return Err((IngestError::Unavailable { retry_after_s: 0 }, body)),
            Ok(None) => return Ok(body),
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(actix_web::error::PayloadError::Overflow))) => {
                return Err((IngestError::TooLarge { limit }, body))
            }
            // The connection broke mid-body: the sender sees a connection error and retries.
            Ok(Some(Err(_))) => return Err((IngestError::Unavailable { retry_after_s: 0 }, body)),
        };
        if body.len() + chunk.len() > limit {
            body.extend_from_slice(&chunk[..(limit - body.len()).min(chunk.len())]);
            return Err((IngestError::TooLarge { limit }, body));
        }
        body.extend_from_slice(&chunk);
    }
}

/// The body as JSON, refusing nesting deeper than `max_depth`.
fn parse(body: &[u8], max_depth: usize) -> Result<Value, IngestError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| IngestError::InvalidJson(e.to_string()))?;
    if depth(&json) > max_depth {
        return Err(IngestError::TooDeep { limit: max_depth });
    }
    Ok(json)
}

/// Nesting depth of a JSON value (a scalar is 1), without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

/// The event slug for a name as a person or the sender may write it (`Call Ended`,
/// `call_ended`), or `None` when nothing well-formed remains.
fn slugify(name: &str) -> Option<String> {
    let slug: String = name
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    is_well_formed_slug(&slug).then_some(slug)
}

/// Header names a sender or a proxy may use to name the event.
const EVENT_HEADERS: [&str; 3] = ["x-nectardesk-event", "x-webhook-event", "x-event"];
/// Body keys that may name the event (never `type`: for calls it is the direction).
const EVENT_KEYS: [&str; 4] = ["event", "eventName", "event_name", "webhookEvent"];

fn event_from_headers(req: &HttpRequest) -> Option<String> {
    EVENT_HEADERS
        .iter()
        .filter_map(|name| req.headers().get(*name)?.to_str().ok())
        .find_map(slugify)
}

fn event_from_body(json: &Value) -> Option<String> {
    EVENT_KEYS
        .iter()
        .filter_map(|key| json.get(*key)?.as_str())
        .find_map(slugify)
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
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

async fn not_found() -> Result<HttpResponse, IngestError> {
    Err(IngestError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_accepts_the_ways_an_event_may_be_written() {
        assert_eq!(slugify("call-ended").as_deref(), Some("call-ended"));
        assert_eq!(slugify(" Call Ended ").as_deref(), Some("call-ended"));
        assert_eq!(
            slugify("contact_list.created").as_deref(),
            Some("contact-list-created")
        );
        assert_eq!(slugify("call--ended"), None);
        assert_eq!(slugify("call/ended"), None);
        assert_eq!(slugify(""), None);
    }

    #[test]
    fn depth_counts_nesting_levels() {
        assert_eq!(depth(&serde_json::json!(1)), 1);
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": 2}]})), 4);
        assert!(parse(br#"[[[[1]]]]"#, 4).is_err());
        assert!(parse(br#"[[[1]]]"#, 4).is_ok());
    }

    #[test]
    fn the_event_is_never_taken_from_the_call_direction() {
        let body = serde_json::json!({"type": "inbound", "id": 1});
        assert_eq!(event_from_body(&body), None);
        let body = serde_json::json!({"event": "Message Received"});
        assert_eq!(event_from_body(&body).as_deref(), Some("message-received"));
    }
}
