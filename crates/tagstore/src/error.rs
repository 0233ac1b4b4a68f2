//! Errors of the tag store.

use std::path::PathBuf;

/// Errors of [`crate::TagStore`] and its persistence.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An IO operation failed on `path`.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`write`, `rename`, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A tag file is truncated, fails its checksum or does not decode.
    #[error("corrupt tag file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory has tag files but no `universe.bin`.
    #[error("missing {0}")]
    MissingUniverse(PathBuf),
    /// Two tag files (or two tags) carry the same tag name / file name.
    #[error("tag {name:?}: two files or two names collide ({path})")]
    Collision {
        /// The tag.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// No tag of that name.
    #[error("unknown tag {0:?}")]
    UnknownTag(String),
    /// An id appears under two values of an enum tag.
    #[error("enum value {value:?} holds id {id}, which an earlier value already holds")]
    EnumOverlap {
        /// The later value.
        value: String,
        /// The first id found in both.
        id: u32,
    },
}

/// Errors of [`crate::select()`] and [`crate::count()`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// The expression cannot be answered from bitmaps and columns alone (a trait comparison,
    /// arithmetic over tags, …); a per-profile evaluation must handle it.
    #[error("cannot select with bitmaps: {0}")]
    Unsupported(String),
    /// `Expr::Tag(i)` with `i` past the end of the tag name list.
    #[error("tag index {0} out of range")]
    BadTagIndex(usize),
    /// The tag name is not in the store.
    #[error("unknown tag {0:?}")]
    UnknownTag(String),
}
