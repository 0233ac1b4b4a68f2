//! Refresh policies: when a tag is due.
//!
//! `hourly` and `daily` are due when the last computation is at least an hour (a day) old.
//! `cron "m h dom mon dow"` follows the five classic fields in the workspace time zone, each `*`,
//! a number, a range `a-b`, a list `a,b` or a step `*/n` (`a-b/n`); a tag is due when a matching
//! minute has passed since its last computation.

use chrono::{Datelike, TimeZone, Timelike};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    fields: [Vec<bool>; 5],
}

const RANGES: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];
const NAMES: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

impl Cron {
    /// Parses `"0 3 * * *"`; the error names the field.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "cron {text:?}: expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                parts.len()
            ));
        }
        let mut fields: [Vec<bool>; 5] = Default::default();
        for (i, part) in parts.iter().enumerate() {
            let (lo, hi) = RANGES[i];
            let mut set = vec![false; hi as usize + 1];
            for item in part.split(',') {
                let bad = || format!("cron {text:?}: bad {} field {item:?}", NAMES[i]);
                let (range, step) = match item.split_once('/') {
                    Some((r, s)) => (r, s.parse::<u32>().map_err(|_| bad())?),
                    None => (item, 1),
                };
                if step == 0 {
                    return Err(bad());
                }
                let (a, b) = if range == "*" {
                    (lo, hi)
                } else if let Some((a, b)) = range.split_once('-') {
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)
                } else {
                    let v: u32 = range.parse().map_err(|_| bad())?;
                    (v, if item.contains('/') { hi } else { v })
                };
                if a < lo || b > hi || a > b {
                    return Err(format!("{}: allowed {lo}-{hi}", bad()));
                }
                let mut v = a;
                while v <= b {
                    set[v as usize] = true;
                    v += step;
                }
            }
            fields[i] = set;
        }
        Ok(Cron { fields })
    }

    /// True when the local minute containing `ms` matches.
    pub fn matches(&self, ms: i64, tz: chrono_tz::Tz) -> bool {
        let Some(t) = tz.timestamp_millis_opt(ms).single() else {
            return false;
        };
        let vals = [
            t.minute(),
            t.hour(),
            t.day(),
            t.month(),
            t.weekday().num_days_from_sunday(),
        ];
        vals.iter()
            .zip(&self.fields)
            .all(|(v, set)| set.get(*v as usize).copied().unwrap_or(false))
    }

    /// True when some minute in `(after, now]` matches (scans at most 8 days of minutes).
    pub fn fired_between(&self, after: i64, now: i64, tz: chrono_tz::Tz) -> bool {
        const MINUTE: i64 = 60_000;
        let start = (after.div_euclid(MINUTE) + 1) * MINUTE;
        let start = start.max(now - 8 * 24 * 60 * MINUTE);
        let mut t = start;
        while t <= now {
            if self.matches(t, tz) {
                return true;
            }
            t += MINUTE;
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn daily_at_three_in_shanghai() {
        let c = Cron::parse("0 3 * * *").unwrap();
        assert!(c.matches(ms("2024-06-01T03:00:00+08:00"), TZ));
        assert!(!c.matches(ms("2024-06-01T03:00:00Z"), TZ));
        assert!(c.fired_between(
            ms("2024-06-01T02:00:00+08:00"),
            ms("2024-06-01T03:00:30+08:00"),
            TZ
        ));
        assert!(!c.fired_between(
            ms("2024-06-01T03:00:30+08:00"),
            ms("2024-06-02T02:59:00+08:00"),
            TZ
        ));
    }

    #[test]
    fn steps_lists_ranges_and_errors() {
        let c = Cron::parse("*/15 9-18 * * 1-5").unwrap();
        assert!(c.matches(ms("2024-06-03T09:45:00+08:00"), TZ)); // Monday
        assert!(!c.matches(ms("2024-06-02T09:45:00+08:00"), TZ)); // Sunday
        assert!(!c.matches(ms("2024-06-03T09:50:00+08:00"), TZ));
        assert!(Cron::parse("0 3 * *").unwrap_err().contains("5 fields"));
        assert!(Cron::parse("0 25 * * *").unwrap_err().contains("hour"));
        assert!(Cron::parse("*/0 * * * *").is_err());
    }
}
