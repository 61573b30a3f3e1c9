//! Erasure: what of an event or a dead letter is about a person a tenant asked to erase,
//! and the redaction of it, before anything is produced. The list of erased people is a
//! value passed in ([`Erasures`]); reading it from Kafka is the transform's business.
//!
//! A person is named by contact ids and phone numbers; phone numbers are compared by
//! their digits only (`+1 (555) 765-4321` is `15557654321`). The rules, which
//! `loader erase` mirrors in SQL over what is already stored (`warehouse::erasure`):
//!
//! - a **contact** whose id or phone is erased loses its names, email, phone, custom
//!   fields and integrations (its id stays: it names no one outside NectarDesk);
//! - a **call** whose contact id or contact phone is erased, or which is one of the
//!   person's calls by id (a later event may carry only the call id and a recording),
//!   loses the contact phone, its recording URLs and its disposition note; an erased
//!   number also leaves its `external_numbers` and `transfer_number` in any call;
//! - a **message** whose contact id, sender or recipient is erased loses its text and the
//!   person's number (the erased one, or by direction when only the contact id matched);
//! - a **payload** (the raw body, a dead letter's) goes entirely when its event matched
//!   above, or when one of its JSON strings or numbers has exactly an erased phone's
//!   digits (the same tokens ClickHouse's `extractAll(payload, '"[^"]*"|[0-9]+')` finds);
//! - a matched event's field report keeps its paths and loses its example values.

use std::collections::{BTreeSet, HashMap};

use schemas::{DeadLetter, Erasure, NormalizedEvent, Subject};

/// The people erased, per tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasures {
    tenants: HashMap<String, Subjects>,
}

/// The contact ids, phone numbers (digits) and calls erased for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    pub contact_ids: BTreeSet<i64>,
    pub phones: BTreeSet<String>,
    pub call_ids: BTreeSet<i64>,
}

impl Subjects {
    fn has_contact(&self, id: Option<i64>) -> bool {
        id.is_some_and(|id| self.contact_ids.contains(&id))
    }

    fn has_phone(&self, number: &str) -> bool {
        let digits = digits(number);
        !digits.is_empty() && self.phones.contains(&digits)
    }

    /// Whether `text` holds an erased phone number as one of its tokens.
    pub fn mentioned_in(&self, text: &str) -> bool {
        !self.phones.is_empty() && tokens(text).any(|t| self.phones.contains(&digits(t)))
    }

    pub fn is_empty(&self) -> bool {
        self.contact_ids.is_empty() && self.phones.is_empty() && self.call_ids.is_empty()
    }
}

impl Erasures {
    /// Adds one erased subject; `false` if the record names none this version knows or
    /// it was known already.
    pub fn add(&mut self, erasure: &Erasure) -> bool {
        let subjects = self.tenants.entry(erasure.tenant.clone()).or_default();
        match erasure.subject() {
            Some(Subject::Contact(id)) => subjects.contact_ids.insert(id),
            Some(Subject::Phone(digits)) => subjects.phones.insert(digits),
            Some(Subject::Call(id)) => subjects.call_ids.insert(id),
            None => false,
        }
    }

    /// What is erased for `tenant`.
    pub fn of(&self, tenant: &str) -> Option<&Subjects> {
        self.tenants.get(tenant).filter(|s| !s.is_empty())
    }

    /// How many subjects are erased, over all tenants.
    pub fn len(&self) -> usize {
        self.tenants
            .values()
            .map(|s| s.contact_ids.len() + s.phones.len() + s.call_ids.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The digits of a phone number (or of anything).
pub fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// The tokens of a text the payload scan compares: each double-quoted run (no escapes,
/// like the SQL regular expression), and each run of digits outside one, left to right.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let start = i;
            if bytes[i] == b'"' {
                if let Some(len) = text[i + 1..].find('"') {
                    i += len + 2;
                    return Some(&text[start..i]);
                }
            } else if bytes[i].is_ascii_digit() {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                return Some(&text[start..i]);
            }
            i += 1;
        }
        None
    })
}

/// Redacts what of `event` is about a person erased for its tenant (see the module
/// docs); returns whether anything was.
pub fn redact_event(event: &mut NormalizedEvent, erasures: &Erasures) -> bool {
    let Some(s) = erasures.of(&event.tenant) else {
        return false;
    };
    let mut matched = false;
    let mut person_contact = false;
    if let Some(c) = event.contact.as_mut() {
        if s.contact_ids.contains(&c.contact_id) || s.has_phone(&c.phone) {
            c.first_name.clear();
            c.last_name.clear();
            c.email.clear();
            c.phone.clear();
            c.additional_fields = "{}".to_owned();
            c.integrations = "{}".to_owned();
            matched = true;
            person_contact = true;
        }
    }
    if let Some(call) = event.call.as_mut() {
        if person_contact
            || s.call_ids.contains(&call.call_id)
            || s.has_contact(call.contact_id)
            || s.has_phone(&call.contact_phone)
        {
            call.contact_phone.clear();
            call.recording_urls.clear();
            call.disposition_note.clear();
            matched = true;
        }
        let before = call.external_numbers.len();
        call.external_numbers.retain(|n| !s.has_phone(n));
        matched |= call.external_numbers.len() != before;
        if s.has_phone(&call.transfer_number) {
            call.transfer_number.clear();
            matched = true;
        }
    }
    if let Some(m) = event.message.as_mut() {
        let (from, to) = (s.has_phone(&m.from_number), s.has_phone(&m.to_number));
        let by_id = s.has_contact(m.contact_id);
        if from || to || by_id {
            m.text.clear();
            if from || (by_id && !to && m.direction == "inbound") {
                m.from_number.clear();
            }
            if to || (by_id && !from && m.direction != "inbound") {
                m.to_number.clear();
            }
            matched = true;
        }
    }
    if matched || s.mentioned_in(&event.payload) {
        event.payload.clear();
        if let Some(report) = event.field_report.as_mut() {
            report.unmapped.iter_mut().for_each(|f| f.example.clear());
            report.mistyped.iter_mut().for_each(|f| f.example.clear());
        }
        matched = true;
    }
    matched
}

/// Empties a dead letter's payload when it mentions an erased phone number, or when
/// `event_matched` (its event was redacted). A letter without a tenant (a record that
/// could not be decoded) is compared with every tenant's numbers.
pub fn redact_letter(letter: &mut DeadLetter, erasures: &Erasures, event_matched: bool) -> bool {
    let text = String::from_utf8_lossy(&letter.payload);
    let mentioned = if letter.tenant.is_empty() {
        erasures.tenants.values().any(|s| s.mentioned_in(&text))
    } else {
        erasures
            .of(&letter.tenant)
            .is_some_and(|s| s.mentioned_in(&text))
    };
    if event_matched || mentioned {
        letter.payload.clear();
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{CallRecord, ContactRecord, FieldReport, MessageRecord, UnmappedField};

    fn erasures(subjects: &[Subject]) -> Erasures {
        let mut e = Erasures::default();
        for s in subjects {
            assert!(e.add(&Erasure::of("acme", s, "r1", "dpo", 1)));
        }
        e
    }

    fn event(tenant: &str) -> NormalizedEvent {
        NormalizedEvent {
            tenant: tenant.into(),
            payload: r#"{"id":7}"#.into(),
            ..NormalizedEvent::default()
        }
    }

    #[test]
    fn tokens_are_quoted_runs_and_digit_runs_like_the_sql_scan() {
        let text = r#"{"a":"+1 (555) 765-4321","n":15550100,"x":1.5,"open"#;
        let found: Vec<&str> = tokens(text).collect();
        assert_eq!(
            found,
            [
                r#""a""#,
                r#""+1 (555) 765-4321""#,
                r#""n""#,
                "15550100",
                r#""x""#,
                "1",
                "5"
            ],
            "an unclosed quote is no token"
        );
        let s = &erasures(&[Subject::Phone("15557654321".into())]).tenants["acme"];
        assert!(s.mentioned_in(text));
        assert!(s.mentioned_in(r#"{"note":"call +1 555 765 4321 now"}"#));
        assert!(
            !s.mentioned_in(r#"{"note":"call 15557654321 at 9"}"#),
            "the digits of a string together must be the number"
        );
        assert!(s.mentioned_in(r#"{"p":15557654321}"#));
    }

    #[test]
    fn an_erased_contact_loses_its_personal_fields_but_keeps_its_id() {
        let e = erasures(&[Subject::Contact(31)]);
        let mut ev = event("acme");
        ev.contact = Some(ContactRecord {
            contact_id: 31,
            first_name: "Ann".into(),
            email: "a@x.org".into(),
            phone: "+1 555".into(),
            additional_fields: r#"{"a":1}"#.into(),
            ..ContactRecord::default()
        });
        ev.call = Some(CallRecord {
            call_id: 7,
            contact_id: Some(31),
            contact_phone: "+1 555".into(),
            recording_urls: vec!["https://r/1".into()],
            disposition_note: "spoke to Ann".into(),
            ..CallRecord::default()
        });
        ev.field_report = Some(FieldReport {
            unmapped: vec![UnmappedField {
                path: "contact.ssn".into(),
                example: "\"123\"".into(),
            }],
            mistyped: Vec::new(),
        });
        assert!(redact_event(&mut ev, &e));
        let c = ev.contact.as_ref().unwrap();
        assert_eq!(
            (
                c.contact_id,
                c.first_name.as_str(),
                c.email.as_str(),
                c.phone.as_str()
            ),
            (31, "", "", "")
        );
        assert_eq!(c.additional_fields, "{}");
        let call = ev.call.as_ref().unwrap();
        assert!(
            call.contact_phone.is_empty()
                && call.recording_urls.is_empty()
                && call.disposition_note.is_empty()
        );
        assert_eq!(call.contact_id, Some(31));
        assert_eq!(ev.payload, "");
        let report = ev.field_report.unwrap();
        assert_eq!(
            (
                report.unmapped[0].path.as_str(),
                report.unmapped[0].example.as_str()
            ),
            ("contact.ssn", "")
        );
    }

    #[test]
    fn a_later_event_of_an_erased_call_loses_its_recording_without_naming_anyone() {
        let e = erasures(&[Subject::Call(880142)]);
        let mut ev = event("acme");
        ev.call = Some(CallRecord {
            call_id: 880142,
            recording_urls: vec!["https://r/2".into()],
            ..CallRecord::default()
        });
        assert!(redact_event(&mut ev, &e));
        assert!(ev.call.unwrap().recording_urls.is_empty());
        assert_eq!(ev.payload, "");
    }

    #[test]
    fn phones_match_by_digits_in_calls_and_messages() {
        let e = erasures(&[Subject::Phone("15557654321".into())]);
        let mut ev = event("acme");
        ev.call = Some(CallRecord {
            external_numbers: vec!["+1 (555) 765-4321 (mobile)".into(), "+15550100".into()],
            transfer_number: "1-555-765-4321".into(),
            ..CallRecord::default()
        });
        assert!(redact_event(&mut ev, &e));
        let call = ev.call.unwrap();
        assert_eq!(call.external_numbers, ["+15550100"]);
        assert_eq!(call.transfer_number, "");
        let mut sms = event("acme");
        sms.message = Some(MessageRecord {
            direction: "inbound".into(),
            from_number: "+1 555 765 4321".into(),
            to_number: "+15550100".into(),
            text: "hi".into(),
            ..MessageRecord::default()
        });
        assert!(redact_event(&mut sms, &e));
        let m = sms.message.unwrap();
        assert_eq!(
            (
                m.from_number.as_str(),
                m.to_number.as_str(),
                m.text.as_str()
            ),
            ("", "+15550100", "")
        );
    }

    #[test]
    fn a_message_matched_by_contact_id_loses_the_persons_side() {
        let e = erasures(&[Subject::Contact(31)]);
        let mut sent = event("acme");
        sent.message = Some(MessageRecord {
            direction: "outbound".into(),
            from_number: "+15550100".into(),
            to_number: "+15559999".into(),
            contact_id: Some(31),
            text: "Thanks".into(),
            ..MessageRecord::default()
        });
        assert!(redact_event(&mut sent, &e));
        let m = sent.message.unwrap();
        assert_eq!(
            (m.from_number.as_str(), m.to_number.as_str()),
            ("+15550100", "")
        );
    }

    #[test]
    fn other_tenants_and_other_people_are_left_alone() {
        let e = erasures(&[Subject::Contact(31), Subject::Phone("15557654321".into())]);
        let mut other_tenant = event("beta");
        other_tenant.contact = Some(ContactRecord {
            contact_id: 31,
            first_name: "Bo".into(),
            ..ContactRecord::default()
        });
        let before = other_tenant.clone();
        assert!(!redact_event(&mut other_tenant, &e));
        assert_eq!(other_tenant, before);
        let mut other_person = event("acme");
        other_person.contact = Some(ContactRecord {
            contact_id: 32,
            phone: "+15550000".into(),
            first_name: "Cy".into(),
            ..ContactRecord::default()
        });
        let before = other_person.clone();
        assert!(!redact_event(&mut other_person, &e));
        assert_eq!(other_person, before);
    }

    #[test]
    fn a_payload_that_mentions_an_erased_number_is_emptied() {
        let e = erasures(&[Subject::Phone("15557654321".into())]);
        let mut unknown = event("acme");
        unknown.payload = r#"{"caller":"+1 555-765-4321"}"#.into();
        assert!(redact_event(&mut unknown, &e));
        assert_eq!(unknown.payload, "");
        let mut letter = DeadLetter::refused_delivery(
            400,
            "bad",
            "",
            "x",
            "",
            br#"{"p":"15557654321""#.to_vec(),
            1,
            1,
        );
        assert!(
            redact_letter(&mut letter, &e, false),
            "a letter without a tenant is checked against all"
        );
        assert!(letter.payload.is_empty());
    }
}
