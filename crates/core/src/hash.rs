//! Hashing and tables for keys that are already hashes.
//!
//! Identifier and dedup keys are 128-bit xxh3 digests; hashing them again (SipHash) is wasted
//! work. [`KeyHasher`] folds the digest into 64 bits. [`IdIndex`] is the table that maps
//! identifier digests to profile ids.

use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::mpsc;

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

/// One shard of an [`IdIndex`]: a table of lines.
#[derive(Clone, Default)]
struct Table {
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

impl Table {
    /// Number of entries.
    fn len(&self) -> usize {
        self.len
    }

    /// How many entries the index holds before it grows.
    fn capacity(&self) -> usize {
        max_fill(self.lines.len()) - self.tombs
    }

    /// Bytes of the table.
    fn table_bytes(&self) -> usize {
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
    fn get(&self, key: &u128) -> Option<u32> {
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
    fn touch(&self, key: u128) -> u32 {
        self.lines.get(self.home(key)).map_or(0, |line| line.meta)
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
    fn insert(&mut self, key: u128, id: u32) -> Option<u32> {
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
    fn remove(&mut self, key: &u128) -> Option<u32> {
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
    fn reserve(&mut self, additional: usize) {
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
    fn iter(&self) -> impl Iterator<Item = (u128, u32)> + '_ {
        self.lines.iter().flat_map(|line| {
            (0..line.filled())
                .filter(|j| !line.tomb(*j))
                .map(|j| (line.keys[j], line.ids[j]))
        })
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
///
/// The index is split into two shards, each its own table, by one bit of the key
/// ([`IdIndex::resolve_windows`] gives each shard to its own thread). That bit is independent
/// of the bits that choose a key's line, so within a shard keys spread as in one table, and
/// the shards are as full as each other, give or take a few standard deviations
/// ([`IdIndex::reserve`] leaves that much slack).
#[derive(Clone, Default)]
pub struct IdIndex {
    shards: [Table; SHARDS],
}

/// Shards of an [`IdIndex`].
const SHARDS: usize = 2;

/// The shard of `key`: bit 64 (the low bit of its high half). A key's line within its shard
/// comes from the high bits of `fold(key)`, which this bit does not decide.
#[inline]
fn shard_of(key: u128) -> usize {
    ((key >> 64) as usize) & (SHARDS - 1)
}

/// Room to reserve in each shard for `items` more entries spread over all shards at random:
/// the mean share plus 8 standard deviations (of a binomial share, about `sqrt(items) / 2`),
/// so that a reserved index does not grow; small counts go to every shard whole.
fn per_shard(items: usize) -> usize {
    if items <= 64 {
        items
    } else {
        items / SHARDS + 4 * items.isqrt()
    }
}

/// Keys per run of [`Table::touch`]es before the [`Table::get`]s (or inserts) that use them,
/// when a thread works through a window's keys: enough to keep every miss slot busy, few enough
/// that the lines and their pages are still cached when they are used.
const LOOK_AHEAD: usize = 128;

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
        self.shards.iter().map(Table::len).sum()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries the index holds before a shard grows (if keys spread evenly).
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(Table::capacity).sum()
    }

    /// Bytes of the tables.
    pub fn table_bytes(&self) -> usize {
        self.shards.iter().map(Table::table_bytes).sum()
    }

    /// The id stored for `key`.
    #[inline]
    pub fn get(&self, key: &u128) -> Option<u32> {
        self.shards[shard_of(*key)].get(key)
    }

    /// Reads the line where a search for `key` starts, and nothing else: no branch depends
    /// on what it holds. A run of `touch`es, one per key, has all its cache and TLB misses in
    /// flight at once (a run of [`IdIndex::get`]s does not: each one branches on the line it
    /// loaded, and every mispredicted branch discards the loads issued after it). The `get`s
    /// that follow then find their lines in cache. The value returned means nothing; fold it
    /// into something the optimiser must keep (`std::hint::black_box`).
    #[inline]
    pub fn touch(&self, key: u128) -> u32 {
        self.shards[shard_of(key)].touch(key)
    }

    /// Whether `key` is in the index.
    pub fn contains_key(&self, key: &u128) -> bool {
        self.get(key).is_some()
    }

    /// Sets the id of `key`; returns the id it had.
    pub fn insert(&mut self, key: u128, id: u32) -> Option<u32> {
        self.shards[shard_of(key)].insert(key, id)
    }

    /// Removes `key`; returns its id.
    pub fn remove(&mut self, key: &u128) -> Option<u32> {
        self.shards[shard_of(*key)].remove(key)
    }

    /// Makes room for `additional` more entries (spread over the shards as random keys are)
    /// without growing.
    pub fn reserve(&mut self, additional: usize) {
        let per = per_shard(additional);
        for shard in &mut self.shards {
            shard.reserve(per);
        }
    }

    /// The entries, in table order (shard by shard).
    pub fn iter(&self) -> impl Iterator<Item = (u128, u32)> + '_ {
        self.shards.iter().flat_map(Table::iter)
    }

    /// Resolves `windows` windows of keys in order, each against the index as all the windows
    /// before it left it, with two threads; the result is exactly that of looking up and
    /// inserting every key one after another on one thread.
    ///
    /// For window `w`:
    /// 1. `hash(w, keys)` appends the window's keys to `keys`.
    /// 2. Each thread looks up the window's keys of its own shard (touching a run of
    ///    [`LOOK_AHEAD`] lines before reading them), giving `hints[i]`: the id of `keys[i]` in
    ///    the index as it was when the window began.
    /// 3. `decide(w, keys, hints, overlay)` runs on the calling thread and records every index
    ///    write of the window in `overlay` (which starts empty) instead of the index. The
    ///    current id of a key of the window is therefore `overlay.get(key).or(hints[i])`.
    ///    `decide` has no access to the index meanwhile (it is borrowed here), so it cannot
    ///    read a state that the window's own writes have made stale.
    /// 4. Each thread applies the overlay's writes of its shard, in the order they were first
    ///    made (so each shard's table is laid out exactly as by sequential inserts), before
    ///    it looks up the keys of the next window.
    ///
    /// Both cores thus issue the index's cache and TLB misses (each has its own TLB and page
    /// walkers), and hashing moves off the calling thread: the helper thread hashes window
    /// `w + 1` while `decide` works through window `w`. Each thread keeps the shard it owns, so
    /// no table is shared. Writes only (no removals) go through the overlay.
    ///
    /// If the helper thread cannot be started, everything runs on the calling thread, in the
    /// same phases. A panic in `hash` or `decide` is passed on after the helper has stopped;
    /// writes of the windows not yet applied are then lost.
    pub fn resolve_windows<H, D>(&mut self, windows: usize, hash: H, mut decide: D)
    where
        H: Fn(usize, &mut Vec<u128>) + Sync,
        D: FnMut(usize, &[u128], &[Option<u32>], &mut Overlay),
    {
        if windows == 0 {
            return;
        }
        let [mine, theirs] = &mut self.shards;
        let hash = &hash;
        let decide = &mut decide;
        std::thread::scope(|scope| {
            let (to_helper, jobs) = mpsc::channel::<Go>();
            let (to_main, replies) = mpsc::channel::<Reply>();
            // The helper gets its shard once it runs, so that the shard is still here if it
            // cannot be started.
            let (give, shard) = mpsc::channel::<&mut Table>();
            let spawned = std::thread::Builder::new()
                .name("id-index-shard".into())
                .spawn_scoped(scope, move || {
                    if let Ok(table) = shard.recv() {
                        helper(table, windows, hash, &jobs, &to_main);
                    }
                });
            if spawned.is_err() {
                resolve_inline([mine, theirs], windows, hash, decide);
                return;
            }
            if give.send(theirs).is_err() {
                return;
            }
            let mut overlay = Overlay::default();
            let (mut hints, mut own, mut own_hints) = (Vec::new(), Vec::new(), Vec::new());
            let mut spare = (Vec::new(), Vec::new());
            for w in 0..windows {
                // The helper is gone only if it panicked: the scope passes that on.
                let Ok(Reply::Keys(keys)) = replies.recv() else {
                    return;
                };
                let go = Go {
                    log: std::mem::take(&mut overlay.logs[1]),
                    keys: std::mem::take(&mut spare.0),
                    hints: std::mem::take(&mut spare.1),
                };
                if to_helper.send(go).is_err() {
                    return;
                }
                apply_log(mine, &overlay.logs[0]);
                overlay.clear();
                own.clear();
                own.extend(keys.iter().filter(|k| shard_of(**k) == 0));
                own_hints.clear();
                look_up(mine, &own, &mut own_hints);
                let Ok(Reply::Hints { hints: theirs, log }) = replies.recv() else {
                    return;
                };
                overlay.logs[1] = log;
                merge_hints(&keys, &own_hints, &theirs, &mut hints);
                decide(w, &keys, &hints, &mut overlay);
                spare = (keys, theirs);
            }
            let go = Go {
                log: std::mem::take(&mut overlay.logs[1]),
                keys: Vec::new(),
                hints: Vec::new(),
            };
            // A failed send means the helper panicked: the scope passes that on.
            let _ = to_helper.send(go);
            apply_log(mine, &overlay.logs[0]);
        });
    }
}

/// Index writes decided during one window of [`IdIndex::resolve_windows`], not yet applied.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    /// Position of each written key in its shard's log.
    at: KeyMap<u32>,
    /// Per shard, `(key, id)` in the order keys were first written; writing a key again
    /// updates its entry.
    logs: [Vec<(u128, u32)>; SHARDS],
}

impl Overlay {
    /// The id last written for `key` in this window, if any.
    #[inline]
    pub fn get(&self, key: u128) -> Option<u32> {
        let pos = *self.at.get(&key)?;
        self.logs[shard_of(key)].get(pos as usize).map(|e| e.1)
    }

    /// Records that `key` now maps to `id`; returns the id written for it earlier in this
    /// window (not the id it has in the index: that is the caller's hint).
    #[inline]
    pub fn insert(&mut self, key: u128, id: u32) -> Option<u32> {
        let log = &mut self.logs[shard_of(key)];
        match self.at.entry(key) {
            Entry::Occupied(e) => log
                .get_mut(*e.get() as usize)
                .map(|entry| std::mem::replace(&mut entry.1, id)),
            Entry::Vacant(e) => {
                e.insert(log.len() as u32);
                log.push((key, id));
                None
            }
        }
    }

    /// Number of keys written.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn clear(&mut self) {
        self.at.clear();
        for log in &mut self.logs {
            log.clear();
        }
    }
}

/// Calling thread to helper: apply `log` to your shard, then look up your keys of the window
/// (`keys` and `hints` are buffers handed back for reuse).
struct Go {
    log: Vec<(u128, u32)>,
    keys: Vec<u128>,
    hints: Vec<Option<u32>>,
}

/// Helper to calling thread.
enum Reply {
    /// The keys of the next window.
    Keys(Vec<u128>),
    /// The lookups of the helper's keys of the window, in order, and the log buffer back.
    Hints {
        hints: Vec<Option<u32>>,
        log: Vec<(u128, u32)>,
    },
}

/// The helper thread of [`IdIndex::resolve_windows`]: owns shard 1.
fn helper<H: Fn(usize, &mut Vec<u128>)>(
    table: &mut Table,
    windows: usize,
    hash: &H,
    jobs: &mpsc::Receiver<Go>,
    to_main: &mpsc::Sender<Reply>,
) {
    let (mut keys, mut own) = (Vec::new(), Vec::new());
    for w in 0..windows {
        keys.clear();
        hash(w, &mut keys);
        own.clear();
        own.extend(keys.iter().filter(|k| shard_of(**k) == 1));
        if to_main.send(Reply::Keys(keys)).is_err() {
            return;
        }
        let Ok(Go {
            mut log,
            keys: spare,
            mut hints,
        }) = jobs.recv()
        else {
            return;
        };
        apply_log(table, &log);
        log.clear();
        keys = spare;
        hints.clear();
        look_up(table, &own, &mut hints);
        if to_main.send(Reply::Hints { hints, log }).is_err() {
            return;
        }
    }
    if let Ok(go) = jobs.recv() {
        apply_log(table, &go.log);
    }
}

/// [`IdIndex::resolve_windows`] on the calling thread alone, in the same phases.
fn resolve_inline<H, D>(shards: [&mut Table; SHARDS], windows: usize, hash: &H, decide: &mut D)
where
    H: Fn(usize, &mut Vec<u128>),
    D: FnMut(usize, &[u128], &[Option<u32>], &mut Overlay),
{
    let [first, second] = shards;
    let mut overlay = Overlay::default();
    let (mut keys, mut hints) = (Vec::new(), Vec::new());
    let (mut own, mut found): ([Vec<u128>; SHARDS], [Vec<Option<u32>>; SHARDS]) =
        Default::default();
    for w in 0..windows {
        keys.clear();
        hash(w, &mut keys);
        for (s, table) in [&*first, &*second].into_iter().enumerate() {
            own[s].clear();
            own[s].extend(keys.iter().filter(|k| shard_of(**k) == s));
            found[s].clear();
            look_up(table, &own[s], &mut found[s]);
        }
        merge_hints(&keys, &found[0], &found[1], &mut hints);
        overlay.clear();
        decide(w, &keys, &hints, &mut overlay);
        apply_log(first, &overlay.logs[0]);
        apply_log(second, &overlay.logs[1]);
    }
}

/// Touches the lines of `keys` back to back, so that their misses overlap.
fn touch_run(table: &Table, keys: impl Iterator<Item = u128>) {
    let sink = keys.fold(0u32, |sink, k| sink ^ table.touch(k));
    std::hint::black_box(sink);
}

/// Looks up `keys` (all of `table`'s shard) in order into `out`: the lines of a run of
/// [`LOOK_AHEAD`] keys are touched first, then read.
fn look_up(table: &Table, keys: &[u128], out: &mut Vec<Option<u32>>) {
    for run in keys.chunks(LOOK_AHEAD) {
        touch_run(table, run.iter().copied());
        out.extend(run.iter().map(|k| table.get(k)));
    }
}

/// Applies a window's writes to one shard, in order, touching each run's lines first.
fn apply_log(table: &mut Table, log: &[(u128, u32)]) {
    for run in log.chunks(LOOK_AHEAD) {
        touch_run(table, run.iter().map(|e| e.0));
        for &(k, id) in run {
            table.insert(k, id);
        }
    }
}

/// Interleaves the lookups of each shard's keys back into the order of `keys`.
fn merge_hints(
    keys: &[u128],
    first: &[Option<u32>],
    second: &[Option<u32>],
    out: &mut Vec<Option<u32>>,
) {
    let (mut a, mut b) = (first.iter(), second.iter());
    out.clear();
    out.extend(keys.iter().map(|k| {
        let next = if shard_of(*k) == 0 {
            a.next()
        } else {
            b.next()
        };
        next.copied().flatten()
    }));
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
        let mut map = serializer.serialize_map(Some(self.len()))?;
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
                for t in &index.shards {
                    prop_assert!(t.len + t.tombs <= max_fill(t.lines.len()));
                }
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
        let capacities = |index: &IdIndex| index.shards.each_ref().map(Table::capacity);
        let mut history = vec![capacities(&index)];
        for i in 0..200_000u32 {
            index.insert(
                u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                i,
            );
            if capacities(&index) != history[history.len() - 1] {
                history.push(capacities(&index));
            }
        }
        assert_eq!(index.len(), 200_000);
        // Each growth of a shard at least doubles its capacity.
        for s in 0..SHARDS {
            let mut caps: Vec<usize> = history.iter().map(|c| c[s]).collect();
            caps.dedup();
            assert!(
                caps.windows(2).skip(1).all(|w| w[1] >= 2 * w[0]),
                "{caps:?}"
            );
        }
        // Both shards fill: the shard bit splits keys evenly.
        let lens = index.shards.each_ref().map(Table::len);
        assert!(lens.iter().all(|n| n.abs_diff(100_000) < 2_000), "{lens:?}");
    }

    /// `resolve_windows`, with a `decide` that links each window's keys as the kernel of
    /// `apply_batch` does (a person's keys share the id of the first one found, else a new
    /// id), builds exactly the index that sequential `get`s and `insert`s build, entry by
    /// entry in table order; on one thread (`resolve_inline`) too.
    #[test]
    fn resolve_windows_equals_sequential() {
        // People of 3 keys; keys repeat across people (a small pool), so windows link into
        // ids written earlier in the same window.
        let people: Vec<[u128; 3]> = (0..5_000u128)
            .map(|p| {
                [0, 1, 2].map(|c| {
                    let v = (p * 7 + c * 13_001) % if c == 2 { 900 } else { 20_000 };
                    (v + c * 1_000_000).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                })
            })
            .collect();
        let mut seq = IdIndex::with_capacity(100);
        let mut next = 0u32;
        for ks in &people {
            let id = ks.iter().find_map(|k| seq.get(k)).unwrap_or_else(|| {
                next += 1;
                next - 1
            });
            for k in ks {
                seq.insert(*k, id);
            }
        }
        for window in [1usize, 3, 64, 1000, 10_000] {
            let windows = people.len().div_ceil(window);
            let span = |w: usize| &people[w * window..((w + 1) * window).min(people.len())];
            let hash = |w: usize, keys: &mut Vec<u128>| keys.extend(span(w).iter().flatten());
            let run = |threads: bool| {
                let mut index = IdIndex::with_capacity(100);
                let mut next = 0u32;
                let mut decide =
                    |_w: usize, keys: &[u128], hints: &[Option<u32>], o: &mut Overlay| {
                        for (ks, hs) in keys.chunks_exact(3).zip(hints.chunks_exact(3)) {
                            let id = ks.iter().zip(hs).find_map(|(k, h)| o.get(*k).or(*h));
                            let id = id.unwrap_or_else(|| {
                                next += 1;
                                next - 1
                            });
                            for k in ks {
                                o.insert(*k, id);
                            }
                        }
                    };
                if threads {
                    index.resolve_windows(windows, hash, decide);
                } else {
                    let [a, b] = &mut index.shards;
                    resolve_inline([a, b], windows, &hash, &mut decide);
                }
                index
            };
            for threads in [true, false] {
                let index = run(threads);
                assert_eq!(
                    index.iter().collect::<Vec<_>>(),
                    seq.iter().collect::<Vec<_>>(),
                    "window {window}, threads {threads}"
                );
            }
        }
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
