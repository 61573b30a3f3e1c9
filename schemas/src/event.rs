//! Event slugs (the `{event}` segment of the webhook URL) and the entity each one is about.
//!
//! NectarDesk's call bodies do not name their event, so the slug in the URL is the only
//! source of truth for what a delivery is. A well-formed slug that is not listed here is
//! still accepted and kept as unrecognized: the platform may add events.

/// What an event is about. Also the middle part of the Kafka key `{tenant}:{entity}:{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Call,
    Message,
    Contact,
    ContactList,
}

impl Entity {
    /// Every entity.
    pub const ALL: [Entity; 4] = [
        Entity::Call,
        Entity::Message,
        Entity::Contact,
        Entity::ContactList,
    ];

    /// The entity named `name` (see [`Entity::as_str`]).
    pub fn from_name(name: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The name used in Kafka keys, tables and the `entity` field of normalized records.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Call => "call",
            Entity::Message => "message",
            Entity::Contact => "contact",
            Entity::ContactList => "contact_list",
        }
    }
}

/// The twelve documented NectarDesk events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    CallEnded,
    CallAbandoned,
    CallOverflowedToVoicemail,
    CallDispositionSaved,
    CallDispositionModified,
    CallRecordingReceived,
    ContactCreated,
    ContactModified,
    ContactListCreated,
    ContactListModified,
    MessageReceived,
    MessageSent,
}

impl EventKind {
    /// Every known event, in the order of the design document.
    pub const ALL: [EventKind; 12] = [
        EventKind::CallEnded,
        EventKind::CallAbandoned,
        EventKind::CallOverflowedToVoicemail,
        EventKind::CallDispositionSaved,
        EventKind::CallDispositionModified,
        EventKind::CallRecordingReceived,
        EventKind::ContactCreated,
        EventKind::ContactModified,
        EventKind::ContactListCreated,
        EventKind::ContactListModified,
        EventKind::MessageReceived,
        EventKind::MessageSent,
    ];

    /// The URL slug, e.g. `call-ended`.
    pub fn slug(self) -> &'static str {
        match self {
            EventKind::CallEnded => "call-ended",
            EventKind::CallAbandoned => "call-abandoned",
            EventKind::CallOverflowedToVoicemail => "call-overflowed-to-voicemail",
            EventKind::CallDispositionSaved => "call-disposition-saved",
            EventKind::CallDispositionModified => "call-disposition-modified",
            EventKind::CallRecordingReceived => "call-recording-received",
            EventKind::ContactCreated => "contact-created",
            EventKind::ContactModified => "contact-modified",
            EventKind::ContactListCreated => "contact-list-created",
            EventKind::ContactListModified => "contact-list-modified",
            EventKind::MessageReceived => "message-received",
            EventKind::MessageSent => "message-sent",
        }
    }

    /// The known event for a slug, or `None` for a slug this version does not know.
    pub fn from_slug(slug: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.slug() == slug)
    }

    /// The entity the event is about.
    pub fn entity(self) -> Entity {
        match self {
            EventKind::CallEnded
            | EventKind::CallAbandoned
            | EventKind::CallOverflowedToVoicemail
            | EventKind::CallDispositionSaved
            | EventKind::CallDispositionModified
            | EventKind::CallRecordingReceived => Entity::Call,
            EventKind::ContactCreated | EventKind::ContactModified => Entity::Contact,
            EventKind::ContactListCreated | EventKind::ContactListModified => Entity::ContactList,
            EventKind::MessageReceived | EventKind::MessageSent => Entity::Message,
        }
    }
}

/// Whether `slug` is a well-formed event slug: 1 to 64 characters of lowercase ASCII
/// letters, digits and inner single hyphens. Unknown but well-formed slugs are accepted.
pub fn is_well_formed_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && !slug.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slug_maps_back_to_its_event() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_slug(kind.slug()), Some(kind));
            assert!(is_well_formed_slug(kind.slug()), "{}", kind.slug());
        }
    }

    #[test]
    fn contact_list_events_are_not_mistaken_for_contact_events() {
        assert_eq!(
            EventKind::from_slug("contact-list-created").map(EventKind::entity),
            Some(Entity::ContactList)
        );
        assert_eq!(
            EventKind::from_slug("contact-created").map(EventKind::entity),
            Some(Entity::Contact)
        );
    }

    #[test]
    fn unknown_slugs_are_well_formed_but_unrecognized() {
        assert!(is_well_formed_slug("call-transferred"));
        assert_eq!(EventKind::from_slug("call-transferred"), None);
    }

    #[test]
    fn rejects_malformed_slugs() {
        for slug in [
            "",
            "Call-Ended",
            "call_ended",
            "-call",
            "call-",
            "a--b",
            "call ended",
        ] {
            assert!(!is_well_formed_slug(slug), "{slug:?}");
        }
        assert!(!is_well_formed_slug(&"a".repeat(65)));
    }
}
