//! Finding the master key of a data directory.
//!
//! In order: `PORTRAIT_MASTER_KEY` (64 hex characters); the key file given by `--key-file` or
//! `PORTRAIT_KEY_FILE`; `<DIR>.key` beside the data directory. When none exists, a new key is
//! generated into `<DIR>.key` (never inside the data directory) and the user is told.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use portrait_store::crypto::{Keyring, MasterKey};

/// The master key and where it came from.
pub fn master_key(data: &Path, key_file: Option<&Path>) -> Result<MasterKey> {
    if let Ok(text) = std::env::var("PORTRAIT_MASTER_KEY") {
        return MasterKey::parse(&text).context("PORTRAIT_MASTER_KEY");
    }
    let given: Option<PathBuf> = key_file
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PORTRAIT_KEY_FILE").map(PathBuf::from));
    if let Some(path) = given {
        return Ok(MasterKey::from_file(&path)?);
    }
    let path = MasterKey::default_path(&absolute(data));
    if path.exists() {
        return Ok(MasterKey::from_file(&path)?);
    }
    if data.join("keyring.json").exists() {
        anyhow::bail!(
            "{} is encrypted and its key was not found: set PORTRAIT_MASTER_KEY, or --key-file / PORTRAIT_KEY_FILE",
            data.display()
        );
    }
    let key = MasterKey::generate();
    key.write_new_file(&path)?;
    eprintln!(
        "Created the master key {} (mode 0600). Keep it safe and apart from backups of {}: without it the data cannot be read.",
        path.display(),
        data.display()
    );
    Ok(key)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The data directory's keyring (created on first use).
pub fn keyring(data: &Path, key_file: Option<&Path>) -> Result<Arc<Keyring>> {
    let master = master_key(data, key_file)?;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    Ok(Arc::new(Keyring::open_or_create(data, master)?))
}
