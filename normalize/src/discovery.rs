//! Field discovery: which parts of a delivery's body the readers did not read, and which
//! values they read had another JSON type than the one they expected.
//!
//! One source of truth: the lenient readers themselves note what they touch (see
//! `lenient`) in a recorder that exists only while [`Recording`] is alive, on the thread
//! that normalizes (one `normalize()` call). Outside a recording the notes are no-ops, so
//! `ingest`, which runs the same readers for the Kafka key, records nothing. Values are
//! told apart by address: the body is not changed while it is read, so the address of a
//! `serde_json` value inside it is its identity for the duration of one call.
//!
//! Then [`Recording::finish`] walks the body and reports
//! - *unmapped*: a key present in an object the readers looked into, that no reader
//!   asked for (the outermost such key only; array elements collapse into `[]`, so
//!   `agents[].skill`); a free-form object read whole (`additionalFields`) counts as
//!   mapped with everything under it;
//! - *mistyped*: a value a reader read whose JSON type is not one the reader expected
//!   (`"26"` where an integer was expected, an object where a list was). Empty values
//!   (`null`, `""`, `[]`, `{}`) are never mistyped: they carry nothing to misread, and
//!   the sender uses them for any field (`transfer_details: []`).
//!
//! Nothing here does I/O.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;

use schemas::{FieldReport, MistypedField, UnmappedField};
use serde_json::{Map, Value};

/// At most this many unmapped and this many mistyped paths are kept per delivery, so a
/// body with thousands of unknown keys cannot blow up a record or a table.
pub const MAX_PATHS: usize = 100;
/// Example values are cut to this many characters (never a whole body).
pub const EXAMPLE_CHARS: usize = 64;
/// Paths are cut to this many characters.
const PATH_CHARS: usize = 200;

/// A set of JSON kinds a reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Kinds(u8);

impl Kinds {
    pub(crate) const BOOLEAN: Kinds = Kinds(1);
    pub(crate) const INTEGER: Kinds = Kinds(2);
    /// A number with a fraction or an exponent.
    pub(crate) const NUMBER: Kinds = Kinds(4);
    pub(crate) const STRING: Kinds = Kinds(8);
    pub(crate) const ARRAY: Kinds = Kinds(16);
    pub(crate) const OBJECT: Kinds = Kinds(32);
    const NAMES: [(Kinds, &'static str); 6] = [
        (Kinds::BOOLEAN, "boolean"),
        (Kinds::INTEGER, "integer"),
        (Kinds::NUMBER, "number"),
        (Kinds::STRING, "string"),
        (Kinds::ARRAY, "array"),
        (Kinds::OBJECT, "object"),
    ];

    pub(crate) const fn or(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 != 0
    }

    /// `string`, `boolean or integer`, … in a fixed order.
    fn describe(self) -> String {
        let names: Vec<&str> = Kinds::NAMES
            .iter()
            .filter(|(kind, _)| self.contains(*kind))
            .map(|(_, name)| *name)
            .collect();
        names.join(" or ")
    }
}

/// The kind of a JSON value, and its name; `None` for `null`.
fn kind_of(value: &Value) -> Option<(Kinds, &'static str)> {
    let kind = match value {
        Value::Null => return None,
        Value::Bool(_) => Kinds::BOOLEAN,
        Value::Number(n) if n.is_i64() || n.is_u64() => Kinds::INTEGER,
        Value::Number(_) => Kinds::NUMBER,
        Value::String(_) => Kinds::STRING,
        Value::Array(_) => Kinds::ARRAY,
        Value::Object(_) => Kinds::OBJECT,
    };
    let name = Kinds::NAMES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("", |(_, n)| n);
    Some((kind, name))
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// The identity of a value (or map) in the body being read: its address.
fn addr<T>(item: &T) -> usize {
    std::ptr::from_ref(item) as usize
}

/// What the readers touched during one recording.
#[derive(Debug, Default)]
struct Recorder {
    /// (object, key) asked for, whether present or not.
    keys: HashSet<(usize, &'static str)>,
    /// Objects some key of which was asked for.
    touched: HashSet<usize>,
    /// Values read, with the kinds their readers accept.
    expected: HashMap<usize, Kinds>,
    /// Free-form values read whole.
    whole: HashSet<usize>,
}

thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

fn with(note: impl FnOnce(&mut Recorder)) {
    RECORDER.with(|cell| {
        if let Some(recorder) = cell.borrow_mut().as_mut() {
            note(recorder);
        }
    });
}

/// A reader asked `map` for `key`.
pub(crate) fn note_key(map: &Map<String, Value>, key: &'static str) {
    with(|r| {
        r.keys.insert((addr(map), key));
        r.touched.insert(addr(map));
    });
}

/// A reader read `value` expecting one of `kinds`.
pub(crate) fn note_expected(value: &Value, kinds: Kinds) {
    with(|r| {
        let entry = r.expected.entry(addr(value)).or_default();
        *entry = entry.or(kinds);
    });
}

/// A reader took `value` whole, as free-form data: nothing under it is unmapped.
pub(crate) fn note_whole(value: &Value) {
    with(|r| {
        r.whole.insert(addr(value));
    });
}

/// Records what the readers touch until it is finished or dropped. Not `Send`: the
/// recorder is the thread's own.
pub(crate) struct Recording {
    _thread_bound: PhantomData<*const ()>,
}

impl Recording {
    pub(crate) fn start() -> Recording {
        RECORDER.with(|cell| *cell.borrow_mut() = Some(Recorder::default()));
        Recording {
            _thread_bound: PhantomData,
        }
    }

    /// Stops recording and reports what `body` holds that the readers did not read, or
    /// read with another type than they expected.
    pub(crate) fn finish(self, body: &Value) -> FieldReport {
        let recorder = RECORDER
            .with(|cell| cell.borrow_mut().take())
            .unwrap_or_default();
        let mut found = Found::default();
        if let Value::Object(map) = body {
            recorder.walk_object(map, "", &mut found);
        }
        found.report()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        RECORDER.with(|cell| cell.borrow_mut().take());
    }
}

/// Paths found so far, each once (the first example wins), in path order.
#[derive(Debug, Default)]
struct Found {
    unmapped: BTreeMap<String, String>,
    mistyped: BTreeMap<String, (String, &'static str, String)>,
}

impl Found {
    fn report(self) -> FieldReport {
        FieldReport {
            unmapped: self
                .unmapped
                .into_iter()
                .map(|(path, example)| UnmappedField { path, example })
                .collect(),
            mistyped: self
                .mistyped
                .into_iter()
                .map(|(path, (expected, found, example))| MistypedField {
                    path,
                    expected,
                    found: found.to_owned(),
                    example,
                })
                .collect(),
        }
    }
}

impl Recorder {
    fn walk_object(&self, map: &Map<String, Value>, path: &str, found: &mut Found) {
        let id = addr(map);
        for (key, value) in map {
            let path = join(path, key);
            if self.keys.contains(&(id, key.as_str())) {
                self.visit(value, &path, found);
            } else if found.unmapped.len() < MAX_PATHS {
                found.unmapped.entry(path).or_insert_with(|| example(value));
            }
        }
    }

    fn visit(&self, value: &Value, path: &str, found: &mut Found) {
        let id = addr(value);
        if let (Some(&expected), Some((kind, name))) = (self.expected.get(&id), kind_of(value)) {
            if !expected.contains(kind) && !is_empty(value) && found.mistyped.len() < MAX_PATHS {
                found
                    .mistyped
                    .entry(path.to_owned())
                    .or_insert_with(|| (expected.describe(), name, example(value)));
            }
        }
        if self.whole.contains(&id) {
            return;
        }
        match value {
            // An object no reader looked into was read as something else (and reported
            // as mistyped) or not at all: its keys are not reported one by one.
            Value::Object(map) if self.touched.contains(&addr(map)) => {
                self.walk_object(map, path, found);
            }
            Value::Array(items) => {
                let path = format!("{path}[]");
                for item in items {
                    self.visit(item, &path, found);
                }
            }
            _ => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    let joined = if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    };
    truncate(&joined, PATH_CHARS)
}

/// A value as compact JSON, cut to [`EXAMPLE_CHARS`] characters (with `…` when cut).
pub fn example(value: &Value) -> String {
    truncate(&value.to_string(), EXAMPLE_CHARS)
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenient::{field, free_form, int, object, objects, string, strings};
    use serde_json::json;

    /// Reads `body` with `read`, and reports.
    fn report(body: Value, read: impl FnOnce(&Map<String, Value>)) -> FieldReport {
        let recording = Recording::start();
        read(body.as_object().unwrap());
        recording.finish(&body)
    }

    fn unmapped(report: &FieldReport) -> Vec<&str> {
        report.unmapped.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn a_key_no_reader_asked_for_is_unmapped_with_an_example() {
        let r = report(
            json!({"id": 7, "queueName": "Main", "extra": {"a": [1, 2]}}),
            |b| {
                int(field(b, "id"));
            },
        );
        assert_eq!(unmapped(&r), ["extra", "queueName"]);
        assert_eq!(r.unmapped[0].example, r#"{"a":[1,2]}"#);
        assert!(r.mistyped.is_empty());
    }

    #[test]
    fn array_elements_collapse_into_one_path() {
        let r = report(
            json!({"agents": [{"id": 1, "skill": "x"}, {"id": 2, "skill": "y", "team": 3}]}),
            |b| {
                for a in objects(field(b, "agents")) {
                    int(field(a, "id"));
                }
            },
        );
        assert_eq!(unmapped(&r), ["agents[].skill", "agents[].team"]);
        assert_eq!(r.unmapped[0].example, r#""x""#);
    }

    #[test]
    fn a_free_form_object_read_whole_is_mapped_with_everything_under_it() {
        let r = report(
            json!({"additionalFields": {"plan": {"tier": "gold"}}, "integrations": "x"}),
            |b| {
                free_form(field(b, "additionalFields"));
                free_form(field(b, "integrations"));
            },
        );
        assert!(r.unmapped.is_empty());
        assert_eq!(r.mistyped.len(), 1);
        assert_eq!(
            (r.mistyped[0].path.as_str(), r.mistyped[0].expected.as_str()),
            ("integrations", "object")
        );
    }

    #[test]
    fn values_of_another_type_than_expected_are_mistyped() {
        let r = report(
            json!({"duration": "26", "tags": {"a": "vip"}, "line": [{"number": 15550100}],
                   "talkTime": null, "waitingTime": "", "transfer": [], "ok": 5}),
            |b| {
                int(field(b, "duration"));
                strings(field(b, "tags"));
                if let Some(line) = object(field(b, "line")) {
                    string(field(line, "number"));
                }
                int(field(b, "talkTime"));
                int(field(b, "waitingTime"));
                object(field(b, "transfer"));
                int(field(b, "ok"));
            },
        );
        let mistyped: Vec<(&str, &str, &str, &str)> = r
            .mistyped
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    f.expected.as_str(),
                    f.found.as_str(),
                    f.example.as_str(),
                )
            })
            .collect();
        assert_eq!(
            mistyped,
            [
                ("duration", "integer", "string", r#""26""#),
                ("line", "object", "array", r#"[{"number":15550100}]"#),
                ("line[].number", "string", "integer", "15550100"),
                ("tags", "array", "object", r#"{"a":"vip"}"#),
            ]
        );
        // `tags` was read as a list of its values: its keys are not unmapped one by one.
        assert!(r.unmapped.is_empty(), "{:?}", r.unmapped);
    }

    #[test]
    fn nothing_is_recorded_outside_a_recording() {
        let body = json!({"id": 1});
        int(field(body.as_object().unwrap(), "id"));
        assert!(RECORDER.with(|cell| cell.borrow().is_none()));
    }

    #[test]
    fn examples_and_paths_are_cut() {
        let long = "x".repeat(500);
        assert_eq!(
            example(&json!(long)).chars().count(),
            EXAMPLE_CHARS + 1,
            "64 characters and an ellipsis"
        );
        assert_eq!(example(&json!("é".repeat(70))).chars().count(), 65);
        let r = report(json!({ long.clone(): 1 }), |_| {});
        assert_eq!(r.unmapped[0].path.chars().count(), PATH_CHARS + 1);
    }

    #[test]
    fn at_most_max_paths_are_kept() {
        let body: Map<String, Value> = (0..500).map(|i| (format!("k{i}"), json!(i))).collect();
        let r = report(Value::Object(body), |_| {});
        assert_eq!(r.unmapped.len(), MAX_PATHS);
    }
}
