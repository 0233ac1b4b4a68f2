//! Format readers. Each turns its input into [`SourceRow`]s: a line number and one [`Cell`] per
//! column of the [`Plan`](crate::plan::Plan), in order.

pub(crate) mod csv;
pub(crate) mod jsonl;
pub(crate) mod parquet;

use serde_json::{Map, Value};

use crate::cell::Cell;
use crate::error::RowError;

/// One data row, cut down to the columns the mapping reads.
pub(crate) struct SourceRow {
    pub(crate) line: u64,
    pub(crate) cells: Vec<Cell>,
    pub(crate) raw: Raw,
}

/// What a row looked like in the file, kept to write it to the reject file if needed.
pub(crate) enum Raw {
    /// A CSV record and the delimiter to write it back with.
    Record(::csv::ByteRecord, u8),
    /// A JSON line.
    Line(Vec<u8>),
    /// Nothing textual (Parquet): the mapped cells are written as a JSON object.
    Cells,
}

impl Raw {
    pub(crate) fn render(&self, columns: &[String], cells: &[Cell]) -> String {
        match self {
            Self::Record(record, delimiter) => record_text(record, *delimiter),
            Self::Line(bytes) => String::from_utf8_lossy(bytes).trim_end().to_string(),
            Self::Cells => {
                let object: Map<String, Value> = columns
                    .iter()
                    .cloned()
                    .zip(cells.iter().map(Cell::to_json))
                    .collect();
                Value::Object(object).to_string()
            }
        }
    }
}

/// A CSV record written back as one line of CSV.
pub(crate) fn record_text(record: &::csv::ByteRecord, delimiter: u8) -> String {
    let mut writer = ::csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(Vec::new());
    let written = writer
        .write_byte_record(record)
        .and_then(|()| Ok(writer.flush()?));
    let bytes = match (written, writer.into_inner()) {
        (Ok(()), Ok(bytes)) => bytes,
        _ => record.iter().collect::<Vec<_>>().join(&delimiter),
    };
    String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// Why a source could not produce a row.
pub(crate) enum Fail {
    /// This row is broken; reading goes on.
    Row(RowError),
    /// Reading cannot go on (I/O error, corrupt Parquet page).
    Fatal(RowError),
}

/// Result of asking a source for its next row.
pub(crate) type Next = Option<Result<SourceRow, Fail>>;
