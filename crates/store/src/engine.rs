//! The engine: one committer thread owns all writes.
//!
//! A write is a [`Job`] on a bounded queue (a full queue is [`StoreError::Busy`], which the HTTP
//! layer answers with 429). The committer takes every job waiting (up to a group size),
//! deduplicates messages by `(source, messageId)`, appends them to the log, syncs once (group
//! commit), applies them to the [`ProfileBook`] under its write lock, and only then answers each
//! job. So an acknowledged message is durable and already visible to readers.
//!
//! Restart: load `DIR/snapshot.bin` (the book, the dedup set and the log position it covers),
//! then replay the log from there. Snapshots are written every `snapshot_every` records and on
//! a clean shutdown; a crash loses no acknowledged message, only replay time. The committer
//! only captures a snapshot — a copy of the book whose profiles it shares copy on write, and a
//! view of the dedup keys — and a background thread serialises, encrypts and writes it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use portrait_core::hash::KeySet;
use portrait_core::{
    BookCapture, Identifier, IdentityConfig, Message, ProfileBook, ProfileId, SourceId,
};
use serde::{Deserialize, Serialize};

use crate::crypto::Keyring;
use crate::dedup::{Dedup, DedupView};
use crate::error::{Result, StoreError};
use crate::record::{tombstone, Codec, LogRecord, LogRecordRef};
use crate::retention::{ExpiryReport, Matcher, RuleReport};
use crate::sources::{write_atomic, SourceRegistry};
use crate::wal::{LogReader, Wal};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Log segment size in bytes.
    pub segment_bytes: u64,
    /// Jobs that may wait for the committer before [`StoreError::Busy`].
    pub queue: usize,
    /// Most messages committed in one group (one fsync).
    pub max_group: usize,
    /// Records between snapshots.
    pub snapshot_every: u64,
    /// Identity configuration; `None` reads `DIR/identity.yaml` or uses the defaults.
    pub identity: Option<IdentityConfig>,
    /// Keys for encryption at rest; `None` stores records in plain (tests and benchmarks).
    pub keyring: Option<Arc<Keyring>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 256 << 20,
            queue: 4096,
            max_group: 100_000,
            snapshot_every: 5_000_000,
            identity: None,
            keyring: None,
        }
    }
}

/// What an ingest call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Messages newly stored.
    pub accepted: usize,
    /// Messages already stored (same source and messageId), skipped.
    pub duplicates: usize,
    /// Messages carrying an identifier of an erased person, not stored.
    pub suppressed: usize,
}

/// What an erasure destroyed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The erased profile.
    pub profile: ProfileId,
    /// Log positions of the destroyed events (for derived stores such as the lake).
    pub events: Vec<u64>,
    /// Identifiers now on the suppression list.
    pub identifiers: usize,
    /// The erased identifiers' values, for scrubbing derived files (never logged or stored).
    #[serde(skip)]
    pub values: Vec<Identifier>,
}

/// Counters over the whole store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Messages stored.
    pub events: u64,
    /// Duplicates skipped.
    pub duplicates: u64,
    /// Messages stored per source id.
    pub per_source: BTreeMap<SourceId, u64>,
    /// Unmerges performed.
    pub unmerges: u64,
}

type Reply<T> = Box<dyn FnOnce(Result<T>) + Send>;

/// A stored message as the committer applied it (for [`Observer`]s).
#[derive(Debug, Clone)]
pub struct Applied {
    /// Its log offset.
    pub offset: u64,
    /// The message.
    pub message: Message,
    /// The profile it now belongs to.
    pub profile: ProfileId,
    /// Profiles merged into that profile by this message, in order.
    pub merged: Vec<ProfileId>,
}

/// Receives every group of messages the committer applied, in log order, once they are
/// durable and visible and before their writers are answered. It runs on the committer
/// thread: hand the work to another thread and return.
pub type Observer = Arc<dyn Fn(Vec<Applied>) + Send + Sync>;

/// Stored messages with their log offsets.
pub type Located = Vec<(u64, Message)>;

/// A job's messages after logging, its report and its reply.
type Staged = (Located, IngestReport, Reply<IngestReport>);

enum Job {
    Messages(Vec<Message>, Reply<IngestReport>),
    Unmerge(ProfileId, Identifier, Reply<Vec<ProfileId>>),
    Snapshot(Reply<()>),
    Erase(ProfileId, Reply<ErasureReport>),
    RotateDataKey(Reply<u64>),
    Expire(Vec<(ProfileId, i64, u64)>, Reply<Expired>),
    Stop,
}

/// What one expiry job did: the log positions expired, and those left because the shortened
/// record would not fit.
#[derive(Debug, Default)]
struct Expired {
    done: Vec<u64>,
    unfit: Vec<u64>,
}

/// Events examined per look at the state (and at most expired per committer job), so ingestion
/// interleaves with a long expiry.
const EXPIRE_CHUNK: usize = 10_000;

/// The state readers see.
pub struct State {
    /// Profiles and the identity graph.
    pub book: ProfileBook,
    /// Counters.
    pub stats: Stats,
}

/// The snapshot's layout, as [`Captured::encode`] writes it field by field (the test checks
/// that the two agree).
#[cfg(test)]
#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    log_end: u64,
    book: &'a BookCapture,
    stats: &'a Stats,
    dedup: &'a DedupView,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    version: u32,
    log_end: u64,
    book: ProfileBook,
    stats: Stats,
    dedup: KeySet,
}

const SNAPSHOT_VERSION: u32 = 4;

/// The embedded engine over a data directory.
pub struct Engine {
    dir: PathBuf,
    identity: Arc<IdentityConfig>,
    state: Arc<RwLock<State>>,
    sources: Arc<RwLock<SourceRegistry>>,
    log: Arc<LogReader>,
    codec: Codec,
    tx: SyncSender<Job>,
    committer: Mutex<Option<JoinHandle<()>>>,
    observer: Arc<RwLock<Option<Observer>>>,
    expired: std::sync::atomic::AtomicU64,
    /// Log records replayed at open (after the snapshot).
    replayed: u64,
    _lock: File,
}

fn dedup_key(source: SourceId, message_id: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&source.to_le_bytes());
    h.update(message_id.as_bytes());
    h.digest128()
}

/// Loads `DIR/identity.yaml` when present, else the defaults.
pub fn load_identity(dir: &Path) -> Result<IdentityConfig> {
    let path = dir.join("identity.yaml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut config: IdentityConfig =
                serde_yaml::from_str(&text).map_err(|e| StoreError::Config {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            config.compile().map_err(|e| StoreError::Config {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Ok(config)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IdentityConfig::default()),
        Err(e) => Err(StoreError::io(&path)(e)),
    }
}

/// Takes the data directory's lock file, so two processes never write one directory.
pub fn lock_dir(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let path = dir.join("LOCK");
    let file = File::create(&path).map_err(StoreError::io(&path))?;
    file.try_lock()
        .map_err(|_| StoreError::Locked(dir.to_path_buf()))?;
    Ok(file)
}

impl Engine {
    /// Opens the engine on `dir`: takes the lock, loads the snapshot, replays the log, starts
    /// the committer.
    pub fn open(dir: &Path, options: EngineOptions) -> Result<Self> {
        let lock = lock_dir(dir)?;
        let config = match options.identity.clone() {
            Some(c) => c,
            None => load_identity(dir)?,
        };
        let sources = SourceRegistry::open(dir)?;
        let (wal, cut) = Wal::open(&dir.join("log"), options.segment_bytes)?;
        if cut > 0 {
            tracing::warn!(
                bytes = cut,
                "log had a torn tail from a crash; unacknowledged bytes dropped"
            );
        }
        let started = Instant::now();
        if options.keyring.is_none() && dir.join("keyring.json").exists() {
            return Err(StoreError::Crypto(format!(
                "{} is encrypted: set PORTRAIT_MASTER_KEY or give its key file",
                dir.display()
            )));
        }
        let codec = Codec::new(options.keyring.clone());
        let fresh = |config: &IdentityConfig| {
            let mut book = ProfileBook::new(config.clone());
            if let Some(ring) = &options.keyring {
                book.set_secret(ring.index_secret());
            }
            (
                State {
                    book,
                    stats: Stats::default(),
                },
                KeySet::default(),
                0,
            )
        };
        let snap_path = dir.join("snapshot.bin");
        let (mut state, mut dedup, from) = match std::fs::read(&snap_path) {
            Ok(bytes) => match codec.decode::<SnapshotOwned>(&bytes) {
                Ok(Some(snap)) if snap.version == SNAPSHOT_VERSION && snap.log_end <= wal.end() => {
                    let mut book = snap.book;
                    book.set_config(config.clone());
                    if let Some(ring) = &options.keyring {
                        book.set_secret(ring.index_secret());
                    }
                    (
                        State {
                            book,
                            stats: snap.stats,
                        },
                        snap.dedup,
                        snap.log_end,
                    )
                }
                Err(e @ StoreError::Crypto(_)) => return Err(e),
                _ => {
                    tracing::warn!(path = %snap_path.display(), "snapshot unusable; rebuilding from the log");
                    fresh(&config)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh(&config),
            Err(e) => return Err(StoreError::io(&snap_path)(e)),
        };
        for s in sources.list() {
            state.book.set_priority(s.id, s.priority);
        }
        // Group commits of `PARALLEL_MIN` messages or more (imports, a backlog after a burst)
        // split their index work over two threads; same result as one thread.
        state.book.set_parallel_batches(true);
        let reader = wal.reader();
        let mut replayed = 0u64;
        // Events of erasures that a crash interrupted: destroyed once the replay is done.
        let mut pending_tombstones = Vec::new();
        // Events an `Expire` record moved out of a profile's events during the replay: counted
        // out of the stats, and shortened in place if a crash left them whole.
        let mut pending_expired: Vec<(ProfileId, u64)> = Vec::new();
        wal.replay(from, |offset, payload| {
            replayed += 1;
            let record = codec
                .decode_record(payload)
                .map_err(|e| StoreError::Corrupt {
                    path: dir.join("log"),
                    reason: format!("record at {offset}: {e}"),
                })?;
            match record {
                None => {}
                Some(LogRecord::Message(m)) => {
                    let m = *m;
                    dedup.insert(dedup_key(m.source, &m.message_id));
                    if !state.book.is_suppressed(&m) {
                        apply_message(&mut state, &m, offset);
                    }
                }
                Some(LogRecord::Unmerge {
                    profile,
                    identifier,
                    at,
                }) => {
                    apply_unmerge(&mut state, &reader, &codec, profile, &identifier, at)?;
                }
                Some(LogRecord::Skeleton(m)) => {
                    // Re-creates the erased profile's id, to be erased again below.
                    state.book.apply(&m, offset);
                }
                Some(LogRecord::Erase {
                    profile, suppress, ..
                }) => {
                    if let Ok(erased) = state.book.erase(profile) {
                        pending_tombstones.extend(erased.events);
                    }
                    state.book.suppress(&suppress);
                }
                Some(LogRecord::Expired(m)) => {
                    // Links and resolves as the whole message did; not one of the events.
                    dedup.insert(dedup_key(m.source, &m.message_id));
                    if !state.book.is_suppressed(&m) {
                        state.book.apply_expired(&m, offset);
                    }
                }
                Some(LogRecord::Expire { events, .. }) => {
                    for (profile, list) in &events {
                        let moved = state.book.expire(*profile, list);
                        pending_expired.extend(moved.into_iter().map(|at| (*profile, at)));
                    }
                }
            }
            Ok(())
        })?;
        let mut wal = wal;
        let mut shortened = Vec::new();
        for (profile, at) in pending_expired {
            let payload = reader.read(at)?;
            let (m, whole) = match codec.decode_record(&payload)? {
                Some(LogRecord::Message(m)) => (m, true),
                Some(LogRecord::Expired(m)) => (m, false),
                _ => continue,
            };
            uncount_message(&mut state.stats, &m);
            if !whole {
                continue;
            }
            let Some(p) = state.book.get(profile) else {
                continue;
            };
            if let Some(r) = codec.expired(&m, kept_traits(p, &m), payload.len()) {
                shortened.push((at, r));
            }
        }
        if !shortened.is_empty() {
            tracing::warn!(
                events = shortened.len(),
                "finishing a retention expiry a crash had interrupted"
            );
        }
        wal.overwrite(shortened)?;
        let pseudonym = pseudonymizer(options.keyring.as_deref());
        let mut tombstones = Vec::new();
        for at in pending_tombstones {
            let payload = reader.read(at)?;
            if let Ok(Some(LogRecord::Message(m) | LogRecord::Expired(m))) =
                codec.decode_record(&payload)
            {
                let erased = codec.skeleton(&m, payload.len(), &pseudonym);
                tombstones.push((at, erased));
            }
        }
        wal.overwrite(tombstones)?;
        tracing::info!(
            profiles = state.book.live(),
            replayed,
            ms = started.elapsed().as_millis() as u64,
            "engine state recovered"
        );
        let state = Arc::new(RwLock::new(state));
        let observer: Arc<RwLock<Option<Observer>>> = Arc::new(RwLock::new(None));
        let (tx, rx) = sync_channel(options.queue);
        let committer = Committer {
            observer: observer.clone(),
            codec: codec.clone(),
            dir: dir.to_path_buf(),
            wal,
            state: state.clone(),
            dedup: Dedup::new(dedup),
            max_group: options.max_group,
            snapshot_every: options.snapshot_every,
            since_snapshot: replayed,
            writing: None,
            unfinished: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("portrait-committer".into())
            .spawn(move || committer.run(rx))
            .map_err(StoreError::io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            identity: Arc::new(config),
            state,
            sources: Arc::new(RwLock::new(sources)),
            log: reader,
            codec,
            tx,
            committer: Mutex::new(Some(handle)),
            observer,
            expired: std::sync::atomic::AtomicU64::new(0),
            replayed,
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity configuration in force.
    pub fn identity(&self) -> &IdentityConfig {
        &self.identity
    }

    /// Read access to profiles and counters.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    /// Read access to the sources.
    pub fn sources(&self) -> RwLockReadGuard<'_, SourceRegistry> {
        self.sources.read()
    }

    /// Write access to the sources (adding sources and keys). Call
    /// [`Engine::sync_priorities`] after changing priorities.
    pub fn sources_mut(&self) -> RwLockWriteGuard<'_, SourceRegistry> {
        self.sources.write()
    }

    /// Installs (or removes) the observer of applied messages.
    pub fn set_observer(&self, observer: Option<Observer>) {
        *self.observer.write() = observer;
    }

    /// Copies source trait priorities into the profile book.
    pub fn sync_priorities(&self) {
        let sources = self.sources.read();
        let mut state = self.state.write();
        for s in sources.list() {
            state.book.set_priority(s.id, s.priority);
        }
    }

    /// Queues messages without waiting; `reply` is called once they are durable and applied.
    /// Returns [`StoreError::Busy`] when the queue is full.
    pub fn submit(
        &self,
        messages: Vec<Message>,
        reply: impl FnOnce(Result<IngestReport>) + Send + 'static,
    ) -> Result<()> {
        match self.tx.try_send(Job::Messages(messages, Box::new(reply))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(StoreError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Stopped),
        }
    }

    fn call<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T> {
        let (tx, rx) = sync_channel(1);
        let reply: Reply<T> = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.tx.send(make(reply)).map_err(|_| StoreError::Stopped)?;
        rx.recv().map_err(|_| StoreError::Stopped)?
    }

    /// Stores messages and waits until they are durable and applied.
    pub fn ingest(&self, messages: Vec<Message>) -> Result<IngestReport> {
        self.call(|reply| Job::Messages(messages, reply))
    }

    /// Splits a profile by unlinking one identifier; its events are replayed to rebuild the
    /// parts. Returns the profiles the split produced.
    pub fn unmerge(&self, profile: ProfileId, identifier: Identifier) -> Result<Vec<ProfileId>> {
        self.call(|reply| Job::Unmerge(profile, identifier, reply))
    }

    /// Erases a person: their events are overwritten in the log, their profile and identity
    /// links removed, their identifiers suppressed (messages carrying them are not stored
    /// again), and a new snapshot replaces the old one. Derived stores (the lake, reject files)
    /// are cleaned by the caller from the report.
    pub fn erase(&self, profile: ProfileId) -> Result<ErasureReport> {
        self.call(|reply| Job::Erase(profile, reply))
    }

    /// Applies retention periods at `as_of`: every event of a live profile whose event time is
    /// older than `as_of − days` of the rule that governs it ([`Matcher::period`]) loses its
    /// content. Its log record is overwritten in place by a shortened one (kind, messageId,
    /// source, times, identifiers unchanged; traits only those the profile still shows from it;
    /// no event name, properties or context), so replaying the log links and resolves exactly as
    /// before and deduplication still knows the message; it leaves the profile's events (the
    /// timeline) and counters. An `Expire` record is logged first, so a crash is finished at the
    /// next start. Messages recording a consent decision are kept. Idempotent: expired events
    /// are not looked at again.
    ///
    /// Candidates are found under short read locks and matched outside them; each chunk of
    /// matches is one committer job, so ingestion continues in between. Derived stores (the
    /// lake) are cleaned by the caller from [`ExpiryReport::offsets`].
    pub fn expire(&self, rules: &Matcher, as_of: i64) -> Result<ExpiryReport> {
        let mut report = ExpiryReport {
            as_of,
            rules: rules
                .rules()
                .iter()
                .map(|r| RuleReport {
                    rule: r.clone(),
                    expired: 0,
                })
                .collect(),
            ..ExpiryReport::default()
        };
        let Some(shortest) = rules.shortest_ms() else {
            return Ok(report);
        };
        // Events at or after this instant are within every period.
        let horizon = as_of.saturating_sub(shortest);
        let mut next: ProfileId = 0;
        loop {
            let (candidates, done) = {
                let state = self.state.read();
                let space = state.book.id_space();
                let mut found = Vec::new();
                while next < space && found.len() < EXPIRE_CHUNK {
                    if let Some(p) = state.book.get(next).filter(|p| p.id == next) {
                        found.extend(
                            p.events
                                .iter()
                                .take_while(|(ts, _)| *ts < horizon)
                                .map(|&(ts, at)| (next, ts, at)),
                        );
                    }
                    next += 1;
                }
                (found, next >= space)
            };
            let mut matched = Vec::new();
            let mut rule_of = std::collections::HashMap::new();
            for (profile, ts, at) in candidates {
                let m = match self.read_event(at) {
                    Ok(m) => m,
                    // Rewritten meanwhile (an erasure): the committer checks again anyway.
                    Err(StoreError::Corrupt { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let Some((rule, period)) = rules.period(&m) else {
                    continue;
                };
                if ts >= as_of.saturating_sub(period) {
                    continue;
                }
                if !portrait_core::consent::message_updates(&m).is_empty() {
                    report.consent_kept += 1;
                    continue;
                }
                rule_of.insert(at, rule);
                matched.push((profile, ts, at));
            }
            // One profile may bring more than a chunk: jobs stay bounded (and so does the
            // `Expire` record).
            for part in matched.chunks(EXPIRE_CHUNK) {
                let part = part.to_vec();
                let outcome = self.call(|reply| Job::Expire(part, reply))?;
                for at in &outcome.done {
                    if let Some(r) = rule_of.get(at).and_then(|i| report.rules.get_mut(*i)) {
                        r.expired += 1;
                    }
                }
                report.expired += outcome.done.len() as u64;
                report.unfit += outcome.unfit.len() as u64;
                report.offsets.extend(outcome.done);
            }
            if done {
                break;
            }
        }
        if report.expired > 0 {
            self.expired
                .fetch_add(report.expired, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(events = report.expired, as_of, "retention periods applied");
        }
        Ok(report)
    }

    /// Events expired by retention since the engine opened (derived state built from events,
    /// such as the real-time engine, rebuilds when it moves).
    pub fn expired_since_open(&self) -> u64 {
        self.expired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a new data key for new records and re-encrypts every record in place under it,
    /// then retires the old keys. Reads continue throughout. Returns the records re-encrypted.
    pub fn rotate_data_key(&self) -> Result<u64> {
        self.call(Job::RotateDataKey)
    }

    /// Log records replayed at open on top of the snapshot (all of them without one).
    pub fn replayed_at_open(&self) -> u64 {
        self.replayed
    }

    /// Writes a snapshot now.
    pub fn snapshot(&self) -> Result<()> {
        self.call(Job::Snapshot)
    }

    /// Reads one stored message.
    pub fn read_event(&self, at: u64) -> Result<Message> {
        decode_message(&self.log, &self.codec, at)
    }

    /// A page of a profile's timeline, newest first: events `skip..skip+limit` counted from the
    /// newest. Returns the events and whether more remain.
    pub fn timeline(
        &self,
        profile: ProfileId,
        skip: usize,
        limit: usize,
    ) -> Result<Option<(Located, bool)>> {
        let refs: Vec<u64> = {
            let state = self.state.read();
            let Some(p) = state.book.get(profile) else {
                return Ok(None);
            };
            p.events
                .iter()
                .rev()
                .skip(skip)
                .take(limit + 1)
                .map(|(_, r)| *r)
                .collect()
        };
        let more = refs.len() > limit;
        let events = refs
            .into_iter()
            .take(limit)
            .map(|r| Ok((r, self.read_event(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((events, more)))
    }

    /// Calls `f(offset, message)` for the stored messages from log offset `from` on, in log
    /// order, until `f` returns `Ok(false)` or the readable end of the log. Returns the offset
    /// just past the last record visited: where a later call resumes. `from` must be a record
    /// boundary (0 or an offset this method returned).
    ///
    /// It reads through the engine's shared log reader and never opens the log for writing, so
    /// it is safe while the committer appends (incremental compaction).
    /// Records flushed but not yet acknowledged may be visited; callers that need only applied
    /// messages bound the scan themselves (e.g. by [`Stats::events`]).
    pub fn scan_from(
        &self,
        from: u64,
        mut f: impl FnMut(u64, Message) -> Result<bool>,
    ) -> Result<u64> {
        let mut at = from;
        loop {
            let payload = match self.log.read(at) {
                Ok(p) => p,
                // The end of the log, or a record still being written.
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(at)
                }
                Err(e) => return Err(e),
            };
            let record = self
                .codec
                .decode_record(&payload)
                .map_err(|e| StoreError::Corrupt {
                    path: self.dir.join("log"),
                    reason: format!("record at {at}: {e}"),
                })?;
            let visited = at;
            // Records are contiguous across segments: header (len u32, crc u32) + payload.
            at += 8 + payload.len() as u64;
            if let Some(LogRecord::Message(m)) = record {
                if !f(visited, *m)? {
                    return Ok(at);
                }
            }
        }
    }

    /// Stops the committer after the work queued so far, writing a snapshot.
    pub fn close(&self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(handle) = self.committer.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

fn decode_message(log: &LogReader, codec: &Codec, at: u64) -> Result<Message> {
    match codec.decode_record(&log.read(at)?) {
        Ok(Some(LogRecord::Message(m))) => Ok(*m),
        Err(e @ StoreError::Crypto(_)) => Err(e),
        _ => Err(StoreError::Corrupt {
            path: PathBuf::from("log"),
            reason: format!("no message at {at}"),
        }),
    }
}

/// Stand-ins for an erased person's identifiers: a keyed hash, stable for one data directory
/// (so replayed skeletons resolve as the originals did) and meaningless without its key.
fn pseudonymizer(keyring: Option<&Keyring>) -> impl Fn(&Identifier) -> String {
    let secret = keyring.map_or_else(
        || b"portrait-plain-data-directory".to_vec(),
        |k| k.index_secret().to_vec(),
    );
    move |id: &Identifier| {
        let mut data = id.kind.as_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(id.value.as_bytes());
        let mac = crate::crypto::hmac(&secret, &data);
        // As long as the value (so the skeleton fits where the record was), 8 to 24 hex digits;
        // the length depends only on the identifier, so equal identifiers stay equal.
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        hex[..id.value.len().clamp(8, 24)].to_string()
    }
}

fn apply_message(state: &mut State, m: &Message, offset: u64) {
    state.book.apply(m, offset);
    count_message(&mut state.stats, m);
}

fn count_message(stats: &mut Stats, m: &Message) {
    stats.events += 1;
    *stats.per_source.entry(m.source).or_default() += 1;
}

/// Takes a message out of the counters (its content was erased or expired).
fn uncount_message(stats: &mut Stats, m: &Message) {
    stats.events = stats.events.saturating_sub(1);
    if let Some(n) = stats.per_source.get_mut(&m.source) {
        *n = n.saturating_sub(1);
    }
}

/// The traits of `m` the profile `p` still shows: those whose value, source and event time are
/// the profile's current value of the trait (JSON text; `{}` when none). An expired record keeps
/// only these, so the profile's traits stay what replaying the log gives: a value that lost to
/// another one can be dropped without changing which one wins.
fn kept_traits(p: &portrait_core::Profile, m: &Message) -> String {
    if m.traits.len() <= 2 {
        return "{}".into();
    }
    let kept: serde_json::Map<String, serde_json::Value> = m
        .traits_map()
        .into_iter()
        .filter(|(k, v)| {
            // The profile stores each value as its JSON text (see `fold`).
            let text = v.to_string();
            p.traits.get(k).is_some_and(|t| {
                t.source == m.source && t.updated_at == m.timestamp && t.value == text
            })
        })
        .collect();
    if kept.is_empty() {
        return "{}".into();
    }
    serde_json::to_string(&kept).unwrap_or_else(|_| "{}".into())
}

/// Reads a record for a replay of a profile's events (an unmerge): the message, whole or
/// expired.
fn decode_any_message(log: &LogReader, codec: &Codec, at: u64) -> Result<Message> {
    match codec.decode_record(&log.read(at)?) {
        Ok(Some(LogRecord::Message(m) | LogRecord::Expired(m))) => Ok(*m),
        Err(e @ StoreError::Crypto(_)) => Err(e),
        _ => Err(StoreError::Corrupt {
            path: PathBuf::from("log"),
            reason: format!("no message at {at}"),
        }),
    }
}

fn apply_unmerge(
    state: &mut State,
    log: &LogReader,
    codec: &Codec,
    profile: ProfileId,
    identifier: &Identifier,
    at: i64,
) -> Result<Vec<ProfileId>> {
    // Expired events are replayed as expired, whatever their record holds (a crash may have
    // left one whole until the end of the replay).
    let expired: std::collections::HashSet<u64> =
        state.book.expired_events(profile).iter().copied().collect();
    let refs = state.book.begin_unmerge(profile, identifier)?;
    let mut parts = Vec::new();
    for r in refs {
        let m = decode_any_message(log, codec, r)?;
        let outcome = if expired.contains(&r) {
            state.book.apply_expired(&m, r)
        } else {
            state.book.apply(&m, r)
        };
        parts.push(outcome.profile);
    }
    parts.sort_unstable();
    parts.dedup();
    state.book.finish_unmerge(profile, identifier, &parts, at);
    state.stats.unmerges += 1;
    let mut live: Vec<ProfileId> = parts
        .iter()
        .filter_map(|p| state.book.resolve(*p))
        .collect();
    live.sort_unstable();
    live.dedup();
    Ok(live)
}

struct Committer {
    observer: Arc<RwLock<Option<Observer>>>,
    codec: Codec,
    dir: PathBuf,
    wal: Wal,
    state: Arc<RwLock<State>>,
    dedup: Dedup,
    max_group: usize,
    snapshot_every: u64,
    since_snapshot: u64,
    /// A snapshot being written in the background; it hands back the dedup keys folded.
    writing: Option<std::thread::JoinHandle<(Result<()>, Arc<KeySet>)>>,
    /// Shortened records of an expiry whose overwrite failed (an IO error): retried before
    /// the next expiry and before any snapshot, which must not cover their `Expire` record
    /// until they are written.
    unfinished: Vec<(u64, Vec<u8>)>,
}

impl Committer {
    fn run(mut self, rx: Receiver<Job>) {
        let mut buf = Vec::with_capacity(4096);
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            let mut size = 0;
            while size < self.max_group {
                match rx.try_recv() {
                    Ok(job) => {
                        if let Job::Messages(m, _) = &job {
                            size += m.len();
                        }
                        jobs.push(job);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let mut stop = false;
            let mut batches = Vec::new();
            let mut others = Vec::new();
            for job in jobs {
                match job {
                    Job::Messages(m, reply) => batches.push((m, reply)),
                    Job::Stop => stop = true,
                    other => others.push(other),
                }
            }
            if !batches.is_empty() {
                self.commit_messages(batches, &mut buf);
            }
            for job in others {
                match job {
                    Job::Unmerge(profile, identifier, reply) => {
                        reply(self.commit_unmerge(profile, identifier, &mut buf))
                    }
                    Job::Snapshot(reply) => reply(self.snapshot()),
                    Job::Erase(profile, reply) => reply(self.commit_erase(profile, &mut buf)),
                    Job::RotateDataKey(reply) => reply(self.rotate_data_key()),
                    Job::Expire(events, reply) => reply(self.commit_expire(events, &mut buf)),
                    Job::Messages(..) | Job::Stop => {}
                }
            }
            if stop {
                break;
            }
            if self.writing.as_ref().is_some_and(|h| h.is_finished()) {
                // Back to two dedup sets to look in.
                self.wait_for_snapshot();
            }
            if self.since_snapshot >= self.snapshot_every {
                if let Err(e) = self.snapshot_in_background() {
                    tracing::error!(error = %e, "snapshot failed");
                }
            }
        }
        if self.since_snapshot > 0 {
            if let Err(e) = self.snapshot() {
                tracing::error!(error = %e, "snapshot at shutdown failed");
            }
        }
        self.wait_for_snapshot();
    }

    fn commit_messages(
        &mut self,
        batches: Vec<(Vec<Message>, Reply<IngestReport>)>,
        buf: &mut Vec<u8>,
    ) {
        let mut staged: Vec<Staged> = Vec::new();
        let mut new_keys = Vec::new();
        let mut failed: Option<StoreError> = None;
        let state = self.state.read();
        for (messages, reply) in batches {
            let mut report = IngestReport::default();
            let mut kept = Vec::with_capacity(messages.len());
            for m in messages {
                if failed.is_some() {
                    break;
                }
                if state.book.is_suppressed(&m) {
                    report.suppressed += 1;
                    continue;
                }
                let key = dedup_key(m.source, &m.message_id);
                if !self.dedup.insert(key) {
                    report.duplicates += 1;
                    continue;
                }
                new_keys.push(key);
                if let Err(e) = self.codec.encode(&LogRecordRef::Message(&m), buf) {
                    failed = Some(e);
                    break;
                }
                match self.wal.append(buf) {
                    Ok(at) => kept.push((at, m)),
                    Err(e) => failed = Some(e),
                }
                report.accepted += 1;
            }
            staged.push((kept, report, reply));
        }
        drop(state);
        if failed.is_none() {
            if let Err(e) = self.wal.sync() {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            // Nothing of this group is acknowledged; forget its keys so a retry is accepted.
            tracing::error!(error = %e, "log write failed; group refused");
            for key in new_keys {
                self.dedup.forget_recent(key);
            }
            let reason = e.to_string();
            for (_, _, reply) in staged {
                reply(Err(StoreError::Corrupt {
                    path: self.dir.join("log"),
                    reason: reason.clone(),
                }));
            }
            return;
        }
        {
            // The whole group goes through the book at once: its index probes overlap their
            // cache misses (same result as applying one message after another).
            let batch: Vec<(&Message, u64)> = staged
                .iter()
                .flat_map(|(kept, _, _)| kept.iter().map(|(at, m)| (m, *at)))
                .collect();
            let mut state = self.state.write();
            let outcomes = state.book.apply_batch(&batch);
            for (kept, report, _) in &staged {
                for (_, m) in kept {
                    count_message(&mut state.stats, m);
                }
                state.stats.duplicates += report.duplicates as u64;
            }
            drop(state);
            drop(batch);
            // Duplicates change the counters only, but those are snapshotted too.
            self.since_snapshot += staged
                .iter()
                .map(|(kept, report, _)| (kept.len() + report.duplicates) as u64)
                .sum::<u64>();
            let observer = self.observer.read().clone();
            if let Some(observe) = observer {
                // The messages are not needed here any more: they move to the observer.
                let mut outcomes = outcomes.into_iter();
                let applied: Vec<Applied> = staged
                    .iter_mut()
                    .flat_map(|(kept, _, _)| std::mem::take(kept))
                    .zip(&mut outcomes)
                    .map(|((offset, message), o)| Applied {
                        offset,
                        message,
                        profile: o.profile,
                        merged: o.merged,
                    })
                    .collect();
                observe(applied);
            }
        }
        for (_, report, reply) in staged {
            reply(Ok(report));
        }
    }

    fn commit_unmerge(
        &mut self,
        profile: ProfileId,
        identifier: Identifier,
        buf: &mut Vec<u8>,
    ) -> Result<Vec<ProfileId>> {
        {
            // Validate before logging so a refused unmerge leaves no record.
            let state = self.state.read();
            let p = state
                .book
                .resolve(profile)
                .and_then(|id| state.book.get(id));
            let p = p.ok_or(portrait_core::profile::ProfileError::NoProfile(profile))?;
            if !p.identifiers.contains(&identifier) {
                return Err(portrait_core::profile::ProfileError::NotLinked {
                    profile,
                    identifier: identifier.to_string(),
                }
                .into());
            }
            if p.identifiers.len() == 1 {
                return Err(portrait_core::profile::ProfileError::Single(profile).into());
            }
        }
        let at = portrait_core::time::now();
        let profile = self.state.read().book.resolve(profile).unwrap_or(profile);
        self.codec.encode(
            &LogRecordRef::Unmerge {
                profile,
                identifier: &identifier,
                at,
            },
            buf,
        )?;
        self.wal.append(buf)?;
        self.wal.sync()?;
        self.since_snapshot += 1;
        let reader = self.wal.reader();
        let mut state = self.state.write();
        apply_unmerge(&mut state, &reader, &self.codec, profile, &identifier, at)
    }

    fn commit_erase(&mut self, profile: ProfileId, buf: &mut Vec<u8>) -> Result<ErasureReport> {
        let reader = self.wal.reader();
        let mut state = self.state.write();
        // Expired events are no longer counted; they are destroyed like the others.
        let expired: std::collections::HashSet<u64> =
            state.book.expired_events(profile).iter().copied().collect();
        let erased = state.book.erase(profile)?;
        // Log the erasure first: a crash before every event is destroyed finishes the job at
        // the next start (the replay erases again and destroys what is left).
        let at = portrait_core::time::now();
        self.codec.encode(
            &LogRecordRef::Erase {
                profile: erased.profile,
                suppress: &erased.suppressed,
                at,
            },
            buf,
        )?;
        self.wal.append(buf)?;
        self.wal.sync()?;
        let mut tombstones = Vec::with_capacity(erased.events.len());
        let pseudonym = pseudonymizer(self.codec.keyring().map(|k| k.as_ref()));
        for &event in &erased.events {
            let payload = reader.read(event)?;
            let replacement = match self.codec.decode_record(&payload) {
                Ok(Some(LogRecord::Message(m))) => {
                    if !expired.contains(&event) {
                        uncount_message(&mut state.stats, &m);
                    }
                    self.codec.skeleton(&m, payload.len(), &pseudonym)
                }
                Ok(Some(LogRecord::Expired(m))) => {
                    self.codec.skeleton(&m, payload.len(), &pseudonym)
                }
                _ => tombstone(payload.len()),
            };
            tombstones.push((event, replacement));
        }
        self.wal.overwrite(tombstones)?;
        drop(state);
        // The old snapshot still holds the profile: replace it now.
        self.snapshot()?;
        tracing::info!(
            profile = erased.profile,
            events = erased.events.len(),
            "profile erased"
        );
        Ok(ErasureReport {
            profile: erased.profile,
            events: erased.events,
            identifiers: erased.identifiers.len(),
            values: erased.identifiers,
        })
    }

    /// Expires events `(profile, event time, log position)` chosen by [`Engine::expire`], after
    /// checking each is still one of its profile's events and a whole message.
    fn commit_expire(
        &mut self,
        events: Vec<(ProfileId, i64, u64)>,
        buf: &mut Vec<u8>,
    ) -> Result<Expired> {
        self.finish_overwrites()?;
        let reader = self.wal.reader();
        let mut state = self.state.write();
        let mut out = Expired::default();
        let mut groups: BTreeMap<ProfileId, Vec<(i64, u64)>> = BTreeMap::new();
        let mut shortened = Vec::new();
        let mut messages = Vec::new();
        for (profile, ts, at) in events {
            let Some(p) = state.book.get(profile) else {
                continue;
            };
            if p.events.binary_search(&(ts, at)).is_err() {
                continue;
            }
            let payload = reader.read(at)?;
            let Some(LogRecord::Message(m)) = self.codec.decode_record(&payload)? else {
                continue;
            };
            match self.codec.expired(&m, kept_traits(p, &m), payload.len()) {
                Some(r) => {
                    groups.entry(p.id).or_default().push((ts, at));
                    shortened.push((at, r));
                    messages.push(m);
                }
                None => out.unfit.push(at),
            }
        }
        if shortened.is_empty() {
            return Ok(out);
        }
        // Log the expiry first: a crash before every record is shortened finishes the job at
        // the next start (the replay expires again and shortens what is left).
        let record = LogRecord::Expire {
            events: groups.into_iter().collect(),
            at: portrait_core::time::now(),
        };
        self.codec.encode(&record, buf)?;
        self.wal.append(buf)?;
        self.wal.sync()?;
        self.since_snapshot += 1;
        let LogRecord::Expire { events: groups, .. } = record else {
            unreachable!("built above");
        };
        for (profile, list) in &groups {
            out.done.extend(state.book.expire(*profile, list));
        }
        for m in &messages {
            uncount_message(&mut state.stats, m);
        }
        drop(state);
        self.unfinished = shortened;
        self.finish_overwrites()?;
        out.done.sort_unstable();
        Ok(out)
    }

    /// Writes the shortened records of an expiry whose overwrite failed before.
    fn finish_overwrites(&mut self) -> Result<()> {
        if self.unfinished.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.unfinished);
        if let Err(e) = self.wal.overwrite(items.iter().cloned()) {
            self.unfinished = items;
            return Err(e);
        }
        Ok(())
    }

    fn rotate_data_key(&mut self) -> Result<u64> {
        self.finish_overwrites()?;
        let Some(ring) = self.codec.keyring().cloned() else {
            return Err(StoreError::Crypto(
                "this data directory is not encrypted".into(),
            ));
        };
        ring.add_data_key()?;
        self.wal.sync()?;
        let reader = self.wal.reader();
        // First the positions (8 bytes each), then re-encrypt in chunks: bounded memory.
        let mut stale = Vec::new();
        self.wal.replay(0, |offset, payload| {
            if self.codec.is_stale(payload) {
                stale.push(offset);
            }
            Ok(())
        })?;
        let mut rewritten = 0u64;
        for chunk in stale.chunks(4096) {
            let mut items = Vec::with_capacity(chunk.len());
            for &offset in chunk {
                if let Some(new) = self.codec.reencrypt(&reader.read(offset)?)? {
                    items.push((offset, new));
                }
            }
            rewritten += items.len() as u64;
            self.wal.overwrite(items)?;
        }
        self.snapshot()?;
        ring.retire_old_keys()?;
        tracing::info!(records = rewritten, key = ring.active(), "data key rotated");
        Ok(rewritten)
    }

    /// Writes a snapshot and waits until it is durable.
    fn snapshot(&mut self) -> Result<()> {
        let captured = self.capture()?;
        let written = captured
            .encode(&self.codec)
            .map(|bytes| self.codec.seal(bytes))
            .and_then(|bytes| write_atomic(&self.dir.join("snapshot.bin"), &bytes));
        // With the capture's view gone, the fold moves the frozen set instead of copying it.
        drop(captured);
        self.dedup.fold_here();
        written
    }

    /// Captures a snapshot under the state lock (the part that must see a consistent state:
    /// a copy of the book whose profiles are shared copy on write, and a view of the dedup
    /// keys) and leaves serialising, encrypting, writing and syncing it to a background
    /// thread, so acknowledgements stall only for the capture. A failed write is logged; the
    /// previous snapshot stays valid and the log still holds everything.
    fn snapshot_in_background(&mut self) -> Result<()> {
        let captured = self.capture()?;
        let path = self.dir.join("snapshot.bin");
        let codec = self.codec.clone();
        let handle = std::thread::Builder::new()
            .name("portrait-snapshot".into())
            .spawn(move || {
                crate::run_in_background();
                let started = Instant::now();
                let encoded = captured.encode(&codec);
                // The profiles were released as they were written.
                let Captured { dedup, .. } = captured;
                let written = encoded.and_then(|bytes| {
                    let bytes = codec.seal(bytes);
                    tracing::info!(
                        bytes = bytes.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "snapshot serialised and sealed"
                    );
                    write_atomic(&path, &bytes)
                });
                (written, dedup.fold())
            })
            .map_err(StoreError::io(&self.dir))?;
        self.writing = Some(handle);
        Ok(())
    }

    /// Waits for a snapshot still being written (snapshots land in order) and installs the
    /// dedup keys it folded.
    fn wait_for_snapshot(&mut self) {
        if let Some(handle) = self.writing.take() {
            match handle.join() {
                Ok((written, folded)) => {
                    if let Err(e) = written {
                        tracing::error!(error = %e, "background snapshot failed");
                    }
                    self.dedup.install(folded);
                }
                Err(_) => {
                    tracing::error!("background snapshot thread panicked");
                    self.dedup.fold_here();
                }
            }
        }
    }

    /// What a snapshot holds, taken under the state lock.
    fn capture(&mut self) -> Result<Captured> {
        self.wait_for_snapshot();
        self.finish_overwrites()?;
        let started = Instant::now();
        let state = self.state.read();
        let captured = Captured {
            log_end: self.wal.end(),
            book: state.book.capture(),
            stats: state.stats.clone(),
            dedup: self.dedup.seal(),
        };
        drop(state);
        self.since_snapshot = 0;
        tracing::info!(
            profiles = captured.book.live(),
            ms = started.elapsed().as_millis() as u64,
            "snapshot captured"
        );
        Ok(captured)
    }
}

/// A snapshot's content, captured by the committer and serialised wherever convenient.
struct Captured {
    log_end: u64,
    book: BookCapture,
    stats: Stats,
    dedup: DedupView,
}

impl Captured {
    /// The snapshot's bytes before [`Codec::seal`]: [`SnapshotRef`]'s fields written one after
    /// another (how bincode writes a struct), each profile released once written
    /// ([`BookCapture::serialize_releasing`]), so the committer copies fewer profiles on write
    /// meanwhile. Write it once.
    fn encode(&self, codec: &Codec) -> Result<Vec<u8>> {
        codec.serialize_with(|ser| {
            SNAPSHOT_VERSION.serialize(&mut *ser)?;
            self.log_end.serialize(&mut *ser)?;
            self.book.serialize_releasing(&mut *ser)?;
            self.stats.serialize(&mut *ser)?;
            self.dedup.serialize(&mut *ser)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portrait_core::segment::{parse_message, Envelope};

    #[test]
    fn a_captured_snapshot_encodes_as_the_snapshot_layout_and_releases_its_profiles() {
        let mut book = ProfileBook::new(IdentityConfig::default());
        let messages = [
            serde_json::json!({"type": "identify", "messageId": "m1", "userId": "u1",
                "traits": {"phone": "13800001111", "name": "李雷"}}),
            serde_json::json!({"type": "track", "messageId": "m2", "anonymousId": "a1",
                "event": "Product Viewed"}),
            serde_json::json!({"type": "track", "messageId": "m3", "anonymousId": "a2",
                "event": "Product Viewed"}),
            serde_json::json!({"type": "identify", "messageId": "m4", "userId": "u1",
                "anonymousId": "a1"}),
        ];
        let env = Envelope {
            source: 1,
            ..Envelope::default()
        };
        for (at, m) in messages.iter().enumerate() {
            let parsed = parse_message(m, &env, book.config()).expect("valid message");
            book.apply(&parsed.message, at as u64);
        }
        let mut dedup = Dedup::new((0..10u128).collect());
        assert!(dedup.insert(42));
        let capture = |dedup: &mut Dedup| Captured {
            log_end: 77,
            book: book.capture(),
            stats: Stats {
                events: 4,
                ..Stats::default()
            },
            dedup: dedup.seal(),
        };
        let codec = Codec::default();
        let want = capture(&mut dedup);
        let layout = SnapshotRef {
            version: SNAPSHOT_VERSION,
            log_end: want.log_end,
            book: &want.book,
            stats: &want.stats,
            dedup: &want.dedup,
        };
        let want = codec
            .serialize_with(|ser| layout.serialize(ser))
            .expect("layout");
        let got = capture(&mut dedup);
        assert_eq!(got.book.live(), 2);
        assert_eq!(got.encode(&codec).expect("encode"), want);
        // Written once, the capture holds no profile: the book's own are not shared any more.
        assert_ne!(got.encode(&codec).expect("again"), want);
        let snap: SnapshotOwned = codec.decode(&want).expect("decode").expect("payload");
        assert_eq!(snap.book.live(), 2);
        assert_eq!(snap.dedup.len(), 11);
    }
}
