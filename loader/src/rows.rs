//! ClickHouse rows built from normalized records: a pure mapping, one struct per storage
//! table, fields in the order and types of `schemas/migrations/`.

use clickhouse::Row;
use serde::Serialize;

use schemas::{CallRecord, NormalizedEvent};

/// A row of `raw_events_store`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize)]
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
}

/// A row of `call_events_store`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize)]
pub struct CallEventRow {
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    pub call_id: i64,
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
}

/// The rows one normalized event adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows {
    pub raw: RawEventRow,
    pub call: Option<CallEventRow>,
}

impl Rows {
    /// Maps an event to its rows. Every event gets a `raw_events` row, whatever its status.
    pub fn from_event(event: NormalizedEvent) -> Rows {
        let received_at = seconds(event.received_at).unwrap_or_default();
        let received_at_ms = u64::try_from(event.received_at).unwrap_or_default();
        let call = event.call.map(|call| {
            call_row(
                &event.event_id,
                &event.tenant,
                &event.event,
                received_at,
                received_at_ms,
                call,
            )
        });
        Rows {
            raw: RawEventRow {
                event_id: event.event_id,
                tenant: event.tenant,
                event: event.event,
                status: event.status.as_str().to_owned(),
                entity: event.entity,
                entity_id: event.entity_id,
                received_at,
                received_at_ms,
                source_addr: event.source_addr,
                payload: event.payload,
                error: event.error,
            },
            call,
        }
    }

    /// Roughly how many bytes the rows take on the wire, for batch sizing.
    pub fn approx_bytes(&self) -> usize {
        let raw = &self.raw;
        let call = self
            .call
            .as_ref()
            .map_or(0, |c| 256 + c.tags.len() * 16 + c.agent_names.len() * 48);
        64 + raw.event_id.len() + raw.tenant.len() + raw.payload.len() + raw.error.len() + call
    }
}

fn call_row(
    event_id: &str,
    tenant: &str,
    event: &str,
    received_at: u32,
    received_at_ms: u64,
    c: CallRecord,
) -> CallEventRow {
    CallEventRow {
        event_id: event_id.to_owned(),
        tenant: tenant.to_owned(),
        event: event.to_owned(),
        call_id: c.call_id,
        received_at,
        received_at_ms,
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
    }
}

/// Unix milliseconds to a ClickHouse `DateTime` (Unix seconds, 1970 to 2106).
fn seconds(ms: i64) -> Option<u32> {
    u32::try_from(ms.div_euclid(1000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{CallAgent, Status};

    fn event(call: Option<CallRecord>) -> NormalizedEvent {
        NormalizedEvent {
            event_id: "e1".into(),
            tenant: "acme".into(),
            event: "call-ended".into(),
            status: Status::Normalized,
            entity: "call".into(),
            entity_id: "7".into(),
            received_at: 1_772_460_701_999,
            source_addr: "127.0.0.1".into(),
            payload: "{}".into(),
            error: String::new(),
            call,
        }
    }

    #[test]
    fn every_event_gets_a_raw_row_and_calls_a_call_row() {
        let rows = Rows::from_event(event(None));
        assert_eq!(rows.raw.status, "normalized");
        assert_eq!(rows.raw.received_at, 1_772_460_701);
        assert_eq!(rows.raw.received_at_ms, 1_772_460_701_999);
        assert!(rows.call.is_none());
    }

    #[test]
    fn call_rows_flatten_agents_into_parallel_arrays() {
        let call = CallRecord {
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
        };
        let row = Rows::from_event(event(Some(call))).call.unwrap();
        assert_eq!(row.call_id, 7);
        assert_eq!(row.started_at, Some(1_772_460_300));
        assert_eq!(row.abandoned, Some(1));
        assert_eq!(row.agent_ids, [21, 0]);
        assert_eq!(row.agent_names, ["Dev Patel", "Lena Berg"]);
        assert_eq!(row.agent_types, ["Normal call", "Transfer Call"]);
        assert_eq!(row.event_id, "e1");
    }

    #[test]
    fn times_outside_the_datetime_range_become_null() {
        assert_eq!(seconds(-1), None);
        assert_eq!(seconds(5_000_000_000_000), None);
        assert_eq!(seconds(1_999), Some(1));
    }
}
