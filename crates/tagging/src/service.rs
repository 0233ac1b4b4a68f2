//! The tag service of one data directory: definitions in the catalog, computations over the
//! lake, values in the tag store, audiences over them.
//!
//! Files under `DIR/tags/`: `catalog.json` (definitions, versions, run records, audience sizes),
//! `store/` (one checksummed file per tag, see `portrait_tagstore::persist`), `state.json` (the
//! `as_of` of the values in the store).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use portrait_batch::kernel::{self, KernelOptions, Progress};
use portrait_store::Engine;
use portrait_tags::compile::{compile, compile_audience, Compiled, Known};
use portrait_tags::def::{parse_defs, to_yaml, Refresh, TagDef, TagKindDef};
use portrait_tags::diag::Diagnostic;
use portrait_tags::eval::{evaluate_population, Population, TagColumn};
use portrait_tags::ir::{AggFunc, Aggregate, Expr, Plan, ProfileField, TagBody, Window};
use portrait_tags::value::{Type, Value};
use portrait_tagstore::{RoaringBitmap, Snapshot, StoredValue, TagData, TagStore};
use serde::{Deserialize, Serialize};

use crate::catalog::{
    Applied, AudienceVersion, Catalog, Lineage, RunRecord, SizePoint, VersionState,
};
use crate::error::TaggingError;
use crate::profiles::{read_profiles, Traits};
use crate::schedule::Cron;

/// Which batch back end computes the aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchEngine {
    /// The fused kernel over the Parquet lake (dense-id arrays, one scan).
    #[default]
    Kernel,
    /// The same plan as one SQL query on DataFusion.
    DataFusion,
}

impl BatchEngine {
    /// A back end by name: `kernel` or `datafusion`.
    pub fn parse(name: &str) -> Option<BatchEngine> {
        match name {
            "kernel" => Some(BatchEngine::Kernel),
            "datafusion" => Some(BatchEngine::DataFusion),
            _ => None,
        }
    }
}

/// What to compute.
#[derive(Debug, Clone, Default)]
pub struct ComputeOptions {
    /// The instant (ms); default now.
    pub as_of: Option<i64>,
    /// Only these tags (and what they read); default every published tag.
    pub tags: Option<Vec<String>>,
    /// The back end.
    pub engine: BatchEngine,
    /// Compact the log into the lake first (default true).
    pub skip_compaction: bool,
}

/// What a computation did.
#[derive(Debug, Clone, Serialize)]
pub struct ComputeReport {
    /// The instant computed (ms).
    pub as_of: i64,
    /// Tags computed, with their population and what changed.
    pub tags: Vec<TagRun>,
    /// Live profiles.
    pub profiles: u64,
    /// Events scanned.
    pub events_scanned: u64,
    /// Distinct aggregates computed in the one scan.
    pub aggregates: usize,
    /// Wall time (ms).
    pub duration_ms: u64,
    /// Saved audiences re-measured: name and size.
    pub audiences: Vec<(String, u64)>,
}

/// One tag of a computation.
#[derive(Debug, Clone, Serialize)]
pub struct TagRun {
    /// The tag.
    pub name: String,
    /// The version computed.
    pub version: u32,
    /// Profiles with a value (true for rules).
    pub population: u64,
    /// Profiles that gained the tag or a value since the last computation.
    pub gained: u64,
    /// Profiles that lost it.
    pub lost: u64,
}

/// What applying a file did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// Per tag: name, version, and whether it was created (false: unchanged).
    pub tags: Vec<(String, u32, bool)>,
    /// Tags published by this apply.
    pub published: Vec<String>,
    /// Warnings, rendered (unknown events, traits …).
    pub warnings: Vec<String>,
}

/// The impact of publishing a version: how the tag's members change, and who depends on it.
#[derive(Debug, Clone, Serialize)]
pub struct Impact {
    /// The tag.
    pub name: String,
    /// The version previewed.
    pub version: u32,
    /// The instant it was computed at.
    pub as_of: i64,
    /// Profiles with a value under the new version.
    pub population: u64,
    /// Profiles that would gain the tag (or change to a value).
    pub gained: u64,
    /// Profiles that would lose it.
    pub lost: u64,
    /// Published tags that read it.
    pub dependent_tags: Vec<String>,
    /// Published audiences that read it.
    pub dependent_audiences: Vec<String>,
}

/// An audience to save (also the body of `POST /api/v1/audiences`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceSpec {
    /// Name, `[a-z][a-z0-9_]*`.
    pub name: String,
    /// The expression.
    pub expression: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Owner.
    #[serde(default)]
    pub owner: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// An audience preview.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Members.
    pub count: u64,
    /// The first members' ids.
    pub sample: Vec<u32>,
    /// Live profiles (the universe).
    pub universe: u64,
    /// The `as_of` of the tag values used (ms), if computed.
    pub as_of: Option<i64>,
    /// Tags the expression reads.
    pub tags: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct StoreState {
    as_of: Option<i64>,
    computed_at: Option<i64>,
}

/// The tag service.
pub struct Tagging {
    engine: Arc<Engine>,
    dir: PathBuf,
    lake: PathBuf,
    catalog: Mutex<Catalog>,
    store: TagStore,
    state: Mutex<StoreState>,
    compute_lock: Mutex<()>,
    compact_lock: Mutex<()>,
    /// Identity fingerprint (live profiles, id space, unmerges) and time of the last sync.
    identity_seen: Mutex<((u64, u32, u64), i64)>,
}

/// How often the scheduler recomputes `refresh: realtime` tags in batch (their bitmaps in the
/// tag store; live values come from the real-time engine). Each batch compacts the log first,
/// which is heavy under sustained ingest, so not every minute.
pub const REALTIME_BATCH_MS: i64 = 15 * 60_000;

fn diagnostics(d: &[Diagnostic]) -> TaggingError {
    TaggingError::Definition(d.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n"))
}

/// Refuses a `refresh: realtime` definition the real-time engine cannot maintain exactly
/// ([`portrait_tags::incremental::check`]), naming the part that prevents it.
fn refuse_non_incremental(
    plan: &Plan,
    all: &[TagDef],
    defs: &[TagDef],
    file: &str,
) -> Result<(), TaggingError> {
    let realtime: BTreeSet<&str> = all
        .iter()
        .filter(|d| d.refresh == Refresh::Realtime)
        .map(|d| d.name.as_str())
        .collect();
    for def in defs.iter().filter(|d| d.refresh == Refresh::Realtime) {
        let Some(i) = plan.tag_index(&def.name) else {
            continue;
        };
        if let Err(why) = portrait_tags::incremental::check(plan, i, &|n| realtime.contains(n)) {
            return Err(TaggingError::Definition(format!(
                "{file}: tag `{}` cannot be `refresh: realtime`: {why}",
                def.name
            )));
        }
    }
    Ok(())
}

fn lineage_of(plan: &Plan, name: &str) -> Lineage {
    plan.tags
        .iter()
        .find(|t| t.name == name)
        .map_or_else(Lineage::default, |t| Lineage {
            events: t.reads.events.clone(),
            sources: t.reads.sources.clone(),
            traits: t.reads.traits.clone(),
            properties: t.reads.properties.clone(),
            tags: t.reads.tags.clone(),
        })
}

/// The type of a stored tag as audience expressions see it.
fn stored_type(d: &TagData) -> Type {
    match d {
        TagData::Bool(_) => Type::Bool,
        TagData::Enum(_) => Type::Str,
        TagData::Numeric(_) => Type::Number,
    }
}

impl Tagging {
    /// Opens the tag service of `engine`'s data directory.
    pub fn open(engine: Arc<Engine>) -> Result<Tagging, TaggingError> {
        let data = engine.dir().to_path_buf();
        let dir = tags_dir(&data);
        std::fs::create_dir_all(&dir).map_err(|e| TaggingError::io(&dir, e))?;
        let catalog = Catalog::open(&dir.join("catalog.json"))?;
        let store_dir = dir.join("store");
        let store = if store_dir.exists() {
            TagStore::open(&store_dir).map_err(|e| TaggingError::TagStore(e.to_string()))?
        } else {
            TagStore::new()
        };
        let state = match std::fs::read(dir.join("state.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => StoreState::default(),
        };
        Ok(Tagging {
            lake: portrait_lake::lake_dir(&data),
            engine,
            dir,
            catalog: Mutex::new(catalog),
            store,
            state: Mutex::new(state),
            compute_lock: Mutex::new(()),
            compact_lock: Mutex::new(()),
            identity_seen: Mutex::new(((0, 0, 0), 0)),
        })
    }

    /// Compacts new events into the lake. Runs of this process are serialised, so a scheduled
    /// compaction and a computation never race for the lake's lock.
    pub fn compact(&self) -> Result<portrait_lake::CompactReport, TaggingError> {
        let _one = self.compact_lock.lock();
        portrait_lake::compact(&self.engine, &mut |_| {})
            .map_err(|e| TaggingError::Compute(e.to_string()))
    }

    /// Runs `f` while no compaction or computation of this process touches the lake (e.g. a
    /// retention run, which changes the log and then purges the lake).
    pub fn with_lake_lock<T>(&self, f: impl FnOnce() -> T) -> T {
        let _one = self.compact_lock.lock();
        f()
    }

    /// Computes the tags due by their refresh policy (none due: nothing runs).
    pub fn refresh_due(&self) -> Result<Option<ComputeReport>, TaggingError> {
        let due = self.due(portrait_core::time::now())?;
        if due.is_empty() {
            return Ok(None);
        }
        let opts = ComputeOptions {
            tags: Some(due),
            ..ComputeOptions::default()
        };
        self.compute(&opts, &mut |_| {}).map(Some)
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Runs `f` with the catalog.
    pub fn with_catalog<T>(&self, f: impl FnOnce(&Catalog) -> T) -> T {
        f(&self.catalog.lock())
    }

    /// The current tag values.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.store.snapshot()
    }

    /// The `as_of` of the stored values, if any computation ran.
    pub fn as_of(&self) -> Option<i64> {
        self.state.lock().as_of
    }

    pub(crate) fn known(&self) -> Known {
        let sources = self
            .engine
            .sources()
            .list()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        Known {
            sources,
            ..Known::default()
        }
    }

    /// [`Tagging::known`] plus the event names and traits seen in the lake (a sample), so
    /// applying a definition warns about names that were never ingested.
    fn known_with_vocabulary(&self) -> Known {
        let (events, traits) = crate::profiles::vocabulary(&self.lake, 64);
        Known {
            events,
            traits,
            ..self.known()
        }
    }

    /// Published definitions (the latest published version of each tag), parsed.
    pub(crate) fn published_defs(
        &self,
        except: &BTreeSet<String>,
    ) -> Result<Vec<(TagDef, u32)>, TaggingError> {
        let cat = self.catalog.lock();
        let mut out = Vec::new();
        for t in cat.tags() {
            if except.contains(&t.name) {
                continue;
            }
            if let Some(v) = t.published() {
                let defs = parse_defs(&v.definition, &format!("catalog:{}@{}", t.name, v.version))
                    .map_err(|d| diagnostics(&d))?;
                out.extend(defs.into_iter().map(|d| (d, v.version)));
            }
        }
        Ok(out)
    }

    /// What the real-time engine maintains: the published `refresh: realtime` tags compiled
    /// into one plan, and the published audiences whose expressions read only those tags and
    /// traits, compiled against it (`Expr::Tag(i)` = the plan's tag `i`).
    pub fn realtime_definitions(&self) -> Result<(Plan, Vec<(String, Expr)>), TaggingError> {
        let defs: Vec<TagDef> = self
            .published_defs(&BTreeSet::new())?
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| d.refresh == Refresh::Realtime)
            .collect();
        let known = Known {
            time_zone: portrait_lake::TIME_ZONE,
            ..Known::default()
        };
        let Compiled { plan, .. } = compile(&defs, &known).map_err(|d| diagnostics(&d))?;
        let tags: Vec<(String, Type)> = plan
            .tags
            .iter()
            .map(|t| (t.name.clone(), t.value_type))
            .collect();
        let audiences = self
            .published_audiences()
            .into_iter()
            .filter_map(|(name, text)| {
                compile_audience(&text, &tags, plan.time_zone)
                    .ok()
                    .map(|e| (name, e))
            })
            .collect();
        Ok((plan, audiences))
    }

    /// Applies a YAML file of definitions: each changed tag gets a new draft version (published
    /// at once with `publish`). The whole file is checked together with the published tags
    /// first; on any error nothing is recorded.
    pub fn apply(
        &self,
        text: &str,
        file: &str,
        by: &str,
        publish: bool,
    ) -> Result<ApplyReport, TaggingError> {
        self.apply_with(text, file, by, publish, &[])
    }

    /// [`Tagging::apply`] with parameter overrides for a file that declares `params:`
    /// (`portrait tags apply --set dormant_days=45`).
    pub fn apply_with(
        &self,
        text: &str,
        file: &str,
        by: &str,
        publish: bool,
        overrides: &[(String, String)],
    ) -> Result<ApplyReport, TaggingError> {
        let defs = portrait_tags::def::parse_defs_with(text, file, overrides)
            .map_err(|d| diagnostics(&d))?;
        let names: BTreeSet<String> = defs.iter().map(|d| d.name.clone()).collect();
        let mut all: Vec<TagDef> = self
            .published_defs(&names)?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        all.extend(defs.iter().cloned());
        let Compiled { plan, warnings } =
            compile(&all, &self.known_with_vocabulary()).map_err(|d| diagnostics(&d))?;
        refuse_non_incremental(&plan, &all, &defs, file)?;
        let now = portrait_core::time::now();
        let mut report = ApplyReport {
            tags: Vec::new(),
            published: Vec::new(),
            warnings: warnings.iter().map(|w| w.render()).collect(),
        };
        let applied: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        report.warnings.extend(crate::retention::apply_warnings(
            self.engine.dir(),
            &plan,
            &applied,
        ));
        let mut cat = self.catalog.lock();
        for def in &defs {
            let yaml = to_yaml(std::slice::from_ref(def));
            let applied = cat.apply_tag(&def.name, &yaml, lineage_of(&plan, &def.name), by, now)?;
            let (v, created) = match applied {
                Applied::Created(v) => (v, true),
                Applied::Unchanged(v) => (v, false),
            };
            report.tags.push((def.name.clone(), v, created));
        }
        if publish {
            // Publish in plan order so dependencies go first.
            for t in &plan.tags {
                if let Some((_, v, _)) = report.tags.iter().find(|(n, _, _)| *n == t.name) {
                    let already = cat
                        .tag(&t.name)
                        .and_then(|e| e.published())
                        .is_some_and(|p| p.version == *v);
                    if !already {
                        cat.publish_tag(&t.name, Some(*v), now)?;
                        report.published.push(t.name.clone());
                    }
                }
            }
        }
        Ok(report)
    }

    /// Publishes a version (default the latest) of a tag.
    pub fn publish(&self, name: &str, version: Option<u32>) -> Result<u32, TaggingError> {
        self.catalog
            .lock()
            .publish_tag(name, version, portrait_core::time::now())
    }

    /// Archives a tag (refused while something published uses it) and drops its values.
    pub fn archive(&self, name: &str) -> Result<(), TaggingError> {
        self.catalog.lock().archive_tag(name)?;
        self.store.remove_tag(name);
        self.save_store()
    }

    fn save_store(&self) -> Result<(), TaggingError> {
        self.store
            .save(&self.dir.join("store"))
            .map_err(|e| TaggingError::TagStore(e.to_string()))?;
        Ok(())
    }

    /// Compiles the published tags (or `only` and what they read) into one plan, with the
    /// version of each tag.
    pub fn plan(
        &self,
        only: Option<&[String]>,
    ) -> Result<(Plan, BTreeMap<String, u32>), TaggingError> {
        let published = self.published_defs(&BTreeSet::new())?;
        if let Some(only) = only {
            for n in only {
                if !published.iter().any(|(d, _)| &d.name == n) {
                    return Err(TaggingError::UnknownTag(n.clone()));
                }
            }
        }
        let versions: BTreeMap<String, u32> = published
            .iter()
            .map(|(d, v)| (d.name.clone(), *v))
            .collect();
        let defs: Vec<TagDef> = published.into_iter().map(|(d, _)| d).collect();
        let Compiled { plan, .. } = compile(&defs, &self.known()).map_err(|d| diagnostics(&d))?;
        let plan = match only {
            Some(only) => restrict(&plan, only, &defs, &self.known())?,
            None => plan,
        };
        Ok((plan, versions))
    }

    /// Computes tags at `as_of` over the lake and stores their values.
    pub fn compute(
        &self,
        opts: &ComputeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ComputeReport, TaggingError> {
        let _running = self.compute_lock.lock();
        let started = Instant::now();
        let as_of = opts.as_of.unwrap_or_else(portrait_core::time::now);
        if !opts.skip_compaction {
            self.compact()?;
        }
        let (plan, versions) = self.plan(opts.tags.as_deref())?;
        let computed = self.evaluate(&plan, as_of, opts.engine, progress)?;
        let mut runs = Vec::new();
        let mut report_tags = Vec::new();
        self.store.set_universe(computed.universe.clone());
        for (col, tag) in computed.columns.iter().zip(&plan.tags) {
            if matches!(tag.body, TagBody::External) {
                continue;
            }
            let data = to_tag_data(tag.value_type, &tag.body, &computed.ids, &col.values)?;
            let population = data.present().len();
            let (gained, lost) = self.store.diff(&tag.name, &data);
            self.store.set_tag(&tag.name, data);
            let version = versions.get(&tag.name).copied().unwrap_or(0);
            report_tags.push(TagRun {
                name: tag.name.clone(),
                version,
                population,
                gained,
                lost,
            });
            runs.push((tag.name.clone(), population, version));
        }
        self.save_store()?;
        let now = portrait_core::time::now();
        let duration_ms = started.elapsed().as_millis() as u64;
        {
            let mut st = self.state.lock();
            st.as_of = Some(as_of);
            st.computed_at = Some(now);
            let bytes =
                serde_json::to_vec(&*st).map_err(|e| TaggingError::Corrupt(e.to_string()))?;
            portrait_store::sources::write_atomic(&self.dir.join("state.json"), &bytes)
                .map_err(|e| TaggingError::Store(e.to_string()))?;
        }
        let records: Vec<(String, RunRecord)> = runs
            .into_iter()
            .map(|(name, population, version)| {
                (
                    name,
                    RunRecord {
                        at: now,
                        as_of,
                        duration_ms,
                        population,
                        version,
                    },
                )
            })
            .collect();
        let audiences = self.measure_audiences(as_of, now)?;
        self.catalog.lock().record_runs(&records)?;
        Ok(ComputeReport {
            as_of,
            tags: report_tags,
            profiles: computed.universe.len(),
            events_scanned: computed.events_scanned,
            aggregates: computed.aggregates,
            duration_ms: started.elapsed().as_millis() as u64,
            audiences,
        })
    }

    /// Evaluates `plan` at `as_of` without storing anything (externals from the tag store).
    fn evaluate(
        &self,
        plan: &Plan,
        as_of: i64,
        engine: BatchEngine,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Computed, TaggingError> {
        let snap = self.store.snapshot();
        let externals = |tag: usize, id: u32| {
            plan.tags
                .get(tag)
                .and_then(|t| snap.value_of(&t.name, id))
                .map_or(Value::Null, stored_to_value)
        };
        evaluate_lake(&self.lake, plan, as_of, engine, &externals, progress)
    }

    /// The impact of publishing `version` (default the latest) of a tag: computed over the lake
    /// at the stored values' `as_of` (or now) and compared with the stored values.
    pub fn impact(&self, name: &str, version: Option<u32>) -> Result<Impact, TaggingError> {
        let (definition, number) = {
            let cat = self.catalog.lock();
            let entry = cat
                .tag(name)
                .ok_or_else(|| TaggingError::UnknownTag(name.into()))?;
            let v = match version {
                Some(v) => entry
                    .version(v)
                    .ok_or_else(|| TaggingError::UnknownVersion(name.into(), v))?,
                None => entry
                    .latest()
                    .ok_or_else(|| TaggingError::UnknownTag(name.into()))?,
            };
            (v.definition.clone(), v.version)
        };
        let mut except = BTreeSet::new();
        except.insert(name.to_string());
        let mut defs: Vec<TagDef> = self
            .published_defs(&except)?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let new = parse_defs(&definition, name).map_err(|d| diagnostics(&d))?;
        defs.extend(new.iter().cloned());
        let Compiled { plan, .. } = compile(&defs, &self.known()).map_err(|d| diagnostics(&d))?;
        let plan = restrict(&plan, &[name.to_string()], &defs, &self.known())?;
        let as_of = self.as_of().unwrap_or_else(portrait_core::time::now);
        let computed = self.evaluate(&plan, as_of, BatchEngine::Kernel, &mut |_| {})?;
        let pos = plan
            .tag_index(name)
            .ok_or_else(|| TaggingError::UnknownTag(name.into()))?;
        let tag = &plan.tags[pos];
        let data = to_tag_data(
            tag.value_type,
            &tag.body,
            &computed.ids,
            &computed.columns[pos].values,
        )?;
        let (gained, lost) = self.store.diff(name, &data);
        let (dependent_tags, dependent_audiences) = self.catalog.lock().used_by(name);
        Ok(Impact {
            name: name.into(),
            version: number,
            as_of,
            population: data.present().len(),
            gained,
            lost,
            dependent_tags,
            dependent_audiences,
        })
    }

    /// The names and types of stored tags (what audience expressions can name).
    fn audience_tags(&self, snap: &Snapshot) -> Vec<(String, Type)> {
        snap.tag_names()
            .filter_map(|n| snap.tag(n).map(|d| (n.to_string(), stored_type(d))))
            .collect()
    }

    /// Compiles an audience expression against the stored tags.
    pub fn audience_expr(
        &self,
        text: &str,
    ) -> Result<(Expr, Vec<String>, Arc<Snapshot>), TaggingError> {
        let snap = self.store.snapshot();
        let tags = self.audience_tags(&snap);
        let expr =
            compile_audience(text, &tags, portrait_lake::TIME_ZONE).map_err(|d| diagnostics(&d))?;
        let names = tags.into_iter().map(|(n, _)| n).collect();
        Ok((expr, names, snap))
    }

    /// Keeps the stored tags consistent with identity changes between computations: ids merged
    /// away (or erased) since leave every bitmap and column, so a merged person is never counted
    /// twice. Runs when the identity fingerprint changed (at most every 10 s above 1M
    /// profiles); the survivor's values are recomputed by the next computation.
    pub fn sync_identity(&self) {
        let now = portrait_core::time::now();
        let fingerprint = {
            let st = self.engine.state();
            (st.book.live() as u64, st.book.id_space(), st.stats.unmerges)
        };
        let universe = self.store.snapshot().universe().clone();
        {
            // A sync costs a pass over the universe: on large stores, at most every 10 s.
            let mut seen = self.identity_seen.lock();
            let throttled = universe.len() > 1_000_000 && now - seen.1 < 10_000;
            if seen.0 == fingerprint || throttled {
                return;
            }
            *seen = (fingerprint, now);
        }
        let gone: RoaringBitmap = {
            let st = self.engine.state();
            universe
                .iter()
                .filter(|id| st.book.get(*id).is_none_or(|p| p.id != *id))
                .collect()
        };
        if !gone.is_empty() {
            self.store.remove_ids(&gone);
            tracing::info!(ids = gone.len(), "retired ids left the tag store");
        }
    }

    /// The members of an audience expression.
    pub fn select(&self, text: &str) -> Result<(RoaringBitmap, Vec<String>), TaggingError> {
        self.audience_read(text, portrait_tagstore::select, |members| members)
    }

    /// Answers an audience expression with `f` over the tag store; expressions the bitmaps
    /// cannot answer (traits, arithmetic) fall back to per-profile evaluation, whose members
    /// `from_members` turns into the same kind of answer. Records the read in the catalog.
    fn audience_read<T>(
        &self,
        text: &str,
        f: impl FnOnce(&Snapshot, &Expr, &[String]) -> Result<T, portrait_tagstore::SelectError>,
        from_members: impl FnOnce(RoaringBitmap) -> T,
    ) -> Result<(T, Vec<String>), TaggingError> {
        self.sync_identity();
        let (expr, names, snap) = self.audience_expr(text)?;
        let answer = match f(&snap, &expr, &names) {
            Ok(m) => m,
            Err(portrait_tagstore::SelectError::Unsupported(_)) => {
                from_members(self.select_per_profile(&expr, &names, &snap)?)
            }
            Err(e) => return Err(TaggingError::Invalid(e.to_string())),
        };
        let used = used_tags(&expr, &names);
        self.catalog
            .lock()
            .touch(&used, None, portrait_core::time::now());
        Ok((answer, used))
    }

    /// Per-profile evaluation for expressions the bitmaps cannot answer (traits, arithmetic).
    fn select_per_profile(
        &self,
        expr: &Expr,
        names: &[String],
        snap: &Snapshot,
    ) -> Result<RoaringBitmap, TaggingError> {
        let profiles = read_profiles(&self.lake, true)?;
        let traits = profiles.traits.unwrap_or_default();
        let as_of = self.as_of().unwrap_or_else(portrait_core::time::now);
        let mut out = RoaringBitmap::new();
        for (i, id) in profiles.ids.iter().enumerate() {
            if !snap.universe().contains(*id) {
                continue;
            }
            let row = StoreRow {
                snap,
                names,
                id: *id,
                traits: traits.get(i),
            };
            if portrait_tags::eval::eval_scalar(expr, &row, as_of, portrait_lake::TIME_ZONE)
                .truthy()
            {
                out.insert(*id);
            }
        }
        Ok(out)
    }

    /// Previews an audience expression: size and the first `sample` members. An `and` of
    /// stored bitmaps is counted and sampled without materialising the members.
    pub fn preview(&self, text: &str, sample: usize) -> Result<Preview, TaggingError> {
        let ((count, first), tags) = self.audience_read(
            text,
            |snap, expr, names| portrait_tagstore::preview(snap, expr, names, sample),
            |members| (members.len(), portrait_tagstore::sample(&members, sample)),
        )?;
        let universe = self.store.snapshot().universe().len();
        Ok(Preview {
            count,
            sample: first,
            universe,
            as_of: self.as_of(),
            tags,
        })
    }

    /// Saves an audience (published unless `draft`); the expression must compile.
    pub fn save_audience(
        &self,
        spec: &AudienceSpec,
        by: &str,
        draft: bool,
    ) -> Result<Applied, TaggingError> {
        let name = spec.name.as_str();
        if !portrait_tags::def::valid_name(name) {
            return Err(TaggingError::Invalid(format!("audience name {name:?}: use lower-case letters, digits and _ (starting with a letter)")));
        }
        let (expr, names, _) = self.audience_expr(&spec.expression)?;
        let tags = used_tags(&expr, &names).into_iter().collect();
        let version = AudienceVersion {
            version: 0,
            expression: spec.expression.clone(),
            title: spec.title.clone(),
            owner: spec.owner.clone(),
            description: spec.description.clone(),
            state: VersionState::Draft,
            tags,
            created_at: portrait_core::time::now(),
            created_by: by.into(),
        };
        self.catalog.lock().save_audience(name, version, draft)
    }

    /// The members of a saved audience (its published version).
    pub fn audience_members(&self, name: &str) -> Result<RoaringBitmap, TaggingError> {
        let expr = {
            let cat = self.catalog.lock();
            let a = cat
                .audience(name)
                .ok_or_else(|| TaggingError::UnknownAudience(name.into()))?;
            a.published()
                .ok_or_else(|| {
                    TaggingError::Conflict(format!("audience {name} has no published version"))
                })?
                .expression
                .clone()
        };
        let (members, _) = self.select(&expr)?;
        self.catalog
            .lock()
            .touch(&[], Some(name), portrait_core::time::now());
        Ok(members)
    }

    /// Every audience with a published version: name and expression.
    fn published_audiences(&self) -> Vec<(String, String)> {
        self.catalog
            .lock()
            .audiences()
            .filter_map(|a| {
                a.published()
                    .map(|v| (a.name.clone(), v.expression.clone()))
            })
            .collect()
    }

    fn measure_audiences(&self, as_of: i64, now: i64) -> Result<Vec<(String, u64)>, TaggingError> {
        let saved = self.published_audiences();
        let mut sizes = Vec::new();
        let mut points = Vec::new();
        for (name, expr) in saved {
            // An audience whose tags are gone is skipped, not fatal to the run.
            if let Ok((members, _)) = self.select(&expr) {
                sizes.push((name.clone(), members.len()));
                points.push((
                    name,
                    SizePoint {
                        at: now,
                        as_of,
                        size: members.len(),
                    },
                ));
            }
        }
        self.catalog.lock().record_sizes(&points)?;
        Ok(sizes)
    }

    /// A profile's stored tag values (a merged-away id answers for its survivor).
    pub fn profile_tags(&self, id: u32) -> Vec<(String, StoredValue)> {
        self.store.values_of(id)
    }

    /// Tags whose refresh policy makes them due at `now`.
    pub fn due(&self, now: i64) -> Result<Vec<String>, TaggingError> {
        let published = self.published_defs(&BTreeSet::new())?;
        let cat = self.catalog.lock();
        let tz = portrait_lake::TIME_ZONE;
        let mut out = Vec::new();
        for (def, _) in published {
            if matches!(def.kind, TagKindDef::External { .. }) {
                continue;
            }
            let last = cat
                .tag(&def.name)
                .and_then(|t| t.last_run.as_ref())
                .map(|r| r.at);
            let due = match (&def.refresh, last) {
                (_, None) => true,
                // Real-time tags are maintained per event by the real-time engine (profile
                // API, change stream, realtime audiences); this batch only refreshes their
                // bitmaps for audience preview and export, every REALTIME_BATCH_MS.
                (Refresh::Realtime, Some(at)) => now - at >= REALTIME_BATCH_MS,
                (Refresh::Hourly, Some(at)) => now - at >= 3_600_000,
                (Refresh::Daily, Some(at)) => now - at >= 86_400_000,
                (Refresh::Cron(c), Some(at)) => Cron::parse(c)
                    .map(|c| c.fired_between(at, now, tz))
                    .unwrap_or(false),
            };
            if due {
                out.push(def.name.clone());
            }
        }
        Ok(out)
    }

    /// Removes a profile from every stored tag (erasure).
    pub fn erase(&self, id: u32) -> Result<(), TaggingError> {
        self.store.erase(id);
        self.save_store()
    }
}

/// Tag values computed over a lake.
pub struct Computed {
    /// Live profile ids.
    pub universe: RoaringBitmap,
    /// The same ids in order; `columns[t].values[i]` belongs to `ids[i]`.
    pub ids: Vec<u32>,
    /// One column per tag of the plan, in plan order.
    pub columns: Vec<TagColumn>,
    /// Event rows scanned.
    pub events_scanned: u64,
    /// Distinct aggregates of the plan (computed in one scan).
    pub aggregates: usize,
}

/// Evaluates `plan` at `as_of` over the lake at `lake`: the aggregates in one scan by `engine`,
/// then every tag per live profile (traits from `profiles.parquet`, externals from `externals`).
pub fn evaluate_lake(
    lake: &Path,
    plan: &Plan,
    as_of: i64,
    engine: BatchEngine,
    externals: &(dyn Fn(usize, u32) -> Value + Sync),
    progress: &mut dyn FnMut(Progress),
) -> Result<Computed, TaggingError> {
    // first_seen / last_seen as of `as_of` are two more aggregates of the same scan.
    let mut scan = plan.clone();
    let first_seen = scan.aggregates.len();
    for func in [AggFunc::FirstTime, AggFunc::LastTime] {
        scan.aggregates.push(Aggregate {
            func,
            arg: None,
            filter: None,
            window: Window::All,
        });
    }
    let agg = match engine {
        BatchEngine::Kernel => {
            kernel::aggregate(lake, &scan, as_of, &KernelOptions::default(), progress)
        }
        BatchEngine::DataFusion => portrait_batch::datafusion::aggregate_sql(lake, &scan, as_of),
    }
    .map_err(|e| TaggingError::Compute(e.to_string()))?;
    let reads_traits = plan.tags.iter().any(|t| !t.reads.traits.is_empty());
    // profiles.parquet is only needed for traits: the live ids come from the scan.
    let lake_profiles = if reads_traits {
        read_profiles(lake, true)?
    } else {
        crate::profiles::LakeProfiles::default()
    };
    let live: Vec<u32> = agg.live.clone();
    let traits_of: HashMap<u32, usize> = if reads_traits {
        lake_profiles
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect()
    } else {
        HashMap::new()
    };
    let empty: Vec<Traits> = Vec::new();
    let traits_vec = lake_profiles.traits.as_ref().unwrap_or(&empty);
    let traits = |id: u32| traits_of.get(&id).and_then(|i| traits_vec.get(*i));
    let cols = &agg.columns;
    let profile = |id: u32, f: ProfileField| match f {
        ProfileField::FirstSeen => cols
            .get(first_seen)
            .map_or(Value::Null, |c| c.get(id as usize)),
        ProfileField::LastSeen => cols
            .get(first_seen + 1)
            .map_or(Value::Null, |c| c.get(id as usize)),
    };
    let pop = Population {
        ids: &live,
        aggs: &agg.columns,
        traits: &traits,
        profile: &profile,
        externals,
        as_of,
    };
    let columns = evaluate_population(plan, &pop);
    Ok(Computed {
        universe: live.iter().copied().collect(),
        ids: live,
        columns,
        events_scanned: agg.events_scanned,
        aggregates: plan.aggregates.len(),
    })
}

fn stored_to_value(v: StoredValue) -> Value {
    match v {
        StoredValue::Bool(b) => Value::Bool(b),
        StoredValue::Label(s) => Value::Str(Arc::from(s.as_str())),
        StoredValue::Num(n) => Value::Num(n),
    }
}

struct StoreRow<'a> {
    snap: &'a Snapshot,
    names: &'a [String],
    id: u32,
    traits: Option<&'a Traits>,
}

impl portrait_tags::eval::Row for StoreRow<'_> {
    fn agg(&self, _: usize) -> Value {
        Value::Null
    }
    fn tag(&self, i: usize) -> Value {
        self.names
            .get(i)
            .and_then(|n| self.snap.value_of(n, self.id))
            .map_or(Value::Null, stored_to_value)
    }
    fn trait_json(&self, path: &[String]) -> Option<&serde_json::Value> {
        self.traits
            .and_then(|t| portrait_tags::eval::json_path(t, path))
    }
    fn profile(&self, _: ProfileField) -> Value {
        Value::Null
    }
}

/// Tags an expression reads (`Expr::Tag(i)` → `names[i]`).
fn used_tags(expr: &Expr, names: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    expr.walk(&mut |e| {
        if let Expr::Tag(i) = e {
            if let Some(n) = names.get(*i) {
                out.insert(n.clone());
            }
        }
    });
    out.into_iter().collect()
}

/// A plan with only `only` and the tags they read (compiled again from those definitions).
fn restrict(
    plan: &Plan,
    only: &[String],
    defs: &[TagDef],
    known: &Known,
) -> Result<Plan, TaggingError> {
    let mut keep: BTreeSet<String> = only.iter().cloned().collect();
    // Plan order is topological: walk backwards adding what kept tags read.
    for t in plan.tags.iter().rev() {
        if keep.contains(&t.name) {
            keep.extend(t.reads.tags.iter().cloned());
        }
    }
    let subset: Vec<TagDef> = defs
        .iter()
        .filter(|d| keep.contains(&d.name))
        .cloned()
        .collect();
    compile(&subset, known)
        .map(|c| c.plan)
        .map_err(|d| diagnostics(&d))
}

/// Converts a computed column into stored form: rules → a bitmap; stages, string metrics and
/// externals → one bitmap per value; numbers (metrics, buckets) → a numeric column; instants
/// → a numeric column of ms.
pub fn to_tag_data(
    ty: Type,
    body: &TagBody,
    ids: &[u32],
    values: &[Value],
) -> Result<TagData, TaggingError> {
    let pairs = || ids.iter().zip(values);
    match (ty, body) {
        (Type::Bool, _) => Ok(TagData::Bool(
            pairs()
                .filter(|(_, v)| matches!(v, Value::Bool(true)))
                .map(|(id, _)| *id)
                .collect(),
        )),
        (Type::Number, _) | (Type::Time, _) => {
            Ok(TagData::numeric(pairs().filter_map(|(id, v)| match v {
                Value::Num(n) if n.is_finite() => Some((*id, *n)),
                Value::Time(t) => Some((*id, *t as f64)),
                _ => None,
            })))
        }
        _ => {
            let mut by_value: BTreeMap<String, RoaringBitmap> = BTreeMap::new();
            for (id, v) in pairs() {
                let label = match v {
                    Value::Str(s) => s.to_string(),
                    Value::Num(n) => portrait_tagstore::canonical_number(*n),
                    Value::Bool(b) => b.to_string(),
                    Value::Time(t) => portrait_core::time::format_iso(*t),
                    Value::Null => continue,
                };
                by_value.entry(label).or_default().insert(*id);
            }
            TagData::enumeration(by_value).map_err(|e| TaggingError::TagStore(e.to_string()))
        }
    }
}

/// Path of the tag service's directory under a data directory.
pub fn tags_dir(data: &Path) -> PathBuf {
    data.join("tags")
}

/// What an export asks for.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The identifier type written per member (`phone`, `wechat_openid`, `device_id`, …).
    pub identifier: String,
    /// Only values with this scope prefix (a WeChat app id for `wechat_openid`).
    pub scope: Option<String>,
    /// The consent channel checked; default from the identifier type (phone → sms,
    /// wechat_openid → wechat_template, device_id → app_push, email → email). `None` with
    /// `check_consent = false` exports without a check.
    pub channel: Option<String>,
    /// The consent purpose checked (default marketing).
    pub purpose: String,
    /// Whether consent is checked (a member needs `granted` for the channel and purpose).
    pub check_consent: bool,
}

/// One exported member.
#[derive(Debug, Clone, Serialize)]
pub struct ExportRow {
    /// The profile id.
    pub profile_id: u32,
    /// The identifier value.
    pub identifier: String,
}

/// The result of an export.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    /// Members written.
    pub rows: Vec<ExportRow>,
    /// Members of the audience.
    pub members: u64,
    /// Skipped: no identifier of the type.
    pub skipped_no_identifier: u64,
    /// Skipped: no consent for the channel and purpose.
    pub skipped_no_consent: u64,
    /// The channel checked, if any.
    pub channel: Option<String>,
}

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `profile_id,<identifier>` with a header line.
    Csv,
    /// One JSON object per line: `{"profile_id": …, "<identifier>": …}`.
    JsonLines,
}

impl ExportFormat {
    /// `csv` or `jsonl`.
    pub fn parse(name: &str) -> Option<ExportFormat> {
        match name {
            "csv" => Some(ExportFormat::Csv),
            "jsonl" => Some(ExportFormat::JsonLines),
            _ => None,
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::JsonLines => "application/x-ndjson",
        }
    }
}

impl Export {
    /// The exported rows as file text, the identifier type naming the value column.
    pub fn render(&self, identifier: &str, format: ExportFormat) -> String {
        let mut text = String::new();
        if format == ExportFormat::Csv {
            text.push_str(&format!("profile_id,{identifier}\n"));
        }
        for r in &self.rows {
            match format {
                ExportFormat::Csv => text.push_str(&format!("{},{}\n", r.profile_id, r.identifier)),
                ExportFormat::JsonLines => {
                    let mut row = serde_json::Map::new();
                    row.insert("profile_id".into(), r.profile_id.into());
                    row.insert(identifier.into(), r.identifier.clone().into());
                    text.push_str(&serde_json::Value::Object(row).to_string());
                    text.push('\n');
                }
            }
        }
        text
    }
}

/// The consent channel implied by an identifier type.
pub fn default_channel(identifier: &str) -> Option<&'static str> {
    match identifier {
        "phone" => Some("sms"),
        "wechat_openid" | "wechat_unionid" => Some("wechat_template"),
        "device_id" => Some("app_push"),
        "email" => Some("email"),
        _ => None,
    }
}

impl Tagging {
    /// Exports an audience's members with one identifier each, skipping members without one or
    /// without consent, and counting both.
    pub fn export(
        &self,
        members: &RoaringBitmap,
        req: &ExportRequest,
    ) -> Result<Export, TaggingError> {
        if self.engine.identity().rank(&req.identifier).is_none() {
            return Err(TaggingError::Invalid(format!(
                "unknown identifier type {:?}",
                req.identifier
            )));
        }
        let channel = if req.check_consent {
            let c = req.channel.clone().or_else(|| default_channel(&req.identifier).map(String::from)).ok_or_else(|| {
                TaggingError::Invalid(format!(
                    "no consent channel for identifier type {:?}: name one (channel) or export without a consent check",
                    req.identifier
                ))
            })?;
            if !portrait_core::consent::CHANNELS.contains(&c.as_str()) {
                return Err(TaggingError::Invalid(format!(
                    "unknown channel {c:?}: one of {}",
                    portrait_core::consent::CHANNELS.join(", ")
                )));
            }
            if !portrait_core::consent::PURPOSES.contains(&req.purpose.as_str()) {
                return Err(TaggingError::Invalid(format!(
                    "unknown purpose {:?}: one of {}",
                    req.purpose,
                    portrait_core::consent::PURPOSES.join(", ")
                )));
            }
            Some(c)
        } else {
            None
        };
        let key = channel
            .as_ref()
            .map(|c| portrait_core::consent::key(c, &req.purpose));
        let mut out = Export {
            rows: Vec::new(),
            members: members.len(),
            skipped_no_identifier: 0,
            skipped_no_consent: 0,
            channel,
        };
        let state = self.engine.state();
        for id in members {
            let Some(p) = state.book.get(id) else {
                out.skipped_no_identifier += 1;
                continue;
            };
            let value = p.identifiers.iter().find(|i| {
                i.kind == req.identifier
                    && req
                        .scope
                        .as_ref()
                        .is_none_or(|s| i.value.starts_with(&format!("{s}:")))
            });
            let Some(value) = value else {
                out.skipped_no_identifier += 1;
                continue;
            };
            if let Some(k) = &key {
                let granted = p
                    .consent
                    .get(k)
                    .is_some_and(|r| r.state == portrait_core::consent::ConsentState::Granted);
                if !granted {
                    out.skipped_no_consent += 1;
                    continue;
                }
            }
            out.rows.push(ExportRow {
                profile_id: p.id,
                identifier: value.value.clone(),
            });
        }
        Ok(out)
    }

    /// Explains tag `name` for profile `id`, recomputed from the profile's own events at the
    /// stored values' `as_of` (or now).
    pub fn explain_profile(
        &self,
        id: u32,
        name: &str,
    ) -> Result<crate::explain::Explanation, TaggingError> {
        let (plan, _) = self.plan(Some(&[name.to_string()]))?;
        let pos = plan
            .tag_index(name)
            .ok_or_else(|| TaggingError::UnknownTag(name.into()))?;
        let (refs, traits, survivor) = {
            let state = self.engine.state();
            let p = state.book.get(id).ok_or(TaggingError::UnknownProfile(id))?;
            let traits = p.tag_traits();
            (p.events.clone(), traits, p.id)
        };
        let sources = self.engine.sources();
        let mut events = Vec::with_capacity(refs.len());
        for (_, at) in refs {
            let m = self
                .engine
                .read_event(at)
                .map_err(|e| TaggingError::Store(e.to_string()))?;
            events.push(portrait_tags::eval::RefEvent {
                offset: at,
                name: m.event.clone(),
                kind: m.kind.as_str().to_string(),
                source: sources.name(m.source).to_string(),
                timestamp_ms: m.timestamp,
                properties: m.properties_map(),
            });
        }
        drop(sources);
        let snap = self.store.snapshot();
        let stored = plan
            .tags
            .iter()
            .map(|t| {
                snap.value_of(&t.name, survivor)
                    .map_or(Value::Null, stored_to_value)
            })
            .collect();
        let input = crate::explain::ProfileInput {
            events,
            traits,
            stored,
        };
        let as_of = self.as_of().unwrap_or_else(portrait_core::time::now);
        self.catalog
            .lock()
            .touch(&[name.to_string()], None, portrait_core::time::now());
        Ok(crate::explain::explain(&plan, pos, &input, as_of))
    }

    /// Loads values of an external tag from `(identifier value, tag value)` pairs keyed by the
    /// tag's identifier type; returns (matched, unmatched).
    pub fn load_external(
        &self,
        name: &str,
        pairs: &[(String, String)],
    ) -> Result<(u64, u64), TaggingError> {
        let (plan, _) = self.plan(Some(&[name.to_string()]))?;
        let pos = plan
            .tag_index(name)
            .ok_or_else(|| TaggingError::UnknownTag(name.into()))?;
        let tag = &plan.tags[pos];
        if !matches!(tag.body, TagBody::External) {
            return Err(TaggingError::Invalid(format!("tag {name} is not external")));
        }
        let key = {
            let published = self.published_defs(&BTreeSet::new())?;
            published
                .into_iter()
                .find_map(|(d, _)| match d.kind {
                    TagKindDef::External { key, .. } if d.name == name => Some(key),
                    _ => None,
                })
                .flatten()
                .ok_or_else(|| {
                    TaggingError::Invalid(format!("external tag {name} has no key identifier type"))
                })?
        };
        let (mut ids, mut values) = (Vec::new(), Vec::new());
        let mut unmatched = 0;
        {
            let state = self.engine.state();
            for (raw, value) in pairs {
                let Ok(ident) = self.engine.identity().lookup_identifier(&key, raw) else {
                    unmatched += 1;
                    continue;
                };
                match state.book.by_identifier(&ident) {
                    Some(id) => {
                        ids.push(id);
                        values.push(match tag.value_type {
                            Type::Number => {
                                value.trim().parse::<f64>().map_or(Value::Null, Value::Num)
                            }
                            Type::Bool => match value.trim() {
                                "true" | "1" | "yes" => Value::Bool(true),
                                _ => Value::Bool(false),
                            },
                            _ => Value::Str(Arc::from(value.as_str())),
                        });
                    }
                    None => unmatched += 1,
                }
            }
        }
        let data = to_tag_data(tag.value_type, &tag.body, &ids, &values)?;
        let matched = ids.len() as u64;
        if self.store.snapshot().universe().is_empty() {
            let universe: RoaringBitmap = {
                let state = self.engine.state();
                (0..state.book.id_space())
                    .filter(|i| state.book.get(*i).is_some_and(|p| p.id == *i))
                    .collect()
            };
            self.store.set_universe(universe);
        }
        self.store.set_tag(name, data);
        self.save_store()?;
        self.catalog.lock().record_runs(&[(
            name.to_string(),
            RunRecord {
                at: portrait_core::time::now(),
                as_of: portrait_core::time::now(),
                duration_ms: 0,
                population: matched,
                version: 0,
            },
        )])?;
        Ok((matched, unmatched))
    }
}
