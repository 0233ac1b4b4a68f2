//! Portrait's lake: the event log compacted into Parquet for the batch tag engine.
//!
//! The store keeps every accepted message in its append-only log (`DIR/log/`), which is
//! optimised for appends and point reads. [`compact`] copies the records not yet compacted into
//! date-partitioned, zstd-compressed Parquet, and rewrites two small profile tables, so the batch
//! engine (DataFusion) scans columns, prunes by date and re-keys old events by a join.
//!
//! # Layout
//!
//! ```text
//! DIR/lake/
//!   _manifest.json                      how far the log is compacted (written last, atomically)
//!   _lock                               held while a run is under way
//!   profiles.parquet                    live profiles (rewritten each run that saw a change)
//!   profile_map.parquet                 every id ever allocated → its current survivor
//!   events/
//!     date=2024-01-01/                  event time's calendar date in Asia/Shanghai
//!       part-00000000000000000000.parquet   named by the log offset of its first row
//!       part-00000000000000123456.parquet
//!     date=2024-01-02/
//!       …
//! ```
//!
//! ## `events/date=YYYY-MM-DD/part-<first offset:020>.parquet`
//!
//! One row per stored message (every Segment call: identify, track, page, screen, group,
//! alias), in log order within a file (declared as the file's sorting column). A run appends new
//! part files and never rewrites old ones; a date receives a new part file in every run that saw
//! an event of that date (late events land in old dates), and a busy date gets one file per
//! 64 Ki rows. Columns ([`event_schema`]):
//!
//! | column | Arrow type | meaning |
//! |---|---|---|
//! | `offset` | UInt64 | log position of the record: the `EventRef` in `Profile::events`; unique, the event's key |
//! | `profile_id` | UInt32, nullable | the profile the event belonged to **when it was compacted**; join `profile_map` to re-key. Null only if the event was not applied to the profile book (possible only after a failed log sync) |
//! | `source` | UInt32 | source id |
//! | `source_name` | Dictionary(Int32, Utf8) | source name at compaction time |
//! | `type` | Dictionary(Int32, Utf8) | `identify`, `track`, `page`, `screen`, `group`, `alias` |
//! | `event` | Dictionary(Int32, Utf8), nullable | `track` event name, `page`/`screen` name |
//! | `message_id` | Utf8 | Segment `messageId` (unique per source) |
//! | `user_id`, `anonymous_id`, `previous_id`, `group_id` | Utf8, nullable | Segment ids as sent |
//! | `timestamp` | Timestamp(ms, "UTC") | event time (skew-corrected): what windows and `as_of` use |
//! | `received_at` | Timestamp(ms, "UTC") | when Portrait received it |
//! | `properties`, `traits`, `context` | Utf8 | JSON object text (`{}` when absent) |
//!
//! **Why Asia/Shanghai dates.** Portrait's users are brands selling in China: their day, their
//! reports and the calendar windows operators ask for ("近7天" = today and the 6 days before)
//! are Beijing-time days, and the workspace time zone defaults to Asia/Shanghai. Partitioning on
//! that day makes a calendar window exactly a set of partitions; a rolling window
//! (`as_of − 7d < timestamp ≤ as_of`, instants in UTC) prunes to the dates its two ends fall on
//! and filters `timestamp` inside them. Events are partitioned by **event time**, not arrival
//! time (design rule: event time, not arrival time). The zone is recorded in the manifest.
//! Dates before 1992 go through the tz database (China observed daylight saving 1986–1991); an
//! event time with no calendar date goes to `date=__HIVE_DEFAULT_PARTITION__`.
//!
//! ## `profiles.parquet`
//!
//! The live profiles at the end of the run, in id order ([`profiles_schema`]): `id` (UInt32),
//! `first_seen`, `last_seen` (Timestamp ms UTC), `event_count` (UInt64), `identifiers`
//! (`List<Utf8>` of `type:value`, e.g. `phone:+8613800001111`, in link order), `traits` (Utf8: one
//! JSON object of the merged traits), `consent` (Utf8: the consent decisions as one JSON object,
//! `{"sms/marketing": "granted"}`; absent pairs are unknown).
//!
//! ## `profile_map.parquet`
//!
//! `id` (UInt32) → `survivor` (UInt32, nullable) for every id ever allocated
//! ([`profile_map_schema`]): a live id maps to itself, a merged-away id to the live profile it
//! resolves to now. Events compacted before a merge carry the retired id; the batch engine joins
//! `events.profile_id = profile_map.id` and groups by `survivor`.
//!
//! ## `_manifest.json`
//!
//! [`Manifest`]: `compacted_upto` (the log offset compacted up to), `events` (messages
//! compacted), table row counts, unmerge counters, the time zone and the time of the run.
//!
//! # Runs
//!
//! - **Incremental.** A run reads the log from `compacted_upto` through
//!   [`portrait_store::Engine::scan_from`] and stops after exactly the messages the engine has
//!   applied (its `stats.events` minus the manifest's `events`), so every row gets a profile id
//!   and nothing is read that is still being written. A run with no new events and no unmerge
//!   writes nothing at all.
//! - **Bounded memory.** Events are routed to per-date buffers; a buffer is written as a part
//!   file at [`CompactOptions::rows_per_file`] rows, and when all buffers together pass
//!   [`CompactOptions::buffer_bytes`] (256 MiB) the largest is written early; at most two more
//!   part files are in flight. Arrow building and Parquet encoding run on a second thread while
//!   the log is read. A log in event-time order (live traffic) gives whole-date files; a bulk
//!   backfill in another order gives more, smaller files (raise `buffer_bytes` for it).
//! - **Crash safety.** Every file is written to a hidden temp name (`.NAME.tmp`), fsynced and
//!   renamed; the directories are fsynced; the manifest is replaced last. A crash leaves no
//!   half-written file under a visible name. Part files renamed in before the crash but not yet
//!   counted (first offset ≥ `compacted_upto`) are deleted by the next run, which writes them
//!   again; a reader racing a run can filter `offset < compacted_upto`.
//! - **Profile ids.** Each event's profile is found in the book by its log offset: the message's
//!   identifiers name candidate profiles (`book.by_identifier`), and a candidate is accepted only
//!   if its sorted `(timestamp, offset)` event list contains the event (binary search). That is
//!   exact — the book's event lists are the truth — and costs O(identifiers · log n) per event
//!   without building any map. Identifiers alone would be wrong for a message whose identifiers
//!   were dropped by a limit or unlinked by an unmerge; the rare event no candidate holds is
//!   found by one pass over the book for the whole batch. The book is read under short read
//!   locks (one per 8 Ki events), so ingestion continues during a run.
//! - **Unmerge.** A merge only retires ids, which `profile_map` re-keys. An unmerge splits a
//!   profile, which no id map can express: events compacted before it keep the split profile's
//!   id. The manifest's `unmerges` and `unmerges_at_build` tell whether that happened; [`rebuild`]
//!   recompacts everything from offset 0.

mod error;
mod events;
mod files;
mod purge;
mod tables;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use portrait_core::{Message, ProfileBook, SourceId};
use portrait_store::Engine;

pub use error::LakeError;
pub use events::{event_schema, local_day, partition_of, NO_DATE, TIME_ZONE};
pub use files::{read_manifest, Manifest, LAYOUT_VERSION, MANIFEST};
pub use purge::{purge, PurgeReport};
pub use tables::{profile_map_schema, profiles_schema};

use events::{event_batch, event_props, Row};
use files::{clean_orphans, lock_lake, part_name, sync_dir, write_batch, write_manifest};

/// What a compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Events compacted by this run.
    pub events: u64,
    /// Files this run wrote: new event part files (in write order), then `profiles.parquet` and
    /// `profile_map.parquet` when they were rewritten. Empty when there was nothing to do.
    pub files: Vec<PathBuf>,
    /// Live profiles in `profiles.parquet`.
    pub profiles: u64,
    /// Bytes of the files this run wrote.
    pub bytes: u64,
}

/// Tuning of a run.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Rows at which a date's buffer is written as a part file (65 536).
    pub rows_per_file: usize,
    /// Approximate bytes buffered over all dates before the largest buffer is written early
    /// (256 MiB).
    pub buffer_bytes: usize,
    /// zstd level of every file (3).
    pub zstd_level: i32,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            rows_per_file: 65_536,
            buffer_bytes: 256 << 20,
            zstd_level: 3,
        }
    }
}

/// Events whose profiles are looked up under one read lock.
const RESOLVE_BATCH: usize = 8_192;

/// The lake directory of a data directory: `DIR/lake`.
pub fn lake_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("lake")
}

/// Compacts every log record not yet compacted into
/// `DIR/lake/events/date=YYYY-MM-DD/part-<first offset:020>.parquet` (zstd; event date in
/// Asia/Shanghai), and rewrites `DIR/lake/profiles.parquet` and `DIR/lake/profile_map.parquet`.
///
/// Incremental: `DIR/lake/_manifest.json` records the log offset compacted up to; a re-run only
/// adds new files, and writes nothing when there is nothing new. A crash mid-run leaves no
/// half-visible file. `progress` is called with the number of events compacted so far by this
/// run. See the [crate documentation](crate) for the layout.
pub fn compact(engine: &Engine, progress: &mut dyn FnMut(u64)) -> Result<CompactReport, LakeError> {
    compact_with(engine, &CompactOptions::default(), progress)
}

/// [`compact`] with explicit [`CompactOptions`].
pub fn compact_with(
    engine: &Engine,
    options: &CompactOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<CompactReport, LakeError> {
    run(engine, options, progress, false)
}

/// Deletes the compacted events and the manifest, then compacts the whole log again: after an
/// unmerge, so that every event carries the profile it belongs to now. Readers see a partial
/// lake while it runs.
pub fn rebuild(engine: &Engine, progress: &mut dyn FnMut(u64)) -> Result<CompactReport, LakeError> {
    run(engine, &CompactOptions::default(), progress, true)
}

fn run(
    engine: &Engine,
    options: &CompactOptions,
    progress: &mut dyn FnMut(u64),
    fresh: bool,
) -> Result<CompactReport, LakeError> {
    let lake = lake_dir(engine.dir());
    std::fs::create_dir_all(&lake).map_err(LakeError::io(&lake))?;
    let _lock = lock_lake(&lake)?;
    if fresh {
        let manifest = lake.join(MANIFEST);
        match std::fs::remove_file(&manifest) {
            Ok(()) => sync_dir(&lake)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LakeError::io(&manifest)(e)),
        }
    }
    let previous = read_manifest(&lake)?;
    let first_run = previous.is_none();
    let previous = previous.unwrap_or_default();
    // Leftovers of a crashed run (after a fresh start: every part file).
    clean_orphans(&lake, previous.compacted_upto)?;

    let (applied, unmerges) = {
        let state = engine.state();
        (state.stats.events, state.stats.unmerges)
    };
    let todo = applied.checked_sub(previous.events).ok_or_else(|| {
        LakeError::Mismatch(format!(
            "the manifest counts {} compacted events but the store holds {applied}",
            previous.events
        ))
    })?;
    let profiles_path = lake.join("profiles.parquet");
    let map_path = lake.join("profile_map.parquet");
    let tables_present = profiles_path.is_file() && map_path.is_file();
    if !first_run && todo == 0 && unmerges == previous.unmerges && tables_present {
        progress(0);
        return Ok(CompactReport {
            profiles: previous.profiles,
            ..CompactReport::default()
        });
    }

    let mut report = CompactReport::default();
    let upto = if todo > 0 {
        compact_events(
            engine,
            &lake,
            options,
            previous.compacted_upto,
            todo,
            progress,
            &mut report,
        )?
    } else {
        previous.compacted_upto
    };
    report.events = todo;

    let (profiles, bytes) = tables::write_profiles(engine, &profiles_path, options.zstd_level)?;
    report.files.push(profiles_path);
    report.bytes += bytes;
    report.profiles = profiles;
    let (profile_ids, bytes) = tables::write_profile_map(engine, &map_path, options.zstd_level)?;
    report.files.push(map_path);
    report.bytes += bytes;
    sync_dir(&lake)?;

    write_manifest(
        &lake,
        &Manifest {
            version: LAYOUT_VERSION,
            compacted_upto: upto,
            events: applied,
            profiles,
            profile_ids,
            unmerges,
            unmerges_at_build: if previous.events == 0 {
                unmerges
            } else {
                previous.unmerges_at_build
            },
            time_zone: TIME_ZONE.name().to_string(),
            updated_at: portrait_core::time::format_iso(portrait_core::time::now()),
        },
    )?;
    Ok(report)
}

/// A part file for the writer thread, which builds the Arrow batch, encodes and writes it.
struct Part {
    path: PathBuf,
    rows: Vec<Row>,
    source_names: Arc<HashMap<SourceId, String>>,
}

/// Compacts `todo` messages from log offset `from`; returns the offset after the last one.
fn compact_events(
    engine: &Engine,
    lake: &Path,
    options: &CompactOptions,
    from: u64,
    todo: u64,
    progress: &mut dyn FnMut(u64),
    report: &mut CompactReport,
) -> Result<u64, LakeError> {
    let events_dir = lake.join("events");
    std::fs::create_dir_all(&events_dir).map_err(LakeError::io(&events_dir))?;
    let props = event_props(options.zstd_level, options.rows_per_file)?;
    let (tx, rx) = sync_channel::<Part>(1);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<Vec<(PathBuf, u64)>, LakeError> {
            let mut written = Vec::new();
            for part in rx {
                if let Some(dir) = part.path.parent() {
                    std::fs::create_dir_all(dir).map_err(LakeError::io(dir))?;
                }
                let batch = event_batch(&part.rows, &part.source_names)?;
                drop(part.rows);
                let bytes = write_batch(&part.path, &batch, props.clone())?;
                written.push((part.path, bytes));
            }
            Ok(written)
        });
        let mut router = Router::new(engine, options, &events_dir, tx);
        let read = read_log(engine, &mut router, from, todo, progress);
        let dirs = std::mem::take(&mut router.dirs);
        drop(router); // closes the channel: the writer drains and stops
        let written = match writer.join() {
            Ok(w) => w,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // The writer's error comes first: a failed send only means the writer had stopped.
        let written = written?;
        let upto = read?;
        for dir in dirs.iter().chain([&events_dir]) {
            sync_dir(dir)?;
        }
        for (path, bytes) in written {
            report.bytes += bytes;
            report.files.push(path);
        }
        Ok(upto)
    })
}

fn read_log(
    engine: &Engine,
    router: &mut Router<'_>,
    from: u64,
    todo: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, LakeError> {
    let mut seen = 0u64;
    let mut failed = None;
    let upto = engine.scan_from(from, |offset, message| {
        seen += 1;
        let more = seen < todo;
        if let Err(e) = router.push(offset, message, !more) {
            failed = Some(e);
            return Ok(false);
        }
        if !more || seen.is_multiple_of(RESOLVE_BATCH as u64) {
            progress(seen);
        }
        Ok(more)
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if seen < todo {
        return Err(LakeError::Mismatch(format!(
            "the log holds {seen} messages after offset {from} but the store has applied {todo} more"
        )));
    }
    router.finish()?;
    Ok(upto)
}

/// One date's buffered events.
#[derive(Default)]
struct Buffer {
    rows: Vec<Row>,
    bytes: usize,
}

/// Routes events to per-date buffers and hands full buffers to the writer thread.
struct Router<'a> {
    engine: &'a Engine,
    options: &'a CompactOptions,
    events_dir: &'a Path,
    tx: SyncSender<Part>,
    source_names: Arc<HashMap<SourceId, String>>,
    pending: Vec<(u64, Message)>,
    buffers: HashMap<Option<i64>, Buffer>,
    buffered: usize,
    dirs: BTreeSet<PathBuf>,
}

impl<'a> Router<'a> {
    fn new(
        engine: &'a Engine,
        options: &'a CompactOptions,
        events_dir: &'a Path,
        tx: SyncSender<Part>,
    ) -> Self {
        Self {
            engine,
            options,
            events_dir,
            tx,
            source_names: Arc::default(),
            pending: Vec::with_capacity(RESOLVE_BATCH),
            buffers: HashMap::new(),
            buffered: 0,
            dirs: BTreeSet::new(),
        }
    }

    fn push(&mut self, offset: u64, message: Message, last: bool) -> Result<(), LakeError> {
        self.pending.push((offset, message));
        if self.pending.len() >= RESOLVE_BATCH || last {
            self.route_pending()?;
        }
        Ok(())
    }

    /// Looks up the pending events' profiles under one read lock, then routes them.
    fn route_pending(&mut self) -> Result<(), LakeError> {
        let pending = std::mem::take(&mut self.pending);
        let profiles = {
            let state = self.engine.state();
            resolve_profiles(&state.book, &pending)
        };
        for ((offset, message), profile) in pending.into_iter().zip(profiles) {
            if !self.source_names.contains_key(&message.source) {
                let name = self.engine.sources().name(message.source).to_string();
                Arc::make_mut(&mut self.source_names).insert(message.source, name);
            }
            let day = local_day(message.timestamp);
            let row = Row {
                offset,
                profile,
                message,
            };
            let size = row.size();
            let buffer = self.buffers.entry(day).or_default();
            buffer.rows.push(row);
            buffer.bytes += size;
            self.buffered += size;
            if buffer.rows.len() >= self.options.rows_per_file {
                self.flush(day)?;
            }
            while self.buffered > self.options.buffer_bytes {
                let largest = self
                    .buffers
                    .iter()
                    .max_by_key(|(_, b)| b.bytes)
                    .map(|(d, _)| *d);
                match largest {
                    Some(day) => self.flush(day)?,
                    None => break,
                }
            }
        }
        self.pending = Vec::with_capacity(RESOLVE_BATCH);
        Ok(())
    }

    /// Writes the remaining buffers, in order of their first offset.
    fn finish(&mut self) -> Result<(), LakeError> {
        let mut days: Vec<(u64, Option<i64>)> = self
            .buffers
            .iter()
            .filter_map(|(d, b)| Some((b.rows.first()?.offset, *d)))
            .collect();
        days.sort_unstable();
        for (_, day) in days {
            self.flush(day)?;
        }
        Ok(())
    }

    fn flush(&mut self, day: Option<i64>) -> Result<(), LakeError> {
        let Some(buffer) = self.buffers.remove(&day) else {
            return Ok(());
        };
        self.buffered -= buffer.bytes;
        let Some(first) = buffer.rows.first() else {
            return Ok(());
        };
        let dir = self.events_dir.join(events::partition_name(day));
        let path = dir.join(part_name(first.offset));
        self.dirs.insert(dir);
        let part = Part {
            path,
            rows: buffer.rows,
            source_names: self.source_names.clone(),
        };
        // A closed channel means the writer stopped on an error, which it reports.
        self.tx.send(part).map_err(|_| LakeError::Io {
            path: self.events_dir.to_path_buf(),
            source: std::io::Error::other("the Parquet writer thread stopped"),
        })
    }
}

/// The profile of each event, by its log offset (see the crate docs, "Profile ids").
fn resolve_profiles(book: &ProfileBook, events: &[(u64, Message)]) -> Vec<Option<u32>> {
    let holds = |id: u32, offset: u64, m: &Message| {
        book.get(id)
            .filter(|p| p.events.binary_search(&(m.timestamp, offset)).is_ok())
    };
    let mut out: Vec<Option<u32>> = events
        .iter()
        .map(|(offset, m)| {
            m.identifiers
                .iter()
                .filter_map(|id| book.by_identifier(id))
                .find_map(|candidate| holds(candidate, *offset, m))
                .map(|p| p.id)
        })
        .collect();
    let misses: HashMap<u64, usize> = out
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| (events[i].0, i))
        .collect();
    if !misses.is_empty() {
        for p in book.profiles() {
            for (_, offset) in &p.events {
                if let Some(&i) = misses.get(offset) {
                    out[i] = Some(p.id);
                }
            }
        }
    }
    out
}
