//! The events table: schema, date partitions and Arrow batches.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, StringBuilder, StringDictionaryBuilder, TimestampMillisecondArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::format::SortingColumn;
use parquet::schema::types::ColumnPath;
use portrait_core::{Message, SourceId};

use crate::error::LakeError;

/// Time zone of the `date=` partitions.
pub const TIME_ZONE: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

/// Partition value for an event time that has no calendar date (out of chrono's range).
pub const NO_DATE: &str = "__HIVE_DEFAULT_PARTITION__";

/// 1992-01-01T00:00:00Z in ms. Asia/Shanghai is UTC+8 without daylight saving from then on
/// (China's last DST ended 1991-09-15), so later instants take the fixed-offset fast path.
const FIXED_OFFSET_FROM: i64 = 694_224_000_000;
const DAY_MS: i64 = 86_400_000;
const SHANGHAI_OFFSET_MS: i64 = 8 * 3_600_000;
/// `NaiveDate::num_days_from_ce` of 1970-01-01.
const EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// The Asia/Shanghai calendar day of an instant, as days since 1970-01-01 (`None` when the
/// instant is out of chrono's range).
pub fn local_day(ms: i64) -> Option<i64> {
    if ms >= FIXED_OFFSET_FROM {
        return Some(ms.checked_add(SHANGHAI_OFFSET_MS)?.div_euclid(DAY_MS));
    }
    let date = Utc
        .timestamp_millis_opt(ms)
        .single()?
        .with_timezone(&TIME_ZONE)
        .date_naive();
    Some(i64::from(date.num_days_from_ce()) - EPOCH_DAYS_FROM_CE)
}

/// The partition directory name of a day from [`local_day`]: `date=YYYY-MM-DD`.
pub fn partition_name(day: Option<i64>) -> String {
    let date = day
        .and_then(|d| i32::try_from(d + EPOCH_DAYS_FROM_CE).ok())
        .and_then(NaiveDate::from_num_days_from_ce_opt);
    match date {
        Some(date) => format!("date={}", date.format("%Y-%m-%d")),
        None => format!("date={NO_DATE}"),
    }
}

/// The partition directory name of an event time: `date=YYYY-MM-DD` in Asia/Shanghai.
pub fn partition_of(timestamp_ms: i64) -> String {
    partition_name(local_day(timestamp_ms))
}

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Millisecond timestamps in UTC, the lake's time type.
pub(crate) fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Schema of the event part files.
pub fn event_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("offset", DataType::UInt64, false),
                Field::new("profile_id", DataType::UInt32, true),
                Field::new("source", DataType::UInt32, false),
                Field::new("source_name", dict(), false),
                Field::new("type", dict(), false),
                Field::new("event", dict(), true),
                Field::new("message_id", DataType::Utf8, false),
                Field::new("user_id", DataType::Utf8, true),
                Field::new("anonymous_id", DataType::Utf8, true),
                Field::new("previous_id", DataType::Utf8, true),
                Field::new("group_id", DataType::Utf8, true),
                Field::new("timestamp", utc_ms(), false),
                Field::new("received_at", utc_ms(), false),
                Field::new("properties", DataType::Utf8, false),
                Field::new("traits", DataType::Utf8, false),
                Field::new("context", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Writer settings of the event part files: zstd, one row group, rows in offset order
/// (declared as the sorting column), no dictionary for the unique columns, no statistics for
/// the JSON text columns (min/max of JSON prunes nothing).
pub(crate) fn event_props(
    zstd_level: i32,
    rows_per_file: usize,
) -> Result<WriterProperties, LakeError> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_max_row_group_size(rows_per_file.max(1))
        .set_statistics_truncate_length(Some(64))
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]));
    for col in ["offset", "message_id"] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(col), false);
    }
    for col in ["properties", "traits", "context"] {
        b = b.set_column_statistics_enabled(ColumnPath::from(col), EnabledStatistics::None);
    }
    Ok(b.build())
}

/// One event waiting in a partition buffer.
pub(crate) struct Row {
    pub offset: u64,
    pub profile: Option<u32>,
    pub message: Message,
}

impl Row {
    /// Approximate memory held by the row (struct, heap strings and allocator overhead), for
    /// the memory budget.
    pub fn size(&self) -> usize {
        // Per heap allocation: the allocator's header and rounding.
        const ALLOC: usize = 24;
        let m = &self.message;
        let heap = |s: &String| {
            if s.capacity() == 0 {
                0
            } else {
                s.capacity() + ALLOC
            }
        };
        let opt = |s: &Option<String>| s.as_ref().map_or(0, heap);
        std::mem::size_of::<Row>()
            + heap(&m.message_id)
            + opt(&m.event)
            + opt(&m.user_id)
            + opt(&m.anonymous_id)
            + opt(&m.previous_id)
            + opt(&m.group_id)
            + heap(&m.traits)
            + heap(&m.properties)
            + heap(&m.context)
            + ALLOC
            + m.identifiers
                .iter()
                .map(|i| std::mem::size_of_val(i) + heap(&i.kind) + heap(&i.value))
                .sum::<usize>()
    }
}

/// Builds the record batch of a part file.
pub(crate) fn event_batch(
    rows: &[Row],
    source_names: &HashMap<SourceId, String>,
) -> Result<RecordBatch, LakeError> {
    let n = rows.len();
    let total = |f: &dyn Fn(&Message) -> usize| rows.iter().map(|r| f(&r.message)).sum::<usize>();
    let opt_len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let strings = |bytes: usize| StringBuilder::with_capacity(n, bytes);
    let mut message_id = strings(total(&|m| m.message_id.len()));
    let mut user_id = strings(total(&|m| opt_len(&m.user_id)));
    let mut anonymous_id = strings(total(&|m| opt_len(&m.anonymous_id)));
    let mut previous_id = strings(total(&|m| opt_len(&m.previous_id)));
    let mut group_id = strings(total(&|m| opt_len(&m.group_id)));
    let mut properties = strings(total(&|m| m.properties.len()));
    let mut traits = strings(total(&|m| m.traits.len()));
    let mut context = strings(total(&|m| m.context.len()));
    let mut source_name = StringDictionaryBuilder::<Int32Type>::new();
    let mut kind = StringDictionaryBuilder::<Int32Type>::new();
    let mut event = StringDictionaryBuilder::<Int32Type>::new();
    for r in rows {
        let m = &r.message;
        source_name.append_value(source_names.get(&m.source).map_or("?", String::as_str));
        kind.append_value(m.kind.as_str());
        event.append_option(m.event.as_deref());
        message_id.append_value(&m.message_id);
        user_id.append_option(m.user_id.as_deref());
        anonymous_id.append_option(m.anonymous_id.as_deref());
        previous_id.append_option(m.previous_id.as_deref());
        group_id.append_option(m.group_id.as_deref());
        properties.append_value(&m.properties);
        traits.append_value(&m.traits);
        context.append_value(&m.context);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.offset))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.profile))),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.message.source),
        )),
        Arc::new(source_name.finish()),
        Arc::new(kind.finish()),
        Arc::new(event.finish()),
        Arc::new(message_id.finish()),
        Arc::new(user_id.finish()),
        Arc::new(anonymous_id.finish()),
        Arc::new(previous_id.finish()),
        Arc::new(group_id.finish()),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.message.timestamp))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.message.received_at))
                .with_timezone("UTC"),
        ),
        Arc::new(properties.finish()),
        Arc::new(traits.finish()),
        Arc::new(context.finish()),
    ];
    Ok(RecordBatch::try_new(event_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        portrait_core::time::parse_iso(text).expect("timestamp")
    }

    #[test]
    fn shanghai_dates() {
        assert_eq!(
            partition_of(ms("2024-01-01T15:59:59.999Z")),
            "date=2024-01-01"
        );
        assert_eq!(partition_of(ms("2024-01-01T16:00:00Z")), "date=2024-01-02");
        assert_eq!(partition_of(ms("2024-01-01T17:00:00Z")), "date=2024-01-02");
        assert_eq!(partition_of(ms("1969-12-31T20:00:00Z")), "date=1970-01-01");
        // Summer 1988: China observed daylight saving time (UTC+9).
        assert_eq!(partition_of(ms("1988-07-01T15:30:00Z")), "date=1988-07-02");
        assert_eq!(partition_of(ms("1997-07-01T15:30:00Z")), "date=1997-07-01");
        assert_eq!(partition_of(i64::MAX), format!("date={NO_DATE}"));
        assert_eq!(partition_of(i64::MIN), format!("date={NO_DATE}"));
    }

    #[test]
    fn fast_path_agrees_with_the_time_zone_database() {
        let mut t = FIXED_OFFSET_FROM;
        while t < ms("2040-01-01T00:00:00Z") {
            let slow = Utc.timestamp_millis_opt(t).single().map(|d| {
                i64::from(d.with_timezone(&TIME_ZONE).date_naive().num_days_from_ce())
                    - EPOCH_DAYS_FROM_CE
            });
            assert_eq!(local_day(t), slow, "at {t}");
            t += 7 * 3_600_000 + 1_234;
        }
    }
}
