//! Errors of the lake.

use std::path::PathBuf;

/// Errors of compaction.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// Reading the event log or the engine failed.
    #[error(transparent)]
    Store(#[from] portrait_store::StoreError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building Arrow arrays failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// `_manifest.json` does not decode, or is of a newer version.
    #[error("{path}: {reason}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The lake does not belong to this store (its manifest says more events were compacted
    /// than the store holds): delete the lake directory, or call [`crate::rebuild`].
    #[error("the lake does not match the store: {0}")]
    Mismatch(String),
    /// Another compaction holds the lake.
    #[error("{0} is being compacted by another run")]
    Busy(PathBuf),
}

impl LakeError {
    /// Wraps an IO error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LakeError {
        let path = path.into();
        move |source| LakeError::Io { path, source }
    }
}
