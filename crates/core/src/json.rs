//! Reading JSON text without building a [`Value`] for all of it.
//!
//! Ingest reads a handful of fields of each message and stores the rest as text: picking the
//! entries it needs out of an object ([`pick`]) and compacting the stored objects ([`compact`])
//! costs a fraction of a full parse into `Value` (a map entry, a key copy and a hash per field).

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The JSON type of a value, told by its first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl Kind {
    /// The type of a raw value (serde_json hands raw values out without surrounding whitespace).
    pub fn of(raw: &RawValue) -> Kind {
        match raw.get().trim_start().as_bytes().first() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') | None => Kind::Null,
            Some(_) => Kind::Number,
        }
    }
}

/// The entries of a JSON object whose keys are listed, as raw values in the order of `keys`;
/// the other entries are skipped without being built. `Ok(None)` when the text is valid JSON
/// but not an object; an error when it is not valid JSON (trailing text included). A key given
/// twice in the object keeps its last value; a key listed twice in `keys` gets it at both
/// places.
pub fn pick<'a, K: AsRef<str>>(
    text: &'a str,
    keys: &[K],
) -> Result<Option<Vec<Option<&'a RawValue>>>, serde_json::Error> {
    let mut out = vec![None; keys.len()];
    Ok(pick_into(text, keys, &mut out)?.then_some(out))
}

/// [`pick`] into a buffer of `keys.len()` entries (reset first); `Ok(false)` when the text is
/// not an object.
pub fn pick_into<'a, K: AsRef<str>>(
    text: &'a str,
    keys: &[K],
    out: &mut [Option<&'a RawValue>],
) -> Result<bool, serde_json::Error> {
    debug_assert_eq!(keys.len(), out.len());
    out.fill(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let object = serde::Deserializer::deserialize_any(&mut de, Picker { keys, out })?;
    de.end()?;
    Ok(object)
}

/// Text of a raw string value, unescaped (borrowed when it has no escapes); `None` for other
/// types.
pub fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get().trim();
    if Kind::of(raw) != Kind::String {
        return None;
    }
    if !text.contains('\\') {
        return text.get(1..text.len() - 1).map(Cow::Borrowed);
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// Text of a string or number value (a number written as serde_json writes it); `None` for
/// other types.
pub fn scalar_text(raw: &RawValue) -> Option<String> {
    match Kind::of(raw) {
        Kind::String => string(raw).map(Cow::into_owned),
        Kind::Number => serde_json::from_str::<serde_json::Number>(raw.get())
            .ok()
            .map(|n| n.to_string()),
        _ => None,
    }
}

/// The text of an object value: `Ok(None)` when absent or `null`, `Err` with the value's
/// type for anything else (the "must be an object" of every optional object field).
pub fn object_or_null(raw: Option<&RawValue>) -> Result<Option<&str>, Kind> {
    match raw.map(|r| (Kind::of(r), r)) {
        None | Some((Kind::Null, _)) => Ok(None),
        Some((Kind::Object, r)) => Ok(Some(r.get())),
        Some((other, _)) => Err(other),
    }
}

/// A JSON object's entries (empty when the text is not an object).
pub fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Whether an object's text has no entries.
pub fn is_empty_object(text: &str) -> bool {
    text.trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .is_some_and(|inner| inner.trim().is_empty())
}

/// Valid JSON text without the whitespace between tokens: the same text serde_json writes for
/// it, except that numbers keep their spelling (`1.50` stays `1.50`) and a repeated key stays
/// repeated. Text with an escape is written through a [`Value`], so escapes are spelt as
/// serde_json spells them (`\u4e0a` becomes `上`) and a search for a key's plain spelling finds
/// it.
pub fn compact(text: &str) -> Cow<'_, str> {
    if text.contains('\\') {
        return match serde_json::from_str::<Value>(text) {
            Ok(v) => Cow::Owned(v.to_string()),
            Err(_) => Cow::Borrowed(text),
        };
    }
    // Outside strings, tokens are short: byte by byte. Inside, jump to the closing quote (no
    // escapes here, so the next quote closes the string).
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => match memchr::memchr(b'"', &bytes[i + 1..]) {
                Some(len) => i += len + 2,
                None => break,
            },
            b' ' | b'\t' | b'\n' | b'\r' => {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    match out {
        Some(mut out) => {
            out.push_str(&text[start..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(text),
    }
}

/// Deserialises any JSON value: an object into its listed entries (true), anything else into
/// nothing (false).
struct Picker<'k, 'o, 'de, K> {
    keys: &'k [K],
    out: &'o mut [Option<&'de RawValue>],
}

impl<'de, K: AsRef<str>> Visitor<'de> for Picker<'_, '_, 'de, K> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key_seed(Key(self.keys))? {
            match key {
                Some(i) => {
                    let value: &RawValue = map.next_value()?;
                    // A key listed twice gets the value at every place it is listed.
                    let key = self.keys[i].as_ref();
                    for (slot, k) in self.out.iter_mut().zip(self.keys).skip(i) {
                        if k.as_ref() == key {
                            *slot = Some(value);
                        }
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
}

/// An object key: which of the listed keys it is, if any (unescaped keys are not copied).
struct Key<'k, K>(&'k [K]);

impl<'de, K: AsRef<str>> DeserializeSeed<'de> for Key<'_, K> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: AsRef<str>> Visitor<'de> for Key<'_, K> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<usize>, E> {
        // Keys are short: an inline byte loop beats a call to `memcmp` per candidate.
        let s = s.as_bytes();
        Ok(self.0.iter().position(|k| {
            let k = k.as_ref().as_bytes();
            k.len() == s.len() && k.iter().zip(s).all(|(a, b)| a == b)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).expect("raw value")
    }

    #[test]
    fn picked_entries_equal_a_full_parse_restricted_to_them() {
        let keys = ["a", "类目", "q\"k", "missing"];
        for text in [
            r#"{"a":1,"b":{"a":2},"类目":"美妆","q\"k":[1,{"x":null}],"a":3}"#,
            r#" { "b" : [ "a" , { } ] , "\u7c7b\u76ee" : { "z" : 1 } } "#,
            r#"{}"#,
        ] {
            let full = object(text);
            let picked = pick(text, &keys).expect("valid").expect("object");
            for (k, got) in keys.iter().zip(&picked) {
                let got: Option<Value> = got.map(|r| serde_json::from_str(r.get()).expect("raw"));
                assert_eq!(got.as_ref(), full.get(*k), "{k} in {text}");
            }
        }
        let twice = pick(r#"{"b":1,"a":2}"#, &["a", "b", "a"])
            .expect("valid")
            .expect("object");
        let twice: Vec<_> = twice.iter().map(|v| v.map(RawValue::get)).collect();
        assert_eq!(twice, [Some("2"), Some("1"), Some("2")]);
        for text in ["[1,{\"a\":2}]", "null", "1.5", "\"a\"", "true"] {
            assert!(pick(text, &keys).expect("valid").is_none(), "{text}");
        }
        for text in ["{\"a\":1", "{\"a\":1} x", "{a:1}", ""] {
            assert!(pick(text, &keys).is_err(), "{text}");
        }
    }

    #[test]
    fn kinds_strings_and_scalars_read_as_a_value_would() {
        for (text, kind) in [
            ("null", Kind::Null),
            ("false", Kind::Bool),
            ("-0.5", Kind::Number),
            ("\"x\"", Kind::String),
            ("[]", Kind::Array),
            ("{}", Kind::Object),
        ] {
            assert_eq!(Kind::of(raw(text)), kind, "{text}");
        }
        for text in [
            "\"plain 上海\"",
            r#""tab\tquote\" \u4e0a""#,
            "\"\"",
            "12",
            "1e2",
            "1.50",
            "-7",
            "[1]",
            "{}",
            "null",
        ] {
            let v: Value = serde_json::from_str(text).expect("json");
            let expected = match &v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            assert_eq!(scalar_text(raw(text)), expected, "{text}");
            assert_eq!(
                string(raw(text)).map(Cow::into_owned),
                v.as_str().map(str::to_string),
                "{text}"
            );
        }
    }

    #[test]
    fn compacted_text_parses_to_the_same_value_and_has_no_spaces_between_tokens() {
        for text in [
            r#"{"a": 1, "b": [ true, null ], "c": {"d": "two words\t"}}"#,
            "{\n  \"城市\" : \"上海\"\r\n}",
            r#"{"url": "https:\/\/shop.example.cn", "k": "\u4e0a"}"#,
            r#"{"a":1}"#,
            r#"{ }"#,
        ] {
            let compacted = compact(text);
            let before: Value = serde_json::from_str(text).expect("json");
            let after: Value = serde_json::from_str(&compacted).expect("compacted json");
            assert_eq!(before, after, "{text}");
            assert_eq!(compacted, before.to_string(), "{text}");
        }
        assert_eq!(object_or_null(None), Ok(None));
        assert_eq!(object_or_null(Some(raw("null"))), Ok(None));
        assert_eq!(
            object_or_null(Some(raw(r#"{"a":1}"#))),
            Ok(Some(r#"{"a":1}"#))
        );
        assert_eq!(object_or_null(Some(raw("[1]"))), Err(Kind::Array));
        assert!(is_empty_object(" { } "));
        assert!(!is_empty_object(r#"{"a":1}"#));
    }
}
