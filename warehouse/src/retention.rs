//! Retention of personal data: how long raw payloads, dead-letter payloads and message
//! texts are kept (days; 0 keeps them for ever), and the SQL that empties them once
//! older. Rows stay (counts, statuses, times); only the text columns are emptied.
//!
//! Each setting covers every column that holds a copy of the data:
//! - raw payloads: `raw_events_store_v2.payload` by receipt time, and the field examples
//!   cut from them, `unmapped_fields_store.example` and the state's `s_example` (by day);
//! - dead-letter payloads: `dead_letters_store_v2.payload` by failure time;
//! - message texts: `message_events_store_v2.text` and the state `messages_state.s_text`,
//!   both by the message's day (`key_day`), so the two expire together;
//! - the pre-0007 tables kept for the backfill (`raw_events_store`, `dead_letters_store`,
//!   `message_events_store`, by their times), until they are dropped.
//!
//! Servers with column TTL (21.8 and later) expire them by themselves once the loader set
//! [`Expiring::alter_ttl`] (at start, idempotently). ClickHouse 18.16 has no TTL:
//! `loader retention --apply` runs [`Expiring::clear`] mutations on the per-event tables
//! and rebuilds the state days that still hold expired values (an aggregate state
//! cannot be updated in place there), and is meant to run daily.

use crate::states::{self, State};

/// Days each kind of personal text is kept; 0: for ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub raw_payload_days: u32,
    pub dead_letter_payload_days: u32,
    pub message_text_days: u32,
}

/// A column emptied once its row is `days` old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiring {
    pub table: &'static str,
    pub column: &'static str,
    /// The row's time: a `DateTime` or a `Date` column.
    pub time: &'static str,
    pub days: u32,
    /// For an aggregate state: the state it is a column of, rebuilt instead of updated.
    pub state: Option<State>,
}

impl Retention {
    /// Every column a setting covers, with its setting's days.
    pub fn columns(self) -> [Expiring; 9] {
        let column = |table, column, time, days, state| Expiring {
            table,
            column,
            time,
            days,
            state,
        };
        [
            column(
                "raw_events_store_v2",
                "payload",
                "received_at",
                self.raw_payload_days,
                None,
            ),
            column(
                "unmapped_fields_store",
                "example",
                "received_at",
                self.raw_payload_days,
                None,
            ),
            column(
                "unmapped_fields_state",
                "s_example",
                "day",
                self.raw_payload_days,
                Some(states::UNMAPPED_FIELDS),
            ),
            column(
                "dead_letters_store_v2",
                "payload",
                "failed_at",
                self.dead_letter_payload_days,
                None,
            ),
            column(
                "message_events_store_v2",
                "text",
                "key_day",
                self.message_text_days,
                None,
            ),
            column(
                "messages_state",
                "s_text",
                "key_day",
                self.message_text_days,
                Some(states::MESSAGES),
            ),
            column(
                "raw_events_store",
                "payload",
                "received_at",
                self.raw_payload_days,
                None,
            ),
            column(
                "dead_letters_store",
                "payload",
                "failed_at",
                self.dead_letter_payload_days,
                None,
            ),
            column(
                "message_events_store",
                "text",
                "received_at",
                self.message_text_days,
                None,
            ),
        ]
    }
}

impl Expiring {
    /// The TTL expression, as the server writes it back; `None` when kept for ever.
    pub fn ttl(&self) -> Option<String> {
        (self.days > 0).then(|| format!("{} + toIntervalDay({})", self.time, self.days))
    }

    /// The statement that sets (or removes) the column's TTL.
    pub fn alter_ttl(&self, database: &str) -> String {
        let change = match self.ttl() {
            Some(ttl) => format!("TTL {ttl}"),
            None => "REMOVE TTL".to_owned(),
        };
        format!(
            "ALTER TABLE {database}.{} MODIFY COLUMN {} {change}",
            self.table, self.column
        )
    }

    /// The rows whose time is past the retention at `now_s` (Unix seconds).
    pub fn expired(&self, now_s: i64) -> Option<String> {
        let cutoff = now_s - i64::from(self.days) * 86_400;
        (self.days > 0).then(|| {
            if self.time.ends_with("day") {
                format!("{} < toDate(toDateTime({cutoff}, 'UTC'))", self.time)
            } else {
                format!("{} < toDateTime({cutoff}, 'UTC')", self.time)
            }
        })
    }

    /// For a per-event table: the mutation emptying the column of the expired rows that
    /// still hold something; `None` for a state or when kept for ever.
    pub fn clear(&self, database: &str, now_s: i64) -> Option<String> {
        if self.state.is_some() {
            return None;
        }
        let expired = self.expired(now_s)?;
        Some(format!(
            "ALTER TABLE {database}.{} UPDATE {c} = '' WHERE {expired} AND {c} != ''",
            self.table,
            c = self.column
        ))
    }

    /// For a state: the query listing the days (`YYYY-MM-DD`) past the retention whose
    /// merged value is still not empty; `None` otherwise.
    pub fn stale_days(&self, database: &str, now_s: i64) -> Option<String> {
        let state = self.state?;
        let expired = self.expired(now_s)?;
        let (key, value) = match state.table {
            "messages_state" => (
                "tenant, key_day, message_id",
                "tupleElement(maxIfMerge(s_text), 3)",
            ),
            _ => (
                "tenant, event, kind, path, expected, found, day",
                "tupleElement(maxIfMerge(s_example), 2)",
            ),
        };
        Some(format!(
            "SELECT DISTINCT toString(d) AS day FROM (SELECT {time} AS d, {value} AS v \
             FROM {database}.{table} WHERE {expired} GROUP BY {key}) WHERE v != '' ORDER BY day",
            time = self.time,
            table = state.table,
        ))
    }

    /// For a state: the statements that rebuild `days` (see `states`).
    pub fn rebuild(&self, database: &str, days: &[String]) -> Option<[String; 2]> {
        let state = self.state?;
        let list = states::string_list(days.iter().map(String::as_str));
        let store_time = if state.table == "messages_state" {
            "key_day".to_owned()
        } else {
            "toDate(received_at)".to_owned()
        };
        Some(state.rebuild(
            database,
            &format!("{} IN {list}", self.time),
            &format!("{store_time} IN {list}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_772_460_000;

    fn settings() -> Retention {
        Retention {
            raw_payload_days: 30,
            dead_letter_payload_days: 0,
            message_text_days: 7,
        }
    }

    #[test]
    fn every_copy_of_a_text_follows_its_setting() {
        let days: Vec<(&str, &str, u32)> = settings()
            .columns()
            .iter()
            .map(|c| (c.table, c.column, c.days))
            .collect();
        assert_eq!(
            days,
            [
                ("raw_events_store_v2", "payload", 30),
                ("unmapped_fields_store", "example", 30),
                ("unmapped_fields_state", "s_example", 30),
                ("dead_letters_store_v2", "payload", 0),
                ("message_events_store_v2", "text", 7),
                ("messages_state", "s_text", 7),
                ("raw_events_store", "payload", 30),
                ("dead_letters_store", "payload", 0),
                ("message_events_store", "text", 7),
            ]
        );
    }

    #[test]
    fn a_ttl_is_set_or_removed() {
        let [raw, _, _, letters, ..] = settings().columns();
        assert_eq!(
            raw.alter_ttl("db"),
            "ALTER TABLE db.raw_events_store_v2 MODIFY COLUMN payload TTL received_at + toIntervalDay(30)"
        );
        assert_eq!(
            letters.alter_ttl("db"),
            "ALTER TABLE db.dead_letters_store_v2 MODIFY COLUMN payload REMOVE TTL"
        );
    }

    #[test]
    fn mutations_clear_only_expired_rows_that_still_hold_text() {
        let [raw, _, state, letters, text, ..] = settings().columns();
        assert_eq!(
            raw.clear("db", NOW).unwrap(),
            format!(
                "ALTER TABLE db.raw_events_store_v2 UPDATE payload = '' WHERE received_at < toDateTime({}, 'UTC') AND payload != ''",
                NOW - 30 * 86_400
            )
        );
        assert!(text
            .clear("db", NOW)
            .unwrap()
            .contains("key_day < toDate(toDateTime("));
        assert_eq!(letters.clear("db", NOW), None, "kept for ever");
        assert_eq!(
            state.clear("db", NOW),
            None,
            "a state is rebuilt, not updated"
        );
        let [delete, insert] = state.rebuild("db", &["2026-01-01".into()]).unwrap();
        assert_eq!(
            delete,
            "ALTER TABLE db.unmapped_fields_state DELETE WHERE day IN ('2026-01-01')"
        );
        assert!(
            insert.contains("WHERE toDate(received_at) IN ('2026-01-01')"),
            "{insert}"
        );
        assert!(state
            .stale_days("db", NOW)
            .unwrap()
            .contains("GROUP BY tenant, event, kind, path, expected, found, day"));
    }
}
