//! Parquet through the arrow reader, batch by batch, reading only the mapped columns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::temporal_conversions::{date32_to_datetime, date64_to_datetime};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::reader::ChunkReader;
use serde_json::{Map, Number, Value};

use super::{Fail, Next, Raw, SourceRow};
use crate::cell::Cell;
use crate::error::{ImportError, RowError};
use crate::input::Input;
use crate::mapping::Format;
use crate::plan::Plan;

const BATCH_ROWS: usize = 4096;

pub(crate) struct ParquetSource {
    reader: ParquetRecordBatchReader,
    /// For each plan column: top-level column name and the path below it (struct fields).
    columns: Vec<(String, Vec<String>)>,
    batch: Option<(RecordBatch, Vec<usize>)>,
    row: usize,
    done: u64,
    total_rows: u64,
    total_bytes: u64,
    counter: Arc<AtomicU64>,
}

impl ParquetSource {
    pub(crate) fn open(
        input: &Input,
        plan: &Plan,
        total_bytes: u64,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, ImportError> {
        let origin = input.origin();
        let parquet_error = |source| ImportError::Parquet {
            origin: origin.clone(),
            source,
        };
        let (reader, columns, total_rows) = match input {
            Input::File(path) => {
                let file =
                    std::fs::File::open(path).map_err(|e| ImportError::io("open", path, e))?;
                build(file, plan, &origin).map_err(|e| e.into_import(parquet_error))?
            }
            Input::Bytes(bytes) => {
                build(bytes.clone(), plan, &origin).map_err(|e| e.into_import(parquet_error))?
            }
        };
        Ok(Self {
            reader,
            columns,
            batch: None,
            row: 0,
            done: 0,
            total_rows,
            total_bytes,
            counter,
        })
    }

    pub(crate) fn next_row(&mut self) -> Next {
        loop {
            if let Some((batch, index)) = &self.batch {
                if self.row < batch.num_rows() {
                    let row = self.row;
                    self.row += 1;
                    self.done += 1;
                    let progress = u128::from(self.total_bytes) * u128::from(self.done)
                        / u128::from(self.total_rows.max(1));
                    let progress = u64::try_from(progress).unwrap_or(u64::MAX);
                    self.counter
                        .store(progress.min(self.total_bytes), Ordering::Relaxed);
                    let cells = self
                        .columns
                        .iter()
                        .zip(index)
                        .map(|((_, path), &i)| descend(cell(batch.column(i).as_ref(), row), path))
                        .collect();
                    return Some(Ok(SourceRow {
                        line: self.done,
                        cells,
                        raw: Raw::Cells,
                    }));
                }
            }
            match self.reader.next()? {
                Ok(batch) => {
                    let schema = batch.schema();
                    let index = self
                        .columns
                        .iter()
                        .map(|(top, _)| schema.index_of(top))
                        .collect();
                    match index {
                        Ok(index) => self.batch = Some((batch, index)),
                        Err(e) => return Some(Err(self.fatal(e.to_string()))),
                    }
                    self.row = 0;
                }
                Err(e) => return Some(Err(self.fatal(e.to_string()))),
            }
        }
    }

    fn fatal(&mut self, error: String) -> Fail {
        self.batch = None;
        let reason = format!(
            "cannot decode Parquet data after row {}: {error}",
            self.done
        );
        Fail::Fatal(RowError {
            line: self.done + 1,
            reason,
            raw: String::new(),
        })
    }
}

enum OpenError {
    Parquet(parquet::errors::ParquetError),
    Import(ImportError),
}

impl OpenError {
    fn into_import(
        self,
        parquet: impl FnOnce(parquet::errors::ParquetError) -> ImportError,
    ) -> ImportError {
        match self {
            Self::Parquet(e) => parquet(e),
            Self::Import(e) => e,
        }
    }
}

type Opened = (ParquetRecordBatchReader, Vec<(String, Vec<String>)>, u64);

fn build<T: ChunkReader + 'static>(
    input: T,
    plan: &Plan,
    origin: &str,
) -> Result<Opened, OpenError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(input).map_err(OpenError::Parquet)?;
    let schema: SchemaRef = builder.schema().clone();
    let mut columns = Vec::with_capacity(plan.columns.len());
    let mut roots = Vec::new();
    for name in &plan.columns {
        let Some((root, path)) = resolve(&schema, name) else {
            return Err(OpenError::Import(ImportError::MissingColumn {
                origin: origin.to_string(),
                format: Format::Parquet,
                column: name.clone(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            }));
        };
        roots.push(root);
        columns.push((schema.field(root).name().clone(), path));
    }
    let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(OpenError::Parquet)?;
    Ok((reader, columns, total_rows))
}

/// A top-level column by name, or a dotted path into a struct column.
fn resolve(schema: &Schema, name: &str) -> Option<(usize, Vec<String>)> {
    if let Ok(i) = schema.index_of(name) {
        return Some((i, Vec::new()));
    }
    let parts: Vec<&str> = name.split('.').collect();
    (1..parts.len()).rev().find_map(|k| {
        let i = schema.index_of(&parts[..k].join(".")).ok()?;
        matches!(schema.field(i).data_type(), DataType::Struct(_))
            .then(|| (i, parts[k..].iter().map(|s| s.to_string()).collect()))
    })
}

/// Follows a path of struct field names into a nested cell.
fn descend(cell: Cell, path: &[String]) -> Cell {
    if path.is_empty() {
        return cell;
    }
    let Cell::Json(value) = cell else {
        return Cell::Null;
    };
    path.iter()
        .try_fold(&value, |v, key| v.as_object()?.get(key))
        .cloned()
        .map_or(Cell::Null, Cell::from_json)
}

/// One arrow value as a cell: numbers and booleans as JSON, strings as text, zoned timestamps
/// as instants, zone-less ones as local times, dates as `YYYY-MM-DD`, decimals as exact text,
/// structs and lists as JSON; anything else as arrow's display text.
pub(crate) fn cell(array: &dyn Array, row: usize) -> Cell {
    if array.is_null(row) {
        return Cell::Null;
    }
    let int = |v: i64| Cell::Json(Value::from(v));
    let text = |s: &str| Cell::Text(s.to_string());
    match array.data_type() {
        DataType::Null => Cell::Null,
        DataType::Boolean => Cell::Json(Value::Bool(array.as_boolean().value(row))),
        DataType::Int8 => int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => int(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => Cell::Json(Value::from(array.as_primitive::<UInt64Type>().value(row))),
        // Through the shortest decimal text, so 19.9f32 stays 19.9 rather than 19.899999618….
        DataType::Float32 => float(
            array
                .as_primitive::<Float32Type>()
                .value(row)
                .to_string()
                .parse()
                .ok(),
        ),
        DataType::Float64 => float(Some(array.as_primitive::<Float64Type>().value(row))),
        DataType::Utf8 => text(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => text(array.as_string::<i64>().value(row)),
        DataType::Utf8View => text(array.as_string_view().value(row)),
        DataType::Binary => lossy(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => lossy(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => lossy(array.as_binary_view().value(row)),
        DataType::Timestamp(unit, zone) => {
            let ms = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(row)
                    .div_euclid(1000),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1_000_000),
            };
            match (zone, chrono::DateTime::from_timestamp_millis(ms)) {
                (Some(_), _) => Cell::Instant(ms),
                (None, Some(t)) => Cell::Local(t.naive_utc()),
                (None, None) => Cell::Null,
            }
        }
        DataType::Date32 => date(date32_to_datetime(
            array.as_primitive::<Date32Type>().value(row),
        )),
        DataType::Date64 => date(date64_to_datetime(
            array.as_primitive::<Date64Type>().value(row),
        )),
        DataType::Decimal128(_, _) => {
            Cell::Text(array.as_primitive::<Decimal128Type>().value_as_string(row))
        }
        DataType::Decimal256(_, _) => {
            Cell::Text(array.as_primitive::<Decimal256Type>().value_as_string(row))
        }
        DataType::Struct(_) => {
            let array = array.as_struct();
            let object: Map<String, Value> = array
                .fields()
                .iter()
                .zip(array.columns())
                .map(|(f, c)| (f.name().clone(), cell(c.as_ref(), row).to_json()))
                .collect();
            Cell::Json(Value::Object(object))
        }
        DataType::List(_) => list(array.as_list::<i32>().value(row).as_ref()),
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row).as_ref()),
        _ => match ArrayFormatter::try_new(array, &FormatOptions::default()) {
            Ok(formatter) => Cell::Text(formatter.value(row).to_string()),
            Err(_) => Cell::Null,
        },
    }
}

fn float(v: Option<f64>) -> Cell {
    v.and_then(Number::from_f64)
        .map_or(Cell::Null, |n| Cell::Json(Value::Number(n)))
}

fn lossy(bytes: &[u8]) -> Cell {
    Cell::Text(String::from_utf8_lossy(bytes).into_owned())
}

fn date(t: Option<chrono::NaiveDateTime>) -> Cell {
    t.map_or(Cell::Null, |t| Cell::Text(t.format("%Y-%m-%d").to_string()))
}

fn list(values: &dyn Array) -> Cell {
    Cell::Json(Value::Array(
        (0..values.len())
            .map(|i| cell(values, i).to_json())
            .collect(),
    ))
}
