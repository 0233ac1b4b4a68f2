//! Windows as instant intervals, and the date partitions they need.
//!
//! Every window of the IR is an interval `lo < ts ≤ hi` of instants (ms): a calendar window's
//! first local date starts at one instant, because an instant's local date never decreases
//! as time goes on. So both back ends test windows with two integer compares.

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use portrait_tags::ir::Window;

const DAY_MS: i64 = 86_400_000;

/// The instant interval `(lo, hi]` of `window` at `as_of` in zone `tz`. `lo == i64::MIN`
/// means unbounded. An empty window gives `lo ≥ hi`.
pub fn bounds(window: Window, as_of_ms: i64, tz: Tz) -> (i64, i64) {
    match window {
        Window::All => (i64::MIN, as_of_ms),
        Window::Rolling { ms } => (as_of_ms.saturating_sub(ms), as_of_ms),
        Window::Ago { from_ms, to_ms } => (
            as_of_ms.saturating_sub(from_ms),
            as_of_ms.saturating_sub(to_ms),
        ),
        Window::Calendar { days } => {
            let Some(today) = local_date(as_of_ms, tz) else {
                return (i64::MIN, as_of_ms);
            };
            let back = i64::from(days.max(1)) - 1;
            match today
                .checked_sub_days(chrono::Days::new(back.unsigned_abs()))
                .and_then(|d| first_instant(d, tz))
            {
                Some(start) => (start.saturating_sub(1), as_of_ms),
                None => (i64::MIN, as_of_ms),
            }
        }
    }
}

/// The local date of an instant in `tz`.
pub fn local_date(ms: i64, tz: Tz) -> Option<NaiveDate> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.with_timezone(&tz).date_naive())
}

/// The first instant whose local date in `tz` is `date` or later.
pub fn first_instant(date: NaiveDate, tz: Tz) -> Option<i64> {
    // Midnight as if UTC, then search ±2 days for the first instant with a local date ≥ date
    // (robust to offsets, daylight saving and midnight gaps).
    let guess = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    let (mut lo, mut hi) = (guess - 2 * DAY_MS, guess + 2 * DAY_MS);
    if local_date(lo, tz)? >= date || local_date(hi, tz)? < date {
        return None;
    }
    // Invariant: local_date(lo) < date ≤ local_date(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_date(mid, tz)? >= date {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Lake partition days (Asia/Shanghai, days since 1970-01-01, as `portrait_lake::local_day`)
/// that can hold an event with `lo < ts ≤ hi`: `(first, last)` inclusive, `i64::MIN` for an
/// open start; `None` when the window is empty.
pub fn partition_days(lo: i64, hi: i64) -> Option<(i64, i64)> {
    if lo >= hi {
        return None;
    }
    let last = portrait_lake::local_day(hi)?;
    let first = if lo == i64::MIN {
        i64::MIN
    } else {
        portrait_lake::local_day(lo + 1).unwrap_or(i64::MIN)
    };
    Some((first, last))
}

/// Merges day ranges into a sorted list of disjoint ranges.
pub fn union_days(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub fn day_string(day: i64) -> Option<String> {
    let d = NaiveDate::from_num_days_from_ce_opt(i32::try_from(day + 719_163).ok()?)?;
    Some(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
}

/// Day number of `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(i64::from(d.num_days_from_ce()) - 719_163)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_window_starts_at_local_midnight() {
        // 2024-06-08T10:00:00+08:00
        let as_of = 1_717_812_000_000;
        let (lo, hi) = bounds(
            Window::Calendar { days: 7 },
            as_of,
            chrono_tz::Asia::Shanghai,
        );
        // 2024-06-02T00:00:00+08:00 = 2024-06-01T16:00:00Z
        assert_eq!(lo + 1, 1_717_257_600_000);
        assert_eq!(hi, as_of);
        assert_eq!(
            partition_days(lo, hi).map(|(a, b)| (day_string(a), day_string(b))),
            Some((Some("2024-06-02".into()), Some("2024-06-08".into())))
        );
    }

    #[test]
    fn unions() {
        assert_eq!(
            union_days(vec![(5, 9), (1, 3), (4, 4), (20, 30)]),
            vec![(1, 9), (20, 30)]
        );
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(day_string(1).as_deref(), Some("1970-01-02"));
    }
}
