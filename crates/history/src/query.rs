//! Queries over the snapshots: transitions (Sankey data), entered/exited/stayed, population
//! series, the most common value sequences (paths) and per-profile trails.

use std::collections::{BTreeMap, HashMap};

use portrait_tagstore::{RoaringBitmap, TagData};
use serde::Serialize;

use crate::date::{format_day, Day};
use crate::error::HistoryError;
use crate::format::{KIND_BOOL, KIND_ENUM, KIND_NUMERIC};
use crate::store::{file_of, to_tag_data, History, Loader};

/// The label of "no value": a profile that is not live at that date, or has no value of an
/// enum or numeric tag.
pub const NONE: &str = "(none)";

/// One cell of a transition matrix: `count` profiles had `from` at the first date and `to` at
/// the second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Value at the first date (`"true"`/`"false"` for bool tags, [`NONE`] for no value).
    pub from: String,
    /// Value at the second date.
    pub to: String,
    /// Profiles.
    pub count: u64,
}

/// Entered / exited / stayed for one value between two dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The value (`"true"` for a bool tag's membership, `"(any)"` for "has a value").
    pub value: String,
    /// Holders at the first date.
    pub before: u64,
    /// Holders at the second date.
    pub after: u64,
    /// Holders at the second date that did not hold it at the first.
    pub entered: u64,
    /// Holders at the first date that no longer hold it.
    pub exited: u64,
    /// Holders at both dates.
    pub stayed: u64,
}

/// Counts per value at one date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PopulationPoint {
    /// The date.
    pub date: String,
    /// Live profiles (in the audience, if one was given).
    pub total: u64,
    /// Profiles per value: bool `true`/`false`; enum each value and [`NONE`]; numeric
    /// `(value)` (has a value) and [`NONE`].
    pub values: BTreeMap<String, u64>,
}

/// A sequence of values and how many profiles followed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathCount {
    /// The values, one per date (consecutive repeats merged when collapsed).
    pub path: Vec<String>,
    /// Profiles.
    pub count: u64,
}

/// One change in a profile's trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrailEntry {
    /// The tag.
    pub tag: String,
    /// The date of the first snapshot with the new value.
    pub date: String,
    /// The value at the previous snapshot (`None`: no value or not live).
    pub from: Option<String>,
    /// The new value (`None`: lost the value, or no longer live).
    pub to: Option<String>,
    /// Why: `initial` (the first snapshot of the tag in the range), `refresh` (a scheduled
    /// computation changed it). Event-level causes need the real-time change stream.
    pub cause: String,
}

/// Categories of a tag at a date: the universe and `(label, ids)` per value.
type Categories = (RoaringBitmap, Vec<(String, RoaringBitmap)>);

fn restrict(b: RoaringBitmap, within: Option<&RoaringBitmap>) -> RoaringBitmap {
    match within {
        Some(w) => b & w,
        None => b,
    }
}

fn label_of(data: &TagData, id: u32) -> Option<String> {
    match data {
        TagData::Bool(b) => Some(b.contains(id).to_string()),
        TagData::Enum(e) => e.value_of(id).map(str::to_string),
        TagData::Numeric(c) => c.get(id).map(portrait_tagstore::canonical_number),
    }
}

impl History {
    /// The categories of a bool or enum tag at `date`.
    fn categories(&self, tag: &str, date: Day) -> Result<Categories, HistoryError> {
        let at = self.load(tag, date)?;
        let cats = match at.data {
            TagData::Bool(t) => {
                let f = &at.universe - &t;
                vec![("true".to_string(), t), ("false".to_string(), f)]
            }
            TagData::Enum(e) => e
                .values()
                .iter()
                .map(|(k, b)| (k.clone(), b.clone()))
                .collect(),
            TagData::Numeric(_) => return Err(HistoryError::NotCategorical(tag.into())),
        };
        Ok((at.universe, cats))
    }

    /// The from × to matrix of a bool or enum tag between two dates (cells with a count only,
    /// from-values then to-values in label order, [`NONE`] last). Profiles live at either date
    /// count; with `within`, only those in it. A profile not live at a date, or without a
    /// value, is [`NONE`] there.
    pub fn transitions(
        &self,
        tag: &str,
        from: Day,
        to: Day,
        within: Option<&RoaringBitmap>,
    ) -> Result<Vec<Transition>, HistoryError> {
        let (uf, cf) = self.categories(tag, from)?;
        let (ut, ct) = self.categories(tag, to)?;
        Ok(transition_matrix(&uf, &cf, &ut, &ct, within))
    }

    /// Entered / exited / stayed for `value` of `tag` between two dates. `value` `None` means
    /// "has any value" (for bool tags: is true).
    pub fn change(
        &self,
        tag: &str,
        value: Option<&str>,
        from: Day,
        to: Day,
        within: Option<&RoaringBitmap>,
    ) -> Result<Change, HistoryError> {
        let holders = |d: Day| -> Result<RoaringBitmap, HistoryError> {
            let at = self.load(tag, d)?;
            let b = match (&at.data, value) {
                (TagData::Bool(b), None | Some("true")) => b.clone(),
                (TagData::Bool(b), Some("false")) => &at.universe - b,
                (TagData::Enum(e), Some(v)) => e.get(v).cloned().unwrap_or_default(),
                (data, None) => data.present().clone(),
                (_, Some(v)) => {
                    return Err(HistoryError::Invalid(format!(
                        "tag {tag:?} has no value {v:?} (numeric tags: leave the value out)"
                    )))
                }
            };
            Ok(restrict(b, within))
        };
        let (a, b) = (holders(from)?, holders(to)?);
        let stayed = a.intersection_len(&b);
        Ok(Change {
            value: value.unwrap_or("(any)").to_string(),
            before: a.len(),
            after: b.len(),
            entered: b.len() - stayed,
            exited: a.len() - stayed,
            stayed,
        })
    }

    /// Counts per value for every snapshot date of `tag` from `from` to `to` (inclusive). Without
    /// `within` this reads only the tag's index.
    pub fn population(
        &self,
        tag: &str,
        from: Day,
        to: Day,
        within: Option<&RoaringBitmap>,
    ) -> Result<Vec<PopulationPoint>, HistoryError> {
        let entries = self.entries(tag)?;
        let (lo, hi) = (format_day(from), format_day(to));
        let mut out = Vec::new();
        for (date, e) in entries.range(lo..=hi) {
            let mut values = BTreeMap::new();
            let total;
            if let Some(w) = within {
                let d = crate::date::parse_day(date)
                    .ok_or_else(|| HistoryError::Invalid(format!("bad date {date}")))?;
                let at = self.load(tag, d)?;
                let u = &at.universe & w;
                total = u.len();
                match &at.data {
                    TagData::Bool(b) => {
                        let t = b.intersection_len(w);
                        values.insert("true".into(), t);
                        values.insert("false".into(), total - t);
                    }
                    TagData::Enum(en) => {
                        for (k, b) in en.values() {
                            values.insert(k.clone(), b.intersection_len(w));
                        }
                        values.insert(NONE.into(), total - en.present().intersection_len(w));
                    }
                    TagData::Numeric(c) => {
                        let n = c.present().intersection_len(w);
                        values.insert("(value)".into(), n);
                        values.insert(NONE.into(), total - n);
                    }
                }
            } else {
                total = e.universe;
                match e.kind.as_str() {
                    "bool" => {
                        let t = e.counts.get("").copied().unwrap_or(0);
                        values.insert("true".into(), t);
                        values.insert("false".into(), total.saturating_sub(t));
                    }
                    "numeric" => {
                        let n = e.counts.get("ids").copied().unwrap_or(0);
                        values.insert("(value)".into(), n);
                        values.insert(NONE.into(), total.saturating_sub(n));
                    }
                    _ => {
                        let mut present = 0;
                        for (k, n) in &e.counts {
                            values.insert(k.clone(), *n);
                            present += n;
                        }
                        values.insert(NONE.into(), total.saturating_sub(present));
                    }
                }
            }
            out.push(PopulationPoint {
                date: date.clone(),
                total,
                values,
            });
        }
        Ok(out)
    }

    /// The most common value sequences of a bool or enum tag over `dates` (ascending), largest
    /// first (ties by path), at most `limit`. Profiles live at any of the dates count (in
    /// `within`, if given); [`NONE`] marks a date without a value. With `collapse`, repeats of
    /// the same value on consecutive dates are merged (`active, active, dormant` →
    /// `active → dormant`).
    pub fn paths(
        &self,
        tag: &str,
        dates: &[Day],
        within: Option<&RoaringBitmap>,
        collapse: bool,
        limit: usize,
    ) -> Result<Vec<PathCount>, HistoryError> {
        if dates.is_empty() {
            return Err(HistoryError::Invalid("paths need at least one date".into()));
        }
        let mut per_date = Vec::with_capacity(dates.len());
        let mut domain = RoaringBitmap::new();
        for d in dates {
            let (u, cats) = self.categories(tag, *d)?;
            domain |= &u;
            per_date.push(cats);
        }
        let domain = restrict(domain, within);
        let mut groups: HashMap<Vec<String>, RoaringBitmap> = HashMap::new();
        groups.insert(Vec::new(), domain);
        for cats in &per_date {
            let mut next: HashMap<Vec<String>, RoaringBitmap> = HashMap::new();
            for (path, ids) in groups {
                let mut rest = ids.clone();
                for (label, b) in cats {
                    let part = &ids & b;
                    if part.is_empty() {
                        continue;
                    }
                    rest -= &part;
                    add_group(&mut next, &path, label, part, collapse);
                }
                if !rest.is_empty() {
                    add_group(&mut next, &path, NONE, rest, collapse);
                }
            }
            groups = next;
        }
        let mut out: Vec<PathCount> = groups
            .into_iter()
            .map(|(path, ids)| PathCount {
                path,
                count: ids.len(),
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        out.truncate(limit);
        Ok(out)
    }

    /// A profile's changes, per tag, between `from` and `to` (inclusive; default all dates):
    /// the first snapshot's value (cause `initial`) and every date its value differs from
    /// the previous snapshot's (cause `refresh`). `tags` default: every bool and enum tag with
    /// history (numeric tags, whose values drift daily, only when named).
    pub fn trail(
        &self,
        id: u32,
        tags: Option<&[String]>,
        from: Option<Day>,
        to: Option<Day>,
    ) -> Result<Vec<TrailEntry>, HistoryError> {
        let names: Vec<(String, bool)> = match tags {
            Some(t) => t.iter().map(|n| (n.clone(), true)).collect(),
            None => self.tags()?.into_iter().map(|n| (n, false)).collect(),
        };
        let mut out = Vec::new();
        let mut universes: HashMap<Day, RoaringBitmap> = HashMap::new();
        for (name, named) in names {
            let index = self.index(&name)?;
            let dir = self.tag_dir(&name);
            let mut loader = Loader::new(&dir);
            let mut prev: Option<Option<String>> = None;
            for d in index.dates() {
                if from.is_some_and(|f| d < f) || to.is_some_and(|t| d > t) {
                    continue;
                }
                let raw = loader.raw(d)?;
                if raw.kind == KIND_NUMERIC && !named {
                    break;
                }
                let live = match universes.get(&d) {
                    Some(u) => u.contains(id),
                    None => {
                        let u = self.universe(d)?;
                        let c = u.contains(id);
                        universes.insert(d, u);
                        c
                    }
                };
                let value = if !live {
                    None
                } else if raw.kind == KIND_BOOL || raw.kind == KIND_ENUM {
                    let mut v = None;
                    for (k, _) in &raw.slots {
                        if loader.bitmap(d, k)?.is_some_and(|b| b.contains(id)) {
                            v = Some(if raw.kind == KIND_BOOL {
                                "true".to_string()
                            } else {
                                k.clone()
                            });
                            break;
                        }
                    }
                    if raw.kind == KIND_BOOL && v.is_none() {
                        v = Some("false".into());
                    }
                    v
                } else {
                    let (kind, _, slots) = loader.full(d)?;
                    label_of(&to_tag_data(&file_of(&dir, d), kind, slots)?, id)
                };
                match &prev {
                    None => {
                        if value.is_some() {
                            out.push(TrailEntry {
                                tag: name.clone(),
                                date: format_day(d),
                                from: None,
                                to: value.clone(),
                                cause: "initial".into(),
                            });
                        }
                    }
                    Some(p) if *p != value => out.push(TrailEntry {
                        tag: name.clone(),
                        date: format_day(d),
                        from: p.clone(),
                        to: value.clone(),
                        cause: "refresh".into(),
                    }),
                    Some(_) => {}
                }
                prev = Some(value);
            }
        }
        Ok(out)
    }
}

fn add_group(
    groups: &mut HashMap<Vec<String>, RoaringBitmap>,
    path: &[String],
    label: &str,
    ids: RoaringBitmap,
    collapse: bool,
) {
    let mut p = path.to_vec();
    if !(collapse && p.last().is_some_and(|l| l == label)) {
        p.push(label.to_string());
    }
    *groups.entry(p).or_default() |= ids;
}

/// The transition matrix of two dates' categories (see [`History::transitions`]). Cells with
/// [`NONE`] are derived from cardinalities, so no complement bitmap is built.
pub fn transition_matrix(
    universe_from: &RoaringBitmap,
    from: &[(String, RoaringBitmap)],
    universe_to: &RoaringBitmap,
    to: &[(String, RoaringBitmap)],
    within: Option<&RoaringBitmap>,
) -> Vec<Transition> {
    let domain = match within {
        Some(w) => (universe_from | universe_to).intersection_len(w),
        None => universe_from.union_len(universe_to),
    };
    let restricted = |v: &[(String, RoaringBitmap)]| -> Option<Vec<(String, RoaringBitmap)>> {
        within.map(|w| v.iter().map(|(k, b)| (k.clone(), b & w)).collect())
    };
    let (rf, rt) = (restricted(from), restricted(to));
    let from = rf.as_deref().unwrap_or(from);
    let to = rt.as_deref().unwrap_or(to);
    let mut out = Vec::new();
    let mut col_sums = vec![0u64; to.len()];
    let mut total = 0u64;
    for (fl, fb) in from {
        let mut row = 0u64;
        for (j, (tl, tb)) in to.iter().enumerate() {
            let n = fb.intersection_len(tb);
            row += n;
            col_sums[j] += n;
            if n > 0 {
                out.push(Transition {
                    from: fl.clone(),
                    to: tl.clone(),
                    count: n,
                });
            }
        }
        let none = fb.len() - row;
        total += fb.len();
        if none > 0 {
            out.push(Transition {
                from: fl.clone(),
                to: NONE.into(),
                count: none,
            });
        }
    }
    let mut none_row = 0u64;
    for (j, (tl, tb)) in to.iter().enumerate() {
        let n = tb.len() - col_sums[j];
        none_row += n;
        if n > 0 {
            out.push(Transition {
                from: NONE.into(),
                to: tl.clone(),
                count: n,
            });
        }
    }
    let none_none = domain.saturating_sub(total + none_row);
    if none_none > 0 {
        out.push(Transition {
            from: NONE.into(),
            to: NONE.into(),
            count: none_none,
        });
    }
    out
}
