//! The real-time engine inside the server: fed by the store, persisted, recovered.
//!
//! One worker thread owns the [`Realtime`] engine (readers take its lock briefly). The
//! store's committer hands it every applied group ([`portrait_store::Observer`]); the worker
//! applies the events, fires due timers, hands the changes to the [`ChangeLog`] (whose writer
//! thread writes them, makes them readable and syncs them)
//! and, every [`Options::snapshot_every_ms`], writes `DIR/realtime/state.bin`: the engine's
//! state, the last log offset it covers and the last change cursor it published.
//!
//! Recovery after a crash: load the snapshot (unless the definitions or the identity graph's
//! unmerges changed since, then start empty), move states of profiles merged or erased
//! meanwhile, replay the event log after the snapshot's offset into the states without
//! publishing, reset each profile's published values to the snapshot's and fold every change
//! published after it, then re-evaluate everybody once and publish only what differs (cause
//! `recovery`). So a change is neither lost nor published twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use portrait_core::Message;
use portrait_store::{Applied, Engine};
use portrait_tags::ir::Plan;
use portrait_tags::value::Value;
use serde::{Deserialize, Serialize};

use crate::changes::{json_value, ChangeError, ChangeLog};
use crate::engine::{Audience, Cause, Config, Event, JsonMap, Kind, Realtime, Saved};
use crate::lag::{Lag, LagSummary};

/// Errors of the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The change stream failed.
    #[error(transparent)]
    Changes(#[from] ChangeError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] portrait_store::StoreError),
    /// A state file could not be read or written.
    #[error("{path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The worker has stopped.
    #[error("the real-time worker has stopped")]
    Stopped,
}

/// Service settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Engine settings.
    pub config: Config,
    /// Time between state snapshots.
    pub snapshot_every_ms: u64,
    /// Time between rebuilds of profiles that received events beyond the lateness bound.
    pub refresh_every_ms: u64,
    /// How the worker thread and the change stream's writer ask to be scheduled (default
    /// [`Priority::RoundRobin`], falling back to nice −10).
    pub worker_priority: Priority,
}

/// How a latency-critical thread (the worker, the change stream's writer) asks to be
/// scheduled. Their CPU need is bounded by the ingest rate, and every millisecond they wait
/// for a core behind request parsing, batch work or a co-located client is visibility lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// As every other thread.
    Normal,
    /// A nice level (a negative one needs `CAP_SYS_NICE` or a matching `RLIMIT_NICE`).
    Nice(i32),
    /// Linux `SCHED_RR` at the lowest real-time priority (1): runs as soon as it is runnable,
    /// ahead of every normal thread (the kernel still keeps 5 % of each second for them).
    /// Needs `CAP_SYS_NICE` or `RLIMIT_RTPRIO`; where refused, the nice level `or_nice`.
    RoundRobin {
        /// The nice level asked for when real-time scheduling is refused.
        or_nice: i32,
    },
}

impl Priority {
    /// Reads `rr`, `nice` or `normal` (the values of `PORTRAIT_REALTIME_PRIORITY`).
    pub fn parse(text: &str) -> Result<Priority, String> {
        match text.trim() {
            "rr" => Ok(Priority::RoundRobin { or_nice: -10 }),
            "nice" => Ok(Priority::Nice(-10)),
            "normal" => Ok(Priority::Normal),
            other => Err(format!(
                "real-time priority `{other}`: expected rr, nice or normal"
            )),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: Config::default(),
            snapshot_every_ms: 300_000,
            refresh_every_ms: 60_000,
            worker_priority: Priority::RoundRobin { or_nice: -10 },
        }
    }
}

enum Msg {
    /// A committed group and when the store handed it over (just before its acknowledgements).
    Applied(Vec<Applied>, std::time::Instant),
    Rebuild(Vec<u32>, SyncSender<()>),
    Forget(Vec<u32>, SyncSender<Result<u64, ChangeError>>),
    Reload(Box<(Plan, Vec<Audience>)>, SyncSender<()>),
    Snapshot(SyncSender<Result<(), ServiceError>>),
    Flush(SyncSender<()>),
    Stop,
}

const SNAPSHOT_VERSION: u32 = 1;

/// A group's events are applied and made readable this many at a time.
const SLICE: usize = 128;

/// A worker round slower than this is logged with where its time went.
const SLOW_MS: u128 = 50;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    fingerprint: u64,
    tag_names: Vec<String>,
    audience_names: Vec<String>,
    /// Offset of the last event applied (`None`: none yet).
    last_offset: Option<u64>,
    /// The last change cursor published when the snapshot was taken.
    change_seq: u64,
    /// Unmerges of the store when the snapshot was taken.
    unmerges: u64,
    saved: Saved,
}

/// A fingerprint of what the engine maintains (a changed definition invalidates states).
fn fingerprint(plan: &Plan, audiences: &[Audience]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{plan:?}|{audiences:?}").as_bytes())
}

/// Asks for the calling thread's scheduling (Linux: per thread). Refused → logged once, the
/// thread keeps the default priority.
pub(crate) fn prioritise(priority: Priority, thread: &str) {
    let nice = match priority {
        Priority::Normal => return,
        Priority::Nice(nice) => nice,
        Priority::RoundRobin { or_nice } => {
            use thread_priority::{
                set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
                ThreadPriority, ThreadSchedulePolicy,
            };
            let rr = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::RoundRobin);
            match set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, rr) {
                Ok(()) => {
                    tracing::info!(thread, "real-time thread scheduled round-robin (SCHED_RR)");
                    return;
                }
                Err(e) => {
                    tracing::info!(thread, error = ?e, "SCHED_RR refused; asking for a nice level");
                    or_nice
                }
            }
        }
    };
    let me = rustix::thread::gettid();
    match rustix::process::setpriority_process(Some(me), nice) {
        Ok(()) => tracing::info!(nice, thread, "real-time thread priority raised"),
        Err(e) => tracing::info!(
            nice,
            thread,
            error = %e,
            "real-time thread keeps the default priority (raising it needs CAP_SYS_NICE)"
        ),
    }
}

/// Counters and sizes for `GET /api/v1/realtime`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Realtime tags maintained.
    pub tags: Vec<String>,
    /// Audiences maintained.
    pub audiences: Vec<String>,
    /// Profiles with state.
    pub profiles: usize,
    /// Engine counters.
    pub counters: crate::engine::Counters,
    /// Newest change cursor.
    pub last_change: u64,
    /// Oldest retained change cursor.
    pub first_change: u64,
    /// Groups waiting for the worker.
    pub queued: u64,
    /// The lateness bound, ms.
    pub lateness_ms: i64,
    /// Visibility lag since the start or the last [`Service::reset_visibility`]: from a
    /// group's hand-over by the store (just before its acknowledgements) to its changes being
    /// readable, per event.
    pub visibility: LagSummary,
    /// The same from the hand-over to the events' values being visible in the profile API
    /// (the engine has applied them), per event: `visibility` less the change stream's part.
    pub applied: LagSummary,
}

/// The running service.
pub struct Service {
    store: Arc<Engine>,
    rt: Arc<RwLock<Realtime>>,
    changes: Arc<ChangeLog>,
    tx: Sender<Msg>,
    queued: Arc<AtomicU64>,
    lag: Arc<Mutex<Lag>>,
    applied: Arc<Mutex<Lag>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// Reads a profile's traits for `rt`: only the ones its tags and audiences read.
fn traits_reader<'s>(
    store: &'s Engine,
    rt: &Realtime,
) -> impl Fn(u32) -> Option<JsonMap> + use<'s> {
    let keys = rt.trait_keys();
    move |id| store.state().book.get(id).map(|p| p.tag_traits_of(&keys))
}

fn source_name(store: &Engine, m: &Message) -> String {
    store.sources().name(m.source).to_string()
}

/// Each message's source name: a group's messages come from a few sources, named once each.
fn source_names(store: &Engine, group: &[Applied]) -> Vec<Arc<str>> {
    let registry = store.sources();
    let mut named: Vec<(portrait_core::SourceId, Arc<str>)> = Vec::new();
    group
        .iter()
        .map(|a| {
            let id = a.message.source;
            match named.iter().find(|(s, _)| *s == id) {
                Some((_, name)) => name.clone(),
                None => {
                    let name: Arc<str> = Arc::from(registry.name(id));
                    named.push((id, name.clone()));
                    name
                }
            }
        })
        .collect()
}

/// The profile a stored message belongs to now.
fn owner(store: &Engine, m: &Message) -> Option<u32> {
    let state = store.state();
    m.identifiers
        .iter()
        .find_map(|id| state.book.by_identifier(id))
        .and_then(|p| state.book.resolve(p))
}

fn read_snapshot(path: &Path) -> Option<Snapshot> {
    let bytes = std::fs::read(path).ok()?;
    match bincode::deserialize::<Snapshot>(&bytes) {
        Ok(s) if s.version == SNAPSHOT_VERSION => Some(s),
        _ => {
            tracing::warn!(path = %path.display(), "real-time snapshot unusable; rebuilding");
            None
        }
    }
}

fn write_snapshot(path: &Path, snap: &Snapshot) -> Result<(), ServiceError> {
    let err = |e: &dyn std::fmt::Display| ServiceError::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let started = std::time::Instant::now();
    let bytes = bincode::serialize(snap).map_err(|e| err(&e))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| err(&e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(&e))?;
    tracing::info!(
        profiles = snap.saved.profiles.len(),
        mb = bytes.len() as f64 / 1e6,
        ms = started.elapsed().as_millis() as u64,
        "real-time snapshot written"
    );
    Ok(())
}

/// A profile's events from the store, in log order.
fn events_of(store: &Engine, profile: u32) -> Vec<(u64, Message, String)> {
    let refs: Vec<u64> = {
        let state = store.state();
        match state.book.get(profile) {
            Some(p) => p.events.iter().map(|(_, r)| *r).collect(),
            None => return Vec::new(),
        }
    };
    refs.into_iter()
        .filter_map(|r| {
            let m = store.read_event(r).ok()?;
            let s = source_name(store, &m);
            Some((r, m, s))
        })
        .collect()
}

struct Worker {
    store: Arc<Engine>,
    rt: Arc<RwLock<Realtime>>,
    changes: Arc<ChangeLog>,
    queued: Arc<AtomicU64>,
    options: Options,
    path: PathBuf,
    last_offset: Option<u64>,
    dirty: bool,
    /// The store's expiry count last acted on.
    expired_seen: u64,
    /// A snapshot being written in the background.
    writing: Option<JoinHandle<Result<(), ServiceError>>>,
    /// Visibility lag of the groups applied.
    lag: Arc<Mutex<Lag>>,
    /// Lag until the groups' values are visible in the profile API.
    applied: Arc<Mutex<Lag>>,
}

impl Service {
    /// Starts the service for `plan` (every tag of it realtime) and `audiences` on the store,
    /// under `dir` (`DATA/realtime`), recovering what a previous run left.
    pub fn start(
        store: Arc<Engine>,
        dir: &Path,
        plan: Plan,
        audiences: Vec<Audience>,
        options: Options,
    ) -> Result<Arc<Service>, ServiceError> {
        std::fs::create_dir_all(dir).map_err(|e| ServiceError::State {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let changes = Arc::new(ChangeLog::open_with(
            &dir.join("changes"),
            options.worker_priority,
        )?);
        let path = dir.join("state.bin");
        let started = std::time::Instant::now();
        // Listen before recovering, so nothing committed meanwhile is missed; the worker skips
        // what the recovery already replayed.
        let (tx, rx) = channel();
        let queued = Arc::new(AtomicU64::new(0));
        {
            let (tx, queued) = (tx.clone(), queued.clone());
            store.set_observer(Some(Arc::new(move |applied: Vec<Applied>| {
                queued.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(Msg::Applied(applied, std::time::Instant::now()));
            })));
        }
        let (rt, last_offset) = recover(&store, &changes, &path, plan, audiences, options)?;
        tracing::info!(
            profiles = rt.profiles(),
            ms = started.elapsed().as_millis() as u64,
            "real-time state recovered"
        );
        let rt = Arc::new(RwLock::new(rt));
        let lag = Arc::new(Mutex::new(Lag::default()));
        let applied = Arc::new(Mutex::new(Lag::default()));
        changes.record_lag_in(lag.clone());
        let mut worker = Worker {
            store: store.clone(),
            rt: rt.clone(),
            changes: changes.clone(),
            queued: queued.clone(),
            options,
            path,
            last_offset,
            dirty: true,
            expired_seen: store.expired_since_open(),
            writing: None,
            lag: lag.clone(),
            applied: applied.clone(),
        };
        worker.publish();
        let handle = std::thread::Builder::new()
            .name("portrait-realtime".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| ServiceError::State {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
        let service = Arc::new(Service {
            store: store.clone(),
            rt,
            changes,
            tx,
            queued,
            lag,
            applied,
            worker: Mutex::new(Some(handle)),
        });
        Ok(service)
    }

    /// The engine, for reads (values, memberships).
    pub fn engine(&self) -> RwLockReadGuard<'_, Realtime> {
        self.rt.read()
    }

    /// The change stream.
    pub fn changes(&self) -> &Arc<ChangeLog> {
        &self.changes
    }

    /// A profile's realtime tag values as JSON, by name.
    pub fn values_json(&self, profile: u32) -> Vec<(String, serde_json::Value)> {
        self.rt
            .read()
            .values(profile)
            .into_iter()
            .map(|(n, v)| (n.to_string(), crate::changes::value_json(&v)))
            .collect()
    }

    /// Counters and sizes.
    pub fn status(&self) -> Status {
        let rt = self.rt.read();
        Status {
            tags: rt.plan().tags.iter().map(|t| t.name.clone()).collect(),
            audiences: rt.audiences().iter().map(|a| a.name.clone()).collect(),
            profiles: rt.profiles(),
            counters: rt.counters(),
            last_change: self.changes.last_seq(),
            first_change: self.changes.first_seq(),
            queued: self.queued.load(Ordering::Relaxed),
            lateness_ms: rt_lateness(&rt),
            visibility: self.lag.lock().summary(),
            applied: self.applied.lock().summary(),
        }
    }

    /// Starts a new visibility-lag window; returns the summaries of the one it ends (change
    /// stream, profile API).
    pub fn reset_visibility(&self) -> (LagSummary, LagSummary) {
        let applied = std::mem::take(&mut *self.applied.lock()).summary();
        (std::mem::take(&mut *self.lag.lock()).summary(), applied)
    }

    fn call<T>(&self, make: impl FnOnce(SyncSender<T>) -> Msg) -> Result<T, ServiceError> {
        let (tx, rx) = sync_channel(1);
        self.tx.send(make(tx)).map_err(|_| ServiceError::Stopped)?;
        rx.recv().map_err(|_| ServiceError::Stopped)
    }

    /// Rebuilds profiles from their events (after an unmerge); ids no longer live leave.
    pub fn rebuild(&self, profiles: Vec<u32>) -> Result<(), ServiceError> {
        self.call(|tx| Msg::Rebuild(profiles, tx))
    }

    /// Forgets erased profiles: their state, and every change of theirs in the stream.
    /// Returns the change lines removed.
    pub fn forget(&self, profiles: Vec<u32>) -> Result<u64, ServiceError> {
        Ok(self.call(|tx| Msg::Forget(profiles, tx))??)
    }

    /// Replaces the definitions: every profile is rebuilt from its events and what differs
    /// from the published values is published (cause `rebuild`).
    pub fn reload(&self, plan: Plan, audiences: Vec<Audience>) -> Result<(), ServiceError> {
        self.call(|tx| Msg::Reload(Box::new((plan, audiences)), tx))
    }

    /// Waits until everything queued so far is applied and published.
    pub fn flush(&self) -> Result<(), ServiceError> {
        self.call(Msg::Flush)
    }

    /// Writes a snapshot now.
    pub fn snapshot(&self) -> Result<(), ServiceError> {
        self.call(Msg::Snapshot)?
    }

    /// Stops the worker after the work queued so far, writing a snapshot.
    pub fn stop(&self) {
        self.store.set_observer(None);
        let _ = self.tx.send(Msg::Stop);
        if let Some(h) = self.worker.lock().take() {
            let _ = h.join();
        }
    }
}

fn rt_lateness(rt: &Realtime) -> i64 {
    rt.config().lateness_ms
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds the engine from the snapshot and the logs (see the module docs).
fn recover(
    store: &Arc<Engine>,
    changes: &ChangeLog,
    path: &Path,
    plan: Plan,
    audiences: Vec<Audience>,
    options: Options,
) -> Result<(Realtime, Option<u64>), ServiceError> {
    let fp = fingerprint(&plan, &audiences);
    let now = portrait_core::time::now();
    let mut rt = Realtime::new(plan, audiences, options.config, now);
    let unmerges = store.state().stats.unmerges;
    let snap = read_snapshot(path);
    let change_seq = snap.as_ref().map_or(0, |s| s.change_seq);
    // The values published as of the snapshot, by (profile, kind, name).
    let mut published: HashMap<u32, Vec<(Kind, String, Value)>> = HashMap::new();
    let mut from = None;
    let mut resume = false;
    if let Some(s) = snap {
        for (id, st) in &s.saved.profiles {
            let list = published.entry(*id).or_default();
            for (n, v) in s.tag_names.iter().zip(st.values()) {
                list.push((Kind::Tag, n.clone(), v.clone()));
            }
            for (n, m) in s.audience_names.iter().zip(st.members()) {
                list.push((Kind::Audience, n.clone(), Value::Bool(*m)));
            }
        }
        if s.fingerprint == fp && s.unmerges == unmerges {
            from = s.last_offset;
            resume = true;
            rt.import(s.saved);
        }
    }
    let traits = traits_reader(store, &rt);
    // States of profiles merged or erased since the snapshot.
    if resume {
        let ids = rt.profile_ids();
        for id in ids {
            let live = store.state().book.resolve(id);
            match live {
                Some(s) if s == id => {}
                Some(s) => rt.merge(s, id, &traits),
                None => rt.forget(id),
            }
        }
    }
    // The events after the snapshot (all of them without one).
    let mut last_offset = from;
    let start = if resume { from.unwrap_or(0) } else { 0 };
    store.scan_from(start, |offset, m| {
        if resume && from == Some(offset) {
            return Ok(true);
        }
        if let Some(p) = owner(store, &m) {
            let source = source_name(store, &m);
            rt.replay(p, &Event::from_message(offset, &m, &source));
        }
        last_offset = Some(offset);
        Ok(true)
    })?;
    rt.take_changes();
    // What was published: the snapshot's values, then every later change.
    rt.reset_published(|id| published.remove(&id));
    for r in changes.records_after(change_seq)? {
        if store.state().book.resolve(r.profile) != Some(r.profile) {
            continue;
        }
        let ty = match r.kind {
            Kind::Tag => rt
                .plan()
                .tags
                .iter()
                .find(|t| t.name == r.name)
                .map(|t| t.value_type),
            Kind::Audience => Some(portrait_tags::value::Type::Bool),
        };
        if let Some(ty) = ty {
            rt.set_value(r.profile, r.kind, &r.name, json_value(&r.new, ty));
        }
    }
    rt.settle_all(Cause::Recovery, &traits);
    Ok((rt, last_offset))
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        prioritise(self.options.worker_priority, "real-time worker");
        let mut last_snapshot = std::time::Instant::now();
        let mut last_refresh = std::time::Instant::now();
        loop {
            let wait = {
                let rt = self.rt.read();
                let now = portrait_core::time::now();
                let timer = rt
                    .next_due()
                    .map_or(1_000, |t| (t - now).clamp(0, 1_000) as u64);
                timer.max(1)
            };
            let msg = match rx.recv_timeout(Duration::from_millis(wait)) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut stop = false;
            let started = std::time::Instant::now();
            let mut groups = 0usize;
            if let Some(first) = msg {
                // Take everything waiting (each slice is readable as soon as it is applied).
                let mut batch = vec![first];
                while let Ok(m) = rx.try_recv() {
                    batch.push(m);
                    if batch.len() >= 256 {
                        break;
                    }
                }
                groups = batch.len();
                for m in batch {
                    stop |= self.handle(m);
                }
            }
            let applied = started.elapsed();
            self.advance();
            let advanced = started.elapsed();
            // Timers' changes: the stream's writer writes them, makes them readable, syncs.
            self.stage();
            let took = started.elapsed();
            if took.as_millis() >= SLOW_MS {
                tracing::warn!(
                    groups,
                    apply_ms = applied.as_millis() as u64,
                    timers_ms = (advanced - applied).as_millis() as u64,
                    publish_ms = (took - advanced).as_millis() as u64,
                    "slow real-time round"
                );
            }
            if last_refresh.elapsed().as_millis() as u64 >= self.options.refresh_every_ms {
                last_refresh = std::time::Instant::now();
                // Retention removed events: what was folded from them must go too.
                let expired = self.store.expired_since_open();
                if expired != self.expired_seen {
                    self.expired_seen = expired;
                    let (plan, audiences) = {
                        let rt = self.rt.read();
                        (rt.plan().clone(), rt.audiences().to_vec())
                    };
                    tracing::info!(expired, "rebuilding real-time state after retention");
                    self.reload(plan, audiences);
                    self.publish();
                }
                let stale = self.rt.write().take_stale();
                if !stale.is_empty() {
                    tracing::info!(
                        profiles = stale.len(),
                        "rebuilding profiles with late events"
                    );
                    self.rebuild(&stale);
                    self.publish();
                }
            }
            if stop {
                break;
            }
            let busy = self.writing.as_ref().is_some_and(|h| !h.is_finished());
            if self.dirty
                && !busy
                && last_snapshot.elapsed().as_millis() as u64 >= self.options.snapshot_every_ms
            {
                last_snapshot = std::time::Instant::now();
                if let Err(e) = self.snapshot_in_background() {
                    tracing::error!(error = %e, "real-time snapshot failed");
                }
            }
        }
        // `snapshot` publishes first.
        if let Err(e) = self.snapshot() {
            tracing::error!(error = %e, "real-time snapshot at shutdown failed");
        }
        if let Err(e) = self.changes.close() {
            tracing::error!(error = %e, "closing the change stream failed");
        }
    }

    /// Handles one message; true to stop.
    fn handle(&mut self, m: Msg) -> bool {
        match m {
            Msg::Applied(group, handed) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.apply(group, handed);
            }
            Msg::Rebuild(ids, reply) => {
                self.rebuild(&ids);
                self.publish();
                let _ = reply.send(());
            }
            Msg::Forget(ids, reply) => {
                self.publish();
                {
                    let mut rt = self.rt.write();
                    for id in &ids {
                        rt.forget(*id);
                    }
                }
                self.dirty = true;
                let r = self.changes.erase(&ids);
                // The snapshot holds the person's state: replace it now.
                if let Err(e) = self.snapshot() {
                    tracing::error!(error = %e, "real-time snapshot after erasure failed");
                }
                let _ = reply.send(r);
            }
            Msg::Reload(b, reply) => {
                let (plan, audiences) = *b;
                self.reload(plan, audiences);
                self.publish();
                let _ = reply.send(());
            }
            Msg::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Msg::Flush(reply) => {
                self.advance();
                self.publish();
                let _ = reply.send(());
            }
            Msg::Stop => return true,
        }
        false
    }

    /// Applies a committed group slice by slice, handing each slice's changes to the change
    /// stream's writer (which makes them readable and records their visibility lag).
    fn apply(&mut self, group: Vec<Applied>, handed: std::time::Instant) {
        let store = self.store.clone();
        let traits = traits_reader(&store, &self.rt.read());
        let now = portrait_core::time::now();
        let sources = source_names(&store, &group);
        for (slice, names) in group.chunks(SLICE).zip(sources.chunks(SLICE)) {
            let mut applied = 0u64;
            {
                let mut rt = self.rt.write();
                rt.warm(slice.iter().map(|a| a.profile));
                for (a, source) in slice.iter().zip(names) {
                    if self.last_offset.is_some_and(|last| a.offset <= last) {
                        continue; // replayed by the recovery already
                    }
                    let ev = Event::from_message(a.offset, &a.message, source);
                    rt.apply(a.profile, &a.merged, &ev, now, &traits);
                    self.last_offset = Some(a.offset);
                    applied += 1;
                }
            }
            self.dirty = true;
            self.stage_for(Some((handed, applied)));
        }
    }

    fn advance(&mut self) {
        let now = portrait_core::time::now();
        let due = self.rt.read().next_due().is_some_and(|t| t <= now);
        if due {
            let store = self.store.clone();
            let traits = traits_reader(&store, &self.rt.read());
            self.rt.write().advance(now, &traits);
            self.dirty = true;
        }
    }

    fn rebuild(&mut self, ids: &[u32]) {
        let store = self.store.clone();
        let traits = traits_reader(&store, &self.rt.read());
        let now = portrait_core::time::now();
        for &id in ids {
            let live = store.state().book.resolve(id) == Some(id);
            if !live {
                self.rt.write().retire(id);
                continue;
            }
            let events = events_of(&store, id);
            self.rt.write().rebuild(
                id,
                events
                    .iter()
                    .map(|(off, m, s)| Event::from_message(*off, m, s)),
                now,
                &traits,
            );
        }
        self.dirty = true;
    }

    fn reload(&mut self, plan: Plan, audiences: Vec<Audience>) {
        let store = self.store.clone();
        let now = portrait_core::time::now();
        let config = self.rt.read().config();
        let mut fresh = Realtime::new(plan, audiences, config, now);
        let traits = traits_reader(&store, &fresh);
        let old = self.rt.read().published_by_name();
        let mut last = None;
        let scanned = store.scan_from(0, |offset, m| {
            if let Some(p) = owner(&store, &m) {
                let source = source_name(&store, &m);
                fresh.replay(p, &Event::from_message(offset, &m, &source));
            }
            last = Some(offset);
            Ok(true)
        });
        if let Err(e) = scanned {
            tracing::error!(error = %e, "reading the event log for new real-time definitions failed");
            return;
        }
        let mut old = old;
        fresh.reset_published(|id| old.remove(&id));
        fresh.settle_all(Cause::Rebuild, &traits);
        *self.rt.write() = fresh;
        self.last_offset = last.or(self.last_offset);
        self.dirty = true;
    }

    /// Appends the engine's pending changes to the stream and waits until they are synced.
    fn publish(&mut self) {
        self.stage();
        if let Err(e) = self.changes.sync() {
            tracing::error!(error = %e, "change stream sync failed");
        }
    }

    /// Hands the engine's pending changes to the stream's writer, which writes them, makes
    /// them readable and syncs them shortly after.
    fn stage(&mut self) {
        self.stage_for(None);
    }

    /// [`Worker::stage`] for the changes of `events` events handed over at `handed`, if
    /// given: the stream's writer records their visibility lag when the changes are readable;
    /// events that changed nothing are visible (to the profile API) now.
    fn stage_for(&mut self, events: Option<(std::time::Instant, u64)>) {
        // Applied: the profile API reads these values from now on.
        let applied = events.map(|(handed, n)| (handed.elapsed().as_micros() as u64, n));
        if let Some((us, n)) = applied {
            self.applied.lock().record(us, n);
        }
        let changes = self.rt.write().take_changes();
        if changes.is_empty() {
            // Nothing to make readable: visible in the stream's sense as well.
            if let Some((us, n)) = applied {
                self.lag.lock().record(us, n);
            }
            return;
        }
        let n = changes.len();
        let staged = match events {
            Some((handed, count)) => self.changes.stage_timed(changes, handed, count),
            None => self.changes.stage(changes),
        };
        if let Err(e) = staged {
            // The values stay in the engine; the next recovery re-derives what was lost.
            tracing::error!(error = %e, lost = n, "change stream write failed");
        }
    }

    /// Writes a snapshot now (after any being written in the background).
    fn snapshot(&mut self) -> Result<(), ServiceError> {
        // The snapshot's change cursor must be durable: changes up to it are not re-derived.
        self.publish();
        let snap = self.capture();
        self.finish_snapshot()?;
        write_snapshot(&self.path, &snap)?;
        self.dirty = false;
        Ok(())
    }

    /// The engine's state as of now (states shared, not copied).
    fn capture(&self) -> Snapshot {
        {
            let rt = self.rt.read();
            Snapshot {
                version: SNAPSHOT_VERSION,
                fingerprint: fingerprint(rt.plan(), rt.audiences()),
                tag_names: rt.plan().tags.iter().map(|t| t.name.clone()).collect(),
                audience_names: rt.audiences().iter().map(|a| a.name.clone()).collect(),
                last_offset: self.last_offset,
                change_seq: self.changes.last_seq(),
                unmerges: self.store.state().stats.unmerges,
                saved: rt.export(),
            }
        }
    }

    /// Takes a snapshot and writes it on another thread: the states are shared copy-on-write,
    /// so the worker goes on applying events (a state it changes meanwhile is copied once).
    fn snapshot_in_background(&mut self) -> Result<(), ServiceError> {
        self.finish_snapshot()?;
        self.publish();
        let snap = self.capture();
        let path = self.path.clone();
        self.dirty = false;
        let handle = std::thread::Builder::new()
            .name("portrait-realtime-snapshot".into())
            .spawn(move || {
                portrait_store::run_in_background();
                write_snapshot(&path, &snap)
            })
            .map_err(|e| ServiceError::State {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        self.writing = Some(handle);
        Ok(())
    }

    /// Waits for a snapshot being written in the background.
    fn finish_snapshot(&mut self) -> Result<(), ServiceError> {
        match self.writing.take() {
            Some(h) => h.join().map_err(|_| ServiceError::State {
                path: self.path.clone(),
                reason: "the snapshot writer panicked".into(),
            })?,
            None => Ok(()),
        }
    }
}

/// Erasure while no server runs: removes the profiles' changes from the stream under `dir`
/// (`DATA/realtime`) and drops the state snapshot, which held their state (the next start
/// rebuilds it from the log, where the erased events are gone). Returns the lines removed.
pub fn erase_offline(dir: &Path, profiles: &[u32]) -> Result<u64, ServiceError> {
    if !dir.exists() {
        return Ok(0);
    }
    let log = ChangeLog::open(&dir.join("changes"))?;
    let removed = log.erase(profiles)?;
    log.close()?;
    let state = dir.join("state.bin");
    match std::fs::remove_file(&state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ServiceError::State {
                path: state,
                reason: e.to_string(),
            })
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_read_from_text_and_a_nice_level_is_applied_to_the_calling_thread() {
        assert_eq!(
            Priority::parse(" rr\n"),
            Ok(Priority::RoundRobin { or_nice: -10 })
        );
        assert_eq!(Priority::parse("nice"), Ok(Priority::Nice(-10)));
        assert_eq!(Priority::parse("normal"), Ok(Priority::Normal));
        let err = Priority::parse("fifo").expect_err("unknown");
        assert!(
            err.contains("`fifo`") && err.contains("rr, nice or normal"),
            "{err}"
        );
        // Lowering one's own priority needs no privilege.
        let nice = std::thread::spawn(|| {
            prioritise(Priority::Nice(7), "test");
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice")
        })
        .join()
        .expect("thread");
        assert!(nice >= 7, "nice {nice}");
    }
}
