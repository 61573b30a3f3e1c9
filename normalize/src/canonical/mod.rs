//! A lossless canonical text of a JSON body, for event identity ([`crate::identity`]).
//!
//! Two spellings of one document (whitespace, member order, string escapes, number
//! notation) give one text, and two documents that differ in anything a reader could see
//! give two texts. For every body serde_json reads without loss (no integer beyond 64
//! bits, no number beyond a double's precision or range, no duplicate key, no lone
//! surrogate) the text is exactly `serde_json::Value::to_string()` of it, so event ids of
//! ordinary bodies are the ids earlier versions gave them.
//!
//! Why a reader of our own over the bytes rather than `Value` with serde_json's
//! `arbitrary_precision`: that feature is switched on for every crate of the workspace at
//! once (cargo unifies features), changing how numbers behave in the Avro and ClickHouse
//! paths and in the lenient readers, and `Value` would still keep only the last of
//! duplicate keys and refuse lone surrogates (`\ud800`, what JavaScript leaves when it
//! cuts text inside an emoji). Here one pass over the bytes, without recursion, builds
//! the text; nothing else in the workspace changes.
//!
//! The text:
//! - no insignificant whitespace; members sorted by key (UTF-8 bytes, which is code
//!   point order); the sort is stable, so duplicate keys are all kept, in their order;
//! - strings escaped as serde_json escapes them; a lone surrogate as `\udxxx`;
//! - an integer as its digits, however long (`-0` is `-0.0`, as serde_json reads it);
//! - another number, when its value is exactly the shortest form of a double, as
//!   serde_json prints that double (`1.5`, `100.0`, `1e20`); else exactly, as
//!   `[-]D[.DDD]E<exponent>`. Only these use an uppercase `E`, so they never meet a
//!   double's form.

/// Deepest nesting of arrays and objects read: the deepest serde_json (and so the
/// normalizer) reads. A deeper body has no canonical text; its event id is taken over its
/// bytes.
pub const MAX_DEPTH: usize = 127;

mod number;

/// The canonical text of `body`, or `None` when `body` is not one JSON document in UTF-8
/// (or nests deeper than [`MAX_DEPTH`]).
pub fn canonical(body: &[u8]) -> Option<Vec<u8>> {
    Reader { bytes: body, at: 0 }.document()
}

/// A member of an object being read: its key as bytes (to sort by) and its text so far.
struct Member {
    key: Vec<u8>,
    text: Vec<u8>,
}

/// An open array or object.
enum Frame {
    Array(Vec<u8>),
    Object { done: Vec<Member>, open: Member },
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn document(mut self) -> Option<Vec<u8>> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut root = Vec::new();
        'value: loop {
            self.skip_whitespace();
            let opens = matches!(self.peek(), Some(b'[' | b'{'));
            if opens && stack.len() >= MAX_DEPTH {
                return None;
            }
            let out = match stack.last_mut() {
                None => &mut root,
                Some(Frame::Array(text)) => text,
                Some(Frame::Object { open, .. }) => &mut open.text,
            };
            match self.peek()? {
                b'[' => {
                    self.at += 1;
                    self.skip_whitespace();
                    if !self.eat(b']') {
                        stack.push(Frame::Array(vec![b'[']));
                        continue 'value;
                    }
                    out.extend_from_slice(b"[]");
                }
                b'{' => {
                    self.at += 1;
                    self.skip_whitespace();
                    if !self.eat(b'}') {
                        let open = self.member()?;
                        stack.push(Frame::Object {
                            done: Vec::new(),
                            open,
                        });
                        continue 'value;
                    }
                    out.extend_from_slice(b"{}");
                }
                b'"' => {
                    self.at += 1;
                    self.string(out, &mut Vec::new())?;
                }
                b't' => self.literal(b"true", out)?,
                b'f' => self.literal(b"false", out)?,
                b'n' => self.literal(b"null", out)?,
                _ => self.number(out)?,
            }
            // A value is complete: continue its container, closing those that end here.
            loop {
                self.skip_whitespace();
                let closed = match stack.last_mut() {
                    None => return (self.at == self.bytes.len()).then_some(root),
                    Some(Frame::Array(text)) => match self.next()? {
                        b',' => {
                            text.push(b',');
                            continue 'value;
                        }
                        b']' => {
                            text.push(b']');
                            std::mem::take(text)
                        }
                        _ => return None,
                    },
                    Some(Frame::Object { done, open }) => {
                        let separator = self.next()?;
                        let next = match separator {
                            b',' => {
                                self.skip_whitespace();
                                self.member()?
                            }
                            b'}' => Member {
                                key: Vec::new(),
                                text: Vec::new(),
                            },
                            _ => return None,
                        };
                        done.push(std::mem::replace(open, next));
                        if separator == b',' {
                            continue 'value;
                        }
                        close_object(std::mem::take(done))
                    }
                };
                stack.pop();
                let out = match stack.last_mut() {
                    None => &mut root,
                    Some(Frame::Array(text)) => text,
                    Some(Frame::Object { open, .. }) => &mut open.text,
                };
                out.extend_from_slice(&closed);
            }
        }
    }

    /// A member's key and the colon after it; the text gets `"key":`.
    fn member(&mut self) -> Option<Member> {
        if !self.eat(b'"') {
            return None;
        }
        let mut member = Member {
            key: Vec::new(),
            text: Vec::new(),
        };
        self.string(&mut member.text, &mut member.key)?;
        self.skip_whitespace();
        if !self.eat(b':') {
            return None;
        }
        member.text.push(b':');
        Some(member)
    }

    /// The rest of a string whose opening quote was read: its canonical text goes to
    /// `out`, its characters to `raw` (WTF-8: a lone surrogate as its 3-byte form).
    fn string(&mut self, out: &mut Vec<u8>, raw: &mut Vec<u8>) -> Option<()> {
        out.push(b'"');
        loop {
            let start = self.at;
            while self
                .bytes
                .get(self.at)
                .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
            {
                self.at += 1;
            }
            let run = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
            out.extend_from_slice(run.as_bytes());
            raw.extend_from_slice(run.as_bytes());
            match self.next()? {
                b'"' => {
                    out.push(b'"');
                    return Some(());
                }
                b'\\' => self.escape(out, raw)?,
                _ => return None, // a raw control character
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>, raw: &mut Vec<u8>) -> Option<()> {
        let c = match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let pair = (0xD800..0xDC00).contains(&unit)
                    && self.bytes.get(self.at..self.at + 2) == Some(b"\\u");
                let low = if pair {
                    let saved = self.at;
                    self.at += 2;
                    match self.hex4()? {
                        low @ 0xDC00..0xE000 => Some(low),
                        _ => {
                            self.at = saved;
                            None
                        }
                    }
                } else {
                    None
                };
                let code = match low {
                    Some(low) => 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00),
                    None => unit,
                };
                match char::from_u32(code) {
                    Some(c) => c,
                    None => {
                        lone_surrogate(code, out, raw);
                        return Some(());
                    }
                }
            }
            _ => return None,
        };
        escape_char(c, out);
        let mut utf8 = [0; 4];
        raw.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(text, 16).ok()
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Option<()> {
        if self.bytes.get(self.at..self.at + word.len()) != Some(word) {
            return None;
        }
        self.at += word.len();
        out.extend_from_slice(word);
        Some(())
    }

    /// A number as JSON spells it: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.at;
        self.eat(b'-');
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            self.digit()?;
            self.digits();
        }
        if self.eat(b'e') || self.eat(b'E') {
            integer = false;
            let _ = self.eat(b'+') || self.eat(b'-');
            self.digit()?;
            self.digits();
        }
        let literal = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        number::write(literal, integer, out);
        Some(())
    }

    fn digit(&mut self) -> Option<()> {
        self.peek().filter(u8::is_ascii_digit).map(|_| self.at += 1)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn skip_whitespace(&mut self) {
        while self
            .peek()
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        self.at += usize::from(found);
        found
    }
}

/// An object's text from its members, sorted by key; the sort is stable, so duplicate
/// keys keep their order (with "last one wins", `{"id":1,"id":2}` and `{"id":2,"id":1}`
/// mean different things).
fn close_object(mut members: Vec<Member>) -> Vec<u8> {
    members.sort_by(|a, b| a.key.cmp(&b.key));
    let len = members.iter().map(|m| m.text.len() + 1).sum::<usize>() + 1;
    let mut text = Vec::with_capacity(len);
    text.push(b'{');
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            text.push(b',');
        }
        text.extend_from_slice(&member.text);
    }
    text.push(b'}');
    text
}

/// A character as serde_json writes it inside a string.
fn escape_char(c: char, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{8}' => out.extend_from_slice(b"\\b"),
        '\u{c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        c if (c as u32) < 0x20 => {
            let b = c as usize;
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX[b >> 4], HEX[b & 0xF]]);
        }
        c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
    }
}

fn lone_surrogate(unit: u32, out: &mut Vec<u8>, raw: &mut Vec<u8>) {
    out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
    // WTF-8, so keys sort by code point like every other character.
    raw.extend_from_slice(&[
        0xE0 | (unit >> 12) as u8,
        0x80 | ((unit >> 6) & 0x3F) as u8,
        0x80 | (unit & 0x3F) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> Option<String> {
        canonical(body.as_bytes()).map(|t| String::from_utf8(t).unwrap())
    }

    #[test]
    fn ordinary_bodies_read_exactly_as_serde_json_writes_them() {
        for body in [
            r#"{"b": 1, "a": {"y": [1, 2.5, -3], "x": null}, "c": "é\u00e9\/\n\u0001"}"#,
            r#"  [true, false, null, "", {}, [], 0, -0.0, 1e2, 1E-7, 12.50]  "#,
            r#"{"duration": 1.0, "big": 18446744073709551615, "neg": -9223372036854775808}"#,
            r#""\ud83d\ude00 \u007f \" \\""#,
            r#"{"é": 1, "z": 2, "a": 3, "😀": 4, "\uffff": 5}"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(text(body).unwrap(), value.to_string(), "{body}");
        }
    }

    #[test]
    fn keeps_what_serde_json_would_lose() {
        assert_eq!(
            text(r#"{"id":200,"id":201}"#).unwrap(),
            r#"{"id":200,"id":201}"#
        );
        assert_ne!(text(r#"{"id":200,"id":201}"#), text(r#"{"id":201}"#));
        assert_ne!(
            text(r#"{"id":200,"id":201}"#),
            text(r#"{"id":201,"id":200}"#)
        );
        assert_eq!(
            text(r#"{"b":1,"a":2,"b":3}"#).unwrap(),
            r#"{"a":2,"b":1,"b":3}"#
        );
        assert_eq!(
            text(r#"["\ud800", "\uDC00x", "\ud800\u0041"]"#).unwrap(),
            r#"["\ud800","\udc00x","\ud800A"]"#
        );
    }

    #[test]
    fn refuses_what_is_not_one_json_document() {
        for body in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "NaN",
            "\"a\nb\"",
            "\"\\x\"",
            "\"\\u12\"",
            "{1:2}",
            "[1] [2]",
            "tru",
            "\u{feff}{}",
        ] {
            assert_eq!(text(body), None, "{body:?}");
        }
        assert_eq!(canonical(b"\"\xff\""), None);
    }

    #[test]
    fn reads_nesting_up_to_the_limit_without_recursion() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(text(&deep(MAX_DEPTH)), Some(deep(MAX_DEPTH)));
        assert_eq!(text(&deep(MAX_DEPTH + 1)), None);
        let serde = |n| serde_json::from_str::<serde_json::Value>(&deep(n)).is_ok();
        assert!(serde(MAX_DEPTH) && !serde(MAX_DEPTH + 1));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(text(&objects).is_some());
        assert_eq!(text(&"[".repeat(1_000_000)), None);
    }
}
