//! What one raw message becomes: a pure function, so every case is unit-tested without
//! a broker.

use runtime::TopicArgs;
use schemas::{avro, DeadLetter, Status};

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// The records to produce for one message of `webhooks.raw`:
/// - a decodable envelope becomes a normalized record under the same key; an invalid
///   event is also dead-lettered with the reason (and still reaches `raw_events`);
/// - an undecodable message is dead-lettered as it was read.
pub fn route(
    topics: &TopicArgs,
    source_topic: &str,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    payload: &[u8],
    now_ms: i64,
) -> Vec<Output> {
    let key = key.unwrap_or_default().to_vec();
    let letter =
        |reason: String, event_id: &str, tenant: &str, event: &str, body: &[u8]| DeadLetter {
            stage: "transform".to_owned(),
            reason,
            event_id: event_id.to_owned(),
            tenant: tenant.to_owned(),
            event: event.to_owned(),
            source_topic: source_topic.to_owned(),
            source_partition: partition,
            source_offset: offset,
            key: String::from_utf8_lossy(&key).into_owned(),
            payload: body.to_vec(),
            failed_at: now_ms,
        };
    let envelope = match avro::raw_envelope().decode(payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            let dead = letter(
                format!("undecodable raw envelope: {e}"),
                "",
                "",
                "",
                payload,
            );
            return vec![dead_letter(topics, &key, &dead)];
        }
    };
    let normalized = transform::normalize(&envelope);
    let mut outputs = Vec::with_capacity(2);
    match avro::normalized_event().encode(&normalized) {
        Ok(bytes) => outputs.push(Output {
            topic: topics.normalized_topic.clone(),
            key: key.clone(),
            payload: bytes,
        }),
        Err(e) => {
            let dead = letter(
                format!("normalized record could not be encoded: {e}"),
                &envelope.event_id,
                &envelope.tenant,
                &envelope.event,
                &envelope.body,
            );
            return vec![dead_letter(topics, &key, &dead)];
        }
    }
    if normalized.status == Status::Invalid {
        let dead = letter(
            normalized.error.clone(),
            &envelope.event_id,
            &envelope.tenant,
            &envelope.event,
            &envelope.body,
        );
        outputs.push(dead_letter(topics, &key, &dead));
    }
    outputs
}

fn dead_letter(topics: &TopicArgs, key: &[u8], letter: &DeadLetter) -> Output {
    let payload = avro::dead_letter()
        .encode(letter)
        .expect("a dead letter has only strings, numbers and bytes, which always encode");
    Output {
        topic: topics.dlq_topic.clone(),
        key: key.to_vec(),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::RawEnvelope;

    fn topics() -> TopicArgs {
        TopicArgs {
            raw_topic: "raw".into(),
            normalized_topic: "normalized".into(),
            dlq_topic: "dlq".into(),
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
    fn a_call_becomes_one_normalized_record_under_the_same_key() {
        let outputs = route(
            &topics(),
            "raw",
            0,
            7,
            Some(b"acme:call:1"),
            &raw("call-ended", r#"{"id": 1}"#),
            5,
        );
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].topic, "normalized");
        assert_eq!(outputs[0].key, b"acme:call:1");
        let record = avro::normalized_event()
            .decode(&outputs[0].payload)
            .unwrap();
        assert_eq!(record.status, Status::Normalized);
        assert_eq!(record.call.unwrap().call_id, 1);
    }

    #[test]
    fn an_invalid_event_is_kept_and_dead_lettered_with_the_reason() {
        let outputs = route(
            &topics(),
            "raw",
            1,
            9,
            Some(b"k"),
            &raw("call-ended", "[]"),
            5,
        );
        let topics: Vec<&str> = outputs.iter().map(|o| o.topic.as_str()).collect();
        assert_eq!(topics, ["normalized", "dlq"]);
        let record = avro::normalized_event()
            .decode(&outputs[0].payload)
            .unwrap();
        assert_eq!(record.status, Status::Invalid);
        let letter = avro::dead_letter().decode(&outputs[1].payload).unwrap();
        assert_eq!(letter.reason, "body is a JSON array, expected an object");
        assert_eq!((letter.source_partition, letter.source_offset), (1, 9));
        assert_eq!(letter.payload, b"[]");
        assert_eq!(letter.event_id, "e1");
    }

    #[test]
    fn an_undecodable_message_is_dead_lettered_as_read() {
        let outputs = route(&topics(), "raw", 2, 3, None, b"{\"not\": \"avro\"}", 5);
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].topic, "dlq");
        let letter = avro::dead_letter().decode(&outputs[0].payload).unwrap();
        assert!(
            letter.reason.starts_with("undecodable raw envelope"),
            "{}",
            letter.reason
        );
        assert_eq!(letter.payload, b"{\"not\": \"avro\"}");
        assert_eq!(letter.source_topic, "raw");
    }
}
