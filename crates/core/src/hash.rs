//! Hashing and tables for keys that are already hashes.
//!
//! Identifier and dedup keys are 128-bit xxh3 digests; hashing them again (SipHash) is wasted
//! work. [`KeyHasher`] folds the digest into 64 bits. [`IdIndex`] is the table that maps
//! identifier digests to profile ids.

use std::hash::{BuildHasherDefault, Hasher};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A hasher for `u128` digests: XOR-folds them to 64 bits.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u128 keys; a simple FNV-1a keeps other key types correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = fold(v);
    }
}

/// Build-hasher for maps keyed by digests.
pub type KeyBuild = BuildHasherDefault<KeyHasher>;

/// A hash map keyed by 128-bit digests.
pub type KeyMap<V> = std::collections::HashMap<u128, V, KeyBuild>;

/// A hash set of 128-bit digests.
pub type KeySet = std::collections::HashSet<u128, KeyBuild>;

fn fold(v: u128) -> u64 {
    (v as u64) ^ ((v >> 64) as u64)
}

/// Entries per line of an [`IdIndex`].
const SLOTS: usize = 3;

/// One cache line of an [`IdIndex`]: three keys, their ids, and which slots are in use.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line {
    keys: [u128; SLOTS],
    ids: [u32; SLOTS],
    /// Bits 0-1: how many slots (a prefix) have been filled. Bits 2-4: which of those hold a
    /// removed entry (a tombstone), for slot 0, 1, 2.
    meta: u32,
}

impl Line {
    fn filled(&self) -> usize {
        (self.meta & 3) as usize
    }

    fn tomb(&self, slot: usize) -> bool {
        self.meta & (4 << slot) != 0
    }
}

/// A map from 128-bit digests to `u32` ids (the identifier index of a
/// [`ProfileBook`](crate::ProfileBook)).
///
/// Open addressing over 64-byte, cache-line-aligned lines of three entries, each line holding
/// the keys and their ids together; a key's home line is chosen from its folded digest and
/// collisions move on to the next line (linear probing by line). A lookup therefore reads one
/// cache line, on one page, in the common case, and an insert writes the line that the lookup
/// before it read. (A `HashMap<u128, u32>` keeps its control bytes and its entries in two
/// separate arrays: an absent key's lookup reads only the control bytes, and inserting the key
/// then misses on the entry, on another page.) The table is filled to at most three quarters
/// of its slots: 28 to 57 bytes per entry (just filled, just doubled), against 38 to 75 for
/// the `HashMap` (33-byte buckets, at most seven eighths full).
///
/// A removed entry leaves a tombstone when its line is full (a later key may have been pushed
/// past it); growing or rebuilding clears them.
#[derive(Clone, Default)]
pub struct IdIndex {
    lines: Vec<Line>,
    /// Live entries.
    len: usize,
    /// Tombstones.
    tombs: usize,
}

/// Most entries (live and tombstones) that `lines` lines may hold: three quarters of the slots.
fn max_fill(lines: usize) -> usize {
    lines * SLOTS * 3 / 4
}

/// Lines needed to hold `items` entries.
fn lines_for(items: usize) -> usize {
    (items * 4).div_ceil(SLOTS * 3).max(1)
}

/// Where a search for `key` ends: the entry holding it, or the slot a new entry would take.
enum Probe {
    Found(usize, usize),
    Absent {
        /// The first tombstone on the way, else the first free slot of the first non-full line.
        line: usize,
        slot: usize,
        tomb: bool,
    },
}

impl IdIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index with room for `items` entries.
    pub fn with_capacity(items: usize) -> Self {
        let mut index = Self::new();
        index.reserve(items);
        index
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many entries the index holds before it grows.
    pub fn capacity(&self) -> usize {
        max_fill(self.lines.len()) - self.tombs
    }

    /// Bytes of the table.
    pub fn table_bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    fn home(&self, key: u128) -> usize {
        // Multiply-shift: maps the folded digest onto any number of lines.
        ((u128::from(fold(key)) * self.lines.len() as u128) >> 64) as usize
    }

    fn next(&self, line: usize) -> usize {
        if line + 1 == self.lines.len() {
            0
        } else {
            line + 1
        }
    }

    /// The id stored for `key`.
    #[inline]
    pub fn get(&self, key: &u128) -> Option<u32> {
        if self.lines.is_empty() {
            return None;
        }
        let mut i = self.home(*key);
        loop {
            let line = &self.lines[i];
            let filled = line.filled();
            for j in 0..filled {
                if line.keys[j] == *key && !line.tomb(j) {
                    return Some(line.ids[j]);
                }
            }
            // No entry is ever stored past a line that is not full.
            if filled < SLOTS {
                return None;
            }
            i = self.next(i);
        }
    }

    /// Reads the line where a search for `key` starts, and nothing else: no branch depends
    /// on what it holds. A run of `touch`es, one per key, has all its cache and TLB misses in
    /// flight at once (a run of [`IdIndex::get`]s does not: each one branches on the line it
    /// loaded, and every mispredicted branch discards the loads issued after it). The `get`s
    /// that follow then find their lines in cache. The value returned means nothing; fold it
    /// into something the optimiser must keep (`std::hint::black_box`).
    #[inline]
    pub fn touch(&self, key: u128) -> u32 {
        self.lines.get(self.home(key)).map_or(0, |line| line.meta)
    }

    /// Whether `key` is in the index.
    pub fn contains_key(&self, key: &u128) -> bool {
        self.get(key).is_some()
    }

    /// Searches a non-empty table.
    fn probe(&self, key: u128) -> Probe {
        let mut i = self.home(key);
        let mut tomb = None;
        loop {
            let line = &self.lines[i];
            let filled = line.filled();
            for j in 0..filled {
                if line.tomb(j) {
                    tomb = tomb.or(Some((i, j)));
                } else if line.keys[j] == key {
                    return Probe::Found(i, j);
                }
            }
            if filled < SLOTS {
                return match tomb {
                    Some((line, slot)) => Probe::Absent {
                        line,
                        slot,
                        tomb: true,
                    },
                    None => Probe::Absent {
                        line: i,
                        slot: filled,
                        tomb: false,
                    },
                };
            }
            i = self.next(i);
        }
    }

    /// Sets the id of `key`; returns the id it had.
    pub fn insert(&mut self, key: u128, id: u32) -> Option<u32> {
        if self.lines.is_empty() {
            self.reserve(1);
        }
        let (i, j, tomb) = match self.probe(key) {
            Probe::Found(i, j) => return Some(std::mem::replace(&mut self.lines[i].ids[j], id)),
            Probe::Absent { line, slot, tomb } => (line, slot, tomb),
        };
        if !tomb && self.len + self.tombs + 1 > max_fill(self.lines.len()) {
            self.reserve(1);
            self.push_new(key, id);
        } else {
            let line = &mut self.lines[i];
            line.keys[j] = key;
            line.ids[j] = id;
            if tomb {
                line.meta &= !(4 << j);
                self.tombs -= 1;
            } else {
                line.meta += 1;
            }
        }
        self.len += 1;
        None
    }

    /// Stores a key known to be absent, in a table with room and no tombstones on its way
    /// (a rebuild). Does not count it.
    fn push_new(&mut self, key: u128, id: u32) {
        let mut i = self.home(key);
        while self.lines[i].filled() == SLOTS {
            i = self.next(i);
        }
        let line = &mut self.lines[i];
        let j = line.filled();
        line.keys[j] = key;
        line.ids[j] = id;
        line.meta += 1;
    }

    /// Removes `key`; returns its id.
    pub fn remove(&mut self, key: &u128) -> Option<u32> {
        if self.lines.is_empty() {
            return None;
        }
        let Probe::Found(i, j) = self.probe(*key) else {
            return None;
        };
        let line = &mut self.lines[i];
        let id = line.ids[j];
        let filled = line.filled();
        if filled < SLOTS {
            // No search goes past a line that is not full (and this one never was, so it
            // holds no tombstone): the line's last entry takes the removed one's place.
            let last = filled - 1;
            line.keys[j] = line.keys[last];
            line.ids[j] = line.ids[last];
            line.meta -= 1;
        } else {
            line.meta |= 4 << j;
            self.tombs += 1;
        }
        self.len -= 1;
        Some(id)
    }

    /// Makes room for `additional` more entries without growing.
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len.saturating_add(additional);
        let lines = self.lines.len();
        if need == 0 || self.len + self.tombs + additional <= max_fill(lines) {
            return;
        }
        let full = max_fill(lines);
        let items = if need <= full / 2 {
            // Mostly tombstones: rebuild at the same size.
            full
        } else {
            // Grow geometrically, so that inserting n entries one by one moves each O(1)
            // times on average.
            need.max(full.saturating_mul(2))
        };
        self.rebuild(lines_for(items));
    }

    /// Moves every entry into a new table of `lines` lines.
    fn rebuild(&mut self, lines: usize) {
        let old = std::mem::replace(&mut self.lines, vec![Line::default(); lines]);
        self.tombs = 0;
        for line in &old {
            for j in 0..line.filled() {
                if !line.tomb(j) {
                    self.push_new(line.keys[j], line.ids[j]);
                }
            }
        }
    }

    /// The entries, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, u32)> + '_ {
        self.lines.iter().flat_map(|line| {
            (0..line.filled())
                .filter(|j| !line.tomb(*j))
                .map(|j| (line.keys[j], line.ids[j]))
        })
    }
}

impl std::fmt::Debug for IdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(u128, u32)> for IdIndex {
    fn from_iter<I: IntoIterator<Item = (u128, u32)>>(entries: I) -> Self {
        let entries = entries.into_iter();
        let mut index = Self::with_capacity(entries.size_hint().0);
        for (k, v) in entries {
            index.insert(k, v);
        }
        index
    }
}

/// Serialised as a map, exactly as a `HashMap<u128, u32>` is: snapshots written before the
/// index had its own table load as they are.
impl Serialize for IdIndex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The length up front: bincode (snapshots) needs it.
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (k, v) in self.iter() {
            map.serialize_entry(&k, &v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for IdIndex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IndexVisitor;
        impl<'de> Visitor<'de> for IndexVisitor {
            type Value = IdIndex;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of 128-bit keys to ids")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<IdIndex, A::Error> {
                // Trust the length only so far: a damaged one must not allocate without bound.
                let hint = access.size_hint().unwrap_or(0).min(1 << 24);
                let mut index = IdIndex::with_capacity(hint);
                while let Some((k, v)) = access.next_entry::<u128, u32>()? {
                    index.insert(k, v);
                }
                Ok(index)
            }
        }
        deserializer.deserialize_map(IndexVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Keys from a small pool. Most share one folded hash (so they share a home line and form
    /// long chains through full lines); the rest are spread.
    fn key(i: u8) -> u128 {
        let i = u128::from(i);
        if i % 4 == 0 {
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        } else {
            // lo ^ hi is the same for all of these.
            (i << 64) | i
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Reserve(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..48, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u8..48).prop_map(Op::Remove),
            1 => (0u8..20).prop_map(Op::Reserve),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// The index behaves as a `HashMap<u128, u32>`, through collisions, tombstones,
        /// growth and rebuilds.
        #[test]
        fn behaves_as_a_hash_map(start in 0usize..8, ops in proptest::collection::vec(op(), 0..300)) {
            let mut index = IdIndex::with_capacity(start);
            let mut model: HashMap<u128, u32> = HashMap::new();
            for op in &ops {
                match *op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(index.insert(key(k), v), model.insert(key(k), v));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(index.remove(&key(k)), model.remove(&key(k)));
                    }
                    Op::Reserve(n) => {
                        index.reserve(usize::from(n));
                        prop_assert!(index.capacity() >= index.len() + usize::from(n));
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                for k in 0..48 {
                    prop_assert_eq!(index.get(&key(k)), model.get(&key(k)).copied());
                }
                prop_assert!(index.len() + index.tombs <= max_fill(index.lines.len()));
            }
            // A clone holds the same entries and keeps working.
            let mut copy = index.clone();
            for k in 0..48 {
                prop_assert_eq!(copy.get(&key(k)), index.get(&key(k)));
            }
            copy.insert(key(1), 7);
            prop_assert_eq!(copy.get(&key(1)), Some(7));
            let mut entries: Vec<(u128, u32)> = index.iter().collect();
            entries.sort_unstable();
            let mut expected: Vec<(u128, u32)> = model.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(entries, expected);
        }
    }

    #[test]
    fn grows_geometrically() {
        let mut index = IdIndex::new();
        let mut capacities = vec![index.capacity()];
        for i in 0..200_000u32 {
            index.insert(
                u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                i,
            );
            if index.capacity() != capacities[capacities.len() - 1] {
                capacities.push(index.capacity());
            }
        }
        assert_eq!(index.len(), 200_000);
        // Each growth at least doubles the capacity.
        assert!(
            capacities.windows(2).skip(1).all(|w| w[1] >= 2 * w[0]),
            "{capacities:?}"
        );
    }

    #[test]
    fn serialises_as_a_hash_map() {
        let mut index = IdIndex::new();
        let mut map: KeyMap<u32> = KeyMap::default();
        for i in 0..1000u32 {
            let k = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            index.insert(k, i);
            map.insert(k, i);
        }
        // A HashMap's encoding (an old snapshot) loads into the index, and back.
        let old = serde_json::to_string(&map).expect("json");
        let loaded: IdIndex = serde_json::from_str(&old).expect("loads");
        assert_eq!(loaded.len(), 1000);
        assert!(map.iter().all(|(k, v)| loaded.get(k) == Some(*v)));
        let new = serde_json::to_string(&loaded).expect("json");
        let back: KeyMap<u32> = serde_json::from_str(&new).expect("loads");
        assert_eq!(back, map);
    }

    #[test]
    fn lines_are_cache_lines() {
        assert_eq!(std::mem::size_of::<Line>(), 64);
        assert_eq!(std::mem::align_of::<Line>(), 64);
        for n in [1, 10, 1000, 100_000] {
            assert!(IdIndex::with_capacity(n).capacity() >= n);
        }
    }
}
