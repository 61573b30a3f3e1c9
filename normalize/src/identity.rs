//! Event identity and Kafka keys, shared by `ingest` (which assigns them) and the tests.
//!
//! `event_id` must be the same for every retry of one delivery and differ between two
//! different deliveries, so it is a hash of what the sender repeats: tenant, event slug,
//! and the body in a lossless canonical form ([`crate::canonical`]). The Kafka key keeps
//! one entity's events in one partition, in order.

use serde_json::Value;
use sha2::{Digest, Sha256};

use schemas::EventKind;

use crate::canonical;
use crate::entity::entity_ref;
use crate::lenient;

/// A stable id for one delivery: the first 128 bits of SHA-256 over tenant, slug and the
/// canonical text of the body, in hex. A body that is not JSON (or nests deeper than
/// [`canonical::MAX_DEPTH`]) is hashed as its bytes, behind a `0xFF` byte: the canonical
/// text is UTF-8, where that byte never occurs, so the two kinds never share an id.
pub fn event_id_of_body(tenant: &str, event: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    hasher.update([0]);
    hasher.update(event.as_bytes());
    hasher.update([0]);
    match canonical::canonical(body) {
        Some(text) => hasher.update(text),
        None => {
            hasher.update([0xFF]);
            hasher.update(body);
        }
    }
    hex::encode(&hasher.finalize()[..16])
}

/// [`event_id_of_body`] of a body that was parsed already: the same id as for any of the
/// texts that read as `body`.
pub fn event_id(tenant: &str, event: &str, body: &Value) -> String {
    event_id_of_body(tenant, event, body.to_string().as_bytes())
}

/// The top-level `id` of a body whose event is not recognized (so its entity is not
/// known): as an integer when it is one (also when sent as a string), else as the
/// trimmed string; `None` when absent or unusable.
pub(crate) fn top_level_id(body: &Value) -> Option<String> {
    let id = body.get("id")?;
    if let Some(n) = lenient::int(id) {
        return Some(n.to_string());
    }
    let s = lenient::string(id);
    (!s.is_empty() && s.len() <= 128).then_some(s)
}

/// The Kafka key `{tenant}:{entity}:{id}`, with the entity and id the normalizer will
/// find ([`entity_ref`]), or `{tenant}:event:{event_id}` when the event is not
/// recognized or the body has no usable id.
pub fn kafka_key(tenant: &str, event: &str, body: &Value, event_id: &str) -> String {
    entity_key(tenant, event, body).unwrap_or_else(|| event_key(tenant, event_id))
}

/// The key `{tenant}:{entity}:{id}` of a body whose entity and id the normalizer will
/// find; `None` otherwise. For callers that let go of the body before the event id is known.
pub fn entity_key(tenant: &str, event: &str, body: &Value) -> Option<String> {
    let (entity, id) = entity_ref(EventKind::from_slug(event)?, body)?;
    Some(format!("{tenant}:{}:{id}", entity.as_str()))
}

/// The key of an event without a usable entity (unrecognized, no id, not JSON):
/// `{tenant}:event:{event_id}`.
pub fn event_key(tenant: &str, event_id: &str) -> String {
    format!("{tenant}:event:{event_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_id_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": [1, 2]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[1,2],"y":2},"b":1}"#).unwrap();
        assert_eq!(
            event_id("acme", "call-ended", &a),
            event_id("acme", "call-ended", &b)
        );
    }

    #[test]
    fn event_id_differs_by_tenant_event_and_body() {
        let body = json!({"id": 1});
        let base = event_id("acme", "call-ended", &body);
        assert_eq!(base.len(), 32);
        assert_ne!(base, event_id("beta", "call-ended", &body));
        assert_ne!(base, event_id("acme", "call-abandoned", &body));
        assert_ne!(base, event_id("acme", "call-ended", &json!({"id": 2})));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(event_id("ab", "c", &body), event_id("a", "bc", &body));
    }

    #[test]
    fn ids_of_ordinary_bodies_are_those_of_earlier_versions() {
        // Earlier versions hashed `Value::to_string()`; these ids were computed by them.
        let old = |body: &Value| {
            let mut hasher = Sha256::new();
            hasher.update(b"acme\0call-ended\0");
            hasher.update(body.to_string().as_bytes());
            hex::encode(&hasher.finalize()[..16])
        };
        for text in [
            r#"{"id": 880142, "type": "inbound", "duration": 12}"#,
            r#"{"id": 1, "note": "caf\u00e9 \ud83d\ude00", "rate": 0.5, "tags": [], "x": null}"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                event_id_of_body("acme", "call-ended", text.as_bytes()),
                old(&value)
            );
            assert_eq!(event_id("acme", "call-ended", &value), old(&value));
        }
        // The id the version before this one gave the README's sample call.
        let sample = br#"{"id": 880142, "type": "inbound", "duration": 12}"#;
        assert_eq!(
            event_id_of_body("acme", "call-ended", sample),
            "e19c7a4d8027360c7f250d1f1d1c1809"
        );
    }

    #[test]
    fn bodies_serde_json_reads_alike_get_different_ids() {
        let id = |body: &str| event_id_of_body("acme", "call-ended", body.as_bytes());
        assert_ne!(id("18446744073709551616"), id("18446744073709551617"));
        assert_ne!(id(r#"{"id":200,"id":201}"#), id(r#"{"id":201}"#));
        assert_ne!(id(r#"["\ud800"]"#), id(r#"["\ud801"]"#));
        assert_ne!(id("1e400"), id("1e401"));
    }

    #[test]
    fn a_body_that_is_not_json_is_hashed_as_its_bytes() {
        let id = |body: &[u8]| event_id_of_body("acme", "call-ended", body);
        assert_eq!(id(b"not json"), id(b"not json"));
        assert_ne!(id(b"not json"), id(b"not json "));
        assert_ne!(id(b""), id(b"\"\""));
        assert_eq!(id(b" {\"a\" : 1} "), id(b"{\"a\":1}"));
    }

    #[test]
    fn keys_name_tenant_entity_and_id() {
        let body = json!({"id": 880142});
        assert_eq!(
            kafka_key("acme", "call-ended", &body, "e"),
            "acme:call:880142"
        );
        assert_eq!(
            kafka_key("acme", "contact-list-modified", &json!({"id": "77"}), "e"),
            "acme:contact_list:77"
        );
        assert_eq!(
            kafka_key("acme", "message-sent", &json!({"id": " m-9 "}), "e"),
            "acme:message:m-9"
        );
    }

    #[test]
    fn events_without_a_usable_id_or_known_slug_are_keyed_by_event_id() {
        for body in [
            json!({}),
            json!({"id": null}),
            json!({"id": ""}),
            json!([1]),
        ] {
            assert_eq!(
                kafka_key("acme", "call-ended", &body, "e1"),
                "acme:event:e1"
            );
        }
        assert_eq!(
            kafka_key("acme", "call-transferred", &json!({"id": 5}), "e2"),
            "acme:event:e2"
        );
    }
}
