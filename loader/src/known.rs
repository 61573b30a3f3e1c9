//! What the loader knows of what is stored, to settle a block (see `warehouse::resolve`):
//! the first receipt of recent events (to drop sender duplicates) and the day of each
//! entity (to lay its rows out by that day).
//!
//! Receipts: a window of recent events held in memory, read from `raw_events_store_v2`
//! when the loader starts and again whenever it resumes a partition (another loader may
//! have written its events meanwhile), then kept up to date with every block it writes.
//! A sender retries within seconds, and a late retry of a call's first event comes within
//! the hour, so a window (`LOADER_DEDUP_WINDOW_S`, default a day, at most
//! `LOADER_DEDUP_MAX_EVENTS`) catches them; a duplicate older than the window is stored as
//! a new delivery. Entity days are authoritative: a day not in memory is read from
//! `entity_keys` (a primary-key lookup) before it is assigned.

use std::collections::HashMap;

use warehouse::resolve::{EntityRef, Stored};

/// Events and entities the loader has seen stored.
#[derive(Debug, Default)]
pub struct Known {
    tenants: HashMap<String, u32>,
    receipts: HashMap<(u32, u128), u64>,
    days: HashMap<EntityRef, u16>,
    window_ms: u64,
    max_events: usize,
    max_days: usize,
    /// The newest receipt seen, the window's end.
    newest_ms: u64,
}

impl Known {
    pub fn new(window_ms: u64, max_events: usize) -> Known {
        Known {
            window_ms,
            max_events,
            max_days: max_events,
            ..Known::default()
        }
    }

    /// Records that `(tenant, event_id)` is stored with `received_at_ms` (the earliest
    /// wins).
    pub fn receipt(&mut self, tenant: &str, event_id: &str, received_at_ms: u64) {
        let tenant = self.tenant(tenant);
        self.newest_ms = self.newest_ms.max(received_at_ms);
        self.receipts
            .entry((tenant, id_key(event_id)))
            .and_modify(|at| *at = (*at).min(received_at_ms))
            .or_insert(received_at_ms);
        if self.receipts.len() > self.max_events {
            self.forget_old_receipts();
        }
    }

    /// Records an entity's day.
    pub fn day(&mut self, entity: EntityRef, day: u16) {
        if self.days.len() >= self.max_days {
            // Days are read again from `entity_keys` when needed: forgetting is safe.
            self.days.clear();
        }
        self.days.insert(entity, day);
    }

    /// The entities of `wanted` whose day is not in memory.
    pub fn unknown_days<'a>(&self, wanted: &'a [EntityRef]) -> Vec<&'a EntityRef> {
        wanted
            .iter()
            .filter(|e| !self.days.contains_key(*e))
            .collect()
    }

    /// How many events may be held.
    pub fn capacity(&self) -> usize {
        self.max_events
    }

    /// How many events are held.
    pub fn events(&self) -> usize {
        self.receipts.len()
    }

    /// Drops receipts older than the window, or the older half when still too many.
    fn forget_old_receipts(&mut self) {
        let horizon = self.newest_ms.saturating_sub(self.window_ms);
        self.receipts.retain(|_, at| *at >= horizon);
        if self.receipts.len() > self.max_events {
            let mut times: Vec<u64> = self.receipts.values().copied().collect();
            let mid = times.len() / 2;
            let (_, median, _) = times.select_nth_unstable(mid);
            let median = *median;
            self.receipts.retain(|_, at| *at >= median);
        }
    }

    fn tenant(&mut self, tenant: &str) -> u32 {
        let next = self.tenants.len() as u32;
        *self.tenants.entry(tenant.to_owned()).or_insert(next)
    }
}

impl Stored for Known {
    fn first_receipt(&self, tenant: &str, event_id: &str) -> Option<u64> {
        let tenant = *self.tenants.get(tenant)?;
        self.receipts.get(&(tenant, id_key(event_id))).copied()
    }

    fn key_day(&self, entity: &EntityRef) -> Option<u16> {
        self.days.get(entity).copied()
    }
}

/// An event id as a 128-bit key: event ids are 32 hex digits; anything else is hashed.
fn id_key(event_id: &str) -> u128 {
    u128::from_str_radix(event_id, 16).unwrap_or_else(|_| {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        event_id.hash(&mut hasher);
        u128::from(hasher.finish()) | (1 << 127)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Entity;

    #[test]
    fn keeps_the_earliest_receipt_of_an_event() {
        let mut known = Known::new(86_400_000, 100);
        known.receipt("acme", "0123456789abcdef0123456789abcdef", 2_000);
        known.receipt("acme", "0123456789abcdef0123456789abcdef", 1_000);
        assert_eq!(
            known.first_receipt("acme", "0123456789abcdef0123456789abcdef"),
            Some(1_000)
        );
        assert_eq!(
            known.first_receipt("beta", "0123456789abcdef0123456789abcdef"),
            None
        );
        assert_eq!(known.first_receipt("acme", "other"), None);
    }

    #[test]
    fn forgets_receipts_older_than_the_window_and_stays_within_its_size() {
        let mut known = Known::new(1_000, 10);
        for i in 0..20u64 {
            known.receipt("acme", &format!("{i:032x}"), i * 100);
        }
        assert!(known.events() <= 11, "{}", known.events());
        assert_eq!(
            known.first_receipt("acme", &format!("{:032x}", 19)),
            Some(1_900)
        );
        assert_eq!(known.first_receipt("acme", &format!("{:032x}", 0)), None);
    }

    #[test]
    fn reports_the_entities_whose_day_it_does_not_hold() {
        let mut known = Known::new(1_000, 10);
        let a: EntityRef = ("acme".into(), Entity::Call, "7".into());
        let b: EntityRef = ("acme".into(), Entity::Call, "8".into());
        known.day(a.clone(), 10);
        let wanted = [a, b.clone()];
        assert_eq!(known.unknown_days(&wanted), [&b]);
    }
}
