//! The canonical text behind event ids, on arbitrary bytes: it never panics, what it
//! writes is UTF-8 and its own canonical text, and for everything serde_json reads it
//! agrees with serde_json (so ordinary bodies keep the ids earlier versions gave them).

#![no_main]

use libfuzzer_sys::fuzz_target;
use normalize::canonical::canonical;

fuzz_target!(|data: &[u8]| {
    let text = canonical(data);
    if let Some(text) = &text {
        assert!(std::str::from_utf8(text).is_ok(), "not UTF-8: {text:?}");
        assert_eq!(canonical(text).as_ref(), Some(text), "not its own canonical text");
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        assert!(text.is_some(), "serde_json reads it, canonical does not");
        let serde = value.to_string();
        assert_eq!(canonical(serde.as_bytes()), Some(serde.clone().into_bytes()));
    }
});
