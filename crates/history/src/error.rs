//! Errors of the tag history.

use std::path::PathBuf;

/// Errors of [`crate::History`] and its queries.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// An IO operation failed on `path`.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `rename`, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A history file is truncated, fails its checksum, does not decode, or references a
    /// snapshot that is missing.
    #[error("corrupt history file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No snapshot of the tag at that date.
    #[error("no snapshot of tag {tag:?} at {date}")]
    NoSnapshot {
        /// The tag.
        tag: String,
        /// The date (YYYY-MM-DD).
        date: String,
    },
    /// The tag has no history at all.
    #[error("tag {0:?} has no history")]
    UnknownTag(String),
    /// The query needs a bool or enum (stage, bucket) tag, not a numeric one.
    #[error("tag {0:?} is numeric: transitions and paths need a bool, stage or bucket tag")]
    NotCategorical(String),
    /// A request parameter is invalid (dates, periods, limits).
    #[error("{0}")]
    Invalid(String),
    /// Computing values for a backfill failed.
    #[error("backfill: {0}")]
    Compute(String),
}

impl HistoryError {
    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> HistoryError {
        let path = path.to_owned();
        move |source| HistoryError::Io { op, path, source }
    }

    pub(crate) fn corrupt(path: &std::path::Path, reason: impl Into<String>) -> HistoryError {
        HistoryError::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}
