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
    if with_traits {
        cols.extend(traits_col);
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
            for i in 0..col.len() {
                let map = if col.is_null(i) {
                    Traits::new()
                } else {
                    serde_json::from_str(col.value(i)).unwrap_or_default()
                };
                traits.push(map);
            }
        }
    }
    out.universe = out.ids.iter().copied().collect();
    Ok(out)
}
