//! `portrait tags …`, `portrait compute`, `portrait audience …`: the tag engine from the command
//! line, on a data directory the server is not running on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use portrait_tagging::service::{
    BatchEngine, ComputeOptions, ExportFormat, ExportRequest, Tagging,
};

/// `portrait tags …`.
#[derive(Subcommand)]
pub enum TagsCommand {
    /// Apply definition files (YAML: one tag or several separated by ---): each changed tag gets
    /// a new draft version.
    Apply {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Publish the new versions at once.
        #[arg(long)]
        publish: bool,
        /// Set a parameter of a file that declares `params:` (NAME=VALUE; repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Definition files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List tags: state, version, kind, owner, last computed, population.
    List {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one tag: versions, lineage (what it reads, what uses it), runs.
    Show {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Tag name.
        name: String,
    },
    /// How many profiles would gain and lose the tag if this version were published.
    Impact {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Tag name.
        name: String,
        /// Version (default the latest).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Publish a version (default the latest); prints its impact first.
    Publish {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Tag name.
        name: String,
        /// Version (default the latest).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Archive a tag (refused while a published tag or audience uses it).
    Archive {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Tag name.
        name: String,
    },
    /// Print the tag's compiled plan and the fused SQL; with --profile, why that profile has
    /// its value.
    Explain {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Tag name.
        name: String,
        /// SQL dialect: datafusion, duckdb, clickhouse.
        #[arg(long, default_value = "datafusion")]
        dialect: String,
        /// Explain the value of this profile instead.
        #[arg(long)]
        profile: Option<u32>,
    },
    /// Load values of an external tag from a CSV file `identifier,value` (header optional).
    Load {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Tag name.
        name: String,
        /// The CSV file.
        file: PathBuf,
    },
}

/// `portrait audience …`.
#[derive(Subcommand)]
pub enum AudienceCommand {
    /// Count and sample the members of an expression.
    Preview {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// The expression, e.g. `high_intent and lifecycle in ("active","new")`.
        expr: String,
        /// Members to show.
        #[arg(long, default_value_t = 10)]
        sample: usize,
    },
    /// Save (or change) an audience.
    Save {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Audience name.
        name: String,
        /// The expression.
        #[arg(long)]
        expr: String,
        /// Title.
        #[arg(long, default_value = "")]
        title: String,
        /// Owner.
        #[arg(long, default_value = "")]
        owner: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List saved audiences with their last size.
    List {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Export a saved audience's members with one identifier each.
    Export {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Audience name.
        name: String,
        /// Identifier type written per member (phone, wechat_openid, device_id, email, …).
        #[arg(long)]
        identifier: String,
        /// Only identifiers of this scope (a WeChat app id).
        #[arg(long)]
        scope: Option<String>,
        /// Consent channel (default from the identifier type).
        #[arg(long)]
        channel: Option<String>,
        /// Consent purpose.
        #[arg(long, default_value = "marketing")]
        purpose: String,
        /// Export without checking consent.
        #[arg(long)]
        no_consent_check: bool,
        /// csv or jsonl.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Output file (default standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn open(data: &Path) -> Result<Tagging> {
    let engine = Arc::new(crate::commands::open(data)?);
    Tagging::open(engine).map_err(|e| anyhow!("{e}"))
}

fn ms_text(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), portrait_core::time::format_iso)
}

/// Parses `--as-of` (RFC 3339, or a date read as the end of that day in Asia/Shanghai).
pub fn parse_as_of(text: &str) -> Result<i64> {
    if let Some(ms) = portrait_core::time::parse_iso(text) {
        return Ok(ms);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        use chrono::TimeZone;
        let end = d
            .and_hms_milli_opt(23, 59, 59, 999)
            .ok_or_else(|| anyhow!("bad date {text}"))?;
        if let Some(t) = portrait_lake::TIME_ZONE.from_local_datetime(&end).single() {
            return Ok(t.timestamp_millis());
        }
    }
    bail!("--as-of {text:?}: expected an RFC 3339 instant (2024-06-30T16:00:00Z) or a date (2024-06-30)")
}

/// Runs a `tags` subcommand.
pub fn tags(cmd: TagsCommand) -> Result<()> {
    match cmd {
        TagsCommand::Apply {
            data,
            publish,
            set,
            files,
        } => {
            let overrides = set
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .ok_or_else(|| anyhow!("--set {kv:?}: expected NAME=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            let t = open(&data)?;
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?;
                let report = t
                    .apply_with(&text, &f.display().to_string(), "cli", publish, &overrides)
                    .map_err(|e| anyhow!("{e}"))?;
                for w in &report.warnings {
                    eprintln!("{w}");
                }
                for (name, v, created) in &report.tags {
                    let what = if *created { "new draft" } else { "unchanged" };
                    let published = if report.published.contains(name) {
                        ", published"
                    } else {
                        ""
                    };
                    println!("{name}: version {v} ({what}{published})");
                }
            }
            Ok(())
        }
        TagsCommand::List { data, json } => {
            let t = open(&data)?;
            let rows: Vec<serde_json::Value> = t.with_catalog(|c| {
                c.tags()
                    .map(|e| {
                        let latest = e.latest();
                        let published = e.published();
                        serde_json::json!({
                            "name": e.name,
                            "state": latest.map(|v| format!("{:?}", v.state).to_lowercase()),
                            "latest": latest.map(|v| v.version),
                            "published": published.map(|v| v.version),
                            "last_computed": e.last_run.as_ref().map(|r| portrait_core::time::format_iso(r.at)),
                            "population": e.last_run.as_ref().map(|r| r.population),
                            "last_used": e.last_used.map(portrait_core::time::format_iso),
                        })
                    })
                    .collect()
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<24} {:<10} {:>6} {:>9} {:>12}  last computed",
                    "tag", "state", "latest", "published", "population"
                );
                for r in rows {
                    println!(
                        "{:<24} {:<10} {:>6} {:>9} {:>12}  {}",
                        r["name"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        r["latest"],
                        r["published"],
                        r["population"],
                        r["last_computed"].as_str().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
        TagsCommand::Show { data, name } => {
            let t = open(&data)?;
            let (used_tags, used_aud) = t.with_catalog(|c| c.used_by(&name));
            let entry = t
                .with_catalog(|c| c.tag(&name).cloned())
                .ok_or_else(|| anyhow!("unknown tag {name:?}"))?;
            println!("tag {name}");
            for v in &entry.versions {
                println!(
                    "  version {} {:?} by {} at {}",
                    v.version,
                    v.state,
                    v.created_by,
                    ms_text(Some(v.created_at))
                );
            }
            if let Some(v) = entry.latest() {
                let l = &v.lineage;
                println!(
                    "  reads: events {:?}, traits {:?}, properties {:?}, sources {:?}, tags {:?}",
                    l.events, l.traits, l.properties, l.sources, l.tags
                );
                println!(
                    "  definition:\n{}",
                    v.definition
                        .lines()
                        .map(|l| format!("    {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            println!("  used by: tags {used_tags:?}, audiences {used_aud:?}");
            for w in t.retention_flags(&name).map_err(|e| anyhow!("{e}"))? {
                println!("  warning: {w} (retention.yaml)");
            }
            if let Some(r) = &entry.last_run {
                println!(
                    "  last computed {} (as of {}, {} ms, population {}, version {})",
                    ms_text(Some(r.at)),
                    ms_text(Some(r.as_of)),
                    r.duration_ms,
                    r.population,
                    r.version
                );
            }
            println!("  last used {}", ms_text(entry.last_used));
            Ok(())
        }
        TagsCommand::Impact {
            data,
            name,
            version,
        } => {
            let t = open(&data)?;
            let i = t.impact(&name, version).map_err(|e| anyhow!("{e}"))?;
            print_impact(&i);
            Ok(())
        }
        TagsCommand::Publish {
            data,
            name,
            version,
        } => {
            let t = open(&data)?;
            if let Ok(i) = t.impact(&name, version) {
                print_impact(&i);
            }
            let v = t.publish(&name, version).map_err(|e| anyhow!("{e}"))?;
            println!("{name}: version {v} published");
            Ok(())
        }
        TagsCommand::Archive { data, name } => {
            let t = open(&data)?;
            t.archive(&name).map_err(|e| anyhow!("{e}"))?;
            println!("{name}: archived");
            Ok(())
        }
        TagsCommand::Explain {
            data,
            name,
            dialect,
            profile,
        } => {
            let t = open(&data)?;
            if let Some(id) = profile {
                let e = t.explain_profile(id, &name).map_err(|e| anyhow!("{e}"))?;
                println!("{}", serde_json::to_string_pretty(&e)?);
                return Ok(());
            }
            let d = portrait_batch::Dialect::parse(&dialect).ok_or_else(|| {
                anyhow!(
                    "--dialect {dialect:?}: one of {}",
                    portrait_batch::Dialect::NAMES
                )
            })?;
            let (plan, _) = t.plan(Some(&[name])).map_err(|e| anyhow!("{e}"))?;
            println!("-- plan\n{plan}");
            let as_of = t.as_of().unwrap_or_else(portrait_core::time::now);
            match portrait_batch::to_sql(&plan, as_of, d) {
                Ok(sql) => println!(
                    "-- SQL (as of {})\n{sql}",
                    portrait_core::time::format_iso(as_of)
                ),
                Err(e) => println!("-- no SQL form: {e}"),
            }
            Ok(())
        }
        TagsCommand::Load { data, name, file } => {
            let t = open(&data)?;
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_path(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut pairs = Vec::new();
            for (i, row) in reader.records().enumerate() {
                let row = row.with_context(|| format!("{}: line {}", file.display(), i + 1))?;
                if row.len() < 2 {
                    bail!(
                        "{}:{}: expected two columns: identifier,value",
                        file.display(),
                        i + 1
                    );
                }
                if i == 0 && row[0].eq_ignore_ascii_case("identifier") {
                    continue;
                }
                pairs.push((row[0].to_string(), row[1].to_string()));
            }
            let (matched, unmatched) =
                t.load_external(&name, &pairs).map_err(|e| anyhow!("{e}"))?;
            println!("{name}: {matched} profiles set, {unmatched} identifiers matched no profile");
            Ok(())
        }
    }
}

fn print_impact(i: &portrait_tagging::service::Impact) {
    println!(
        "impact of {} version {} (as of {}): population {}, +{} gained, -{} lost; dependent tags {:?}, audiences {:?}",
        i.name,
        i.version,
        portrait_core::time::format_iso(i.as_of),
        i.population,
        i.gained,
        i.lost,
        i.dependent_tags,
        i.dependent_audiences
    );
}

/// `portrait compute`.
pub fn compute(
    data: &Path,
    as_of: Option<&str>,
    tags: Option<&str>,
    engine: &str,
    json: bool,
) -> Result<()> {
    let t = open(data)?;
    let engine = BatchEngine::parse(engine)
        .ok_or_else(|| anyhow!("--engine {engine:?}: kernel or datafusion"))?;
    let opts = ComputeOptions {
        as_of: as_of.map(parse_as_of).transpose()?,
        tags: tags.map(|t| {
            t.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        }),
        engine,
        skip_compaction: false,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files, {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = t
        .compute(&opts, &mut |p| {
            bar.set_length(p.files_total as u64);
            bar.set_position(p.files_done as u64);
            bar.set_message(format!("{} events", p.events));
        })
        .map_err(|e| anyhow!("{e}"))?;
    bar.finish_and_clear();
    // Every computation leaves a snapshot for its date: the tag history (标签演化轨迹).
    portrait_history::record_computation(&t, report.as_of)
        .map_err(|e| anyhow!("tag history: {e}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "computed {} tags as of {} over {} profiles: {} events scanned, {} aggregates fused into one scan, {} ms",
        report.tags.len(),
        portrait_core::time::format_iso(report.as_of),
        report.profiles,
        report.events_scanned,
        report.aggregates,
        report.duration_ms
    );
    for r in &report.tags {
        println!(
            "  {:<24} v{:<3} population {:>10}  +{} -{}",
            r.name, r.version, r.population, r.gained, r.lost
        );
    }
    for (a, n) in &report.audiences {
        println!("  audience {a}: {n}");
    }
    Ok(())
}

/// Runs an `audience` subcommand.
pub fn audience(cmd: AudienceCommand) -> Result<()> {
    match cmd {
        AudienceCommand::Preview { data, expr, sample } => {
            let t = open(&data)?;
            let started = std::time::Instant::now();
            let p = t.preview(&expr, sample).map_err(|e| anyhow!("{e}"))?;
            println!(
                "{} of {} profiles ({:.2} ms; tags as of {}); sample: {:?}",
                p.count,
                p.universe,
                started.elapsed().as_secs_f64() * 1000.0,
                ms_text(p.as_of),
                p.sample
            );
            Ok(())
        }
        AudienceCommand::Save {
            data,
            name,
            expr,
            title,
            owner,
            description,
        } => {
            let t = open(&data)?;
            let r = t
                .save_audience(
                    &portrait_tagging::service::AudienceSpec {
                        name: name.clone(),
                        expression: expr,
                        title,
                        owner,
                        description,
                    },
                    "cli",
                    false,
                )
                .map_err(|e| anyhow!("{e}"))?;
            println!("{name}: {r:?}");
            Ok(())
        }
        AudienceCommand::List { data } => {
            let t = open(&data)?;
            t.with_catalog(|c| {
                for a in c.audiences() {
                    let v = a.latest();
                    let size = a
                        .sizes
                        .last()
                        .map(|s| s.size.to_string())
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{:<24} v{:<3} size {:>10}  {}",
                        a.name,
                        v.map_or(0, |v| v.version),
                        size,
                        v.map(|v| v.expression.as_str()).unwrap_or("")
                    );
                }
            });
            Ok(())
        }
        AudienceCommand::Export {
            data,
            name,
            identifier,
            scope,
            channel,
            purpose,
            no_consent_check,
            format,
            out,
        } => {
            let t = open(&data)?;
            let format = ExportFormat::parse(&format)
                .ok_or_else(|| anyhow!("--format {format:?}: csv or jsonl"))?;
            let members = t.audience_members(&name).map_err(|e| anyhow!("{e}"))?;
            let req = ExportRequest {
                identifier: identifier.clone(),
                scope,
                channel,
                purpose,
                check_consent: !no_consent_check,
            };
            let export = t.export(&members, &req).map_err(|e| anyhow!("{e}"))?;
            let text = export.render(&identifier, format);
            match &out {
                Some(p) => std::fs::write(p, &text)
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => print!("{text}"),
            }
            eprintln!(
                "{}: {} of {} members exported; skipped {} without {identifier}, {} without consent{}",
                name,
                export.rows.len(),
                export.members,
                export.skipped_no_identifier,
                export.skipped_no_consent,
                export.channel.map(|c| format!(" ({c}/{})", req.purpose)).unwrap_or_default()
            );
            Ok(())
        }
    }
}
