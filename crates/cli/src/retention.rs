//! `portrait retention`: the retention policy (`DIR/retention.yaml`) and its application.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use portrait_store::retention::{Policy, Rule};
use portrait_store::SourceRegistry;

/// Subcommands of `portrait retention`.
#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Replace the policy: from a YAML file, from `--rule` specs, or with nothing (`--clear`).
    Set {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// A policy file (`rules: [{event?, source?, type?, days}]`, see docs/privacy.md).
        #[arg(long, conflicts_with_all = ["rule", "clear"])]
        file: Option<PathBuf>,
        /// A rule as `KEY=VALUE,…` with keys event, source, type and days, e.g.
        /// `--rule "event=Page Viewed,days=400" --rule "source=web,days=400"`.
        #[arg(long, conflicts_with = "clear")]
        rule: Vec<String>,
        /// Remove every rule (nothing expires).
        #[arg(long)]
        clear: bool,
    },
    /// Print the policy and the last run.
    Show {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Expire the events past their period: content removed from the log and the lake (identity
    /// links kept); prints the counts per rule.
    Apply {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Count periods back from this instant: RFC 3339, or a date (its end in
        /// Asia/Shanghai). Default now.
        #[arg(long)]
        as_of: Option<String>,
    },
}

/// Parses one `--rule` spec: `event=Page Viewed,days=400`. A value may contain commas when
/// the text after the comma is not `KEY=`.
fn parse_rule(spec: &str) -> Result<Rule> {
    const KEYS: [&str; 4] = ["event", "source", "type", "days"];
    let mut fields: Vec<(String, String)> = Vec::new();
    for part in spec.split(',') {
        let key = part.split_once('=').map(|(k, _)| k.trim());
        match (key, fields.last_mut()) {
            (Some(k), _) if KEYS.contains(&k) => {
                let value = part.split_once('=').map_or("", |(_, v)| v).trim();
                fields.push((k.to_string(), value.to_string()));
            }
            (_, Some((_, value))) => {
                value.push(',');
                value.push_str(part);
            }
            (_, None) => bail!(
                "--rule {spec:?}: expected KEY=VALUE pairs with keys event, source, type, days (e.g. \"event=Page Viewed,days=400\")"
            ),
        }
    }
    let mut rule = Rule {
        event: None,
        source: None,
        kind: None,
        days: 0,
    };
    for (k, v) in fields {
        match k.as_str() {
            "event" => rule.event = Some(v),
            "source" => rule.source = Some(v),
            "type" => rule.kind = Some(v),
            _ => {
                rule.days = v
                    .parse()
                    .map_err(|_| anyhow!("--rule {spec:?}: days {v:?} is not a whole number"))?
            }
        }
    }
    Ok(rule)
}

fn print_policy(policy: &Policy) {
    if policy.rules.is_empty() {
        println!("no retention rules: every event is kept");
        return;
    }
    println!("retention rules (an event's period is the shortest rule it matches):");
    for (i, r) in policy.rules.iter().enumerate() {
        println!("  {}. {r}", i + 1);
    }
}

/// Runs a `retention` subcommand.
pub fn run(cmd: RetentionCommand) -> Result<()> {
    match cmd {
        RetentionCommand::Set {
            data,
            file,
            rule,
            clear,
        } => set(&data, file.as_deref(), &rule, clear),
        RetentionCommand::Show { data } => {
            let policy = Policy::load(&data)?;
            print_policy(&policy);
            if let Some(run) = portrait_server::retention::runs(&data).pop() {
                println!(
                    "last run {} (as of {}): {} events expired, {} lake rows, {}",
                    run.completed_at, run.as_of, run.expired, run.lake_rows, run.status
                );
            }
            Ok(())
        }
        RetentionCommand::Apply { data, as_of } => {
            let as_of = match as_of.as_deref() {
                None => portrait_core::time::now(),
                Some(t) => portrait_server::retention::parse_as_of(t).ok_or_else(|| {
                    anyhow!("--as-of {t:?}: expected an RFC 3339 instant (2024-06-30T16:00:00Z) or a date (2024-06-30)")
                })?,
            };
            let engine = crate::commands::open(&data)?;
            let run = portrait_server::retention::apply(&engine, as_of)?;
            println!(
                "expired {} events (as of {}); {} lake rows removed",
                run.expired, run.as_of, run.lake_rows
            );
            for (r, count) in Policy::load(&data)?.rules.iter().zip(&run.rules) {
                println!("  {r}: {}", count.expired);
            }
            if run.consent_kept > 0 {
                println!(
                    "  {} events past their period kept: they record consent decisions",
                    run.consent_kept
                );
            }
            if run.unfit > 0 {
                println!(
                    "  {} events past their period left whole: their shortened record does not fit",
                    run.unfit
                );
            }
            Ok(())
        }
    }
}

fn set(data: &Path, file: Option<&Path>, specs: &[String], clear: bool) -> Result<()> {
    let policy = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            Policy::parse(&text)?
        }
        None if clear => Policy::default(),
        None if specs.is_empty() => {
            bail!("give --file FILE, one or more --rule KEY=VALUE,…, or --clear")
        }
        None => Policy {
            rules: specs.iter().map(|s| parse_rule(s)).collect::<Result<_>>()?,
        },
    };
    // Like every command that writes, not under a running server (PUT /api/v1/retention then).
    let _lock = portrait_store::engine::lock_dir(data)?;
    let sources = SourceRegistry::open(data)?;
    policy.save(data, &sources)?;
    print_policy(&policy);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_specs_parse() {
        let r = parse_rule("event=Page Viewed,days=400").expect("rule");
        assert_eq!(r.event.as_deref(), Some("Page Viewed"));
        assert_eq!(r.days, 400);
        let r = parse_rule("source=web, type=page ,days=30").expect("rule");
        assert_eq!(
            (r.source.as_deref(), r.kind.as_deref()),
            (Some("web"), Some("page"))
        );
        let r = parse_rule("event=Added, then Removed,days=7").expect("comma in a name");
        assert_eq!(r.event.as_deref(), Some("Added, then Removed"));
        assert!(parse_rule("days=ten,event=x").is_err());
        assert!(parse_rule("weeks=3").is_err());
    }
}
