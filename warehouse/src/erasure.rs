//! The SQL of an erasure over what is already stored (`loader erase`): which rows are
//! about the person, and the mutations that redact them. The rules are those of the
//! transform's redaction (`normalize::erasure`), so that a row redacted here and a row
//! redacted before it was produced look the same:
//!
//! - contacts whose id or phone is erased lose names, email, phone, custom fields and
//!   integrations;
//! - calls whose contact id or contact phone is erased lose the contact phone, recording
//!   URLs and disposition note; an erased number leaves `external_numbers` and
//!   `transfer_number` of any call;
//! - messages whose contact id, sender or recipient is erased lose their text and the
//!   person's number;
//! - payloads (raw events, dead letters) go when their event matched, or when a JSON
//!   string or number in them has exactly an erased phone's digits; the field examples
//!   of a matched event go too.
//!
//! Phone numbers compare by digits only. Everything is plain SQL that ClickHouse 18.16
//! and current servers both run as mutations (`ALTER TABLE … UPDATE`).

use serde::Serialize;

use crate::states::{quote, string_list};
use crate::Table;

/// A row of `erasures`, the audit of erasure requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
pub struct AuditRow {
    pub request_id: String,
    pub tenant: String,
    pub requested_by: String,
    pub reference: String,
    /// Unix seconds.
    pub requested_at: u32,
    pub finished_at: u32,
    /// The subjects, after each was widened by the other, and the person's calls.
    pub contact_ids: Vec<i64>,
    pub phones: Vec<String>,
    pub call_ids: Vec<i64>,
    /// Rows redacted, per table (parallel arrays).
    pub tables: Vec<String>,
    pub rows: Vec<u64>,
    pub total_rows: u64,
    /// Anything the operator must know, e.g. that the erasure should be run again.
    pub note: String,
}

/// A person to erase in one tenant: contact ids, phone numbers (digits), and the calls
/// that are theirs (all of whose events are redacted, also those that name no one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    pub tenant: String,
    pub contact_ids: Vec<i64>,
    pub phones: Vec<String>,
    pub call_ids: Vec<i64>,
}

/// The digits of a column, as `normalize::erasure::digits` computes them.
fn digits(column: &str) -> String {
    format!("replaceRegexpAll({column}, '[^0-9]', '')")
}

impl Person {
    fn phones_array(&self) -> String {
        let quoted: Vec<String> = self.phones.iter().map(|p| quote(p)).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Whether a (nullable) contact id column is erased.
    fn id_in(&self, column: &str) -> String {
        if self.contact_ids.is_empty() {
            return "0".to_owned();
        }
        let ids: Vec<String> = self.contact_ids.iter().map(i64::to_string).collect();
        format!("ifNull({column}, 0) IN ({})", ids.join(", "))
    }

    /// Whether a phone number column is erased (by digits).
    fn phone_in(&self, column: &str) -> String {
        if self.phones.is_empty() {
            return "0".to_owned();
        }
        format!("has({}, {})", self.phones_array(), digits(column))
    }

    /// Whether a text column holds an erased number as a token: a double-quoted run or a
    /// run of digits, like `normalize::erasure`'s scan.
    pub fn mentioned_in(&self, column: &str) -> String {
        if self.phones.is_empty() {
            return "0".to_owned();
        }
        format!(
            "arrayExists(t -> has({}, {}), extractAll({column}, '\"[^\"]*\"|[0-9]+'))",
            self.phones_array(),
            digits("t")
        )
    }

    fn tenant_is(&self) -> String {
        format!("tenant = {}", quote(&self.tenant))
    }

    /// Contact rows about the person.
    pub fn contacts(&self) -> String {
        format!(
            "{} AND ({} OR {})",
            self.tenant_is(),
            self.id_in("contact_id"),
            self.phone_in("phone")
        )
    }

    /// Call rows whose contact is the person: by contact id or phone, or by call.
    pub fn calls_of_person(&self) -> String {
        let calls = if self.call_ids.is_empty() {
            "0".to_owned()
        } else {
            let ids: Vec<String> = self.call_ids.iter().map(i64::to_string).collect();
            format!("call_id IN ({})", ids.join(", "))
        };
        format!(
            "({} OR {} OR {calls})",
            self.id_in("contact_id"),
            self.phone_in("contact_phone")
        )
    }

    /// Call rows that name one of the person's numbers elsewhere.
    fn calls_naming_numbers(&self) -> String {
        if self.phones.is_empty() {
            return "0".to_owned();
        }
        format!(
            "(arrayExists(x -> has({}, {}), external_numbers) OR {})",
            self.phones_array(),
            digits("x"),
            self.phone_in("transfer_number")
        )
    }

    /// Call rows about the person in any way.
    pub fn calls(&self) -> String {
        format!(
            "{} AND ({} OR {})",
            self.tenant_is(),
            self.calls_of_person(),
            self.calls_naming_numbers()
        )
    }

    /// Message rows about the person.
    pub fn messages(&self) -> String {
        format!(
            "{} AND ({} OR {} OR {})",
            self.tenant_is(),
            self.id_in("contact_id"),
            self.phone_in("from_number"),
            self.phone_in("to_number")
        )
    }

    /// Raw events about the person: those of `event_ids`, and those whose payload
    /// mentions an erased number.
    pub fn raw_events(&self, event_ids: &[String]) -> String {
        format!(
            "{} AND payload != '' AND ({} OR {})",
            self.tenant_is(),
            ids_in(event_ids),
            self.mentioned_in("payload")
        )
    }

    /// Dead letters about the person (a letter without a tenant is checked too).
    pub fn dead_letters(&self, event_ids: &[String]) -> String {
        format!(
            "(tenant = {} OR tenant = '') AND payload != '' AND ({} OR {})",
            quote(&self.tenant),
            ids_in(event_ids),
            self.mentioned_in("payload")
        )
    }

    /// Field examples of the person's events.
    pub fn unmapped_fields(&self, event_ids: &[String]) -> String {
        format!(
            "{} AND example != '' AND {}",
            self.tenant_is(),
            ids_in(event_ids)
        )
    }

    /// Every table that can hold the person, with the filter of their rows in it, given
    /// the events found to be about them: the current tables, then the pre-0007 ones
    /// ([`LEGACY`]), which have the same columns.
    pub fn matches(&self, event_ids: &[String]) -> Vec<(&'static str, String)> {
        let current = [
            (Table::ContactEvents, self.contacts()),
            (Table::CallEvents, self.calls()),
            (Table::MessageEvents, self.messages()),
            (Table::RawEvents, self.raw_events(event_ids)),
            (Table::DeadLetters, self.dead_letters(event_ids)),
            (Table::UnmappedFields, self.unmapped_fields(event_ids)),
        ];
        with_legacy(current.to_vec())
    }

    /// The redacting mutations, each with the table it changes, given the events found
    /// to be about the person.
    pub fn mutations(&self, database: &str, event_ids: &[String]) -> Vec<(&'static str, String)> {
        let mut current = vec![
            (
                Table::ContactEvents,
                "first_name = '', last_name = '', email = '', phone = '', \
                 additional_fields = '{}', integrations = '{}'"
                    .to_owned(),
                self.contacts(),
            ),
            (
                Table::CallEvents,
                "contact_phone = '', recording_urls = emptyArrayString(), disposition_note = ''"
                    .to_owned(),
                format!("{} AND {}", self.tenant_is(), self.calls_of_person()),
            ),
        ];
        if !self.phones.is_empty() {
            current.push((
                Table::CallEvents,
                format!(
                    "external_numbers = arrayFilter(x -> NOT has({}, {}), external_numbers), \
                     transfer_number = if({}, '', transfer_number)",
                    self.phones_array(),
                    digits("x"),
                    self.phone_in("transfer_number")
                ),
                format!("{} AND {}", self.tenant_is(), self.calls_naming_numbers()),
            ));
        }
        let by_id = self.id_in("contact_id");
        let (from, to) = (self.phone_in("from_number"), self.phone_in("to_number"));
        current.push((
            Table::MessageEvents,
            format!(
                "text = '', \
                 from_number = if({from} OR ({by_id} AND NOT {to} AND direction = 'inbound'), '', from_number), \
                 to_number = if({to} OR ({by_id} AND NOT {from} AND direction != 'inbound'), '', to_number)"
            ),
            self.messages(),
        ));
        current.push((
            Table::RawEvents,
            "payload = ''".to_owned(),
            self.raw_events(event_ids),
        ));
        current.push((
            Table::DeadLetters,
            "payload = ''".to_owned(),
            self.dead_letters(event_ids),
        ));
        current.push((
            Table::UnmappedFields,
            "example = ''".to_owned(),
            self.unmapped_fields(event_ids),
        ));
        let mut out = Vec::new();
        for (table, set, filter) in current {
            let names = std::iter::once(table.name()).chain(legacy(table));
            for name in names {
                out.push((
                    name,
                    format!("ALTER TABLE {database}.{name} UPDATE {set} WHERE {filter}"),
                ));
            }
        }
        out
    }
}

/// The pre-0007 storage tables (migrations 0001 and 0002), left in place for the
/// backfill: they hold the same personal data, with the same columns, until dropped.
pub const LEGACY: [(Table, &str); 5] = [
    (Table::RawEvents, "raw_events_store"),
    (Table::CallEvents, "call_events_store"),
    (Table::ContactEvents, "contact_events_store"),
    (Table::MessageEvents, "message_events_store"),
    (Table::DeadLetters, "dead_letters_store"),
];

fn legacy(table: Table) -> Option<&'static str> {
    LEGACY
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, name)| *name)
}

fn with_legacy(current: Vec<(Table, String)>) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> =
        current.iter().map(|(t, f)| (t.name(), f.clone())).collect();
    out.extend(
        current
            .into_iter()
            .filter_map(|(t, f)| legacy(t).map(|name| (name, f))),
    );
    out
}

/// `event_id IN (…)`, or false for no ids.
fn ids_in(event_ids: &[String]) -> String {
    if event_ids.is_empty() {
        return "0".to_owned();
    }
    format!(
        "event_id IN {}",
        string_list(event_ids.iter().map(String::as_str))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(ids: &[i64], phones: &[&str]) -> Person {
        Person {
            tenant: "acme".into(),
            contact_ids: ids.to_vec(),
            phones: phones.iter().map(|p| (*p).to_owned()).collect(),
            call_ids: Vec::new(),
        }
    }

    #[test]
    fn predicates_name_the_tenant_ids_and_digits() {
        let p = person(&[31], &["15557654321"]);
        assert_eq!(
            p.contacts(),
            "tenant = 'acme' AND (ifNull(contact_id, 0) IN (31) OR has(['15557654321'], replaceRegexpAll(phone, '[^0-9]', '')))"
        );
        assert!(p.calls().contains("arrayExists(x -> has(['15557654321'], replaceRegexpAll(x, '[^0-9]', '')), external_numbers)"));
        assert!(p.raw_events(&["e1".into()]).contains("event_id IN ('e1')"));
    }

    #[test]
    fn every_event_of_the_persons_calls_matches() {
        let mut p = person(&[31], &[]);
        p.call_ids = vec![880142, 7];
        assert_eq!(
            p.calls(),
            "tenant = 'acme' AND ((ifNull(contact_id, 0) IN (31) OR 0 OR call_id IN (880142, 7)) OR 0)"
        );
    }

    #[test]
    fn a_person_without_phones_matches_by_id_only() {
        let p = person(&[31], &[]);
        assert_eq!(p.mentioned_in("payload"), "0");
        assert_eq!(
            p.raw_events(&[]),
            "tenant = 'acme' AND payload != '' AND (0 OR 0)"
        );
        let tables: Vec<&str> = p.mutations("db", &[]).iter().map(|(t, _)| *t).collect();
        assert_eq!(
            tables,
            [
                "contact_events_store_v2",
                "contact_events_store",
                "call_events_store_v2",
                "call_events_store",
                "message_events_store_v2",
                "message_events_store",
                "raw_events_store_v2",
                "raw_events_store",
                "dead_letters_store_v2",
                "dead_letters_store",
                "unmapped_fields_store"
            ]
        );
        let matched: Vec<&str> = p.matches(&[]).iter().map(|(t, _)| *t).collect();
        assert_eq!(matched.len(), 11, "{matched:?}");
    }

    #[test]
    fn a_tenant_name_cannot_break_out_of_its_literal() {
        let p = Person {
            tenant: "a'b".into(),
            ..Person::default()
        };
        assert!(p.contacts().starts_with(r"tenant = 'a\'b'"));
    }
}
