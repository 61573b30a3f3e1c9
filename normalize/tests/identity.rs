//! Properties of the event id: two spellings of one document get one id, two documents
//! that differ in anything a reader could see (an integer beyond 64 bits, a number beyond
//! a double, a duplicate key, a lone surrogate) get two, and the ids of bodies serde_json
//! reads without loss are the ids earlier versions gave them.
//!
//! Documents come from a small model with its own notion of meaning, so the canonical
//! text is checked against an independent definition, not against itself.

use normalize::canonical::canonical;
use normalize::identity::{event_id, event_id_of_body};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// A JSON document as a reader sees it.
#[derive(Debug, Clone)]
enum Doc {
    Null,
    Bool(bool),
    /// Digits, maybe with a minus; never `-0`.
    Int(String),
    /// `digits × 10^exponent`, digits without leading or trailing zeros.
    Float {
        negative: bool,
        digits: String,
        exponent: i32,
    },
    Zero {
        negative: bool,
    },
    /// UTF-16 code units: lone surrogates allowed.
    Str(Vec<u16>),
    Array(Vec<Doc>),
    /// Members in order; keys may repeat.
    Object(Vec<(Vec<u16>, Doc)>),
}

/// What a document means, spelled independently of the code under test: members in a
/// stable order by key (duplicates keep their order), numbers by value and kind.
fn meaning(doc: &Doc) -> String {
    match doc {
        Doc::Null => "n".into(),
        Doc::Bool(b) => format!("b{b}"),
        Doc::Int(digits) => format!("i{digits}"),
        Doc::Float {
            negative,
            digits,
            exponent,
        } => format!("f{negative}{digits}e{exponent}"),
        Doc::Zero { negative } => format!("z{negative}"),
        Doc::Str(units) => format!("s{units:?}"),
        Doc::Array(items) => format!(
            "[{}]",
            items.iter().map(meaning).collect::<Vec<_>>().join(",")
        ),
        Doc::Object(members) => {
            let mut members: Vec<&(Vec<u16>, Doc)> = members.iter().collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let inner: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{k:?}:{}", meaning(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
    }
}

/// A small deterministic generator for the choices of a spelling.
struct Choices(u64);

impl Choices {
    fn pick(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.pick(2) == 0
    }
}

/// One of the many texts of `doc`.
fn spell(doc: &Doc, c: &mut Choices, out: &mut String) {
    const SPACE: [&str; 4] = ["", " ", "\n\t", "\r "];
    let space = |c: &mut Choices, out: &mut String| out.push_str(SPACE[c.pick(4)]);
    match doc {
        Doc::Null => out.push_str("null"),
        Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Doc::Int(digits) => out.push_str(digits),
        Doc::Zero { negative } => {
            out.push_str(if *negative { "-0" } else { "0" });
            out.push_str([".0", ".000", "e5", ".0E-3"][c.pick(4)]);
        }
        Doc::Float {
            negative,
            digits,
            exponent,
        } => spell_float(*negative, digits, *exponent, c, out),
        Doc::Str(units) => spell_string(units, c, out),
        Doc::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                space(c, out);
                spell(item, c, out);
                space(c, out);
            }
            out.push(']');
        }
        Doc::Object(members) => {
            out.push('{');
            for (i, (key, value)) in shuffled(members, c).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                space(c, out);
                spell_string(key, c, out);
                space(c, out);
                out.push(':');
                space(c, out);
                spell(value, c, out);
            }
            space(c, out);
            out.push('}');
        }
    }
}

/// The members in another order in which members with the same key keep their order.
fn shuffled<'a>(members: &'a [(Vec<u16>, Doc)], c: &mut Choices) -> Vec<&'a (Vec<u16>, Doc)> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, c.pick(i + 1));
    }
    let mut out: Vec<&(Vec<u16>, Doc)> = order.iter().map(|&i| &members[i]).collect();
    for key in members.iter().map(|(k, _)| k) {
        let slots: Vec<usize> = (0..out.len()).filter(|&i| &out[i].0 == key).collect();
        let same: Vec<&(Vec<u16>, Doc)> = members.iter().filter(|(k, _)| k == key).collect();
        for (slot, member) in slots.into_iter().zip(same) {
            out[slot] = member;
        }
    }
    out
}

fn spell_float(negative: bool, digits: &str, exponent: i32, c: &mut Choices, out: &mut String) {
    if negative {
        out.push('-');
    }
    // digits × 10^exponent = (digits·0^zeros) × 10^-point × 10^(exponent - zeros + point)
    let zeros = c.pick(3);
    let mantissa = format!("{digits}{}", "0".repeat(zeros));
    let point = 1 + c.pick(mantissa.len() + 2);
    let padded = format!(
        "{}{mantissa}",
        "0".repeat(point.saturating_sub(mantissa.len()))
    );
    let (int, fraction) = padded.split_at(padded.len() - point);
    out.push_str(if int.is_empty() { "0" } else { int });
    out.push('.');
    out.push_str(fraction);
    let shift = i64::from(exponent) - zeros as i64 + point as i64;
    if shift != 0 || c.coin() {
        out.push_str(["e", "E", "e+", "E0"][c.pick(4)]);
        if shift < 0 && out.ends_with('+') {
            out.pop();
        }
        if shift < 0 && out.ends_with("E0") {
            out.truncate(out.len() - 1);
        }
        out.push_str(&shift.to_string());
    }
}

fn spell_string(units: &[u16], c: &mut Choices, out: &mut String) {
    out.push('"');
    let mut i = 0;
    while i < units.len() {
        let unit = units[i];
        let pair = (0xD800..0xDC00).contains(&unit)
            && units
                .get(i + 1)
                .is_some_and(|u| (0xDC00..0xE000).contains(u));
        if pair {
            let c32 =
                0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(units[i + 1]) - 0xDC00);
            if c.coin() {
                out.push(char::from_u32(c32).unwrap());
            } else {
                out.push_str(&hex(unit, c));
                out.push_str(&hex(units[i + 1], c));
            }
            i += 2;
            continue;
        }
        match char::from_u32(u32::from(unit)) {
            None => out.push_str(&hex(unit, c)),
            Some(ch) => {
                let short = match ch {
                    '"' => Some("\\\""),
                    '\\' => Some("\\\\"),
                    '/' => Some("\\/"),
                    '\n' => Some("\\n"),
                    '\u{8}' => Some("\\b"),
                    _ => None,
                };
                let raw_allowed = !matches!(ch, '"' | '\\') && ch >= ' ';
                match (c.pick(3), short) {
                    (0, Some(short)) => out.push_str(short),
                    (1, _) if raw_allowed => out.push(ch),
                    _ if raw_allowed && c.coin() => out.push(ch),
                    _ => out.push_str(&hex(unit, c)),
                }
            }
        }
        i += 1;
    }
    out.push('"');
}

fn hex(unit: u16, c: &mut Choices) -> String {
    if c.coin() {
        format!("\\u{unit:04x}")
    } else {
        format!("\\u{unit:04X}")
    }
}

fn doc() -> impl Strategy<Value = Doc> {
    let units = prop::collection::vec(
        prop::sample::select(vec![
            0x61u16, 0x62, 0xE9, 0x22, 0x5C, 0x2F, 0x0A, 0x01, 0x08, 0xD83D, 0xDE00, 0xD800,
            0xDC00, 0x7F, 0xFFFF,
        ]),
        0..4,
    );
    let int = prop_oneof![
        (-3i64..4)
            .prop_filter("not -0", |n| *n != 0)
            .prop_map(|n| n.to_string()),
        Just("0".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("18446744073709551617".to_owned()),
        Just("-9223372036854775809".to_owned()),
        "[1-9][0-9]{19,30}",
    ];
    let float = (
        any::<bool>(),
        prop_oneof!["[1-9]", "[1-9][0-9]{0,3}[1-9]", "[1-9][0-9]{15,22}[1-9]"],
        prop_oneof![-6i32..6, -330i32..-300, 300i32..420],
    )
        .prop_map(|(negative, digits, exponent)| Doc::Float {
            negative,
            digits,
            exponent,
        });
    let leaf = prop_oneof![
        Just(Doc::Null),
        any::<bool>().prop_map(Doc::Bool),
        int.prop_map(Doc::Int),
        float,
        any::<bool>().prop_map(|negative| Doc::Zero { negative }),
        units.clone().prop_map(Doc::Str),
    ];
    let keys = prop_oneof![
        Just(vec![0x69u16, 0x64]),
        Just(vec![0x61]),
        Just(vec![0xE9]),
        Just(vec![0xD800]),
        Just(vec![0xD83D, 0xDE00]),
        Just(vec![]),
        units,
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
            prop::collection::vec((keys.clone(), inner), 0..5).prop_map(Doc::Object),
        ]
    })
}

/// `doc` with one small edit somewhere: one that may or may not change its meaning
/// (dropping, repeating or swapping a member, a digit, an exponent, a code unit, a sign,
/// an integer turned into the equal double).
fn edit(doc: &Doc, c: &mut Choices) -> Doc {
    let mut doc = doc.clone();
    edit_in_place(&mut doc, c);
    doc
}

fn edit_in_place(doc: &mut Doc, c: &mut Choices) {
    match doc {
        Doc::Array(items) if !items.is_empty() && c.coin() => {
            let i = c.pick(items.len());
            edit_in_place(&mut items[i], c);
        }
        Doc::Object(members) if !members.is_empty() && c.coin() => {
            let i = c.pick(members.len());
            edit_in_place(&mut members[i].1, c);
        }
        Doc::Object(members) if !members.is_empty() => match c.pick(3) {
            0 => {
                members.remove(c.pick(members.len()));
            }
            1 => {
                let member = members[c.pick(members.len())].clone();
                members.insert(c.pick(members.len() + 1), member);
            }
            _ => {
                let (i, j) = (c.pick(members.len()), c.pick(members.len()));
                members.swap(i, j);
            }
        },
        Doc::Int(digits) => {
            if c.coin() {
                let last = digits.pop().unwrap();
                digits.push(if last == '9' { '8' } else { '9' });
            } else if digits != "0" {
                let (negative, magnitude) = match digits.strip_prefix('-') {
                    Some(m) => (true, m.to_owned()),
                    None => (false, digits.clone()),
                };
                let trimmed = magnitude.trim_end_matches('0');
                *doc = Doc::Float {
                    negative,
                    digits: trimmed.to_owned(),
                    exponent: (magnitude.len() - trimmed.len()) as i32,
                };
            }
        }
        Doc::Float {
            digits, exponent, ..
        } => {
            if c.coin() {
                *exponent += 1;
            } else {
                // A digit far below a double's precision.
                digits.push('1');
                *exponent -= 1;
            }
        }
        Doc::Zero { negative } => *negative = !*negative,
        Doc::Str(units) if !units.is_empty() => {
            let i = c.pick(units.len());
            if c.coin() {
                units[i] ^= 1;
            } else {
                units.remove(i);
            }
        }
        Doc::Bool(b) => *b = !*b,
        _ => *doc = Doc::Null,
    }
}

fn text(doc: &Doc, seed: u64) -> String {
    let mut out = String::new();
    spell(doc, &mut Choices(seed | 1), &mut out);
    out
}

fn id(text: &str) -> String {
    event_id_of_body("acme", "call-ended", text.as_bytes())
}

/// An arbitrary document serde_json reads without loss.
fn ordinary() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..5)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_spelling_of_a_document_gets_the_same_id(doc in doc(), a: u64, b: u64) {
        let (first, second) = (text(&doc, a), text(&doc, b));
        prop_assert!(canonical(first.as_bytes()).is_some(), "{first}");
        prop_assert_eq!(id(&first), id(&second), "{} vs {}", first, second);
    }

    #[test]
    fn documents_that_mean_different_things_get_different_ids(
        x in doc(), y in doc(), a: u64, b: u64,
    ) {
        let (first, second) = (text(&x, a), text(&y, b));
        let same = meaning(&x) == meaning(&y);
        prop_assert_eq!(id(&first) == id(&second), same, "{} vs {}", first, second);
    }

    #[test]
    fn a_small_edit_changes_the_id_exactly_when_it_changes_the_meaning(
        x in doc(), a: u64, b: u64, e: u64,
    ) {
        let y = edit(&x, &mut Choices(e | 1));
        let (first, second) = (text(&x, a), text(&y, b));
        let same = meaning(&x) == meaning(&y);
        prop_assert_eq!(id(&first) == id(&second), same, "{} vs {}", first, second);
    }

    #[test]
    fn the_canonical_text_is_its_own_canonical_text(doc in doc(), seed: u64) {
        let once = canonical(text(&doc, seed).as_bytes()).unwrap();
        prop_assert_eq!(canonical(&once), Some(once.clone()));
        prop_assert!(String::from_utf8(once).is_ok());
    }

    #[test]
    fn bodies_serde_json_reads_without_loss_keep_their_earlier_ids(value in ordinary()) {
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let text = canonical(pretty.as_bytes()).map(|t| String::from_utf8(t).unwrap());
        prop_assert_eq!(text, Some(value.to_string()));
        prop_assert_eq!(
            event_id_of_body("acme", "call-ended", pretty.as_bytes()),
            event_id("acme", "call-ended", &value)
        );
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Some(text) = canonical(&body) {
            prop_assert_eq!(canonical(&text), Some(text.clone()));
        }
        prop_assert_eq!(id_bytes(&body), id_bytes(&body));
    }
}

fn id_bytes(body: &[u8]) -> String {
    event_id_of_body("acme", "call-ended", body)
}
