//! Errors of the tag service.

use std::path::Path;

/// What can go wrong in the tag service.
#[derive(Debug, thiserror::Error)]
pub enum TaggingError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored file does not parse.
    #[error("corrupt catalog: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// Definitions do not parse or type-check; the rendered diagnostics, one per line.
    #[error("{0}")]
    Definition(String),
    /// No tag of that name.
    #[error("unknown tag {0:?}")]
    UnknownTag(String),
    /// No such version of a tag.
    #[error("tag {0:?} has no version {1}")]
    UnknownVersion(String, u32),
    /// No audience of that name.
    #[error("unknown audience {0:?}")]
    UnknownAudience(String),
    /// No profile with that id.
    #[error("unknown profile {0}")]
    UnknownProfile(u32),
    /// The request contradicts the catalog's rules (archiving a tag in use, publishing over an
    /// unpublished dependency).
    #[error("{0}")]
    Conflict(String),
    /// The batch computation failed.
    #[error("compute: {0}")]
    Compute(String),
    /// The tag store failed.
    #[error("tag store: {0}")]
    TagStore(String),
    /// A bad argument (time, identifier type, format).
    #[error("{0}")]
    Invalid(String),
}

impl TaggingError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> TaggingError {
        TaggingError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
