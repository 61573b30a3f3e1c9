//! Plausible NectarDesk traffic for one call center, as a pure, seeded generator: the
//! same seed and window always give the same deliveries.
//!
//! Calls arrive along a business-hours curve in the center's local time. Each call plays
//! out as the platform would report it: ringing in a ring group (inbound) or a campaign
//! (outbound), then answered, abandoned or sent to voicemail, then a disposition (and
//! sometimes a change to it) and a recording. Contacts, contact lists and text messages
//! come along, and so do the sender's habits: duplicates, late retries, an occasional
//! event this version does not know and one without an id.

use chrono::{DateTime, FixedOffset, Timelike};
use serde_json::{json, Value};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    /// The center's offset from UTC, in seconds (dates are sent in local time).
    pub utc_offset_s: i32,
    /// Calls per minute at the busiest hour of a weekday.
    pub peak_calls_per_minute: f64,
    /// Share of deliveries the sender sends twice.
    pub duplicate_ratio: f64,
    /// Share of calls whose first event is sent again after the later ones.
    pub late_retry_ratio: f64,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            seed: 42,
            utc_offset_s: -5 * 3600,
            peak_calls_per_minute: 4.0,
            duplicate_ratio: 0.03,
            late_retry_ratio: 0.01,
        }
    }
}

/// One webhook delivery: when it is due, the event slug of its URL, its body, and the
/// entity it is about (deliveries of one entity must be sent in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub at_ms: i64,
    pub event: &'static str,
    pub entity: String,
    pub body: Value,
}

const AGENTS: [(i64, &str); 6] = [
    (21, "Dev Patel"),
    (34, "Lena Berg"),
    (58, "Sam Reyes"),
    (63, "Aiko Tanaka"),
    (71, "Omar Haddad"),
    (88, "Grace Kim"),
];
const RING_GROUPS: [(i64, &str, &str); 3] = [
    (4, "Billing", "+15550100"),
    (5, "Sales", "+15550101"),
    (6, "Support", "+15550102"),
];
const CAMPAIGNS: [&str; 3] = ["Spring Renewals", "Win-back", "Upsell Q2"];
const DISPOSITIONS: [&str; 5] = ["RESOLVED", "CALLBACK", "SALE", "NO_SALE", "ESCALATED"];
const FIRST_NAMES: [&str; 8] = [
    "Maria", "James", "Ana", "Wei", "Fatima", "Lucas", "Priya", "Noah",
];
const LAST_NAMES: [&str; 8] = [
    "Okafor", "Smith", "Diaz", "Chen", "Haddad", "Rossi", "Iyer", "Berg",
];

/// Relative call volume by local hour of a weekday (1.0 at the peak).
fn hour_weight(hour: u32) -> f64 {
    const WEIGHTS: [f64; 24] = [
        0.02, 0.02, 0.02, 0.02, 0.02, 0.03, 0.08, 0.3, 0.7, 0.95, 1.0, 0.95, 0.7, 0.85, 1.0, 0.95,
        0.8, 0.55, 0.3, 0.15, 0.08, 0.05, 0.03, 0.02,
    ];
    WEIGHTS[hour as usize % 24]
}

#[derive(Debug, Clone)]
struct Contact {
    id: i64,
    first: &'static str,
    last: &'static str,
    phone: String,
}

/// Generates deliveries window by window; state (ids, known contacts) carries over.
pub struct Generator {
    scenario: Scenario,
    rng: fastrand::Rng,
    offset: FixedOffset,
    next_call_id: i64,
    next_message_id: i64,
    contacts: Vec<Contact>,
    /// (id, name, member ids) of each contact list, once created.
    lists: Vec<(i64, &'static str, Vec<i64>)>,
}

impl Generator {
    pub fn new(scenario: Scenario) -> Generator {
        let offset = FixedOffset::east_opt(scenario.utc_offset_s)
            .unwrap_or(FixedOffset::east_opt(0).unwrap());
        Generator {
            rng: fastrand::Rng::with_seed(scenario.seed),
            scenario,
            offset,
            next_call_id: 1_000_000,
            next_message_id: 500_000,
            contacts: Vec::new(),
            lists: Vec::new(),
        }
    }

    /// Every delivery caused by activity that starts in `[from_ms, to_ms)`, sorted by due
    /// time. Some are due after `to_ms` (a recording arrives after the call ends).
    pub fn window(&mut self, from_ms: i64, to_ms: i64) -> Vec<Delivery> {
        let mut out = Vec::new();
        if self.lists.is_empty() {
            self.create_lists(from_ms, &mut out);
        }
        let mut minute = from_ms - from_ms.rem_euclid(60_000);
        while minute < to_ms {
            let local = self.local(minute);
            let weekend = matches!(local.format("%a").to_string().as_str(), "Sat" | "Sun");
            let weight = hour_weight(local.hour()) * if weekend { 0.3 } else { 1.0 };
            let calls = self.poisson(self.scenario.peak_calls_per_minute * weight);
            for _ in 0..calls {
                let start = minute + self.rng.i64(0..60_000);
                if (from_ms..to_ms).contains(&start) {
                    self.call(start, &mut out);
                }
            }
            for _ in 0..self.poisson(self.scenario.peak_calls_per_minute * weight * 0.3) {
                let start = minute + self.rng.i64(0..60_000);
                if (from_ms..to_ms).contains(&start) {
                    self.messages(start, &mut out);
                }
            }
            minute += 60_000;
        }
        out.sort_by_key(|d| d.at_ms);
        out
    }

    fn local(&self, ms: i64) -> DateTime<FixedOffset> {
        DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .with_timezone(&self.offset)
    }

    /// ISO 8601 in the center's local time, as NectarDesk sends dates.
    fn date(&self, ms: i64) -> String {
        self.local(ms).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }

    /// A Poisson-distributed count with mean `lambda` (Knuth; fine for small means).
    fn poisson(&mut self, lambda: f64) -> u32 {
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= self.rng.f64();
            if p <= limit || k > 1000 {
                return k;
            }
            k += 1;
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    /// A known contact, or a new one announced with `contact-created` just before `at`.
    fn contact(&mut self, at: i64, out: &mut Vec<Delivery>) -> Contact {
        if !self.contacts.is_empty() && self.chance(0.7) {
            let i = self.rng.usize(..self.contacts.len());
            let known = self.contacts[i].clone();
            if self.chance(0.03) {
                let mut body = self.contact_body(&known, at);
                body["email"] =
                    json!(format!("{}.{}@mail.example", known.first, known.last).to_lowercase());
                self.push(
                    out,
                    at - 5_000,
                    "contact-modified",
                    format!("contact:{}", known.id),
                    body,
                );
            }
            return known;
        }
        let contact = Contact {
            id: 40_000 + self.contacts.len() as i64,
            first: FIRST_NAMES[self.rng.usize(..FIRST_NAMES.len())],
            last: LAST_NAMES[self.rng.usize(..LAST_NAMES.len())],
            phone: format!("+1555{:07}", self.rng.u32(0..10_000_000)),
        };
        self.contacts.push(contact.clone());
        let body = self.contact_body(&contact, at);
        self.push(
            out,
            at - 10_000,
            "contact-created",
            format!("contact:{}", contact.id),
            body,
        );
        self.maybe_add_to_list(contact.id, at - 5_000, out);
        contact
    }

    fn contact_body(&self, c: &Contact, at: i64) -> Value {
        let mut body = json!({
            "id": c.id, "firstName": c.first, "lastName": c.last, "email": null, "phone": c.phone,
            "createDate": self.date(at), "additionalFields": {}, "integrations": {}
        });
        if c.id % 20 == 0 {
            // A field this version does not map (see the Pipeline dashboard).
            body["company"] = json!(format!("{} & Co", c.last));
        }
        body
    }

    fn create_lists(&mut self, at: i64, out: &mut Vec<Delivery>) {
        for (id, name) in [(12, "Spring Renewals"), (13, "Win-back"), (14, "VIP")] {
            let body = json!({"id": id, "name": name, "description": format!("{name} list"), "size": 0,
                              "contacts": [], "createdDate": self.date(at)});
            self.push(out, at, "contact-list-created", format!("list:{id}"), body);
            self.lists.push((id, name, Vec::new()));
        }
    }

    /// Adds a new contact to a list, now and then, as a `contact-list-modified` event.
    fn maybe_add_to_list(&mut self, contact_id: i64, at: i64, out: &mut Vec<Delivery>) {
        if self.lists.is_empty() || !self.chance(0.2) {
            return;
        }
        let i = self.rng.usize(..self.lists.len());
        self.lists[i].2.push(contact_id);
        let (id, name, members) = self.lists[i].clone();
        let body = json!({"id": id, "name": name, "size": members.len(),
                          "contacts": members.iter().map(|m| json!({"id": m})).collect::<Vec<_>>()});
        self.push(out, at, "contact-list-modified", format!("list:{id}"), body);
    }

    /// Adds a delivery, and with the scenario's odds a duplicate of it.
    fn push(
        &mut self,
        out: &mut Vec<Delivery>,
        at_ms: i64,
        event: &'static str,
        entity: String,
        body: Value,
    ) {
        let delivery = Delivery {
            at_ms,
            event,
            entity,
            body,
        };
        if self.chance(self.scenario.duplicate_ratio) {
            let mut again = delivery.clone();
            again.at_ms += self.rng.i64(500..4_000);
            out.push(again);
        }
        out.push(delivery);
    }

    fn call(&mut self, start: i64, out: &mut Vec<Delivery>) {
        let id = self.next_call_id;
        self.next_call_id += 1;
        let entity = format!("call:{id}");
        let first_index = out.len();
        let inbound = self.chance(0.7);
        let contact = self.contact(start, out);
        let (group_id, group, line) = RING_GROUPS[self.rng.usize(..RING_GROUPS.len())];
        let wait = if inbound {
            3 + (self.rng.f64() * 60.0).powf(1.4) as i64
        } else {
            self.rng.i64(5..30)
        };
        let mut call = json!({
            "id": id, "type": if inbound { "inbound" } else { "outbound" },
            "startedDate": self.date(start), "endedDate": "", "duration": 0, "talkTime": 0,
            "waitingTime": wait, "tags": [], "call_type": if inbound { "inbound_ring_group" } else { "outbound" },
            "call_recordings": [], "number": {"id": group_id, "number": line,
            "numberWithAlias": format!("{line} ({group})"), "alias": group},
            "campaign": "", "external_numbers": [], "transfer_details": {}, "abandoned": 0,
            "contact": {"id": contact.id, "firstName": contact.first, "lastName": contact.last,
                        "email": null, "phone": contact.phone, "additionalFields": null},
        });
        if inbound {
            call["ringGroup"] = json!({"id": group_id, "name": group});
        } else {
            call["campaign"] = json!(CAMPAIGNS[self.rng.usize(..CAMPAIGNS.len())]);
        }
        sender_quirks(id, &mut call);
        if self.chance(0.003) {
            self.push(
                out,
                start + 1_000,
                "call-transferred",
                entity.clone(),
                json!({"id": id}),
            );
        }
        let outcome = self.rng.f64();
        let abandon_odds = if inbound {
            0.05 + wait as f64 / 800.0
        } else {
            0.35
        };
        let (event, end) = if outcome < abandon_odds {
            call["abandoned"] = json!(1);
            call["sub_type"] = json!(if inbound { "Abandoned" } else { "Not Answered" });
            (
                if inbound {
                    "call-abandoned"
                } else {
                    "call-ended"
                },
                start + wait * 1000,
            )
        } else if inbound && outcome < abandon_odds + 0.07 {
            call["sub_type"] = json!("Voicemail");
            call["call_recordings"] =
                json!([format!("demo.nectardesk.io/api/call/recording/{}", id * 10)]);
            (
                "call-overflowed-to-voicemail",
                start + (wait + self.rng.i64(20..90)) * 1000,
            )
        } else {
            let talk = 20 + (self.rng.f64() * 30.0).powf(2.0) as i64;
            let (agent_id, agent) = AGENTS[self.rng.usize(..AGENTS.len())];
            let mut agents = vec![
                json!({"id": agent_id, "name": agent, "action": "Answered", "type": "Normal call"}),
            ];
            if self.chance(0.1) {
                let (other_id, other) = AGENTS[self.rng.usize(..AGENTS.len())];
                agents.push(json!({"id": other_id, "name": other, "action": "Contact hangup", "type": "Transfer Call"}));
                call["transfer_details"] = json!({"transfer_talk_time": talk / 3, "number": line});
            }
            call["agents"] = json!(agents);
            call["talkTime"] = json!(talk);
            call["sub_type"] = json!(format!("({group})Handled"));
            ("call-ended", start + (wait + talk) * 1000)
        };
        let duration = (end - start) / 1000;
        call["endedDate"] = json!(self.date(end));
        call["duration"] = json!(duration);
        if self.chance(0.001) {
            let mut broken = call.clone();
            broken.as_object_mut().unwrap().remove("id");
            self.push(out, end, event, entity.clone(), broken);
        }
        self.push(out, end, event, entity.clone(), call.clone());
        let answered = event == "call-ended" && call["abandoned"] == 0;
        if answered && self.chance(0.9) {
            let code = DISPOSITIONS[self.rng.usize(..DISPOSITIONS.len())];
            call["disposition"] = json!({"id": 1 + self.rng.i64(0..5), "code": code, "note": ""});
            let at = end + self.rng.i64(20_000..180_000);
            self.push(
                out,
                at,
                "call-disposition-saved",
                entity.clone(),
                call.clone(),
            );
            if self.chance(0.08) {
                call["disposition"] =
                    json!({"id": 3, "code": "SALE", "note": "upgraded after follow-up"});
                let later = at + self.rng.i64(600_000..3_600_000);
                self.push(
                    out,
                    later,
                    "call-disposition-modified",
                    entity.clone(),
                    call.clone(),
                );
            }
        }
        if answered && self.chance(0.85) {
            call["call_recordings"] =
                json!([format!("demo.nectardesk.io/api/call/recording/{}", id * 10)]);
            let at = end + self.rng.i64(30_000..120_000);
            self.push(
                out,
                at,
                "call-recording-received",
                entity.clone(),
                call.clone(),
            );
        }
        if self.chance(self.scenario.late_retry_ratio) {
            // The sender retries the first delivery after the later ones went through.
            let last = out[first_index..]
                .iter()
                .map(|d| d.at_ms)
                .max()
                .unwrap_or(end);
            let mut retry = out[first_index..]
                .iter()
                .find(|d| d.entity == entity)
                .cloned()
                .expect("a call has at least one delivery");
            retry.at_ms = last + 5_000;
            out.push(retry);
        }
    }

    fn messages(&mut self, start: i64, out: &mut Vec<Delivery>) {
        let contact = self.contact(start, out);
        let (_, group, line) = RING_GROUPS[self.rng.usize(..RING_GROUPS.len())];
        let id = self.next_message_id;
        self.next_message_id += 2;
        let body = json!({"id": id, "type": "sms", "from": contact.phone, "to": line,
                          "text": format!("Question for {group}"), "date": self.date(start),
                          "contact": {"id": contact.id}, "status": "received"});
        self.push(
            out,
            start,
            "message-received",
            format!("message:{id}"),
            body,
        );
        if self.chance(0.8) {
            let at = start + self.rng.i64(30_000..600_000);
            let (agent_id, agent) = AGENTS[self.rng.usize(..AGENTS.len())];
            let reply = json!({"id": id + 1, "type": "sms", "from": line, "to": contact.phone,
                               "text": "Thanks, we are on it.", "date": self.date(at),
                               "contact": {"id": contact.id}, "agent": {"id": agent_id, "name": agent},
                               "status": "delivered"});
            self.push(
                out,
                at,
                "message-sent",
                format!("message:{}", id + 1),
                reply,
            );
        }
    }
}

/// What a real sender does now and then that the normalizer does not expect, so that the
/// demo's "Fields we receive but do not map" panel has something to show: a field no
/// reader maps (2% of calls) and a number sent as a string (1%). Decided by the call id,
/// not the random generator, so the rest of the traffic is the same with or without.
fn sender_quirks(call_id: i64, call: &mut Value) {
    if call_id % 50 == 7 {
        call["queueName"] = json!(["Main queue", "Overflow"][(call_id / 50 % 2) as usize]);
    }
    if call_id % 100 == 13 {
        call["waitingTime"] = json!(call["waitingTime"].to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;
    /// Monday 2026-03-02 00:00 in UTC-5.
    const MONDAY: i64 = 1_772_427_600_000;

    fn day(seed: u64) -> Vec<Delivery> {
        let mut generator = Generator::new(Scenario {
            seed,
            ..Scenario::default()
        });
        generator.window(MONDAY, MONDAY + DAY_MS)
    }

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        assert_eq!(day(7), day(7));
        assert_ne!(day(7), day(8));
    }

    #[test]
    fn every_one_of_the_twelve_events_occurs_in_a_day() {
        let deliveries = day(1);
        for kind in schemas::EventKind::ALL {
            assert!(
                deliveries.iter().any(|d| d.event == kind.slug()),
                "no {}",
                kind.slug()
            );
        }
    }

    #[test]
    fn business_hours_are_busier_than_the_night() {
        let deliveries = day(3);
        let hour = |h: i64| {
            deliveries
                .iter()
                .filter(|d| {
                    d.event.starts_with("call-")
                        && (MONDAY + h * 3_600_000..MONDAY + (h + 1) * 3_600_000).contains(&d.at_ms)
                })
                .count()
        };
        assert!(
            hour(10) > 5 * hour(3).max(1),
            "10h: {}, 3h: {}",
            hour(10),
            hour(3)
        );
    }

    #[test]
    fn one_calls_deliveries_are_in_life_cycle_order() {
        let deliveries = day(4);
        let calls: Vec<&Delivery> = deliveries
            .iter()
            .filter(|d| d.event == "call-recording-received")
            .take(20)
            .collect();
        for recording in calls {
            let ended = deliveries
                .iter()
                .find(|d| d.entity == recording.entity && d.event == "call-ended")
                .unwrap();
            assert!(ended.at_ms < recording.at_ms);
        }
    }

    #[test]
    fn some_calls_carry_a_field_no_reader_maps() {
        let deliveries = day(5);
        let calls = deliveries.iter().filter(|d| d.event == "call-ended");
        let with_queue = calls.filter(|d| d.body.get("queueName").is_some()).count();
        assert!(with_queue > 0);
        assert!(deliveries.iter().any(|d| d.body["waitingTime"].is_string()));
    }

    #[test]
    fn dates_are_sent_in_the_centers_local_time() {
        let generator = Generator::new(Scenario::default());
        assert_eq!(
            generator.date(MONDAY + 9 * 3_600_000),
            "2026-03-02T09:00:00-05:00"
        );
    }
}
