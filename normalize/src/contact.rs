//! Contacts and contact lists. A contact event is documented only through the contact
//! embedded in call events; contact-list payloads are not documented at all, so their
//! readers try the plausible spellings of each field (see README, "Payload guesses").

use serde_json::{Map, Value};

use schemas::{ContactListRecord, ContactRecord};

use crate::entity::{contact_id, list_id};
use crate::lenient::{field, first, free_form, instant, int, items, non_negative, object, string};

/// A contact; `None` without a usable integer id.
pub(crate) fn read_contact(c: &Map<String, Value>) -> Option<ContactRecord> {
    let contact_id = contact_id(c)?;
    let created = instant(first(
        c,
        &["createDate", "createdDate", "createdAt", "created_at"],
    ));
    Some(ContactRecord {
        contact_id,
        first_name: string(first(c, &["firstName", "first_name", "firstname"])),
        last_name: string(first(c, &["lastName", "last_name", "lastname"])),
        email: string(first(c, &["email", "emailAddress", "email_address"])),
        phone: string(first(
            c,
            &["phone", "phoneNumber", "phone_number", "number"],
        )),
        created_at: created.map(|(ms, _)| ms),
        utc_offset_s: created.and_then(|(_, o)| o),
        additional_fields: free_form(first(
            c,
            &["additionalFields", "additional_fields", "customFields"],
        )),
        integrations: free_form(field(c, "integrations")),
    })
}

/// A contact list; `None` without a usable integer id.
pub(crate) fn read_list(l: &Map<String, Value>) -> Option<ContactListRecord> {
    let list_id = list_id(l)?;
    let created = instant(first(
        l,
        &["createDate", "createdDate", "createdAt", "created_at"],
    ));
    let members = first(
        l,
        &[
            "contacts",
            "members",
            "contactIds",
            "contact_ids",
            "memberIds",
        ],
    );
    let member_ids: Vec<i64> = items(members)
        .into_iter()
        .filter_map(|m| match object(m) {
            Some(contact) => int(first(contact, &["id", "contactId", "contact_id"])),
            None => int(m),
        })
        .collect();
    Some(ContactListRecord {
        list_id,
        name: string(first(l, &["name", "title", "listName", "list_name"])),
        description: string(field(l, "description")),
        size: non_negative(first(
            l,
            &[
                "size",
                "count",
                "contactsCount",
                "contacts_count",
                "membersCount",
                "total",
            ],
        ))
        .or_else(|| (!member_ids.is_empty()).then_some(member_ids.len() as i64)),
        member_ids,
        created_at: created.map(|(ms, _)| ms),
        utc_offset_s: created.and_then(|(_, o)| o),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::entity::Target;
    use schemas::EventKind;

    fn contact(body: Value) -> Option<ContactRecord> {
        read_contact(Target::of(EventKind::ContactCreated, body.as_object().unwrap()).object)
    }

    fn list(body: Value) -> Option<ContactListRecord> {
        read_list(Target::of(EventKind::ContactListCreated, body.as_object().unwrap()).object)
    }

    #[test]
    fn reads_a_contact_like_the_one_embedded_in_calls() {
        let c = contact(json!({
            "id": 30417, "firstName": "Maria ", "lastName": "Okafor", "email": "m@example.org",
            "phone": "+1 (555) 765-4321", "createDate": "2025-11-20T14:02:10-05:00",
            "additionalFields": {"plan": "gold"}, "integrations": {"hubspot": {"contactId": "hs-5521"}}
        }))
        .unwrap();
        assert_eq!(
            (c.contact_id, c.first_name.as_str(), c.last_name.as_str()),
            (30417, "Maria", "Okafor")
        );
        assert_eq!(c.phone, "+1 (555) 765-4321");
        assert_eq!(c.utc_offset_s, Some(-18_000));
        assert_eq!(c.additional_fields, r#"{"plan":"gold"}"#);
        assert_eq!(c.integrations, r#"{"hubspot":{"contactId":"hs-5521"}}"#);
    }

    #[test]
    fn null_names_and_missing_objects_become_empty() {
        let c = contact(
            json!({"id": 1, "firstName": null, "lastName": "null", "email": null,
            "additionalFields": null, "integrations": []}),
        )
        .unwrap();
        assert_eq!(
            (
                c.first_name.as_str(),
                c.last_name.as_str(),
                c.email.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(
            (c.additional_fields.as_str(), c.integrations.as_str()),
            ("{}", "{}")
        );
    }

    #[test]
    fn reads_a_contact_wrapped_in_an_object() {
        assert_eq!(
            contact(json!({"contact": {"id": "9", "first_name": "Bo"}}))
                .unwrap()
                .first_name,
            "Bo"
        );
        assert_eq!(
            contact(json!({"data": {"contactId": 9}}))
                .unwrap()
                .contact_id,
            9
        );
    }

    #[test]
    fn reads_lists_under_their_plausible_spellings() {
        let l =
            list(json!({"id": 12, "title": "Renewals", "contacts": [{"id": 1}, 2, "3", {"x": 1}]}))
                .unwrap();
        assert_eq!((l.list_id, l.name.as_str()), (12, "Renewals"));
        assert_eq!(l.member_ids, [1, 2, 3]);
        assert_eq!(l.size, Some(3));
        let l = list(json!({"listId": "12", "listName": "VIP", "contactsCount": "40"})).unwrap();
        assert_eq!((l.list_id, l.name.as_str(), l.size), (12, "VIP", Some(40)));
        assert!(list(json!({"name": "no id"})).is_none());
    }
}
