//! Errors of the batch back ends.

/// Why a batch computation failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Reading the lake's files failed.
    #[error("io error at {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A Parquet file could not be decoded.
    #[error("parquet error in {path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow operation failed (a column of an unexpected type, a failed cast).
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The lake does not look like `crates/lake/LAYOUT.md` says (missing table, wrong column type).
    #[error("invalid lake: {0}")]
    InvalidLake(String),
    /// The plan uses something this back end (or SQL dialect) cannot express.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// DataFusion failed to plan or run the query.
    #[error("datafusion error: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A worker thread panicked.
    #[error("a kernel worker thread panicked")]
    WorkerPanicked,
}

impl BatchError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        BatchError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn parquet(path: &std::path::Path, source: parquet::errors::ParquetError) -> Self {
        BatchError::Parquet {
            path: path.display().to_string(),
            source,
        }
    }
}
