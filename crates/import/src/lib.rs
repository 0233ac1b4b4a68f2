//! File import: CSV (UTF-8 or GBK), JSON lines and Parquet rows turned into
//! [`Message`]s by a [`Mapping`], as described in `docs/import-mapping.md`.
//!
//! The pipeline:
//! 1. [`Mapping::from_yaml`] / [`Mapping::load`] parse and check a mapping;
//!    [`Mapping::validate`] checks its identifier types against an [`IdentityConfig`].
//! 2. [`read_file`] / [`read_bytes`] open the input, check that every mapped column exists
//!    (a file-level [`ImportError`] otherwise) and return [`Rows`].
//! 3. [`Rows`] yields, in file order, `(line, message)` for each good row and a [`RowError`]
//!    for each bad one; a [`RejectWriter`] keeps the bad ones for the user.
//!
//! **API boundary:** this crate reads files and builds messages; it does not store them.
//! Deduplication relies on the message ids it derives (`import:<column values>` or a content
//! hash), so importing the same file twice yields the same ids.
//!
//! **Memory:** CSV and JSON lines are streamed record by record; with `encoding: auto` a CSV
//! file is read once beforehand to check that it is valid UTF-8, and GBK is decoded on the fly.
//! [`read_bytes`] holds the upload itself in memory but nothing more. Parquet is read one
//! batch of rows at a time, mapped columns only.

#![deny(missing_docs)]

mod cell;
mod error;
mod input;
mod mapping;
mod plan;
mod reject;
mod source;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use portrait_core::time::Millis;
use portrait_core::{IdentityConfig, Message, SourceId};

pub use error::{ImportError, RowError};
pub use mapping::{
    Encoding, FieldColumn, Format, IdentifierColumn, ImportKind, Mapping, TimestampColumn,
    TimestampFormat, ValueType,
};
pub use reject::RejectWriter;

use input::Input;
use plan::Plan;
use source::{csv::CsvSource, jsonl::JsonlSource, parquet::ParquetSource, Fail};

/// What every message of an import shares.
#[derive(Debug, Clone)]
pub struct RowContext {
    /// Identifier types: normalisation, blocking and priority.
    pub config: IdentityConfig,
    /// The source the messages are imported into.
    pub source: SourceId,
    /// Import time: `received_at` of every message, and its `timestamp` when the mapping has
    /// no `timestamp` column.
    pub received_at: Millis,
}

/// Reads a file: the format comes from the mapping's `format`, else from the extension.
///
/// Fails before yielding anything when the mapping is inconsistent or names an unknown
/// identifier type, when the format is unknown, when the file cannot be opened, or when a
/// mapped column is missing from the CSV header or Parquet schema.
pub fn read_file(path: &Path, mapping: &Mapping, ctx: &RowContext) -> Result<Rows, ImportError> {
    mapping.validate(&ctx.config)?;
    let format = mapping
        .format
        .or_else(|| Format::from_path(path))
        .ok_or_else(|| ImportError::UnknownFormat {
            path: path.to_path_buf(),
        })?;
    Rows::open(Input::File(path.to_path_buf()), format, mapping, ctx)
}

/// Reads an upload held in memory, in the given format (which wins over the mapping's).
pub fn read_bytes(
    bytes: Vec<u8>,
    format: Format,
    mapping: &Mapping,
    ctx: &RowContext,
) -> Result<Rows, ImportError> {
    mapping.validate(&ctx.config)?;
    Rows::open(Input::Bytes(bytes.into()), format, mapping, ctx)
}

/// The rows of one input, in order: `Ok((line, message))` for a good row, `Err(RowError)` for
/// a rejected one.
///
/// If reading cannot go on (an I/O error, a corrupt Parquet page), the last item is a
/// [`RowError`] saying so and [`Rows::interrupted`] turns true.
pub struct Rows {
    source: Source,
    plan: Plan,
    ctx: RowContext,
    format: Format,
    total_bytes: u64,
    bytes_read: Arc<AtomicU64>,
    interrupted: bool,
}

enum Source {
    Csv(CsvSource),
    Jsonl(JsonlSource),
    Parquet(ParquetSource),
}

impl Rows {
    fn open(
        input: Input,
        format: Format,
        mapping: &Mapping,
        ctx: &RowContext,
    ) -> Result<Rows, ImportError> {
        let plan = Plan::new(mapping);
        let total_bytes = input.len()?;
        let bytes_read = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&bytes_read);
        let source = match format {
            Format::Csv => Source::Csv(CsvSource::open(&input, mapping, &plan, counter)?),
            Format::JsonLines => Source::Jsonl(JsonlSource::open(&input, &plan, counter)?),
            Format::Parquet => {
                Source::Parquet(ParquetSource::open(&input, &plan, total_bytes, counter)?)
            }
        };
        Ok(Rows {
            source,
            plan,
            ctx: ctx.clone(),
            format,
            total_bytes,
            bytes_read,
            interrupted: false,
        })
    }

    /// The format being read.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Size of the input in bytes: the length for a progress bar.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Input bytes consumed so far (read-ahead included; for Parquet, estimated from the rows
    /// read). Never more than [`Rows::total_bytes`] for an unchanging file.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Whether reading stopped early at an unrecoverable error (the last item yielded).
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }
}

impl Iterator for Rows {
    type Item = Result<(u64, Message), RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.interrupted {
            return None;
        }
        let next = match &mut self.source {
            Source::Csv(s) => s.next_row(),
            Source::Jsonl(s) => s.next_row(),
            Source::Parquet(s) => s.next_row(),
        };
        let row = match next? {
            Ok(row) => row,
            Err(Fail::Row(e)) => return Some(Err(e)),
            Err(Fail::Fatal(e)) => {
                self.interrupted = true;
                return Some(Err(e));
            }
        };
        Some(match self.plan.build(&row.cells, &self.ctx) {
            Ok(message) => Ok((row.line, message)),
            Err(reason) => Err(RowError {
                line: row.line,
                reason,
                raw: row.raw.render(&self.plan.columns, &row.cells),
            }),
        })
    }
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("format", &self.format)
            .field("columns", &self.plan.columns)
            .field("total_bytes", &self.total_bytes)
            .field("bytes_read", &self.bytes_read())
            .field("interrupted", &self.interrupted)
            .finish_non_exhaustive()
    }
}
