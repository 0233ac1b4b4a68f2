//! The snapshot store: one directory per tag under `DIR/tags/history/`, one file per date,
//! and an `index.json` per tag with the dates, counts and references.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Duration;
use parking_lot::Mutex;
use portrait_tagstore::{RoaringBitmap, Snapshot, TagData};
use serde::{Deserialize, Serialize};

use crate::date::{format_day, parse_day, Day};
use crate::error::HistoryError;
use crate::format::{
    decode, decode_values, encode, encode_values, RawFile, Slot, KIND_BOOL, KIND_ENUM,
    KIND_NUMERIC, KIND_UNIVERSE,
};

/// Default retention: snapshots older than this many days are pruned.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;

/// The directory of the universe (live profile ids) snapshots.
pub(crate) const UNIVERSE_DIR: &str = "_universe";
const INDEX: &str = "index.json";
const CONFIG: &str = "config.json";

/// What the index keeps per tag and date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayEntry {
    /// `universe`, `bool`, `enum` or `numeric`.
    pub kind: String,
    /// Live profiles at that date.
    pub universe: u64,
    /// Ids per slot: bool `""` (true), enum one entry per value, numeric `ids`.
    pub counts: BTreeMap<String, u64>,
    /// Dates whose files this file references.
    pub refs: Vec<String>,
    /// Size of the file in bytes.
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    pub(crate) name: String,
    pub(crate) days: BTreeMap<String, DayEntry>,
}

impl Index {
    pub(crate) fn dates(&self) -> Vec<Day> {
        self.days.keys().filter_map(|d| parse_day(d)).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Config {
    retention_days: u32,
}

/// A slot's data, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Full {
    Bm(RoaringBitmap),
    Bytes(Vec<u8>),
}

/// A file resolved: `(kind, name, slots)`.
pub(crate) type ResolvedFile = (u8, String, Vec<(String, Full)>);

struct Resolved {
    full: Full,
    /// The date whose file holds the data (a `same` slot may point there).
    holder: Day,
    /// The latest inline bitmap of the chain (a `xor` slot may point there).
    base: Option<(Day, RoaringBitmap)>,
}

/// Reads and caches one tag directory's files.
pub(crate) struct Loader {
    dir: PathBuf,
    cache: HashMap<Day, Arc<RawFile>>,
}

pub(crate) fn file_of(dir: &Path, d: Day) -> PathBuf {
    dir.join(format!("{}.snap", format_day(d)))
}

impl Loader {
    pub(crate) fn new(dir: &Path) -> Loader {
        Loader {
            dir: dir.to_owned(),
            cache: HashMap::new(),
        }
    }

    pub(crate) fn raw(&mut self, d: Day) -> Result<Arc<RawFile>, HistoryError> {
        if let Some(f) = self.cache.get(&d) {
            return Ok(f.clone());
        }
        let path = file_of(&self.dir, d);
        let bytes = fs::read(&path).map_err(HistoryError::io("read", &path))?;
        let f = decode(&path, &bytes)?;
        if f.date != d {
            return Err(HistoryError::corrupt(
                &path,
                format!("holds date {}", format_day(f.date)),
            ));
        }
        let f = Arc::new(f);
        self.cache.insert(d, f.clone());
        Ok(f)
    }

    fn missing(&self, d: Day, key: &str) -> HistoryError {
        HistoryError::corrupt(
            &file_of(&self.dir, d),
            format!("no slot {key:?} (referenced by a later snapshot)"),
        )
    }

    fn inline_bitmap(&mut self, d: Day, key: &str) -> Result<RoaringBitmap, HistoryError> {
        match self.raw(d)?.slot(key) {
            Some(Slot::Bitmap(b)) => Ok(b.clone()),
            _ => Err(self.missing(d, key)),
        }
    }

    /// The data of slot `key` in a holder file (not a `same` slot).
    fn holder(&mut self, d: Day, key: &str) -> Result<Resolved, HistoryError> {
        let raw = self.raw(d)?;
        match raw.slot(key) {
            Some(Slot::Bitmap(b)) => Ok(Resolved {
                full: Full::Bm(b.clone()),
                holder: d,
                base: Some((d, b.clone())),
            }),
            Some(Slot::Bytes(v)) => Ok(Resolved {
                full: Full::Bytes(v.clone()),
                holder: d,
                base: None,
            }),
            Some(Slot::Xor(b0, x)) => {
                let base = self.inline_bitmap(*b0, key)?;
                Ok(Resolved {
                    full: Full::Bm(&base ^ x),
                    holder: d,
                    base: Some((*b0, base)),
                })
            }
            Some(Slot::Same(_)) | None => Err(self.missing(d, key)),
        }
    }

    fn resolve(&mut self, d: Day, key: &str) -> Result<Resolved, HistoryError> {
        let raw = self.raw(d)?;
        match raw.slot(key) {
            Some(Slot::Same(t)) => self.holder(*t, key),
            Some(_) => self.holder(d, key),
            None => Err(self.missing(d, key)),
        }
    }

    /// Every slot of date `d`, resolved: `(kind, name, slots)`.
    pub(crate) fn full(&mut self, d: Day) -> Result<ResolvedFile, HistoryError> {
        let raw = self.raw(d)?;
        let mut out = Vec::with_capacity(raw.slots.len());
        for (k, _) in &raw.slots {
            out.push((k.clone(), self.resolve(d, k)?.full));
        }
        Ok((raw.kind, raw.name.clone(), out))
    }

    /// The bitmap of slot `key` at `d` (`None` when the file has no such slot).
    pub(crate) fn bitmap(
        &mut self,
        d: Day,
        key: &str,
    ) -> Result<Option<RoaringBitmap>, HistoryError> {
        if self.raw(d)?.slot(key).is_none() {
            return Ok(None);
        }
        match self.resolve(d, key)?.full {
            Full::Bm(b) => Ok(Some(b)),
            Full::Bytes(_) => Err(HistoryError::corrupt(
                &file_of(&self.dir, d),
                format!("slot {key:?} is not a bitmap"),
            )),
        }
    }

    fn forget(&mut self, d: Day) {
        self.cache.remove(&d);
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HistoryError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(HistoryError::io("create", &tmp))?;
    f.write_all(bytes)
        .map_err(HistoryError::io("write", &tmp))?;
    f.sync_all().map_err(HistoryError::io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(HistoryError::io("rename", path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(HistoryError::io("fsync", dir))?;
    }
    Ok(())
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_UNIVERSE => "universe",
        KIND_BOOL => "bool",
        KIND_ENUM => "enum",
        _ => "numeric",
    }
}

/// What [`History::record`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordReport {
    /// The date recorded.
    pub date: String,
    /// Tags recorded.
    pub tags: usize,
    /// Files written (tags and the universe).
    pub files_written: usize,
    /// Files left as they were (the same values were already recorded for the date).
    pub files_unchanged: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Dates removed by retention.
    pub pruned: Vec<String>,
}

/// What [`History::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Dates removed (from any tag).
    pub removed_dates: Vec<String>,
    /// Snapshot files removed.
    pub files_removed: usize,
    /// Kept files rewritten because they referenced a removed one.
    pub files_rewritten: usize,
}

/// Storage used by the history.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StorageStats {
    /// Tags with history (the universe not counted).
    pub tags: usize,
    /// Snapshot files (universe included).
    pub files: u64,
    /// Bytes of snapshot files (universe included).
    pub bytes: u64,
    /// (tag, value, date) triples stored: bool and numeric tags count one per date, enum tags
    /// one per value per date.
    pub tag_value_days: u64,
    /// `bytes / tag_value_days`.
    pub bytes_per_tag_value_day: f64,
}

/// The tag history of one data directory (`DIR/tags/history/`).
pub struct History {
    dir: PathBuf,
    retention_days: u32,
    write: Mutex<()>,
}

/// One tag's values at one date.
#[derive(Debug, Clone, PartialEq)]
pub struct TagAt {
    /// The date.
    pub date: Day,
    /// Live profile ids at that date.
    pub universe: RoaringBitmap,
    /// The tag's values.
    pub data: TagData,
}

impl History {
    /// Opens (creating it if needed) the history in `dir`; the retention comes from
    /// `dir/config.json` (default [`DEFAULT_RETENTION_DAYS`]).
    pub fn open(dir: &Path) -> Result<History, HistoryError> {
        fs::create_dir_all(dir).map_err(HistoryError::io("create", dir))?;
        let cfg = dir.join(CONFIG);
        let retention_days = match fs::read(&cfg) {
            Ok(b) => {
                serde_json::from_slice::<Config>(&b)
                    .map_err(|e| HistoryError::corrupt(&cfg, e.to_string()))?
                    .retention_days
            }
            Err(_) => DEFAULT_RETENTION_DAYS,
        };
        Ok(History {
            dir: dir.to_owned(),
            retention_days,
            write: Mutex::new(()),
        })
    }

    /// Opens the history of a data directory: `DATA/tags/history`.
    pub fn for_data_dir(data: &Path) -> Result<History, HistoryError> {
        History::open(&history_dir(data))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Days of snapshots kept.
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// Changes the retention (at least 1 day) and saves it in `config.json`.
    pub fn set_retention_days(&mut self, days: u32) -> Result<(), HistoryError> {
        if days == 0 {
            return Err(HistoryError::Invalid(
                "retention must be at least 1 day".into(),
            ));
        }
        let bytes = serde_json::to_vec_pretty(&Config {
            retention_days: days,
        })
        .map_err(|e| HistoryError::Invalid(e.to_string()))?;
        write_atomic(&self.dir.join(CONFIG), &bytes)?;
        self.retention_days = days;
        Ok(())
    }

    pub(crate) fn tag_dir(&self, name: &str) -> PathBuf {
        let file = portrait_tagstore::persist::tag_file_name(name);
        self.dir.join(file.trim_end_matches(".tag"))
    }

    pub(crate) fn universe_dir(&self) -> PathBuf {
        self.dir.join(UNIVERSE_DIR)
    }

    pub(crate) fn read_index(&self, dir: &Path) -> Result<Option<Index>, HistoryError> {
        let path = dir.join(INDEX);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| HistoryError::corrupt(&path, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HistoryError::Io {
                op: "read",
                path,
                source: e,
            }),
        }
    }

    fn write_index(&self, dir: &Path, index: &Index) -> Result<(), HistoryError> {
        let bytes = serde_json::to_vec(index).map_err(|e| HistoryError::Invalid(e.to_string()))?;
        write_atomic(&dir.join(INDEX), &bytes)
    }

    /// The index of tag `name` (an error when the tag has no history).
    pub(crate) fn index(&self, name: &str) -> Result<Index, HistoryError> {
        self.read_index(&self.tag_dir(name))?
            .filter(|i| !i.days.is_empty())
            .ok_or_else(|| HistoryError::UnknownTag(name.into()))
    }

    /// Tags with history, sorted.
    pub fn tags(&self) -> Result<Vec<String>, HistoryError> {
        let mut out = Vec::new();
        for dir in self.dirs()? {
            if dir.file_name().is_some_and(|f| f == UNIVERSE_DIR) {
                continue;
            }
            if let Some(i) = self.read_index(&dir)? {
                if !i.days.is_empty() {
                    out.push(i.name);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn dirs(&self) -> Result<Vec<PathBuf>, HistoryError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(HistoryError::io("read", &self.dir))? {
            let e = e.map_err(HistoryError::io("read", &self.dir))?;
            if e.path().is_dir() {
                out.push(e.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// The dates with a snapshot of tag `name`, ascending.
    pub fn dates(&self, name: &str) -> Result<Vec<Day>, HistoryError> {
        Ok(self.index(name)?.dates())
    }

    /// The index entries of tag `name` (date → counts), ascending.
    pub fn entries(&self, name: &str) -> Result<BTreeMap<String, DayEntry>, HistoryError> {
        Ok(self.index(name)?.days)
    }

    /// Records every tag of `snap` (and its universe) as the values of `date`, then prunes
    /// what the retention no longer keeps. Recording a date again replaces it.
    pub fn record(&self, snap: &Snapshot, date: Day) -> Result<RecordReport, HistoryError> {
        let tags: Vec<(String, &TagData)> = snap
            .tag_names()
            .filter_map(|n| snap.tag(n).map(|t| (n.to_string(), t)))
            .collect();
        self.record_tags(snap.universe(), &tags, date)
    }

    /// Records `tags` and `universe` as the values of `date` (see [`History::record`]).
    pub fn record_tags(
        &self,
        universe: &RoaringBitmap,
        tags: &[(String, &TagData)],
        date: Day,
    ) -> Result<RecordReport, HistoryError> {
        let _w = self.write.lock();
        let mut report = RecordReport {
            date: format_day(date),
            tags: tags.len(),
            ..RecordReport::default()
        };
        let ulen = universe.len();
        let mut count = |written: Option<u64>| match written {
            Some(b) => {
                report.files_written += 1;
                report.bytes += b;
            }
            None => report.files_unchanged += 1,
        };
        count(self.write_day(
            &self.universe_dir(),
            UNIVERSE_DIR,
            KIND_UNIVERSE,
            date,
            vec![(String::new(), Full::Bm(universe.clone()))],
            ulen,
        )?);
        for (name, data) in tags {
            let (kind, slots) = slots_of(data);
            count(self.write_day(&self.tag_dir(name), name, kind, date, slots, ulen)?);
        }
        let newest = self.newest()?.map_or(date, |n| n.max(date));
        report.pruned = self.prune_locked(newest)?.removed_dates;
        Ok(report)
    }

    fn newest(&self) -> Result<Option<Day>, HistoryError> {
        Ok(self
            .read_index(&self.universe_dir())?
            .and_then(|i| i.dates().last().copied()))
    }

    /// Writes one file; `None` when the date already holds exactly these values.
    fn write_day(
        &self,
        dir: &Path,
        name: &str,
        kind: u8,
        date: Day,
        slots: Vec<(String, Full)>,
        universe: u64,
    ) -> Result<Option<u64>, HistoryError> {
        fs::create_dir_all(dir).map_err(HistoryError::io("create", dir))?;
        let mut index = self.read_index(dir)?.unwrap_or_else(|| Index {
            name: name.to_string(),
            days: BTreeMap::new(),
        });
        let key = format_day(date);
        let mut loader = Loader::new(dir);
        if let Some(e) = index.days.get(&key) {
            let (k, _, old) = loader.full(date)?;
            if k == kind && old == slots && e.universe == universe {
                return Ok(None);
            }
            // Later files that point into this one get their own copy first.
            let mut removed = BTreeSet::new();
            removed.insert(date);
            detach(&mut loader, &mut index, &removed)?;
            loader.forget(date);
        }
        // Encode against the latest earlier snapshot.
        let prev = index.dates().into_iter().rev().find(|d| *d < date);
        let mut encoded = Vec::with_capacity(slots.len());
        let mut counts = BTreeMap::new();
        for (k, full) in slots {
            let before = match prev {
                Some(p) if loader.raw(p)?.slot(&k).is_some() => Some(loader.resolve(p, &k)?),
                _ => None,
            };
            if let Full::Bm(b) = &full {
                counts.insert(k.clone(), b.len());
            }
            let slot = encode_slot(full, before);
            encoded.push((k, slot));
        }
        let raw = RawFile {
            kind,
            name: name.to_string(),
            date,
            slots: encoded,
        };
        let bytes = encode(&raw);
        write_atomic(&file_of(dir, date), &bytes)?;
        index.days.insert(
            key,
            DayEntry {
                kind: kind_name(kind).into(),
                universe,
                counts,
                refs: refs_of(&raw),
                bytes: bytes.len() as u64,
            },
        );
        self.write_index(dir, &index)?;
        Ok(Some(bytes.len() as u64))
    }

    /// Removes the snapshots the retention no longer keeps: every date on or before
    /// `today − retention_days` (so the last `retention_days` dates up to `today` stay). Kept
    /// snapshots that referenced a removed one are rewritten first, so nothing kept is lost.
    pub fn prune(&self, today: Day) -> Result<PruneReport, HistoryError> {
        let _w = self.write.lock();
        self.prune_locked(today)
    }

    fn prune_locked(&self, today: Day) -> Result<PruneReport, HistoryError> {
        let cutoff = today - Duration::days(i64::from(self.retention_days));
        let mut report = PruneReport::default();
        let mut removed_all = BTreeSet::new();
        for dir in self.dirs()? {
            let Some(mut index) = self.read_index(&dir)? else {
                continue;
            };
            let removed: BTreeSet<Day> =
                index.dates().into_iter().filter(|d| *d <= cutoff).collect();
            if removed.is_empty() {
                continue;
            }
            let mut loader = Loader::new(&dir);
            report.files_rewritten += detach(&mut loader, &mut index, &removed)?;
            for d in &removed {
                index.days.remove(&format_day(*d));
            }
            // The index first: a crash leaves unlisted files, never listed missing ones.
            self.write_index(&dir, &index)?;
            for d in &removed {
                let path = file_of(&dir, *d);
                match fs::remove_file(&path) {
                    Ok(()) => report.files_removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(HistoryError::Io {
                            op: "remove",
                            path,
                            source: e,
                        })
                    }
                }
                removed_all.insert(*d);
            }
        }
        report.removed_dates = removed_all.into_iter().map(format_day).collect();
        Ok(report)
    }

    /// The values of tag `name` at `date`, with that date's universe.
    pub fn load(&self, name: &str, date: Day) -> Result<TagAt, HistoryError> {
        let index = self.index(name)?;
        if !index.days.contains_key(&format_day(date)) {
            return Err(HistoryError::NoSnapshot {
                tag: name.into(),
                date: format_day(date),
            });
        }
        let dir = self.tag_dir(name);
        let mut loader = Loader::new(&dir);
        let (kind, _, slots) = loader.full(date)?;
        let path = file_of(&dir, date);
        let data = to_tag_data(&path, kind, slots)?;
        Ok(TagAt {
            date,
            universe: self.universe(date)?,
            data,
        })
    }

    /// The live profile ids at `date`.
    pub fn universe(&self, date: Day) -> Result<RoaringBitmap, HistoryError> {
        let dir = self.universe_dir();
        let known = self
            .read_index(&dir)?
            .is_some_and(|i| i.days.contains_key(&format_day(date)));
        if !known {
            return Err(HistoryError::NoSnapshot {
                tag: UNIVERSE_DIR.into(),
                date: format_day(date),
            });
        }
        Ok(Loader::new(&dir).bitmap(date, "")?.unwrap_or_default())
    }

    /// Erasure: removes `ids` from every snapshot of every tag and from the live ids of every
    /// date (each date re-recorded without them, oldest first, so references and deltas stay
    /// consistent). Returns the dates rewritten.
    pub fn erase(&self, ids: &RoaringBitmap) -> Result<u64, HistoryError> {
        let Some(index) = self.read_index(&self.universe_dir())? else {
            return Ok(0);
        };
        let dates: Vec<Day> = index.dates().to_vec();
        let names = self.tags()?;
        let mut rewritten = 0;
        for date in dates {
            let universe = self.universe(date)?;
            let mut tags: Vec<(String, TagData)> = Vec::new();
            let mut touched = !universe.is_disjoint(ids);
            for name in &names {
                if !self.dates(name)?.contains(&date) {
                    continue;
                }
                let data = self.load(name, date)?.data;
                touched |= !data.present().is_disjoint(ids);
                tags.push((name.clone(), data.without(ids)));
            }
            if !touched {
                continue;
            }
            let refs: Vec<(String, &TagData)> = tags.iter().map(|(n, d)| (n.clone(), d)).collect();
            self.record_tags(&(&universe - ids), &refs, date)?;
            rewritten += 1;
        }
        Ok(rewritten)
    }

    /// Bytes and files used, and bytes per (tag, value, date).
    pub fn storage(&self) -> Result<StorageStats, HistoryError> {
        let mut s = StorageStats::default();
        for dir in self.dirs()? {
            let Some(index) = self.read_index(&dir)? else {
                continue;
            };
            let is_universe = dir.file_name().is_some_and(|f| f == UNIVERSE_DIR);
            if !is_universe && !index.days.is_empty() {
                s.tags += 1;
            }
            for e in index.days.values() {
                s.files += 1;
                s.bytes += e.bytes;
                if !is_universe {
                    s.tag_value_days += if e.kind == "enum" {
                        e.counts.len().max(1) as u64
                    } else {
                        1
                    };
                }
            }
        }
        if s.tag_value_days > 0 {
            s.bytes_per_tag_value_day = s.bytes as f64 / s.tag_value_days as f64;
        }
        Ok(s)
    }
}

/// `DATA/tags/history`.
pub fn history_dir(data: &Path) -> PathBuf {
    data.join("tags").join("history")
}

fn refs_of(raw: &RawFile) -> Vec<String> {
    let set: BTreeSet<Day> = raw
        .slots
        .iter()
        .filter_map(|(_, s)| s.reference())
        .collect();
    set.into_iter().map(format_day).collect()
}

/// The slots of a tag's values.
pub(crate) fn slots_of(data: &TagData) -> (u8, Vec<(String, Full)>) {
    match data {
        TagData::Bool(b) => (KIND_BOOL, vec![(String::new(), Full::Bm(b.clone()))]),
        TagData::Enum(e) => (
            KIND_ENUM,
            e.values()
                .iter()
                .map(|(k, b)| (k.clone(), Full::Bm(b.clone())))
                .collect(),
        ),
        TagData::Numeric(c) => (
            KIND_NUMERIC,
            vec![
                ("ids".to_string(), Full::Bm(c.present().clone())),
                (
                    "values".to_string(),
                    Full::Bytes(encode_values(c.values_in_id_order())),
                ),
            ],
        ),
    }
}

pub(crate) fn to_tag_data(
    path: &Path,
    kind: u8,
    slots: Vec<(String, Full)>,
) -> Result<TagData, HistoryError> {
    let bad = |r: &str| HistoryError::corrupt(path, r.to_string());
    match kind {
        KIND_BOOL | KIND_UNIVERSE => match slots.into_iter().next() {
            Some((_, Full::Bm(b))) => Ok(TagData::Bool(b)),
            None => Ok(TagData::Bool(RoaringBitmap::new())),
            _ => Err(bad("bool slot is not a bitmap")),
        },
        KIND_ENUM => {
            let mut values = Vec::new();
            for (k, f) in slots {
                match f {
                    Full::Bm(b) => values.push((k, b)),
                    Full::Bytes(_) => return Err(bad("enum slot is not a bitmap")),
                }
            }
            TagData::enumeration(values).map_err(|e| bad(&e.to_string()))
        }
        _ => {
            let mut ids = None;
            let mut bytes = None;
            for (k, f) in slots {
                match (k.as_str(), f) {
                    ("ids", Full::Bm(b)) => ids = Some(b),
                    ("values", Full::Bytes(v)) => bytes = Some(v),
                    _ => return Err(bad("unexpected numeric slot")),
                }
            }
            let ids = ids.ok_or_else(|| bad("numeric snapshot without ids"))?;
            let bytes = bytes.ok_or_else(|| bad("numeric snapshot without values"))?;
            let values = decode_values(path, &bytes, ids.len() as usize)?;
            Ok(TagData::numeric(ids.iter().zip(values)))
        }
    }
}

/// A slot for `full` given the same slot of the previous snapshot: a reference when the data
/// is unchanged, a XOR against the chain's base when that is less than half the size, else
/// inline.
fn encode_slot(full: Full, before: Option<Resolved>) -> Slot {
    let Some(before) = before else {
        return inline(full);
    };
    if before.full == full {
        return Slot::Same(before.holder);
    }
    match (full, before.base) {
        (Full::Bm(b), Some((d, base))) => {
            let x = &b ^ &base;
            if x.serialized_size() * 2 <= b.serialized_size() {
                Slot::Xor(d, x)
            } else {
                Slot::Bitmap(b)
            }
        }
        (full, _) => inline(full),
    }
}

fn inline(full: Full) -> Slot {
    match full {
        Full::Bm(b) => Slot::Bitmap(b),
        Full::Bytes(v) => Slot::Bytes(v),
    }
}

/// Rewrites the files that are kept (in `index`, not in `removed`) and reference a date in
/// `removed`, so that none does afterwards; returns how many were rewritten. The removed files
/// still exist while this runs; they are read, never written.
fn detach(
    loader: &mut Loader,
    index: &mut Index,
    removed: &BTreeSet<Day>,
) -> Result<usize, HistoryError> {
    let removed_text: BTreeSet<String> = removed.iter().map(|d| format_day(*d)).collect();
    let affected: Vec<Day> = index
        .days
        .iter()
        .filter(|(d, e)| {
            !removed_text.contains(*d) && e.refs.iter().any(|r| removed_text.contains(r))
        })
        .filter_map(|(d, _)| parse_day(d))
        .collect();
    let mut remap: HashMap<(String, Day), Day> = HashMap::new();
    let mut new_base: HashMap<String, (Day, RoaringBitmap)> = HashMap::new();
    let dir = loader.dir.clone();
    for d in &affected {
        let raw = loader.raw(*d)?;
        let mut slots = Vec::with_capacity(raw.slots.len());
        for (k, slot) in &raw.slots {
            let Some(r) = slot.reference().filter(|r| removed.contains(r)) else {
                slots.push((k.clone(), slot.clone()));
                continue;
            };
            if let Slot::Same(_) = slot {
                if let Some(h) = remap.get(&(k.clone(), r)) {
                    slots.push((k.clone(), Slot::Same(*h)));
                    continue;
                }
            }
            let full = loader.resolve(*d, k)?.full;
            let new = match (&full, new_base.get(k)) {
                (Full::Bm(b), Some((bd, base))) => {
                    let x = b ^ base;
                    if x.serialized_size() * 2 <= b.serialized_size() {
                        Slot::Xor(*bd, x)
                    } else {
                        Slot::Bitmap(b.clone())
                    }
                }
                _ => inline(full.clone()),
            };
            if let (Slot::Bitmap(b), Full::Bm(_)) = (&new, &full) {
                new_base.insert(k.clone(), (*d, b.clone()));
            }
            if let Slot::Same(_) = slot {
                remap.insert((k.clone(), r), *d);
            }
            slots.push((k.clone(), new));
        }
        let new_raw = RawFile {
            kind: raw.kind,
            name: raw.name.clone(),
            date: *d,
            slots,
        };
        let bytes = encode(&new_raw);
        write_atomic(&file_of(&dir, *d), &bytes)?;
        if let Some(e) = index.days.get_mut(&format_day(*d)) {
            e.refs = refs_of(&new_raw);
            e.bytes = bytes.len() as u64;
        }
        loader.cache.insert(*d, Arc::new(new_raw));
    }
    Ok(affected.len())
}
