//! Where the outcome of one raw record goes (decided by the pure `normalize` crate): the
//! normalized event to `webhooks.normalized`, a dead letter to `webhooks.dlq`, both under
//! the raw record's key so one entity's records stay in one partition. Erased people are
//! redacted first (the list the router holds), and new unmapped paths are announced.

use runtime::TopicArgs;
use schemas::Position;

use crate::discovery::FirstSeen;
use crate::erasures::ErasureList;

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Routes raw records: what the live service and `transform replay` each hold.
pub struct Router {
    topics: TopicArgs,
    erasures: ErasureList,
    first_seen: FirstSeen,
}

/// Distinct (tenant, event, path) announced before the log goes quiet.
const FIRST_SEEN_CAPACITY: usize = 10_000;

impl Router {
    pub fn new(topics: TopicArgs, erasures: ErasureList) -> Router {
        Router {
            topics,
            erasures,
            first_seen: FirstSeen::new(FIRST_SEEN_CAPACITY),
        }
    }

    /// The records to produce for the raw record `payload` read at `position`.
    pub fn route(
        &mut self,
        position: &Position,
        key: Option<&[u8]>,
        payload: &[u8],
        now_ms: i64,
    ) -> Vec<Output> {
        let key = key.unwrap_or_default();
        let erasures = self.erasures.current();
        let outcome = normalize::process_record(payload, position, key, now_ms, &erasures);
        if let Some(event) = &outcome.normalized {
            self.first_seen.observe(event);
        }
        let encoded = outcome.encode(position, key, now_ms);
        [
            (&self.topics.normalized_topic, encoded.normalized),
            (&self.topics.dlq_topic, encoded.dead_letter),
        ]
        .into_iter()
        .filter_map(|(topic, payload)| {
            Some(Output {
                topic: topic.clone(),
                key: key.to_vec(),
                payload: payload?,
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{avro, RawEnvelope};

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

    fn position() -> Position {
        Position {
            topic: "raw".into(),
            partition: 0,
            offset: 7,
        }
    }

    #[test]
    fn outputs_go_to_their_topics_under_the_raw_key() {
        let mut router = Router::new(topics(), ErasureList::default());
        let call = router.route(
            &position(),
            Some(b"acme:call:1"),
            &raw("call-ended", r#"{"id": 1}"#),
            5,
        );
        let topics_of = |outputs: &[Output]| -> Vec<String> {
            outputs.iter().map(|o| o.topic.clone()).collect()
        };
        assert_eq!(topics_of(&call), ["normalized"]);
        assert_eq!(call[0].key, b"acme:call:1");
        let invalid = router.route(&position(), Some(b"k"), &raw("call-ended", "[]"), 5);
        assert_eq!(topics_of(&invalid), ["normalized", "dlq"]);
        assert!(invalid.iter().all(|o| o.key == b"k"));
        let undecodable = router.route(&position(), None, b"junk", 5);
        assert_eq!(topics_of(&undecodable), ["dlq"]);
    }

    #[test]
    fn an_erased_persons_event_is_redacted_before_it_is_produced() {
        let mut erasures = normalize::Erasures::default();
        erasures.add(&schemas::Erasure::of(
            "acme",
            &schemas::Subject::Contact(31),
            "r1",
            "dpo",
            1,
        ));
        let mut router = Router::new(topics(), ErasureList::fixed(erasures));
        let body = r#"{"id": 31, "firstName": "Ann", "phone": "+15557654321"}"#;
        let out = router.route(
            &position(),
            Some(b"acme:contact:31"),
            &raw("contact-created", body),
            5,
        );
        let event = avro::normalized_event().decode(&out[0].payload).unwrap();
        let contact = event.contact.unwrap();
        assert_eq!(
            (
                contact.contact_id,
                contact.first_name.as_str(),
                contact.phone.as_str()
            ),
            (31, "", "")
        );
        assert_eq!(event.payload, "");
    }
}
