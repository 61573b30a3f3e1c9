//! The HTTP surface: webhook routes, health, readiness.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use schemas::event::is_well_formed_slug;
use schemas::{avro, RawEnvelope};

use crate::config::{HttpArgs, Tokens};
use crate::error::{IngestError, PublishError};
use crate::publisher::Publisher;

/// What every handler shares.
pub struct State {
    pub tokens: Tokens,
    pub http: HttpArgs,
    pub publisher: Arc<dyn Publisher>,
}

/// Registers every route on an actix app.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<State>) {
    cfg.app_data(state)
        .route("/hooks/{token}/{event}", web::post().to(receive_with_event))
        .route("/hooks/{token}", web::post().to(receive_without_event))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
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
    let tenant = state
        .tokens
        .tenant_for(&token)
        .ok_or(IngestError::NotFound)?;
    let event = slugify(&event).ok_or(IngestError::NotFound)?;
    let body = read_body(body, state.http.max_body_bytes).await?;
    let json = parse(&body)?;
    accept(&state, &req, tenant, &event, body, &json).await
}

async fn receive_without_event(
    state: web::Data<State>,
    req: HttpRequest,
    token: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, IngestError> {
    let tenant = state
        .tokens
        .tenant_for(&token)
        .ok_or(IngestError::NotFound)?;
    let body = read_body(body, state.http.max_body_bytes).await?;
    let json = parse(&body)?;
    let event = event_from_headers(&req)
        .or_else(|| event_from_body(&json))
        .unwrap_or_default();
    accept(&state, &req, tenant, &event, body, &json).await
}

/// Makes the delivery durable, then answers with its receipt.
async fn accept(
    state: &State,
    req: &HttpRequest,
    tenant: &str,
    event: &str,
    body: Vec<u8>,
    json: &Value,
) -> Result<HttpResponse, IngestError> {
    let event_id = transform::identity::event_id(tenant, event, json);
    let key = transform::identity::kafka_key(tenant, event, json, &event_id);
    let envelope = RawEnvelope {
        event_id: event_id.clone(),
        tenant: tenant.to_owned(),
        event: event.to_owned(),
        received_at: runtime::now_ms(),
        source_addr: req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        body,
    };
    let payload = avro::raw_envelope().encode(&envelope).map_err(|e| {
        tracing::error!(error = %e, tenant, event, "Could not encode the raw envelope");
        IngestError::Internal
    })?;
    match state.publisher.publish(&key, payload).await {
        Ok(()) => Ok(HttpResponse::Ok().json(Receipt { event_id })),
        Err(PublishError::Unavailable(reason)) => {
            tracing::warn!(%reason, tenant, event, "Event not acknowledged; answering 503");
            Err(IngestError::Unavailable {
                retry_after_s: state.http.retry_after_s,
            })
        }
        Err(PublishError::Refused(reason)) => {
            tracing::error!(%reason, tenant, event, "Kafka refused the event");
            Err(IngestError::Internal)
        }
    }
}

/// Reads the body, refusing more than `limit` bytes without reading them all.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => IngestError::TooLarge { limit },
            other => IngestError::InvalidJson(format!("body could not be read: {other}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(IngestError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse(body: &[u8]) -> Result<Value, IngestError> {
    serde_json::from_slice(body).map_err(|e| IngestError::InvalidJson(e.to_string()))
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
    fn the_event_is_never_taken_from_the_call_direction() {
        let body = serde_json::json!({"type": "inbound", "id": 1});
        assert_eq!(event_from_body(&body), None);
        let body = serde_json::json!({"event": "Message Received"});
        assert_eq!(event_from_body(&body).as_deref(), Some("message-received"));
    }
}
