//! Per-profile aggregate state: what one event changes and what a value is at an instant.
//!
//! An aggregate over all time folds events into a constant-size state (a count, a sum, the
//! best value with its `(timestamp, offset)`, or a bag of values with counts). An aggregate
//! over a window keeps the matching events still inside (or yet to enter) the window as
//! entries sorted by `(timestamp, offset)` and folds them when read; entries that can never be
//! in the window again are pruned. Both give exactly the batch value for any `as_of` at or
//! after the engine's clock, whatever order the events arrived in.

use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{Days, TimeZone};
use chrono_tz::Tz;
use portrait_tags::eval::{compare_values, in_window, local_date};
use portrait_tags::ir::{AggFunc, Window};
use portrait_tags::value::Value;
use serde::{Deserialize, Serialize};

/// One matching event of a windowed aggregate (or of a not-yet-due event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Event time, ms.
    pub ts: i64,
    /// Log offset (orders equal timestamps).
    pub offset: u64,
    /// The aggregate's argument on this event (null for count and the time aggregates).
    pub arg: Value,
}

/// The state of one aggregate for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SlotState {
    /// `count` over all time.
    Count(u64),
    /// `sum` / `avg` over all time: the sum and how many values it holds.
    Sum(f64, u64),
    /// `min`, `max`, `first`, `last` and the time aggregates over all time: the best value
    /// and the event that gave it.
    Best(Value, i64, u64),
    /// `count_distinct` / `most_frequent` over all time: values and their counts.
    Bag(Vec<(Value, u64)>),
    /// Any aggregate over a window: the matching events, sorted by `(ts, offset)`.
    Entries(Vec<Entry>),
    /// `count`, `first(…)` and `last(…)` times over a window: only the matching events'
    /// `(ts, offset)`, sorted (16 bytes an event instead of 40).
    Times(Vec<(i64, u64)>),
}

/// An event kept in a window: what the window logic needs of it.
trait Timed {
    fn key(&self) -> (i64, u64);
}

impl Timed for Entry {
    fn key(&self) -> (i64, u64) {
        (self.ts, self.offset)
    }
}

impl Timed for (i64, u64) {
    fn key(&self) -> (i64, u64) {
        *self
    }
}

/// Inserts `e` in key order; false when an event with the same key is there.
fn insert_sorted<T: Timed>(v: &mut Vec<T>, e: T) -> bool {
    let key = e.key();
    let at = v.partition_point(|x| x.key() < key);
    if v.get(at).is_some_and(|x| x.key() == key) {
        return false;
    }
    v.insert(at, e);
    true
}

/// How an aggregate is kept (derived from the plan once).
#[derive(Debug, Clone, PartialEq)]
pub struct SlotSpec {
    /// The function.
    pub func: AggFunc,
    /// The window.
    pub window: Window,
}

impl SlotSpec {
    /// An empty state.
    pub fn empty(&self) -> SlotState {
        if self.window != Window::All {
            return match self.func {
                AggFunc::Count | AggFunc::FirstTime | AggFunc::LastTime => {
                    SlotState::Times(Vec::new())
                }
                _ => SlotState::Entries(Vec::new()),
            };
        }
        match self.func {
            AggFunc::Count => SlotState::Count(0),
            AggFunc::Sum | AggFunc::Avg => SlotState::Sum(0.0, 0),
            AggFunc::CountDistinct | AggFunc::MostFrequent => SlotState::Bag(Vec::new()),
            _ => SlotState::Best(Value::Null, i64::MIN, 0),
        }
    }

    /// Whether `arg` counts at all (every function but count and the time aggregates skips
    /// null arguments).
    fn takes(&self, arg: &Value) -> bool {
        matches!(
            self.func,
            AggFunc::Count | AggFunc::FirstTime | AggFunc::LastTime
        ) || !arg.is_null()
    }

    /// Folds one matching event into `st`. Returns whether the state changed.
    pub fn push(&self, st: &mut SlotState, e: Entry) -> bool {
        if !self.takes(&e.arg) {
            return false;
        }
        match st {
            SlotState::Entries(v) => insert_sorted(v, e),
            SlotState::Times(v) => insert_sorted(v, (e.ts, e.offset)),
            SlotState::Count(n) => {
                *n += 1;
                true
            }
            SlotState::Sum(s, n) => match e.arg.as_num() {
                Some(x) => {
                    *s += x;
                    *n += 1;
                    true
                }
                None => false,
            },
            SlotState::Best(v, ts, off) => {
                let arg = match self.func {
                    AggFunc::FirstTime | AggFunc::LastTime => Value::Time(e.ts),
                    _ => e.arg,
                };
                if better(self.func, (&arg, e.ts, e.offset), (v, *ts, *off)) {
                    *v = arg;
                    *ts = e.ts;
                    *off = e.offset;
                    true
                } else {
                    false
                }
            }
            SlotState::Bag(bag) => {
                match bag
                    .iter_mut()
                    .find(|(v, _)| compare_values(v, &e.arg) == Some(Ordering::Equal))
                {
                    Some((_, n)) => *n += 1,
                    None => bag.push((e.arg, 1)),
                }
                true
            }
        }
    }

    /// Combines `other` (another profile's state for the same aggregate) into `st`.
    pub fn merge(&self, st: &mut SlotState, other: SlotState) {
        match (st, other) {
            (SlotState::Entries(a), SlotState::Entries(b)) => {
                for e in b {
                    insert_sorted(a, e);
                }
            }
            (SlotState::Times(a), SlotState::Times(b)) => {
                for e in b {
                    insert_sorted(a, e);
                }
            }
            (SlotState::Count(a), SlotState::Count(b)) => *a += b,
            (SlotState::Sum(s, n), SlotState::Sum(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (SlotState::Best(v, ts, off), SlotState::Best(v2, ts2, off2)) => {
                if !v2.is_null() && better(self.func, (&v2, ts2, off2), (v, *ts, *off)) {
                    *v = v2;
                    *ts = ts2;
                    *off = off2;
                }
            }
            (SlotState::Bag(a), SlotState::Bag(b)) => {
                for (val, n) in b {
                    match a
                        .iter_mut()
                        .find(|(v, _)| compare_values(v, &val) == Some(Ordering::Equal))
                    {
                        Some((_, m)) => *m += n,
                        None => a.push((val, n)),
                    }
                }
            }
            (st, other) => *st = other,
        }
    }

    /// The aggregate's value at `now` (same semantics as the batch engines).
    pub fn value(&self, st: &SlotState, now: i64, tz: Tz) -> Value {
        match st {
            SlotState::Count(n) => Value::Num(*n as f64),
            SlotState::Sum(s, n) => match self.func {
                AggFunc::Avg if *n == 0 => Value::Null,
                AggFunc::Avg => Value::Num(*s / *n as f64),
                _ => Value::Num(*s),
            },
            SlotState::Best(v, _, _) => v.clone(),
            SlotState::Bag(bag) => match self.func {
                AggFunc::CountDistinct => Value::Num(bag.len() as f64),
                _ => most_frequent(bag.iter().map(|(v, n)| (v, *n))),
            },
            SlotState::Times(v) => {
                let inside = &v[self.window_range(v, now, tz)];
                match self.func {
                    AggFunc::Count => Value::Num(inside.len() as f64),
                    AggFunc::FirstTime => inside.first().map_or(Value::Null, |e| Value::Time(e.0)),
                    _ => inside.last().map_or(Value::Null, |e| Value::Time(e.0)),
                }
            }
            SlotState::Entries(v) => {
                let inside = &v[self.window_range(v, now, tz)];
                debug_assert!(inside
                    .iter()
                    .all(|e| in_window(&self.window, e.ts, now, tz)));
                match self.func {
                    AggFunc::Count => Value::Num(inside.len() as f64),
                    AggFunc::Sum => Value::Num(inside.iter().filter_map(|e| e.arg.as_num()).sum()),
                    AggFunc::CountDistinct | AggFunc::MostFrequent => {
                        // The bag of an all-time state, by reference (no copy of the values).
                        let mut bag: Vec<(&Value, u64)> = Vec::new();
                        for e in inside.iter().filter(|e| self.takes(&e.arg)) {
                            match bag
                                .iter_mut()
                                .find(|(v, _)| compare_values(v, &e.arg) == Some(Ordering::Equal))
                            {
                                Some((_, n)) => *n += 1,
                                None => bag.push((&e.arg, 1)),
                            }
                        }
                        match self.func {
                            AggFunc::CountDistinct => Value::Num(bag.len() as f64),
                            _ => most_frequent(bag.into_iter()),
                        }
                    }
                    _ => {
                        let mut fold = self.empty_fold();
                        for e in inside {
                            self.push(&mut fold, e.clone());
                        }
                        self.value(&fold, now, tz)
                    }
                }
            }
        }
    }

    /// The entries inside the window at `now`: a contiguous range, since entries are sorted by
    /// time and every window is an interval of time.
    fn window_range<T: Timed>(&self, v: &[T], now: i64, tz: Tz) -> std::ops::Range<usize> {
        // Entries with `lo < ts ≤ hi` (or `lo ≤ ts` for calendar windows).
        let (lo, inclusive, hi) = match self.window {
            Window::All => (i64::MIN, true, now),
            Window::Rolling { ms } => (now.saturating_sub(ms), false, now),
            Window::Ago { from_ms, to_ms } => (
                now.saturating_sub(from_ms),
                false,
                now.saturating_sub(to_ms),
            ),
            Window::Calendar { days } => {
                let start = local_date(now, tz)
                    .and_then(|d| d.checked_sub_days(Days::new(u64::from(days) - 1)))
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .and_then(|d| tz.from_local_datetime(&d).earliest())
                    .map_or(i64::MIN, |d| d.timestamp_millis());
                (start, true, now)
            }
        };
        let a = if inclusive {
            v.partition_point(|e| e.key().0 < lo)
        } else {
            v.partition_point(|e| e.key().0 <= lo)
        };
        let b = v.partition_point(|e| e.key().0 <= hi).max(a);
        a..b
    }

    /// The all-time state a window's entries fold into.
    fn empty_fold(&self) -> SlotState {
        SlotSpec {
            func: self.func,
            window: Window::All,
        }
        .empty()
    }

    /// Drops entries that can never be inside the window at `now` or later. Returns whether
    /// the state is now empty.
    pub fn prune(&self, st: &mut SlotState, now: i64, tz: Tz) -> bool {
        match st {
            SlotState::Entries(v) => self.prune_list(v, now, tz),
            SlotState::Times(v) => self.prune_list(v, now, tz),
            _ => false,
        }
    }

    fn prune_list<T: Timed>(&self, v: &mut Vec<T>, now: i64, tz: Tz) -> bool {
        let gone = v.partition_point(|e| leaves(&self.window, e.key().0, tz) <= now);
        v.drain(..gone);
        v.is_empty()
    }

    /// The first instant after `now` at which the window's contents change (an entry enters
    /// or leaves), if any.
    pub fn next_change(&self, st: &SlotState, now: i64, tz: Tz) -> Option<i64> {
        match st {
            SlotState::Entries(v) => self.next_change_in(v, now, tz),
            SlotState::Times(v) => self.next_change_in(v, now, tz),
            _ => None,
        }
    }

    fn next_change_in<T: Timed>(&self, v: &[T], now: i64, tz: Tz) -> Option<i64> {
        // Both instants grow with the entry's time: the first entry past `now` gives each.
        let ts = |e: &T| e.key().0;
        let enter = v
            .get(v.partition_point(|e| enters(&self.window, ts(e)) <= now))
            .map(|e| enters(&self.window, ts(e)));
        let leave = v
            .get(v.partition_point(|e| leaves(&self.window, ts(e), tz) <= now))
            .map(|e| leaves(&self.window, ts(e), tz));
        enter.into_iter().chain(leave).min()
    }
}

/// Whether `(a, ts, off)` replaces the current best `(b, bts, boff)` for `func`.
fn better(func: AggFunc, a: (&Value, i64, u64), b: (&Value, i64, u64)) -> bool {
    if b.0.is_null() {
        return true;
    }
    match func {
        AggFunc::Min => compare_values(a.0, b.0) == Some(Ordering::Less),
        AggFunc::Max => compare_values(a.0, b.0) == Some(Ordering::Greater),
        AggFunc::First | AggFunc::FirstTime => (a.1, a.2) < (b.1, b.2),
        _ => (a.1, a.2) > (b.1, b.2),
    }
}

/// The most frequent value; ties go to the least value; null when empty.
fn most_frequent<'a>(bag: impl Iterator<Item = (&'a Value, u64)>) -> Value {
    let mut best: Option<(&Value, u64)> = None;
    for (v, n) in bag {
        best = match best {
            Some((bv, bn))
                if n < bn || (n == bn && compare_values(v, bv) != Some(Ordering::Less)) =>
            {
                Some((bv, bn))
            }
            _ => Some((v, n)),
        };
    }
    best.map_or(Value::Null, |(v, _)| v.clone())
}

/// The first `as_of` at which an event at `ts` is inside `window`.
pub fn enters(window: &Window, ts: i64) -> i64 {
    match *window {
        Window::Ago { to_ms, .. } => ts.saturating_add(to_ms),
        _ => ts,
    }
}

/// The first `as_of` at which an event at `ts` has left `window` for good (`i64::MAX` for
/// all time).
pub fn leaves(window: &Window, ts: i64, tz: Tz) -> i64 {
    match *window {
        Window::All => i64::MAX,
        Window::Rolling { ms } => ts.saturating_add(ms),
        Window::Ago { from_ms, .. } => ts.saturating_add(from_ms),
        Window::Calendar { days } => local_date(ts, tz)
            .and_then(|d| d.checked_add_days(Days::new(u64::from(days))))
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|d| tz.from_local_datetime(&d).earliest())
            .map_or(i64::MAX, |d| d.timestamp_millis()),
    }
}

/// The start of the local day after the one holding `now`.
pub fn next_local_midnight(now: i64, tz: Tz) -> i64 {
    local_date(now, tz)
        .and_then(|d| d.checked_add_days(Days::new(1)))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|d| tz.from_local_datetime(&d).earliest())
        .map_or(i64::MAX, |d| d.timestamp_millis())
}

/// A string value shared cheaply.
pub fn str_value(s: &str) -> Value {
    Value::Str(Arc::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic sequences over a few values (ties and repeats included).
    fn sequences(values: &[Value]) -> Vec<Vec<Value>> {
        let mut out = Vec::new();
        let mut x: u64 = 7;
        for len in 0..12 {
            for _ in 0..20 {
                let seq = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        values[(x >> 33) as usize % values.len()].clone()
                    })
                    .collect();
                out.push(seq);
            }
        }
        out
    }

    #[test]
    fn a_window_holding_every_event_folds_them_as_the_all_time_state() {
        let tz = chrono_tz::Asia::Shanghai;
        let strings = [
            str_value("美妆"),
            str_value("护肤"),
            str_value("母婴"),
            Value::Null,
        ];
        let numbers = [
            Value::Num(1.5),
            Value::Num(2.0),
            Value::Num(-3.0),
            Value::Null,
        ];
        let cases = [
            (AggFunc::CountDistinct, &strings),
            (AggFunc::MostFrequent, &strings),
            (AggFunc::Min, &strings),
            (AggFunc::Max, &numbers),
            (AggFunc::First, &strings),
            (AggFunc::Last, &numbers),
            (AggFunc::Avg, &numbers),
            (AggFunc::Sum, &numbers),
            (AggFunc::Count, &numbers),
        ];
        for (func, values) in cases {
            let all = SlotSpec {
                func,
                window: Window::All,
            };
            let window = SlotSpec {
                func,
                window: Window::Rolling { ms: 1_000_000 },
            };
            for seq in sequences(values) {
                let (mut a, mut w) = (all.empty(), window.empty());
                for (k, arg) in seq.iter().enumerate() {
                    let e = Entry {
                        ts: 1_000 + k as i64,
                        offset: k as u64,
                        arg: arg.clone(),
                    };
                    all.push(&mut a, e.clone());
                    window.push(&mut w, e);
                }
                let now = 2_000;
                assert_eq!(
                    window.value(&w, now, tz),
                    all.value(&a, now, tz),
                    "{func:?} over {seq:?}"
                );
            }
        }
    }
}
