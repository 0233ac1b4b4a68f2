//! Sources: named channels with write keys, stored in `DIR/sources.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use portrait_core::SourceId;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// The channel a source represents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Member CRM.
    Crm,
    /// WeChat official accounts and mini-programs.
    Wechat,
    /// E-commerce platforms (Tmall, JD).
    Ecommerce,
    /// Store point of sale.
    Pos,
    /// The brand's app.
    App,
    /// The brand's web site.
    Web,
    /// Marketing automation.
    Ma,
    /// Customer service.
    Service,
    /// Anything else.
    Other,
}

impl SourceKind {
    /// All kinds, for help texts.
    pub const ALL: &'static [&'static str] = &[
        "crm",
        "wechat",
        "ecommerce",
        "pos",
        "app",
        "web",
        "ma",
        "service",
        "other",
    ];

    /// Parses a kind name.
    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase())).map_err(|_| {
            StoreError::Source(format!(
                "unknown source kind `{text}`; expected one of {}",
                Self::ALL.join(", ")
            ))
        })
    }
}

/// One source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Dense id stored with every event.
    pub id: SourceId,
    /// Unique name.
    pub name: String,
    /// Channel kind.
    pub kind: SourceKind,
    /// Keys that may ingest into this source.
    pub write_keys: Vec<String>,
    /// Trait priority: a higher-priority source's trait value wins over a later one from a
    /// lower-priority source.
    #[serde(default)]
    pub priority: i32,
    /// Creation time (ms).
    pub created_at: i64,
}

/// All sources, persisted atomically on every change.
#[derive(Debug, Default)]
pub struct SourceRegistry {
    path: PathBuf,
    sources: Vec<Source>,
    by_key: HashMap<String, SourceId>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    sources: Vec<Source>,
}

impl SourceRegistry {
    /// Loads `DIR/sources.json`, or starts empty.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("sources.json");
        let sources = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<OnDisk>(&bytes)
                    .map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
                    .sources
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        let mut reg = Self {
            path,
            sources,
            by_key: HashMap::new(),
        };
        reg.reindex();
        Ok(reg)
    }

    fn reindex(&mut self) {
        self.by_key = self
            .sources
            .iter()
            .flat_map(|s| s.write_keys.iter().map(move |k| (k.clone(), s.id)))
            .collect();
    }

    /// All sources.
    pub fn list(&self) -> &[Source] {
        &self.sources
    }

    /// The source a write key belongs to.
    pub fn by_key(&self, key: &str) -> Option<&Source> {
        self.by_key.get(key).and_then(|id| self.get(*id))
    }

    /// A source by id.
    pub fn get(&self, id: SourceId) -> Option<&Source> {
        self.sources.iter().find(|s| s.id == id)
    }

    /// A source by name.
    pub fn by_name(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The name of a source id (`?` for unknown ids).
    pub fn name(&self, id: SourceId) -> &str {
        self.get(id).map_or("?", |s| s.name.as_str())
    }

    /// Adds a source. `write_key` chooses the key (for scripts and tests); otherwise one is
    /// generated. Returns the new source.
    pub fn add(&mut self, name: &str, kind: SourceKind, write_key: Option<&str>) -> Result<Source> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || "_-.".contains(c));
        if !valid {
            return Err(StoreError::Source(format!(
                "source name `{name}` must be 1-64 letters, digits, `_`, `-` or `.`"
            )));
        }
        if self.by_name(name).is_some() {
            return Err(StoreError::Source(format!(
                "source `{name}` already exists"
            )));
        }
        let key = self.new_key(write_key)?;
        let id = self.sources.iter().map(|s| s.id + 1).max().unwrap_or(1);
        let source = Source {
            id,
            name: name.to_string(),
            kind,
            write_keys: vec![key],
            priority: 0,
            created_at: portrait_core::time::now(),
        };
        self.sources.push(source.clone());
        self.save()?;
        Ok(source)
    }

    /// Adds another write key to a source; returns it.
    pub fn add_key(&mut self, name: &str, write_key: Option<&str>) -> Result<String> {
        let key = self.new_key(write_key)?;
        let source = self
            .sources
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| StoreError::Source(format!("no source named `{name}`")))?;
        source.write_keys.push(key.clone());
        self.save()?;
        Ok(key)
    }

    /// Sets a source's trait priority.
    pub fn set_priority(&mut self, name: &str, priority: i32) -> Result<Source> {
        let source = self
            .sources
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| StoreError::Source(format!("no source named `{name}`")))?;
        source.priority = priority;
        let out = source.clone();
        self.save()?;
        Ok(out)
    }

    fn new_key(&self, chosen: Option<&str>) -> Result<String> {
        let key = match chosen {
            Some(k) if k.len() < 8 || k.contains(':') || k.chars().any(char::is_whitespace) => {
                return Err(StoreError::Source(
                    "a write key needs at least 8 characters, without `:` or spaces".into(),
                ))
            }
            Some(k) => k.to_string(),
            None => format!("wk_{:032x}", rand::random::<u128>()),
        };
        if self.by_key.contains_key(&key) {
            return Err(StoreError::Source(
                "that write key is already in use".into(),
            ));
        }
        Ok(key)
    }

    fn save(&mut self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            sources: self.sources.clone(),
        })
        .map_err(|e| StoreError::Source(e.to_string()))?;
        write_atomic(&self.path, &bytes)?;
        self.reindex();
        Ok(())
    }
}

/// Writes a file atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(StoreError::io(&tmp))?;
    f.write_all(bytes).map_err(StoreError::io(&tmp))?;
    f.sync_all().map_err(StoreError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(StoreError::io(path))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_persist_and_find_by_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = SourceRegistry::open(dir.path()).expect("open");
        let crm = reg
            .add("crm", SourceKind::Crm, Some("crm-key-123"))
            .expect("add");
        let app = reg.add("app", SourceKind::App, None).expect("add");
        assert!(app.write_keys[0].starts_with("wk_"));
        assert!(reg.add("crm", SourceKind::Crm, None).is_err());
        assert!(reg
            .add("pos", SourceKind::Pos, Some("crm-key-123"))
            .is_err());
        assert!(reg.add("bad name", SourceKind::Pos, None).is_err());
        let again = SourceRegistry::open(dir.path()).expect("reopen");
        assert_eq!(again.by_key("crm-key-123").map(|s| s.id), Some(crm.id));
        assert_eq!(again.list().len(), 2);
        assert!(SourceKind::parse("tv").is_err());
        assert_eq!(
            SourceKind::parse("WeChat").expect("kind"),
            SourceKind::Wechat
        );
    }
}
