//! The rows of the storage tables: one struct per table, fields in the order and types of
//! the table in `warehouse/migrations/`, and the pure mapping from normalized events and
//! dead letters to rows. The loader writes these rows; the simulator and the chaos
//! harness compute them to know what ClickHouse must hold.

use serde::Serialize;

use schemas::{
    CallRecord, ContactListRecord, ContactRecord, DeadLetter, MessageRecord, NormalizedEvent,
};

use crate::fields::{self, UnmappedFieldRow};
use crate::table::{StoreRow, Table};

/// A row of `raw_events_store_v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct RawEventRow {
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    pub status: String,
    pub entity: String,
    pub entity_id: String,
    /// Unix seconds.
    pub received_at: u32,
    pub received_at_ms: u64,
    pub source_addr: String,
    pub payload: String,
    pub error: String,
    /// Chosen by the loader once per block (the same when the block is written again;
    /// later for a replay): for one event, the newest load wins.
    pub loaded_at_ms: u64,
}

/// A row of `call_events_store_v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct CallEventRow {
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    pub call_id: i64,
    /// The entity's day (`Date`: days since 1970), assigned once per entity (see
    /// `resolve`); 0 until then.
    pub key_day: u16,
    pub received_at: u32,
    pub received_at_ms: u64,
    pub direction: String,
    pub started_at: Option<u32>,
    pub ended_at: Option<u32>,
    pub utc_offset_s: Option<i32>,
    pub duration_s: Option<i64>,
    pub talk_time_s: Option<i64>,
    pub waiting_time_s: Option<i64>,
    pub abandoned: Option<u8>,
    pub voicemail: Option<u8>,
    pub call_type: String,
    pub sub_type: String,
    pub tags: Vec<String>,
    pub recording_urls: Vec<String>,
    pub line_id: Option<i64>,
    pub line_number: String,
    pub line_alias: String,
    pub campaign: String,
    pub ring_group_id: Option<i64>,
    pub ring_group: String,
    pub disposition_id: Option<i64>,
    pub disposition_code: String,
    pub disposition_note: String,
    pub contact_id: Option<i64>,
    pub contact_phone: String,
    pub transfer_number: String,
    pub transfer_talk_time_s: Option<i64>,
    pub external_numbers: Vec<String>,
    /// 0 where the sender gave an agent no id.
    pub agent_ids: Vec<i64>,
    pub agent_names: Vec<String>,
    pub agent_actions: Vec<String>,
    pub agent_types: Vec<String>,
    /// Chosen by the loader once per block (the same when the block is written again;
    /// later for a replay): for one event, the newest load wins.
    pub loaded_at_ms: u64,
}

/// A row of `contact_events_store_v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct ContactEventRow {
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    pub contact_id: i64,
    /// The entity's day (`Date`: days since 1970), assigned once per entity (see
    /// `resolve`); 0 until then.
    pub key_day: u16,
    pub received_at: u32,
    pub received_at_ms: u64,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: String,
    pub created_at: Option<u32>,
    pub utc_offset_s: Option<i32>,
    pub additional_fields: String,
    pub integrations: String,
    /// Chosen by the loader once per block (the same when the block is written again;
    /// later for a replay): for one event, the newest load wins.
    pub loaded_at_ms: u64,
}

/// A row of `contact_list_events_store_v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct ContactListEventRow {
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    pub list_id: i64,
    /// The entity's day (`Date`: days since 1970), assigned once per entity (see
    /// `resolve`); 0 until then.
    pub key_day: u16,
    pub received_at: u32,
    pub received_at_ms: u64,
    pub name: String,
    pub description: String,
    pub size: Option<i64>,
    pub member_ids: Vec<i64>,
    pub created_at: Option<u32>,
    pub utc_offset_s: Option<i32>,
    /// Chosen by the loader once per block (the same when the block is written again;
    /// later for a replay): for one event, the newest load wins.
    pub loaded_at_ms: u64,
}

/// A row of `message_events_store_v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct MessageEventRow {
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    pub message_id: String,
    /// The entity's day (`Date`: days since 1970), assigned once per entity (see
    /// `resolve`); 0 until then.
    pub key_day: u16,
    pub received_at: u32,
    pub received_at_ms: u64,
    pub direction: String,
    pub channel: String,
    pub from_number: String,
    pub to_number: String,
    pub text: String,
    pub sent_at: Option<u32>,
    pub utc_offset_s: Option<i32>,
    pub status: String,
    pub contact_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub agent_name: String,
    /// Chosen by the loader once per block (the same when the block is written again;
    /// later for a replay): for one event, the newest load wins.
    pub loaded_at_ms: u64,
}

/// A row of `dead_letters_store_v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct DeadLetterRow {
    pub stage: String,
    pub reason: String,
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub key: String,
    /// The payload as text (invalid UTF-8 replaced).
    pub payload: String,
    pub failed_at: u32,
    pub failed_at_ms: u64,
    /// The HTTP status of a delivery ingest refused.
    pub http_status: Option<u16>,
    /// Where the delivery came from, when known.
    pub source_addr: String,
    /// Chosen by the loader once per block (the same when the block is written again;
    /// later for a replay): for one event, the newest load wins.
    pub loaded_at_ms: u64,
}

macro_rules! store_row {
    ($($row:ty => $table:expr),* $(,)?) => {$(
        impl StoreRow for $row {
            const TABLE: Table = $table;
            fn event_id(&self) -> &str {
                &self.event_id
            }
            fn tenant(&self) -> &str {
                &self.tenant
            }
        }
    )*};
}

store_row!(
    RawEventRow => Table::RawEvents,
    CallEventRow => Table::CallEvents,
    ContactEventRow => Table::ContactEvents,
    ContactListEventRow => Table::ContactListEvents,
    MessageEventRow => Table::MessageEvents,
    DeadLetterRow => Table::DeadLetters,
    UnmappedFieldRow => Table::UnmappedFields,
);

/// Rows waiting to be written, one list per storage table.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    pub raw: Vec<RawEventRow>,
    pub calls: Vec<CallEventRow>,
    pub contacts: Vec<ContactEventRow>,
    pub contact_lists: Vec<ContactListEventRow>,
    pub messages: Vec<MessageEventRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    pub unmapped: Vec<UnmappedFieldRow>,
}

/// What every row of one event shares.
struct Origin {
    event_id: String,
    tenant: String,
    event: String,
    received_at: u32,
    received_at_ms: u64,
}

impl Tables {
    /// How many rows each table gets, in the order of [`Table::ALL`].
    pub fn counts(&self) -> [(Table, usize); Table::ALL.len()] {
        Table::ALL.map(|table| {
            let rows = match table {
                Table::RawEvents => self.raw.len(),
                Table::CallEvents => self.calls.len(),
                Table::ContactEvents => self.contacts.len(),
                Table::ContactListEvents => self.contact_lists.len(),
                Table::MessageEvents => self.messages.len(),
                Table::DeadLetters => self.dead_letters.len(),
                Table::UnmappedFields => self.unmapped.len(),
            };
            (table, rows)
        })
    }

    /// Stamps every row with the block's `loaded_at_ms`.
    pub fn stamp(&mut self, loaded_at_ms: u64) {
        self.raw
            .iter_mut()
            .for_each(|r| r.loaded_at_ms = loaded_at_ms);
        self.calls
            .iter_mut()
            .for_each(|r| r.loaded_at_ms = loaded_at_ms);
        self.contacts
            .iter_mut()
            .for_each(|r| r.loaded_at_ms = loaded_at_ms);
        self.contact_lists
            .iter_mut()
            .for_each(|r| r.loaded_at_ms = loaded_at_ms);
        self.messages
            .iter_mut()
            .for_each(|r| r.loaded_at_ms = loaded_at_ms);
        self.dead_letters
            .iter_mut()
            .for_each(|r| r.loaded_at_ms = loaded_at_ms);
        self.unmapped
            .iter_mut()
            .for_each(|r| r.loaded_at_ms = loaded_at_ms);
    }

    /// Whether no table has a row.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, rows)| *rows == 0)
    }

    /// Adds the rows of one event and returns roughly how many bytes they take. Every
    /// event gets a `raw_events` row, whatever its status.
    pub fn add_event(&mut self, event: NormalizedEvent) -> usize {
        let origin = Origin {
            event_id: event.event_id.clone(),
            tenant: event.tenant.clone(),
            event: event.event.clone(),
            received_at: seconds(event.received_at).unwrap_or_default(),
            received_at_ms: u64::try_from(event.received_at).unwrap_or_default(),
        };
        let mut bytes = 128 + event.payload.len() + event.error.len();
        if let Some(call) = event.call {
            bytes += 256 + call.tags.len() * 16 + call.agents.len() * 48;
            self.calls.push(call_row(&origin, call));
        }
        if let Some(contact) = event.contact {
            bytes += 128 + contact.additional_fields.len() + contact.integrations.len();
            self.contacts.push(contact_row(&origin, contact));
        }
        if let Some(list) = event.contact_list {
            bytes += 128 + list.member_ids.len() * 8;
            self.contact_lists.push(list_row(&origin, list));
        }
        if let Some(message) = event.message {
            bytes += 128 + message.text.len();
            self.messages.push(message_row(&origin, message));
        }
        if let Some(report) = event.field_report {
            let delivery = fields::Delivery {
                event_id: &origin.event_id,
                tenant: &origin.tenant,
                event: &origin.event,
                received_at: origin.received_at,
                received_at_ms: origin.received_at_ms,
            };
            let rows = fields::rows(&delivery, report);
            bytes += rows
                .iter()
                .map(|r| 96 + r.path.len() + r.example.len())
                .sum::<usize>();
            self.unmapped.extend(rows);
        }
        self.raw.push(RawEventRow {
            event_id: origin.event_id,
            tenant: origin.tenant,
            event: origin.event,
            status: event.status.as_str().to_owned(),
            entity: event.entity,
            entity_id: event.entity_id,
            received_at: origin.received_at,
            received_at_ms: origin.received_at_ms,
            source_addr: event.source_addr,
            payload: event.payload,
            error: event.error,
            loaded_at_ms: 0,
        });
        bytes
    }

    /// Adds a dead letter and returns roughly how many bytes it takes.
    pub fn add_dead_letter(&mut self, letter: DeadLetter) -> usize {
        let bytes = 128 + letter.reason.len() + letter.payload.len();
        self.dead_letters.push(DeadLetterRow {
            stage: letter.stage,
            reason: letter.reason,
            event_id: letter.event_id,
            tenant: letter.tenant,
            event: letter.event,
            source_topic: letter.source_topic,
            source_partition: letter.source_partition,
            source_offset: letter.source_offset,
            key: letter.key,
            payload: String::from_utf8_lossy(&letter.payload).into_owned(),
            failed_at: seconds(letter.failed_at).unwrap_or_default(),
            failed_at_ms: u64::try_from(letter.failed_at).unwrap_or_default(),
            http_status: letter.http_status.and_then(|s| u16::try_from(s).ok()),
            source_addr: letter.source_addr.unwrap_or_default(),
            loaded_at_ms: 0,
        });
        bytes
    }
}

fn contact_row(o: &Origin, c: ContactRecord) -> ContactEventRow {
    ContactEventRow {
        event_id: o.event_id.clone(),
        tenant: o.tenant.clone(),
        event: o.event.clone(),
        contact_id: c.contact_id,
        key_day: 0,
        received_at: o.received_at,
        received_at_ms: o.received_at_ms,
        first_name: c.first_name,
        last_name: c.last_name,
        email: c.email,
        phone: c.phone,
        created_at: c.created_at.and_then(seconds),
        utc_offset_s: c.utc_offset_s,
        additional_fields: c.additional_fields,
        integrations: c.integrations,
        loaded_at_ms: 0,
    }
}

fn list_row(o: &Origin, l: ContactListRecord) -> ContactListEventRow {
    ContactListEventRow {
        event_id: o.event_id.clone(),
        tenant: o.tenant.clone(),
        event: o.event.clone(),
        list_id: l.list_id,
        key_day: 0,
        received_at: o.received_at,
        received_at_ms: o.received_at_ms,
        name: l.name,
        description: l.description,
        size: l.size,
        member_ids: l.member_ids,
        created_at: l.created_at.and_then(seconds),
        utc_offset_s: l.utc_offset_s,
        loaded_at_ms: 0,
    }
}

fn message_row(o: &Origin, m: MessageRecord) -> MessageEventRow {
    MessageEventRow {
        event_id: o.event_id.clone(),
        tenant: o.tenant.clone(),
        event: o.event.clone(),
        message_id: m.message_id,
        key_day: 0,
        received_at: o.received_at,
        received_at_ms: o.received_at_ms,
        direction: m.direction,
        channel: m.channel,
        from_number: m.from_number,
        to_number: m.to_number,
        text: m.text,
        sent_at: m.sent_at.and_then(seconds),
        utc_offset_s: m.utc_offset_s,
        status: m.status,
        contact_id: m.contact_id,
        agent_id: m.agent_id,
        agent_name: m.agent_name,
        loaded_at_ms: 0,
    }
}

fn call_row(o: &Origin, c: CallRecord) -> CallEventRow {
    CallEventRow {
        event_id: o.event_id.clone(),
        tenant: o.tenant.clone(),
        event: o.event.clone(),
        call_id: c.call_id,
        key_day: 0,
        received_at: o.received_at,
        received_at_ms: o.received_at_ms,
        direction: c.direction,
        started_at: c.started_at.and_then(seconds),
        ended_at: c.ended_at.and_then(seconds),
        utc_offset_s: c.utc_offset_s,
        duration_s: c.duration_s,
        talk_time_s: c.talk_time_s,
        waiting_time_s: c.waiting_time_s,
        abandoned: c.abandoned.map(u8::from),
        voicemail: c.voicemail.map(u8::from),
        call_type: c.call_type,
        sub_type: c.sub_type,
        tags: c.tags,
        recording_urls: c.recording_urls,
        line_id: c.line_id,
        line_number: c.line_number,
        line_alias: c.line_alias,
        campaign: c.campaign,
        ring_group_id: c.ring_group_id,
        ring_group: c.ring_group,
        disposition_id: c.disposition_id,
        disposition_code: c.disposition_code,
        disposition_note: c.disposition_note,
        contact_id: c.contact_id,
        contact_phone: c.contact_phone,
        transfer_number: c.transfer_number,
        transfer_talk_time_s: c.transfer_talk_time_s,
        external_numbers: c.external_numbers,
        agent_ids: c
            .agents
            .iter()
            .map(|a| a.agent_id.unwrap_or_default())
            .collect(),
        agent_names: c.agents.iter().map(|a| a.name.clone()).collect(),
        agent_actions: c.agents.iter().map(|a| a.action.clone()).collect(),
        agent_types: c.agents.into_iter().map(|a| a.agent_type).collect(),
        loaded_at_ms: 0,
    }
}

/// Unix milliseconds to a ClickHouse `DateTime` (Unix seconds, 1970 to 2106).
fn seconds(ms: i64) -> Option<u32> {
    u32::try_from(ms.div_euclid(1000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{CallAgent, Position, Stage, Status};

    fn event() -> NormalizedEvent {
        NormalizedEvent {
            event_id: "e1".into(),
            tenant: "acme".into(),
            event: "call-ended".into(),
            entity: "call".into(),
            entity_id: "7".into(),
            received_at: 1_772_460_701_999,
            source_addr: "127.0.0.1".into(),
            payload: "{}".into(),
            ..NormalizedEvent::default()
        }
    }

    #[test]
    fn every_event_gets_a_raw_row() {
        let mut tables = Tables::default();
        let mut invalid = event();
        invalid.status = Status::Invalid;
        tables.add_event(invalid);
        assert_eq!(tables.raw.len(), 1);
        assert_eq!(tables.raw[0].status, "invalid");
        assert_eq!(tables.raw[0].received_at, 1_772_460_701);
        assert_eq!(tables.raw[0].received_at_ms, 1_772_460_701_999);
        assert!(tables.calls.is_empty() && tables.contacts.is_empty());
    }

    #[test]
    fn a_call_with_a_contact_adds_a_call_row_and_a_contact_row() {
        let mut e = event();
        e.call = Some(CallRecord {
            call_id: 7,
            started_at: Some(1_772_460_300_000),
            abandoned: Some(true),
            agents: vec![
                CallAgent {
                    agent_id: Some(21),
                    name: "Dev Patel".into(),
                    action: "Answered".into(),
                    agent_type: "Normal call".into(),
                },
                CallAgent {
                    agent_id: None,
                    name: "Lena Berg".into(),
                    action: "Contact hangup".into(),
                    agent_type: "Transfer Call".into(),
                },
            ],
            ..CallRecord::default()
        });
        e.contact = Some(ContactRecord {
            contact_id: 31,
            created_at: Some(1_763_665_330_000),
            ..ContactRecord::default()
        });
        let mut tables = Tables::default();
        tables.add_event(e);
        let call = &tables.calls[0];
        assert_eq!(
            (call.call_id, call.started_at, call.abandoned),
            (7, Some(1_772_460_300), Some(1))
        );
        assert_eq!(call.agent_ids, [21, 0]);
        assert_eq!(call.agent_names, ["Dev Patel", "Lena Berg"]);
        assert_eq!(call.agent_types, ["Normal call", "Transfer Call"]);
        let contact = &tables.contacts[0];
        assert_eq!(
            (contact.contact_id, contact.created_at),
            (31, Some(1_763_665_330))
        );
        assert_eq!(
            (contact.event_id.as_str(), contact.event.as_str()),
            ("e1", "call-ended")
        );
    }

    #[test]
    fn lists_messages_and_dead_letters_get_their_rows() {
        let mut e = event();
        e.contact_list = Some(ContactListRecord {
            list_id: 12,
            member_ids: vec![1, 2],
            ..ContactListRecord::default()
        });
        e.message = Some(MessageRecord {
            message_id: "SM1".into(),
            sent_at: Some(1_000),
            ..MessageRecord::default()
        });
        let mut tables = Tables::default();
        tables.add_event(e);
        tables.add_dead_letter(
            DeadLetter::of_record(
                Stage::Transform,
                "no id",
                &Position {
                    topic: "webhooks.raw".into(),
                    partition: 1,
                    offset: 5,
                },
                b"k",
                vec![0xff, b'{'],
                2_500,
            )
            .for_event("e2", "acme", "call-ended"),
        );
        tables.add_dead_letter(DeadLetter::refused_delivery(
            413,
            "too large",
            "acme",
            "",
            "203.0.113.9",
            Vec::new(),
            1,
            3_000,
        ));
        assert_eq!(tables.contact_lists[0].member_ids, [1, 2]);
        assert_eq!(tables.messages[0].sent_at, Some(1));
        let letter = &tables.dead_letters[0];
        assert_eq!((letter.failed_at, letter.failed_at_ms), (2, 2_500));
        assert_eq!(letter.payload, "\u{fffd}{");
        assert_eq!(
            (letter.http_status, letter.source_addr.as_str()),
            (None, "")
        );
        let refused = &tables.dead_letters[1];
        assert_eq!(
            (refused.http_status, refused.source_addr.as_str()),
            (Some(413), "203.0.113.9")
        );
    }

    #[test]
    fn each_path_of_a_field_report_gets_a_row() {
        let mut e = event();
        e.field_report = Some(schemas::FieldReport {
            unmapped: vec![schemas::UnmappedField {
                path: "queueName".into(),
                example: r#""Main""#.into(),
            }],
            mistyped: vec![schemas::MistypedField {
                path: "duration".into(),
                expected: "integer".into(),
                found: "string".into(),
                example: r#""26""#.into(),
            }],
        });
        let mut tables = Tables::default();
        tables.add_event(e);
        let got: Vec<(&str, &str, &str, &str)> = tables
            .unmapped
            .iter()
            .map(|r| {
                (
                    r.kind.as_str(),
                    r.path.as_str(),
                    r.expected.as_str(),
                    r.event_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("unmapped", "queueName", "", "e1"),
                ("mistyped", "duration", "integer", "e1")
            ]
        );
        assert_eq!(tables.unmapped[1].received_at_ms, 1_772_460_701_999);
    }

    #[test]
    fn times_outside_the_datetime_range_become_null() {
        assert_eq!(seconds(-1), None);
        assert_eq!(seconds(5_000_000_000_000), None);
        assert_eq!(seconds(1_999), Some(1));
    }
}
