//! Properties of normalization on arbitrary input: it never panics, it is deterministic,
//! it keeps the payload, and what it calls normalized has an entity id.

use normalize::normalize;
use proptest::prelude::*;
use schemas::{EventKind, RawEnvelope, Status};
use serde_json::{Map, Number, Value};

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("2026-03-02T09:05:00-05:00"),
            Just(""),
            Just("null"),
            Just("12"),
            Just("-3")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let keys = prop_oneof![
            Just("id".to_owned()),
            Just("startedDate".to_owned()),
            Just("agents".to_owned()),
            Just("contact".to_owned()),
            Just("number".to_owned()),
            Just("disposition".to_owned()),
            Just("call_recordings".to_owned()),
            Just("message".to_owned()),
            Just("contacts".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn event() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(EventKind::ALL.to_vec()).prop_map(|k| k.slug().to_owned()),
        Just(String::new()),
        "[a-z]{1,8}(-[a-z]{1,8})?",
    ]
}

fn envelope(event: String, body: Vec<u8>) -> RawEnvelope {
    RawEnvelope {
        event_id: "e".into(),
        tenant: "acme".into(),
        event,
        received_at: 1_772_460_701_000,
        source_addr: String::new(),
        body,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_and_is_deterministic_on_arbitrary_json(event in event(), body in json()) {
        let envelope = envelope(event, body.to_string().into_bytes());
        let first = normalize(&envelope);
        prop_assert_eq!(&first, &normalize(&envelope));
        prop_assert_eq!(first.payload.as_bytes(), envelope.body.as_slice());
        if first.status == Status::Normalized {
            prop_assert!(!first.entity_id.is_empty());
            let records = [first.call.is_some(), first.contact_list.is_some(), first.message.is_some()];
            prop_assert!(records.iter().any(|r| *r) || first.contact.is_some());
        } else {
            prop_assert!(!first.error.is_empty());
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(event in event(), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let envelope = envelope(event, body);
        prop_assert_eq!(normalize(&envelope), normalize(&envelope));
    }
}

/// An id as a sender may write it: a number, a number in a string (padded or not), an
/// integral float, text, or nothing usable.
fn id_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        (0i64..10_000_000).prop_map(|n| Value::String(n.to_string())),
        (0i64..10_000_000).prop_map(|n| Value::String(format!(" {n} "))),
        (0i64..100_000).prop_map(|n| serde_json::json!(n as f64)),
        "[A-Za-z0-9-]{1,12}".prop_map(Value::String),
        Just(Value::Null),
        Just(Value::String(String::new())),
    ]
}

/// The spellings of an entity's id that the readers accept.
fn id_keys(kind: EventKind) -> &'static [&'static str] {
    match kind.entity() {
        schemas::Entity::Call => &["id"],
        schemas::Entity::Contact => &["id", "contactId", "contact_id"],
        schemas::Entity::ContactList => &["id", "listId", "list_id", "contactListId"],
        schemas::Entity::Message => &["id", "messageId", "message_id", "sid", "uuid"],
    }
}

/// A body of a known event: the entity's object with its id under one of its spellings,
/// sent bare or wrapped (`{"contact": …}`, `{"data": …}`, a one-element array).
fn entity_body() -> impl Strategy<Value = (EventKind, Value)> {
    (
        prop::sample::select(EventKind::ALL.to_vec()),
        any::<prop::sample::Index>(),
        id_value(),
        0..4usize,
        json(),
    )
        .prop_map(|(kind, spelling, id, wrapping, extra)| {
            let keys = id_keys(kind);
            let mut object = Map::new();
            if let Value::Object(extra) = extra {
                object.extend(extra.into_iter().filter(|(k, _)| k != "id"));
            }
            object.insert(keys[spelling.index(keys.len())].to_owned(), id);
            let object = Value::Object(object);
            let wrapper = match kind.entity() {
                schemas::Entity::Call => "call",
                schemas::Entity::Contact => "contact",
                schemas::Entity::ContactList => "list",
                schemas::Entity::Message => "message",
            };
            let body = match wrapping {
                0 => object,
                1 => serde_json::json!({ wrapper: object }),
                2 => serde_json::json!({ "data": object }),
                _ => serde_json::json!({ wrapper: [object] }),
            };
            (kind, body)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_kafka_key_names_the_entity_the_normalizer_finds((kind, body) in entity_body()) {
        let envelope = envelope(kind.slug().to_owned(), body.to_string().into_bytes());
        let key = normalize::identity::kafka_key("acme", kind.slug(), &body, &envelope.event_id);
        let normalized = normalize(&envelope);
        if normalized.status == Status::Normalized {
            prop_assert_eq!(
                key,
                format!("acme:{}:{}", kind.entity().as_str(), normalized.entity_id)
            );
        } else {
            prop_assert_eq!(key, format!("acme:event:{}", envelope.event_id));
        }
    }
}
