//! Which entity a delivery is about, and its id: found once, by the same lenient readers
//! that read the entity, for both the Kafka key (`{tenant}:{entity}:{id}`) and the
//! normalized record's `entity_id`. If the two disagreed, an entity's events could land in
//! different partitions and lose their order.

use std::fmt;

use serde_json::{Map, Value};

use schemas::{Entity, EventKind};

use crate::lenient::{field, first, id_text, int, object};

/// An entity's id: an integer for calls, contacts and lists; any text for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Int(i64),
    Text(String),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(n) => write!(f, "{n}"),
            Id::Text(s) => f.write_str(s),
        }
    }
}

/// The entity of a delivery: its kind, the object holding it in the body, and its id.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub entity: Entity,
    /// The entity's object: the body, or the object it wraps (`{"contact": {...}}`).
    pub object: &'a Map<String, Value>,
}

impl<'a> Target<'a> {
    /// Where the entity of a `kind` event sits in `body`.
    pub fn of(kind: EventKind, body: &'a Map<String, Value>) -> Target<'a> {
        let entity = kind.entity();
        let object = match entity {
            Entity::Call => body,
            Entity::Contact => unwrap(body, "contact"),
            Entity::ContactList => unwrap(body, "list"),
            Entity::Message => unwrap(body, "message"),
        };
        Target { entity, object }
    }

    /// The entity's id; `None` when the body has no usable one.
    pub fn id(&self) -> Option<Id> {
        let o = self.object;
        match self.entity {
            Entity::Call => call_id(o).map(Id::Int),
            Entity::Contact => contact_id(o).map(Id::Int),
            Entity::ContactList => list_id(o).map(Id::Int),
            Entity::Message => message_id(o).map(Id::Text),
        }
    }
}

/// The entity and id of a `kind` event's body, as the Kafka key names them.
pub fn entity_ref(kind: EventKind, body: &Value) -> Option<(Entity, Id)> {
    let target = Target::of(kind, body.as_object()?);
    Some((target.entity, target.id()?))
}

/// The object to read: the body, or the object under `wrapper` (or `data`) when the body
/// has no `id` of its own but wraps the entity.
fn unwrap<'a>(body: &'a Map<String, Value>, wrapper: &'static str) -> &'a Map<String, Value> {
    if body.contains_key("id") {
        return body;
    }
    object(field(body, wrapper))
        .or_else(|| object(field(body, "data")))
        .unwrap_or(body)
}

/// A call's id: its integer `id`.
pub(crate) fn call_id(c: &Map<String, Value>) -> Option<i64> {
    int(field(c, "id"))
}

/// A contact's integer id, under any of its spellings (also for the contact in a call).
pub(crate) fn contact_id(c: &Map<String, Value>) -> Option<i64> {
    int(first(c, &["id", "contactId", "contact_id"]))
}

/// A contact list's integer id, under any of its spellings.
pub(crate) fn list_id(l: &Map<String, Value>) -> Option<i64> {
    int(first(l, &["id", "listId", "list_id", "contactListId"]))
}

/// A message's id: any non-empty text or number of at most 128 characters.
pub(crate) fn message_id(m: &Map<String, Value>) -> Option<String> {
    let id = id_text(first(m, &["id", "messageId", "message_id", "sid", "uuid"]));
    (!id.is_empty() && id.len() <= 128).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id_of(kind: EventKind, body: Value) -> Option<String> {
        entity_ref(kind, &body).map(|(_, id)| id.to_string())
    }

    #[test]
    fn finds_wrapped_entities_under_their_other_spellings() {
        assert_eq!(
            id_of(
                EventKind::ContactCreated,
                json!({"contact": {"contactId": "31"}})
            ),
            Some("31".into())
        );
        assert_eq!(
            id_of(
                EventKind::ContactListModified,
                json!({"data": {"listId": 12}})
            ),
            Some("12".into())
        );
        assert_eq!(
            id_of(
                EventKind::MessageSent,
                json!({"message": {"messageId": " SM1 "}})
            ),
            Some("SM1".into())
        );
        assert_eq!(
            id_of(EventKind::CallEnded, json!({"id": "880142"})),
            Some("880142".into())
        );
    }

    #[test]
    fn a_body_without_a_usable_id_has_no_entity() {
        assert_eq!(id_of(EventKind::CallEnded, json!({"id": "abc"})), None);
        assert_eq!(
            id_of(EventKind::ContactCreated, json!({"contact": {}})),
            None
        );
        assert_eq!(id_of(EventKind::MessageSent, json!([1])), None);
    }
}
