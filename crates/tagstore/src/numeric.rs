//! Numeric tag columns: range predicates over sorted `(value, id)` runs.
//!
//! A [`NumericColumn`] keeps two views of the same `(id, value)` pairs:
//! - **id order**: a bitmap of the ids that have a value (`present`) and the values in the
//!   order of those ids (`by_rank`), so a point read is `rank(id)` in the bitmap plus one array
//!   read;
//! - **value order**: the distinct values ascending (`distinct`), and for each distinct value a
//!   run of ids (ascending) in `sorted_ids`, delimited by `run_start`. A range predicate is two
//!   binary searches over `distinct` giving a contiguous slice of `sorted_ids`; its size alone
//!   answers a count, and the ids are turned into a bitmap by scattering into a bit array when
//!   they are dense (≥ 1 in 64), by sorting when they are sparse, and through the complement (present minus
//!   the ids outside the range) when the range holds more than half the column.
//!
//! A large column also answers wide ranges through **rank bins**: `sorted_ids` is cut into
//! [`BINS`] equal slices; for each cut the bitmap of the ids at or after it is kept
//! (range-encoded bitmaps), and each bin is cut again into [`SUB_BINS`] sub-bins whose ids are
//! kept as a bitmap and, with their positions, in id order. A range covering whole bins is then
//! one difference of two range-encoded bitmaps, plus at each edge a union of whole sub-bins
//! and the ids of at most one partly covered sub-bin, picked by position in id order: nothing
//! is sorted or scattered at query time, and an `and` intersects the parts without
//! materialising the range ([`RangeSet`]). The bins are built on the first range query that
//! needs them and cost about 10 bytes per value plus 1.25 MB per bin at 10M ids (≈ 180 MB in
//! all at 10M values).
//!
//! Memory: 16 bytes per value (8 for the value, 4 for the id, 4 for the run offset when all values
//! are distinct; less with ties) plus the `present` bitmap.
//!
//! NaN is not a value: it is dropped when a column is built (the id has no value). `-0.0` is
//! stored as `0.0`.

use std::borrow::Cow;
use std::ops::{Bound, Range};

use roaring::{MultiOps, RoaringBitmap};

/// Ids above this use the sort path when building a bitmap (the scatter buffer would be large).
const DENSE_SCATTER_LIMIT: u32 = 1 << 31;

/// Ids are scattered into a bit array when at least one id in this many of `0..=max` is
/// selected, sorted otherwise (measured at 10M ids: scattering 300k ids beats sorting them).
const SCATTER_DENSITY: u64 = 64;

/// Number of rank bins of a column with rank-bin bitmaps (see the module docs).
const BINS: usize = 64;

/// Sub-bins per rank bin: a bin's ids are also kept per sub-bin, so an edge of a range is
/// mostly a union of whole sub-bins.
const SUB_BINS: usize = 8;

/// Columns with fewer values than this select by sorting or scattering alone.
const MIN_BINNED: usize = 1 << 17;

/// A numeric tag's values, indexed for point reads and range predicates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NumericColumn {
    present: RoaringBitmap,
    by_rank: Vec<f64>,
    distinct: Vec<f64>,
    run_start: Vec<u32>,
    sorted_ids: Vec<u32>,
    bins: RankBins,
}

/// The ids of a range predicate (see [`NumericColumn::range_set`]).
#[derive(Debug)]
pub enum RangeSet<'a> {
    /// Materialised.
    Ids(RoaringBitmap),
    /// `(from − until) ∪ edges`: whole bins as the difference of two range-encoded bitmaps,
    /// plus the ids of the partial bins at the edges.
    Binned {
        /// Ids at or after the first whole bin.
        from: &'a RoaringBitmap,
        /// Ids after the last whole bin (`None`: the range runs to the greatest value).
        until: Option<&'a RoaringBitmap>,
        /// Ids of the partial bins inside the range.
        edges: RoaringBitmap,
    },
}

impl RangeSet<'_> {
    /// Number of ids.
    pub fn len(&self) -> u64 {
        match self {
            RangeSet::Ids(b) => b.len(),
            RangeSet::Binned { from, until, edges } => {
                from.len() - until.map_or(0, |u| u.len()) + edges.len()
            }
        }
    }

    /// True when the range holds no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids as one bitmap.
    pub fn into_bitmap(self) -> RoaringBitmap {
        match self {
            RangeSet::Ids(b) => b,
            RangeSet::Binned { from, until, edges } => {
                let mut out = match until {
                    Some(u) => from - u,
                    None => from.clone(),
                };
                out |= edges;
                out
            }
        }
    }

    /// `acc ∩ self`, in place, touching only `acc`-sized data for a binned range.
    pub fn intersect_into(&self, acc: &mut RoaringBitmap) {
        match self {
            RangeSet::Ids(b) => *acc &= b,
            RangeSet::Binned { from, until, edges } => {
                let at_edges = &*acc & edges;
                *acc &= *from;
                if let Some(u) = until {
                    *acc -= *u;
                }
                *acc |= at_edges;
            }
        }
    }
}

/// Rank bins of a large column (see the module docs). Built lazily; a cache, so it takes no
/// part in equality.
#[derive(Debug, Clone, Default)]
struct RankBins(std::sync::OnceLock<Binned>);

#[derive(Debug, Clone)]
struct Binned {
    /// Positions of `sorted_ids` per bin (a multiple of [`SUB_BINS`]; the last bin may be
    /// shorter).
    width: usize,
    /// Positions per sub-bin (`width / SUB_BINS`).
    sub_width: usize,
    /// `at_or_after[j]`: the ids at positions `≥ (j + 1) · width`.
    at_or_after: Vec<RoaringBitmap>,
    /// The ids of each sub-bin.
    sub: Vec<RoaringBitmap>,
    /// Each sub-bin's `(id, position)` pairs in id order, sub-bins one after the other.
    by_id: Vec<(u32, u32)>,
}

impl Binned {
    fn build(sorted_ids: &[u32]) -> Binned {
        let n = sorted_ids.len();
        let width = n.div_ceil(BINS).next_multiple_of(SUB_BINS);
        let sub_width = width / SUB_BINS;
        let mut by_id: Vec<(u32, u32)> = Vec::with_capacity(n);
        let mut sub = Vec::with_capacity(n.div_ceil(sub_width));
        for (k, part) in sorted_ids.chunks(sub_width).enumerate() {
            let start = by_id.len();
            let first = (k * sub_width) as u32;
            by_id.extend(part.iter().zip(first..).map(|(&id, pos)| (id, pos)));
            let pairs = by_id.get_mut(start..).unwrap_or_default();
            pairs.sort_unstable_by_key(|p| p.0);
            let ids = pairs.iter().map(|p| p.0);
            sub.push(
                RoaringBitmap::from_sorted_iter(ids.clone()).unwrap_or_else(|_| ids.collect()),
            );
        }
        let bins = n.div_ceil(width);
        let mut at_or_after = vec![RoaringBitmap::new(); bins - 1];
        let mut acc = RoaringBitmap::new();
        for j in (1..bins).rev() {
            let parts = sub.iter().skip(j * SUB_BINS).take(SUB_BINS);
            acc |= parts.union();
            if let Some(slot) = at_or_after.get_mut(j - 1) {
                *slot = acc.clone();
            }
        }
        Binned {
            width,
            sub_width,
            at_or_after,
            sub,
            by_id,
        }
    }

    /// The ids at the positions `ranges` (each within one bin), as one bitmap: the whole
    /// sub-bins they cover, plus the ids of the partly covered ones picked in id order.
    fn edges(&self, ranges: [Range<usize>; 2]) -> RoaringBitmap {
        let sw = self.sub_width.max(1);
        let mut pieces: Vec<Cow<'_, RoaringBitmap>> = Vec::new();
        for r in ranges.into_iter().filter(|r| !r.is_empty()) {
            for k in r.start / sw..=(r.end - 1) / sw {
                let whole = k * sw..((k + 1) * sw).min(self.by_id.len());
                if r.start <= whole.start && whole.end <= r.end {
                    if let Some(b) = self.sub.get(k) {
                        pieces.push(Cow::Borrowed(b));
                    }
                    continue;
                }
                let (lo, hi) = (r.start as u32, r.end as u32);
                let ids = self
                    .by_id
                    .get(whole)
                    .unwrap_or_default()
                    .iter()
                    .filter(|(_, pos)| (lo..hi).contains(pos))
                    .map(|(id, _)| *id);
                let part =
                    RoaringBitmap::from_sorted_iter(ids.clone()).unwrap_or_else(|_| ids.collect());
                pieces.push(Cow::Owned(part));
            }
        }
        pieces.iter().map(|p| &**p).union()
    }
}

impl PartialEq for RankBins {
    fn eq(&self, _: &RankBins) -> bool {
        true
    }
}

/// Summary statistics of a numeric column.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericSummary {
    /// Ids with a value.
    pub count: u64,
    /// Least value (`None` when the column is empty).
    pub min: Option<f64>,
    /// Greatest value.
    pub max: Option<f64>,
    /// Arithmetic mean.
    pub mean: Option<f64>,
    /// Up to 10 equal-width bins `[low, high)` covering `min..=max` (the last bin includes
    /// `max`), each with its count.
    pub histogram: Vec<HistogramBin>,
}

/// One histogram bin.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramBin {
    /// Inclusive lower bound.
    pub low: f64,
    /// Upper bound (exclusive, except for the last bin).
    pub high: f64,
    /// Ids whose value falls in the bin.
    pub count: u64,
}

fn normalize(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

impl NumericColumn {
    /// Builds a column from `(id, value)` pairs in any order. NaN values are dropped; for a
    /// repeated id the last pair wins.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u32, f64)>) -> NumericColumn {
        let mut pairs: Vec<(u32, f64)> = pairs
            .into_iter()
            .filter(|(_, x)| !x.is_nan())
            .map(|(id, x)| (id, normalize(x)))
            .collect();
        // Stable, so among equal ids the input order survives and the last one can win.
        pairs.sort_by_key(|p| p.0);
        let mut ids: Vec<u32> = Vec::with_capacity(pairs.len());
        let mut values: Vec<f64> = Vec::with_capacity(pairs.len());
        for (id, x) in pairs {
            if ids.last() == Some(&id) {
                if let Some(last) = values.last_mut() {
                    *last = x;
                }
            } else {
                ids.push(id);
                values.push(x);
            }
        }
        NumericColumn::from_id_sorted(&ids, values)
    }

    /// Builds a column from strictly ascending ids and their (non-NaN) values. Callers inside
    /// the crate guarantee both; NaN values are still dropped defensively.
    pub(crate) fn from_id_sorted(ids: &[u32], values: Vec<f64>) -> NumericColumn {
        debug_assert_eq!(ids.len(), values.len());
        let mut keep_ids = Vec::with_capacity(ids.len());
        let mut by_rank = Vec::with_capacity(values.len());
        for (&id, &x) in ids.iter().zip(values.iter()) {
            if !x.is_nan() && keep_ids.last().is_none_or(|&last| last < id) {
                keep_ids.push(id);
                by_rank.push(normalize(x));
            }
        }
        let present = RoaringBitmap::from_sorted_iter(keep_ids.iter().copied())
            .unwrap_or_else(|_| keep_ids.iter().copied().collect());
        let mut pairs: Vec<(f64, u32)> = by_rank
            .iter()
            .copied()
            .zip(keep_ids.iter().copied())
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut distinct = Vec::new();
        let mut run_start = Vec::new();
        let mut sorted_ids = Vec::with_capacity(pairs.len());
        for (i, (x, id)) in pairs.into_iter().enumerate() {
            if distinct.last() != Some(&x) {
                distinct.push(x);
                run_start.push(i as u32);
            }
            sorted_ids.push(id);
        }
        run_start.push(sorted_ids.len() as u32);
        NumericColumn {
            present,
            by_rank,
            distinct,
            run_start,
            sorted_ids,
            bins: RankBins::default(),
        }
    }

    /// The rank-bin bitmaps, built on first use (`None` for small columns).
    fn binned(&self) -> Option<&Binned> {
        let n = self.sorted_ids.len();
        if n < MIN_BINNED {
            return None;
        }
        Some(self.bins.0.get_or_init(|| Binned::build(&self.sorted_ids)))
    }

    /// The ids that have a value.
    pub fn present(&self) -> &RoaringBitmap {
        &self.present
    }

    /// Number of ids with a value.
    pub fn len(&self) -> u64 {
        self.present.len()
    }

    /// True when no id has a value.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// The value of `id`, if it has one.
    pub fn get(&self, id: u32) -> Option<f64> {
        if !self.present.contains(id) {
            return None;
        }
        let rank = self.present.rank(id) as usize;
        self.by_rank.get(rank.checked_sub(1)?).copied()
    }

    /// `(id, value)` pairs in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.present.iter().zip(self.by_rank.iter().copied())
    }

    /// Values in id order (the `k`-th value belongs to the `k`-th id of [`Self::present`]).
    pub fn values_in_id_order(&self) -> &[f64] {
        &self.by_rank
    }

    /// Positions in `sorted_ids` of the values within the bounds (empty for a NaN bound).
    fn positions(&self, low: Bound<f64>, high: Bound<f64>) -> Range<usize> {
        let nan =
            |b: &Bound<f64>| matches!(b, Bound::Included(x) | Bound::Excluded(x) if x.is_nan());
        if nan(&low) || nan(&high) {
            return 0..0;
        }
        let a = match low {
            Bound::Unbounded => 0,
            Bound::Included(x) => self.distinct.partition_point(|v| *v < x),
            Bound::Excluded(x) => self.distinct.partition_point(|v| *v <= x),
        };
        let b = match high {
            Bound::Unbounded => self.distinct.len(),
            Bound::Included(x) => self.distinct.partition_point(|v| *v <= x),
            Bound::Excluded(x) => self.distinct.partition_point(|v| *v < x),
        };
        if a >= b {
            return 0..0;
        }
        let start = self.run_start.get(a).copied().unwrap_or(0) as usize;
        let end = self.run_start.get(b).copied().unwrap_or(0) as usize;
        start..end.max(start)
    }

    /// Number of ids whose value lies within the bounds (two binary searches).
    pub fn range_len(&self, low: Bound<f64>, high: Bound<f64>) -> u64 {
        self.positions(low, high).len() as u64
    }

    /// The ids whose value lies within the bounds.
    pub fn range(&self, low: Bound<f64>, high: Bound<f64>) -> RoaringBitmap {
        self.range_set(low, high).into_bitmap()
    }

    /// The ids whose value lies within the bounds, as a [`RangeSet`]: a wide range of a large
    /// column stays in parts (whole bins and two edges), which an intersection can use without
    /// materialising the range.
    pub fn range_set(&self, low: Bound<f64>, high: Bound<f64>) -> RangeSet<'_> {
        let r = self.positions(low, high);
        let total = self.sorted_ids.len();
        if let Some(b) = self.binned().filter(|_| !r.is_empty()) {
            // Narrower ranges are cheaper to gather (the bins' bitmaps span the whole column);
            // a range of 4 bins or more has whole bins between its first and last cut.
            if r.len() >= 4 * b.width && r.len() < total {
                let first = r.start.div_ceil(b.width);
                let last = r.end / b.width;
                let at = |j: usize| match j {
                    0 => Some(&self.present),
                    j => b.at_or_after.get(j - 1),
                };
                let (until, high) = if r.end < total {
                    (at(last), last * b.width..r.end)
                } else {
                    (None, r.end..r.end)
                };
                return RangeSet::Binned {
                    from: at(first).unwrap_or(&self.present),
                    until,
                    edges: b.edges([r.start..first * b.width, high]),
                };
            }
        }
        RangeSet::Ids(self.gather_range(r))
    }

    /// A bitmap of the ids at positions `r` of `sorted_ids`.
    fn gather_range(&self, r: Range<usize>) -> RoaringBitmap {
        let total = self.sorted_ids.len();
        if r.is_empty() {
            return RoaringBitmap::new();
        }
        if r.len() == total {
            return self.present.clone();
        }
        // One run of equal values is already in id order.
        let one_run = self
            .run_start
            .binary_search(&(r.start as u32))
            .is_ok_and(|j| {
                self.run_start
                    .get(j + 1)
                    .is_some_and(|&next| next as usize == r.end)
            });
        if one_run {
            return self.gather(&[r], true);
        }
        if 2 * r.len() > total {
            let mut out = self.present.clone();
            out -= self.gather(&[0..r.start, r.end..total], false);
            return out;
        }
        self.gather(&[r], false)
    }

    /// A bitmap of the ids at the given positions of `sorted_ids`.
    fn gather(&self, ranges: &[Range<usize>], sorted: bool) -> RoaringBitmap {
        let slices = ranges.iter().filter_map(|r| self.sorted_ids.get(r.clone()));
        if sorted {
            let ids = slices.clone().flatten().copied();
            return RoaringBitmap::from_sorted_iter(ids)
                .unwrap_or_else(|_| slices.flatten().copied().collect());
        }
        let n: usize = ranges.iter().map(|r| r.len()).sum();
        let max = self.present.max().unwrap_or(0);
        if max < DENSE_SCATTER_LIMIT && (n as u64) * SCATTER_DENSITY >= u64::from(max) {
            let mut bytes = vec![0u8; max as usize / 8 + 1];
            for &id in slices.flatten() {
                if let Some(b) = bytes.get_mut(id as usize >> 3) {
                    *b |= 1 << (id & 7);
                }
            }
            RoaringBitmap::from_lsb0_bytes(0, &bytes)
        } else {
            let mut ids: Vec<u32> = Vec::with_capacity(n);
            for s in slices {
                ids.extend_from_slice(s);
            }
            ids.sort_unstable();
            RoaringBitmap::from_sorted_iter(ids.iter().copied())
                .unwrap_or_else(|_| ids.into_iter().collect())
        }
    }

    /// Removes `id`'s value (no-op when it has none). Cost: linear in the column size (array
    /// shifts); for many ids prefer [`Self::without`].
    pub fn remove(&mut self, id: u32) -> bool {
        if !self.present.contains(id) {
            return false;
        }
        let rank = self.present.rank(id) as usize;
        self.present.remove(id);
        self.bins = RankBins::default();
        let Some(idx) = rank.checked_sub(1) else {
            return true;
        };
        if idx >= self.by_rank.len() {
            return true;
        }
        let x = self.by_rank.remove(idx);
        let j = self.distinct.partition_point(|v| *v < x);
        let (Some(&s), Some(&e)) = (self.run_start.get(j), self.run_start.get(j + 1)) else {
            return true;
        };
        let Some(run) = self.sorted_ids.get(s as usize..e as usize) else {
            return true;
        };
        if let Ok(p) = run.binary_search(&id) {
            self.sorted_ids.remove(s as usize + p);
            for start in self.run_start.iter_mut().skip(j + 1) {
                *start -= 1;
            }
            if self.run_start.get(j) == self.run_start.get(j + 1) {
                self.distinct.remove(j);
                self.run_start.remove(j);
            }
        }
        true
    }

    /// A copy of the column without the given ids (rebuilds the value order).
    pub fn without(&self, ids: &RoaringBitmap) -> NumericColumn {
        let (keep_ids, values): (Vec<u32>, Vec<f64>) =
            self.iter().filter(|(id, _)| !ids.contains(*id)).unzip();
        NumericColumn::from_id_sorted(&keep_ids, values)
    }

    /// A copy of the column restricted to the given ids.
    pub fn restricted_to(&self, ids: &RoaringBitmap) -> NumericColumn {
        let (keep_ids, values): (Vec<u32>, Vec<f64>) =
            self.iter().filter(|(id, _)| ids.contains(*id)).unzip();
        NumericColumn::from_id_sorted(&keep_ids, values)
    }

    /// Count, min, max, mean and a 10-bin equal-width histogram.
    pub fn summary(&self) -> NumericSummary {
        let count = self.len();
        let (Some(&min), Some(&max)) = (self.distinct.first(), self.distinct.last()) else {
            return NumericSummary {
                count,
                min: None,
                max: None,
                mean: None,
                histogram: Vec::new(),
            };
        };
        let mean = self.by_rank.iter().sum::<f64>() / count as f64;
        let mut histogram = Vec::new();
        let width = (max - min) / 10.0;
        if min == max || !width.is_finite() || width <= 0.0 {
            histogram.push(HistogramBin {
                low: min,
                high: max,
                count,
            });
        } else {
            for k in 0..10 {
                let low = min + width * k as f64;
                let (high, upper) = if k == 9 {
                    (max, Bound::Included(max))
                } else {
                    let h = min + width * (k + 1) as f64;
                    (h, Bound::Excluded(h))
                };
                histogram.push(HistogramBin {
                    low,
                    high,
                    count: self.range_len(Bound::Included(low), upper),
                });
            }
        }
        NumericSummary {
            count,
            min: Some(min),
            max: Some(max),
            mean: Some(mean),
            histogram,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col() -> NumericColumn {
        NumericColumn::from_pairs([
            (5, 3.0),
            (1, 500.0),
            (9, 3.0),
            (2, f64::NAN),
            (7, -1.0),
            (3, 120.0),
            (1, 600.0),
        ])
    }

    #[test]
    fn point_reads_and_last_wins() {
        let c = col();
        assert_eq!(c.get(1), Some(600.0));
        assert_eq!(c.get(2), None);
        assert_eq!(c.get(9), Some(3.0));
        assert_eq!(c.get(4), None);
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn ranges() {
        let c = col();
        let ids = |b: RoaringBitmap| b.iter().collect::<Vec<_>>();
        assert_eq!(
            ids(c.range(Bound::Included(3.0), Bound::Included(3.0))),
            vec![5, 9]
        );
        assert_eq!(
            ids(c.range(Bound::Included(100.0), Bound::Unbounded)),
            vec![1, 3]
        );
        assert_eq!(
            ids(c.range(Bound::Unbounded, Bound::Excluded(3.0))),
            vec![7]
        );
        assert_eq!(
            ids(c.range(Bound::Excluded(-1.0), Bound::Excluded(600.0))),
            vec![3, 5, 9]
        );
        assert_eq!(c.range_len(Bound::Included(3.0), Bound::Included(200.0)), 3);
        assert!(c
            .range(Bound::Included(f64::NAN), Bound::Unbounded)
            .is_empty());
        assert!(c.range(Bound::Included(700.0), Bound::Unbounded).is_empty());
    }

    #[test]
    fn remove_keeps_views_consistent() {
        let mut c = col();
        assert!(c.remove(5));
        assert!(!c.remove(5));
        assert!(c.remove(7));
        assert_eq!(c.get(5), None);
        assert_eq!(c.get(9), Some(3.0));
        assert_eq!(
            c,
            NumericColumn::from_pairs([(1, 600.0), (9, 3.0), (3, 120.0)])
        );
    }

    #[test]
    fn summary_counts_add_up() {
        let c = NumericColumn::from_pairs((0..100u32).map(|i| (i, f64::from(i))));
        let s = c.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.min, Some(0.0));
        assert_eq!(s.max, Some(99.0));
        assert_eq!(s.mean, Some(49.5));
        assert_eq!(s.histogram.len(), 10);
        assert_eq!(s.histogram.iter().map(|b| b.count).sum::<u64>(), 100);
    }

    #[test]
    fn binned_ranges_match_a_scan() {
        // Above MIN_BINNED, with ties (1,000 distinct values) and gaps in the ids.
        let n = 300_000u32;
        let value = |i: u32| f64::from(crate::synth::mix(u64::from(i), 3) as u32 % 1_000);
        let pairs: Vec<(u32, f64)> = (0..n).map(|i| (i * 3 + 1, value(i))).collect();
        let c = NumericColumn::from_pairs(pairs.iter().copied());
        let scan = |lo: Bound<f64>, hi: Bound<f64>| {
            let ok = |x: f64| {
                (match lo {
                    Bound::Included(a) => x >= a,
                    Bound::Excluded(a) => x > a,
                    Bound::Unbounded => true,
                }) && (match hi {
                    Bound::Included(b) => x <= b,
                    Bound::Excluded(b) => x < b,
                    Bound::Unbounded => true,
                })
            };
            pairs
                .iter()
                .filter(|(_, x)| ok(*x))
                .map(|(id, _)| *id)
                .collect::<RoaringBitmap>()
        };
        let cases = [
            (Bound::Included(500.0), Bound::Unbounded),
            (Bound::Excluded(500.0), Bound::Unbounded),
            (Bound::Unbounded, Bound::Excluded(37.0)),
            (Bound::Unbounded, Bound::Included(962.0)),
            (Bound::Included(100.0), Bound::Included(300.0)),
            (Bound::Included(31.0), Bound::Excluded(969.0)),
            (Bound::Included(0.0), Bound::Included(999.0)),
            (Bound::Included(1.0), Bound::Included(998.0)),
            (Bound::Included(400.0), Bound::Included(400.0)),
            (Bound::Included(400.0), Bound::Included(431.0)),
            (Bound::Excluded(-1.0), Bound::Excluded(0.5)),
        ];
        for (lo, hi) in cases {
            let got = c.range(lo, hi);
            assert_eq!(got, scan(lo, hi), "{lo:?}..{hi:?}");
            assert_eq!(got.len(), c.range_len(lo, hi), "{lo:?}..{hi:?}");
        }
        assert!(c.binned().is_some());
        // Removing a value drops the bins; the next range sees the removal.
        let mut c = c;
        assert!(c.remove(1));
        assert!(!c.range(Bound::Included(0.0), Bound::Unbounded).contains(1));
    }
}
