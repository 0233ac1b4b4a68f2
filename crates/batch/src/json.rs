//! A small allocation-free reader of JSON object text: finds the raw value at a path and
//! converts it with the tag language's rules. Shared by the kernel and the DataFusion UDFs, so
//! both back ends convert properties identically.
//!
//! Conversions follow `portrait_tags::eval::convert_json` (the reference evaluator's rules):
//! Number is decoded here without allocating (a JSON number, or a string that
//! `portrait_tags::eval::parse_decimal` accepts); the other types parse the one raw value with
//! serde_json and call `convert_json`. Invalid JSON text reads as an empty object.

use std::borrow::Cow;
use std::sync::Arc;

use portrait_tags::eval::{convert_json, parse_decimal};
use portrait_tags::value::{Type, Value};

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `b[i] == b'"'`; returns the index after the closing quote and whether an escape occurred.
fn scan_string(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    i += 1;
    let mut esc = false;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((i + 1, esc)),
            b'\\' => {
                esc = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// Index after the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => scan_string(b, i).map(|(e, _)| e),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = scan_string(b, j)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// One member of an object: the raw key (inside the quotes, maybe with escapes) and raw value.
#[derive(Debug, Clone, Copy)]
struct Member<'a> {
    key: &'a str,
    escaped: bool,
    value: &'a str,
}

impl Member<'_> {
    fn key_is(&self, want: &str) -> bool {
        if !self.escaped {
            return self.key == want;
        }
        let quoted = format!("\"{}\"", self.key);
        serde_json::from_str::<String>(&quoted).is_ok_and(|k| k == want)
    }
}

/// Splits object text into members; false (and `out` cleared) when `text` is not an object.
fn split_into<'a>(text: &'a str, out: &mut Vec<Member<'a>>) -> bool {
    out.clear();
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return false;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return true;
    }
    loop {
        if b.get(i) != Some(&b'"') {
            out.clear();
            return false;
        }
        let Some((kend, escaped)) = scan_string(b, i) else {
            out.clear();
            return false;
        };
        let key = &text[i + 1..kend - 1];
        i = skip_ws(b, kend);
        if b.get(i) != Some(&b':') {
            out.clear();
            return false;
        }
        i = skip_ws(b, i + 1);
        let Some(vend) = skip_value(b, i) else {
            out.clear();
            return false;
        };
        out.push(Member {
            key,
            escaped,
            value: &text[i..vend],
        });
        i = skip_ws(b, vend);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return true,
            _ => {
                out.clear();
                return false;
            }
        }
    }
}

/// The members of one JSON object, split once and looked up many times (one per row in the
/// kernel, shared by every slot that reads a property of the row).
#[derive(Debug, Default)]
pub struct JsonObject<'a> {
    members: Vec<Member<'a>>,
}

impl<'a> JsonObject<'a> {
    /// An empty object.
    pub fn new() -> Self {
        JsonObject {
            members: Vec::new(),
        }
    }

    /// Replaces the content with the members of `text` (empty when it is not an object).
    pub fn parse(&mut self, text: &'a str) {
        split_into(text, &mut self.members);
    }

    /// The raw JSON text of the value at `path` (the last duplicate key wins), if any.
    pub fn get(&self, path: &[String]) -> Option<&'a str> {
        let (first, rest) = path.split_first()?;
        let mut raw = self.members.iter().rev().find(|m| m.key_is(first))?.value;
        let mut scratch = Vec::new();
        for seg in rest {
            if !split_into(raw, &mut scratch) {
                return None;
            }
            raw = scratch.iter().rev().find(|m| m.key_is(seg))?.value;
        }
        Some(raw)
    }
}

/// The raw value at `path` in object text `text`.
pub fn lookup<'a>(text: &'a str, path: &[String]) -> Option<&'a str> {
    let mut obj = JsonObject::new();
    obj.parse(text);
    obj.get(path)
}

/// Decodes a raw JSON string value (with quotes).
fn decode_string(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.starts_with('"') || raw.len() < 2 {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

fn is_number(raw: &str) -> bool {
    raw.as_bytes()
        .first()
        .is_some_and(|c| *c == b'-' || c.is_ascii_digit())
}

/// A raw value as a Number (the hot path: no allocation unless the string has escapes).
pub fn to_num(raw: &str) -> Option<f64> {
    if raw.starts_with('"') {
        return parse_decimal(&decode_string(raw)?);
    }
    if is_number(raw) {
        return raw.parse::<f64>().ok().filter(|x| x.is_finite());
    }
    None
}

/// A raw value converted to `ty` by `portrait_tags::eval::convert_json`'s rules.
pub fn convert(raw: &str, ty: Type) -> Value {
    if ty == Type::Number {
        return to_num(raw).map_or(Value::Null, Value::Num);
    }
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) => convert_json(Some(&v), ty),
        Err(_) => Value::Null,
    }
}

/// A raw value as a Str.
pub fn to_str(raw: &str) -> Option<Arc<str>> {
    match convert(raw, Type::Str) {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// A raw value as a Bool.
pub fn to_bool(raw: &str) -> Option<bool> {
    match convert(raw, Type::Bool) {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}

/// A raw value as an instant (epoch ms).
pub fn to_time(raw: &str) -> Option<i64> {
    match convert(raw, Type::Time) {
        Value::Time(t) => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn lookup_and_convert() {
        let t = r#"{"a": 1.5, "b": "2", "c": {"d": "x\"y", "e": [1, {"f": 2}]}, "g": true, "h": null, "b": "3"}"#;
        assert_eq!(lookup(t, &p("a")).and_then(to_num), Some(1.5));
        assert_eq!(lookup(t, &p("b")).and_then(to_num), Some(3.0));
        assert_eq!(
            lookup(t, &p("c.d")).and_then(to_str).as_deref(),
            Some("x\"y")
        );
        assert_eq!(lookup(t, &p("c.e")), Some(r#"[1, {"f": 2}]"#));
        assert_eq!(lookup(t, &p("a")).and_then(to_str).as_deref(), Some("1.5"));
        assert_eq!(lookup(t, &p("g")).and_then(to_bool), Some(true));
        assert_eq!(
            lookup(r#"{"a": " 12 "}"#, &p("a")).and_then(to_num),
            Some(12.0)
        );
        assert_eq!(
            lookup(r#"{"a": 1.50}"#, &p("a"))
                .and_then(to_str)
                .as_deref(),
            Some("1.5")
        );
        assert_eq!(lookup(t, &p("h")).and_then(to_num), None);
        assert_eq!(lookup(t, &p("c")).and_then(to_num), None);
        assert_eq!(lookup(t, &p("zz")), None);
        assert_eq!(lookup("not json", &p("a")), None);
        assert_eq!(lookup(r#"{"a": "inf"}"#, &p("a")).and_then(to_num), None);
        assert_eq!(
            lookup(r#"{"k\u0065y": 7}"#, &p("key")).and_then(to_num),
            Some(7.0)
        );
        assert_eq!(
            lookup(r#"{"t": "2024-01-01T00:00:00Z"}"#, &p("t")).and_then(to_time),
            Some(1_704_067_200_000)
        );
    }
}
