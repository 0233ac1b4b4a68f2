//! Writing lakes in the documented layout (`crates/lake/LAYOUT.md`) without the store: for
//! tests and the synthetic benchmark lake (`examples/genlake.rs`).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, RecordBatch, StringArray, StringDictionaryBuilder, TimestampMillisecondArray,
    UInt32Array, UInt64Array,
};
use arrow::datatypes::Int32Type;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::BatchError;

/// One event row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    /// Log offset (unique).
    pub offset: u64,
    /// Profile id at compaction time.
    pub profile_id: Option<u32>,
    /// `type`.
    pub kind: String,
    /// `event`.
    pub name: Option<String>,
    /// `source_name`.
    pub source: String,
    /// Event time, epoch ms.
    pub timestamp_ms: i64,
    /// `properties` JSON text.
    pub properties: String,
}

fn props() -> Result<WriterProperties, BatchError> {
    let level = ZstdLevel::try_new(3).map_err(|e| BatchError::InvalidLake(e.to_string()))?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_size(65_536)
        .set_column_dictionary_enabled(ColumnPath::from("offset"), false)
        .set_column_dictionary_enabled(ColumnPath::from("message_id"), false)
        .build())
}

/// The rows as one batch of `portrait_lake::event_schema()`.
pub fn event_batch(rows: &[EventSpec]) -> Result<RecordBatch, BatchError> {
    let dict = |it: &mut dyn Iterator<Item = Option<&str>>| -> ArrayRef {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        for v in it {
            match v {
                Some(s) => {
                    b.append_value(s);
                }
                None => b.append_null(),
            }
        }
        Arc::new(b.finish())
    };
    let n = rows.len();
    let ts: ArrayRef = Arc::new(
        TimestampMillisecondArray::from(rows.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>())
            .with_timezone("UTC"),
    );
    let nulls: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; n]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(
            rows.iter().map(|r| r.offset).collect::<Vec<_>>(),
        )),
        Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.profile_id).collect::<Vec<_>>(),
        )),
        Arc::new(UInt32Array::from(vec![1u32; n])),
        dict(&mut rows.iter().map(|r| Some(r.source.as_str()))),
        dict(&mut rows.iter().map(|r| Some(r.kind.as_str()))),
        dict(&mut rows.iter().map(|r| r.name.as_deref())),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| format!("m{}", r.offset))
                .collect::<Vec<_>>(),
        )),
        nulls.clone(),
        nulls.clone(),
        nulls.clone(),
        nulls,
        ts.clone(),
        ts,
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.properties.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec!["{}"; n])),
        Arc::new(StringArray::from(vec!["{}"; n])),
    ];
    Ok(RecordBatch::try_new(portrait_lake::event_schema(), cols)?)
}

/// Writes `rows` as one part file at `path` (one row group per 65 536 rows).
pub fn write_part(path: &Path, rows: &[EventSpec]) -> Result<(), BatchError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| BatchError::io(dir, e))?;
    }
    let f = File::create(path).map_err(|e| BatchError::io(path, e))?;
    let mut w = ArrowWriter::try_new(f, portrait_lake::event_schema(), Some(props()?))
        .map_err(|e| BatchError::parquet(path, e))?;
    for chunk in rows.chunks(65_536) {
        w.write(&event_batch(chunk)?)
            .map_err(|e| BatchError::parquet(path, e))?;
    }
    w.close().map_err(|e| BatchError::parquet(path, e))?;
    Ok(())
}

/// Writes `rows` into `lake_dir/events/date=…/part-<first offset>.parquet`, partitioned by the
/// Asia/Shanghai date of their timestamp, in offset order, at most 65 536 rows per file.
pub fn write_events(lake_dir: &Path, rows: &[EventSpec]) -> Result<usize, BatchError> {
    let mut parts: BTreeMap<String, Vec<EventSpec>> = BTreeMap::new();
    for r in rows {
        parts
            .entry(portrait_lake::partition_of(r.timestamp_ms))
            .or_default()
            .push(r.clone());
    }
    let mut files = 0;
    for (part, mut rows) in parts {
        rows.sort_by_key(|r| r.offset);
        for chunk in rows.chunks(65_536) {
            let first = chunk.first().map_or(0, |r| r.offset);
            let path = lake_dir
                .join("events")
                .join(&part)
                .join(format!("part-{first:020}.parquet"));
            write_part(&path, chunk)?;
            files += 1;
        }
    }
    Ok(files)
}

/// Writes `profile_map.parquet`: id `i` → `survivors[i]`.
pub fn write_profile_map(lake_dir: &Path, survivors: &[Option<u32>]) -> Result<(), BatchError> {
    std::fs::create_dir_all(lake_dir).map_err(|e| BatchError::io(lake_dir, e))?;
    let path = lake_dir.join("profile_map.parquet");
    let ids: Vec<u32> = (0..survivors.len() as u32).collect();
    let batch = RecordBatch::try_new(
        portrait_lake::profile_map_schema(),
        vec![
            Arc::new(UInt32Array::from(ids)),
            Arc::new(UInt32Array::from(survivors.to_vec())),
        ],
    )?;
    let f = File::create(&path).map_err(|e| BatchError::io(&path, e))?;
    let mut w = ArrowWriter::try_new(f, portrait_lake::profile_map_schema(), Some(props()?))
        .map_err(|e| BatchError::parquet(&path, e))?;
    w.write(&batch).map_err(|e| BatchError::parquet(&path, e))?;
    w.close().map_err(|e| BatchError::parquet(&path, e))?;
    Ok(())
}
