//! The NectarDesk call object, flattened. All six call events carry it.

use serde_json::{Map, Value};

use schemas::{CallAgent, CallRecord, ContactRecord, EventKind};

use crate::contact::read_contact;
use crate::entity::call_id;
use crate::lenient::{
    field, flag, instant, int, items, non_negative, object, objects, string, strings,
};

/// The call, and the contact embedded in it (when it has a usable id); `None` when the
/// call has no usable integer id.
pub(crate) fn read(
    kind: EventKind,
    c: &Map<String, Value>,
) -> Option<(CallRecord, Option<ContactRecord>)> {
    let call_id = call_id(c)?;
    let started = instant(field(c, "startedDate"));
    let ended = instant(field(c, "endedDate"));
    let empty = Map::new();
    let line = object(field(c, "number")).unwrap_or(&empty);
    let ring_group = object(field(c, "ringGroup")).unwrap_or(&empty);
    let disposition = object(field(c, "disposition")).unwrap_or(&empty);
    let contact = object(field(c, "contact")).unwrap_or(&empty);
    let transfer = object(field(c, "transfer_details")).unwrap_or(&empty);
    let record = CallRecord {
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
    };
    Some((record, read_contact(contact)))
}

/// The line's alias, or the label in parentheses of `numberWithAlias` ("+1555 (Sales)").
fn line_alias(line: &Map<String, Value>) -> String {
    // Both are read whatever the first holds, so neither shows up as unmapped.
    let alias = string(field(line, "alias"));
    let with_alias = string(field(line, "numberWithAlias"));
    if !alias.is_empty() {
        return alias;
    }
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

    fn call(kind: EventKind, body: Value) -> (CallRecord, Option<ContactRecord>) {
        read(kind, body.as_object().unwrap()).unwrap()
    }

    #[test]
    fn marks_voicemail_from_the_event_name() {
        assert_eq!(
            call(EventKind::CallOverflowedToVoicemail, json!({"id": 7}))
                .0
                .voicemail,
            Some(true)
        );
        assert_eq!(
            call(EventKind::CallEnded, json!({"id": 7})).0.voicemail,
            None
        );
    }

    #[test]
    fn the_embedded_contact_becomes_a_contact_record() {
        let (record, contact) = call(
            EventKind::CallEnded,
            json!({"id": 7, "contact": {"id": "31", "firstName": " Ann ", "lastName": "null", "phone": "1555"}}),
        );
        assert_eq!(record.contact_id, Some(31));
        let contact = contact.unwrap();
        assert_eq!(
            (
                contact.contact_id,
                contact.first_name.as_str(),
                contact.last_name.as_str()
            ),
            (31, "Ann", "")
        );
        assert!(call(
            EventKind::CallEnded,
            json!({"id": 7, "contact": {"phone": "1"}})
        )
        .1
        .is_none());
    }

    #[test]
    fn accepts_wrong_types_for_every_call_field() {
        let (c, _) = call(
            EventKind::CallEnded,
            json!({
                "id": "880150", "type": ["Outbound"], "startedDate": 1772460300, "endedDate": null,
                "duration": "26", "talkTime": {}, "waitingTime": [], "tags": "vip",
                "call_recordings": {"a": "//acme.nectardesk.io/r/1"}, "number": [],
                "abandoned": "0", "disposition": [{"code": 5}], "agents": {"id": 3, "name": 7},
                "transfer_details": "", "external_numbers": ["+1555"], "extra": {"nested": true}
            }),
        );
        assert_eq!(c.call_id, 880150);
        assert_eq!(c.direction, "outbound");
        assert_eq!(c.started_at, Some(1_772_460_300_000));
        assert_eq!(
            (c.duration_s, c.talk_time_s, c.waiting_time_s),
            (Some(26), None, None)
        );
        assert_eq!(c.tags, vec!["vip"]);
        assert_eq!(c.recording_urls, vec!["https://acme.nectardesk.io/r/1"]);
        assert_eq!(c.abandoned, Some(false));
        assert_eq!(c.disposition_code, "5");
        assert_eq!(c.external_numbers, vec!["+1555"]);
        // One agent object sent where a list was expected.
        assert_eq!(c.agents.len(), 1);
        assert_eq!(
            (c.agents[0].agent_id, c.agents[0].name.as_str()),
            (Some(3), "7")
        );
    }

    #[test]
    fn with_scheme_leaves_full_urls_alone() {
        assert_eq!(with_scheme("http://x/y"), "http://x/y");
        assert_eq!(with_scheme("HTTPS://x/y"), "HTTPS://x/y");
        assert_eq!(with_scheme("x/y"), "https://x/y");
        assert_eq!(with_scheme("//x/y"), "https://x/y");
    }
}
