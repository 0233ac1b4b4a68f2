//! File plumbing: the manifest, atomic writes (temp name → fsync → rename), the lake lock and
//! the clean-up of what a crashed run left behind.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::LakeError;

/// Name of the manifest inside the lake directory.
pub const MANIFEST: &str = "_manifest.json";
/// Version of the layout this crate writes.
pub const LAYOUT_VERSION: u32 = 1;

/// `DIR/lake/_manifest.json`: how far the event log has been compacted.
///
/// It is written last in a run, atomically: everything it counts is on disk when it says so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`LAYOUT_VERSION`]).
    pub version: u32,
    /// Log offset compacted up to: every message record at an offset below it is in
    /// `events/`, none at or above it is. Part files whose name (their first offset) is at
    /// or above it are leftovers of a crashed run and are deleted by the next run; readers
    /// that list `events/` while a run may be under way can filter `offset < compacted_upto`.
    pub compacted_upto: u64,
    /// Message records compacted so far (the engine's `stats.events` at the last run).
    pub events: u64,
    /// Rows of `profiles.parquet` (live profiles at the last run).
    pub profiles: u64,
    /// Rows of `profile_map.parquet` (profile ids ever allocated at the last run).
    pub profile_ids: u64,
    /// The engine's unmerge count at the last run.
    pub unmerges: u64,
    /// The engine's unmerge count when the events were compacted from offset 0 (first run or
    /// [`crate::rebuild`]). When it differs from `unmerges`, events compacted before an unmerge
    /// keep the id of the profile that was split; rebuild if that matters.
    pub unmerges_at_build: u64,
    /// Time zone of the `date=` partitions (IANA name).
    pub time_zone: String,
    /// When the last run finished (RFC 3339, UTC).
    pub updated_at: String,
}

/// Reads the manifest of `lake`, `None` when there is none yet.
pub fn read_manifest(lake: &Path) -> Result<Option<Manifest>, LakeError> {
    let path = lake.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LakeError::io(&path)(e)),
    };
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| LakeError::Manifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if manifest.version > LAYOUT_VERSION {
        return Err(LakeError::Manifest {
            path,
            reason: format!(
                "layout version {} is newer than this build understands ({LAYOUT_VERSION})",
                manifest.version
            ),
        });
    }
    Ok(Some(manifest))
}

pub(crate) fn write_manifest(lake: &Path, manifest: &Manifest) -> Result<(), LakeError> {
    let path = lake.join(MANIFEST);
    let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|e| LakeError::Manifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    let tmp = temp_name(&path);
    let mut file = File::create(&tmp).map_err(LakeError::io(&tmp))?;
    file.write_all(&bytes).map_err(LakeError::io(&tmp))?;
    file.sync_all().map_err(LakeError::io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(LakeError::io(&path))?;
    sync_dir(lake)
}

/// The hidden temporary name a file is written under before its rename: `.NAME.tmp` beside it.
/// Query engines skip it (hidden, and not `*.parquet`).
pub(crate) fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Makes renames and new entries in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LakeError::io(dir))
}

/// Writes a Parquet file atomically: to its temp name, fsynced, then renamed over `path`.
/// `fill` writes the batches. Returns the file's size. The caller syncs the directory.
pub(crate) fn write_parquet(
    path: &Path,
    schema: SchemaRef,
    props: WriterProperties,
    fill: impl FnOnce(&mut ArrowWriter<File>) -> Result<(), LakeError>,
) -> Result<u64, LakeError> {
    let tmp = temp_name(path);
    let file = File::create(&tmp).map_err(LakeError::io(&tmp))?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
    fill(&mut writer)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(LakeError::io(&tmp))?;
    let bytes = file.metadata().map_err(LakeError::io(&tmp))?.len();
    drop(file);
    std::fs::rename(&tmp, path).map_err(LakeError::io(path))?;
    Ok(bytes)
}

/// Writes one record batch as a Parquet file atomically.
pub(crate) fn write_batch(
    path: &Path,
    batch: &RecordBatch,
    props: WriterProperties,
) -> Result<u64, LakeError> {
    write_parquet(path, batch.schema(), props, |w| Ok(w.write(batch)?))
}

/// The part file name for a first offset: `part-<offset:020>.parquet`.
pub(crate) fn part_name(first_offset: u64) -> String {
    format!("part-{first_offset:020}.parquet")
}

fn part_offset(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// Deletes what a crashed run left: temp files anywhere in the lake, and part files at or
/// above `upto` (renamed into place, but not yet counted by the manifest). Returns how many
/// files were removed.
pub(crate) fn clean_orphans(lake: &Path, upto: u64) -> Result<usize, LakeError> {
    let mut removed = 0;
    let is_temp = |name: &str| name.starts_with('.') && name.ends_with(".tmp");
    for entry in read_dir(lake)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp(&name) {
            remove(&entry.path())?;
            removed += 1;
        }
    }
    let events = lake.join("events");
    if !events.is_dir() {
        return Ok(removed);
    }
    for partition in read_dir(&events)? {
        let dir = partition.path();
        if !dir.is_dir() {
            continue;
        }
        let mut kept = 0;
        for entry in read_dir(&dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temp(&name) || part_offset(&name).is_some_and(|o| o >= upto) {
                remove(&entry.path())?;
                removed += 1;
            } else {
                kept += 1;
            }
        }
        if kept == 0 {
            std::fs::remove_dir(&dir).map_err(LakeError::io(&dir))?;
        }
    }
    Ok(removed)
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, LakeError> {
    std::fs::read_dir(dir)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map_err(LakeError::io(dir))
}

fn remove(path: &Path) -> Result<(), LakeError> {
    std::fs::remove_file(path).map_err(LakeError::io(path))
}

/// Takes `lake/_lock`, so two runs never compact one lake at once.
pub(crate) fn lock_lake(lake: &Path) -> Result<File, LakeError> {
    let path = lake.join("_lock");
    let file = File::create(&path).map_err(LakeError::io(&path))?;
    file.try_lock()
        .map_err(|_| LakeError::Busy(lake.to_path_buf()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_round_trip() {
        assert_eq!(part_name(42), "part-00000000000000000042.parquet");
        assert_eq!(part_offset(&part_name(42)), Some(42));
        assert_eq!(part_offset("part-42.parquet"), None);
        assert_eq!(part_offset(".part-00000000000000000042.parquet.tmp"), None);
    }
}
