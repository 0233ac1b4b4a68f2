//! Runtime values of the tag language.

use std::sync::Arc;

/// The static type of an expression. Every type admits null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// `true` / `false`. Boolean expressions are never null (see the null rules in the crate docs).
    Bool,
    /// A 64-bit float (counts, sums, scores, days).
    Number,
    /// UTF-8 text.
    Str,
    /// An instant, milliseconds since the Unix epoch (UTC).
    Time,
    /// The type of the literal `null` before it meets another type.
    Null,
}

/// A value at run time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// Missing: no matching events for `avg`/`min`/`max`/`first`/`last`, an absent trait, …
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(Arc<str>),
    /// An instant in milliseconds since the Unix epoch.
    Time(i64),
}

impl Value {
    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The number inside, if any.
    pub fn as_num(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean inside; null and every non-boolean are false.
    pub fn truthy(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    /// The string inside, if any.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts a JSON value (a trait or an event property) to a value: numbers, strings and
    /// booleans map to themselves; null, arrays and objects are null.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => n.as_f64().map_or(Value::Null, Value::Num),
            serde_json::Value::String(s) => Value::Str(Arc::from(s.as_str())),
            _ => Value::Null,
        }
    }
}

impl std::fmt::Display for Value {
    /// `null`, `true`, numbers without a trailing `.0` when integral, strings JSON-quoted,
    /// instants in RFC 3339 UTC (with milliseconds only when non-zero).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Num(n) => f.write_str(&format_number(*n)),
            Value::Str(s) => {
                let quoted = serde_json::to_string(s.as_ref()).map_err(|_| std::fmt::Error)?;
                f.write_str(&quoted)
            }
            Value::Time(ms) => f.write_str(&format_time(*ms)),
        }
    }
}

/// A number as text: integral values up to 2^53 without a fractional part, others in the
/// shortest form that reads back to the same float.
pub fn format_number(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// An instant in RFC 3339 UTC (`2024-06-30T16:00:00Z`, `…:00.250Z` when ms are non-zero).
pub fn format_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(d) if ms.rem_euclid(1000) == 0 => d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("@{ms}ms"),
    }
}
