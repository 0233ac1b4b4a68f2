//! The change stream: every change of a tag value or audience membership, durable, in order,
//! each with a cursor (`seq`, from 1).
//!
//! Stored as JSON lines in segment files `DIR/realtime/changes/<first seq>.jsonl`. Staging a
//! change costs the engine only a cursor: the stream's writer thread formats the lines, appends
//! them to the segment and makes them readable (so a line a reader has seen is in the file, and
//! survives `kill -9`); its syncer thread syncs what was written in groups, so a slow sync
//! never holds up the lines behind it. A torn last line (a crash mid-write) is cut on
//! open. Readers ask for the changes after a cursor (`0` = the oldest retained) and may wait
//! for new ones. Erasure rewrites the segments without the person's lines; retention drops
//! whole old segments.
//!
//! One line:
//! ```json
//! {"seq":42,"at":"2026-11-28T10:00:00.120Z","profile":7,"kind":"tag","name":"high_intent",
//!  "old":false,"new":true,"event_time":"2026-11-28T10:00:00Z",
//!  "cause":{"type":"event","offset":1234,"message_id":"m-1"}}
//! ```

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use portrait_core::time::format_iso;
use portrait_tags::value::{Type, Value};
use serde::{Deserialize, Serialize};

use crate::engine::{Cause, Change, Kind};
use crate::lag::Lag;

/// Errors of the change stream.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ChangeError + '_ {
    move |source| ChangeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One stored change, as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Cursor: strictly increasing.
    pub seq: u64,
    /// When the engine made the change (ISO 8601).
    pub at: String,
    /// Dense profile id.
    pub profile: u32,
    /// `tag` or `audience`.
    pub kind: Kind,
    /// Tag or audience name.
    pub name: String,
    /// Value before.
    pub old: serde_json::Value,
    /// Value after.
    pub new: serde_json::Value,
    /// Time of the causing event, if any.
    pub event_time: Option<String>,
    /// Why.
    pub cause: Cause,
}

/// A [`Record`] as written, borrowing from the change (no intermediate JSON values).
#[derive(Serialize)]
struct RecordRef<'a> {
    seq: u64,
    at: &'a str,
    profile: u32,
    kind: Kind,
    name: &'a str,
    old: ValueJson<'a>,
    new: ValueJson<'a>,
    event_time: Option<&'a str>,
    cause: &'a Cause,
}

/// A value serialised as [`value_json`] gives it.
struct ValueJson<'a>(&'a Value);

impl Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Num(x) if x.fract() == 0.0 && x.abs() < 9e15 => s.serialize_i64(*x as i64),
            Value::Num(x) if x.is_finite() => s.serialize_f64(*x),
            Value::Num(_) => s.serialize_unit(),
            Value::Str(t) => s.serialize_str(t),
            Value::Time(t) => s.serialize_str(&format_iso(*t)),
        }
    }
}

/// A value as JSON (instants as ISO 8601 text), as change lines write it.
pub fn value_json(v: &Value) -> serde_json::Value {
    serde_json::to_value(ValueJson(v)).unwrap_or(serde_json::Value::Null)
}

/// The value of JSON written by [`value_json`] for a value of type `ty`.
pub fn json_value(j: &serde_json::Value, ty: Type) -> Value {
    match (j, ty) {
        (serde_json::Value::String(s), Type::Time) => {
            portrait_core::time::parse_iso(s).map_or(Value::Null, Value::Time)
        }
        _ => Value::from_json(j),
    }
}

struct Line {
    seq: u64,
    profile: u32,
    kind: Kind,
    name: Arc<str>,
    text: Arc<str>,
}

/// Appends one change as a JSON line (without the newline) to `out`; `at` and `event_time`
/// are `c.at` and `c.event_time` formatted.
fn format_line(out: &mut Vec<u8>, seq: u64, c: &Change, at: &str, event_time: Option<&str>) {
    let r = RecordRef {
        seq,
        at,
        profile: c.profile,
        kind: c.kind,
        name: &c.name,
        old: ValueJson(&c.old),
        new: ValueJson(&c.new),
        event_time,
        cause: &c.cause,
    };
    // Writing JSON of plain fields into memory cannot fail.
    let _ = serde_json::to_writer(out, &r);
}

/// The segment files (durability).
struct Inner {
    dir: PathBuf,
    /// `(first seq, path)` of every segment, oldest first; the last one is open.
    segments: Vec<(u64, PathBuf)>,
    file: Option<File>,
    written: u64,
}

/// What readers see: the newest lines, visible before they are synced.
struct Tail {
    /// The newest lines, for readers that keep up.
    recent: VecDeque<Line>,
    /// Every line with a cursor at or above this is in `recent`.
    complete_from: u64,
}

/// Cursors skip this far after a crash, so a cursor a reader saw before it (on a line the crash
/// lost) is never handed out again; far more than one append can hold.
pub const CRASH_GAP: u64 = 1 << 30;
/// Written by [`ChangeLog::close`]: the stream was closed cleanly (no gap needed).
const CLEAN: &str = "CLEAN";

/// Lines kept in memory for readers that keep up.
const RECENT: usize = 200_000;
/// Segment size before a new one starts.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Hand-overs to the writer that may wait; more make [`ChangeLog::stage`] wait.
const WRITER_QUEUE: usize = 1024;

/// The durable change stream.
pub struct ChangeLog {
    files: Arc<Files>,
    /// The next cursor to hand out.
    next_seq: Mutex<u64>,
    /// The writer thread and its queue.
    writer: Mutex<Option<(SyncSender<Chunk>, JoinHandle<()>)>>,
}

/// Changes handed to the writer with their cursors (ascending), and, for the visibility lag,
/// when the events behind them were handed to the engine and how many there were.
struct Chunk {
    changes: Vec<(u64, Change)>,
    handed: Option<(Instant, u64)>,
}

/// What the writer thread shares with the stream.
struct Files {
    /// The stream's directory.
    dir: PathBuf,
    inner: Mutex<Inner>,
    tail: Mutex<Tail>,
    last: tokio::sync::watch::Sender<u64>,
    progress: Mutex<Progress>,
    /// Signalled whenever more is synced (or given up on).
    done: Condvar,
    /// Signalled whenever the writer has written more (or stops), for the syncer.
    wrote: Condvar,
    /// Where the writer records the visibility lag of the events it makes readable.
    lag: Mutex<Option<Arc<Mutex<Lag>>>>,
}

/// How far the writer has got.
struct Progress {
    /// The last cursor handed to the writer.
    staged: u64,
    /// The last cursor written (or given up on after an error).
    written: u64,
    /// The last cursor written and synced (or given up on after an error).
    durable: u64,
    /// The writer has stopped: the syncer syncs what is left and stops too.
    stopped: bool,
    /// The first write error since the last [`ChangeLog::sync`], which reports it.
    error: Option<ChangeError>,
}

impl Files {
    /// The writer thread: formats and appends each queued chunk and makes it readable; after
    /// each run of chunks it hands what it wrote to the syncer (or syncs it here, `sync_here`).
    fn write_loop(&self, rx: Receiver<Chunk>, sync_here: bool) {
        let mut text: Vec<u8> = Vec::new();
        let mut at_cache: (i64, String) = (i64::MIN, String::new());
        // An event's changes are consecutive and share its time.
        let mut event_cache: (Option<i64>, Option<String>) = (None, None);
        while let Ok(first) = rx.recv() {
            let mut pending = Some(first);
            let mut last = 0;
            let mut failed: Option<ChangeError> = None;
            while let Some(chunk) = pending.take() {
                let Some(&(first_seq, _)) = chunk.changes.first() else {
                    pending = rx.try_recv().ok();
                    continue;
                };
                text.clear();
                let mut lines = Vec::with_capacity(chunk.changes.len());
                for (seq, c) in &chunk.changes {
                    // Changes of one round mostly share their instant: format it once.
                    if at_cache.0 != c.at {
                        at_cache = (c.at, format_iso(c.at));
                    }
                    if event_cache.0 != c.event_time {
                        event_cache = (c.event_time, c.event_time.map(format_iso));
                    }
                    let start = text.len();
                    format_line(&mut text, *seq, c, &at_cache.1, event_cache.1.as_deref());
                    // serde_json writes UTF-8.
                    let line = std::str::from_utf8(&text[start..]).unwrap_or_default();
                    lines.push(Line {
                        seq: *seq,
                        profile: c.profile,
                        kind: c.kind,
                        name: c.name.clone(),
                        text: Arc::from(line),
                    });
                    text.push(b'\n');
                    last = *seq;
                }
                if let Err(e) = self.inner.lock().write(first_seq, &text) {
                    failed.get_or_insert(e);
                }
                self.publish(lines, last);
                if let Some((handed, events)) = chunk.handed {
                    if let Some(lag) = self.lag.lock().as_ref() {
                        lag.lock()
                            .record(handed.elapsed().as_micros() as u64, events);
                    }
                }
                pending = rx.try_recv().ok();
            }
            let mut p = self.progress.lock();
            if let Some(e) = failed {
                // The lines stay readable in memory; the next recovery re-derives them.
                tracing::error!(error = %e, "change stream write failed");
                p.error.get_or_insert(e);
            }
            p.written = p.written.max(last);
            let written = p.written;
            drop(p);
            if sync_here {
                self.sync_to(written);
            } else {
                self.wrote.notify_one();
            }
        }
    }

    /// The syncer thread: syncs what the writer wrote, so that a sync (milliseconds on a busy
    /// disk) never holds up the lines behind it; wakes [`Files::wait_durable`]. Stops once the
    /// writer has stopped and everything written is synced.
    fn sync_loop(&self) {
        loop {
            let target = {
                let mut p = self.progress.lock();
                while p.written <= p.durable && !p.stopped {
                    self.wrote.wait(&mut p);
                }
                if p.written <= p.durable {
                    return;
                }
                p.written
            };
            self.sync_to(target);
        }
    }

    /// Syncs the lines written up to cursor `target` and wakes the waiters.
    fn sync_to(&self, target: u64) {
        // Synced through a second handle, so the writer keeps the segment while this waits
        // (a segment it closes meanwhile it syncs itself).
        let handle = self.inner.lock().sync_handle();
        let synced = match handle {
            Ok(Some(f)) => f.sync_data().map_err(io(&self.dir)),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let mut p = self.progress.lock();
        if let Err(e) = synced {
            tracing::error!(error = %e, "change stream sync failed");
            p.error.get_or_insert(e);
        }
        p.durable = p.durable.max(target);
        drop(p);
        self.done.notify_all();
    }

    /// Runs the writer and its syncer until the stream is dropped.
    fn run(&self, rx: Receiver<Chunk>) {
        std::thread::scope(|scope| {
            let syncer = std::thread::Builder::new()
                .name("portrait-changes-sync".into())
                .spawn_scoped(scope, || self.sync_loop());
            if syncer.is_err() {
                tracing::error!("change stream syncer not started; syncing on the writer");
            }
            self.write_loop(rx, syncer.is_err());
            self.progress.lock().stopped = true;
            self.wrote.notify_one();
        });
    }

    /// Makes written lines readable.
    fn publish(&self, lines: Vec<Line>, last: u64) {
        {
            let mut t = self.tail.lock();
            t.recent.extend(lines);
            while t.recent.len() > RECENT {
                t.recent.pop_front();
                t.complete_from = t.recent.front().map_or(last + 1, |l| l.seq);
            }
        }
        self.last.send_replace(last);
    }

    /// Waits until everything handed over so far is written and synced.
    fn wait_durable(&self) -> Result<(), ChangeError> {
        let mut p = self.progress.lock();
        let target = p.staged;
        while p.durable < target {
            self.done.wait(&mut p);
        }
        match p.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Inner {
    /// Appends lines starting at cursor `first`, starting a new segment when the open one is
    /// full (syncing it first: lines written since the last sync would otherwise be let go
    /// unsynced).
    fn write(&mut self, first: u64, text: &[u8]) -> Result<(), ChangeError> {
        if self.segments.is_empty() || self.written >= SEGMENT_BYTES {
            self.sync()?;
            let path = segment_path(&self.dir, first);
            self.segments.push((first, path));
            self.file = None;
            self.written = 0;
        }
        let path = self
            .segments
            .last()
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(text).map_err(io(&path))?;
        }
        self.written += text.len() as u64;
        Ok(())
    }

    fn sync(&self) -> Result<(), ChangeError> {
        if let Some(f) = &self.file {
            f.sync_data().map_err(io(&self.dir))?;
        }
        Ok(())
    }

    /// A second handle to the open segment, to sync without holding the lock.
    fn sync_handle(&self) -> Result<Option<File>, ChangeError> {
        self.file
            .as_ref()
            .map(|f| f.try_clone().map_err(io(&self.dir)))
            .transpose()
    }
}

impl Drop for ChangeLog {
    /// Stops the writer after it has written what it was handed.
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.writer.lock().take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.jsonl"))
}

impl ChangeLog {
    /// Opens (or creates) the stream under `dir`, cutting a torn last line.
    ///
    /// Lines are visible to readers before they are synced ([`ChangeLog::stage`]); after a
    /// crash (no clean close) cursors continue [`CRASH_GAP`] further, so no reader's cursor
    /// is reused.
    pub fn open(dir: &Path) -> Result<Self, ChangeError> {
        Self::open_with(dir, crate::service::Priority::Normal)
    }

    /// [`ChangeLog::open`] with the writer thread scheduled as `writer_priority` (see
    /// [`crate::service::Options::worker_priority`]): lines are readable only once it wrote them,
    /// so its waits are visibility lag as much as the worker's.
    pub fn open_with(
        dir: &Path,
        writer_priority: crate::service::Priority,
    ) -> Result<Self, ChangeError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let marked = match std::fs::remove_file(dir.join(CLEAN)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(dir)(e)),
        };
        let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let stem = p.file_stem()?.to_str()?.to_string();
                (p.extension()? == "jsonl")
                    .then(|| stem.parse::<u64>().ok().map(|s| (s, p.clone())))
                    .flatten()
            })
            .collect();
        segments.sort();
        let mut next_seq = 1;
        let mut recent = VecDeque::new();
        let mut written = 0;
        if let Some((_, last)) = segments.last() {
            let text = std::fs::read(last).map_err(io(last))?;
            let mut good = 0usize;
            let mut pos = 0usize;
            for line in text.split_inclusive(|b| *b == b'\n') {
                pos += line.len();
                if line.last() != Some(&b'\n') {
                    break;
                }
                let Ok(r) = serde_json::from_slice::<Record>(line) else {
                    break;
                };
                good = pos;
                next_seq = r.seq + 1;
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                recent.push_back(Line {
                    seq: r.seq,
                    profile: r.profile,
                    kind: r.kind,
                    name: Arc::from(r.name.as_str()),
                    text: Arc::from(text),
                });
                if recent.len() > RECENT {
                    recent.pop_front();
                }
            }
            if good < text.len() {
                tracing::warn!(
                    path = %last.display(),
                    bytes = text.len() - good,
                    "change stream had a torn tail; cut"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(last)
                    .map_err(io(last))?;
                f.set_len(good as u64).map_err(io(last))?;
                f.sync_all().map_err(io(last))?;
            }
            written = good as u64;
        }
        // No segment yet: nothing was ever durable, so there is no cursor to protect.
        if !marked && !segments.is_empty() {
            tracing::warn!(
                from = next_seq,
                to = next_seq + CRASH_GAP,
                "change stream was not closed cleanly; cursors skip ahead"
            );
            next_seq += CRASH_GAP;
        }
        let (last, _) = tokio::sync::watch::channel(next_seq - 1);
        let files = Arc::new(Files {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                segments,
                file: None,
                written,
            }),
            tail: Mutex::new(Tail {
                complete_from: recent.front().map_or(next_seq, |l| l.seq),
                recent,
            }),
            last,
            progress: Mutex::new(Progress {
                staged: next_seq - 1,
                written: next_seq - 1,
                durable: next_seq - 1,
                stopped: false,
                error: None,
            }),
            done: Condvar::new(),
            wrote: Condvar::new(),
            lag: Mutex::new(None),
        });
        let (tx, rx) = sync_channel::<Chunk>(WRITER_QUEUE);
        let handle = {
            let files = files.clone();
            std::thread::Builder::new()
                .name("portrait-changes".into())
                .spawn(move || {
                    crate::service::prioritise(writer_priority, "change stream writer");
                    files.run(rx)
                })
                .map_err(io(dir))?
        };
        Ok(ChangeLog {
            files,
            next_seq: Mutex::new(next_seq),
            writer: Mutex::new(Some((tx, handle))),
        })
    }

    /// Where to record the visibility lag of events staged with [`ChangeLog::stage_timed`].
    pub fn record_lag_in(&self, lag: Arc<Mutex<Lag>>) {
        *self.files.lag.lock() = Some(lag);
    }

    /// Syncs and marks the stream closed cleanly (the next open continues its cursors without
    /// a gap). Call it last.
    pub fn close(&self) -> Result<(), ChangeError> {
        self.sync()?;
        let path = self.files.dir.join(CLEAN);
        std::fs::write(&path, self.last_seq().to_string()).map_err(io(&path))?;
        Ok(())
    }

    /// The cursor of the newest change (0 when none).
    pub fn last_seq(&self) -> u64 {
        *self.files.last.borrow()
    }

    /// The cursor of the oldest retained change (0 when none).
    pub fn first_seq(&self) -> u64 {
        let first = self.files.inner.lock().segments.first().map(|(f, _)| *f);
        match first {
            Some(first) if self.last_seq() >= first => first,
            _ => 0,
        }
    }

    /// A receiver that sees the newest cursor change (for long polls and streams).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.files.last.subscribe()
    }

    /// Appends changes (assigning their cursors): they are visible to readers at once, then
    /// written and synced before this returns.
    pub fn append(&self, changes: &[Change]) -> Result<u64, ChangeError> {
        let last = self.stage(changes.to_vec())?;
        self.sync()?;
        Ok(last)
    }

    /// Waits until every change staged so far is written and synced; reports a write error
    /// the writer met since the last call.
    pub fn sync(&self) -> Result<(), ChangeError> {
        self.files.wait_durable()
    }

    /// Appends changes: handed to the writer thread, which formats and writes them, makes
    /// them readable, and syncs them shortly after ([`ChangeLog::sync`] waits for that).
    /// Returns the cursor of the last one.
    pub fn stage(&self, changes: Vec<Change>) -> Result<u64, ChangeError> {
        self.hand_over(changes, None)
    }

    /// [`ChangeLog::stage`] for the changes of `events` events handed to the engine at
    /// `handed`: their visibility lag is recorded when the changes become readable.
    pub fn stage_timed(
        &self,
        changes: Vec<Change>,
        handed: Instant,
        events: u64,
    ) -> Result<u64, ChangeError> {
        self.hand_over(changes, Some((handed, events)))
    }

    fn hand_over(
        &self,
        changes: Vec<Change>,
        handed: Option<(Instant, u64)>,
    ) -> Result<u64, ChangeError> {
        let mut next = self.next_seq.lock();
        if changes.is_empty() {
            return Ok(*next - 1);
        }
        let first = *next;
        *next += changes.len() as u64;
        let last = *next - 1;
        let chunk = Chunk {
            changes: (first..).zip(changes).collect(),
            handed,
        };
        // Handed over under the cursor lock, so chunks reach the writer in cursor order.
        self.files.progress.lock().staged = last;
        let sent = match self.writer.lock().as_ref() {
            Some((tx, _)) => tx.send(chunk).is_ok(),
            None => false,
        };
        if !sent {
            let mut p = self.files.progress.lock();
            p.durable = p.durable.max(last);
            return Err(io(&self.files.dir)(std::io::Error::other(
                "the change stream's writer has stopped",
            )));
        }
        Ok(last)
    }

    /// Up to `limit` changes after cursor `since` (0 = from the oldest retained), as JSON
    /// lines, with the cursor to resume from.
    pub fn read(&self, since: u64, limit: usize) -> Result<(Vec<Arc<str>>, u64), ChangeError> {
        self.read_where(since, limit, &|_, _| true)
    }

    /// Like [`ChangeLog::read`], keeping only the changes `want(kind, name)` accepts; the
    /// cursor returned is past every change looked at (at most [`SCAN`] of them per call), so a
    /// reader that wants little still moves on.
    pub fn read_where(
        &self,
        since: u64,
        limit: usize,
        want: &dyn Fn(Kind, &str) -> bool,
    ) -> Result<(Vec<Arc<str>>, u64), ChangeError> {
        let mut out = Vec::new();
        let mut next = since;
        let mut scanned = 0usize;
        let t = self.files.tail.lock();
        let recent = &t.recent;
        if since + 1 >= t.complete_from {
            // Lines are in cursor order: find the first after `since` by bisection.
            let from = recent.partition_point(|l| l.seq <= since);
            for l in recent.range(from..) {
                next = l.seq;
                scanned += 1;
                if want(l.kind, &l.name) {
                    out.push(l.text.clone());
                }
                if out.len() >= limit || scanned >= SCAN {
                    break;
                }
            }
            return Ok((out, next));
        }
        drop(t);
        // Older lines come from the files: let the writer catch up first.
        self.sync()?;
        let segments = self.files.inner.lock().segments.clone();
        for (i, (_, path)) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map_or(u64::MAX, |(f, _)| *f);
            if end != u64::MAX && end <= since + 1 {
                continue;
            }
            let f = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(path)(e)),
            };
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io(path))?;
                let Ok(r) = serde_json::from_str::<Head>(&line) else {
                    break;
                };
                if r.seq <= since {
                    continue;
                }
                next = r.seq;
                scanned += 1;
                if want(r.kind, &r.name) {
                    out.push(Arc::from(line));
                }
                if out.len() >= limit || scanned >= SCAN {
                    return Ok((out, next));
                }
            }
        }
        Ok((out, next))
    }

    /// Removes every change of `profiles` (erasure). Returns the lines removed.
    pub fn erase(&self, profiles: &[u32]) -> Result<u64, ChangeError> {
        self.sync()?;
        let mut g = self.files.inner.lock();
        g.file = None;
        let mut removed = 0u64;
        let segments = g.segments.clone();
        for (_, path) in &segments {
            let f = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(path)(e)),
            };
            let mut kept = String::new();
            let mut hit = false;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io(path))?;
                let drop = serde_json::from_str::<ProfileOnly>(&line)
                    .is_ok_and(|r| profiles.contains(&r.profile));
                if drop {
                    hit = true;
                    removed += 1;
                } else {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
            if hit {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, kept.as_bytes()).map_err(io(&tmp))?;
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io(&tmp))?;
                std::fs::rename(&tmp, path).map_err(io(path))?;
            }
        }
        self.files
            .tail
            .lock()
            .recent
            .retain(|l| !profiles.contains(&l.profile));
        if let Some((_, last)) = g.segments.last() {
            g.written = std::fs::metadata(last).map_or(0, |m| m.len());
        }
        Ok(removed)
    }

    /// Drops whole segments whose every change is older than `keep` segments back (retention
    /// by count of segments). Returns the segments removed.
    pub fn prune(&self, keep: usize) -> Result<usize, ChangeError> {
        let mut g = self.files.inner.lock();
        let mut removed = 0;
        while g.segments.len() > keep.max(1) {
            let (_, path) = g.segments.remove(0);
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Every retained change after cursor `since`, parsed (recovery).
    pub fn records_after(&self, since: u64) -> Result<Vec<Record>, ChangeError> {
        let mut out = Vec::new();
        let mut cursor = since;
        loop {
            let (lines, next) = self.read(cursor, 100_000)?;
            if lines.is_empty() {
                break;
            }
            for l in &lines {
                if let Ok(r) = serde_json::from_str::<Record>(l) {
                    out.push(r);
                }
            }
            cursor = next;
        }
        Ok(out)
    }
}

/// The fields of a stored line a reader filters on.
#[derive(Deserialize)]
struct Head {
    seq: u64,
    kind: Kind,
    name: String,
}

/// Changes looked at per read at most.
pub const SCAN: usize = 100_000;

#[derive(Deserialize)]
struct ProfileOnly {
    profile: u32,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn change(profile: u32, new: bool) -> Change {
        Change {
            profile,
            kind: Kind::Tag,
            name: Arc::from("high_intent"),
            old: Value::Bool(!new),
            new: Value::Bool(new),
            event_time: Some(1_700_000_000_000),
            at: 1_700_000_000_100,
            cause: Cause::Timer,
        }
    }

    #[test]
    fn staged_lines_read_the_same_from_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let log = ChangeLog::open(dir.path()).unwrap();
        let mut batches = Vec::new();
        for b in 0..5i64 {
            let mut batch = Vec::new();
            for i in 0..40 {
                let mut c = change(i as u32, i % 2 == 0);
                c.at += b * 1000 + i / 7;
                c.event_time = (i % 3 != 0).then_some(1_700_000_000_000 + i);
                c.new = if i % 5 == 0 {
                    Value::Str(Arc::from("活跃"))
                } else {
                    c.new
                };
                batch.push(c);
            }
            batches.push(batch);
        }
        for batch in batches {
            log.stage(batch).unwrap();
        }
        log.sync().unwrap();
        // Readable from memory once written: the same lines as in the file.
        let (memory, next) = log.read(0, 1_000).unwrap();
        assert_eq!((memory.len(), next), (200, 200));
        let on_disk: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                text.lines().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        let memory: Vec<String> = memory.iter().map(|l| l.to_string()).collect();
        assert_eq!(on_disk, memory);
        let parsed: Vec<Record> = memory
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed[5].new, serde_json::json!("活跃"));
        assert_eq!(parsed[3].event_time, None);
        drop(log);
        let log = ChangeLog::open(dir.path()).unwrap();
        let (reopened, _) = log.read(0, 1_000).unwrap();
        let reopened: Vec<String> = reopened.iter().map(|l| l.to_string()).collect();
        assert_eq!(reopened, memory);
    }

    #[test]
    fn append_read_reopen_torn_tail_and_erase() {
        let dir = tempfile::tempdir().unwrap();
        let log = ChangeLog::open(dir.path()).unwrap();
        assert_eq!(log.append(&[change(1, true), change(2, true)]).unwrap(), 2);
        assert_eq!(log.append(&[change(1, false)]).unwrap(), 3);
        let (lines, next) = log.read(0, 10).unwrap();
        assert_eq!((lines.len(), next), (3, 3));
        let (lines, next) = log.read(2, 10).unwrap();
        assert_eq!((lines.len(), next), (1, 3));
        assert!(lines[0].contains("\"seq\":3"));
        drop(log);
        // A crash in the middle of a line.
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"seq\":4,\"at\":").unwrap();
        drop(f);
        // Not closed cleanly: cursors skip ahead, so a cursor handed out before the crash (on a
        // line it lost) is never reused; a reader anywhere in the gap gets what follows it.
        let log = ChangeLog::open(dir.path()).unwrap();
        assert_eq!(log.last_seq(), 3 + CRASH_GAP);
        assert_eq!(log.append(&[change(3, true)]).unwrap(), 4 + CRASH_GAP);
        let all = log.records_after(0).unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4 + CRASH_GAP]
        );
        assert_eq!(log.read(4, 10).unwrap().0.len(), 1);
        log.close().unwrap();
        drop(log);
        let log = ChangeLog::open(dir.path()).unwrap();
        assert_eq!(log.last_seq(), 4 + CRASH_GAP, "a clean close leaves no gap");
        assert_eq!(log.erase(&[1]).unwrap(), 2);
        let all = log.records_after(0).unwrap();
        assert_eq!(
            all.iter().map(|r| r.profile).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let text = std::fs::read_to_string(&seg).unwrap();
        assert!(!text.contains("\"profile\":1,"));
        drop(log);
        // Reading from disk (not the in-memory tail) gives the same.
        let log = ChangeLog::open(dir.path()).unwrap();
        assert_eq!(log.read(0, 10).unwrap().0.len(), 2);
    }
}
