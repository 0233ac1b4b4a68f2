//! Running an import into the engine: shared by `portrait import` and the upload endpoint.

use portrait_import::{RejectWriter, Rows};
use portrait_store::{Engine, StoreError};
use serde::Serialize;

/// Messages handed to the engine per call.
const CHUNK: usize = 20_000;

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    /// Rows read (good and bad).
    pub rows: u64,
    /// Messages newly stored.
    pub imported: u64,
    /// Messages already stored (a re-import), skipped.
    pub duplicates: u64,
    /// Rows rejected (see the reject file).
    pub rejected: u64,
    /// Whether the input ended early on a read error (the last reject says why).
    pub interrupted: bool,
    /// The first rejects as `(line, reason)`, for a quick look.
    pub first_rejects: Vec<(u64, String)>,
}

/// How many rejects [`ImportSummary::first_rejects`] keeps.
pub const FIRST_REJECTS: usize = 20;

/// Errors of an import run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine refused to store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reject file could not be written.
    #[error(transparent)]
    Import(#[from] portrait_import::ImportError),
}

/// Streams `rows` into the engine in chunks; bad rows go to `rejects`. `progress` gets the
/// bytes read so far after each chunk.
pub fn run_import(
    engine: &Engine,
    mut rows: Rows,
    rejects: &mut RejectWriter,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportSummary, RunError> {
    let mut summary = ImportSummary::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    let flush = |chunk: &mut Vec<_>, summary: &mut ImportSummary| -> Result<(), RunError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let report = engine.ingest(std::mem::take(chunk))?;
        summary.imported += report.accepted as u64;
        summary.duplicates += report.duplicates as u64;
        Ok(())
    };
    while let Some(row) = rows.next() {
        summary.rows += 1;
        match row {
            Ok((_, message)) => chunk.push(message),
            Err(reject) => {
                summary.rejected += 1;
                if summary.first_rejects.len() < FIRST_REJECTS {
                    summary
                        .first_rejects
                        .push((reject.line, reject.reason.clone()));
                }
                rejects.write(&reject)?;
            }
        }
        if chunk.len() >= CHUNK {
            flush(&mut chunk, &mut summary)?;
        }
        if summary.rows % 8192 == 0 {
            progress(rows.bytes_read());
        }
    }
    flush(&mut chunk, &mut summary)?;
    progress(rows.bytes_read());
    summary.interrupted = rows.interrupted();
    Ok(summary)
}
