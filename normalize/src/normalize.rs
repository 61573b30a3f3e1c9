//! From a raw envelope to a normalized event: decides the entity from the event slug and
//! hands the body to the entity's reader.

use serde_json::Value;

use schemas::{Entity, EventKind, NormalizedEvent, RawEnvelope, Status};

use crate::discovery::Recording;
use crate::entity::Target;
use crate::identity::top_level_id;
use crate::{call, contact, message};

/// Normalizes one delivery. Never fails and never panics: an event that cannot be
/// understood comes back with status [`Status::Invalid`] or [`Status::Unrecognized`] and
/// the reason in `error`, and the raw payload is always kept. A normalized event also
/// says what of its body nothing read, or read with another type than expected
/// (`field_report`, see `discovery`).
pub fn normalize(envelope: &RawEnvelope) -> NormalizedEvent {
    let mut out = NormalizedEvent {
        event_id: envelope.event_id.clone(),
        tenant: envelope.tenant.clone(),
        event: envelope.event.clone(),
        status: Status::Normalized,
        entity: String::new(),
        entity_id: String::new(),
        received_at: envelope.received_at,
        source_addr: envelope.source_addr.clone(),
        payload: String::from_utf8_lossy(&envelope.body).into_owned(),
        error: String::new(),
        call: None,
        contact: None,
        contact_list: None,
        message: None,
        field_report: None,
    };
    let kind = EventKind::from_slug(&envelope.event);
    if let Some(kind) = kind {
        out.entity = kind.entity().as_str().to_owned();
    }
    let body: Value = match serde_json::from_slice(&envelope.body) {
        Ok(body) => body,
        Err(e) => return invalid(out, format!("body is not valid JSON: {e}")),
    };
    let recording = Recording::start();
    read(&mut out, kind, &body);
    let report = recording.finish(&body);
    if out.status == Status::Normalized {
        out.field_report = Some(report);
    }
    out
}

/// Reads the parsed body into `out`, or says why it cannot.
fn read(out: &mut NormalizedEvent, kind: Option<EventKind>, body: &Value) {
    let Some(kind) = kind else {
        out.status = Status::Unrecognized;
        out.entity_id = top_level_id(body).unwrap_or_default();
        out.error = if out.event.is_empty() {
            "the delivery named no event".to_owned()
        } else {
            format!("unrecognized event {:?}", out.event)
        };
        return;
    };
    let Some(fields) = body.as_object() else {
        return mark_invalid(
            out,
            format!("body is a JSON {}, expected an object", type_name(body)),
        );
    };
    // The same reader gives the Kafka key (see `identity::kafka_key`).
    let target = Target::of(kind, fields);
    let entity = target.entity;
    let Some(id) = target.id() else {
        let what = if entity == Entity::Message {
            "id"
        } else {
            "integer id"
        };
        return mark_invalid(
            out,
            format!("{} event has no usable {what}", entity.as_str()),
        );
    };
    out.entity_id = id.to_string();
    let object = target.object;
    let found = match entity {
        Entity::Call => call::read(kind, object).map(|(record, contact)| {
            out.call = Some(record);
            out.contact = contact;
        }),
        Entity::Contact => contact::read_contact(object).map(|record| out.contact = Some(record)),
        Entity::ContactList => {
            contact::read_list(object).map(|record| out.contact_list = Some(record))
        }
        Entity::Message => message::read(kind, object).map(|record| out.message = Some(record)),
    };
    debug_assert!(
        found.is_some(),
        "a reader refused an entity with a usable id"
    );
}

fn mark_invalid(out: &mut NormalizedEvent, error: String) {
    out.status = Status::Invalid;
    out.error = error;
}

fn invalid(mut out: NormalizedEvent, error: String) -> NormalizedEvent {
    mark_invalid(&mut out, error);
    out
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn envelope(event: &str, body: &str) -> RawEnvelope {
        RawEnvelope {
            event_id: "e1".into(),
            tenant: "acme".into(),
            event: event.into(),
            received_at: 1_772_460_701_000,
            source_addr: "127.0.0.1".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn keeps_unknown_events_as_unrecognized() {
        let out = normalize(&envelope("call-transferred", r#"{"id": 7}"#));
        assert_eq!(out.status, Status::Unrecognized);
        assert_eq!(out.entity_id, "7");
        assert!(out.error.contains("call-transferred"), "{}", out.error);
        assert_eq!(out.payload, r#"{"id": 7}"#);
    }

    #[test]
    fn an_event_without_a_name_is_unrecognized() {
        let out = normalize(&envelope("", r#"{"id": 7}"#));
        assert_eq!(out.status, Status::Unrecognized);
        assert_eq!(out.error, "the delivery named no event");
    }

    #[test]
    fn marks_events_without_an_id_invalid_with_the_reason() {
        for (event, body) in [
            ("call-ended", r#"{}"#),
            ("call-ended", r#"{"id": null}"#),
            ("call-ended", r#"{"id": "abc"}"#),
            ("contact-created", r#"{"firstName": "Ann"}"#),
            ("contact-list-created", r#"{"name": "VIP"}"#),
            ("message-sent", r#"{"text": "hi", "id": ""}"#),
        ] {
            let out = normalize(&envelope(event, body));
            assert_eq!(out.status, Status::Invalid, "{event} {body}");
            assert!(out.error.contains("no usable"), "{}", out.error);
            assert!(out.call.is_none() && out.contact.is_none() && out.message.is_none());
        }
    }

    #[test]
    fn marks_bodies_that_are_not_objects_invalid() {
        let out = normalize(&envelope("call-ended", "[1, 2]"));
        assert_eq!(out.status, Status::Invalid);
        assert_eq!(out.error, "body is a JSON array, expected an object");
        let out = normalize(&envelope("contact-created", "\"x\""));
        assert_eq!(out.error, "body is a JSON string, expected an object");
        let out = normalize(&envelope("call-ended", "not json"));
        assert_eq!(out.status, Status::Invalid);
        assert!(
            out.error.starts_with("body is not valid JSON"),
            "{}",
            out.error
        );
    }
}
