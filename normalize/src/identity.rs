//! Event identity and Kafka keys, shared by `ingest` (which assigns them) and the tests.
//!
//! `event_id` must be the same for every retry of one delivery, so it is a hash of what
//! the sender repeats: tenant, event slug, and the body in canonical form (keys sorted,
//! insignificant whitespace removed). The Kafka key keeps one entity's events in one
//! partition, in order.

use serde_json::Value;
use sha2::{Digest, Sha256};

use schemas::EventKind;

use crate::entity::entity_ref;
use crate::lenient;

/// A stable id for one delivery: the first 128 bits of SHA-256 over tenant, slug and the
/// canonical JSON of the body, in hex.
pub fn event_id(tenant: &str, event: &str, body: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    hasher.update([0]);
    hasher.update(event.as_bytes());
    hasher.update([0]);
    // serde_json's map is ordered by key (the `preserve_order` feature is off in this
    // workspace, and a unit test below guards that), so this text is canonical.
    hasher.update(body.to_string().as_bytes());
    hex::encode(&hasher.finalize()[..16])
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
    match EventKind::from_slug(event).and_then(|kind| entity_ref(kind, body)) {
        Some((entity, id)) => format!("{tenant}:{}:{id}", entity.as_str()),
        None => format!("{tenant}:event:{event_id}"),
    }
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
