//! Field discovery on the golden fixtures: a key no reader uses, added anywhere the
//! readers look, is reported as unmapped, and nothing the readers use ever is. Unknown
//! keys are injected at random places of a fixture's body; the report must be the
//! fixture's own report plus exactly those paths.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use normalize::normalize;
use proptest::prelude::*;
use schemas::{RawEnvelope, Status};
use serde_json::{Map, Value};

/// Keys read whole, as free-form data: nothing under them is unmapped.
const FREE_FORM: &[&str] = &[
    "additionalFields",
    "additional_fields",
    "customFields",
    "integrations",
];

struct Fixture {
    name: String,
    event: String,
    body: Value,
    /// Places a key can be added that the readers look into: (pointer, path).
    sites: Vec<(String, String)>,
}

fn envelope(event: &str, body: &Value) -> RawEnvelope {
    RawEnvelope {
        event_id: "e".into(),
        tenant: "acme".into(),
        event: event.into(),
        received_at: 1_772_460_701_000,
        source_addr: String::new(),
        body: body.to_string().into_bytes(),
    }
}

fn report(event: &str, body: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = normalize(&envelope(event, body));
    let report = out.field_report.expect("a normalized event has a report");
    (
        report.unmapped.into_iter().map(|f| f.path).collect(),
        report.mistyped.into_iter().map(|f| f.path).collect(),
    )
}

/// Objects of `value` that normalization reads at least one present key of: not under
/// an unmapped or mistyped path (a mistyped object may not be looked into at all) or a
/// free-form key, and with a key that is not unmapped.
fn sites(
    value: &Value,
    pointer: &str,
    path: &str,
    reported: &Reported,
    out: &mut Vec<(String, String)>,
) {
    match value {
        Value::Object(map) => {
            let child = |key: &str| {
                if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                }
            };
            if map.keys().any(|k| !reported.unmapped.contains(&child(k))) {
                out.push((pointer.to_owned(), path.to_owned()));
            }
            for (key, child_value) in map {
                let child_path = child(key);
                if reported.covers(&child_path) || FREE_FORM.contains(&key.as_str()) {
                    continue;
                }
                let escaped = key.replace('~', "~0").replace('/', "~1");
                sites(
                    child_value,
                    &format!("{pointer}/{escaped}"),
                    &child_path,
                    reported,
                    out,
                );
            }
        }
        Value::Array(items) => {
            let element = format!("{path}[]");
            if reported.covers(&element) {
                return;
            }
            for (i, item) in items.iter().enumerate() {
                sites(item, &format!("{pointer}/{i}"), &element, reported, out);
            }
        }
        _ => {}
    }
}

/// A fixture's own report.
struct Reported {
    unmapped: BTreeSet<String>,
    mistyped: BTreeSet<String>,
}

impl Reported {
    fn covers(&self, path: &str) -> bool {
        self.unmapped.contains(path) || self.mistyped.contains(path)
    }
}

fn fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".input.json").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let input: Value = serde_json::from_str(
                &fs::read_to_string(dir.join(format!("{name}.input.json"))).unwrap(),
            )
            .unwrap();
            let event = input["event"].as_str()?.to_owned();
            let body = input.get("body")?.clone();
            if normalize(&envelope(&event, &body)).status != Status::Normalized {
                return None;
            }
            let (unmapped, mistyped) = report(&event, &body);
            let mut found = Vec::new();
            sites(&body, "", "", &Reported { unmapped, mistyped }, &mut found);
            Some(Fixture {
                name,
                event,
                body,
                sites: found,
            })
        })
        .collect()
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        "[a-z ]{0,8}".prop_map(Value::String),
        Just(serde_json::json!({"nested": [1, {"deep": true}]})),
    ]
}

#[test]
fn every_normalized_fixture_has_places_to_inject() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 25, "{}", fixtures.len());
    for f in &fixtures {
        assert!(!f.sites.is_empty(), "{}", f.name);
    }
    let paths: BTreeSet<&str> = fixtures
        .iter()
        .flat_map(|f| f.sites.iter().map(|(_, path)| path.as_str()))
        .collect();
    for nested in [
        "",
        "agents[]",
        "contact",
        "number",
        "disposition",
        "external_numbers[]",
    ] {
        assert!(paths.contains(nested), "no site at {nested:?}: {paths:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn injected_unknown_keys_are_exactly_what_is_added_to_the_report(
        pick in any::<prop::sample::Index>(),
        injections in prop::collection::vec((any::<prop::sample::Index>(), leaf()), 1..5),
    ) {
        let fixtures = fixtures();
        let fixture = &fixtures[pick.index(fixtures.len())];
        let (base_unmapped, base_mistyped) = report(&fixture.event, &fixture.body);
        let mut body = fixture.body.clone();
        let mut expected = base_unmapped.clone();
        for (n, (site, value)) in injections.into_iter().enumerate() {
            let (pointer, path) = &fixture.sites[site.index(fixture.sites.len())];
            let key = format!("zzUnknown{n}");
            let target: &mut Map<String, Value> =
                body.pointer_mut(pointer).and_then(Value::as_object_mut).expect("a site is an object");
            target.insert(key.clone(), value);
            expected.insert(if path.is_empty() { key } else { format!("{path}.{key}") });
        }
        let (unmapped, mistyped) = report(&fixture.event, &body);
        prop_assert_eq!(unmapped, expected, "{}", fixture.name);
        prop_assert_eq!(mistyped, base_mistyped, "{}", fixture.name);
    }
}
