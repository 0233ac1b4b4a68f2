//! The tag store: immutable [`Snapshot`]s of every tag, swapped atomically by writers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use roaring::RoaringBitmap;

use crate::error::StoreError;
use crate::flat::FlatCache;
use crate::numeric::{NumericColumn, NumericSummary};

/// An enum tag: one bitmap per value; an id holds at most one value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnumTag {
    values: BTreeMap<String, RoaringBitmap>,
    present: RoaringBitmap,
}

impl EnumTag {
    /// Builds an enum tag. Empty bitmaps are dropped and repeated keys are merged; an id under
    /// two different values is an [`StoreError::EnumOverlap`].
    pub fn new(
        values: impl IntoIterator<Item = (String, RoaringBitmap)>,
    ) -> Result<EnumTag, StoreError> {
        let mut map: BTreeMap<String, RoaringBitmap> = BTreeMap::new();
        for (k, b) in values {
            if !b.is_empty() {
                *map.entry(k).or_default() |= b;
            }
        }
        let mut present = RoaringBitmap::new();
        for (k, b) in &map {
            if !present.is_disjoint(b) {
                let id = (&present & b).min().unwrap_or(0);
                return Err(StoreError::EnumOverlap {
                    value: k.clone(),
                    id,
                });
            }
            present |= b;
        }
        Ok(EnumTag {
            values: map,
            present,
        })
    }

    /// The values and their ids, by value.
    pub fn values(&self) -> &BTreeMap<String, RoaringBitmap> {
        &self.values
    }

    /// The ids of one value (`None` when no id has it).
    pub fn get(&self, value: &str) -> Option<&RoaringBitmap> {
        self.values.get(value)
    }

    /// Every id with a value.
    pub fn present(&self) -> &RoaringBitmap {
        &self.present
    }

    /// The value of `id`.
    pub fn value_of(&self, id: u32) -> Option<&str> {
        if !self.present.contains(id) {
            return None;
        }
        self.values
            .iter()
            .find(|(_, b)| b.contains(id))
            .map(|(k, _)| k.as_str())
    }

    fn without(&self, ids: &RoaringBitmap) -> EnumTag {
        self.map_bitmaps(|b| b - ids)
    }

    fn restricted_to(&self, ids: &RoaringBitmap) -> EnumTag {
        self.map_bitmaps(|b| b & ids)
    }

    fn map_bitmaps(&self, f: impl Fn(&RoaringBitmap) -> RoaringBitmap) -> EnumTag {
        let values: BTreeMap<String, RoaringBitmap> = self
            .values
            .iter()
            .map(|(k, b)| (k.clone(), f(b)))
            .filter(|(_, b)| !b.is_empty())
            .collect();
        let present = f(&self.present);
        EnumTag { values, present }
    }
}

/// The stored values of one tag.
#[derive(Debug, Clone, PartialEq)]
pub enum TagData {
    /// A boolean tag: the ids where it is true (every other live id is false).
    Bool(RoaringBitmap),
    /// Labels (stages, buckets, external string values), one bitmap per value.
    Enum(EnumTag),
    /// Numbers (spend, days since …), with range predicates.
    Numeric(NumericColumn),
}

/// The kind of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// [`TagData::Bool`].
    Bool,
    /// [`TagData::Enum`].
    Enum,
    /// [`TagData::Numeric`].
    Numeric,
}

impl std::fmt::Display for TagKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TagKind::Bool => "bool",
            TagKind::Enum => "enum",
            TagKind::Numeric => "numeric",
        })
    }
}

impl TagData {
    /// A numeric tag from `(id, value)` pairs (see [`NumericColumn::from_pairs`]).
    pub fn numeric(pairs: impl IntoIterator<Item = (u32, f64)>) -> TagData {
        TagData::Numeric(NumericColumn::from_pairs(pairs))
    }

    /// An enum tag (see [`EnumTag::new`]).
    pub fn enumeration(
        values: impl IntoIterator<Item = (String, RoaringBitmap)>,
    ) -> Result<TagData, StoreError> {
        EnumTag::new(values).map(TagData::Enum)
    }

    /// The tag's kind.
    pub fn kind(&self) -> TagKind {
        match self {
            TagData::Bool(_) => TagKind::Bool,
            TagData::Enum(_) => TagKind::Enum,
            TagData::Numeric(_) => TagKind::Numeric,
        }
    }

    /// The ids that hold a value: for a bool tag the ids where it is true.
    pub fn present(&self) -> &RoaringBitmap {
        match self {
            TagData::Bool(b) => b,
            TagData::Enum(e) => e.present(),
            TagData::Numeric(c) => c.present(),
        }
    }

    fn contains_any(&self, ids: &RoaringBitmap) -> bool {
        !self.present().is_disjoint(ids)
    }

    /// The same tag without `ids` (erasure from stored copies such as history snapshots).
    pub fn without(&self, ids: &RoaringBitmap) -> TagData {
        match self {
            TagData::Bool(b) => TagData::Bool(b - ids),
            TagData::Enum(e) => TagData::Enum(e.without(ids)),
            TagData::Numeric(c) => TagData::Numeric(c.without(ids)),
        }
    }

    /// Removes the ids in place (cheap for few ids).
    fn remove_ids(&mut self, ids: &RoaringBitmap) {
        match self {
            TagData::Bool(b) => *b -= ids,
            TagData::Enum(e) => {
                for b in e.values.values_mut() {
                    *b -= ids;
                }
                e.values.retain(|_, b| !b.is_empty());
                e.present -= ids;
            }
            TagData::Numeric(c) => {
                if ids.len() <= 64 {
                    for id in ids {
                        c.remove(id);
                    }
                } else {
                    *c = c.without(ids);
                }
            }
        }
    }

    fn restricted_to(&self, ids: &RoaringBitmap) -> TagData {
        match self {
            TagData::Bool(b) => TagData::Bool(b & ids),
            TagData::Enum(e) => TagData::Enum(e.restricted_to(ids)),
            TagData::Numeric(c) => TagData::Numeric(c.restricted_to(ids)),
        }
    }
}

/// One stored tag value of a profile.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredValue {
    /// A bool tag's value (false for a live id outside the tag's bitmap).
    Bool(bool),
    /// An enum tag's value.
    Label(String),
    /// A numeric tag's value.
    Num(f64),
}

/// The distribution of a tag's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// Live ids where the bool tag is true and where it is false.
    Bool {
        /// Ids where the tag is true.
        true_count: u64,
        /// Live ids where it is false.
        false_count: u64,
    },
    /// Ids per value, largest first (ties by value).
    Enum(Vec<(String, u64)>),
    /// Summary statistics.
    Numeric(NumericSummary),
}

/// The canonical text of a number used as an enum value: integers (up to 2^53) without a
/// fractional part (`3`, `-2`), everything else in Rust's shortest round-trip form (`2.5`).
pub fn canonical_number(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// An immutable view of the whole store. Cheap to clone (tags are shared through `Arc`).
///
/// Invariant: every tag's ids are a subset of the universe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub(crate) universe: Arc<RoaringBitmap>,
    pub(crate) tags: BTreeMap<String, Arc<TagData>>,
    /// Flat copies of bitmaps read by counts and previews (cleared by every change).
    pub(crate) flats: FlatCache,
}

impl Snapshot {
    /// The live profile ids.
    pub fn universe(&self) -> &RoaringBitmap {
        &self.universe
    }

    /// Bytes held by the flat copies of bitmaps that counts and previews have built (see
    /// [`crate::flat`]); they are dropped when the store changes.
    pub fn flat_copies_bytes(&self) -> usize {
        self.flats.heap_bytes()
    }

    /// A tag by name.
    pub fn tag(&self, name: &str) -> Option<&TagData> {
        self.tags.get(name).map(|t| &**t)
    }

    /// Tag names, sorted.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.tags.keys().map(String::as_str)
    }

    /// The value of tag `name` for `id`: `None` when the tag is unknown, the id is not live, or
    /// it has no value. A bool tag gives `Bool(false)` for a live id outside its bitmap.
    pub fn value_of(&self, name: &str, id: u32) -> Option<StoredValue> {
        if !self.universe.contains(id) {
            return None;
        }
        match self.tag(name)? {
            TagData::Bool(b) => Some(StoredValue::Bool(b.contains(id))),
            TagData::Enum(e) => e.value_of(id).map(|s| StoredValue::Label(s.to_owned())),
            TagData::Numeric(c) => c.get(id).map(StoredValue::Num),
        }
    }

    /// Every tag value of `id`, by tag name (empty when the id is not live).
    pub fn values_of(&self, id: u32) -> Vec<(String, StoredValue)> {
        self.tags
            .keys()
            .filter_map(|name| self.value_of(name, id).map(|v| (name.clone(), v)))
            .collect()
    }

    /// The distribution of tag `name`.
    pub fn distribution(&self, name: &str) -> Result<Distribution, StoreError> {
        let tag = self
            .tag(name)
            .ok_or_else(|| StoreError::UnknownTag(name.to_owned()))?;
        Ok(match tag {
            TagData::Bool(b) => Distribution::Bool {
                true_count: b.len(),
                false_count: self.universe.len().saturating_sub(b.len()),
            },
            TagData::Enum(e) => {
                let mut v: Vec<(String, u64)> = e
                    .values()
                    .iter()
                    .map(|(k, b)| (k.clone(), b.len()))
                    .collect();
                v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                Distribution::Enum(v)
            }
            TagData::Numeric(c) => Distribution::Numeric(c.summary()),
        })
    }

    /// Impact preview of replacing tag `name` by `new`: `(gained, lost)`.
    ///
    /// - bool and numeric: ids that enter / leave the tag (for numeric: that get / lose a value;
    ///   changed values are not counted);
    /// - enum: `(id, value)` pairs gained / lost, summed over values (an id moving from 新客 to
    ///   active counts once in each);
    /// - an unknown tag or a change of kind compares the ids holding any value.
    ///
    /// Ids outside the universe in `new` are ignored, as the setters drop them.
    pub fn diff(&self, name: &str, new: &TagData) -> (u64, u64) {
        let u = &*self.universe;
        let live_len = |b: &RoaringBitmap| b.intersection_len(u);
        let Some(old) = self.tag(name) else {
            return (live_len(new.present()), 0);
        };
        match (old, new) {
            (TagData::Enum(o), TagData::Enum(n)) => {
                let mut gained = 0;
                let mut lost = 0;
                let keys: BTreeSet<&String> = o.values().keys().chain(n.values().keys()).collect();
                let empty = RoaringBitmap::new();
                for k in keys {
                    let ob = o.get(k).unwrap_or(&empty);
                    let nb = n.get(k).map(|b| b & u).unwrap_or_default();
                    gained += nb.difference_len(ob);
                    lost += ob.difference_len(&nb);
                }
                (gained, lost)
            }
            _ => {
                let nb = new.present() & u;
                (
                    nb.difference_len(old.present()),
                    old.present().difference_len(&nb),
                )
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct WriterState {
    /// Tags changed since the last save/open of `saved_dir`.
    pub(crate) dirty: BTreeSet<String>,
    /// Tags removed since then (their files must go).
    pub(crate) removed: BTreeSet<String>,
    pub(crate) universe_dirty: bool,
    /// The directory the store was last opened from or saved to.
    pub(crate) saved_dir: Option<PathBuf>,
}

/// The tag store. Readers take an [`Arc<Snapshot>`] ([`TagStore::snapshot`]) and are never
/// blocked by a writer building a tag; writers are serialized, build the new value outside the
/// reader lock and swap it in. Share it with `Arc<TagStore>`.
#[derive(Debug, Default)]
pub struct TagStore {
    current: RwLock<Arc<Snapshot>>,
    pub(crate) writer: Mutex<WriterState>,
}

impl TagStore {
    /// An empty store (empty universe, no tags).
    pub fn new() -> TagStore {
        TagStore::default()
    }

    pub(crate) fn from_parts(snapshot: Snapshot, state: WriterState) -> TagStore {
        TagStore {
            current: RwLock::new(Arc::new(snapshot)),
            writer: Mutex::new(state),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, WriterState> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the current snapshot under the reader lock (copy-on-write: a snapshot or
    /// tag still held by a reader is cloned, otherwise it is changed in place).
    fn modify(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut g = self.current.write().unwrap_or_else(|p| p.into_inner());
        let snap = Arc::make_mut(&mut g);
        snap.flats.clear();
        f(snap);
    }

    fn install(&self, state: &mut WriterState, name: &str, data: TagData) {
        state.dirty.insert(name.to_owned());
        state.removed.remove(name);
        let data = Arc::new(data);
        self.modify(|s| {
            s.tags.insert(name.to_owned(), data);
        });
    }

    /// Replaces (or creates) tag `name`. Ids outside the universe are dropped.
    pub fn set_tag(&self, name: &str, data: TagData) {
        let mut state = self.lock_writer();
        let snap = self.snapshot();
        let data = if data.present().is_subset(&snap.universe) {
            data
        } else {
            data.restricted_to(&snap.universe)
        };
        drop(snap);
        self.install(&mut state, name, data);
    }

    /// Replaces a bool tag: `ids` are where it is true.
    pub fn set_bool(&self, name: &str, ids: RoaringBitmap) {
        self.set_tag(name, TagData::Bool(ids));
    }

    /// Replaces an enum tag (see [`EnumTag::new`]).
    pub fn set_enum(
        &self,
        name: &str,
        values: Vec<(String, RoaringBitmap)>,
    ) -> Result<(), StoreError> {
        self.set_tag(name, TagData::enumeration(values)?);
        Ok(())
    }

    /// Replaces a numeric tag (see [`NumericColumn::from_pairs`]; ids outside the universe are
    /// dropped before the column is built).
    pub fn set_numeric(&self, name: &str, pairs: impl IntoIterator<Item = (u32, f64)>) {
        let mut state = self.lock_writer();
        let snap = self.snapshot();
        let u = &snap.universe;
        let col = NumericColumn::from_pairs(pairs.into_iter().filter(|(id, _)| u.contains(*id)));
        drop(snap);
        self.install(&mut state, name, TagData::Numeric(col));
    }

    /// Replaces the universe. Ids that leave it leave every tag too.
    pub fn set_universe(&self, universe: RoaringBitmap) {
        let mut state = self.lock_writer();
        let snap = self.snapshot();
        let gone = &*snap.universe - &universe;
        let mut changed: Vec<(String, Arc<TagData>)> = Vec::new();
        if !gone.is_empty() {
            for (name, tag) in &snap.tags {
                if tag.contains_any(&gone) {
                    changed.push((name.clone(), Arc::new(tag.without(&gone))));
                }
            }
        }
        drop(snap);
        state.universe_dirty = true;
        for (name, _) in &changed {
            state.dirty.insert(name.clone());
        }
        let universe = Arc::new(universe);
        self.modify(|s| {
            s.universe = universe;
            s.tags.extend(changed);
        });
    }

    /// Removes tag `name`; false when there was none.
    pub fn remove_tag(&self, name: &str) -> bool {
        let mut state = self.lock_writer();
        let mut found = false;
        self.modify(|s| found = s.tags.remove(name).is_some());
        if found {
            state.dirty.remove(name);
            state.removed.insert(name.to_owned());
        }
        found
    }

    /// Identity merge: `old_id` leaves the universe and every tag. The survivor's values are
    /// recomputed by the caller. Returns the tags that held the id.
    pub fn retire(&self, old_id: u32) -> Vec<String> {
        let mut ids = RoaringBitmap::new();
        ids.insert(old_id);
        self.remove_ids(&ids)
    }

    /// Erasure: `id` is removed from everything in memory; the next [`TagStore::save`] rewrites
    /// the files that held it. Returns the tags that held the id.
    pub fn erase(&self, id: u32) -> Vec<String> {
        self.retire(id)
    }

    /// Removes many ids from the universe and every tag (batch form of [`TagStore::retire`]).
    pub fn remove_ids(&self, ids: &RoaringBitmap) -> Vec<String> {
        let mut state = self.lock_writer();
        let mut touched = Vec::new();
        let mut universe_changed = false;
        self.modify(|s| {
            if !s.universe.is_disjoint(ids) {
                *Arc::make_mut(&mut s.universe) -= ids;
                universe_changed = true;
            }
            for (name, tag) in s.tags.iter_mut() {
                if tag.contains_any(ids) {
                    Arc::make_mut(tag).remove_ids(ids);
                    touched.push(name.clone());
                }
            }
        });
        state.universe_dirty |= universe_changed;
        state.dirty.extend(touched.iter().cloned());
        touched
    }

    /// See [`Snapshot::value_of`].
    pub fn value_of(&self, name: &str, id: u32) -> Option<StoredValue> {
        self.snapshot().value_of(name, id)
    }

    /// See [`Snapshot::values_of`].
    pub fn values_of(&self, id: u32) -> Vec<(String, StoredValue)> {
        self.snapshot().values_of(id)
    }

    /// See [`Snapshot::distribution`].
    pub fn distribution(&self, name: &str) -> Result<Distribution, StoreError> {
        self.snapshot().distribution(name)
    }

    /// See [`Snapshot::diff`].
    pub fn diff(&self, name: &str, new: &TagData) -> (u64, u64) {
        self.snapshot().diff(name, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm(ids: &[u32]) -> RoaringBitmap {
        ids.iter().copied().collect()
    }

    fn store() -> TagStore {
        let s = TagStore::new();
        s.set_universe(bm(&[1, 2, 3, 4, 5, 6]));
        s.set_bool("vip", bm(&[1, 2, 99]));
        s.set_enum(
            "stage",
            vec![
                ("潜客".into(), bm(&[1, 3])),
                ("active".into(), bm(&[2])),
                ("x".into(), bm(&[])),
            ],
        )
        .unwrap();
        s.set_numeric("spend", [(1, 10.0), (2, 600.0), (4, 600.0), (99, 5.0)]);
        s
    }

    #[test]
    fn setters_drop_ids_outside_universe() {
        let s = store();
        let snap = s.snapshot();
        assert_eq!(snap.tag("vip").unwrap().present(), &bm(&[1, 2]));
        assert_eq!(snap.tag("spend").unwrap().present(), &bm(&[1, 2, 4]));
        assert_eq!(snap.value_of("spend", 99), None);
    }

    #[test]
    fn point_reads() {
        let s = store();
        assert_eq!(s.value_of("vip", 3), Some(StoredValue::Bool(false)));
        assert_eq!(s.value_of("vip", 100), None);
        assert_eq!(
            s.value_of("stage", 3),
            Some(StoredValue::Label("潜客".into()))
        );
        assert_eq!(s.value_of("stage", 4), None);
        assert_eq!(s.value_of("spend", 4), Some(StoredValue::Num(600.0)));
        assert_eq!(
            s.values_of(2),
            vec![
                ("spend".into(), StoredValue::Num(600.0)),
                ("stage".into(), StoredValue::Label("active".into())),
                ("vip".into(), StoredValue::Bool(true)),
            ]
        );
    }

    #[test]
    fn enum_overlap_is_refused() {
        let err = EnumTag::new([
            ("a".to_string(), bm(&[1, 2])),
            ("b".to_string(), bm(&[2, 3])),
        ])
        .unwrap_err();
        assert!(
            matches!(err, StoreError::EnumOverlap { ref value, id: 2 } if value == "b"),
            "{err}"
        );
    }

    #[test]
    fn distributions() {
        let s = store();
        assert_eq!(
            s.distribution("vip").unwrap(),
            Distribution::Bool {
                true_count: 2,
                false_count: 4
            }
        );
        assert_eq!(
            s.distribution("stage").unwrap(),
            Distribution::Enum(vec![("潜客".into(), 2), ("active".into(), 1)])
        );
        let Distribution::Numeric(n) = s.distribution("spend").unwrap() else {
            panic!()
        };
        assert_eq!((n.count, n.min, n.max), (3, Some(10.0), Some(600.0)));
        assert!(matches!(
            s.distribution("nope"),
            Err(StoreError::UnknownTag(_))
        ));
    }

    #[test]
    fn retire_and_erase_remove_everywhere() {
        let s = store();
        let old = s.snapshot();
        let touched = s.retire(2);
        assert_eq!(
            touched,
            vec!["spend".to_string(), "stage".to_string(), "vip".to_string()]
        );
        let erased = s.erase(1);
        assert_eq!(erased.len(), 3);
        let snap = s.snapshot();
        for id in [1, 2] {
            assert!(!snap.universe().contains(id));
            for name in snap.tag_names() {
                assert!(
                    !snap.tag(name).unwrap().present().contains(id),
                    "{name} still holds {id}"
                );
            }
            assert!(snap.values_of(id).is_empty());
        }
        assert_eq!(
            snap.tag("stage").unwrap(),
            &TagData::enumeration([("潜客".into(), bm(&[3]))]).unwrap()
        );
        assert_eq!(snap.tag("spend").unwrap(), &TagData::numeric([(4, 600.0)]));
        // A reader's old snapshot is unaffected (copy on write).
        assert_eq!(old.value_of("spend", 2), Some(StoredValue::Num(600.0)));
        assert!(old.tag("vip").unwrap().present().contains(1));
    }

    #[test]
    fn shrinking_universe_prunes_tags() {
        let s = store();
        s.set_universe(bm(&[2, 3, 4, 7]));
        let snap = s.snapshot();
        assert_eq!(snap.tag("vip").unwrap().present(), &bm(&[2]));
        assert_eq!(snap.tag("spend").unwrap().present(), &bm(&[2, 4]));
        assert_eq!(snap.value_of("vip", 7), Some(StoredValue::Bool(false)));
    }

    #[test]
    fn diffs() {
        let s = store();
        assert_eq!(s.diff("vip", &TagData::Bool(bm(&[2, 3, 4, 99]))), (2, 1));
        let new = TagData::enumeration([("潜客".into(), bm(&[1])), ("active".into(), bm(&[2, 3]))])
            .unwrap();
        assert_eq!(s.diff("stage", &new), (1, 1));
        assert_eq!(s.diff("new_tag", &TagData::Bool(bm(&[1, 2, 50]))), (2, 0));
        assert_eq!(
            s.diff("spend", &TagData::numeric([(1, 1.0), (5, 2.0)])),
            (1, 2)
        );
    }

    #[test]
    fn remove_tag_and_canonical_numbers() {
        let s = store();
        assert!(s.remove_tag("vip"));
        assert!(!s.remove_tag("vip"));
        assert!(s.snapshot().tag("vip").is_none());
        assert_eq!(canonical_number(3.0), "3");
        assert_eq!(canonical_number(-2.0), "-2");
        assert_eq!(canonical_number(2.5), "2.5");
    }
}
