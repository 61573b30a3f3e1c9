//! Golden fixtures. Each `fixtures/<name>.input.json` holds an event slug and a body (or
//! `body_text` for a body that is not JSON); `<name>.expected.json` beside it holds the
//! normalized event. After a deliberate change, rewrite the expected files with
//! `UPDATE_GOLDEN=1 cargo test -p normalize --test golden` and review the diff.

use std::fs;
use std::path::{Path, PathBuf};

use normalize::{identity, normalize};
use schemas::RawEnvelope;
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".input.json"))
        .collect();
    inputs.sort();
    inputs
}

/// The envelope ingest would have built for a fixture.
fn envelope(input: &Value) -> RawEnvelope {
    let event = input["event"].as_str().expect("fixture names an event");
    let body = match (&input["body"], input["body_text"].as_str()) {
        (_, Some(text)) => text.to_owned(),
        (body, None) => body.to_string(),
    };
    let event_id = match serde_json::from_str::<Value>(&body) {
        Ok(json) => identity::event_id("acme", event, &json),
        Err(_) => "not-json".to_owned(),
    };
    RawEnvelope {
        event_id,
        tenant: "acme".into(),
        event: event.into(),
        received_at: 1_772_460_701_000,
        source_addr: "203.0.113.7".into(),
        body: body.into_bytes(),
    }
}

#[test]
fn every_fixture_normalizes_to_its_expected_output() {
    let inputs = fixtures();
    assert!(
        inputs.len() >= 30,
        "fixtures missing: found {}",
        inputs.len()
    );
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for input_path in &inputs {
        let input: Value = serde_json::from_str(&fs::read_to_string(input_path).unwrap()).unwrap();
        let actual = serde_json::to_value(normalize(&envelope(&input))).unwrap();
        let expected_path = PathBuf::from(
            input_path
                .to_string_lossy()
                .replace(".input.json", ".expected.json"),
        );
        if update {
            fs::write(
                &expected_path,
                serde_json::to_string_pretty(&actual).unwrap() + "\n",
            )
            .unwrap();
            continue;
        }
        let expected: Value = match fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(_) => {
                failures.push(format!("{}: no expected file", expected_path.display()));
                continue;
            }
        };
        if actual != expected {
            failures.push(format!(
                "{}:\n  expected {expected}\n  actual   {actual}",
                input_path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixtures_cover_every_event_in_full_and_sparse_form() {
    let names: Vec<String> = fixtures()
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".input.json", "")
        })
        .collect();
    for kind in schemas::EventKind::ALL {
        for form in ["full", "sparse"] {
            let wanted = format!("{}-{form}", kind.slug());
            assert!(names.contains(&wanted), "no fixture {wanted}");
        }
    }
}
