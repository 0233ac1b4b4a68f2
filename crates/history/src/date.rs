//! Dates of snapshots: `YYYY-MM-DD` in the workspace time zone (Asia/Shanghai). A snapshot of
//! date `d` holds the values as of the end of `d` (23:59:59.999 local time).

use chrono::{Datelike, Duration, NaiveDate, TimeZone};

use crate::error::HistoryError;

/// A snapshot date.
pub type Day = NaiveDate;

/// The text form `YYYY-MM-DD`.
pub fn format_day(d: Day) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Option<Day> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// The local (Asia/Shanghai) date of an instant (ms).
pub fn day_of(ms: i64) -> Day {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.with_timezone(&portrait_lake::TIME_ZONE).date_naive(),
        None => NaiveDate::MIN,
    }
}

/// The instant (ms) a snapshot of `d` is computed at: the last millisecond of `d` in
/// Asia/Shanghai.
pub fn end_of_day(d: Day) -> i64 {
    let next = d.succ_opt().unwrap_or(d);
    let start = next.and_hms_opt(0, 0, 0).unwrap_or_default();
    match portrait_lake::TIME_ZONE
        .from_local_datetime(&start)
        .earliest()
    {
        Some(t) => t.timestamp_millis() - 1,
        // Shanghai has no DST gaps today; fall back to UTC+8 arithmetic.
        None => start.and_utc().timestamp_millis() - 8 * 3_600_000 - 1,
    }
}

/// A date or an RFC 3339 instant (`2024-06-30`, `2024-06-30T16:00:00Z`) → its local date.
pub fn parse_date_or_instant(text: &str) -> Result<Day, HistoryError> {
    if let Some(d) = parse_day(text) {
        return Ok(d);
    }
    if let Some(ms) = portrait_core::time::parse_iso(text.trim()) {
        return Ok(day_of(ms));
    }
    Err(HistoryError::Invalid(format!(
        "{text:?}: expected a date (2024-06-30) or an RFC 3339 instant (2024-06-30T16:00:00Z)"
    )))
}

/// How often a backfill takes a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// Every day (`1d`).
    Day,
    /// Every week (`1w`): `from`, `from + 7`, …
    Week,
    /// Every month (`1mo`): the same day of each month (clamped to the month's last day).
    Month,
}

impl std::str::FromStr for Every {
    type Err = HistoryError;

    fn from_str(s: &str) -> Result<Every, HistoryError> {
        match s.trim() {
            "1d" | "d" | "day" | "daily" => Ok(Every::Day),
            "1w" | "w" | "week" | "weekly" => Ok(Every::Week),
            "1mo" | "mo" | "month" | "monthly" => Ok(Every::Month),
            other => Err(HistoryError::Invalid(format!(
                "every {other:?}: one of 1d, 1w, 1mo"
            ))),
        }
    }
}

/// The dates from `from` to `to` (both included when on the grid) every `every`.
pub fn dates(from: Day, to: Day, every: Every) -> Result<Vec<Day>, HistoryError> {
    if to < from {
        return Err(HistoryError::Invalid(format!(
            "the range ends ({}) before it starts ({})",
            format_day(to),
            format_day(from)
        )));
    }
    let mut out = Vec::new();
    let mut i: u32 = 0;
    loop {
        let d = match every {
            Every::Day => from + Duration::days(i64::from(i)),
            Every::Week => from + Duration::days(7 * i64::from(i)),
            Every::Month => add_months(from, i),
        };
        if d > to {
            break;
        }
        out.push(d);
        i += 1;
        if out.len() > 100_000 {
            return Err(HistoryError::Invalid("more than 100000 dates".into()));
        }
    }
    Ok(out)
}

fn add_months(d: Day, n: u32) -> Day {
    let months = d.year() * 12 + d.month0() as i32 + n as i32;
    let (y, m0) = (months.div_euclid(12), months.rem_euclid(12) as u32);
    let mut day = d.day();
    loop {
        if let Some(x) = NaiveDate::from_ymd_opt(y, m0 + 1, day) {
            return x;
        }
        if day <= 28 {
            return d;
        }
        day -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Day {
        parse_day(s).unwrap()
    }

    #[test]
    fn end_of_day_is_shanghai() {
        // 2024-06-30 23:59:59.999 +08:00 = 2024-06-30T15:59:59.999Z
        assert_eq!(
            portrait_core::time::format_iso(end_of_day(d("2024-06-30"))),
            "2024-06-30T15:59:59.999Z"
        );
        assert_eq!(day_of(end_of_day(d("2024-06-30"))), d("2024-06-30"));
        assert_eq!(day_of(end_of_day(d("2024-06-30")) + 1), d("2024-07-01"));
        assert_eq!(
            parse_date_or_instant("2024-06-30T16:00:00Z").unwrap(),
            d("2024-07-01")
        );
        assert!(parse_date_or_instant("yesterday").is_err());
    }

    #[test]
    fn grids() {
        let w = dates(d("2024-01-01"), d("2024-01-22"), Every::Week).unwrap();
        assert_eq!(
            w,
            vec![
                d("2024-01-01"),
                d("2024-01-08"),
                d("2024-01-15"),
                d("2024-01-22")
            ]
        );
        let m = dates(d("2024-01-31"), d("2024-04-30"), Every::Month).unwrap();
        assert_eq!(
            m,
            vec![
                d("2024-01-31"),
                d("2024-02-29"),
                d("2024-03-31"),
                d("2024-04-30")
            ]
        );
        assert_eq!(
            dates(d("2024-01-01"), d("2024-01-03"), Every::Day)
                .unwrap()
                .len(),
            3
        );
        assert!(dates(d("2024-01-02"), d("2024-01-01"), Every::Day).is_err());
        assert_eq!("1mo".parse::<Every>().unwrap(), Every::Month);
        assert!("2d".parse::<Every>().is_err());
    }
}
