//! From a raw envelope to a normalized event.

use serde_json::{Map, Value};

use schemas::{CallAgent, CallRecord, Entity, EventKind, NormalizedEvent, RawEnvelope, Status};

use crate::identity::entity_id;
use crate::lenient::{flag, instant, int, items, non_negative, object, objects, string, strings};

/// Normalizes one delivery. Never fails: an event that cannot be understood comes back
/// with status [`Status::Invalid`] or [`Status::Unrecognized`] and the reason in `error`,
/// and the raw payload is always kept.
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
    };
    let body: Value = match serde_json::from_slice(&envelope.body) {
        Ok(body) => body,
        Err(e) => return invalid(out, format!("body is not valid JSON: {e}")),
    };
    let Some(kind) = EventKind::from_slug(&envelope.event) else {
        out.status = Status::Unrecognized;
        out.entity_id = entity_id(&body).unwrap_or_default();
        out.error = if envelope.event.is_empty() {
            "the delivery named no event".to_owned()
        } else {
            format!("unrecognized event {:?}", envelope.event)
        };
        return out;
    };
    out.entity = kind.entity().as_str().to_owned();
    let Some(fields) = body.as_object() else {
        return invalid(
            out,
            format!("body is a JSON {}, expected an object", type_name(&body)),
        );
    };
    match kind.entity() {
        Entity::Call => match call(kind, fields) {
            Some(record) => {
                out.entity_id = record.call_id.to_string();
                out.call = Some(record);
            }
            None => return invalid(out, "call event has no usable integer id".to_owned()),
        },
        Entity::Contact | Entity::ContactList | Entity::Message => match entity_id(&body) {
            Some(id) => out.entity_id = id,
            None => {
                return invalid(
                    out,
                    format!("{} event has no usable id", kind.entity().as_str()),
                )
            }
        },
    }
    out
}

fn invalid(mut out: NormalizedEvent, error: String) -> NormalizedEvent {
    out.status = Status::Invalid;
    out.error = error;
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

/// The field `key` of `map`, or `null` when absent, so every reader sees a value.
fn field<'a>(map: &'a Map<String, Value>, key: &str) -> &'a Value {
    map.get(key).unwrap_or(&Value::Null)
}

/// A call object flattened; `None` when it has no usable integer id.
fn call(kind: EventKind, c: &Map<String, Value>) -> Option<CallRecord> {
    let call_id = int(field(c, "id"))?;
    let started = instant(field(c, "startedDate"));
    let ended = instant(field(c, "endedDate"));
    let empty = Map::new();
    let line = object(field(c, "number")).unwrap_or(&empty);
    let ring_group = object(field(c, "ringGroup")).unwrap_or(&empty);
    let disposition = object(field(c, "disposition")).unwrap_or(&empty);
    let contact = object(field(c, "contact")).unwrap_or(&empty);
    let transfer = object(field(c, "transfer_details")).unwrap_or(&empty);
    Some(CallRecord {
        call_id,
        direction: string(field(c, "type")).to_ascii_lowercase(),
        started_at: started.map(|(ms, _)| ms),
        ended_at: ended.map(|(ms, _)| ms),
        utc_offset_s: started.and_then(|(_, o)| o).or(ended.and_then(|(_, o)| o)),
        duration_s: non_negative(field(c, "duration")),
        talk_time_s: non_negative(field(c, "talkTime")),
        waiting_time_s: non_negative(field(c, "waitingTime")),
        abandoned: flag(field(c, "abandoned")),
        voicemail: (kind == EventKind::CallOverflowedToVoicemail).then_some(true),
        call_type: string(field(c, "call_type")),
        sub_type: string(field(c, "sub_type")),
        tags: strings(field(c, "tags")),
        recording_urls: strings(field(c, "call_recordings"))
            .iter()
            .map(|url| with_scheme(url))
            .collect(),
        line_id: int(field(line, "id")),
        line_number: string(field(line, "number")),
        line_alias: line_alias(line),
        campaign: string(field(c, "campaign")),
        ring_group_id: int(field(ring_group, "id")),
        ring_group: string(field(ring_group, "name")),
        disposition_id: int(field(disposition, "id")),
        disposition_code: string(field(disposition, "code")),
        disposition_note: string(field(disposition, "note")),
        contact_id: int(field(contact, "id")),
        contact_phone: string(field(contact, "phone")),
        transfer_number: string(field(transfer, "number")),
        transfer_talk_time_s: non_negative(field(transfer, "transfer_talk_time")),
        external_numbers: items(field(c, "external_numbers"))
            .into_iter()
            .map(|n| match object(n) {
                Some(map) => string(field(map, "number")),
                None => string(n),
            })
            .filter(|n| !n.is_empty())
            .collect(),
        agents: objects(field(c, "agents"))
            .into_iter()
            .map(|a| CallAgent {
                agent_id: int(field(a, "id")),
                name: string(field(a, "name")),
                action: string(field(a, "action")),
                agent_type: string(field(a, "type")),
            })
            .filter(|a| a.agent_id.is_some() || !a.name.is_empty())
            .collect(),
    })
}

/// The line's alias, or the label in parentheses of `numberWithAlias` ("+1555 (Sales)").
fn line_alias(line: &Map<String, Value>) -> String {
    let alias = string(field(line, "alias"));
    if !alias.is_empty() {
        return alias;
    }
    let with_alias = string(field(line, "numberWithAlias"));
    match (with_alias.find('('), with_alias.rfind(')')) {
        (Some(open), Some(close)) if open < close => with_alias[open + 1..close].trim().to_owned(),
        _ => String::new(),
    }
}

/// NectarDesk sends recording URLs without a scheme; they are served over HTTPS.
fn with_scheme(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        url.to_owned()
    } else if let Some(rest) = url.strip_prefix("//") {
        format!("https://{rest}")
    } else {
        format!("https://{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(event: &str, body: &str) -> RawEnvelope {
        RawEnvelope {
            event_id: "e1".into(),
            tenant: "acme".into(),
            event: event.into(),
            received_at: 1_772_460_701_000,
            source_addr: "127.0.0.1".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn sample(name: &str) -> String {
        let path = format!(
            "{}/../../shared/nectardesk/samples/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn flattens_the_full_call_ended_sample() {
        let out = normalize(&envelope("call-ended", &sample("call-ended-full.json")));
        assert_eq!(out.status, Status::Normalized, "{}", out.error);
        assert_eq!(
            (out.entity.as_str(), out.entity_id.as_str()),
            ("call", "880142")
        );
        let call = out.call.unwrap();
        assert_eq!(call.direction, "inbound");
        // 09:05:00-05:00 is 14:05:00 UTC.
        assert_eq!(call.started_at, Some(1_772_460_300_000));
        assert_eq!(call.ended_at, Some(1_772_460_300_000 + 401_000));
        assert_eq!(call.utc_offset_s, Some(-18_000));
        assert_eq!(
            (call.duration_s, call.talk_time_s, call.waiting_time_s),
            (Some(401), Some(352), Some(37))
        );
        assert_eq!(call.abandoned, Some(false));
        assert_eq!(call.voicemail, None);
        assert_eq!(
            call.recording_urls,
            vec!["https://acme.nectardesk.io/api/call/recording/77120"]
        );
        assert_eq!(
            (
                call.line_id,
                call.line_number.as_str(),
                call.line_alias.as_str()
            ),
            (Some(12), "+15550100", "Billing")
        );
        assert_eq!(
            (call.ring_group_id, call.ring_group.as_str()),
            (Some(4), "Billing")
        );
        assert_eq!(
            (call.disposition_id, call.disposition_code.as_str()),
            (Some(9), "RESOLVED")
        );
        assert_eq!(call.disposition_note, "Refund issued");
        assert_eq!(call.contact_id, Some(30417));
        assert_eq!(call.transfer_number, "+15550199");
        assert_eq!(call.transfer_talk_time_s, Some(61));
        assert_eq!(call.external_numbers, vec!["+15550199 (Escalations)"]);
        assert_eq!(call.tags, vec!["billing", "priority"]);
        let names: Vec<_> = call.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Dev Patel", "Lena Berg"]);
        assert_eq!(call.agents[1].action, "Contact hangup");
        assert_eq!(call.agents[1].agent_type, "Transfer Call");
    }

    #[test]
    fn keeps_the_sparse_abandoned_call_with_empty_values() {
        let out = normalize(&envelope(
            "call-abandoned",
            &sample("call-abandoned-sparse.json"),
        ));
        assert_eq!(out.status, Status::Normalized);
        let call = out.call.unwrap();
        assert_eq!(call.ended_at, None);
        assert_eq!(call.abandoned, Some(true));
        assert!(call.recording_urls.is_empty() && call.agents.is_empty());
        assert_eq!(call.line_alias, "");
        assert_eq!(call.disposition_code, "");
    }

    #[test]
    fn reads_the_real_world_variants() {
        let out = normalize(&envelope(
            "call-disposition-saved",
            &sample("call-disposition-saved-real-world.json"),
        ));
        let call = out.call.unwrap();
        assert_eq!(call.disposition_id, None);
        assert_eq!(call.disposition_code, "NO_ANSWER_VM");
        assert_eq!(call.transfer_number, "");
        assert_eq!(call.line_alias, "Outbound East");
        assert_eq!(call.agents[0].name, "Sam Reyes");
        assert_eq!(call.contact_phone, "15557001234");
    }

    #[test]
    fn marks_voicemail_from_the_event_name() {
        let out = normalize(&envelope("call-overflowed-to-voicemail", r#"{"id": 7}"#));
        assert_eq!(out.call.unwrap().voicemail, Some(true));
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
    fn marks_calls_without_an_id_invalid_with_the_reason() {
        for body in [r#"{}"#, r#"{"id": null}"#, r#"{"id": "abc"}"#] {
            let out = normalize(&envelope("call-ended", body));
            assert_eq!(out.status, Status::Invalid, "{body}");
            assert!(out.error.contains("id"), "{}", out.error);
            assert!(out.call.is_none());
        }
    }

    #[test]
    fn marks_bodies_that_are_not_objects_invalid() {
        let out = normalize(&envelope("call-ended", "[1, 2]"));
        assert_eq!(out.status, Status::Invalid);
        assert_eq!(out.error, "body is a JSON array, expected an object");
        let out = normalize(&envelope("call-ended", "not json"));
        assert_eq!(out.status, Status::Invalid);
        assert!(
            out.error.starts_with("body is not valid JSON"),
            "{}",
            out.error
        );
    }

    #[test]
    fn accepts_wrong_types_for_every_call_field() {
        let body = json!({
            "id": "880150", "type": ["Outbound"], "startedDate": 1772460300, "endedDate": null,
            "duration": "26", "talkTime": {}, "waitingTime": [], "tags": "vip",
            "call_recordings": {"a": "//acme.nectardesk.io/r/1"}, "number": [],
            "abandoned": "0", "disposition": [{"code": 5}], "agents": {"id": 3, "name": 7},
            "transfer_details": "", "external_numbers": ["+1555"], "extra": {"nested": true}
        });
        let out = normalize(&envelope("call-ended", &body.to_string()));
        assert_eq!(out.status, Status::Normalized, "{}", out.error);
        let call = out.call.unwrap();
        assert_eq!(call.call_id, 880150);
        assert_eq!(call.direction, "outbound");
        assert_eq!(call.started_at, Some(1_772_460_300_000));
        assert_eq!(
            (call.duration_s, call.talk_time_s, call.waiting_time_s),
            (Some(26), None, None)
        );
        assert_eq!(call.tags, vec!["vip"]);
        assert_eq!(call.recording_urls, vec!["https://acme.nectardesk.io/r/1"]);
        assert_eq!(call.abandoned, Some(false));
        assert_eq!(call.disposition_code, "5");
        assert_eq!(call.external_numbers, vec!["+1555"]);
        // One agent object sent where a list was expected.
        assert_eq!(call.agents.len(), 1);
        assert_eq!(
            (call.agents[0].agent_id, call.agents[0].name.as_str()),
            (Some(3), "7")
        );
    }

    #[test]
    fn with_scheme_leaves_full_urls_alone() {
        assert_eq!(with_scheme("http://x/y"), "http://x/y");
        assert_eq!(with_scheme("HTTPS://x/y"), "HTTPS://x/y");
        assert_eq!(with_scheme("x/y"), "https://x/y");
    }
}
