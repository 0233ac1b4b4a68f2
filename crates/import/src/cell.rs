//! One cell of a row, whatever the file format, and its conversion to typed values.

use std::borrow::Cow;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use portrait_core::time::{format_iso, Millis};
use serde_json::{Number, Value};

use crate::mapping::{TimestampFormat, ValueType};

/// A cell value. CSV cells are always [`Cell::Text`]; JSON lines give text, numbers, booleans
/// and nested values; Parquet adds instants and zone-less date-times.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// Missing, empty or null.
    Null,
    /// Text.
    Text(String),
    /// A JSON number, boolean, object or array (never a string or null).
    Json(Value),
    /// An instant (a time-zone-aware timestamp).
    Instant(Millis),
    /// A date-time without a zone, read in the mapping's time zone.
    Local(NaiveDateTime),
}

impl Cell {
    /// A cell from a JSON value.
    pub(crate) fn from_json(value: Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::String(s) => Self::Text(s),
            other => Self::Json(other),
        }
    }

    /// The cell as JSON, for nested Parquet values and reject lines.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Json(v) => v.clone(),
            _ => self
                .text()
                .map(|t| Value::String(t.into_owned()))
                .unwrap_or(Value::Null),
        }
    }

    /// The cell as text; `None` when it is null or blank.
    pub(crate) fn text(&self) -> Option<Cow<'_, str>> {
        let text: Cow<'_, str> = match self {
            Self::Null => return None,
            Self::Text(s) => Cow::Borrowed(s),
            Self::Json(Value::String(s)) => Cow::Borrowed(s),
            Self::Json(v) => Cow::Owned(v.to_string()),
            Self::Instant(ms) => Cow::Owned(format_iso(*ms)),
            Self::Local(t) => Cow::Owned(t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
        };
        (!text.trim().is_empty()).then_some(text)
    }

    /// Whether the cell holds a nested value (object or array).
    pub(crate) fn is_nested(&self) -> bool {
        matches!(self, Self::Json(Value::Object(_) | Value::Array(_)))
    }

    /// Converts to a declared type. `Ok(None)` for an empty cell (the field is omitted);
    /// `Err` describes the value that does not convert.
    pub(crate) fn typed(&self, ty: ValueType) -> Result<Option<Value>, String> {
        let Some(text) = self.text() else {
            return Ok(None);
        };
        let refuse = || Err(format!("`{}` is not {}", short(&text), article(ty)));
        let value = match (ty, self) {
            (ValueType::String, _) => Value::String(text.into_owned()),
            (ValueType::Json, Self::Json(v)) => v.clone(),
            (ValueType::Json, _) => match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) => return refuse(),
            },
            (ValueType::Integer, Self::Json(Value::Number(n))) => match integer_of(n) {
                Some(i) => Value::from(i),
                None => return refuse(),
            },
            (ValueType::Integer, Self::Text(_)) => match text.trim().parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(_) => return refuse(),
            },
            (ValueType::Decimal, Self::Json(Value::Number(n))) => Value::Number(n.clone()),
            (ValueType::Decimal, Self::Text(_)) => match decimal(text.trim()) {
                Some(n) => Value::Number(n),
                None => return refuse(),
            },
            (ValueType::Boolean, Self::Json(Value::Bool(b))) => Value::Bool(*b),
            (ValueType::Boolean, Self::Json(Value::Number(_)) | Self::Text(_)) => {
                match boolean(text.trim()) {
                    Some(b) => Value::Bool(b),
                    None => return refuse(),
                }
            }
            _ => return refuse(),
        };
        Ok(Some(value))
    }

    /// Reads the cell as an instant.
    pub(crate) fn timestamp(&self, format: &TimestampFormat, tz: Tz) -> Result<Millis, String> {
        match self {
            Self::Instant(ms) => return Ok(*ms),
            Self::Local(t) => return localize(tz, *t),
            _ => {}
        }
        let Some(text) = self.text() else {
            return Err("is empty".into());
        };
        let text = text.trim();
        let parsed = match format {
            TimestampFormat::Iso => iso(text, tz),
            TimestampFormat::EpochS => epoch(text, 1000.0),
            TimestampFormat::EpochMs => epoch(text, 1.0),
            TimestampFormat::Pattern(p) => pattern(text, p, tz),
        };
        parsed
            .ok_or_else(|| {
                let expected = match format {
                    TimestampFormat::Iso => "an ISO-8601 time (RFC 3339 or YYYY-MM-DD HH:MM:SS)",
                    TimestampFormat::EpochS => "epoch seconds",
                    TimestampFormat::EpochMs => "epoch milliseconds",
                    TimestampFormat::Pattern(p) => p.as_str(),
                };
                format!("`{}` does not match {expected}", short(text))
            })
            .and_then(|r| r)
    }
}

fn article(ty: ValueType) -> &'static str {
    match ty {
        ValueType::String => "a string",
        ValueType::Integer => "an integer",
        ValueType::Decimal => "a decimal number",
        ValueType::Boolean => "a boolean (true/false/1/0/是/否/yes/no)",
        ValueType::Json => "valid JSON",
    }
}

/// Cuts long values in messages.
fn short(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(60) {
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
        None => Cow::Borrowed(text),
    }
}

fn integer_of(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // Whole floats within i64 range (JSON writers sometimes emit `3.0`).
    (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
}

fn decimal(text: &str) -> Option<Number> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Number::from(i));
    }
    // Refuse Rust-only spellings (`inf`, `NaN`) that `f64::from_str` accepts.
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    let f = text
        .parse::<f64>()
        .ok()
        .filter(|f| plain && f.is_finite())?;
    Number::from_f64(f)
}

fn boolean(text: &str) -> Option<bool> {
    Some(match text.to_lowercase().as_str() {
        "true" | "1" | "是" | "yes" => true,
        "false" | "0" | "否" | "no" => false,
        _ => return None,
    })
}

/// `Some(Ok)` parsed, `Some(Err)` parsed but invalid (clock change gap), `None` no match.
type Parsed = Option<Result<Millis, String>>;

fn localize(tz: Tz, t: NaiveDateTime) -> Result<Millis, String> {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(dt) => Ok(dt.timestamp_millis()),
        LocalResult::Ambiguous(earliest, _) => Ok(earliest.timestamp_millis()),
        LocalResult::None => Err(format!("{t} does not exist in {tz} (clock change)")),
    }
}

fn iso(text: &str, tz: Tz) -> Parsed {
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(Ok(dt.timestamp_millis()));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(text, fmt) {
            return Some(Ok(dt.timestamp_millis()));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(localize(tz, t));
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(localize(tz, date.and_time(chrono::NaiveTime::MIN)))
}

fn pattern(text: &str, pattern: &str, tz: Tz) -> Parsed {
    if let Ok(dt) = DateTime::parse_from_str(text, pattern) {
        return Some(Ok(dt.timestamp_millis()));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, pattern) {
        return Some(localize(tz, t));
    }
    let date = NaiveDate::parse_from_str(text, pattern).ok()?;
    Some(localize(tz, date.and_time(chrono::NaiveTime::MIN)))
}

fn epoch(text: &str, ms_per_unit: f64) -> Parsed {
    const LIMIT: f64 = 1.0e16; // ms: far beyond year 9999, well inside i64
    if let Ok(i) = text.parse::<i64>() {
        let ms = (i as f64) * ms_per_unit;
        if ms.abs() < LIMIT {
            return Some(Ok(i.saturating_mul(ms_per_unit as i64)));
        }
        return Some(Err(format!("`{text}` is out of range")));
    }
    let f = decimal(text)?.as_f64()?;
    let ms = f * ms_per_unit;
    if ms.abs() >= LIMIT {
        return Some(Err(format!("`{text}` is out of range")));
    }
    Some(Ok(ms.round() as Millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    #[test]
    fn types_convert_or_explain() {
        assert_eq!(
            text("42").typed(ValueType::Integer),
            Ok(Some(Value::from(42)))
        );
        assert_eq!(
            text(" 19.9 ").typed(ValueType::Decimal),
            Ok(Some(serde_json::json!(19.9)))
        );
        assert_eq!(
            text("是").typed(ValueType::Boolean),
            Ok(Some(Value::Bool(true)))
        );
        assert_eq!(
            text("NO").typed(ValueType::Boolean),
            Ok(Some(Value::Bool(false)))
        );
        assert_eq!(text("").typed(ValueType::Integer), Ok(None));
        assert_eq!(Cell::Null.typed(ValueType::String), Ok(None));
        assert_eq!(
            text("[1,2]").typed(ValueType::Json),
            Ok(Some(serde_json::json!([1, 2])))
        );
        assert_eq!(
            Cell::Json(serde_json::json!(3.0)).typed(ValueType::Integer),
            Ok(Some(Value::from(3)))
        );
        assert_eq!(
            Cell::Json(serde_json::json!(7)).typed(ValueType::String),
            Ok(Some(Value::from("7")))
        );
        assert_eq!(
            text("abc").typed(ValueType::Integer),
            Err("`abc` is not an integer".to_string())
        );
        assert!(text("inf").typed(ValueType::Decimal).is_err());
        assert!(text("maybe").typed(ValueType::Boolean).is_err());
        assert!(text("{oops").typed(ValueType::Json).is_err());
    }

    #[test]
    fn timestamps_in_every_format() {
        let utc0 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
        let iso_fmt = TimestampFormat::Iso;
        assert_eq!(
            text("2024-01-01 08:00:00").timestamp(&iso_fmt, SH),
            Ok(utc0)
        );
        assert_eq!(
            text("2024-01-01T08:00:00+08:00").timestamp(&iso_fmt, SH),
            Ok(utc0)
        );
        assert_eq!(
            text("2024-01-01T00:00:00Z").timestamp(&iso_fmt, SH),
            Ok(utc0)
        );
        assert_eq!(
            text("2024-01-01T08:00:00.000").timestamp(&iso_fmt, SH),
            Ok(utc0)
        );
        assert_eq!(
            text("2024-01-01").timestamp(&iso_fmt, chrono_tz::UTC),
            Ok(utc0)
        );
        assert_eq!(
            text("1704067200").timestamp(&TimestampFormat::EpochS, SH),
            Ok(utc0)
        );
        assert_eq!(
            Cell::Json(serde_json::json!(1_704_067_200_000_i64))
                .timestamp(&TimestampFormat::EpochMs, SH),
            Ok(utc0)
        );
        let slash = TimestampFormat::Pattern("%Y/%m/%d %H:%M".into());
        assert_eq!(text("2024/01/01 08:00").timestamp(&slash, SH), Ok(utc0));
        let day = TimestampFormat::Pattern("%Y%m%d".into());
        assert_eq!(text("20240101").timestamp(&day, chrono_tz::UTC), Ok(utc0));
        assert_eq!(Cell::Instant(utc0).timestamp(&slash, SH), Ok(utc0));
        let err = text("yesterday")
            .timestamp(&iso_fmt, SH)
            .expect_err("not a time");
        assert!(err.contains("`yesterday` does not match"), "{err}");
        assert_eq!(Cell::Null.timestamp(&iso_fmt, SH), Err("is empty".into()));
        assert!(text("99999999999999999")
            .timestamp(&TimestampFormat::EpochS, SH)
            .is_err());
    }

    #[test]
    fn clock_change_gap_is_refused() {
        let ny: Tz = chrono_tz::America::New_York;
        let err = text("2024-03-10 02:30:00").timestamp(&TimestampFormat::Iso, ny);
        assert!(err.expect_err("gap").contains("does not exist"));
    }
}
