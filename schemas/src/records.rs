//! The records that travel through Kafka. Field names match the Avro schemas in
//! `schemas/avro/` one to one; the codec in [`crate::avro`] checks that at every encode.

use serde::{Deserialize, Serialize};

/// One webhook delivery as `ingest` received it (topic `webhooks.raw`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEnvelope {
    /// Stable hash of (tenant, event, canonical JSON body).
    pub event_id: String,
    pub tenant: String,
    /// Event slug from the URL; empty when the URL named none.
    pub event: String,
    /// When ingest accepted the delivery, Unix milliseconds.
    pub received_at: i64,
    pub source_addr: String,
    /// The request body exactly as received.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub body: Vec<u8>,
}

/// What became of an event in normalization; stored in `raw_events.status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Status {
    /// Understood and turned into typed rows.
    #[default]
    Normalized,
    /// A well-formed event slug this version does not know: kept raw only.
    Unrecognized,
    /// Could not be normalized (no usable id, wrong shape): kept raw and dead-lettered.
    Invalid,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Normalized => "normalized",
            Status::Unrecognized => "unrecognized",
            Status::Invalid => "invalid",
        }
    }
}

impl From<Status> for String {
    fn from(status: Status) -> String {
        status.as_str().to_owned()
    }
}

impl TryFrom<String> for Status {
    type Error = String;

    fn try_from(value: String) -> Result<Status, String> {
        match value.as_str() {
            "normalized" => Ok(Status::Normalized),
            "unrecognized" => Ok(Status::Unrecognized),
            "invalid" => Ok(Status::Invalid),
            other => Err(format!("unknown status {other:?}")),
        }
    }
}

/// One webhook after normalization (topic `webhooks.normalized`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NormalizedEvent {
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    pub status: Status,
    /// `call`, `message`, `contact`, `contact_list`, or empty.
    pub entity: String,
    /// The entity's id as sent, or empty.
    pub entity_id: String,
    /// Unix milliseconds.
    pub received_at: i64,
    pub source_addr: String,
    /// The raw body as text.
    pub payload: String,
    /// Why the event is invalid or unrecognized; empty otherwise.
    pub error: String,
    pub call: Option<CallRecord>,
    /// From a contact event, or the contact embedded in a call (schema v2).
    pub contact: Option<ContactRecord>,
    /// Schema v2.
    pub contact_list: Option<ContactListRecord>,
    /// Schema v2.
    pub message: Option<MessageRecord>,
    /// What the body holds that normalization did not read, or read with another JSON
    /// type than it expected (schema v3); `None` for an event that was not normalized,
    /// and for records written before v3.
    pub field_report: Option<FieldReport>,
}

/// Field discovery for one delivery: paths with array indexes collapsed (`agents[].name`),
/// each listed once, in path order, with an example value cut to 64 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldReport {
    /// Present in the body, read by no reader.
    pub unmapped: Vec<UnmappedField>,
    /// Read, but of another JSON type than the reader expected.
    pub mistyped: Vec<MistypedField>,
}

/// A path of the body nothing reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmappedField {
    pub path: String,
    /// The value as compact JSON, cut.
    pub example: String,
}

/// A path read with another JSON type than expected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MistypedField {
    pub path: String,
    /// The JSON kinds the reader expected, e.g. `integer`, `boolean or integer`.
    pub expected: String,
    /// The JSON kind found: `boolean`, `integer`, `number`, `string`, `array`, `object`.
    pub found: String,
    /// The value as compact JSON, cut.
    pub example: String,
}

/// A NectarDesk call object, flattened. Times are Unix milliseconds (UTC); `utc_offset_s`
/// keeps the sender's offset so local-time reports stay possible. Strings are empty and
/// options `None` when the sender left a field out or sent something unusable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: i64,
    /// `inbound` / `outbound`, lowercased.
    pub direction: String,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub utc_offset_s: Option<i32>,
    pub duration_s: Option<i64>,
    pub talk_time_s: Option<i64>,
    pub waiting_time_s: Option<i64>,
    pub abandoned: Option<bool>,
    pub voicemail: Option<bool>,
    pub call_type: String,
    pub sub_type: String,
    pub tags: Vec<String>,
    /// Recording URLs with a scheme.
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
    pub agents: Vec<CallAgent>,
}

/// A contact, from a contact event or embedded in a call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub contact_id: i64,
    /// Trimmed; the literal `"null"` the sender sometimes sends is empty.
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    /// As sent.
    pub phone: String,
    pub created_at: Option<i64>,
    pub utc_offset_s: Option<i32>,
    /// JSON object text, `{}` when none.
    pub additional_fields: String,
    /// JSON object text, `{}` when none.
    pub integrations: String,
}

/// A contact list. The payload's field names are guesses until real samples exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactListRecord {
    pub list_id: i64,
    pub name: String,
    pub description: String,
    pub size: Option<i64>,
    pub member_ids: Vec<i64>,
    pub created_at: Option<i64>,
    pub utc_offset_s: Option<i32>,
}

/// A text message. The payload's field names are guesses until real samples exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub message_id: String,
    /// `inbound` / `outbound`.
    pub direction: String,
    /// e.g. `sms`, `whatsapp`; empty when not given.
    pub channel: String,
    /// As sent.
    pub from_number: String,
    pub to_number: String,
    pub text: String,
    pub sent_at: Option<i64>,
    pub utc_offset_s: Option<i32>,
    pub status: String,
    pub contact_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub agent_name: String,
}

/// One agent's part in a call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallAgent {
    pub agent_id: Option<i64>,
    /// Trimmed.
    pub name: String,
    /// e.g. `Answered`, `Contact hangup`.
    pub action: String,
    /// e.g. `Normal call`, `Transfer Call`.
    pub agent_type: String,
}

/// The pipeline stage that set a record aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Ingest,
    Transform,
    Loader,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Transform => "transform",
            Stage::Loader => "loader",
        }
    }
}

/// Where a Kafka record was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Something a stage could not process (topic `webhooks.dlq`). Build it with
/// [`DeadLetter::of_record`] or [`DeadLetter::refused_delivery`], so that every field
/// means the same at every stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `ingest`, `transform` or `loader`.
    pub stage: String,
    pub reason: String,
    /// Empty when the record could not be decoded, or the delivery had none yet.
    pub event_id: String,
    pub tenant: String,
    pub event: String,
    /// The Kafka record set aside; empty, -1 and a unique number for a refused delivery.
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// The record's Kafka key; empty for a refused delivery.
    pub key: String,
    /// The webhook body when known, else the undecodable record as read.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub payload: Vec<u8>,
    /// Unix milliseconds.
    pub failed_at: i64,
    /// The HTTP status ingest answered a refused delivery with (schema v2).
    pub http_status: Option<i32>,
    /// Where the delivery came from, when known (schema v2).
    pub source_addr: Option<String>,
}

impl DeadLetter {
    /// A Kafka record that `stage` could not process, with the event it carried when
    /// known (see [`DeadLetter::for_event`]).
    pub fn of_record(
        stage: Stage,
        reason: impl Into<String>,
        position: &Position,
        key: &[u8],
        payload: Vec<u8>,
        failed_at: i64,
    ) -> DeadLetter {
        DeadLetter {
            stage: stage.as_str().to_owned(),
            reason: reason.into(),
            event_id: String::new(),
            tenant: String::new(),
            event: String::new(),
            source_topic: position.topic.clone(),
            source_partition: position.partition,
            source_offset: position.offset,
            key: String::from_utf8_lossy(key).into_owned(),
            payload,
            failed_at,
            http_status: None,
            source_addr: None,
        }
    }

    /// Names the event the record carried.
    pub fn for_event(mut self, event_id: &str, tenant: &str, event: &str) -> DeadLetter {
        self.event_id = event_id.to_owned();
        self.tenant = tenant.to_owned();
        self.event = event.to_owned();
        self
    }

    /// A delivery ingest refused with `http_status`. It never reached Kafka, so it has
    /// no position: `refusal` is a number unique to this refusal, which keeps it apart
    /// from every other one in `dead_letters`.
    #[allow(clippy::too_many_arguments)]
    pub fn refused_delivery(
        http_status: u16,
        reason: impl Into<String>,
        tenant: &str,
        event: &str,
        source_addr: &str,
        body: Vec<u8>,
        refusal: i64,
        failed_at: i64,
    ) -> DeadLetter {
        DeadLetter {
            stage: Stage::Ingest.as_str().to_owned(),
            reason: reason.into(),
            event_id: String::new(),
            tenant: tenant.to_owned(),
            event: event.to_owned(),
            source_topic: String::new(),
            source_partition: -1,
            source_offset: refusal,
            key: String::new(),
            payload: body,
            failed_at,
            http_status: Some(i32::from(http_status)),
            source_addr: (!source_addr.is_empty()).then(|| source_addr.to_owned()),
        }
    }
}
