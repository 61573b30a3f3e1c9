//! The NectarDesk payload samples (`tests/samples/`, shapes from the platform's docs and
//! one real integration), normalized.

use normalize::normalize;
use schemas::{RawEnvelope, Status};

fn envelope(event: &str, body: &str) -> RawEnvelope {
    RawEnvelope {
        event_id: "e1".into(),
        tenant: "acme".into(),
        event: event.into(),
        received_at: 1_772_460_701_000,
        source_addr: "127.0.0.1".into(),
        body: body.as_bytes().to_vec(),
    }
}

fn sample(name: &str) -> String {
    let path = format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn flattens_the_full_call_ended_sample() {
    let out = normalize(&envelope("call-ended", &sample("call-ended-full.json")));
    assert_eq!(out.status, Status::Normalized, "{}", out.error);
    assert_eq!(
        (out.entity.as_str(), out.entity_id.as_str()),
        ("call", "880142")
    );
    let call = out.call.unwrap();
    assert_eq!(call.direction, "inbound");
    // 09:05:00-05:00 is 14:05:00 UTC.
    assert_eq!(call.started_at, Some(1_772_460_300_000));
    assert_eq!(call.ended_at, Some(1_772_460_300_000 + 401_000));
    assert_eq!(call.utc_offset_s, Some(-18_000));
    assert_eq!(
        (call.duration_s, call.talk_time_s, call.waiting_time_s),
        (Some(401), Some(352), Some(37))
    );
    assert_eq!(call.abandoned, Some(false));
    assert_eq!(call.voicemail, None);
    assert_eq!(
        call.recording_urls,
        vec!["https://acme.nectardesk.io/api/call/recording/77120"]
    );
    assert_eq!(
        (
            call.line_id,
            call.line_number.as_str(),
            call.line_alias.as_str()
        ),
        (Some(12), "+15550100", "Billing")
    );
    assert_eq!(
        (call.ring_group_id, call.ring_group.as_str()),
        (Some(4), "Billing")
    );
    assert_eq!(
        (call.disposition_id, call.disposition_code.as_str()),
        (Some(9), "RESOLVED")
    );
    assert_eq!(call.disposition_note, "Refund issued");
    assert_eq!(call.contact_id, Some(30417));
    assert_eq!(call.transfer_number, "+15550199");
    assert_eq!(call.transfer_talk_time_s, Some(61));
    assert_eq!(call.external_numbers, vec!["+15550199 (Escalations)"]);
    assert_eq!(call.tags, vec!["billing", "priority"]);
    let names: Vec<_> = call.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["Dev Patel", "Lena Berg"]);
    assert_eq!(call.agents[1].action, "Contact hangup");
    assert_eq!(call.agents[1].agent_type, "Transfer Call");
    // The contact embedded in the call also updates `contacts`.
    let contact = out.contact.unwrap();
    assert_eq!(contact.contact_id, 30417);
    assert_eq!(
        (contact.first_name.as_str(), contact.last_name.as_str()),
        ("Maria", "Okafor")
    );
    assert_eq!(contact.additional_fields, r#"{"plan":"gold"}"#);
}

#[test]
fn keeps_the_sparse_abandoned_call_with_empty_values() {
    let out = normalize(&envelope(
        "call-abandoned",
        &sample("call-abandoned-sparse.json"),
    ));
    assert_eq!(out.status, Status::Normalized);
    let call = out.call.unwrap();
    assert_eq!(call.ended_at, None);
    assert_eq!(call.abandoned, Some(true));
    assert!(call.recording_urls.is_empty() && call.agents.is_empty());
    assert_eq!(call.line_alias, "");
    assert_eq!(call.disposition_code, "");
}

#[test]
fn reads_the_real_world_variants() {
    let out = normalize(&envelope(
        "call-disposition-saved",
        &sample("call-disposition-saved-real-world.json"),
    ));
    let call = out.call.unwrap();
    assert_eq!(call.disposition_id, None);
    assert_eq!(call.disposition_code, "NO_ANSWER_VM");
    assert_eq!(call.transfer_number, "");
    assert_eq!(call.line_alias, "Outbound East");
    assert_eq!(call.agents[0].name, "Sam Reyes");
    assert_eq!(call.contact_phone, "15557001234");
}
