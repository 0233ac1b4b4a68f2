//! `portrait history …`: tag history (标签演化轨迹) — backfill snapshots from the lake, record
//! the stored values, and query transitions, populations, paths and per-profile trails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use portrait_history::{dates, parse_date_or_instant, Day, Every, History, RoaringBitmap, NONE};
use portrait_tagging::service::Tagging;

/// `portrait history …`.
/// What the range queries (`transitions`, `change`, `population`) share.
#[derive(Args)]
pub struct RangeArgs {
    /// Data directory.
    #[arg(long)]
    data: PathBuf,
    /// Tag name.
    #[arg(long)]
    tag: String,
    /// First date (YYYY-MM-DD or an RFC 3339 instant).
    #[arg(long)]
    from: String,
    /// Last date.
    #[arg(long)]
    to: String,
    /// Only the members of this saved audience (as of now).
    #[arg(long)]
    audience: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum HistoryCommand {
    /// Compute past dates' tag values from the event lake (as of the end of each date) and
    /// snapshot them.
    Backfill {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// First date (YYYY-MM-DD or an RFC 3339 instant).
        #[arg(long)]
        from: String,
        /// Last date.
        #[arg(long)]
        to: String,
        /// Step: 1d, 1w or 1mo.
        #[arg(long, default_value = "1d")]
        every: String,
        /// Only these tags (comma-separated) and the tags they read; default every published tag.
        #[arg(long, value_delimiter = ',')]
        tags: Option<Vec<String>>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Snapshot the values currently stored (after a computation) as a date's values.
    Record {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// The date (default the date of the stored values' as_of).
        #[arg(long)]
        date: Option<String>,
    },
    /// The from × to matrix of a stage, bucket or bool tag between two dates (Sankey data).
    Transitions {
        #[command(flatten)]
        q: RangeArgs,
    },
    /// Entered / exited / stayed for one value of a tag between two dates.
    Change {
        /// The value (default: has any value; bool tags: true).
        #[arg(long)]
        value: Option<String>,
        #[command(flatten)]
        q: RangeArgs,
    },
    /// Profiles per value of a tag at every snapshot date in a range.
    Population {
        #[command(flatten)]
        q: RangeArgs,
    },
    /// The most common value sequences of a tag over snapshot dates (e.g. active → dormant →
    /// active).
    Paths {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Tag name.
        #[arg(long)]
        tag: String,
        /// First date.
        #[arg(long)]
        from: String,
        /// Last date.
        #[arg(long)]
        to: String,
        /// Dates on this grid (1d, 1w, 1mo) from --from; default every snapshot date in range.
        #[arg(long)]
        every: Option<String>,
        /// Keep repeated values on consecutive dates (default: merged).
        #[arg(long)]
        no_collapse: bool,
        /// Paths to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only the members of this saved audience (as of now).
        #[arg(long)]
        audience: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One profile's tag changes over time.
    Trail {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Profile id.
        #[arg(long)]
        profile: u32,
        /// Only these tags (comma-separated; numeric tags only when named).
        #[arg(long, value_delimiter = ',')]
        tags: Option<Vec<String>>,
        /// First date.
        #[arg(long)]
        from: Option<String>,
        /// Last date.
        #[arg(long)]
        to: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove snapshots older than the retention (default 400 days, kept in
    /// DIR/tags/history/config.json).
    Prune {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Change the retention to this many days first.
        #[arg(long)]
        keep_days: Option<u32>,
        /// Prune as of this date (default today).
        #[arg(long)]
        today: Option<String>,
    },
    /// Tags with history, their dates and the storage used.
    List {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn open_tagging(data: &Path) -> Result<Tagging> {
    let engine = Arc::new(crate::commands::open(data)?);
    Tagging::open(engine).map_err(|e| anyhow!("{e}"))
}

/// What a range query of the history reads, opened from its arguments.
struct Range {
    history: History,
    tag: String,
    from: Day,
    to: Day,
    within: Option<RoaringBitmap>,
    json: bool,
}

impl RangeArgs {
    /// Opens the history, parses the range and loads the audience restricting it.
    fn open(self) -> Result<Range> {
        Ok(Range {
            within: audience(&self.data, self.audience.as_deref())?,
            history: history(&self.data)?,
            from: day(&self.from)?,
            to: day(&self.to)?,
            tag: self.tag,
            json: self.json,
        })
    }
}

fn history(data: &Path) -> Result<History> {
    History::for_data_dir(data).map_err(|e| anyhow!("{e}"))
}

fn day(text: &str) -> Result<Day> {
    parse_date_or_instant(text).map_err(|e| anyhow!("{e}"))
}

fn audience(data: &Path, name: Option<&str>) -> Result<Option<RoaringBitmap>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let t = open_tagging(data)?;
    t.audience_members(name)
        .map(Some)
        .map_err(|e| anyhow!("{e}"))
}

fn print_json(v: serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Runs a `history` subcommand.
pub fn run(cmd: HistoryCommand) -> Result<()> {
    match cmd {
        HistoryCommand::Backfill {
            data,
            from,
            to,
            every,
            tags,
            json,
        } => {
            let every: Every = every.parse().map_err(|e| anyhow!("--every: {e}"))?;
            let grid = dates(day(&from)?, day(&to)?, every).map_err(|e| anyhow!("{e}"))?;
            let t = open_tagging(&data)?;
            t.compact().map_err(|e| anyhow!("{e}"))?;
            let h = history(&data)?;
            let report = h
                .backfill(&t, &grid, tags.as_deref(), &mut |p| {
                    eprintln!(
                        "backfill {} ({}/{}) {} events, {:.1}s",
                        p.date,
                        p.done,
                        p.total,
                        p.events_scanned,
                        p.elapsed_ms as f64 / 1000.0
                    );
                })
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                return print_json(serde_json::json!(report));
            }
            println!(
                "{} dates, {} tags ({}), {} bytes written in {} ms",
                report.dates.len(),
                report.tags.len(),
                report.tags.join(", "),
                report.bytes,
                report.duration_ms
            );
            if !report.pruned.is_empty() {
                println!("pruned by retention: {}", report.pruned.join(", "));
            }
            Ok(())
        }
        HistoryCommand::Record { data, date } => {
            let t = open_tagging(&data)?;
            let date = match date {
                Some(d) => day(&d)?,
                None => match t.as_of() {
                    Some(ms) => portrait_history::day_of(ms),
                    None => bail!("no computation has run yet: run `portrait compute` first"),
                },
            };
            let r = history(&data)?
                .record(&t.snapshot(), date)
                .map_err(|e| anyhow!("{e}"))?;
            println!(
                "{}: {} tags, {} files written ({} unchanged), {} bytes",
                r.date, r.tags, r.files_written, r.files_unchanged, r.bytes
            );
            Ok(())
        }
        HistoryCommand::Transitions { q } => {
            let Range {
                history: h,
                tag,
                from,
                to,
                within,
                json,
            } = q.open()?;
            let cells = h
                .transitions(&tag, from, to, within.as_ref())
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                return print_json(serde_json::json!(cells));
            }
            println!("{:<24} {:<24} {:>12}", "from", "to", "count");
            for c in cells {
                println!("{:<24} {:<24} {:>12}", c.from, c.to, c.count);
            }
            Ok(())
        }
        HistoryCommand::Change { value, q } => {
            let Range {
                history: h,
                tag,
                from,
                to,
                within,
                json,
            } = q.open()?;
            let c = h
                .change(&tag, value.as_deref(), from, to, within.as_ref())
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                return print_json(serde_json::json!(c));
            }
            println!(
                "{tag} = {}: before {}, after {}, entered {}, exited {}, stayed {}",
                c.value, c.before, c.after, c.entered, c.exited, c.stayed
            );
            Ok(())
        }
        HistoryCommand::Population { q } => {
            let Range {
                history: h,
                tag,
                from,
                to,
                within,
                json,
            } = q.open()?;
            let points = h
                .population(&tag, from, to, within.as_ref())
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                return print_json(serde_json::json!(points));
            }
            for p in points {
                let values: Vec<String> =
                    p.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{} total={} {}", p.date, p.total, values.join(" "));
            }
            Ok(())
        }
        HistoryCommand::Paths {
            data,
            tag,
            from,
            to,
            every,
            no_collapse,
            limit,
            audience: aud,
            json,
        } => {
            let h = history(&data)?;
            let (from, to) = (day(&from)?, day(&to)?);
            let grid = match every {
                Some(e) => {
                    let e: Every = e.parse().map_err(|e| anyhow!("--every: {e}"))?;
                    dates(from, to, e).map_err(|e| anyhow!("{e}"))?
                }
                None => h
                    .dates(&tag)
                    .map_err(|e| anyhow!("{e}"))?
                    .into_iter()
                    .filter(|d| *d >= from && *d <= to)
                    .collect(),
            };
            let within = audience(&data, aud.as_deref())?;
            let paths = h
                .paths(&tag, &grid, within.as_ref(), !no_collapse, limit)
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                return print_json(serde_json::json!(paths));
            }
            println!(
                "{} dates: {}",
                grid.len(),
                grid.iter()
                    .map(|d| portrait_history::format_day(*d))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for p in paths {
                println!("{:>10}  {}", p.count, p.path.join(" → "));
            }
            Ok(())
        }
        HistoryCommand::Trail {
            data,
            profile,
            tags,
            from,
            to,
            json,
        } => {
            let from = from.as_deref().map(day).transpose()?;
            let to = to.as_deref().map(day).transpose()?;
            let trail = history(&data)?
                .trail(profile, tags.as_deref(), from, to)
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                return print_json(serde_json::json!(trail));
            }
            for e in trail {
                println!(
                    "{} {:<24} {} → {} ({})",
                    e.date,
                    e.tag,
                    e.from.as_deref().unwrap_or(NONE),
                    e.to.as_deref().unwrap_or(NONE),
                    e.cause
                );
            }
            Ok(())
        }
        HistoryCommand::Prune {
            data,
            keep_days,
            today,
        } => {
            let mut h = history(&data)?;
            if let Some(k) = keep_days {
                h.set_retention_days(k).map_err(|e| anyhow!("{e}"))?;
            }
            let today = match today {
                Some(t) => day(&t)?,
                None => portrait_history::day_of(portrait_core::time::now()),
            };
            let r = h.prune(today).map_err(|e| anyhow!("{e}"))?;
            println!(
                "retention {} days: {} dates removed ({} files), {} files rewritten",
                h.retention_days(),
                r.removed_dates.len(),
                r.files_removed,
                r.files_rewritten
            );
            Ok(())
        }
        HistoryCommand::List { data, json } => {
            let h = history(&data)?;
            let mut tags = Vec::new();
            for name in h.tags().map_err(|e| anyhow!("{e}"))? {
                let d = h.dates(&name).map_err(|e| anyhow!("{e}"))?;
                tags.push(serde_json::json!({
                    "tag": name,
                    "dates": d.len(),
                    "first": d.first().map(|x| portrait_history::format_day(*x)),
                    "last": d.last().map(|x| portrait_history::format_day(*x)),
                }));
            }
            let storage = h.storage().map_err(|e| anyhow!("{e}"))?;
            if json {
                return print_json(serde_json::json!({
                    "retention_days": h.retention_days(),
                    "tags": tags,
                    "storage": storage,
                }));
            }
            for t in &tags {
                println!(
                    "{:<28} {:>5} dates  {} … {}",
                    t["tag"].as_str().unwrap_or(""),
                    t["dates"],
                    t["first"].as_str().unwrap_or("-"),
                    t["last"].as_str().unwrap_or("-")
                );
            }
            println!(
                "retention {} days; {} files, {} bytes, {:.1} bytes per tag-value-day",
                h.retention_days(),
                storage.files,
                storage.bytes,
                storage.bytes_per_tag_value_day
            );
            Ok(())
        }
    }
}
