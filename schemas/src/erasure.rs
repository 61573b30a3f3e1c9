//! The erasure list's record (topic `webhooks.erasures`): one person, by contact id or by
//! phone number, that a tenant asked to erase. `loader erase` produces it; `transform`
//! (live and replay) reads the whole topic and redacts what it normalizes accordingly.
//! The topic is compacted by [`Erasure::key`], so each subject is kept once, forever.

use serde::{Deserialize, Serialize};

/// One subject of an erasure request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub tenant: String,
    /// `contact`, `phone` or `call`.
    pub subject: String,
    /// The contact id, the phone number's digits, or the call id.
    pub value: String,
    /// The request this subject belongs to (one request may name several subjects: a
    /// contact and the phone numbers it had).
    pub request_id: String,
    /// Who asked, as given to `loader erase --requested-by`.
    pub requested_by: String,
    /// Unix milliseconds.
    pub requested_at: i64,
}

/// What an erasure is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Contact(i64),
    /// Digits only.
    Phone(String),
    /// A call of the person's: its later events may not name them (a recording sent
    /// alone), yet they are theirs.
    Call(i64),
}

impl Erasure {
    /// The Kafka key: `{tenant}:contact:{id}`, `{tenant}:phone:{digits}` or
    /// `{tenant}:call:{id}`.
    pub fn key(&self) -> String {
        format!("{}:{}:{}", self.tenant, self.subject, self.value)
    }

    /// The subject; `None` for a record this version does not understand.
    pub fn subject(&self) -> Option<Subject> {
        match self.subject.as_str() {
            "contact" => self.value.parse().ok().map(Subject::Contact),
            "call" => self.value.parse().ok().map(Subject::Call),
            "phone" if !self.value.is_empty() && self.value.bytes().all(|b| b.is_ascii_digit()) => {
                Some(Subject::Phone(self.value.clone()))
            }
            _ => None,
        }
    }

    /// A record for `subject`.
    pub fn of(
        tenant: &str,
        subject: &Subject,
        request_id: &str,
        requested_by: &str,
        requested_at: i64,
    ) -> Erasure {
        let (kind, value) = match subject {
            Subject::Contact(id) => ("contact", id.to_string()),
            Subject::Phone(digits) => ("phone", digits.clone()),
            Subject::Call(id) => ("call", id.to_string()),
        };
        Erasure {
            tenant: tenant.to_owned(),
            subject: kind.to_owned(),
            value,
            request_id: request_id.to_owned(),
            requested_by: requested_by.to_owned(),
            requested_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_subject_and_key() {
        let e = Erasure::of(
            "acme",
            &Subject::Phone("15557654321".into()),
            "r1",
            "dpo",
            5,
        );
        assert_eq!(e.key(), "acme:phone:15557654321");
        assert_eq!(e.subject(), Some(Subject::Phone("15557654321".into())));
        let c = Erasure::of("acme", &Subject::Contact(30417), "r1", "dpo", 5);
        assert_eq!(
            (c.key().as_str(), c.subject()),
            ("acme:contact:30417", Some(Subject::Contact(30417)))
        );
        let call = Erasure::of("acme", &Subject::Call(880142), "r1", "dpo", 5);
        assert_eq!(call.subject(), Some(Subject::Call(880142)));
    }

    #[test]
    fn an_unknown_subject_is_not_understood() {
        let mut e = Erasure::of("acme", &Subject::Contact(1), "r1", "dpo", 5);
        e.subject = "email".into();
        assert_eq!(e.subject(), None);
        e.subject = "phone".into();
        e.value = "+1555".into();
        assert_eq!(e.subject(), None);
    }
}
