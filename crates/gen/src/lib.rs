//! Portrait's deterministic multi-source data generator (`portrait gen`).
//!
//! [`generate`] invents a population of hidden people, each with a persona (new, loyal,
//! bargain hunter, dormant, churning, high-ARPU VIP, sensitive skin, prospect, QA test
//! account), and writes what the brand's channels would export about them: one folder per
//! source in that channel's real shape, with an import mapping (`docs/import-mapping.md`) per
//! CSV source, a manifest `sources.yaml`, and the ground truth under `truth/`.
//!
//! | folder | kind | shape |
//! |---|---|---|
//! | `crm/` | crm | `members.csv`, GBK, one row per member |
//! | `wechat_followers/` | wechat | `followers.csv`: openid per app id, unionid for some, authorised phone |
//! | `wechat_interactions/` | wechat | `interactions_YYYY-MM.csv`: follow/unfollow, template clicks, menu clicks, mini-program page views |
//! | `tmall/`, `jd/` | ecommerce | `orders_YYYY-MM.csv`, Chinese headers, masked phones |
//! | `pos/` | pos | `transactions_YYYY-MM.csv`, card or phone, basket lines as JSON |
//! | `app/`, `web/` | app, web | `events_YYYY-MM.jsonl`: Segment messages for `/v1/batch` |
//! | `service/` | service | `tickets_YYYY-MM.csv` |
//! | `ma/` | ma | `messages_YYYY-MM.csv`: sent/delivered/opened/clicked per campaign and channel |
//!
//! Output is a pure function of [`GenOptions`]: person `i` is generated from a ChaCha8 stream
//! keyed by the seed with stream number `i`, and ids that must be unique across people (phone,
//! member id, nick, JD pin, email, openid, unionid, device and anonymous ids) come from keyed
//! bijections of `i`, so they never collide. People are generated in blocks on worker threads
//! and written in order, so the bytes do not depend on the thread count; memory stays constant
//! in the number of people (a few blocks in flight). Within a file, rows are grouped by person
//! in person order, not sorted by time; every row carries its own timestamp. (Floating-point
//! library functions are used for sampling, so byte-identity is promised per platform.)
//!
//! Times are Asia/Shanghai (UTC+8, written without offset in CSV, as UTC `Z` in Segment
//! messages). The window is the `days` days ending with `end` (inclusive): tags computed
//! `as_of` the start of the day after `end` see all of it. Purchases peak on 618 (June 1–18,
//! June 18 itself), Double 11 (pre-sale from October 20, November 11 itself), 3.8, 520 and
//! Double 12; ecommerce orders spike right after midnight on peak days.
//!
//! # Behaviour
//! Personas drive purchase cycles (a renewal process around a per-person cycle, with a staple
//! product re-bought), category preferences (sensitive-skin people buy the 敏感肌修护 line, VIPs
//! fragrance and gift sets), discount seeking (bargain hunters snap to promotion days, stock
//! up and get about 4× the discount rate of loyal buyers), dormancy (dormant people stop 4–10
//! months before the end, churning people slow down and unfollow), and reactivation (win-back
//! campaigns to dormant members; a click may lead to a purchase, flagged `reactivated` in
//! `truth/people.csv`).
//!
//! # Identity overlap and noise
//! The same person appears by phone in CRM, POS, orders, mini-program authorisation, service
//! tickets and SMS; by unionid across the WeChat apps; by member id (the app's `userId`, the
//! POS card, app push); by anonymous id and device id in the app and on the web until an
//! `identify` links them. At `noise = 1.0` (scaled linearly; 0 turns all of it off):
//! - phone format variants (`+86 138-0000-0000`, `0086 …`, `86-…`, `138 0000 0000`) in CRM,
//!   POS, service and app traits; E.164 in marketing automation;
//! - masked receiver phones (`138****0000`) on 5 % of Tmall and 8 % of JD orders;
//! - shared family phones: 0.4 % of household pairs (persons 2k, 2k+1) use one phone;
//! - QA test accounts (0.1 % of people): member id `TEST…`, all on phone `13800138000`, at the
//!   test store `S9999`;
//! - blocked placeholders: 1 % of the app/web events of logged-in users carry `anonymousId`
//!   `undefined` or `null`;
//! - typos: 0.5 % of CRM phones and POS phones (next to a card) lose a digit; 1 % of CRM
//!   emails have a misspelt domain (`qq.con`), a distinct identifier linked through the row;
//! - unlinkable records: 0.6 % of WeChat users never authorise a phone; 2 % of anonymous
//!   prospects browse on a second channel.
//!
//! Every row has at least one usable identifier, so a correct importer rejects nothing.
//! [`truth::score`] measures identity resolution against `truth/identifiers.csv`; with core's
//! resolver the default noise level gives precision ≥ 0.999 and recall ≥ 0.99 (tests pin it),
//! and clean data (`noise = 0`) resolves perfectly.

#![warn(missing_docs)]

mod catalog;
mod generate;
mod person;
mod sources;
mod text;
pub mod truth;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use generate::{Block, Ctx, IDS_HEADER, PEOPLE_HEADER, RECORDS_HEADER};
use person::Window;
use sources::{NSOURCES, SOURCES};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOptions {
    /// Number of hidden people.
    pub people: u64,
    /// Length of the window in days (default 365).
    pub days: u32,
    /// Seed: the same options give the same bytes.
    pub seed: u64,
    /// Activity multiplier: 1.0 gives about 10 events per person on average. Browsing,
    /// WeChat interactions and campaign reach scale with it; purchase cycles do not.
    pub scale_events: f64,
    /// Last day of the window (inclusive). A fixed default (2026-11-01), not today, so output
    /// is reproducible.
    pub end: NaiveDate,
    /// Noise level: 1.0 (default) is realistic; 0 gives clean data (no format variants,
    /// masked phones, shared phones, test accounts, placeholders or typos); higher is dirtier.
    pub noise: f64,
    /// Worker threads; 0 uses the available parallelism. Does not change the output.
    pub threads: usize,
    /// Write `truth/records.csv` (one row per source record). Default true.
    pub record_truth: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            people: 10_000,
            days: 365,
            seed: 42,
            scale_events: 1.0,
            end: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or(NaiveDate::MIN),
            noise: 1.0,
            threads: 0,
            record_truth: true,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenSummary {
    /// People generated.
    pub people: u64,
    /// Source records (rows and Segment messages) written, over all sources.
    pub events: u64,
    /// Records per source name.
    pub records_per_source: BTreeMap<String, u64>,
    /// Bytes written, truth and manifest included.
    pub bytes: u64,
    /// Files written.
    pub files: u64,
}

/// Errors of generation, manifest reading and scoring.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// Options out of range.
    #[error("invalid options: {0}")]
    Options(String),
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// File or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The output folder holds files that are not a previous generation.
    #[error("{0} is not empty and holds no sources.yaml; refusing to write into it")]
    NotEmpty(PathBuf),
    /// `sources.yaml` does not parse.
    #[error("{path}: {source}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// The YAML error.
        source: serde_yaml::Error,
    },
    /// A truth file does not parse.
    #[error("{path}:{line}: {message}")]
    Truth {
        /// The truth file.
        path: PathBuf,
        /// Line number (1 = header).
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// One source of a generated data set, as listed in `sources.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Source name (also its folder): crm, wechat_followers, wechat_interactions, tmall, jd,
    /// pos, app, web, service, ma.
    pub name: String,
    /// Channel kind: crm | wechat | ecommerce | pos | app | web | ma | service.
    pub kind: String,
    /// `csv` (import with the mapping) or `segment-jsonl` (send each line to `/v1/batch`).
    pub format: String,
    /// What the source is.
    pub description: String,
    /// Data files, in time order. [`manifest`] returns them joined with the output folder;
    /// in `sources.yaml` they are relative to it.
    pub files: Vec<PathBuf>,
    /// Import mapping; `None` for Segment JSON lines sent over HTTP.
    pub mapping: Option<PathBuf>,
    /// Records written.
    pub records: u64,
}

/// The manifest file `sources.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    generator: String,
    seed: u64,
    people: u64,
    days: u32,
    end: String,
    scale_events: f64,
    noise: f64,
    events: u64,
    truth: TruthFiles,
    sources: Vec<SourceSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TruthFiles {
    identifiers: PathBuf,
    people: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    records: Option<PathBuf>,
}

/// The import mapping YAML of a source, `None` for unknown names and Segment sources.
pub fn mapping_yaml(source: &str) -> Option<&'static str> {
    SOURCES
        .iter()
        .find(|s| s.name == source)
        .and_then(|s| s.mapping)
}

/// Names of the sources a generation writes, in manifest order.
pub fn source_names() -> Vec<&'static str> {
    SOURCES.iter().map(|s| s.name).collect()
}

/// Reads back `out/sources.yaml` written by [`generate`], with paths joined to `out`.
pub fn manifest(out: &Path) -> Result<Vec<SourceSpec>, GenError> {
    let path = out.join("sources.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| GenError::Io {
        path: path.clone(),
        source: e,
    })?;
    let m: Manifest =
        serde_yaml::from_str(&text).map_err(|e| GenError::Manifest { path, source: e })?;
    Ok(m.sources
        .into_iter()
        .map(|mut s| {
            s.files = s.files.iter().map(|f| out.join(f)).collect();
            s.mapping = s.mapping.map(|m| out.join(m));
            s
        })
        .collect())
}

fn validate(opts: &GenOptions) -> Result<(), GenError> {
    let bad = |m: &str| Err(GenError::Options(m.to_string()));
    if opts.people > 1_000_000_000 {
        return bad("people must be at most 1,000,000,000");
    }
    if !(1..=3650).contains(&opts.days) {
        return bad("days must be between 1 and 3650");
    }
    if !opts.scale_events.is_finite() || !(0.0..=1000.0).contains(&opts.scale_events) {
        return bad("scale_events must be between 0 and 1000");
    }
    if !opts.noise.is_finite() || !(0.0..=20.0).contains(&opts.noise) {
        return bad("noise must be between 0 and 20");
    }
    if !(1990..=2200).contains(&opts.end.year()) {
        return bad("end must be between 1990 and 2200");
    }
    Ok(())
}

/// Clears a previous generation from `out` (files listed in its manifest and the truth
/// files), or refuses a non-empty folder that is not one.
fn prepare(out: &Path) -> Result<(), GenError> {
    let io = |path: &Path, e| GenError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let listed = out.join("sources.yaml");
    if listed.exists() {
        let text = std::fs::read_to_string(&listed).map_err(|e| io(&listed, e))?;
        let m: Manifest = serde_yaml::from_str(&text).map_err(|e| GenError::Manifest {
            path: listed.clone(),
            source: e,
        })?;
        let mut files: Vec<PathBuf> = Vec::new();
        for s in &m.sources {
            files.extend(s.files.iter().cloned());
            files.extend(s.mapping.iter().cloned());
        }
        files.push(m.truth.identifiers);
        files.push(m.truth.people);
        files.extend(m.truth.records);
        for f in files {
            // Only paths inside `out` (the manifest is ours, but be careful).
            if f.is_relative()
                && !f
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                let p = out.join(f);
                if p.exists() {
                    std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
                }
            }
        }
        std::fs::remove_file(&listed).map_err(|e| io(&listed, e))?;
        return Ok(());
    }
    let mut entries = std::fs::read_dir(out).map_err(|e| io(out, e))?;
    if entries.next().is_some() {
        return Err(GenError::NotEmpty(out.to_path_buf()));
    }
    Ok(())
}

/// Open output files and byte counts.
struct Writer<'a> {
    out: &'a Path,
    ctx: &'a Ctx,
    files: Vec<Option<BufWriter<File>>>,
    /// Relative path of each slot's file once created.
    paths: Vec<Option<PathBuf>>,
    ids: BufWriter<File>,
    people: BufWriter<File>,
    recs: Option<BufWriter<File>>,
    bytes: u64,
    files_written: u64,
    records: [u64; NSOURCES],
    people_done: u64,
}

const BUF: usize = 1 << 18;

impl<'a> Writer<'a> {
    fn create(out: &Path, rel: &Path) -> Result<BufWriter<File>, GenError> {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| GenError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        let f = File::create(&path).map_err(|e| GenError::Io { path, source: e })?;
        Ok(BufWriter::with_capacity(BUF, f))
    }

    fn new(out: &'a Path, ctx: &'a Ctx) -> Result<Self, GenError> {
        let mut bytes = 0;
        let mut ids = Self::create(out, Path::new("truth/identifiers.csv"))?;
        put(
            &mut bytes,
            out,
            &mut ids,
            "truth/identifiers.csv",
            IDS_HEADER.as_bytes(),
        )?;
        let mut people = Self::create(out, Path::new("truth/people.csv"))?;
        put(
            &mut bytes,
            out,
            &mut people,
            "truth/people.csv",
            PEOPLE_HEADER.as_bytes(),
        )?;
        let recs = if ctx.record_truth {
            let mut r = Self::create(out, Path::new("truth/records.csv"))?;
            put(
                &mut bytes,
                out,
                &mut r,
                "truth/records.csv",
                RECORDS_HEADER.as_bytes(),
            )?;
            Some(r)
        } else {
            None
        };
        Ok(Self {
            out,
            ctx,
            files: (0..ctx.nslots).map(|_| None).collect(),
            paths: vec![None; ctx.nslots],
            files_written: 2 + u64::from(recs.is_some()),
            ids,
            people,
            recs,
            bytes,
            records: [0; NSOURCES],
            people_done: 0,
        })
    }

    fn slot_path(&self, slot: usize) -> PathBuf {
        let (s, month) = self.ctx.slot_info(slot);
        let def = &SOURCES[s];
        let file = match month {
            Some(m) => format!(
                "{}_{}.{}",
                def.stem,
                text::month_label(self.ctx.month_starts[m]),
                def.ext
            ),
            None => format!("{}.{}", def.stem, def.ext),
        };
        Path::new(def.name).join(file)
    }

    fn write_block(&mut self, block: &Block) -> Result<(), GenError> {
        for slot in 0..block.bufs.len() {
            let data = &block.bufs[slot];
            if data.is_empty() {
                continue;
            }
            let (s, _) = self.ctx.slot_info(slot);
            let def = &SOURCES[s];
            if self.files[slot].is_none() {
                let rel = self.slot_path(slot);
                let mut f = Self::create(self.out, &rel)?;
                if !def.header.is_empty() {
                    let header = format!("{}\n", def.header);
                    let bytes = if def.gbk {
                        encoding_rs::GBK.encode(&header).0.into_owned()
                    } else {
                        header.into_bytes()
                    };
                    self.bytes += bytes.len() as u64;
                    f.write_all(&bytes).map_err(|e| GenError::Io {
                        path: self.out.join(&rel),
                        source: e,
                    })?;
                }
                self.files[slot] = Some(f);
                self.paths[slot] = Some(rel);
                self.files_written += 1;
            }
            let encoded;
            let bytes: &[u8] = if def.gbk {
                let text = String::from_utf8_lossy(data);
                encoded = encoding_rs::GBK.encode(&text).0.into_owned();
                &encoded
            } else {
                data
            };
            self.bytes += bytes.len() as u64;
            if let Some(f) = self.files[slot].as_mut() {
                f.write_all(bytes).map_err(|e| GenError::Io {
                    path: self.out.join(def.name),
                    source: e,
                })?;
            }
        }
        for (i, n) in block.records.iter().enumerate() {
            self.records[i] += n;
        }
        put(
            &mut self.bytes,
            self.out,
            &mut self.ids,
            "truth/identifiers.csv",
            &block.ids,
        )?;
        put(
            &mut self.bytes,
            self.out,
            &mut self.people,
            "truth/people.csv",
            &block.people,
        )?;
        if let Some(recs) = self.recs.as_mut() {
            put(
                &mut self.bytes,
                self.out,
                recs,
                "truth/records.csv",
                &block.recs,
            )?;
        }
        self.people_done += block.count;
        Ok(())
    }

    fn finish(mut self, opts: &GenOptions) -> Result<GenSummary, GenError> {
        let flush = |f: &mut BufWriter<File>, path: PathBuf| {
            f.flush().map_err(|e| GenError::Io { path, source: e })
        };
        for (slot, f) in self.files.iter_mut().enumerate() {
            if let Some(f) = f {
                flush(
                    f,
                    self.out.join(self.paths[slot].clone().unwrap_or_default()),
                )?;
            }
        }
        flush(&mut self.ids, self.out.join("truth/identifiers.csv"))?;
        flush(&mut self.people, self.out.join("truth/people.csv"))?;
        if let Some(r) = self.recs.as_mut() {
            flush(r, self.out.join("truth/records.csv"))?;
        }
        let mut sources = Vec::new();
        let mut per_source = BTreeMap::new();
        for (s, def) in SOURCES.iter().enumerate() {
            let files: Vec<PathBuf> = (0..self.ctx.nslots)
                .filter(|&slot| self.ctx.slot_info(slot).0 == s)
                .filter_map(|slot| self.paths[slot].clone())
                .collect();
            let mapping = match def.mapping {
                Some(yaml) => {
                    let rel = Path::new(def.name).join("mapping.yaml");
                    let path = self.out.join(&rel);
                    std::fs::create_dir_all(self.out.join(def.name)).map_err(|e| GenError::Io {
                        path: self.out.join(def.name),
                        source: e,
                    })?;
                    std::fs::write(&path, yaml).map_err(|e| GenError::Io { path, source: e })?;
                    self.bytes += yaml.len() as u64;
                    self.files_written += 1;
                    Some(rel)
                }
                None => None,
            };
            per_source.insert(def.name.to_string(), self.records[s]);
            sources.push(SourceSpec {
                name: def.name.to_string(),
                kind: def.kind.to_string(),
                format: if def.ext == "jsonl" {
                    "segment-jsonl"
                } else {
                    "csv"
                }
                .to_string(),
                description: def.description.to_string(),
                files,
                mapping,
                records: self.records[s],
            });
        }
        let events: u64 = self.records.iter().sum();
        let manifest = Manifest {
            generator: format!("portrait-gen {}", env!("CARGO_PKG_VERSION")),
            seed: opts.seed,
            people: opts.people,
            days: opts.days,
            end: opts.end.format("%Y-%m-%d").to_string(),
            scale_events: opts.scale_events,
            noise: opts.noise,
            events,
            truth: TruthFiles {
                identifiers: "truth/identifiers.csv".into(),
                people: "truth/people.csv".into(),
                records: opts.record_truth.then(|| "truth/records.csv".into()),
            },
            sources,
        };
        let yaml = serde_yaml::to_string(&manifest).map_err(|e| GenError::Manifest {
            path: self.out.join("sources.yaml"),
            source: e,
        })?;
        let path = self.out.join("sources.yaml");
        std::fs::write(&path, &yaml).map_err(|e| GenError::Io { path, source: e })?;
        self.bytes += yaml.len() as u64;
        self.files_written += 1;
        Ok(GenSummary {
            people: self.people_done,
            events,
            records_per_source: per_source,
            bytes: self.bytes,
            files: self.files_written,
        })
    }
}

fn put(
    bytes: &mut u64,
    out: &Path,
    f: &mut BufWriter<File>,
    rel: &str,
    data: &[u8],
) -> Result<(), GenError> {
    *bytes += data.len() as u64;
    f.write_all(data).map_err(|e| GenError::Io {
        path: out.join(rel),
        source: e,
    })
}

/// Generates a data set into `out` (created if missing; a previous generation there is
/// replaced; any other non-empty folder is refused). `progress` is called with the number of
/// people done after each block.
pub fn generate(
    out: &Path,
    opts: &GenOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<GenSummary, GenError> {
    validate(opts)?;
    prepare(out)?;
    let end = text::days_from_civil(opts.end.year() as i64, opts.end.month(), opts.end.day());
    let win = Window {
        start: end - opts.days as i64 + 1,
        end,
        people: opts.people,
        noise: opts.noise,
        scale: opts.scale_events,
    };
    let ctx = Ctx::new(win, opts.seed, opts.record_truth);
    let mut writer = Writer::new(out, &ctx)?;
    let block_people = ((60_000.0 / (10.0 * opts.scale_events + 4.0)) as u64).clamp(32, 4096);
    let blocks = opts.people.div_ceil(block_people);
    let workers = match opts.threads {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8),
        n => n.min(64),
    }
    .max(1);
    let ctx_ref = &ctx;
    std::thread::scope(|scope| -> Result<(), GenError> {
        let mut channels = Vec::new();
        for w in 0..workers as u64 {
            let (tx, rx) = mpsc::sync_channel::<Block>(2);
            let (back_tx, back_rx) = mpsc::channel::<Block>();
            scope.spawn(move || {
                let mut b = w;
                while b < blocks {
                    let mut block = back_rx
                        .try_recv()
                        .unwrap_or_else(|_| Block::new(ctx_ref.nslots));
                    block.clear();
                    let from = b * block_people;
                    let to = (from + block_people).min(opts.people);
                    generate::generate_block(ctx_ref, from, to, &mut block);
                    if tx.send(block).is_err() {
                        return;
                    }
                    b += workers as u64;
                }
            });
            channels.push((rx, back_tx));
        }
        for b in 0..blocks {
            let (rx, back) = &channels[(b % workers as u64) as usize];
            let Ok(block) = rx.recv() else {
                return Err(GenError::Options("a generator thread stopped".into()));
            };
            writer.write_block(&block)?;
            progress(writer.people_done);
            let _ = back.send(block);
        }
        Ok(())
    })?;
    writer.finish(opts)
}
