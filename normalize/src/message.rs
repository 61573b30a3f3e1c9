//! Text messages. Their payloads are not documented: the reader tries the plausible
//! spellings of each field, and the direction falls back to the event name.

use serde_json::{Map, Value};

use schemas::{EventKind, MessageRecord};

use crate::entity::message_id;
use crate::lenient::{field, first, instant, int, object, string};

/// A message; `None` without a usable id (any non-empty string or number).
pub(crate) fn read(kind: EventKind, m: &Map<String, Value>) -> Option<MessageRecord> {
    let message_id = message_id(m)?;
    let sent = instant(first(
        m,
        &[
            "date",
            "createdDate",
            "createDate",
            "createdAt",
            "created_at",
            "sentDate",
            "sentAt",
            "timestamp",
        ],
    ));
    let contact = object(field(m, "contact"));
    let agent = object(first(m, &["agent", "user"]));
    Some(MessageRecord {
        message_id,
        direction: direction(kind, m),
        channel: channel(m),
        from_number: number(first(m, &["from", "fromNumber", "from_number", "sender"])),
        to_number: number(first(m, &["to", "toNumber", "to_number", "recipient"])),
        text: string(first(m, &["text", "body", "message", "content"])),
        sent_at: sent.map(|(ms, _)| ms),
        utc_offset_s: sent.and_then(|(_, o)| o),
        status: string(field(m, "status")).to_ascii_lowercase(),
        // Each alternative is read whether or not the first one has a value, so that
        // none of them shows up as unmapped (field discovery).
        contact_id: contact
            .and_then(|c| int(field(c, "id")))
            .or(int(first(m, &["contactId", "contact_id"]))),
        agent_id: agent
            .and_then(|a| int(field(a, "id")))
            .or(int(first(m, &["agentId", "agent_id", "userId"]))),
        agent_name: [
            agent.map(|a| string(field(a, "name"))).unwrap_or_default(),
            string(first(m, &["agentName", "agent_name"])),
        ]
        .into_iter()
        .find(|name| !name.is_empty())
        .unwrap_or_default(),
    })
}

/// `inbound` / `outbound` from the payload when it says so, else from the event name.
fn direction(kind: EventKind, m: &Map<String, Value>) -> String {
    let said = string(first(m, &["direction", "type"])).to_ascii_lowercase();
    match said.as_str() {
        "inbound" | "incoming" | "in" | "received" => "inbound".to_owned(),
        "outbound" | "outgoing" | "out" | "sent" => "outbound".to_owned(),
        _ if kind == EventKind::MessageReceived => "inbound".to_owned(),
        _ => "outbound".to_owned(),
    }
}

/// The channel (`sms`, `whatsapp`, …) from `channel`, or from `type` when that is not a
/// direction.
fn channel(m: &Map<String, Value>) -> String {
    let channel = string(field(m, "channel")).to_ascii_lowercase();
    if !channel.is_empty() {
        return channel;
    }
    let kind = string(field(m, "type")).to_ascii_lowercase();
    match kind.as_str() {
        "inbound" | "incoming" | "in" | "received" | "outbound" | "outgoing" | "out" | "sent" => {
            String::new()
        }
        _ => kind,
    }
}

/// A phone number: a string, a number, or an object holding one.
fn number(value: &Value) -> String {
    match object(value) {
        Some(map) => string(first(map, &["number", "phone", "phoneNumber"])),
        None => string(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(kind: EventKind, body: Value) -> Option<MessageRecord> {
        read(
            kind,
            crate::entity::Target::of(kind, body.as_object().unwrap()).object,
        )
    }

    #[test]
    fn reads_a_full_message() {
        let m = message(
            EventKind::MessageReceived,
            json!({"id": 9001, "type": "sms", "from": "+15557654321", "to": {"number": "+15550100"},
                   "text": " Is my refund done? ", "date": "2026-03-02T09:20:00-05:00",
                   "contact": {"id": 30417}, "agent": {"id": 21, "name": "Dev Patel "}, "status": "Delivered"}),
        )
        .unwrap();
        assert_eq!(
            (
                m.message_id.as_str(),
                m.direction.as_str(),
                m.channel.as_str()
            ),
            ("9001", "inbound", "sms")
        );
        assert_eq!(
            (m.from_number.as_str(), m.to_number.as_str()),
            ("+15557654321", "+15550100")
        );
        assert_eq!(m.text, "Is my refund done?");
        assert_eq!(m.utc_offset_s, Some(-18_000));
        assert_eq!(
            (m.contact_id, m.agent_id, m.agent_name.as_str()),
            (Some(30417), Some(21), "Dev Patel")
        );
        assert_eq!(m.status, "delivered");
    }

    #[test]
    fn direction_comes_from_the_payload_or_else_the_event() {
        let sent = message(EventKind::MessageSent, json!({"id": "m1"})).unwrap();
        assert_eq!(
            (sent.direction.as_str(), sent.channel.as_str()),
            ("outbound", "")
        );
        let said = message(
            EventKind::MessageSent,
            json!({"id": "m1", "direction": "Incoming"}),
        )
        .unwrap();
        assert_eq!(said.direction, "inbound");
    }

    #[test]
    fn accepts_a_wrapped_message_and_string_ids() {
        let m = message(
            EventKind::MessageSent,
            json!({"message": {"messageId": "SM123", "body": "hi"}}),
        )
        .unwrap();
        assert_eq!((m.message_id.as_str(), m.text.as_str()), ("SM123", "hi"));
        assert!(message(EventKind::MessageSent, json!({"text": "no id"})).is_none());
    }
}
