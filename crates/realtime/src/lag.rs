//! Visibility lag: how long after the store hands a committed group over (just before it sends
//! the group's acknowledgements) the group's tag and audience changes are readable in the change
//! stream and the profile API. Measured inside the server, per event, so it shows the engine's
//! own delay apart from any client's.
//!
//! A fixed log-linear histogram: 10 µs steps below 1 ms, 100 µs steps below 100 ms, 10 ms steps
//! below 10 s, one bucket above. A quantile is reported as the upper bound of its bucket (never
//! below the true value, at most one step above it), capped by the largest lag seen.

use serde::Serialize;

/// `(end, step)` in µs: buckets of `step` from the previous tier's end up to `end`.
const TIERS: [(u64, u64); 3] = [(1_000, 10), (100_000, 100), (10_000_000, 10_000)];
/// The tiers' buckets and one open bucket above the last tier.
const BUCKETS: usize = tier_buckets() + 1;

/// Buckets of all the tiers.
const fn tier_buckets() -> usize {
    let (mut i, mut n, mut from) = (0, 0, 0);
    while i < TIERS.len() {
        n += ((TIERS[i].0 - from) / TIERS[i].1) as usize;
        from = TIERS[i].0;
        i += 1;
    }
    n
}

/// The histogram of visibility lags, weighted by events.
#[derive(Debug, Clone)]
pub struct Lag {
    counts: Vec<u64>,
    events: u64,
    max_us: u64,
}

/// Quantiles of the visibility lag since the last reset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LagSummary {
    /// Events measured.
    pub events: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Default for Lag {
    fn default() -> Self {
        Lag {
            counts: vec![0; BUCKETS],
            events: 0,
            max_us: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    let (mut first, mut from) = (0, 0);
    for &(end, step) in &TIERS {
        if us < end {
            return first + ((us - from) / step) as usize;
        }
        first += ((end - from) / step) as usize;
        from = end;
    }
    BUCKETS - 1
}

/// The exclusive upper bound of bucket `i`, µs (`u64::MAX` for the last).
fn upper(i: usize) -> u64 {
    let (mut first, mut from) = (0, 0);
    for &(end, step) in &TIERS {
        let n = ((end - from) / step) as usize;
        if i < first + n {
            return from + (i - first + 1) as u64 * step;
        }
        first += n;
        from = end;
    }
    u64::MAX
}

impl Lag {
    /// Records that `events` events became visible `us` microseconds after their hand-over.
    pub fn record(&mut self, us: u64, events: u64) {
        if events == 0 {
            return;
        }
        if let Some(c) = self.counts.get_mut(bucket(us)) {
            *c += events;
        }
        self.events += events;
        self.max_us = self.max_us.max(us);
    }

    /// The lag at quantile `q` (0..=1), µs.
    fn quantile_us(&self, q: f64) -> u64 {
        if self.events == 0 {
            return 0;
        }
        let rank = ((q * self.events as f64).ceil() as u64).clamp(1, self.events);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max_us);
            }
        }
        self.max_us
    }

    /// Quantiles since the last reset.
    pub fn summary(&self) -> LagSummary {
        let ms = |us: u64| us as f64 / 1_000.0;
        LagSummary {
            events: self.events,
            p50_ms: ms(self.quantile_us(0.5)),
            p99_ms: ms(self.quantile_us(0.99)),
            p999_ms: ms(self.quantile_us(0.999)),
            max_ms: ms(self.max_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_in_order() {
        let mut last = 0;
        for i in 0..BUCKETS - 1 {
            assert!(upper(i) > last, "bucket {i}");
            assert_eq!(bucket(upper(i) - 1), i, "bucket {i}");
            assert_eq!(bucket(upper(i)), i + 1, "bucket {i}");
            last = upper(i);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_upper_bounds_within_one_step() {
        let mut lag = Lag::default();
        assert_eq!(lag.summary().events, 0);
        assert_eq!(lag.summary().p99_ms, 0.0);
        // 990 events at 0.5 ms, 9 at 12.34 ms, 1 at 2.5 s.
        lag.record(500, 990);
        lag.record(12_340, 9);
        lag.record(2_500_000, 1);
        lag.record(7, 0);
        let s = lag.summary();
        assert_eq!(s.events, 1_000);
        assert_eq!(s.p50_ms, 0.51);
        assert_eq!(s.p99_ms, 0.51);
        assert_eq!(s.p999_ms, 12.4);
        assert_eq!(s.max_ms, 2_500.0);
        lag.record(30_000_000, 1_000);
        let s = lag.summary();
        assert_eq!(
            s.p99_ms, 30_000.0,
            "the open bucket reports the largest lag"
        );
    }
}
