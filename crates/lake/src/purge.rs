//! Erasure in the lake: rewriting the part files that hold an erased person's events.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use arrow::array::{Array, BooleanArray, UInt64Array};
use arrow::compute::filter_record_batch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use portrait_store::Engine;

use crate::error::LakeError;
use crate::events::event_props;
use crate::files::{lock_lake, read_manifest, sync_dir, write_manifest, write_parquet};
use crate::{lake_dir, tables, CompactOptions};

/// What [`purge`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Rows removed from the event part files.
    pub rows: u64,
    /// Part files rewritten (or deleted when emptied).
    pub files: Vec<PathBuf>,
}

fn part_files(events: &Path) -> Result<Vec<PathBuf>, LakeError> {
    let mut out = Vec::new();
    let Ok(dates) = std::fs::read_dir(events) else {
        return Ok(out);
    };
    for date in dates {
        let date = date.map_err(LakeError::io(events))?.path();
        if !date.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&date).map_err(LakeError::io(&date))? {
            let f = f.map_err(LakeError::io(&date))?.path();
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if name.starts_with("part-") && name.ends_with(".parquet") {
                out.push(f);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes the events at `offsets` (log positions of an erased person's events) from every
/// part file, rewrites the profile tables (which no longer list the erased profile) and adjusts
/// the manifest. Files are replaced atomically; the manifest is written last.
pub fn purge(engine: &Engine, offsets: &[u64]) -> Result<PurgeReport, LakeError> {
    let lake = lake_dir(engine.dir());
    let mut report = PurgeReport::default();
    let Some(mut manifest) = read_manifest(&lake)? else {
        return Ok(report);
    };
    let _lock = lock_lake(&lake)?;
    let wanted: HashSet<u64> = offsets
        .iter()
        .copied()
        .filter(|o| *o < manifest.compacted_upto)
        .collect();
    let options = CompactOptions::default();
    if !wanted.is_empty() {
        for path in part_files(&lake.join("events"))? {
            let file = std::fs::File::open(&path).map_err(LakeError::io(&path))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
            let mut kept = Vec::new();
            let mut removed = 0u64;
            let mut schema = None;
            for batch in reader {
                let batch = batch?;
                schema.get_or_insert_with(|| batch.schema());
                let offsets = batch
                    .column_by_name("offset")
                    .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
                    .ok_or_else(|| {
                        LakeError::Mismatch(format!("{}: no offset column", path.display()))
                    })?;
                let keep: BooleanArray = offsets
                    .iter()
                    .map(|o| Some(!o.is_some_and(|o| wanted.contains(&o))))
                    .collect();
                removed += (keep.len() - keep.true_count()) as u64;
                kept.push(filter_record_batch(&batch, &keep)?);
            }
            if removed == 0 {
                continue;
            }
            let rows: usize = kept.iter().map(|b| b.num_rows()).sum();
            if rows == 0 {
                std::fs::remove_file(&path).map_err(LakeError::io(&path))?;
            } else if let Some(schema) = schema {
                let props = event_props(options.zstd_level, options.rows_per_file)?;
                write_parquet(&path, schema, props, |w| {
                    for b in &kept {
                        w.write(b)?;
                    }
                    Ok(())
                })?;
            }
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            report.rows += removed;
            report.files.push(path);
        }
    }
    let profiles_path = lake.join("profiles.parquet");
    let (profiles, _) = tables::write_profiles(engine, &profiles_path, options.zstd_level)?;
    let (profile_ids, _) = tables::write_profile_map(
        engine,
        &lake.join("profile_map.parquet"),
        options.zstd_level,
    )?;
    sync_dir(&lake)?;
    manifest.events = manifest.events.saturating_sub(report.rows);
    manifest.profiles = profiles;
    manifest.profile_ids = profile_ids;
    write_manifest(&lake, &manifest)?;
    Ok(report)
}
