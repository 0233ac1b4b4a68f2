//! The reject file: rejected rows as CSV (`line,reason,raw`).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{ImportError, RowError};

/// Writes rejected rows to a CSV file with the header `line,reason,raw`.
///
/// The file is created (truncating an old one) on the first reject, so a clean import leaves
/// no reject file behind.
#[derive(Debug)]
pub struct RejectWriter {
    path: PathBuf,
    writer: Option<csv::Writer<File>>,
    count: u64,
}

impl RejectWriter {
    /// A writer for `path`; nothing is created yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            writer: None,
            count: 0,
        }
    }

    /// The reject file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rejects written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends one reject, creating the file with its header first if needed.
    pub fn write(&mut self, reject: &RowError) -> Result<(), ImportError> {
        let error = |e: csv::Error| match e.into_kind() {
            csv::ErrorKind::Io(e) => ImportError::io("write", &self.path, e),
            other => ImportError::io(
                "write",
                &self.path,
                std::io::Error::other(format!("{other:?}")),
            ),
        };
        let writer = match &mut self.writer {
            Some(w) => w,
            None => {
                let file = File::create(&self.path)
                    .map_err(|e| ImportError::io("create", &self.path, e))?;
                let mut w = csv::Writer::from_writer(file);
                w.write_record(["line", "reason", "raw"]).map_err(error)?;
                self.writer.insert(w)
            }
        };
        let line = reject.line.to_string();
        writer
            .write_record([line.as_str(), &reject.reason, &reject.raw])
            .map_err(error)?;
        self.count += 1;
        Ok(())
    }

    /// Flushes the file and returns the number of rejects written.
    pub fn finish(mut self) -> Result<u64, ImportError> {
        if let Some(w) = &mut self.writer {
            w.flush()
                .map_err(|e| ImportError::io("write", &self.path, e))?;
        }
        Ok(self.count)
    }
}
