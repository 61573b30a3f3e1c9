//! What one raw record becomes: a normalized event, a dead letter, or both. The
//! `transform` service, `transform replay` and the simulator all decide it here, so the
//! rows the simulator and the chaos harness expect are the rows the pipeline writes.

use schemas::{avro, DeadLetter, NormalizedEvent, Position, RawEnvelope, Stage, Status};

use crate::erasure::{redact_event, redact_letter, Erasures};
use crate::normalize;

/// What a raw record becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The normalized event, kept whatever its status (an invalid event still reaches
    /// `raw_events`); `None` only when the record could not be decoded.
    pub normalized: Option<NormalizedEvent>,
    /// Why the record or its event could not be processed, when it could not.
    pub dead_letter: Option<DeadLetter>,
}

/// The same, encoded for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// For `webhooks.normalized`.
    pub normalized: Option<Vec<u8>>,
    /// For `webhooks.dlq`.
    pub dead_letter: Option<Vec<u8>>,
}

/// Decides for a raw envelope read at `position` under `key`: an invalid event is kept
/// and also dead-lettered with the reason. What is about a person in `erasures` is
/// redacted from both before anything leaves (see `erasure`).
pub fn process(
    envelope: &RawEnvelope,
    position: &Position,
    key: &[u8],
    now_ms: i64,
    erasures: &Erasures,
) -> Outcome {
    let mut normalized = normalize(envelope);
    let matched = redact_event(&mut normalized, erasures);
    let dead_letter = (normalized.status == Status::Invalid).then(|| {
        let mut letter = DeadLetter::of_record(
            Stage::Transform,
            normalized.error.clone(),
            position,
            key,
            envelope.body.clone(),
            now_ms,
        )
        .for_event(&envelope.event_id, &envelope.tenant, &envelope.event);
        redact_letter(&mut letter, erasures, matched);
        letter
    });
    Outcome {
        normalized: Some(normalized),
        dead_letter,
    }
}

/// Decides for a record of `webhooks.raw` as read: one that does not decode as a raw
/// envelope is dead-lettered as it was read (emptied if it mentions an erased number).
pub fn process_record(
    payload: &[u8],
    position: &Position,
    key: &[u8],
    now_ms: i64,
    erasures: &Erasures,
) -> Outcome {
    match avro::raw_envelope().decode(payload) {
        Ok(envelope) => process(&envelope, position, key, now_ms, erasures),
        Err(e) => {
            let mut letter = DeadLetter::of_record(
                Stage::Transform,
                format!("undecodable raw envelope: {e}"),
                position,
                key,
                payload.to_vec(),
                now_ms,
            );
            redact_letter(&mut letter, erasures, false);
            Outcome {
                normalized: None,
                dead_letter: Some(letter),
            }
        }
    }
}

impl Outcome {
    /// Encodes the outcome. A normalized event that cannot be encoded is dead-lettered
    /// instead, with its body.
    pub fn encode(self, position: &Position, key: &[u8], now_ms: i64) -> Encoded {
        let Some(event) = self.normalized else {
            return Encoded {
                normalized: None,
                dead_letter: self.dead_letter.map(|letter| encode_letter(&letter)),
            };
        };
        match avro::normalized_event().encode(&event) {
            Ok(bytes) => Encoded {
                normalized: Some(bytes),
                dead_letter: self.dead_letter.map(|letter| encode_letter(&letter)),
            },
            Err(e) => {
                let letter = DeadLetter::of_record(
                    Stage::Transform,
                    format!("normalized record could not be encoded: {e}"),
                    position,
                    key,
                    event.payload.into_bytes(),
                    now_ms,
                )
                .for_event(&event.event_id, &event.tenant, &event.event);
                Encoded {
                    normalized: None,
                    dead_letter: Some(encode_letter(&letter)),
                }
            }
        }
    }
}

fn encode_letter(letter: &DeadLetter) -> Vec<u8> {
    avro::dead_letter()
        .encode(letter)
        .expect("a dead letter has only strings, numbers and bytes, which always encode")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Erasures {
        Erasures::default()
    }

    fn position(partition: i32, offset: i64) -> Position {
        Position {
            topic: "raw".into(),
            partition,
            offset,
        }
    }

    fn raw(event: &str, body: &str) -> Vec<u8> {
        avro::raw_envelope()
            .encode(&RawEnvelope {
                event_id: "e1".into(),
                tenant: "acme".into(),
                event: event.into(),
                received_at: 1_000,
                source_addr: "127.0.0.1".into(),
                body: body.as_bytes().to_vec(),
            })
            .unwrap()
    }

    #[test]
    fn a_call_becomes_one_normalized_record() {
        let p = position(0, 7);
        let outcome = process_record(
            &raw("call-ended", r#"{"id": 1}"#),
            &p,
            b"acme:call:1",
            5,
            &none(),
        );
        assert!(outcome.dead_letter.is_none());
        let encoded = outcome.encode(&p, b"acme:call:1", 5);
        let record = avro::normalized_event()
            .decode(&encoded.normalized.unwrap())
            .unwrap();
        assert_eq!(record.status, Status::Normalized);
        assert_eq!(record.call.unwrap().call_id, 1);
        assert!(encoded.dead_letter.is_none());
    }

    #[test]
    fn an_invalid_event_is_kept_and_dead_lettered_with_the_reason() {
        let p = position(1, 9);
        let encoded =
            process_record(&raw("call-ended", "[]"), &p, b"k", 5, &none()).encode(&p, b"k", 5);
        let record = avro::normalized_event()
            .decode(&encoded.normalized.unwrap())
            .unwrap();
        assert_eq!(record.status, Status::Invalid);
        let letter = avro::dead_letter()
            .decode(&encoded.dead_letter.unwrap())
            .unwrap();
        assert_eq!(letter.reason, "body is a JSON array, expected an object");
        assert_eq!((letter.source_partition, letter.source_offset), (1, 9));
        assert_eq!(
            (letter.stage.as_str(), letter.key.as_str()),
            ("transform", "k")
        );
        assert_eq!(letter.payload, b"[]");
        assert_eq!(letter.event_id, "e1");
    }

    #[test]
    fn an_erased_persons_invalid_event_leaves_no_trace_in_either_output() {
        let mut erasures = none();
        erasures.add(&schemas::Erasure::of(
            "acme",
            &schemas::Subject::Phone("15557654321".into()),
            "r1",
            "dpo",
            1,
        ));
        let p = position(0, 1);
        let body = r#"{"contact": {"phone": "+1 (555) 765-4321"}}"#;
        let outcome = process_record(&raw("call-ended", body), &p, b"k", 5, &erasures);
        assert_eq!(outcome.normalized.unwrap().payload, "");
        assert!(outcome.dead_letter.unwrap().payload.is_empty());
        let kept = process_record(&raw("call-ended", body), &p, b"k", 5, &none());
        assert_eq!(kept.normalized.unwrap().payload, body);
    }

    #[test]
    fn an_undecodable_record_is_dead_lettered_as_read() {
        let p = position(2, 3);
        let outcome = process_record(b"{\"not\": \"avro\"}", &p, b"", 5, &none());
        assert!(outcome.normalized.is_none());
        let letter = outcome.dead_letter.unwrap();
        assert!(
            letter.reason.starts_with("undecodable raw envelope"),
            "{}",
            letter.reason
        );
        assert_eq!(letter.payload, b"{\"not\": \"avro\"}");
        assert_eq!(letter.source_topic, "raw");
    }
}
