//! Lenient readers for JSON values from a sender that does not keep to its own docs.
//!
//! Every reader accepts anything and returns an empty value (`None`, `""`, `[]`) for what
//! it cannot use: `null`, `""`, `{}`, `[]`, the literal string `"null"`, numbers sent as
//! strings and strings sent as numbers, a one-element array where a scalar was expected,
//! an object where an array was expected and the reverse.
//!
//! Every reader also notes what it read and the JSON kinds it expected (see
//! `discovery`): the keys it asks for, the values it reads, the free-form objects it
//! takes whole. That is how field discovery knows, without a second list of field names,
//! which parts of a body nothing reads. Keys are `&'static str` because every key a
//! reader asks for is written in the code.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use crate::discovery::{note_expected, note_key, note_whole, Kinds};

/// The field `key` of `map`, or `null` when absent, so every reader sees a value.
pub(crate) fn field<'a>(map: &'a Map<String, Value>, key: &'static str) -> &'a Value {
    note_key(map, key);
    map.get(key).unwrap_or(&Value::Null)
}

/// The first of `keys` that `map` has with a value other than `null`, `""`, `{}` or `[]`
/// (payloads whose field names are not documented use any of several spellings). Every
/// spelling counts as read, also those after the one chosen: they are known names.
pub(crate) fn first<'a>(map: &'a Map<String, Value>, keys: &[&'static str]) -> &'a Value {
    for key in keys {
        note_key(map, key);
    }
    keys.iter()
        .filter_map(|key| map.get(*key))
        .find(|value| !is_empty(value))
        .unwrap_or(&Value::Null)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// A one-element array stands for its element; anything else is itself.
fn scalar(value: &Value) -> &Value {
    match value {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    }
}

/// An integer: a JSON integer, an integral float, or a string holding one.
pub(crate) fn int(value: &Value) -> Option<i64> {
    note_expected(value, Kinds::INTEGER);
    parse_int(value)
}

fn parse_int(value: &Value) -> Option<i64> {
    match scalar(value) {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => parse_int_text(s),
        _ => None,
    }
}

fn parse_int_text(s: &str) -> Option<i64> {
    let s = s.trim();
    s.parse::<i64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// A non-negative integer, e.g. a duration in seconds.
pub(crate) fn non_negative(value: &Value) -> Option<i64> {
    int(value).filter(|n| *n >= 0)
}

/// Trimmed text: a string, or a number or boolean written out. `"null"` counts as empty.
pub(crate) fn string(value: &Value) -> String {
    note_expected(value, Kinds::STRING);
    match scalar(value) {
        Value::String(s) => {
            let s = s.trim();
            if s.eq_ignore_ascii_case("null") {
                String::new()
            } else {
                s.to_owned()
            }
        }
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// An identifier that is text or a number alike (a message id): read like [`string`],
/// and neither kind is unexpected.
pub(crate) fn id_text(value: &Value) -> String {
    note_expected(value, Kinds::INTEGER);
    string(value)
}

/// A flag: a boolean, a number (non-zero is true), or a string such as `1`, `true`, `yes`.
pub(crate) fn flag(value: &Value) -> Option<bool> {
    // NectarDesk documents its flags as integers 0/1.
    note_expected(value, Kinds::BOOLEAN.or(Kinds::INTEGER));
    match scalar(value) {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "y" => Some(true),
            "0" | "false" | "no" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An object: the object itself, or the first object of an array.
pub(crate) fn object(value: &Value) -> Option<&Map<String, Value>> {
    note_expected(value, Kinds::OBJECT);
    match value {
        Value::Object(map) => Some(map),
        Value::Array(items) => items.iter().find_map(Value::as_object),
        _ => None,
    }
}

/// A free-form object (custom fields, integrations) as compact JSON text; `{}` for
/// anything that is not a non-empty object. Whatever it holds counts as mapped.
pub(crate) fn free_form(value: &Value) -> String {
    note_whole(value);
    match object(value) {
        Some(map) if !map.is_empty() => Value::Object(map.clone()).to_string(),
        _ => "{}".to_owned(),
    }
}

/// The elements of a list: an array's items, an object's values (an object sent where an
/// array was expected), or a single non-empty value as a list of one.
pub(crate) fn items(value: &Value) -> Vec<&Value> {
    note_expected(value, Kinds::ARRAY);
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => map.values().collect(),
        Value::Null => Vec::new(),
        Value::String(s) if s.trim().is_empty() => Vec::new(),
        other => vec![other],
    }
}

/// A list of objects: an array's objects, the values of an object of objects, or a single
/// object standing alone where a list of them was expected.
pub(crate) fn objects(value: &Value) -> Vec<&Map<String, Value>> {
    note_expected(value, Kinds::ARRAY);
    let elements: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) if !map.is_empty() && map.values().all(Value::is_object) => {
            map.values().collect()
        }
        // A single object: the list itself is what is mistyped, not an element.
        Value::Object(map) if !map.is_empty() => return vec![map],
        _ => Vec::new(),
    };
    elements
        .into_iter()
        .filter_map(|element| {
            note_expected(element, Kinds::OBJECT);
            element.as_object()
        })
        .collect()
}

/// A list of non-empty strings.
pub(crate) fn strings(value: &Value) -> Vec<String> {
    items(value)
        .into_iter()
        .map(string)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A point in time as Unix milliseconds (UTC) with the sender's UTC offset in seconds when
/// it gave one. Accepts ISO 8601 / RFC 3339 with an offset, the same with a space for
/// `T`, a local time without offset (taken as UTC, offset unknown), and Unix seconds or
/// milliseconds as a number.
pub(crate) fn instant(value: &Value) -> Option<(i64, Option<i32>)> {
    note_expected(value, Kinds::STRING.or(Kinds::INTEGER));
    match scalar(value) {
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() {
                return None;
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(s)
                .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z"))
                .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
            {
                return Some((t.timestamp_millis(), Some(t.offset().local_minus_utc())));
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
                    return Some((t.and_utc().timestamp_millis(), None));
                }
            }
            epoch(parse_int_text(s)?)
        }
        Value::Number(_) => epoch(parse_int(value)?),
        _ => None,
    }
}

/// Unix seconds or milliseconds (told apart by size) between 1990 and 2200.
fn epoch(n: i64) -> Option<(i64, Option<i32>)> {
    let ms = if n.abs() >= 100_000_000_000 {
        n
    } else {
        n.checked_mul(1000)?
    };
    let lo = DateTime::<Utc>::from_timestamp(631_152_000, 0)?.timestamp_millis();
    let hi = DateTime::<Utc>::from_timestamp(7_258_118_400, 0)?.timestamp_millis();
    (lo..hi).contains(&ms).then_some((ms, Some(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_skips_absent_and_empty_spellings() {
        let map = json!({"name": "", "title": null, "listName": "VIP", "label": "x"});
        let map = map.as_object().unwrap();
        assert_eq!(
            first(map, &["name", "title", "listName", "label"]),
            &json!("VIP")
        );
        assert_eq!(first(map, &["nope"]), &Value::Null);
    }

    #[test]
    fn int_accepts_numbers_strings_and_singletons() {
        assert_eq!(int(&json!(42)), Some(42));
        assert_eq!(int(&json!("42")), Some(42));
        assert_eq!(int(&json!(" 42 ")), Some(42));
        assert_eq!(int(&json!(42.0)), Some(42));
        assert_eq!(int(&json!("42.0")), Some(42));
        assert_eq!(int(&json!([42])), Some(42));
        for bad in [
            json!(null),
            json!(""),
            json!({}),
            json!([]),
            json!(4.5),
            json!("x"),
            json!(true),
        ] {
            assert_eq!(int(&bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_are_never_negative() {
        assert_eq!(non_negative(&json!(-3)), None);
        assert_eq!(non_negative(&json!(0)), Some(0));
    }

    #[test]
    fn string_trims_and_treats_null_text_as_empty() {
        assert_eq!(string(&json!("Sam Reyes ")), "Sam Reyes");
        assert_eq!(string(&json!("null")), "");
        assert_eq!(string(&json!(15550142)), "15550142");
        assert_eq!(string(&json!(null)), "");
        assert_eq!(string(&json!({})), "");
        assert_eq!(string(&json!(["x"])), "x");
    }

    #[test]
    fn flag_reads_booleans_numbers_and_words() {
        assert_eq!(flag(&json!(1)), Some(true));
        assert_eq!(flag(&json!(0)), Some(false));
        assert_eq!(flag(&json!("1")), Some(true));
        assert_eq!(flag(&json!("false")), Some(false));
        assert_eq!(flag(&json!(true)), Some(true));
        assert_eq!(flag(&json!("")), None);
        assert_eq!(flag(&json!(null)), None);
    }

    #[test]
    fn lists_accept_arrays_objects_and_single_values() {
        assert_eq!(strings(&json!(["a", "", null, 3])), vec!["a", "3"]);
        assert_eq!(strings(&json!({"x": "a"})), vec!["a"]);
        assert_eq!(strings(&json!("a")), vec!["a"]);
        assert!(strings(&json!({})).is_empty());
        assert!(strings(&json!("")).is_empty());
    }

    #[test]
    fn objects_accept_a_single_object_or_an_object_of_objects() {
        assert_eq!(objects(&json!([{"a": 1}, 2, {"b": 2}])).len(), 2);
        assert_eq!(objects(&json!({"a": 1})).len(), 1);
        assert_eq!(objects(&json!({"x": {"a": 1}, "y": {"a": 2}})).len(), 2);
        assert!(objects(&json!({})).is_empty());
        assert!(objects(&json!("x")).is_empty());
    }

    #[test]
    fn object_accepts_an_array_holding_one() {
        assert!(object(&json!({"a": 1})).is_some());
        assert!(object(&json!([{"a": 1}])).is_some());
        assert!(object(&json!([])).is_none());
        assert!(object(&json!("x")).is_none());
    }

    #[test]
    fn instant_converts_offsets_to_utc_and_keeps_the_offset() {
        let (ms, offset) = instant(&json!("2026-03-02T09:05:00-05:00")).unwrap();
        assert_eq!(
            ms,
            DateTime::parse_from_rfc3339("2026-03-02T14:05:00Z")
                .unwrap()
                .timestamp_millis()
        );
        assert_eq!(offset, Some(-5 * 3600));
        assert_eq!(
            instant(&json!("2026-03-02 09:05:00+02:00")).unwrap().1,
            Some(7200)
        );
        assert_eq!(instant(&json!("2026-03-02T09:05:00Z")).unwrap().1, Some(0));
    }

    #[test]
    fn instant_takes_local_times_as_utc_without_an_offset() {
        let (ms, offset) = instant(&json!("2026-03-02 14:05:00")).unwrap();
        assert_eq!(ms, 1_772_460_300_000);
        assert_eq!(offset, None);
    }

    #[test]
    fn instant_reads_unix_seconds_and_milliseconds() {
        assert_eq!(instant(&json!(1_772_460_300)).unwrap().0, 1_772_460_300_000);
        assert_eq!(
            instant(&json!(1_772_460_300_000_i64)).unwrap().0,
            1_772_460_300_000
        );
        assert_eq!(instant(&json!("1772460300")).unwrap().0, 1_772_460_300_000);
    }

    #[test]
    fn instant_rejects_empty_and_nonsense() {
        for bad in [
            json!(""),
            json!(null),
            json!("soon"),
            json!(5),
            json!({}),
            json!("2026-13-45T00:00:00Z"),
        ] {
            assert_eq!(instant(&bad), None, "{bad}");
        }
    }
}
