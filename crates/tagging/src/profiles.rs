//! The live profiles of the lake (`profiles.parquet`): ids, and traits when a plan reads them.

use std::path::Path;

use arrow::array::{Array, StringArray, UInt32Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use roaring::RoaringBitmap;

use crate::error::TaggingError;

/// Traits of one profile.
pub type Traits = serde_json::Map<String, serde_json::Value>;

/// Live profiles as of the last compaction.
#[derive(Debug, Default)]
pub struct LakeProfiles {
    /// Live ids, ascending.
    pub ids: Vec<u32>,
    /// The same ids as a bitmap (the audience universe).
    pub universe: RoaringBitmap,
    /// Traits per entry of `ids`, when read.
    pub traits: Option<Vec<Traits>>,
}

/// Reads `LAKE/profiles.parquet`; parses traits only when `with_traits`. A lake not compacted yet
/// has no profiles.
pub fn read_profiles(lake: &Path, with_traits: bool) -> Result<LakeProfiles, TaggingError> {
    let path = lake.join("profiles.parquet");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LakeProfiles::default()),
        Err(e) => return Err(TaggingError::io(&path, e)),
    };
    let bad = |e: &dyn std::fmt::Display| TaggingError::Corrupt(format!("{}: {e}", path.display()));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;
    let schema = builder.parquet_schema();
    let mut cols = vec![0usize];
    let traits_col = schema.columns().iter().position(|c| c.name() == "traits");
    let consent_col = schema.columns().iter().position(|c| c.name() == "consent");
    if with_traits {
        cols.extend(traits_col);
        cols.extend(consent_col);
    }
    let mask = ProjectionMask::roots(schema, cols);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(|e| bad(&e))?;
    let mut out = LakeProfiles {
        traits: with_traits.then(Vec::new),
        ..LakeProfiles::default()
    };
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let ids = batch
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
            .ok_or_else(|| bad(&"column id is not UInt32"))?;
        out.ids.extend(ids.values().iter().copied());
        if let Some(traits) = out.traits.as_mut() {
            let col = batch
                .column_by_name("traits")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| bad(&"column traits is not Utf8"))?;
            let consent = batch
                .column_by_name("consent")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>());
            for i in 0..col.len() {
                let mut map: Traits = if col.is_null(i) {
                    Traits::new()
                } else {
                    serde_json::from_str(col.value(i)).unwrap_or_default()
                };
                if let Some(c) = consent.filter(|c| !c.is_null(i)) {
                    let pairs: Traits = serde_json::from_str(c.value(i)).unwrap_or_default();
                    overlay_consent(
                        &mut map,
                        pairs
                            .iter()
                            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))),
                    );
                }
                traits.push(map);
            }
        }
    }
    out.universe = out.ids.iter().copied().collect();
    Ok(out)
}

pub use portrait_core::consent::overlay as overlay_consent;

/// Names seen in the data, for "did you mean" warnings on definitions: event names from the
/// most recent part files of the lake (up to `files`), trait keys (top level, and one level
/// below) from the first profiles of `profiles.parquet`. A sample, so a warning can be missing
/// for rare names; never an error.
pub fn vocabulary(lake: &Path, files: usize) -> (Vec<String>, Vec<String>) {
    use arrow::array::{AsArray, DictionaryArray};
    use arrow::datatypes::Int32Type;
    let mut events = std::collections::BTreeSet::new();
    let mut parts: Vec<std::path::PathBuf> = Vec::new();
    if let Ok(dates) = std::fs::read_dir(lake.join("events")) {
        let mut dates: Vec<_> = dates.filter_map(Result::ok).map(|e| e.path()).collect();
        dates.sort();
        for d in dates.iter().rev() {
            if let Ok(entries) = std::fs::read_dir(d) {
                parts.extend(
                    entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "parquet")),
                );
            }
            if parts.len() >= files {
                break;
            }
        }
    }
    for part in parts.iter().take(files) {
        let Ok(f) = std::fs::File::open(part) else {
            continue;
        };
        let Ok(builder) = ParquetRecordBatchReaderBuilder::try_new(f) else {
            continue;
        };
        let Some(col) = builder
            .parquet_schema()
            .columns()
            .iter()
            .position(|c| c.name() == "event")
        else {
            continue;
        };
        let mask = ProjectionMask::leaves(builder.parquet_schema(), [col]);
        let Ok(reader) = builder.with_projection(mask).build() else {
            continue;
        };
        for batch in reader.flatten() {
            if let Some(dict) = batch
                .column(0)
                .as_any()
                .downcast_ref::<DictionaryArray<Int32Type>>()
            {
                let values = dict.values().as_string::<i32>();
                events.extend(values.iter().flatten().map(str::to_string));
            }
        }
    }
    let mut traits = std::collections::BTreeSet::new();
    if let Ok(p) = read_profiles(lake, true) {
        for t in p.traits.iter().flatten().take(10_000) {
            for (k, v) in t {
                traits.insert(k.clone());
                if let serde_json::Value::Object(inner) = v {
                    traits.extend(inner.keys().map(|i| format!("{k}.{i}")));
                }
            }
        }
    }
    (events.into_iter().collect(), traits.into_iter().collect())
}
