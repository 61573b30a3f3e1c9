//! What ingest learns from a delivery before storing it: the event name, the Kafka key
//! and the event id, found with the normalizer's own readers so the key names the entity
//! the normalizer will find. Nothing here refuses a body: one that is not JSON, or that
//! the normalizer cannot read, is keyed by its event id and kept as it came.

use actix_web::HttpRequest;
use serde_json::Value;

use normalize::identity::{entity_key, event_id_of_body, event_key};
use schemas::event::is_well_formed_slug;

/// The event, key and id of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The event slug; empty when nothing named one.
    pub event: String,
    pub key: String,
    pub event_id: String,
}

/// The identity of `body` from `tenant`, whose event the URL or a header may have named
/// already. A body nested deeper than `max_depth` is not read for its event or entity
/// (reading it would cost more than it could tell): it is keyed by its event id.
pub fn identify(tenant: &str, named: Option<String>, body: &[u8], max_depth: usize) -> Identity {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    // Only an object can name its event or hold an entity.
    let value: Option<Value> = (first == Some(&b'{') && depth(body) <= max_depth)
        .then(|| serde_json::from_slice(body).ok())
        .flatten();
    let event = named
        .or_else(|| value.as_ref().and_then(event_from_body))
        .unwrap_or_default();
    let key = value.as_ref().and_then(|v| entity_key(tenant, &event, v));
    // Let the parsed body go before the canonical text takes its share of memory.
    drop(value);
    let event_id = event_id_of_body(tenant, &event, body);
    let key = key.unwrap_or_else(|| event_key(tenant, &event_id));
    Identity {
        event,
        key,
        event_id,
    }
}

/// What identifying `body` may allocate at most, about: the parsed tree (a few dozen
/// bytes a value, and a JSON value can be two bytes: `0,`) and the canonical text.
pub fn parse_cost(body: &[u8]) -> usize {
    let values = body
        .iter()
        .filter(|b| matches!(b, b',' | b':' | b'[' | b'{'))
        .count();
    body.len() * 3 + values * 64
}

/// How deep arrays and objects nest in `body` (a scalar is 0), counted without parsing.
/// Brackets inside strings are skipped; for text that is not JSON the count is a guess,
/// which is all that is needed.
pub fn depth(body: &[u8]) -> usize {
    let (mut deepest, mut level, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                level += 1;
                deepest = deepest.max(level);
            }
            b']' | b'}' => level = level.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The event slug for a name as a person or the sender may write it (`Call Ended`,
/// `call_ended`), or `None` when nothing well-formed remains.
pub fn slugify(name: &str) -> Option<String> {
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

pub fn event_from_headers(req: &HttpRequest) -> Option<String> {
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
    fn depth_counts_nested_containers_not_scalars() {
        assert_eq!(depth(b"1"), 0);
        assert_eq!(depth(b"[]"), 1);
        assert_eq!(depth(br#"{"a": [1, {"b": 2}]}"#), 3);
        assert_eq!(depth(br#"{"a": "[[[[\"{{"}"#), 1);
    }

    #[test]
    fn the_event_is_never_taken_from_the_call_direction() {
        let body = serde_json::json!({"type": "inbound", "id": 1});
        assert_eq!(event_from_body(&body), None);
        let body = serde_json::json!({"event": "Message Received"});
        assert_eq!(event_from_body(&body).as_deref(), Some("message-received"));
    }

    #[test]
    fn a_body_the_normalizer_cannot_read_is_keyed_by_its_event_id() {
        for body in [
            &b"not json"[..],
            br#"{"id": 7, "pad": 1e400}"#,
            br#"{"id": 7, "note": "\ud800"}"#,
            br#"[{"id": 7}]"#,
        ] {
            let identity = identify("acme", Some("call-ended".into()), body, 64);
            assert_eq!(identity.key, format!("acme:event:{}", identity.event_id));
        }
        let identity = identify("acme", Some("call-ended".into()), br#"{"id": 7}"#, 64);
        assert_eq!(identity.key, "acme:call:7");
    }

    #[test]
    fn a_body_deeper_than_the_limit_is_not_read_for_its_event() {
        let body = br#"{"event": "call-ended", "id": 7, "x": [[[1]]]}"#;
        assert_eq!(identify("acme", None, body, 4).key, "acme:call:7");
        let identity = identify("acme", None, body, 3);
        assert_eq!(identity.event, "");
        assert_eq!(identity.key, format!("acme:event:{}", identity.event_id));
    }
}
