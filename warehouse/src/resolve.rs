//! What the loader settles before it writes a block, as a pure function of the block and
//! of what is already stored, so that the loader and the simulator (which writes the rows
//! traffic becomes, for the SQL tests) decide alike:
//!
//! - **Sender duplicates are dropped.** An event already stored (or earlier in the block)
//!   with another receipt time is a new delivery of the same body by the sender: none of
//!   its rows is written again. So every stored row of an event carries the event's
//!   first receipt, and a late retry of an old event can never pass for newer state.
//!   Rows with the same receipt time (a block written again, a replay) are kept.
//! - **Every entity gets its day once.** A typed row's `key_day` is its entity's day,
//!   fixed at the entity's first sight and reused for all its later rows (a sparse
//!   `call-disposition-saved` has no start time, yet belongs to its call's day): a call's
//!   start day if its first event has one, else that event's receipt day; a message's
//!   sent day, else its receipt day; a contact's or a list's receipt day of first sight.
//!   The storage and the aggregate states are laid out by that day, so that a reader of a
//!   time window reads only its days.

use std::collections::{HashMap, HashSet};

use schemas::Entity;
use serde::Serialize;

use crate::rows::Tables;

/// A row of `entity_keys`: an entity's day, as first assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct EntityKeyRow {
    pub tenant: String,
    /// `call`, `contact`, `contact_list` or `message`.
    pub entity: String,
    pub entity_id: String,
    /// Days since 1970.
    pub key_day: u16,
    pub first_event_id: String,
    pub first_received_at_ms: u64,
    pub assigned_at_ms: u64,
}

/// An entity: its tenant, kind and id (as text).
pub type EntityRef = (String, Entity, String);

/// What is already stored, as far as a block needs to know.
pub trait Stored {
    /// The receipt time the event `(tenant, event_id)` was stored with, if it was.
    fn first_receipt(&self, tenant: &str, event_id: &str) -> Option<u64>;
    /// The day already assigned to an entity, if any.
    fn key_day(&self, entity: &EntityRef) -> Option<u16>;
}

/// What settling a block found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Deliveries dropped as sender duplicates.
    pub duplicates: usize,
    /// For each raw row the block had, whether it is kept (to follow the rows with
    /// anything kept beside them, in the same order).
    pub kept_raw: Vec<bool>,
    /// Entities seen for the first time, with their days, to store before the rows.
    pub new_keys: Vec<EntityKeyRow>,
}

/// The entities a block's typed rows are about (to look up what is stored of them).
pub fn entities(tables: &Tables) -> Vec<EntityRef> {
    let mut out: Vec<EntityRef> = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |tenant: &str, entity, id: String| {
        if seen.insert((tenant.to_owned(), entity, id.clone())) {
            out.push((tenant.to_owned(), entity, id));
        }
    };
    for r in &tables.calls {
        push(&r.tenant, Entity::Call, r.call_id.to_string());
    }
    for r in &tables.contacts {
        push(&r.tenant, Entity::Contact, r.contact_id.to_string());
    }
    for r in &tables.contact_lists {
        push(&r.tenant, Entity::ContactList, r.list_id.to_string());
    }
    for r in &tables.messages {
        push(&r.tenant, Entity::Message, r.message_id.clone());
    }
    out
}

/// Drops the block's sender duplicates and sets every typed row's `key_day`, given what
/// is stored; returns what it found. `now_ms` stamps new entity keys.
pub fn settle(tables: &mut Tables, stored: &impl Stored, now_ms: u64) -> Settled {
    let mut settled = Settled::default();
    // The first receipt of each event: stored, else the earliest in the block.
    let mut first: HashMap<(String, String), u64> = HashMap::new();
    for r in &tables.raw {
        let receipt = stored
            .first_receipt(&r.tenant, &r.event_id)
            .unwrap_or(r.received_at_ms);
        first
            .entry((r.tenant.clone(), r.event_id.clone()))
            .and_modify(|f| *f = (*f).min(receipt))
            .or_insert(receipt);
    }
    let keep = |tenant: &str, event_id: &str, received_at_ms: u64| {
        first
            .get(&(tenant.to_owned(), event_id.to_owned()))
            .is_none_or(|f| *f == received_at_ms)
    };
    settled.kept_raw = tables
        .raw
        .iter()
        .map(|r| keep(&r.tenant, &r.event_id, r.received_at_ms))
        .collect();
    let mut kept = settled.kept_raw.iter();
    tables
        .raw
        .retain(|_| *kept.next().expect("one flag per row"));
    settled.duplicates = settled.kept_raw.iter().filter(|k| !**k).count();
    tables
        .calls
        .retain(|r| keep(&r.tenant, &r.event_id, r.received_at_ms));
    tables
        .contacts
        .retain(|r| keep(&r.tenant, &r.event_id, r.received_at_ms));
    tables
        .contact_lists
        .retain(|r| keep(&r.tenant, &r.event_id, r.received_at_ms));
    tables
        .messages
        .retain(|r| keep(&r.tenant, &r.event_id, r.received_at_ms));
    tables
        .unmapped
        .retain(|r| keep(&r.tenant, &r.event_id, r.received_at_ms));

    // Days: stored ones, else assigned at the entity's first row in receipt order.
    let mut sights: Vec<(u64, Sight)> = Vec::new();
    for (i, r) in tables.calls.iter().enumerate() {
        sights.push((r.received_at_ms, Sight::Call(i)));
    }
    for (i, r) in tables.contacts.iter().enumerate() {
        sights.push((r.received_at_ms, Sight::Contact(i)));
    }
    for (i, r) in tables.contact_lists.iter().enumerate() {
        sights.push((r.received_at_ms, Sight::List(i)));
    }
    for (i, r) in tables.messages.iter().enumerate() {
        sights.push((r.received_at_ms, Sight::Message(i)));
    }
    sights.sort_by_key(|(at, _)| *at);
    let mut days: HashMap<EntityRef, u16> = HashMap::new();
    for (_, sight) in sights {
        let (entity, first_day, event_id, received_at_ms) = sight.read(tables);
        let day = match days
            .get(&entity)
            .copied()
            .or_else(|| stored.key_day(&entity))
        {
            Some(day) => day,
            None => {
                settled.new_keys.push(EntityKeyRow {
                    tenant: entity.0.clone(),
                    entity: entity.1.as_str().to_owned(),
                    entity_id: entity.2.clone(),
                    key_day: first_day,
                    first_event_id: event_id,
                    first_received_at_ms: received_at_ms,
                    assigned_at_ms: now_ms,
                });
                first_day
            }
        };
        days.insert(entity, day);
        sight.set_day(tables, day);
    }
    settled
}

/// A typed row, by table and position.
#[derive(Debug, Clone, Copy)]
enum Sight {
    Call(usize),
    Contact(usize),
    List(usize),
    Message(usize),
}

impl Sight {
    /// The row's entity, the day it would give a new entity, its event and receipt.
    fn read(self, t: &Tables) -> (EntityRef, u16, String, u64) {
        let day = |seconds: u32| (seconds / 86_400) as u16;
        match self {
            Sight::Call(i) => {
                let r = &t.calls[i];
                let at = r.started_at.unwrap_or(r.received_at);
                let entity = (r.tenant.clone(), Entity::Call, r.call_id.to_string());
                (entity, day(at), r.event_id.clone(), r.received_at_ms)
            }
            Sight::Contact(i) => {
                let r = &t.contacts[i];
                let entity = (r.tenant.clone(), Entity::Contact, r.contact_id.to_string());
                (
                    entity,
                    day(r.received_at),
                    r.event_id.clone(),
                    r.received_at_ms,
                )
            }
            Sight::List(i) => {
                let r = &t.contact_lists[i];
                let entity = (r.tenant.clone(), Entity::ContactList, r.list_id.to_string());
                (
                    entity,
                    day(r.received_at),
                    r.event_id.clone(),
                    r.received_at_ms,
                )
            }
            Sight::Message(i) => {
                let r = &t.messages[i];
                let at = r.sent_at.unwrap_or(r.received_at);
                let entity = (r.tenant.clone(), Entity::Message, r.message_id.clone());
                (entity, day(at), r.event_id.clone(), r.received_at_ms)
            }
        }
    }

    fn set_day(self, t: &mut Tables, day: u16) {
        match self {
            Sight::Call(i) => t.calls[i].key_day = day,
            Sight::Contact(i) => t.contacts[i].key_day = day,
            Sight::List(i) => t.contact_lists[i].key_day = day,
            Sight::Message(i) => t.messages[i].key_day = day,
        }
    }
}

/// What is stored, held in memory (the simulator's, and tests').
#[derive(Debug, Default, Clone)]
pub struct Memory {
    pub receipts: HashMap<(String, String), u64>,
    pub days: HashMap<EntityRef, u16>,
}

impl Stored for Memory {
    fn first_receipt(&self, tenant: &str, event_id: &str) -> Option<u64> {
        self.receipts
            .get(&(tenant.to_owned(), event_id.to_owned()))
            .copied()
    }

    fn key_day(&self, entity: &EntityRef) -> Option<u16> {
        self.days.get(entity).copied()
    }
}

impl Memory {
    /// Records what a settled block stored.
    pub fn remember(&mut self, tables: &Tables, settled: &Settled) {
        for r in &tables.raw {
            self.receipts
                .entry((r.tenant.clone(), r.event_id.clone()))
                .or_insert(r.received_at_ms);
        }
        for key in &settled.new_keys {
            if let Some(entity) = Entity::from_name(&key.entity) {
                self.days.insert(
                    (key.tenant.clone(), entity, key.entity_id.clone()),
                    key.key_day,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{CallRecord, NormalizedEvent};

    const DAY_MS: i64 = 86_400_000;

    fn call(
        event_id: &str,
        call_id: i64,
        received_at: i64,
        started_at: Option<i64>,
    ) -> NormalizedEvent {
        NormalizedEvent {
            event_id: event_id.into(),
            tenant: "acme".into(),
            event: "call-ended".into(),
            received_at,
            call: Some(CallRecord {
                call_id,
                started_at,
                disposition_code: event_id.to_uppercase(),
                ..CallRecord::default()
            }),
            field_report: Some(schemas::FieldReport {
                unmapped: vec![schemas::UnmappedField {
                    path: "queueName".into(),
                    example: "1".into(),
                }],
                mistyped: Vec::new(),
            }),
            ..NormalizedEvent::default()
        }
    }

    #[test]
    fn a_late_retry_of_a_stored_event_is_not_written_again() {
        let mut stored = Memory::default();
        stored.receipts.insert(("acme".into(), "e1".into()), 1_000);
        let mut tables = Tables::default();
        tables.add_event(call("e1", 7, 9_000, None));
        tables.add_event(call("e2", 7, 9_500, None));
        let settled = settle(&mut tables, &stored, 0);
        assert_eq!(settled.duplicates, 1);
        let kept: Vec<&str> = tables.calls.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(kept, ["e2"]);
        assert_eq!(tables.raw.len(), 1);
        let paths: Vec<&str> = tables
            .unmapped
            .iter()
            .map(|r| r.event_id.as_str())
            .collect();
        assert_eq!(
            paths,
            ["e2"],
            "the duplicate's unmapped paths are dropped too"
        );
    }

    #[test]
    fn within_a_block_the_first_receipt_wins_and_a_repeated_row_is_kept() {
        let stored = Memory::default();
        let mut tables = Tables::default();
        tables.add_event(call("e1", 7, 5_000, None));
        tables.add_event(call("e1", 7, 2_000, None));
        // The same delivery again (a replay): same receipt, kept.
        tables.add_event(call("e1", 7, 2_000, None));
        settle(&mut tables, &stored, 0);
        let receipts: Vec<u64> = tables.raw.iter().map(|r| r.received_at_ms).collect();
        assert_eq!(receipts, [2_000, 2_000]);
    }

    #[test]
    fn a_call_keeps_the_day_of_its_first_event_for_every_later_event() {
        let mut stored = Memory::default();
        let mut tables = Tables::default();
        // Started on day 10, first seen on day 10; a sparse event of day 11 follows.
        tables.add_event(call("e1", 7, 10 * DAY_MS + 5, Some(10 * DAY_MS + 1)));
        tables.add_event(call("e2", 7, 11 * DAY_MS + 5, None));
        let settled = settle(&mut tables, &stored, 0);
        assert_eq!(
            tables.calls.iter().map(|r| r.key_day).collect::<Vec<_>>(),
            [10, 10]
        );
        assert_eq!(settled.new_keys.len(), 1);
        assert_eq!(settled.new_keys[0].first_event_id, "e1");
        stored.remember(&tables, &settled);
        // A later block: the call's day is stored; its sparse event of day 12 keeps it.
        let mut later = Tables::default();
        later.add_event(call("e3", 7, 12 * DAY_MS, None));
        let settled = settle(&mut later, &stored, 0);
        assert!(settled.new_keys.is_empty());
        assert_eq!(later.calls[0].key_day, 10);
    }

    #[test]
    fn a_call_first_seen_without_a_start_time_takes_the_day_it_was_received() {
        let mut tables = Tables::default();
        tables.add_event(call("e1", 8, 3 * DAY_MS + 1, None));
        tables.add_event(call("e2", 8, 3 * DAY_MS + 2, Some(2 * DAY_MS)));
        settle(&mut tables, &Memory::default(), 0);
        assert_eq!(
            tables.calls.iter().map(|r| r.key_day).collect::<Vec<_>>(),
            [3, 3]
        );
    }

    #[test]
    fn entities_lists_each_entity_once() {
        let mut tables = Tables::default();
        tables.add_event(call("e1", 7, 1, None));
        tables.add_event(call("e2", 7, 2, None));
        tables.add_event(call("e3", 8, 3, None));
        assert_eq!(entities(&tables).len(), 2);
    }
}
