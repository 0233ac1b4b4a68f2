//! The tag and audience catalog: every definition with its versions, states, lineage and run
//! records, persisted as one JSON document (`DIR/tags/catalog.json`, written atomically).
//!
//! Rules the catalog keeps:
//! - A version is immutable. Applying a definition that differs from the latest version creates a
//!   new version in state `draft`; applying an identical one changes nothing.
//! - At most one version of a tag is `published`; publishing another supersedes it.
//! - A tag cannot be archived while a published tag or audience reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TaggingError;

/// The state of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Applied, not yet in use.
    Draft,
    /// The version computations and audiences use.
    Published,
    /// Was published; replaced by a later version.
    Superseded,
    /// Retired with its tag or audience.
    Archived,
}

/// Lineage derived from a definition: what it reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Event names.
    pub events: BTreeSet<String>,
    /// Source names.
    pub sources: BTreeSet<String>,
    /// Trait paths.
    pub traits: BTreeSet<String>,
    /// Event property paths.
    pub properties: BTreeSet<String>,
    /// Tags.
    pub tags: BTreeSet<String>,
}

/// One immutable version of a tag definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagVersion {
    /// 1, 2, …
    pub version: u32,
    /// The definition as YAML (one document).
    pub definition: String,
    /// Its state.
    pub state: VersionState,
    /// What it reads.
    pub lineage: Lineage,
    /// When it was applied (ms).
    pub created_at: i64,
    /// Who applied it.
    pub created_by: String,
    /// When it was published, if ever.
    pub published_at: Option<i64>,
}

/// The record of a computation of a tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When the run finished (ms).
    pub at: i64,
    /// The `as_of` of the run (ms).
    pub as_of: i64,
    /// Wall time of the whole run the tag was part of (ms).
    pub duration_ms: u64,
    /// Profiles with a non-null value (true for rules).
    pub population: u64,
    /// The version computed.
    pub version: u32,
}

/// A tag in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagEntry {
    /// The tag's name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<TagVersion>,
    /// The last computation.
    pub last_run: Option<RunRecord>,
    /// The last time an audience or an API read used the tag (ms).
    pub last_used: Option<i64>,
}

/// One immutable version of an audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudienceVersion {
    /// 1, 2, …
    pub version: u32,
    /// The audience expression.
    pub expression: String,
    /// Display title (Chinese is normal).
    pub title: String,
    /// Owning team or person.
    pub owner: String,
    /// What the audience is for.
    pub description: String,
    /// Its state.
    pub state: VersionState,
    /// Tags the expression reads.
    pub tags: BTreeSet<String>,
    /// When it was saved (ms).
    pub created_at: i64,
    /// Who saved it.
    pub created_by: String,
}

/// A size measurement of an audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizePoint {
    /// When measured (ms).
    pub at: i64,
    /// The `as_of` of the tags it was measured on (ms).
    pub as_of: i64,
    /// Members.
    pub size: u64,
}

/// An audience in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudienceEntry {
    /// The audience's name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<AudienceVersion>,
    /// Size after each refresh, oldest first (the last 1 000 kept).
    pub sizes: Vec<SizePoint>,
    /// The last time it was previewed or exported (ms).
    pub last_used: Option<i64>,
}

/// What applying a definition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A new draft version.
    Created(u32),
    /// Identical to the latest version; nothing changed.
    Unchanged(u32),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    tags: BTreeMap<String, TagEntry>,
    audiences: BTreeMap<String, AudienceEntry>,
}

/// The catalog, loaded in memory, saved on every change.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    data: OnDisk,
}

const MAX_SIZE_POINTS: usize = 1000;

impl TagEntry {
    /// The published version, if any.
    pub fn published(&self) -> Option<&TagVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.state == VersionState::Published)
    }

    /// The latest version.
    pub fn latest(&self) -> Option<&TagVersion> {
        self.versions.last()
    }

    /// A version by number.
    pub fn version(&self, version: u32) -> Option<&TagVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// True when every version is archived.
    pub fn is_archived(&self) -> bool {
        self.versions
            .last()
            .is_some_and(|v| v.state == VersionState::Archived)
    }
}

impl AudienceEntry {
    /// The published version, if any.
    pub fn published(&self) -> Option<&AudienceVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.state == VersionState::Published)
    }

    /// The latest version.
    pub fn latest(&self) -> Option<&AudienceVersion> {
        self.versions.last()
    }
}

impl Catalog {
    /// Opens the catalog at `path` (a JSON file), empty when the file does not exist.
    pub fn open(path: &Path) -> Result<Catalog, TaggingError> {
        let data = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| TaggingError::Corrupt(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OnDisk::default(),
            Err(e) => return Err(TaggingError::io(path, e)),
        };
        Ok(Catalog {
            path: path.to_path_buf(),
            data,
        })
    }

    fn save(&self) -> Result<(), TaggingError> {
        let bytes = serde_json::to_vec_pretty(&self.data)
            .map_err(|e| TaggingError::Corrupt(e.to_string()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| TaggingError::io(dir, e))?;
        }
        portrait_store::sources::write_atomic(&self.path, &bytes)
            .map_err(|e| TaggingError::Store(e.to_string()))
    }

    /// All tags, by name.
    pub fn tags(&self) -> impl Iterator<Item = &TagEntry> {
        self.data.tags.values()
    }

    /// One tag.
    pub fn tag(&self, name: &str) -> Option<&TagEntry> {
        self.data.tags.get(name)
    }

    /// All audiences, by name.
    pub fn audiences(&self) -> impl Iterator<Item = &AudienceEntry> {
        self.data.audiences.values()
    }

    /// One audience.
    pub fn audience(&self, name: &str) -> Option<&AudienceEntry> {
        self.data.audiences.get(name)
    }

    /// Records a definition of `name`: a new draft version unless identical to the latest.
    pub fn apply_tag(
        &mut self,
        name: &str,
        definition: &str,
        lineage: Lineage,
        by: &str,
        now: i64,
    ) -> Result<Applied, TaggingError> {
        let entry = self
            .data
            .tags
            .entry(name.to_string())
            .or_insert_with(|| TagEntry {
                name: name.to_string(),
                versions: Vec::new(),
                last_run: None,
                last_used: None,
            });
        if let Some(latest) = entry.versions.last() {
            if latest.definition == definition && latest.state != VersionState::Archived {
                return Ok(Applied::Unchanged(latest.version));
            }
        }
        let version = entry.versions.last().map_or(1, |v| v.version + 1);
        entry.versions.push(TagVersion {
            version,
            definition: definition.to_string(),
            state: VersionState::Draft,
            lineage,
            created_at: now,
            created_by: by.to_string(),
            published_at: None,
        });
        self.save()?;
        Ok(Applied::Created(version))
    }

    /// Publishes `version` of a tag (default: the latest); the previously published version becomes
    /// superseded. Every tag it reads must be published.
    pub fn publish_tag(
        &mut self,
        name: &str,
        version: Option<u32>,
        now: i64,
    ) -> Result<u32, TaggingError> {
        let entry = self
            .data
            .tags
            .get(name)
            .ok_or_else(|| TaggingError::UnknownTag(name.to_string()))?;
        let v = match version {
            Some(v) => entry
                .version(v)
                .ok_or_else(|| TaggingError::UnknownVersion(name.to_string(), v))?,
            None => entry
                .latest()
                .ok_or_else(|| TaggingError::UnknownTag(name.to_string()))?,
        };
        let number = v.version;
        for dep in &v.lineage.tags {
            let ok = self
                .data
                .tags
                .get(dep)
                .is_some_and(|t| t.published().is_some());
            if !ok {
                return Err(TaggingError::Conflict(format!(
                    "tag {name} reads tag {dep}, which is not published; publish {dep} first"
                )));
            }
        }
        let entry = self
            .data
            .tags
            .get_mut(name)
            .ok_or_else(|| TaggingError::UnknownTag(name.to_string()))?;
        for other in &mut entry.versions {
            if other.state == VersionState::Published && other.version != number {
                other.state = VersionState::Superseded;
            }
            if other.version == number {
                other.state = VersionState::Published;
                other.published_at = Some(now);
            }
        }
        self.save()?;
        Ok(number)
    }

    /// Published tags and audiences that read tag `name`.
    pub fn used_by(&self, name: &str) -> (Vec<String>, Vec<String>) {
        let tags = self
            .data
            .tags
            .values()
            .filter(|t| t.published().is_some_and(|v| v.lineage.tags.contains(name)))
            .map(|t| t.name.clone())
            .collect();
        let audiences = self
            .data
            .audiences
            .values()
            .filter(|a| a.published().is_some_and(|v| v.tags.contains(name)))
            .map(|a| a.name.clone())
            .collect();
        (tags, audiences)
    }

    /// Archives a tag: every version becomes archived. Refused while a published tag or audience
    /// reads it.
    pub fn archive_tag(&mut self, name: &str) -> Result<(), TaggingError> {
        let (tags, audiences) = self.used_by(name);
        if !tags.is_empty() || !audiences.is_empty() {
            let mut users: Vec<String> = tags.iter().map(|t| format!("tag {t}")).collect();
            users.extend(audiences.iter().map(|a| format!("audience {a}")));
            return Err(TaggingError::Conflict(format!(
                "tag {name} is used by {}; archive or change those first",
                users.join(", ")
            )));
        }
        let entry = self
            .data
            .tags
            .get_mut(name)
            .ok_or_else(|| TaggingError::UnknownTag(name.to_string()))?;
        for v in &mut entry.versions {
            v.state = VersionState::Archived;
        }
        self.save()
    }

    /// Records a computation of the listed tags.
    pub fn record_runs(&mut self, runs: &[(String, RunRecord)]) -> Result<(), TaggingError> {
        for (name, run) in runs {
            if let Some(entry) = self.data.tags.get_mut(name) {
                entry.last_run = Some(run.clone());
            }
        }
        self.save()
    }

    /// Marks tags and audiences as used now (an audience preview or export, a profile read).
    /// Saved lazily: the next change persists it.
    pub fn touch(&mut self, tags: &[String], audience: Option<&str>, now: i64) {
        for t in tags {
            if let Some(entry) = self.data.tags.get_mut(t) {
                entry.last_used = Some(now);
            }
        }
        if let Some(a) = audience.and_then(|a| self.data.audiences.get_mut(a)) {
            a.last_used = Some(now);
        }
    }

    /// Saves a new audience version (published at once unless `draft`); identical expressions and
    /// metadata change nothing.
    pub fn save_audience(
        &mut self,
        name: &str,
        mut version: AudienceVersion,
        draft: bool,
    ) -> Result<Applied, TaggingError> {
        for dep in &version.tags {
            let ok = self
                .data
                .tags
                .get(dep)
                .is_some_and(|t| t.published().is_some());
            if !ok && !draft {
                return Err(TaggingError::Conflict(format!(
                    "audience {name} reads tag {dep}, which is not published"
                )));
            }
        }
        let entry = self
            .data
            .audiences
            .entry(name.to_string())
            .or_insert_with(|| AudienceEntry {
                name: name.to_string(),
                versions: Vec::new(),
                sizes: Vec::new(),
                last_used: None,
            });
        if let Some(latest) = entry.versions.last() {
            if latest.expression == version.expression
                && latest.title == version.title
                && latest.owner == version.owner
                && latest.description == version.description
                && latest.state != VersionState::Archived
            {
                return Ok(Applied::Unchanged(latest.version));
            }
        }
        version.version = entry.versions.last().map_or(1, |v| v.version + 1);
        version.state = if draft {
            VersionState::Draft
        } else {
            VersionState::Published
        };
        if !draft {
            for other in &mut entry.versions {
                if other.state == VersionState::Published {
                    other.state = VersionState::Superseded;
                }
            }
        }
        let number = version.version;
        entry.versions.push(version);
        self.save()?;
        Ok(Applied::Created(number))
    }

    /// Archives an audience.
    pub fn archive_audience(&mut self, name: &str) -> Result<(), TaggingError> {
        let entry = self
            .data
            .audiences
            .get_mut(name)
            .ok_or_else(|| TaggingError::UnknownAudience(name.to_string()))?;
        for v in &mut entry.versions {
            v.state = VersionState::Archived;
        }
        self.save()
    }

    /// Records the sizes of audiences after a refresh.
    pub fn record_sizes(&mut self, sizes: &[(String, SizePoint)]) -> Result<(), TaggingError> {
        for (name, point) in sizes {
            if let Some(a) = self.data.audiences.get_mut(name) {
                a.sizes.push(point.clone());
                if a.sizes.len() > MAX_SIZE_POINTS {
                    let cut = a.sizes.len() - MAX_SIZE_POINTS;
                    a.sizes.drain(..cut);
                }
            }
        }
        self.save()
    }

    /// Persists pending `touch` marks.
    pub fn flush(&self) -> Result<(), TaggingError> {
        self.save()
    }
}
