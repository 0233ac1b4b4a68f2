//! Profiles and identity resolution: the [`ProfileBook`].
//!
//! Invariants:
//! - Every live profile has a dense id; ids are never reused except by an unmerge, whose
//!   first rebuilt part keeps the id of the profile it splits.
//! - Each normalised identifier belongs to at most one live profile; the index maps it there.
//! - A merged-away id resolves to its survivor through [`ProfileBook::resolve`].
//! - No profile holds more values of a type than the type's limit, except through a single
//!   message carrying more values than the limit (which has nothing to drop).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::hash::{IdIndex, KeySet, Overlay};

use serde::{Deserialize, Serialize};

use crate::identity::IdentityConfig;
use crate::message::{Identifier, Message, SourceId};
use crate::time::Millis;

/// Dense profile id.
pub type ProfileId = u32;

/// Position of an event in the event log.
pub type EventRef = u64;

/// One trait value with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitValue {
    /// The value as JSON text.
    pub value: String,
    /// Source that set it.
    pub source: SourceId,
    /// Event time of the message that set it.
    pub updated_at: Millis,
}

/// An identity decision, kept for audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// `link` (an existing profile gained identifiers), `merge` (profiles joined) or
    /// `unmerge` (an operator split a profile).
    pub action: String,
    /// When it was decided (receive time of the message, or of the operator request).
    pub at: Millis,
    /// The message that caused it (`None` for an operator's unmerge).
    pub message_id: Option<String>,
    /// Source of that message.
    pub source: Option<SourceId>,
    /// Identifiers newly linked (link), the message's identifiers (merge), or the identifier
    /// removed (unmerge).
    pub identifiers: Vec<Identifier>,
    /// Profile that survived (merge) or was split (unmerge).
    pub survivor: ProfileId,
    /// Profiles merged into the survivor (merge) or created by the split (unmerge).
    pub others: Vec<ProfileId>,
}

/// One person.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Dense id.
    pub id: ProfileId,
    /// Identifiers, in the order they were linked.
    pub identifiers: Vec<Identifier>,
    /// Traits merged per key.
    pub traits: BTreeMap<String, TraitValue>,
    /// Earliest event time seen.
    pub first_seen: Millis,
    /// Latest event time seen.
    pub last_seen: Millis,
    /// Event count per source.
    pub sources: BTreeMap<SourceId, u64>,
    /// Events as `(event time, log position)`, sorted.
    pub events: Vec<(Millis, EventRef)>,
    /// Ids merged into this profile.
    pub merged_from: Vec<ProfileId>,
    /// Identity decisions that shaped this profile.
    pub history: Vec<MergeRecord>,
    /// Consent decisions per `channel/purpose` ([`crate::consent::key`]); absent = unknown.
    pub consent: BTreeMap<String, crate::consent::ConsentRecord>,
}

impl Profile {
    /// The traits as tag rules and audiences read them: each trait's JSON value, and the
    /// consent decisions as `consent.<channel>.<purpose>` ([`crate::consent::overlay`]).
    pub fn tag_traits(&self) -> serde_json::Map<String, serde_json::Value> {
        self.tag_traits_where(|_| true)
    }

    /// [`Profile::tag_traits`] restricted to the top-level keys in `keys` (what a set of rules
    /// reads): the other traits are not parsed.
    pub fn tag_traits_of(&self, keys: &[String]) -> serde_json::Map<String, serde_json::Value> {
        self.tag_traits_where(|k| keys.iter().any(|w| w == k))
    }

    fn tag_traits_where(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut traits: serde_json::Map<String, serde_json::Value> = self
            .traits
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::from_str(&v.value).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        if keep("consent") {
            crate::consent::overlay(
                &mut traits,
                self.consent
                    .iter()
                    .map(|(k, r)| (k.as_str(), r.state.as_str())),
            );
        }
        traits
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Slot {
    /// Shared with a snapshot being written: changed copy on write ([`Arc::make_mut`]).
    Live(Arc<Profile>),
    Merged(ProfileId),
    /// Being rebuilt by an unmerge.
    Vacant,
    /// Erased on request: resolves to nothing.
    Erased,
}

/// A book's content for a snapshot ([`ProfileBook::capture`]): its profiles shared (one
/// refcount each), not copied. It serialises to exactly the book's own bytes; written with
/// [`BookCapture::serialize_releasing`], each profile is released as soon as it is written, so
/// the book's changes meanwhile copy only the profiles not yet written.
pub struct BookCapture {
    slots: std::cell::RefCell<Vec<Slot>>,
    index: IdIndex,
    cut: KeySet,
    priority: HashMap<SourceId, i32>,
    live: usize,
    merges: u64,
    suppressed: KeySet,
    expired: BTreeMap<ProfileId, Vec<EventRef>>,
}

impl BookCapture {
    /// Live profiles captured.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Serialises like [`Serialize::serialize`], taking each profile out once it is written.
    /// For serializers that write in one pass (a counting pass first would see the profiles
    /// and the writing pass none); afterwards the capture holds no profile.
    pub fn serialize_releasing<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_fields(s, true)
    }

    fn serialize_fields<S: serde::Serializer>(
        &self,
        s: S,
        release: bool,
    ) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // The fields `ProfileBook`'s derived serialisation writes, in its order.
        let mut st = s.serialize_struct("ProfileBook", 8)?;
        st.serialize_field("slots", &Slots(&self.slots, release))?;
        st.serialize_field("index", &self.index)?;
        st.serialize_field("cut", &self.cut)?;
        st.serialize_field("priority", &self.priority)?;
        st.serialize_field("live", &self.live)?;
        st.serialize_field("merges", &self.merges)?;
        st.serialize_field("suppressed", &self.suppressed)?;
        st.serialize_field("expired", &self.expired)?;
        st.end()
    }
}

impl Serialize for BookCapture {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_fields(s, false)
    }
}

/// Captured slots; with `release`, each is taken out (its profile released) once written.
struct Slots<'a>(&'a std::cell::RefCell<Vec<Slot>>, bool);

impl Serialize for Slots<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut slots = self.0.borrow_mut();
        let mut seq = s.serialize_seq(Some(slots.len()))?;
        for slot in slots.iter_mut() {
            if self.1 {
                let taken = std::mem::replace(slot, Slot::Vacant);
                seq.serialize_element(&taken)?;
            } else {
                seq.serialize_element(slot)?;
            }
        }
        seq.end()
    }
}

/// What applying a message did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyOutcome {
    /// The profile the message now belongs to.
    pub profile: ProfileId,
    /// Whether that profile was created by this message.
    pub created: bool,
    /// Profiles merged into it.
    pub merged: Vec<ProfileId>,
    /// Identifiers not linked because they would break a limit.
    pub dropped: Vec<Identifier>,
}

/// Errors of operator actions on profiles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// No live profile has that id.
    #[error("profile {0} does not exist")]
    NoProfile(ProfileId),
    /// The identifier is not linked to the profile.
    #[error("identifier {identifier} is not linked to profile {profile}")]
    NotLinked {
        /// Profile.
        profile: ProfileId,
        /// Identifier.
        identifier: String,
    },
    /// The profile has only this identifier: there is nothing to split.
    #[error("profile {0} has a single identifier; there is nothing to unmerge")]
    Single(ProfileId),
}

/// All profiles and the identity graph that routes messages to them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileBook {
    #[serde(skip)]
    config: IdentityConfig,
    slots: Vec<Slot>,
    index: IdIndex,
    /// Identifiers an operator unlinked: they never link to other identifiers again.
    cut: KeySet,
    /// Trait priority per source (higher wins; equal priority → later event time wins).
    priority: HashMap<SourceId, i32>,
    #[serde(skip)]
    reuse: Vec<ProfileId>,
    live: usize,
    merges: u64,
    /// Keyed hashes of erased people's identifiers: messages carrying one are not applied.
    #[serde(default)]
    suppressed: KeySet,
    #[serde(skip, default = "default_secret")]
    secret: Box<[u8; SECRET_BYTES]>,
    /// Buffers reused by every `apply`, so resolving a message allocates nothing of its own.
    #[serde(skip)]
    scratch: Scratch,
    #[serde(skip)]
    window: Window,
    /// Whether [`ProfileBook::apply_batch`] may use two threads (see
    /// [`ProfileBook::set_parallel_batches`]).
    #[serde(skip)]
    parallel: bool,
    /// Events whose content a retention period removed, per live profile (log positions,
    /// sorted). They no longer count as the profile's events (timelines, `events`), but their
    /// identifiers still link the profile: unmerges replay them, erasure destroys them.
    #[serde(default)]
    expired: BTreeMap<ProfileId, Vec<EventRef>>,
}

/// How many messages [`ProfileBook::apply_batch`] probes ahead: the index lines of their
/// identifiers are loaded back to back so that their cache and TLB misses overlap. 64 messages
/// of 3 identifiers touch about 200 index lines (12 KiB), which stay in cache until the messages
/// are applied.
pub const PROBE_WINDOW: usize = 64;

/// Messages per window of [`ProfileBook::apply_batch_parallel`]: the index lookups of a
/// window are made by two threads at once, one per index shard, before the window is applied.
pub const PARALLEL_WINDOW: usize = 1024;

/// With [`ProfileBook::set_parallel_batches`] on, batches of at least this many messages go
/// through [`ProfileBook::apply_batch_parallel`] (when the machine has two or more cores);
/// smaller ones through the single-threaded [`ProfileBook::apply_batch_window`]. Starting the helper thread and handing windows over
/// costs some tens of microseconds per batch; a batch of this size takes milliseconds.
pub const PARALLEL_MIN: usize = 4 * PARALLEL_WINDOW;

/// Bits of the filter of index keys written since the current probe window was probed.
const WRITTEN_BITS: usize = 4096;

/// Reusable buffers of the resolution of one message.
#[derive(Debug, Clone, Default)]
struct Scratch {
    /// Positions (in the message's identifiers) of the identifiers being linked.
    sel: Vec<usize>,
    /// Key of each selected identifier and the profile holding it, if any.
    probes: Vec<(u128, Option<ProfileId>)>,
    /// Distinct profiles the message touches.
    profiles: Vec<ProfileId>,
}

/// Reusable buffers of a probe window of [`ProfileBook::apply_batch`] (`keys` also serves
/// [`ProfileBook::apply`]).
#[derive(Debug, Clone, Default)]
struct Window {
    /// Keys of every identifier of the messages in the window (or of the one message).
    keys: Vec<u128>,
    /// The index lookup of each key, made before the window is applied.
    hints: Vec<Option<ProfileId>>,
    /// Where each message's keys start in `keys`, plus the end.
    starts: Vec<usize>,
    /// A one-hash Bloom filter of the keys written to the index since the window was probed:
    /// a hint whose key may have been written is stale and is looked up again. Empty outside
    /// `apply_batch`.
    written: Vec<u64>,
    /// During [`ProfileBook::apply_batch_parallel`]: the index writes of the current window,
    /// which go here instead of the index (the index itself is lent to
    /// [`IdIndex::resolve_windows`] meanwhile). `None` otherwise.
    overlay: Option<Overlay>,
}

/// What [`ProfileBook::erase`] removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Erased {
    /// The erased profile.
    pub profile: ProfileId,
    /// Its identifiers (now suppressed).
    pub identifiers: Vec<Identifier>,
    /// Log positions of its events, to be destroyed by the caller.
    pub events: Vec<EventRef>,
    /// Keyed hashes of its identifiers, as kept in the suppression list.
    pub suppressed: Vec<u128>,
}

/// Size of the secret that keys identifier hashes.
pub const SECRET_BYTES: usize = 192;

/// Keyed 128-bit hash of an identifier (XXH3 with a secret derived from the master key): the
/// index, the cut list and the suppression list hold only these, so without the key they do not
/// reveal identifier values.
fn keyed(secret: &[u8; SECRET_BYTES], id: &Identifier) -> u128 {
    let mut buf = [0u8; 256];
    let n = id.kind.len() + 1 + id.value.len();
    if n <= buf.len() {
        buf[..id.kind.len()].copy_from_slice(id.kind.as_bytes());
        buf[id.kind.len()] = 0;
        buf[id.kind.len() + 1..n].copy_from_slice(id.value.as_bytes());
        xxhash_rust::xxh3::xxh3_128_with_secret(&buf[..n], secret)
    } else {
        let mut v = Vec::with_capacity(n);
        v.extend_from_slice(id.kind.as_bytes());
        v.push(0);
        v.extend_from_slice(id.value.as_bytes());
        xxhash_rust::xxh3::xxh3_128_with_secret(&v, secret)
    }
}

/// Cores available to this process (read once).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The secret used when no master key is configured (tests, benchmarks): fixed, so it keys
/// nothing; real deployments derive theirs from the master key.
fn default_secret() -> Box<[u8; SECRET_BYTES]> {
    let mut secret = [0u8; SECRET_BYTES];
    for (i, chunk) in secret.chunks_mut(16).enumerate() {
        let h = xxhash_rust::xxh3::xxh3_128(format!("portrait-default-secret-{i}").as_bytes());
        chunk.copy_from_slice(&h.to_le_bytes()[..chunk.len()]);
    }
    Box::new(secret)
}

impl ProfileBook {
    /// An empty book resolving with `config`.
    pub fn new(config: IdentityConfig) -> Self {
        Self {
            config,
            slots: Vec::new(),
            index: IdIndex::new(),
            cut: KeySet::default(),
            priority: HashMap::new(),
            reuse: Vec::new(),
            live: 0,
            merges: 0,
            suppressed: KeySet::default(),
            secret: default_secret(),
            scratch: Scratch::default(),
            window: Window::default(),
            parallel: false,
            expired: BTreeMap::new(),
        }
    }

    /// The book's content for a snapshot: one refcount per profile (a profile changed while
    /// the capture holds it is copied on write) plus copies of the index and the key sets.
    pub fn capture(&self) -> BookCapture {
        BookCapture {
            slots: std::cell::RefCell::new(self.slots.clone()),
            index: self.index.clone(),
            cut: self.cut.clone(),
            priority: self.priority.clone(),
            live: self.live,
            merges: self.merges,
            suppressed: self.suppressed.clone(),
            expired: self.expired.clone(),
        }
    }

    /// Reserves room for `profiles` profiles and `identifiers` identifiers.
    pub fn reserve(&mut self, profiles: usize, identifiers: usize) {
        self.slots.reserve(profiles);
        self.index.reserve(identifiers);
    }

    /// Lets [`ProfileBook::apply_batch`] split the index work of large batches between two
    /// threads ([`ProfileBook::apply_batch_parallel`]; same result). Off in a new book (tests
    /// and tools apply one thread's worth); the store engine turns it on. With the second core
    /// free it built 100.2M links in 8.7–9.4 s against 10.8–11.1 s on one thread; with both
    /// cores busy it is slower (see `crates/core/BENCH_RESULTS.md`, (a2)).
    pub fn set_parallel_batches(&mut self, on: bool) {
        self.parallel = on;
    }

    /// Keys identifier hashes with `secret` (derived from the master key). Call before the
    /// first `apply`; a book loaded from a snapshot must get the secret it was built with.
    pub fn set_secret(&mut self, secret: [u8; SECRET_BYTES]) {
        *self.secret = secret;
    }

    fn key(&self, id: &Identifier) -> u128 {
        keyed(&self.secret, id)
    }

    /// Whether a message carries an identifier of an erased person.
    /// A message that grants consent is never suppressed: applying it lifts the suppression.
    pub fn is_suppressed(&self, msg: &Message) -> bool {
        !self.suppressed.is_empty()
            && !crate::consent::grants(msg)
            && msg
                .identifiers
                .iter()
                .any(|id| self.suppressed.contains(&self.key(id)))
    }

    /// Adds keyed identifier hashes to the suppression list (replaying an erasure).
    pub fn suppress(&mut self, keys: &[u128]) {
        self.suppressed.extend(keys.iter().copied());
    }

    /// Number of suppressed identifier hashes.
    pub fn suppressed(&self) -> usize {
        self.suppressed.len()
    }

    /// Erases a person: the profile (and every id merged into it) stops resolving, its
    /// identifiers leave the index and enter the suppression list. Returns what the caller must
    /// destroy in storage.
    pub fn erase(&mut self, profile: ProfileId) -> Result<Erased, ProfileError> {
        let id = self
            .resolve(profile)
            .ok_or(ProfileError::NoProfile(profile))?;
        let Slot::Live(gone) = std::mem::replace(&mut self.slots[id as usize], Slot::Erased) else {
            unreachable!("resolved to a live profile");
        };
        let gone = Arc::unwrap_or_clone(gone);
        self.live -= 1;
        let mut suppressed = Vec::with_capacity(gone.identifiers.len());
        for ident in &gone.identifiers {
            let k = self.key(ident);
            self.index.remove(&k);
            self.cut.remove(&k);
            self.suppressed.insert(k);
            suppressed.push(k);
        }
        for retired in &gone.merged_from {
            if let Some(slot) = self.slots.get_mut(*retired as usize) {
                *slot = Slot::Erased;
            }
        }
        let mut events: Vec<EventRef> = gone.events.iter().map(|(_, r)| *r).collect();
        // Expired events still carry the person's identifiers: they are destroyed too.
        events.extend(self.expired.remove(&id).unwrap_or_default());
        Ok(Erased {
            profile: id,
            identifiers: gone.identifiers,
            events,
            suppressed,
        })
    }

    /// Replaces the configuration (after loading a snapshot).
    pub fn set_config(&mut self, config: IdentityConfig) {
        self.config = config;
    }

    /// The identity configuration.
    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    /// Sets a source's trait priority.
    pub fn set_priority(&mut self, source: SourceId, priority: i32) {
        self.priority.insert(source, priority);
    }

    /// Number of live profiles.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Number of merges performed.
    pub fn merges(&self) -> u64 {
        self.merges
    }

    /// Number of identifiers linked.
    pub fn identifiers(&self) -> usize {
        self.index.len()
    }

    /// Highest id ever allocated plus one.
    pub fn id_space(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The live profile an id resolves to (following merges).
    pub fn resolve(&self, id: ProfileId) -> Option<ProfileId> {
        let root = self.root(id)?;
        matches!(self.slots.get(root as usize)?, Slot::Live(_)).then_some(root)
    }

    /// Follows merge redirects from `id` to the first slot that is not a redirect (live, or
    /// vacant during an unmerge). Chains are acyclic and can be longer than any fixed bound
    /// (a profile may absorb up to the sum of the type limits, each absorbed id a hop, and
    /// unmerges extend chains), so the walk is bounded by the number of slots.
    fn root(&self, mut id: ProfileId) -> Option<ProfileId> {
        for _ in 0..=self.slots.len() {
            match self.slots.get(id as usize)? {
                Slot::Merged(into) if *into != id => id = *into,
                Slot::Merged(_) | Slot::Erased => return None,
                Slot::Live(_) | Slot::Vacant => return Some(id),
            }
        }
        None
    }

    /// A live profile by id (following merges).
    pub fn get(&self, id: ProfileId) -> Option<&Profile> {
        match self.slots.get(self.resolve(id)? as usize)? {
            Slot::Live(p) => Some(p),
            _ => None,
        }
    }

    /// The profile holding an identifier (normalise it first).
    pub fn by_identifier(&self, id: &Identifier) -> Option<ProfileId> {
        self.index.get(&self.key(id))
    }

    /// Iterates over live profiles.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Live(p) => Some(p.as_ref()),
            _ => None,
        })
    }

    /// Retired ids and their survivors.
    pub fn redirects(&self) -> impl Iterator<Item = (ProfileId, ProfileId)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Merged(_) => Some((i as ProfileId, self.resolve(i as ProfileId)?)),
            _ => None,
        })
    }

    fn live_mut(&mut self, id: ProfileId) -> &mut Profile {
        match &mut self.slots[id as usize] {
            Slot::Live(p) => Arc::make_mut(p),
            _ => unreachable!("profile {id} is live by the index invariant"),
        }
    }

    fn live_ref(&self, id: ProfileId) -> &Profile {
        match &self.slots[id as usize] {
            Slot::Live(p) => p,
            _ => unreachable!("profile {id} is live by the index invariant"),
        }
    }

    /// A new, empty live profile with room for `identifiers` identifiers.
    fn allocate(&mut self, identifiers: usize) -> ProfileId {
        self.live += 1;
        let id = self.reuse.pop().unwrap_or(self.slots.len() as ProfileId);
        let profile = Slot::Live(Arc::new(Profile {
            id,
            identifiers: Vec::with_capacity(identifiers),
            ..Profile::default()
        }));
        match self.slots.get_mut(id as usize) {
            Some(slot) => *slot = profile,
            None => self.slots.push(profile),
        }
        id
    }

    /// Inserts an index entry, noting the key as written for `apply_batch`'s hints.
    ///
    /// During `apply_batch_parallel` the entry goes to the window's overlay, and the id
    /// returned is the one written earlier in the window, not the one in the index. Callers
    /// use the result only for a key that their probe found in neither: then the two agree
    /// (the key is in the overlay only if this message has written it since its probe).
    fn index_insert(&mut self, k: u128, profile: ProfileId) -> Option<ProfileId> {
        if let Some(overlay) = &mut self.window.overlay {
            return overlay.insert(k, profile);
        }
        let bit = (k >> 64) as usize % WRITTEN_BITS;
        if let Some(word) = self.window.written.get_mut(bit / 64) {
            *word |= 1 << (bit % 64);
        }
        self.index.insert(k, profile)
    }

    /// Whether `k` may have been written to the index since the probe window was probed.
    fn maybe_written(&self, k: u128) -> bool {
        let bit = (k >> 64) as usize % WRITTEN_BITS;
        self.window
            .written
            .get(bit / 64)
            .is_none_or(|word| word & (1 << (bit % 64)) != 0)
    }

    /// Reads the start of a profile so that its cache lines are loaded before it is needed.
    fn touch(&self, id: ProfileId) -> usize {
        match self.slots.get(id as usize) {
            Some(Slot::Live(p)) => {
                p.events.len() + p.identifiers.first().map_or(0, |i| i.kind.len())
            }
            _ => 0,
        }
    }

    /// Whether linking the selected identifiers of `msg` into the union of `profiles` keeps
    /// every type within its limit. `probes` are the index probes of the selected identifiers
    /// (made against the current index); those already linked are counted with their profile.
    /// Identifiers are distinct (messages carry sorted, deduplicated identifiers).
    fn within_limits(
        &self,
        msg: &Message,
        sel: &[usize],
        probes: &[(u128, Option<ProfileId>)],
        profiles: &[ProfileId],
    ) -> bool {
        let mut counts = [0u32; 64];
        let types = self.config.types.len().min(counts.len());
        let mut bump = |id: &Identifier| {
            if let Some(rank) = self.config.rank(&id.kind).filter(|r| *r < types) {
                counts[rank] += 1;
            }
        };
        for p in profiles {
            self.live_ref(*p).identifiers.iter().for_each(&mut bump);
        }
        // Identifiers already linked were counted with their profile.
        for (&i, (_, p)) in sel.iter().zip(probes) {
            if p.is_none() {
                bump(&msg.identifiers[i]);
            }
        }
        counts[..types]
            .iter()
            .zip(&self.config.types)
            .all(|(n, t)| *n <= t.limit)
    }

    /// Resolves a message to its profile (creating or merging as needed) and folds it in.
    ///
    /// For many messages in a row, [`ProfileBook::apply_batch`] gives the same result faster.
    pub fn apply(&mut self, msg: &Message, at: EventRef) -> ApplyOutcome {
        let mut keys = std::mem::take(&mut self.window.keys);
        keys.clear();
        keys.extend(msg.identifiers.iter().map(|id| keyed(&self.secret, id)));
        let out = self.apply_keyed(msg, at, &keys, &[], true);
        self.window.keys = keys;
        out
    }

    /// Applies a message whose content a retention period removed (identifiers, source and
    /// times kept): it resolves and links exactly as [`ProfileBook::apply`] does, but is kept
    /// among the profile's expired events instead of its events.
    pub fn apply_expired(&mut self, msg: &Message, at: EventRef) -> ApplyOutcome {
        let mut keys = std::mem::take(&mut self.window.keys);
        keys.clear();
        keys.extend(msg.identifiers.iter().map(|id| keyed(&self.secret, id)));
        let out = self.apply_keyed(msg, at, &keys, &[], false);
        self.window.keys = keys;
        let list = self.expired.entry(out.profile).or_default();
        let pos = list.partition_point(|r| *r < at);
        if list.get(pos) != Some(&at) {
            list.insert(pos, at);
        }
        out
    }

    /// Marks events of a live profile as expired (their content was removed by a retention
    /// period): `events` are `(event time, log position)` pairs as listed in
    /// [`Profile::events`]. They leave the profile's events and join its expired events; pairs
    /// the profile does not list are ignored. Returns the log positions moved.
    pub fn expire(&mut self, profile: ProfileId, events: &[(Millis, EventRef)]) -> Vec<EventRef> {
        let Some(id) = self.resolve(profile) else {
            return Vec::new();
        };
        let mut wanted = events.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let p = self.live_mut(id);
        let mut moved = Vec::with_capacity(wanted.len());
        p.events.retain(|e| {
            let hit = wanted.binary_search(e).is_ok();
            if hit {
                moved.push(e.1);
            }
            !hit
        });
        if !moved.is_empty() {
            let list = self.expired.entry(id).or_default();
            list.extend(moved.iter().copied());
            list.sort_unstable();
            list.dedup();
        }
        moved
    }

    /// Log positions of a live profile's expired events, sorted (see
    /// [`ProfileBook::apply_expired`]).
    pub fn expired_events(&self, profile: ProfileId) -> &[EventRef] {
        self.resolve(profile)
            .and_then(|id| self.expired.get(&id))
            .map_or(&[], Vec::as_slice)
    }

    /// Applies messages in order, exactly as calling [`ProfileBook::apply`] on each in turn
    /// would (same book, same outcomes), but faster for bulk loads and group commits.
    ///
    /// Messages are taken in windows of [`PROBE_WINDOW`]. For each window, every identifier is
    /// hashed once, the index lines of all the keys are loaded back to back (see
    /// [`IdIndex::touch`]), so that their cache and TLB misses overlap instead of being paid
    /// one after another, and the keys are looked up; the profiles found are read too. The
    /// messages are then applied one by one, in order. A lookup made ahead serves as a hint
    /// only while no message applied since could have changed its answer: keys written to the
    /// index in the meantime (new links, and identifiers re-pointed by merges) are tracked, and
    /// a hint for such a key is looked up again.
    ///
    /// With [`ProfileBook::set_parallel_batches`] on, a batch of [`PARALLEL_MIN`] messages or
    /// more, on a machine with two or more cores, goes through
    /// [`ProfileBook::apply_batch_parallel`] instead (same result): bulk loads (file imports,
    /// and group commits while the queue is full) then use both cores for their index
    /// misses. Smaller group commits stay on the calling thread.
    pub fn apply_batch(&mut self, batch: &[(&Message, EventRef)]) -> Vec<ApplyOutcome> {
        if self.parallel && batch.len() >= PARALLEL_MIN && cores() > 1 {
            self.apply_batch_parallel(batch, PARALLEL_WINDOW)
        } else {
            self.apply_batch_window(batch, PROBE_WINDOW)
        }
    }

    /// [`ProfileBook::apply_batch`] with the index lookups and inserts split between two
    /// threads, in windows of `window` messages (`0` is taken as `1`); see
    /// [`IdIndex::resolve_windows`]. Same outcomes and same book as [`ProfileBook::apply`] on
    /// each message in turn.
    ///
    /// Invariant that makes this exact: while a window's messages are applied (in order, on
    /// the calling thread, by the same code as `apply`), the index is not written. Every index
    /// write of the window (new links, identifiers re-pointed by a merge) goes to the window's
    /// [`Overlay`] instead, and the current profile of one of the window's identifiers is the
    /// overlay's entry if it has one, else the index lookup made for the window before it was
    /// applied (its *hint*, which nothing since could have made stale). The overlay is written
    /// to the index, shard by shard, before the next window is looked up. Nothing else reads
    /// the index while a message is applied: merges re-point the absorbed profile's
    /// identifiers without reading them, and limits count identifiers from the profiles.
    pub fn apply_batch_parallel(
        &mut self,
        batch: &[(&Message, EventRef)],
        window: usize,
    ) -> Vec<ApplyOutcome> {
        let window = window.max(1);
        let span = |w: usize| &batch[w * window..((w + 1) * window).min(batch.len())];
        let mut out = Vec::with_capacity(batch.len());
        // The helper thread hashes with its own copy of the secret; the book is busy here.
        let secret: [u8; SECRET_BYTES] = *self.secret;
        let mut index = std::mem::take(&mut self.index);
        index.resolve_windows(
            batch.len().div_ceil(window),
            |w, keys| {
                for (msg, _) in span(w) {
                    keys.extend(msg.identifiers.iter().map(|id| keyed(&secret, id)));
                }
            },
            |w, keys, hints, overlay| {
                // The profiles found: their slots and boxes are cold.
                let mut sink = 0usize;
                for h in hints.iter().flatten() {
                    sink = sink.wrapping_add(self.touch(*h));
                }
                std::hint::black_box(sink);
                self.window.overlay = Some(std::mem::take(overlay));
                let mut from = 0;
                for (msg, at) in span(w) {
                    let to = from + msg.identifiers.len();
                    out.push(self.apply_keyed(msg, *at, &keys[from..to], &hints[from..to], true));
                    from = to;
                }
                *overlay = self.window.overlay.take().unwrap_or_default();
            },
        );
        self.index = index;
        out
    }

    /// [`ProfileBook::apply_batch`] with a probe window of `window` messages (benchmarks;
    /// `0` is taken as `1`).
    pub fn apply_batch_window(
        &mut self,
        batch: &[(&Message, EventRef)],
        window: usize,
    ) -> Vec<ApplyOutcome> {
        let mut out = Vec::with_capacity(batch.len());
        let mut keys = std::mem::take(&mut self.window.keys);
        let mut hints = std::mem::take(&mut self.window.hints);
        let mut starts = std::mem::take(&mut self.window.starts);
        for chunk in batch.chunks(window.max(1)) {
            keys.clear();
            starts.clear();
            for (msg, _) in chunk {
                starts.push(keys.len());
                keys.extend(msg.identifiers.iter().map(|id| keyed(&self.secret, id)));
            }
            starts.push(keys.len());
            // Load the index lines of every key at once (no branch waits on them, so their
            // misses overlap), then look the keys up in those lines, now in cache.
            let mut sink = 0u32;
            for k in &keys {
                sink ^= self.index.touch(*k);
            }
            std::hint::black_box(sink);
            hints.clear();
            hints.extend(keys.iter().map(|k| self.index.get(k)));
            // The profiles found: their slots and boxes are cold too.
            let mut sink = 0usize;
            for h in hints.iter().flatten() {
                sink = sink.wrapping_add(self.touch(*h));
            }
            std::hint::black_box(sink);
            self.window.written.clear();
            self.window.written.resize(WRITTEN_BITS / 64, 0);
            for (j, (msg, at)) in chunk.iter().enumerate() {
                let span = starts[j]..starts[j + 1];
                out.push(self.apply_keyed(msg, *at, &keys[span.clone()], &hints[span], true));
            }
        }
        // Outside a batch nothing is tracked.
        self.window.written.clear();
        self.window.keys = keys;
        self.window.hints = hints;
        self.window.starts = starts;
        out
    }

    /// `apply` with the keys of `msg.identifiers` computed (`keys[i]` is the key of the `i`th
    /// identifier) and, optionally, index lookups made earlier (`hints[i]`, or an empty slice),
    /// which are used only for keys not written to the index since. `listed`: the message is
    /// one of the profile's events (false for an expired message).
    fn apply_keyed(
        &mut self,
        msg: &Message,
        at: EventRef,
        keys: &[u128],
        hints: &[Option<ProfileId>],
        listed: bool,
    ) -> ApplyOutcome {
        debug_assert_eq!(keys.len(), msg.identifiers.len());
        if !self.suppressed.is_empty() && crate::consent::grants(msg) {
            // Consent given again lifts the erasure's suppression of these identifiers.
            for k in keys {
                self.suppressed.remove(k);
            }
        }
        let mut s = std::mem::take(&mut self.scratch);
        s.sel.clear();
        if self.cut.is_empty() {
            s.sel.extend(0..keys.len());
        } else {
            s.sel
                .extend((0..keys.len()).filter(|i| !self.cut.contains(&keys[*i])));
            if s.sel.is_empty() {
                // Only unlinked identifiers: the message belongs to the first one's own profile.
                s.sel.extend((0..keys.len()).take(1));
            }
        }
        // One index probe per identifier: its key and the profile holding it, if any.
        s.probes.clear();
        for &i in &s.sel {
            let k = keys[i];
            let found = match (&self.window.overlay, hints.get(i)) {
                // apply_batch_parallel: the window's writes, else the index before the window.
                (Some(overlay), hint) => overlay.get(k).or(hint.copied().flatten()),
                (None, Some(&hint)) if !self.maybe_written(k) => hint,
                (None, _) => self.index.get(&k),
            };
            s.probes.push((k, found));
        }
        let mut out = ApplyOutcome::default();
        loop {
            s.profiles.clear();
            s.profiles.extend(s.probes.iter().filter_map(|(_, p)| *p));
            s.profiles.sort_unstable();
            s.profiles.dedup();
            let known = s.profiles.len() == 1 && s.probes.iter().all(|(_, p)| p.is_some());
            if s.sel.len() <= 1 || known || self.within_limits(msg, &s.sel, &s.probes, &s.profiles)
            {
                break;
            }
            s.probes.pop();
            if let Some(lowest) = s.sel.pop() {
                out.dropped.push(msg.identifiers[lowest].clone());
            }
        }
        let profiles = &s.profiles;
        let target = match profiles.first() {
            Some(&first) => first,
            None => {
                out.created = true;
                self.allocate(s.sel.len())
            }
        };
        for &other in &profiles[profiles.len().min(1)..] {
            self.merge_into(target, other);
        }
        if !out.created && profiles.len() > 1 {
            self.merges += profiles.len() as u64 - 1;
            let record = MergeRecord {
                action: "merge".into(),
                at: msg.received_at,
                message_id: Some(msg.message_id.clone()),
                source: Some(msg.source),
                identifiers: s.sel.iter().map(|&i| msg.identifiers[i].clone()).collect(),
                survivor: target,
                others: profiles[1..].to_vec(),
            };
            self.live_mut(target).history.push(record);
        }
        out.merged = profiles.get(1..).map(<[_]>::to_vec).unwrap_or_default();
        // Only a link into an existing profile is recorded: a new profile or a merge keeps no
        // separate list of what was linked.
        let record_link = !out.created && out.merged.is_empty();
        let mut linked = Vec::new();
        // Identifiers of merged profiles were re-pointed by `merge_into`; only new ones remain.
        for (&i, &(k, found)) in s.sel.iter().zip(&s.probes) {
            if found.is_none() && self.index_insert(k, target).is_none() {
                let id = &msg.identifiers[i];
                if record_link {
                    linked.push(id.clone());
                }
                self.live_mut(target).identifiers.push(id.clone());
            }
        }
        self.scratch = s;
        if record_link && !linked.is_empty() {
            // An existing profile gained identifiers: keep which message joined them.
            let record = MergeRecord {
                action: "link".into(),
                at: msg.received_at,
                message_id: Some(msg.message_id.clone()),
                source: Some(msg.source),
                identifiers: linked,
                survivor: target,
                others: Vec::new(),
            };
            self.live_mut(target).history.push(record);
        }
        out.profile = target;
        let priority = std::mem::take(&mut self.priority);
        fold(self.live_mut(target), msg, at, &priority, listed);
        self.priority = priority;
        out
    }

    fn merge_into(&mut self, target: ProfileId, other: ProfileId) {
        let Slot::Live(gone) =
            std::mem::replace(&mut self.slots[other as usize], Slot::Merged(target))
        else {
            unreachable!("merging a live profile");
        };
        let gone = Arc::unwrap_or_clone(gone);
        self.live -= 1;
        for id in &gone.identifiers {
            self.index_insert(self.key(id), target);
        }
        let priority = std::mem::take(&mut self.priority);
        let into = self.live_mut(target);
        into.identifiers.extend(gone.identifiers);
        for (k, v) in gone.traits {
            let wins = match into.traits.get(&k) {
                None => true,
                Some(old) => outranks(&v, old, &priority),
            };
            if wins {
                into.traits.insert(k, v);
            }
        }
        into.first_seen = into.first_seen.min(gone.first_seen);
        into.last_seen = into.last_seen.max(gone.last_seen);
        for (s, n) in gone.sources {
            *into.sources.entry(s).or_default() += n;
        }
        let mine = std::mem::take(&mut into.events);
        into.events = merge_sorted(mine, gone.events);
        into.merged_from.push(other);
        if let Some(gone_expired) = self.expired.remove(&other) {
            let list = self.expired.entry(target).or_default();
            list.extend(gone_expired);
            list.sort_unstable();
        }
        let into = self.live_mut(target);
        into.merged_from.extend(gone.merged_from);
        into.history.extend(gone.history);
        into.history.sort_by_key(|r| r.at);
        for (k, v) in gone.consent {
            let wins = into
                .consent
                .get(&k)
                .is_none_or(|old| crate::consent::newer(&v, old));
            if wins {
                into.consent.insert(k, v);
            }
        }
        self.priority = priority;
    }

    /// Starts splitting `profile` by unlinking `identifier`.
    ///
    /// The identifier is marked as never linking again; the profile is dissolved and the
    /// events to replay through [`ProfileBook::apply`] are returned in log order. Call
    /// [`ProfileBook::finish_unmerge`] after the replay.
    pub fn begin_unmerge(
        &mut self,
        profile: ProfileId,
        identifier: &Identifier,
    ) -> Result<Vec<EventRef>, ProfileError> {
        let id = self
            .resolve(profile)
            .ok_or(ProfileError::NoProfile(profile))?;
        let p = self.live_ref(id);
        if !p.identifiers.contains(identifier) {
            return Err(ProfileError::NotLinked {
                profile: id,
                identifier: identifier.to_string(),
            });
        }
        if p.identifiers.len() == 1 {
            return Err(ProfileError::Single(id));
        }
        self.cut.insert(self.key(identifier));
        let Slot::Live(gone) = std::mem::replace(&mut self.slots[id as usize], Slot::Vacant) else {
            unreachable!("resolved to a live profile");
        };
        self.live -= 1;
        for ident in &gone.identifiers {
            self.index.remove(&self.key(ident));
        }
        self.reuse = vec![id];
        let mut refs: Vec<EventRef> = gone.events.iter().map(|(_, r)| *r).collect();
        // Expired events are replayed too (as expired): their identifiers still link.
        refs.extend(self.expired.remove(&id).unwrap_or_default());
        refs.sort_unstable();
        Ok(refs)
    }

    /// Finishes an unmerge: records it on every profile the split produced.
    pub fn finish_unmerge(
        &mut self,
        profile: ProfileId,
        identifier: &Identifier,
        parts: &[ProfileId],
        at: Millis,
    ) {
        self.reuse.clear();
        // `profile` may be a retired id (begin_unmerge resolves it): find the slot it vacated.
        let profile = self.root(profile).unwrap_or(profile);
        if matches!(self.slots.get(profile as usize), Some(Slot::Vacant)) {
            // Every event went elsewhere; keep the old id resolvable.
            let to = parts.first().copied().unwrap_or(profile);
            self.slots[profile as usize] = Slot::Merged(to);
        }
        let mut parts: Vec<ProfileId> = parts.iter().filter_map(|p| self.resolve(*p)).collect();
        parts.sort_unstable();
        parts.dedup();
        let record = MergeRecord {
            action: "unmerge".into(),
            at,
            message_id: None,
            source: None,
            identifiers: vec![identifier.clone()],
            survivor: profile,
            others: parts.clone(),
        };
        for p in parts {
            self.live_mut(p).history.push(record.clone());
        }
    }
}

fn outranks(new: &TraitValue, old: &TraitValue, priority: &HashMap<SourceId, i32>) -> bool {
    let p = |s| priority.get(&s).copied().unwrap_or(0);
    (p(new.source), new.updated_at) >= (p(old.source), old.updated_at)
}

fn fold(
    p: &mut Profile,
    msg: &Message,
    at: EventRef,
    priority: &HashMap<SourceId, i32>,
    listed: bool,
) {
    // Every folded message (listed or expired) is counted per source.
    let first = p.sources.is_empty();
    let traits = if msg.traits.len() > 2 {
        msg.traits_map()
    } else {
        Default::default()
    };
    for (k, v) in traits {
        let new = TraitValue {
            value: v.to_string(),
            source: msg.source,
            updated_at: msg.timestamp,
        };
        let wins = p
            .traits
            .get(&k)
            .is_none_or(|old| outranks(&new, old, priority));
        if wins {
            p.traits.insert(k, new);
        }
    }
    p.first_seen = if first {
        msg.timestamp
    } else {
        p.first_seen.min(msg.timestamp)
    };
    p.last_seen = if first {
        msg.timestamp
    } else {
        p.last_seen.max(msg.timestamp)
    };
    *p.sources.entry(msg.source).or_default() += 1;
    for u in crate::consent::message_updates(msg) {
        let record = crate::consent::ConsentRecord {
            state: u.state,
            source: msg.source,
            at: msg.timestamp,
            message_id: msg.message_id.clone(),
        };
        let k = crate::consent::key(u.channel, u.purpose);
        if p.consent
            .get(&k)
            .is_none_or(|old| crate::consent::newer(&record, old))
        {
            p.consent.insert(k, record);
        }
    }
    if !listed {
        return;
    }
    let entry = (msg.timestamp, at);
    match p.events.last() {
        Some(last) if *last > entry => {
            let pos = p.events.partition_point(|e| *e < entry);
            p.events.insert(pos, entry);
        }
        _ => p.events.push(entry),
    }
}

fn merge_sorted<T: Ord + Copy>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{IdentifierType, Normalizer};
    use crate::message::MessageKind;
    use proptest::prelude::*;

    /// Tight limits, so that they bite: one user id, one phone, two emails, two anonymous ids.
    fn config() -> IdentityConfig {
        let t = |name: &str, limit| IdentifierType {
            name: name.into(),
            limit,
            normalize: Normalizer::Trim,
            traits: Vec::new(),
            scope_trait: None,
            blocked: Vec::new(),
        };
        let types = vec![
            t("user_id", 1),
            t("phone", 1),
            t("email", 2),
            t("anonymous_id", 2),
        ];
        IdentityConfig::new(types, Vec::new()).expect("valid")
    }

    const KINDS: [&str; 4] = ["user_id", "phone", "email", "anonymous_id"];

    /// Message `n` carrying identifiers `picks` (`(type, value)` indexes into a pool of
    /// `pool` values per type: a small pool makes messages share identifiers and merge).
    fn message(config: &IdentityConfig, n: usize, picks: &[(u8, u16)], pool: u16) -> Message {
        let mut ids: Vec<Identifier> = picks
            .iter()
            .map(|&(t, v)| {
                Identifier::new(KINDS[usize::from(t) % 4], format!("v{}", v % pool.max(1)))
            })
            .collect();
        if ids.is_empty() {
            ids.push(Identifier::new("anonymous_id", format!("v{}", n % 7)));
        }
        config.sort(&mut ids);
        let base = 1_704_067_200_000i64;
        Message {
            kind: MessageKind::Identify,
            message_id: format!("m{n}"),
            source: (n % 3) as u32 + 1,
            event: None,
            user_id: None,
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            timestamp: base + ((n * 7919) % 1000) as i64,
            received_at: base + n as i64,
            sent_at: None,
            original_timestamp: None,
            traits: format!("{{\"name\":\"n{}\",\"k\":{}}}", n % 5, n % 3),
            properties: "{}".into(),
            context: "{}".into(),
            identifiers: ids,
        }
    }

    /// Everything two books must agree on, the index in table order (so its layout too).
    fn state(book: &ProfileBook) -> impl PartialEq + std::fmt::Debug {
        let mut cut: Vec<u128> = book.cut.iter().copied().collect();
        cut.sort_unstable();
        (
            book.profiles().cloned().collect::<Vec<_>>(),
            book.redirects().collect::<Vec<_>>(),
            book.index.iter().collect::<Vec<_>>(),
            cut,
            (
                book.live(),
                book.merges(),
                book.identifiers(),
                book.id_space(),
            ),
        )
    }

    /// An unmerge between batches: cuts the `which`th identifier of the `profile`th live
    /// profile, replays its events, the sequential book with `apply`, the other with `replay`.
    fn unmerge(
        book: &mut ProfileBook,
        log: &[Message],
        profile: usize,
        which: usize,
        replay: impl Fn(&mut ProfileBook, &[(&Message, EventRef)]) -> Vec<ApplyOutcome>,
    ) -> Option<Vec<ApplyOutcome>> {
        let ids: Vec<ProfileId> = book.profiles().map(|p| p.id).collect();
        let id = *ids.get(profile % ids.len().max(1))?;
        let idents = book.get(id)?.identifiers.clone();
        let ident = idents.get(which % idents.len())?.clone();
        let refs = book.begin_unmerge(id, &ident).ok()?;
        let batch: Vec<(&Message, EventRef)> =
            refs.iter().map(|r| (&log[*r as usize], *r)).collect();
        let outs = replay(book, &batch);
        let mut parts: Vec<ProfileId> = outs.iter().map(|o| o.profile).collect();
        parts.sort_unstable();
        parts.dedup();
        book.finish_unmerge(id, &ident, &parts, 0);
        Some(outs)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// `apply_batch_parallel` (two threads, index lookups and writes per shard, an overlay
        /// for the writes of the current window) gives exactly what `apply` gives message by
        /// message: the same outcomes (dense ids, merges, dropped identifiers) and the same
        /// book: profiles with their merge records, redirects, and the index, entry by entry
        /// in table order. Small pools share identifiers between messages, so windows see
        /// keys written and re-pointed by merges earlier in the same window; tight limits drop
        /// identifiers; unmerges between batches leave cut identifiers and tombstones, and
        /// their replays go through the parallel path too.
        #[test]
        fn parallel_batches_equal_sequential_apply(
            stream in proptest::collection::vec(
                (proptest::collection::vec((0u8..4, any::<u16>()), 0..5), 0u8..8),
                1..200,
            ),
            pool in prop_oneof![Just(3u16), Just(12), Just(60), Just(1000)],
            window in prop_oneof![1usize..5, Just(7), Just(64)],
            unmerges in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..4),
        ) {
            let config = config();
            let log: Vec<Message> = stream
                .iter()
                .enumerate()
                .map(|(n, (picks, _))| message(&config, n, picks, pool))
                .collect();
            let mut seq = ProfileBook::new(config.clone());
            let mut par = ProfileBook::new(config);
            seq.set_priority(3, 5);
            par.set_priority(3, 5);
            let (mut outs_seq, mut outs_par) = (Vec::new(), Vec::new());
            let mut cuts = unmerges.iter();
            let mut from = 0;
            for (n, (_, end)) in stream.iter().enumerate() {
                outs_seq.push(seq.apply(&log[n], n as u64));
                // A batch ends here one time in eight, and at the end of the stream.
                if *end != 0 && n + 1 < log.len() {
                    continue;
                }
                let batch: Vec<(&Message, EventRef)> =
                    (from..=n).map(|i| (&log[i], i as u64)).collect();
                outs_par.extend(par.apply_batch_parallel(&batch, window));
                from = n + 1;
                prop_assert_eq!(&outs_seq, &outs_par);
                prop_assert_eq!(state(&seq), state(&par));
                if let Some(&(profile, which)) = cuts.next() {
                    let a = unmerge(&mut seq, &log, profile, which, |b, batch| {
                        batch.iter().map(|(m, at)| b.apply(m, *at)).collect()
                    });
                    let b = unmerge(&mut par, &log, profile, which, |b, batch| {
                        b.apply_batch_parallel(batch, window)
                    });
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(state(&seq), state(&par));
                }
            }
            prop_assert_eq!(outs_seq, outs_par);
        }
    }

    /// A batch big enough for `apply_batch` to take the parallel path (switched on, on two or
    /// more cores),
    /// with the default windows, equals `apply` message by message and the single-threaded
    /// `apply_batch_window`.
    #[test]
    fn large_batches_equal_sequential_apply() {
        let config = config();
        let n = 3 * PARALLEL_MIN;
        let log: Vec<Message> = (0..n)
            .map(|i| {
                let r = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
                let picks: Vec<(u8, u16)> = (0..1 + r % 4)
                    .map(|j| ((r >> (8 * j)) as u8 % 4, (r >> (8 * j + 2)) as u16))
                    .collect();
                message(&config, i, &picks, 4000)
            })
            .collect();
        let batch: Vec<(&Message, EventRef)> =
            log.iter().enumerate().map(|(i, m)| (m, i as u64)).collect();
        let mut seq = ProfileBook::new(config.clone());
        let outs_seq: Vec<ApplyOutcome> = batch.iter().map(|(m, at)| seq.apply(m, *at)).collect();
        let mut win = ProfileBook::new(config.clone());
        let outs_win = win.apply_batch_window(&batch, PROBE_WINDOW);
        let mut par = ProfileBook::new(config);
        par.set_parallel_batches(true);
        let mut outs_par = par.apply_batch(&batch[..PARALLEL_MIN + 5]);
        outs_par.extend(par.apply_batch(&batch[PARALLEL_MIN + 5..]));
        assert!(seq.merges() > 0, "the stream merges profiles");
        assert!(
            outs_seq.iter().any(|o| !o.dropped.is_empty()),
            "limits bite"
        );
        assert_eq!(outs_seq, outs_win);
        assert_eq!(outs_seq, outs_par);
        assert_eq!(state(&seq), state(&win));
        assert_eq!(state(&seq), state(&par));
    }

    #[test]
    fn traits_of_some_keys_are_the_full_traits_restricted_to_them() {
        let mut p = Profile::default();
        for (k, v) in [
            ("city", r#""上海""#),
            ("level", r#""gold""#),
            ("phone", "bad json"),
        ] {
            let t = TraitValue {
                value: v.into(),
                source: 1,
                updated_at: 0,
            };
            p.traits.insert(k.into(), t);
        }
        let record = crate::consent::ConsentRecord {
            state: crate::consent::ConsentState::Granted,
            source: 1,
            at: 0,
            message_id: "m1".into(),
        };
        p.consent.insert("sms/marketing".into(), record);
        let full = p.tag_traits();
        for keys in [
            vec![],
            vec!["city"],
            vec!["consent", "level"],
            vec!["phone", "absent"],
        ] {
            let keys: Vec<String> = keys.into_iter().map(String::from).collect();
            let mut want = full.clone();
            want.retain(|k, _| keys.contains(k));
            assert_eq!(p.tag_traits_of(&keys), want, "{keys:?}");
        }
        assert_eq!(full["consent"]["sms"]["marketing"], "granted");
        assert_eq!(full["phone"], serde_json::Value::Null);
    }
}
