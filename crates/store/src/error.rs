//! Errors of the storage layer.

use std::path::PathBuf;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("{0} is in use by another Portrait process (a running `portrait serve`?); stop it or use the admin API")]
    Locked(PathBuf),
    /// A stored file does not decode.
    #[error("{path}: corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A configuration file is invalid.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A source name is taken or unknown, a key is taken, a kind unknown.
    #[error("{0}")]
    Source(String),
    /// An operator action on a profile was refused.
    #[error(transparent)]
    Profile(#[from] portrait_core::profile::ProfileError),
    /// A key is missing, wrong, or a record does not decrypt.
    #[error("{0}")]
    Crypto(String),
    /// The engine is too busy to take more work now.
    #[error("the engine is busy; retry shortly")]
    Busy,
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

impl StoreError {
    /// Wraps an IO error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
