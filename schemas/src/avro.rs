//! Avro encoding of the Kafka records, in Avro's single-object encoding: two marker bytes
//! `C3 01`, the 8-byte CRC-64-AVRO (Rabin) fingerprint of the writer's schema, then the
//! datum. The fingerprint tells a reader which schema version wrote a record, so records
//! written by an older version keep decoding after a schema change
//! (<https://avro.apache.org/docs/1.11.1/specification/#single-object-encoding>).
//!
//! Evolution rule: every schema version ever released stays listed below, the newest
//! last. A new version may only add fields that are optional (a union with `null` first)
//! with a default of `null`; fields are never removed, renamed or retyped.

use std::marker::PhantomData;
use std::sync::LazyLock;

use apache_avro::rabin::Rabin;
use apache_avro::{write_avro_datum_ref, Schema};
use serde::{de::DeserializeOwned, Serialize};

use crate::erasure::Erasure;
use crate::records::{DeadLetter, NormalizedEvent, RawEnvelope};

const MARKER: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// Every released schema of the raw envelope, oldest first.
pub const RAW_ENVELOPE_SCHEMAS: &[&str] = &[include_str!("../avro/raw_envelope.v1.avsc")];

/// Every released schema of the normalized event, oldest first.
pub const NORMALIZED_EVENT_SCHEMAS: &[&str] = &[
    include_str!("../avro/normalized_event.v1.avsc"),
    include_str!("../avro/normalized_event.v2.avsc"),
    include_str!("../avro/normalized_event.v3.avsc"),
];

/// Every released schema of the dead letter, oldest first.
pub const DEAD_LETTER_SCHEMAS: &[&str] = &[
    include_str!("../avro/dead_letter.v1.avsc"),
    include_str!("../avro/dead_letter.v2.avsc"),
];

/// Every released schema of the erasure record, oldest first.
pub const ERASURE_SCHEMAS: &[&str] = &[include_str!("../avro/erasure.v1.avsc")];

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record of {len} bytes is too short for an avro single-object header")]
    TooShort { len: usize },
    #[error("record does not start with the avro single-object marker (found {found:02x?})")]
    BadMarker { found: [u8; 2] },
    #[error("record was written with an unknown schema (fingerprint {fingerprint})")]
    UnknownSchema { fingerprint: String },
    #[error("avro {op} failed for {record}: {message}")]
    Avro {
        op: &'static str,
        record: &'static str,
        message: String,
    },
}

/// Encodes records of type `T` with the newest schema and decodes records written with
/// any released schema.
///
/// Decoding reads the datum straight into `T` with `serde_avro_fast`, driven by the
/// writer's schema: no intermediate value tree, one allocation per string. That is
/// enough for every released version, because each version only adds optional fields:
/// a field an older writer did not have is simply absent, and `T` takes its default.
pub struct Codec<T> {
    record: &'static str,
    current: Schema,
    current_fingerprint: [u8; 8],
    /// (fingerprint, schema to decode with) of every released version, newest included.
    versions: Vec<([u8; 8], serde_avro_fast::Schema)>,
    _record: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Codec<T> {
    /// Builds a codec from schema texts, oldest first. Panics on an unparsable schema:
    /// the texts are compiled in, so that is a bug caught by the unit tests.
    fn new(record: &'static str, schemas: &[&str]) -> Codec<T> {
        let invalid = |e: &dyn std::fmt::Display| -> ! {
            panic!("compiled-in {record} schema is invalid: {e}")
        };
        let parsed: Vec<Schema> = schemas
            .iter()
            .map(|text| Schema::parse_str(text).unwrap_or_else(|e| invalid(&e)))
            .collect();
        let versions = schemas
            .iter()
            .zip(&parsed)
            .map(|(text, schema)| {
                let fast: serde_avro_fast::Schema = text.parse().unwrap_or_else(|e| invalid(&e));
                (fingerprint(schema), fast)
            })
            .collect();
        let current = parsed
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("no {record} schema"));
        let current_fingerprint = fingerprint(&current);
        Codec {
            record,
            current,
            current_fingerprint,
            versions,
            _record: PhantomData,
        }
    }

    /// Encodes `record` with the newest schema.
    pub fn encode(&self, record: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&self.current_fingerprint);
        write_avro_datum_ref(&self.current, record, &mut out).map_err(|e| self.err("encode", e))?;
        Ok(out)
    }

    /// Decodes a record written with any released schema, resolved to the newest one.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::TooShort { len: bytes.len() });
        }
        if bytes[..2] != MARKER {
            return Err(CodecError::BadMarker {
                found: [bytes[0], bytes[1]],
            });
        }
        let fp: [u8; 8] = bytes[2..HEADER_LEN].try_into().expect("slice of 8 bytes");
        let writer = self
            .versions
            .iter()
            .find(|(known, _)| *known == fp)
            .map(|(_, schema)| schema)
            .ok_or_else(|| CodecError::UnknownSchema {
                fingerprint: fp.iter().map(|b| format!("{b:02x}")).collect(),
            })?;
        serde_avro_fast::from_datum_slice(&bytes[HEADER_LEN..], writer).map_err(|e| {
            CodecError::Avro {
                op: "decode",
                record: self.record,
                message: e.to_string(),
            }
        })
    }

    fn err(&self, op: &'static str, e: apache_avro::Error) -> CodecError {
        CodecError::Avro {
            op,
            record: self.record,
            message: e.to_string(),
        }
    }
}

fn fingerprint(schema: &Schema) -> [u8; 8] {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    bytes.try_into().expect("rabin fingerprints are 8 bytes")
}

/// The codec of [`RawEnvelope`] (topic `webhooks.raw`).
pub fn raw_envelope() -> &'static Codec<RawEnvelope> {
    static CODEC: LazyLock<Codec<RawEnvelope>> =
        LazyLock::new(|| Codec::new("raw envelope", RAW_ENVELOPE_SCHEMAS));
    &CODEC
}

/// The codec of [`NormalizedEvent`] (topic `webhooks.normalized`).
pub fn normalized_event() -> &'static Codec<NormalizedEvent> {
    static CODEC: LazyLock<Codec<NormalizedEvent>> =
        LazyLock::new(|| Codec::new("normalized event", NORMALIZED_EVENT_SCHEMAS));
    &CODEC
}

/// The codec of [`DeadLetter`] (topic `webhooks.dlq`).
pub fn dead_letter() -> &'static Codec<DeadLetter> {
    static CODEC: LazyLock<Codec<DeadLetter>> =
        LazyLock::new(|| Codec::new("dead letter", DEAD_LETTER_SCHEMAS));
    &CODEC
}

/// The codec of [`Erasure`] (topic `webhooks.erasures`).
pub fn erasure() -> &'static Codec<Erasure> {
    static CODEC: LazyLock<Codec<Erasure>> =
        LazyLock::new(|| Codec::new("erasure", ERASURE_SCHEMAS));
    &CODEC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{
        CallAgent, CallRecord, ContactListRecord, ContactRecord, MessageRecord, Position, Stage,
        Status,
    };
    use serde::{Deserialize, Serialize};

    /// The v1 shape of the normalized event, as a v1 writer serialized it.
    #[derive(Debug, Serialize, Deserialize)]
    struct V1NormalizedEvent {
        event_id: String,
        tenant: String,
        event: String,
        status: Status,
        entity: String,
        entity_id: String,
        received_at: i64,
        source_addr: String,
        payload: String,
        error: String,
        call: Option<CallRecord>,
    }

    fn envelope() -> RawEnvelope {
        RawEnvelope {
            event_id: "3f1c".into(),
            tenant: "acme".into(),
            event: "call-ended".into(),
            received_at: 1_772_460_300_123,
            source_addr: "127.0.0.1".into(),
            body: br#"{"id": 1}"#.to_vec(),
        }
    }

    fn normalized(call: Option<CallRecord>) -> NormalizedEvent {
        NormalizedEvent {
            event_id: "3f1c".into(),
            tenant: "acme".into(),
            event: "call-ended".into(),
            entity: "call".into(),
            entity_id: "880142".into(),
            received_at: 1_772_460_300_123,
            source_addr: "10.1.2.3".into(),
            payload: r#"{"id":880142}"#.into(),
            call,
            ..NormalizedEvent::default()
        }
    }

    #[test]
    fn raw_envelope_round_trips() {
        let codec = raw_envelope();
        let bytes = codec.encode(&envelope()).unwrap();
        assert_eq!(bytes[..2], MARKER);
        assert_eq!(codec.decode(&bytes).unwrap(), envelope());
    }

    #[test]
    fn normalized_event_round_trips_with_and_without_a_call() {
        let call = CallRecord {
            call_id: 880142,
            direction: "inbound".into(),
            started_at: Some(1_772_460_300_000),
            ended_at: None,
            utc_offset_s: Some(-18_000),
            abandoned: Some(false),
            tags: vec!["billing".into()],
            agents: vec![CallAgent {
                agent_id: Some(21),
                name: "Dev Patel".into(),
                action: "Answered".into(),
                agent_type: "Normal call".into(),
            }],
            ..CallRecord::default()
        };
        let codec = normalized_event();
        for record in [normalized(Some(call)), normalized(None)] {
            let bytes = codec.encode(&record).unwrap();
            assert_eq!(codec.decode(&bytes).unwrap(), record);
        }
    }

    #[test]
    fn v2_records_of_every_entity_round_trip() {
        let mut record = normalized(None);
        record.contact = Some(ContactRecord {
            contact_id: 30417,
            first_name: "Maria".into(),
            additional_fields: r#"{"plan":"gold"}"#.into(),
            created_at: Some(1_763_665_330_000),
            ..ContactRecord::default()
        });
        record.contact_list = Some(ContactListRecord {
            list_id: 12,
            name: "Renewals".into(),
            size: Some(2),
            member_ids: vec![1, 2],
            ..ContactListRecord::default()
        });
        record.message = Some(MessageRecord {
            message_id: "SM1".into(),
            direction: "inbound".into(),
            contact_id: Some(30417),
            ..MessageRecord::default()
        });
        let codec = normalized_event();
        assert_eq!(
            codec.decode(&codec.encode(&record).unwrap()).unwrap(),
            record
        );
    }

    #[test]
    fn a_field_report_round_trips_and_a_v2_record_decodes_without_one() {
        let mut record = normalized(None);
        record.field_report = Some(crate::FieldReport {
            unmapped: vec![crate::UnmappedField {
                path: "agents[].skill".into(),
                example: r#""billing""#.into(),
            }],
            mistyped: vec![crate::MistypedField {
                path: "duration".into(),
                expected: "integer".into(),
                found: "string".into(),
                example: r#""26""#.into(),
            }],
        });
        let codec = normalized_event();
        assert_eq!(
            codec.decode(&codec.encode(&record).unwrap()).unwrap(),
            record
        );
        // What a v2 transform wrote: v3 only appends a union to the record, so a v3
        // datum without a report (its last byte, the union's null branch) minus that
        // byte is the v2 datum; the header names the v2 schema.
        let mut v2_record = normalized(None);
        v2_record.payload = "{}".into();
        let mut bytes = codec.encode(&v2_record).unwrap();
        assert_eq!(bytes.pop(), Some(0), "the null branch of field_report");
        let v2 =
            Codec::<NormalizedEvent>::new("normalized event v2", &NORMALIZED_EVENT_SCHEMAS[..2]);
        bytes[2..HEADER_LEN].copy_from_slice(&v2.current_fingerprint);
        let decoded = codec.decode(&bytes).unwrap();
        assert_eq!(decoded.field_report, None);
        assert_eq!(decoded.payload, "{}");
    }

    #[test]
    fn an_erasure_round_trips() {
        let record = crate::erasure::Erasure::of(
            "acme",
            &crate::erasure::Subject::Phone("15557654321".into()),
            "r1",
            "dpo@acme",
            1_772_460_300_123,
        );
        let codec = erasure();
        assert_eq!(
            codec.decode(&codec.encode(&record).unwrap()).unwrap(),
            record
        );
    }

    #[test]
    fn a_record_written_with_schema_v1_still_decodes() {
        // What a v1 transform wrote: the v1 schema, no contact, list or message fields.
        let v1 =
            Codec::<V1NormalizedEvent>::new("normalized event v1", &NORMALIZED_EVENT_SCHEMAS[..1]);
        let old = V1NormalizedEvent {
            event_id: "e1".into(),
            tenant: "acme".into(),
            event: "call-ended".into(),
            status: Status::Normalized,
            entity: "call".into(),
            entity_id: "7".into(),
            received_at: 1_000,
            source_addr: "127.0.0.1".into(),
            payload: "{}".into(),
            error: String::new(),
            call: Some(CallRecord {
                call_id: 7,
                ..CallRecord::default()
            }),
        };
        let bytes = v1.encode(&old).unwrap();
        let decoded = normalized_event().decode(&bytes).unwrap();
        assert_eq!(decoded.call.unwrap().call_id, 7);
        assert_eq!(decoded.event_id, "e1");
        assert!(
            decoded.contact.is_none()
                && decoded.contact_list.is_none()
                && decoded.message.is_none()
        );
    }

    #[test]
    fn every_schema_version_adds_only_optional_fields_with_defaults() {
        for versions in [
            RAW_ENVELOPE_SCHEMAS,
            NORMALIZED_EVENT_SCHEMAS,
            DEAD_LETTER_SCHEMAS,
            ERASURE_SCHEMAS,
        ] {
            for pair in versions.windows(2) {
                let old: serde_json::Value = serde_json::from_str(pair[0]).unwrap();
                let new: serde_json::Value = serde_json::from_str(pair[1]).unwrap();
                let names = |v: &serde_json::Value| -> Vec<String> {
                    v["fields"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f["name"].as_str().unwrap().to_owned())
                        .collect()
                };
                let (old_names, new_names) = (names(&old), names(&new));
                assert_eq!(
                    new_names[..old_names.len()],
                    old_names[..],
                    "fields removed or reordered"
                );
                for field in &new["fields"].as_array().unwrap()[old_names.len()..] {
                    assert_eq!(field["default"], serde_json::Value::Null, "{field}");
                    assert_eq!(field["type"][0], "null", "{field}");
                }
                assert_eq!(old["name"], new["name"]);
                assert_eq!(old["namespace"], new["namespace"]);
            }
        }
    }

    #[test]
    fn dead_letters_of_every_stage_round_trip() {
        let position = Position {
            topic: "webhooks.raw".into(),
            partition: 2,
            offset: 41,
        };
        let transform = DeadLetter::of_record(
            Stage::Transform,
            "call event has no usable integer id",
            &position,
            b"acme:event:3f1c",
            b"{}".to_vec(),
            1_772_460_300_123,
        )
        .for_event("3f1c", "acme", "call-ended");
        let ingest = DeadLetter::refused_delivery(
            400,
            "body is not valid JSON",
            "acme",
            "call-ended",
            "203.0.113.9",
            b"{".to_vec(),
            77,
            1_772_460_300_123,
        );
        assert_eq!(
            (
                ingest.http_status,
                ingest.source_addr.as_deref(),
                ingest.key.as_str()
            ),
            (Some(400), Some("203.0.113.9"), "")
        );
        let codec = dead_letter();
        for letter in [transform, ingest] {
            assert_eq!(
                codec.decode(&codec.encode(&letter).unwrap()).unwrap(),
                letter
            );
        }
    }

    #[test]
    fn a_dead_letter_written_with_schema_v1_still_decodes() {
        #[derive(Serialize)]
        struct V1DeadLetter {
            stage: String,
            reason: String,
            event_id: String,
            tenant: String,
            event: String,
            source_topic: String,
            source_partition: i32,
            source_offset: i64,
            key: String,
            #[serde(with = "apache_avro::serde_avro_bytes")]
            payload: Vec<u8>,
            failed_at: i64,
        }
        impl<'de> Deserialize<'de> for V1DeadLetter {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                unreachable!("only written")
            }
        }
        let v1 = Codec::<V1DeadLetter>::new("dead letter v1", &DEAD_LETTER_SCHEMAS[..1]);
        let bytes = v1
            .encode(&V1DeadLetter {
                stage: "loader".into(),
                reason: "refused".into(),
                event_id: "e1".into(),
                tenant: "acme".into(),
                event: "call-ended".into(),
                source_topic: "webhooks.normalized".into(),
                source_partition: 1,
                source_offset: 9,
                key: "acme:call:1".into(),
                payload: b"{}".to_vec(),
                failed_at: 5,
            })
            .unwrap();
        let letter = dead_letter().decode(&bytes).unwrap();
        assert_eq!((letter.source_offset, letter.http_status), (9, None));
        assert_eq!(letter.source_addr, None);
    }

    #[test]
    fn rejects_records_without_the_marker_or_with_an_unknown_schema() {
        let codec = raw_envelope();
        assert!(matches!(
            codec.decode(b"{\"json\": true}"),
            Err(CodecError::BadMarker { .. })
        ));
        assert!(matches!(
            codec.decode(&[0xC3]),
            Err(CodecError::TooShort { len: 1 })
        ));
        let mut bytes = codec.encode(&envelope()).unwrap();
        bytes[2] ^= 0xFF;
        assert!(matches!(
            codec.decode(&bytes),
            Err(CodecError::UnknownSchema { .. })
        ));
    }

    #[test]
    fn rejects_a_truncated_datum() {
        let codec = raw_envelope();
        let bytes = codec.encode(&envelope()).unwrap();
        assert!(codec.decode(&bytes[..bytes.len() - 3]).is_err());
    }
}
