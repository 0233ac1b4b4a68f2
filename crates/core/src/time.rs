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
///
/// Years 1970–9999 are formatted by arithmetic (this is on hot paths: the change stream,
/// exports, timelines); other instants go through chrono.
pub fn format_iso(ms: Millis) -> String {
    const END: Millis = 253_402_300_800_000; // 10000-01-01T00:00:00Z
    if (0..END).contains(&ms) {
        let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
        let rem = ms.rem_euclid(86_400_000);
        // Digits written in place: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let fields: [(usize, usize, i64); 7] = [
            (0, 4, y),
            (5, 2, m),
            (8, 2, d),
            (11, 2, rem / 3_600_000),
            (14, 2, rem / 60_000 % 60),
            (17, 2, rem / 1000 % 60),
            (20, 3, rem % 1000),
        ];
        for (at, width, mut v) in fields {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        return text.iter().map(|&b| char::from(b)).collect();
    }
    match Utc.timestamp_millis_opt(ms).single() {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn arithmetic_formatting_agrees_with_chrono() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut cases = vec![0, 1, 86_399_999, 951_782_400_000, 253_402_300_799_999];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push((x % 253_402_300_800_000) as i64);
        }
        for ms in cases {
            let want = Utc
                .timestamp_millis_opt(ms)
                .single()
                .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true));
            assert_eq!(Some(format_iso(ms)), want, "{ms}");
        }
        assert_eq!(format_iso(-1), "1969-12-31T23:59:59.999Z");
    }
}
