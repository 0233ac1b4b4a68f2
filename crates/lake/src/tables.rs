//! The profile tables: `profiles.parquet` (live profiles) and `profile_map.parquet` (every id
//! ever allocated → its current survivor).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, ListBuilder, StringBuilder, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::format::SortingColumn;
use parquet::schema::types::ColumnPath;
use portrait_core::{Profile, ProfileId};
use portrait_store::Engine;

use crate::error::LakeError;
use crate::events::utc_ms;
use crate::files::write_parquet;

/// Profiles copied per read-lock acquisition (and per row group).
const CHUNK: u32 = 65_536;

/// Schema of `profiles.parquet`.
pub fn profiles_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::UInt32, false),
                Field::new("first_seen", utc_ms(), false),
                Field::new("last_seen", utc_ms(), false),
                Field::new("event_count", DataType::UInt64, false),
                Field::new(
                    "identifiers",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
                Field::new("traits", DataType::Utf8, false),
                Field::new("consent", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Schema of `profile_map.parquet`.
pub fn profile_map_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::UInt32, false),
                Field::new("survivor", DataType::UInt32, true),
            ]))
        })
        .clone()
}

fn props(zstd_level: i32, no_stats: &[&str]) -> Result<WriterProperties, LakeError> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_max_row_group_size(CHUNK as usize)
        .set_statistics_truncate_length(Some(64))
        .set_column_dictionary_enabled(ColumnPath::from("id"), false)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]));
    for col in no_stats {
        b = b.set_column_statistics_enabled(ColumnPath::from(*col), EnabledStatistics::None);
    }
    Ok(b.build())
}

/// The traits of a profile as one JSON object text (values are stored as JSON text already).
fn traits_json(p: &Profile) -> String {
    let mut out = String::with_capacity(2 + p.traits.len() * 24);
    out.push('{');
    for (i, (k, v)) in p.traits.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(k.clone()).to_string());
        out.push(':');
        out.push_str(&v.value);
    }
    out.push('}');
    out
}

/// The consent decisions of a profile as one JSON object: `{"sms/marketing": "granted"}`.
fn consent_json(p: &Profile) -> String {
    let map: serde_json::Map<String, serde_json::Value> = p
        .consent
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                serde_json::Value::String(r.state.as_str().into()),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn profiles_batch(profiles: &[&Profile]) -> Result<RecordBatch, LakeError> {
    let mut identifiers = ListBuilder::new(StringBuilder::new());
    let mut traits = StringBuilder::new();
    let mut consent = StringBuilder::new();
    for p in profiles {
        for id in &p.identifiers {
            identifiers.values().append_value(id.to_string());
        }
        identifiers.append(true);
        traits.append_value(traits_json(p));
        consent.append_value(consent_json(p));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(profiles.iter().map(|p| p.id))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(profiles.iter().map(|p| p.first_seen))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(profiles.iter().map(|p| p.last_seen))
                .with_timezone("UTC"),
        ),
        Arc::new(UInt64Array::from_iter_values(
            profiles.iter().map(|p| p.events.len() as u64),
        )),
        Arc::new(identifiers.finish()),
        Arc::new(traits.finish()),
        Arc::new(consent.finish()),
    ];
    Ok(RecordBatch::try_new(profiles_schema(), columns)?)
}

/// Writes `profiles.parquet`: the live profiles, in id order, copied from the book in chunks
/// of [`CHUNK`] ids under short read locks (the committer is never held up for long). Returns
/// the rows and bytes written.
pub(crate) fn write_profiles(
    engine: &Engine,
    path: &Path,
    zstd_level: i32,
) -> Result<(u64, u64), LakeError> {
    let mut rows = 0u64;
    let props = props(zstd_level, &["identifiers", "traits", "consent"])?;
    let bytes = write_parquet(path, profiles_schema(), props, |w| {
        let mut start: u32 = 0;
        loop {
            let batch = {
                let state = engine.state();
                let book = &state.book;
                let end = book.id_space();
                if start >= end {
                    break;
                }
                let stop = end.min(start.saturating_add(CHUNK));
                // `get` follows merges: keep only the profiles that live at their own id.
                let live: Vec<&Profile> = (start..stop)
                    .filter_map(|id| book.get(id).filter(|p| p.id == id))
                    .collect();
                start = stop;
                if live.is_empty() {
                    continue;
                }
                rows += live.len() as u64;
                profiles_batch(&live)?
            };
            w.write(&batch)?;
            w.flush()?;
        }
        Ok(())
    })?;
    Ok((rows, bytes))
}

/// Writes `profile_map.parquet`: one row per id ever allocated, with the live profile it
/// resolves to today (itself when live; null only for an id being rebuilt by an unmerge).
/// Returns the rows and bytes written.
pub(crate) fn write_profile_map(
    engine: &Engine,
    path: &Path,
    zstd_level: i32,
) -> Result<(u64, u64), LakeError> {
    let (ids, survivors): (Vec<ProfileId>, Vec<Option<ProfileId>>) = {
        let state = engine.state();
        let book = &state.book;
        (0..book.id_space())
            .map(|id| (id, book.resolve(id)))
            .unzip()
    };
    let rows = ids.len() as u64;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(ids)),
        Arc::new(UInt32Array::from(survivors)),
    ];
    let batch = RecordBatch::try_new(profile_map_schema(), columns)?;
    let bytes = write_parquet(path, profile_map_schema(), props(zstd_level, &[])?, |w| {
        for start in (0..batch.num_rows()).step_by(CHUNK as usize) {
            let len = (batch.num_rows() - start).min(CHUNK as usize);
            w.write(&batch.slice(start, len))?;
        }
        Ok(())
    })?;
    Ok((rows, bytes))
}
