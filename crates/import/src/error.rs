//! File-level errors ([`ImportError`]) and row-level rejects ([`RowError`]).

use std::path::{Path, PathBuf};

/// A file-level failure: the import of this file cannot start (or cannot go on).
///
/// Row problems are not `ImportError`s: they are [`RowError`]s, yielded by
/// [`Rows`](crate::Rows) and written to the reject file while the other rows are imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading or writing a file failed.
    #[error("cannot {action} `{}`: {source} (check the path and its permissions)", path.display())]
    Io {
        /// What was being done: `read`, `open`, `create`, `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The mapping is malformed or inconsistent.
    #[error("bad mapping{}: {message} (see docs/import-mapping.md)", origin(path.as_deref()))]
    Mapping {
        /// The mapping file, when it was loaded from one.
        path: Option<PathBuf>,
        /// What is wrong and where (YAML field path, line and column when known).
        message: String,
    },
    /// The mapping names an identifier type the identity configuration does not define.
    #[error(
        "mapping: unknown identifier type `{kind}` under `identifiers` (known types: {})",
        known.join(", ")
    )]
    UnknownIdentifierType {
        /// The unknown type.
        kind: String,
        /// The types the identity configuration defines, in priority order.
        known: Vec<String>,
    },
    /// The input format cannot be told from the file name.
    #[error(
        "cannot tell the format of `{}` from its extension (use .csv, .jsonl, .ndjson, .json or \
         .parquet, or set `format:` in the mapping)",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A column the mapping names is not in the file.
    #[error(
        "{origin}: column `{column}` named in the mapping is not in the file (its {format} \
         columns: {}){}",
        available.join(", "),
        missing_hint(*format)
    )]
    MissingColumn {
        /// File name (or `upload`).
        origin: String,
        /// Input format.
        format: crate::Format,
        /// The column the mapping asks for.
        column: String,
        /// The columns the file has.
        available: Vec<String>,
    },
    /// The CSV header row is missing or unusable.
    #[error("{origin}: CSV header: {message}")]
    CsvHeader {
        /// File name (or `upload`).
        origin: String,
        /// What is wrong, with a hint.
        message: String,
    },
    /// The Parquet file cannot be opened or decoded.
    #[error("{origin}: not a readable Parquet file: {source} (is it really Parquet?)")]
    Parquet {
        /// File name (or `upload`).
        origin: String,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
}

impl ImportError {
    /// Whether the error is an I/O failure (as opposed to a problem with the mapping or data).
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io { .. })
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn mapping(message: impl Into<String>) -> Self {
        Self::Mapping {
            path: None,
            message: message.into(),
        }
    }
}

fn missing_hint(format: crate::Format) -> &'static str {
    match format {
        crate::Format::Csv => "; check the mapping, the header row and the `delimiter`",
        _ => "; check the mapping",
    }
}

fn origin(path: Option<&Path>) -> String {
    path.map(|p| format!(" `{}`", p.display()))
        .unwrap_or_default()
}

/// A rejected row: its line number, why, and its raw text, as written to the reject file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RowError {
    /// Line of the row: the physical line where a CSV record or JSON line starts (the CSV
    /// header is line 1), or the row index + 1 in a Parquet file.
    pub line: u64,
    /// Why the row was rejected; several problems are joined with `; `.
    pub reason: String,
    /// The row as found in the file (CSV record, JSON line, or the mapped Parquet cells as JSON).
    pub raw: String,
}
