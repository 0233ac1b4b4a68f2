//! Flat copies of Roaring bitmaps and a fused counting kernel over them.
//!
//! A [`FlatBitmap`] holds the same ids as a [`RoaringBitmap`] with every container's data in
//! one of two contiguous arrays: bitmap containers (more than 4,096 ids) as 1,024-word blocks,
//! array containers as sorted `u16` runs. Run containers are expanded into one or the other.
//!
//! [`and_count`] answers `|P₁ ∩ … ∩ Pₙ − N₁ − … − Nₘ|` in one pass over the containers of
//! the smallest positive operand: per 2¹⁶-id chunk, the words of every operand are combined
//! and counted in registers (one fused loop for the common shapes, a 1,024-word scratch block
//! otherwise), so nothing is materialised. Large counts are split by chunk across threads.
//!
//! Why not count on the Roaring bitmaps directly: their containers are separate heap blocks,
//! whose placement depends on the allocator (with mimalloc the streaming rate past the cache
//! halved in our measurements), and the crate is compiled for the baseline x86-64 target,
//! without the `popcnt` instruction. The kernel here runs on contiguous memory and is compiled
//! three more times with wider instruction sets (AVX-512 `vpopcntq`, AVX2, `popcnt`); the best
//! one the CPU supports is chosen at run time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use roaring::RoaringBitmap;

/// Words in a bitmap container.
const WORDS: usize = 1024;

/// Array containers hold at most this many ids; more make a bitmap container.
const ARRAY_MAX: usize = 4096;

/// A bitmap container's words.
type Block = [u64; WORDS];

/// Where one container's data lives.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Index into [`FlatBitmap::blocks`].
    Bits(u32),
    /// `start..end` in [`FlatBitmap::values`].
    Array(u32, u32),
}

/// One container, borrowed.
#[derive(Clone, Copy)]
enum Cont<'a> {
    Bits(&'a Block),
    Array(&'a [u16]),
}

impl Cont<'_> {
    fn contains(self, low: u16) -> bool {
        match self {
            Cont::Bits(w) => w[usize::from(low >> 6)] >> (low & 63) & 1 == 1,
            Cont::Array(v) => v.binary_search(&low).is_ok(),
        }
    }

    fn len(self) -> usize {
        match self {
            Cont::Bits(_) => ARRAY_MAX + 1,
            Cont::Array(v) => v.len(),
        }
    }
}

/// A Roaring bitmap with its containers laid out contiguously (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct FlatBitmap {
    keys: Vec<u16>,
    slots: Vec<Slot>,
    blocks: Vec<Block>,
    values: Vec<u16>,
    len: u64,
}

/// Reads little-endian integers from the serialized form, failing on a short buffer.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The portable format's cookies (RoaringFormatSpec).
const COOKIE_NO_RUNS: u32 = 12346;
const COOKIE_RUNS: u16 = 12347;
/// With runs, container offsets are written only from this many containers on.
const NO_OFFSET_THRESHOLD: usize = 4;

impl FlatBitmap {
    /// A flat copy of `bitmap` (read through its portable serialization, the only public view
    /// of its containers).
    pub fn new(bitmap: &RoaringBitmap) -> FlatBitmap {
        let mut bytes = Vec::with_capacity(bitmap.serialized_size());
        // Writing into a Vec cannot fail, and the bytes are the crate's own output; a failure
        // of either would be a bug in the bitmap crate, answered by copying id by id.
        if bitmap.serialize_into(&mut bytes).is_ok() {
            if let Some(flat) = FlatBitmap::parse(&bytes) {
                return flat;
            }
        }
        FlatBitmap::from_ids(bitmap)
    }

    fn parse(bytes: &[u8]) -> Option<FlatBitmap> {
        let mut r = Reader { bytes };
        let cookie = r.u32()?;
        let (size, runs) = if cookie == COOKIE_NO_RUNS {
            (r.u32()? as usize, None)
        } else if cookie as u16 == COOKIE_RUNS {
            let size = (cookie >> 16) as usize + 1;
            (size, Some(r.take(size.div_ceil(8))?.to_vec()))
        } else {
            return None;
        };
        let mut desc = Vec::with_capacity(size);
        for _ in 0..size {
            let key = r.u16()?;
            let card = usize::from(r.u16()?) + 1;
            desc.push((key, card));
        }
        if runs.is_none() || size >= NO_OFFSET_THRESHOLD {
            r.take(4 * size)?;
        }
        let mut flat = FlatBitmap::default();
        let mut block: Box<Block> = Box::new([0; WORDS]);
        for (i, &(key, card)) in desc.iter().enumerate() {
            let is_run = runs.as_ref().is_some_and(|b| b[i / 8] >> (i % 8) & 1 == 1);
            if is_run {
                let n = usize::from(r.u16()?);
                let mut spans = Vec::with_capacity(n);
                for _ in 0..n {
                    let start = u32::from(r.u16()?);
                    let len = u32::from(r.u16()?) + 1;
                    spans.push(start..(start + len).min(1 << 16));
                }
                if card > ARRAY_MAX {
                    block.fill(0);
                    for s in spans {
                        for v in s {
                            block[(v >> 6) as usize] |= 1 << (v & 63);
                        }
                    }
                    flat.push_block(key, &block);
                } else {
                    let start = flat.values.len();
                    flat.values
                        .extend(spans.into_iter().flatten().map(|v| v as u16));
                    flat.push_array(key, start);
                }
            } else if card > ARRAY_MAX {
                let raw = r.take(8 * WORDS)?;
                for (w, b) in block.iter_mut().zip(raw.chunks_exact(8)) {
                    *w = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                }
                flat.push_block(key, &block);
            } else {
                let raw = r.take(2 * card)?;
                let start = flat.values.len();
                flat.values.extend(
                    raw.chunks_exact(2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]])),
                );
                flat.push_array(key, start);
            }
            flat.len += card as u64;
        }
        Some(flat)
    }

    fn from_ids(bitmap: &RoaringBitmap) -> FlatBitmap {
        let mut flat = FlatBitmap::default();
        let mut ids = bitmap.iter().peekable();
        let mut block: Box<Block> = Box::new([0; WORDS]);
        let mut chunk: Vec<u16> = Vec::with_capacity(1 << 16);
        while let Some(&first) = ids.peek() {
            let key = (first >> 16) as u16;
            chunk.clear();
            while let Some(id) = ids.next_if(|id| id >> 16 == u32::from(key)) {
                chunk.push(id as u16);
            }
            if chunk.len() > ARRAY_MAX {
                block.fill(0);
                for &v in &chunk {
                    block[usize::from(v >> 6)] |= 1 << (v & 63);
                }
                flat.push_block(key, &block);
            } else {
                let start = flat.values.len();
                flat.values.extend_from_slice(&chunk);
                flat.push_array(key, start);
            }
            flat.len += chunk.len() as u64;
        }
        flat
    }

    fn push_block(&mut self, key: u16, block: &Block) {
        self.keys.push(key);
        self.slots.push(Slot::Bits(self.blocks.len() as u32));
        self.blocks.push(*block);
    }

    fn push_array(&mut self, key: u16, start: usize) {
        self.keys.push(key);
        self.slots
            .push(Slot::Array(start as u32, self.values.len() as u32));
    }

    /// The number of ids.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when there are no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of containers (2¹⁶-id chunks holding at least one id).
    pub fn containers(&self) -> usize {
        self.keys.len()
    }

    /// Bytes held (keys, slots, blocks and values).
    pub fn heap_bytes(&self) -> usize {
        self.keys.len() * 2
            + self.slots.len() * std::mem::size_of::<Slot>()
            + self.blocks.len() * std::mem::size_of::<Block>()
            + self.values.len() * 2
    }

    fn cont(&self, i: usize) -> Cont<'_> {
        match self.slots[i] {
            Slot::Bits(b) => Cont::Bits(&self.blocks[b as usize]),
            Slot::Array(s, e) => Cont::Array(&self.values[s as usize..e as usize]),
        }
    }

    /// The container with key `key`, searching from `*cursor` (which moves past smaller keys).
    fn seek(&self, cursor: &mut usize, key: u16) -> Option<Cont<'_>> {
        let rest = self.keys.get(*cursor..)?;
        *cursor += rest.partition_point(|&k| k < key);
        (self.keys.get(*cursor) == Some(&key)).then(|| self.cont(*cursor))
    }
}

/// Flat copies of a [`crate::Snapshot`]'s bitmaps, built on first use by a count or a preview
/// and kept until the snapshot changes.
///
/// Keyed by the bitmap's address and length: a snapshot's bitmaps neither move nor get freed
/// while it is shared, and the store clears the cache whenever it changes a snapshot in place.
/// A clone starts empty (clones are made to be changed).
#[derive(Default)]
pub(crate) struct FlatCache {
    map: Mutex<HashMap<(usize, u64), Arc<FlatBitmap>>>,
}

impl FlatCache {
    /// The flat copy of `bitmap`, built now if this snapshot has none yet.
    pub(crate) fn get(&self, bitmap: &RoaringBitmap) -> Arc<FlatBitmap> {
        let key = (std::ptr::from_ref(bitmap) as usize, bitmap.len());
        if let Some(f) = self.lock().get(&key) {
            return f.clone();
        }
        // Built outside the lock: other readers are not held up by a large copy.
        let flat = Arc::new(FlatBitmap::new(bitmap));
        self.lock().entry(key).or_insert(flat).clone()
    }

    /// Drops every copy (the snapshot is about to change in place).
    pub(crate) fn clear(&mut self) {
        self.map
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Bytes held by the copies.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.lock().values().map(|f| f.heap_bytes()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, u64), Arc<FlatBitmap>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clone for FlatCache {
    fn clone(&self) -> FlatCache {
        FlatCache::default()
    }
}

impl PartialEq for FlatCache {
    /// Caches never make two snapshots differ.
    fn eq(&self, _: &FlatCache) -> bool {
        true
    }
}

impl std::fmt::Debug for FlatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlatCache({} copies)", self.lock().len())
    }
}

/// Positive-operand containers from this many on (in the smallest positive operand) are counted
/// on several threads.
pub const PARALLEL_MIN_CONTAINERS: usize = 1024;

/// `|pos₁ ∩ … ∩ posₙ − neg₁ − … − negₘ|`. `pos` must not be empty (pass the universe when an
/// expression has only negated operands).
pub fn and_count(pos: &[&FlatBitmap], neg: &[&FlatBitmap]) -> u64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    and_count_with(pos, neg, threads, PARALLEL_MIN_CONTAINERS)
}

/// [`and_count`] with the thread count and the parallel threshold chosen by the caller.
pub fn and_count_with(
    pos: &[&FlatBitmap],
    neg: &[&FlatBitmap],
    threads: usize,
    parallel_min: usize,
) -> u64 {
    let mut pos: Vec<&FlatBitmap> = pos.to_vec();
    pos.sort_by_key(|f| f.containers());
    let Some(driver) = pos.first() else {
        return 0;
    };
    let n = driver.containers();
    let threads = if n >= parallel_min.max(1) {
        threads.clamp(1, n)
    } else {
        1
    };
    let job = Job { pos: &pos, neg };
    if threads == 1 {
        return simd::count_range(&job, 0, n);
    }
    let per = n.div_ceil(threads);
    // Thread `t` counts the driver's containers `t·per .. (t+1)·per`.
    let count = move |job: &Job<'_>, t: usize| {
        simd::count_range(job, (t * per).min(n), ((t + 1) * per).min(n))
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|t| {
                let job = &job;
                s.spawn(move || count(job, t))
            })
            .collect();
        let mut total = count(&job, 0);
        for (t, h) in (1..threads).zip(handles) {
            // A panicking worker would be a bug in the kernel; count its range here instead.
            total += h.join().unwrap_or_else(|_| count(&job, t));
        }
        total
    })
}

/// The operands of one count; `pos[0]` drives (fewest containers).
pub(crate) struct Job<'a> {
    pos: &'a [&'a FlatBitmap],
    neg: &'a [&'a FlatBitmap],
}

/// What [`for_each_chunk`] does with each chunk. A trait rather than a closure: its
/// `#[inline(always)]` method is compiled into the instruction-set variants of the caller,
/// where a closure body may stay a separate function compiled for the baseline target.
trait Visit {
    /// One chunk's operands; false stops the walk.
    fn chunk(
        &mut self,
        key: u16,
        pos: &[Cont<'_>],
        neg_bits: &[&Block],
        neg_arrays: &[&[u16]],
    ) -> bool;
}

/// Calls `v.chunk(key, positives, negative blocks, negative arrays)` for every 2¹⁶-id chunk
/// among the driver's containers `from..to` that every positive operand has, in key order,
/// until it returns false.
#[inline(always)]
fn for_each_chunk(job: &Job<'_>, from: usize, to: usize, v: &mut impl Visit) {
    let Some((driver, others)) = job.pos.split_first() else {
        return;
    };
    let Some(first_key) = driver.keys.get(from).copied() else {
        return;
    };
    let start = |f: &FlatBitmap| f.keys.partition_point(|&k| k < first_key);
    let mut pos_cur: Vec<usize> = others.iter().map(|f| start(f)).collect();
    let mut neg_cur: Vec<usize> = job.neg.iter().map(|f| start(f)).collect();
    let mut pos: Vec<Cont<'_>> = Vec::with_capacity(job.pos.len());
    let mut neg_bits: Vec<&Block> = Vec::with_capacity(job.neg.len());
    let mut neg_arrays: Vec<&[u16]> = Vec::with_capacity(job.neg.len());
    'keys: for i in from..to.min(driver.containers()) {
        let key = driver.keys[i];
        pos.clear();
        pos.push(driver.cont(i));
        for (f, c) in others.iter().zip(pos_cur.iter_mut()) {
            match f.seek(c, key) {
                Some(cont) => pos.push(cont),
                None => continue 'keys,
            }
        }
        neg_bits.clear();
        neg_arrays.clear();
        for (f, c) in job.neg.iter().zip(neg_cur.iter_mut()) {
            match f.seek(c, key) {
                Some(Cont::Bits(b)) => neg_bits.push(b),
                Some(Cont::Array(v)) => neg_arrays.push(v),
                None => {}
            }
        }
        if !v.chunk(key, &pos, &neg_bits, &neg_arrays) {
            return;
        }
    }
}

/// Counts members chunk by chunk.
struct Counter {
    scratch: Box<Block>,
    total: u64,
}

impl Visit for Counter {
    #[inline(always)]
    fn chunk(
        &mut self,
        _: u16,
        pos: &[Cont<'_>],
        neg_bits: &[&Block],
        neg_arrays: &[&[u16]],
    ) -> bool {
        self.total += count_chunk(pos, neg_bits, neg_arrays, &mut self.scratch);
        true
    }
}

/// Collects the first `n` members.
struct Sampler {
    scratch: Box<Block>,
    out: Vec<u32>,
    n: usize,
}

impl Visit for Sampler {
    fn chunk(
        &mut self,
        key: u16,
        pos: &[Cont<'_>],
        neg_bits: &[&Block],
        neg_arrays: &[&[u16]],
    ) -> bool {
        let (out, n) = (&mut self.out, self.n);
        let high = u32::from(key) << 16;
        if let Some(ids) = smallest_array(pos) {
            let hits = ids.iter().filter(|&&v| kept(v, pos, neg_bits, neg_arrays));
            out.extend(hits.take(n - out.len()).map(|&v| high | u32::from(v)));
        } else {
            combine(pos, neg_bits, neg_arrays, &mut self.scratch);
            'words: for (i, &w) in self.scratch.iter().enumerate() {
                let mut w = w;
                while w != 0 {
                    if out.len() == n {
                        break 'words;
                    }
                    out.push(high | (i as u32) << 6 | w.trailing_zeros());
                    w &= w - 1;
                }
            }
        }
        out.len() < n
    }
}

/// Counts the driver's containers `from..to` (the portable body compiled per instruction set).
#[inline(always)]
fn count_range_body(job: &Job<'_>, from: usize, to: usize) -> u64 {
    let mut counter = Counter {
        scratch: Box::new([0; WORDS]),
        total: 0,
    };
    for_each_chunk(job, from, to, &mut counter);
    counter.total
}

/// The smallest positive operand when it is an array container (it bounds the result, so
/// its ids are tested one by one).
#[inline(always)]
fn smallest_array<'a>(pos: &[Cont<'a>]) -> Option<&'a [u16]> {
    match pos.iter().copied().min_by_key(|c| c.len()) {
        Some(Cont::Array(ids)) => Some(ids),
        _ => None,
    }
}

/// True when `low` is in every positive container and in no negative one.
#[inline(always)]
fn kept(low: u16, pos: &[Cont<'_>], neg_bits: &[&Block], neg_arrays: &[&[u16]]) -> bool {
    pos.iter().all(|c| c.contains(low))
        && !neg_bits.iter().any(|b| Cont::Bits(b).contains(low))
        && !neg_arrays.iter().any(|a| a.binary_search(&low).is_ok())
}

/// `scratch` = the chunk's result words, for positives that are all bitmap containers.
#[inline(always)]
fn combine(pos: &[Cont<'_>], neg_bits: &[&Block], neg_arrays: &[&[u16]], scratch: &mut Block) {
    scratch.fill(!0);
    for c in pos {
        if let Cont::Bits(b) = c {
            for (s, w) in scratch.iter_mut().zip(b.iter()) {
                *s &= w;
            }
        }
    }
    for b in neg_bits {
        for (s, w) in scratch.iter_mut().zip(b.iter()) {
            *s &= !w;
        }
    }
    for a in neg_arrays {
        for &v in a.iter() {
            scratch[usize::from(v >> 6)] &= !(1u64 << (v & 63));
        }
    }
}

/// One 2¹⁶-id chunk: `|∩ pos − ∪ negs|`.
#[inline(always)]
fn count_chunk(
    pos: &[Cont<'_>],
    neg_bits: &[&Block],
    neg_arrays: &[&[u16]],
    scratch: &mut Block,
) -> u64 {
    if let Some(ids) = smallest_array(pos) {
        let hits = ids.iter().filter(|&&v| kept(v, pos, neg_bits, neg_arrays));
        return hits.count() as u64;
    }
    // The common shapes in one fused pass; anything else through the scratch block.
    match (pos, neg_bits, neg_arrays) {
        ([Cont::Bits(a)], [], []) => a.iter().map(|w| u64::from(w.count_ones())).sum(),
        ([Cont::Bits(a), Cont::Bits(b)], [], []) => a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| u64::from((x & y).count_ones()))
            .sum(),
        ([Cont::Bits(a)], [n], []) => a
            .iter()
            .zip(n.iter())
            .map(|(x, z)| u64::from((x & !z).count_ones()))
            .sum(),
        ([Cont::Bits(a), Cont::Bits(b)], [n], []) => a
            .iter()
            .zip(b.iter())
            .zip(n.iter())
            .map(|((x, y), z)| u64::from((x & y & !z).count_ones()))
            .sum(),
        _ => {
            combine(pos, neg_bits, neg_arrays, scratch);
            scratch.iter().map(|w| u64::from(w.count_ones())).sum()
        }
    }
}

/// The first `n` ids of `pos₁ ∩ … − neg₁ − …`, ascending (see [`and_count`]).
pub fn and_sample(pos: &[&FlatBitmap], neg: &[&FlatBitmap], n: usize) -> Vec<u32> {
    let mut pos: Vec<&FlatBitmap> = pos.to_vec();
    pos.sort_by_key(|f| f.containers());
    let Some(driver) = pos.first() else {
        return Vec::new();
    };
    if n == 0 {
        return Vec::new();
    }
    let job = Job { pos: &pos, neg };
    let mut sampler = Sampler {
        scratch: Box::new([0; WORDS]),
        out: Vec::with_capacity(n.min(1 << 16)),
        n,
    };
    for_each_chunk(&job, 0, driver.containers(), &mut sampler);
    sampler.out
}

/// Run-time choice of the instruction set for [`count_range_body`].
///
/// This is the crate's only `unsafe`: calling a function compiled for CPU features is sound
/// once the running CPU is known to have them, which `is_x86_feature_detected!` checks.
#[allow(unsafe_code)]
mod simd {
    use super::{count_range_body, Job};

    /// [`count_range_body`] with the widest instruction set the CPU supports.
    pub(super) fn count_range(job: &Job<'_>, from: usize, to: usize) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vpopcntdq")
                && std::is_x86_feature_detected!("popcnt")
            {
                // SAFETY: the CPU has every feature `avx512` is compiled for (checked above).
                return unsafe { x86::avx512(job, from, to) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
                // SAFETY: as above, for `avx2`'s features.
                return unsafe { x86::avx2(job, from, to) };
            }
            if std::is_x86_feature_detected!("popcnt") {
                // SAFETY: as above, for `popcnt`'s feature.
                return unsafe { x86::popcnt(job, from, to) };
            }
        }
        count_range_body(job, from, to)
    }

    /// The portable body, for tests that compare it with the dispatched one.
    #[cfg(test)]
    pub(super) fn count_range_portable(job: &Job<'_>, from: usize, to: usize) -> u64 {
        count_range_body(job, from, to)
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::super::{count_range_body, Job};

        #[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
        pub(in super::super) unsafe fn avx512(job: &Job<'_>, from: usize, to: usize) -> u64 {
            count_range_body(job, from, to)
        }

        #[target_feature(enable = "avx2,popcnt")]
        pub(in super::super) unsafe fn avx2(job: &Job<'_>, from: usize, to: usize) -> u64 {
            count_range_body(job, from, to)
        }

        #[target_feature(enable = "popcnt")]
        pub(in super::super) unsafe fn popcnt(job: &Job<'_>, from: usize, to: usize) -> u64 {
            count_range_body(job, from, to)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ids spread over a few chunks so every container kind appears: sparse (array), dense
    /// (bitmap) and full ranges (run containers after `optimize`-style inserts).
    fn bitmap_strategy() -> impl Strategy<Value = RoaringBitmap> {
        let chunk = (0u32..6, 0u8..4, any::<u64>());
        proptest::collection::vec(chunk, 0..8).prop_map(|chunks| {
            let mut b = RoaringBitmap::new();
            for (key, kind, seed) in chunks {
                let base = key << 16;
                match kind {
                    0 => {
                        for j in 0..50u32 {
                            b.insert(base + (seed as u32).wrapping_mul(j + 1) % 65536);
                        }
                    }
                    1 => {
                        let mut x = seed | 1;
                        for v in 0..65536u32 {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            if x % 3 != 0 {
                                b.insert(base + v);
                            }
                        }
                    }
                    2 => {
                        let lo = (seed % 60000) as u32;
                        b.insert_range(base + lo..base + lo + 5000);
                    }
                    _ => {
                        b.insert_range(base..base + 65536);
                    }
                }
            }
            if chunks_seed_optimizes(&b) {
                b.optimize();
            }
            b
        })
    }

    /// Half of the generated bitmaps get run containers (decided by their length's parity).
    fn chunks_seed_optimizes(b: &RoaringBitmap) -> bool {
        b.len().is_multiple_of(2)
    }

    fn expected(pos: &[RoaringBitmap], neg: &[RoaringBitmap]) -> RoaringBitmap {
        let mut acc = pos[0].clone();
        for p in &pos[1..] {
            acc &= p;
        }
        for n in neg {
            acc -= n;
        }
        acc
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn counts_equal_bitmap_algebra(
            pos in proptest::collection::vec(bitmap_strategy(), 1..4),
            neg in proptest::collection::vec(bitmap_strategy(), 0..3),
            threads in 1usize..4,
        ) {
            let fp: Vec<FlatBitmap> = pos.iter().map(FlatBitmap::new).collect();
            let fn_: Vec<FlatBitmap> = neg.iter().map(FlatBitmap::new).collect();
            for (f, b) in fp.iter().zip(&pos) {
                prop_assert_eq!(f.len(), b.len());
            }
            let p: Vec<&FlatBitmap> = fp.iter().collect();
            let n: Vec<&FlatBitmap> = fn_.iter().collect();
            let acc = expected(&pos, &neg);
            let want = acc.len();
            prop_assert_eq!(and_count_with(&p, &n, threads, 1), want);
            let mut sorted = p.clone();
            sorted.sort_by_key(|f| f.containers());
            let job = Job { pos: &sorted, neg: &n };
            let all = sorted[0].containers();
            prop_assert_eq!(simd::count_range_portable(&job, 0, all), want);
            for k in [0, 1, 7, 5000, usize::MAX >> 1] {
                let first: Vec<u32> = acc.iter().take(k).collect();
                prop_assert_eq!(and_sample(&p, &n, k), first);
            }
        }
    }

    #[test]
    fn run_containers_are_expanded() {
        let mut b = RoaringBitmap::new();
        b.insert_range(10..70_000);
        b.insert_range(200_000..200_100);
        b.insert(1 << 30);
        b.optimize();
        let mut bytes = Vec::new();
        b.serialize_into(&mut bytes).unwrap();
        assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]), COOKIE_RUNS);
        let f = FlatBitmap::new(&b);
        assert_eq!(f.len(), b.len());
        assert_eq!(f.containers(), 4);
        let slow = FlatBitmap::from_ids(&b);
        let (a, c) = (and_count(&[&f], &[]), and_count(&[&slow], &[]));
        assert_eq!((a, c), (b.len(), b.len()));
        assert_eq!(and_count(&[&f], &[&slow]), 0);
    }

    #[test]
    fn many_containers_split_across_threads() {
        let a: RoaringBitmap = (0..3000u32).map(|k| k << 16 | (k % 7)).collect();
        let mut b: RoaringBitmap = (0..3000u32).map(|k| k << 16 | (k % 5)).collect();
        b.insert_range(5 << 16..9 << 16);
        let (fa, fb) = (FlatBitmap::new(&a), FlatBitmap::new(&b));
        let want = (&a & &b).len();
        for threads in 1..5 {
            assert_eq!(and_count_with(&[&fa, &fb], &[], threads, 16), want);
            assert_eq!(and_count_with(&[&fa], &[&fb], threads, 16), (&a - &b).len());
        }
    }

    #[test]
    fn a_short_serialization_is_refused() {
        let b: RoaringBitmap = (0..10_000u32).collect();
        let mut bytes = Vec::new();
        b.serialize_into(&mut bytes).unwrap();
        assert!(FlatBitmap::parse(&bytes).is_some());
        assert!(FlatBitmap::parse(&bytes[..bytes.len() - 1]).is_none());
        assert!(FlatBitmap::parse(&[0, 1, 2]).is_none());
    }
}
