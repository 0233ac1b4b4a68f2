//! Instants are milliseconds since the Unix epoch, UTC, as `i64`.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// Parses an ISO-8601 / RFC 3339 timestamp as Segment clients send it.
///
/// Accepts an offset (`Z`, `+08:00`) or none (read as UTC), with or without fractional seconds,
/// and a `T` or a space between date and time. Returns `None` when the text is not a timestamp.
pub fn parse_iso(text: &str) -> Option<Millis> {
    let text = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(text, fmt) {
            return Some(dt.timestamp_millis());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(Utc.from_utc_datetime(&dt).timestamp_millis());
        }
    }
    None
}

/// Formats an instant as RFC 3339 with milliseconds, UTC (`2024-01-01T00:00:00.000Z`).
pub fn format_iso(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// The current instant.
pub fn now() -> Millis {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_shapes() {
        let z = parse_iso("2024-01-01T00:00:00.000Z");
        assert_eq!(z, Some(1_704_067_200_000));
        assert_eq!(parse_iso("2024-01-01T08:00:00+08:00"), z);
        assert_eq!(parse_iso("2024-01-01 00:00:00"), z);
        assert_eq!(parse_iso("2024-01-01T00:00:00"), z);
        assert_eq!(parse_iso("yesterday"), None);
        assert_eq!(format_iso(1_704_067_200_000), "2024-01-01T00:00:00.000Z");
    }
}
