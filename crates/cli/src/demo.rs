//! `portrait gen`, `portrait score` and `portrait demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use portrait_gen::truth::IdentityScore;
use portrait_gen::{GenOptions, GenSummary};
use portrait_store::{Engine, SourceKind};

use crate::commands::{import, open};
use crate::http;

fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// `portrait gen`: writes a data set with a progress bar.
pub fn generate(out: &Path, opts: &GenOptions) -> Result<GenSummary> {
    let progress = bar(
        opts.people,
        "generating {bar:30} {pos}/{len} people {per_sec} eta {eta}",
    );
    let started = Instant::now();
    let summary = portrait_gen::generate(out, opts, &mut |done| progress.set_position(done))
        .with_context(|| format!("cannot generate into {}", out.display()))?;
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "generated {} people, {} records ({:.1} MB) into {} in {secs:.1}s ({:.0} records/s)",
        summary.people,
        summary.events,
        summary.bytes as f64 / 1e6,
        out.display(),
        summary.events as f64 / secs.max(1e-9),
    );
    Ok(summary)
}

/// Scores the engine's identity resolution against a generated data set's truth.
pub fn score_engine(engine: &Engine, truth: &Path) -> Result<IdentityScore> {
    let state = engine.state();
    let score =
        portrait_gen::truth::score(truth, engine.identity(), |id| state.book.by_identifier(id))?;
    Ok(score)
}

fn print_score(s: &IdentityScore) {
    println!(
        "identity resolution vs ground truth: precision {:.4}, recall {:.4} ({} of {} same-person pairs found, {} wrongly paired)",
        s.precision,
        s.recall,
        s.correct_pairs,
        s.true_pairs,
        s.predicted_pairs - s.correct_pairs
    );
    println!(
        "  {} people → {} profiles; {} over-merged profiles, {} under-merged people, {} ambiguous identifiers (shared phones) left out",
        s.people, s.profiles, s.over_merged_profiles, s.under_merged_people, s.ambiguous_identifiers
    );
}

/// `portrait score`.
pub fn score(data: &Path, truth: &Path) -> Result<()> {
    let engine = open(data)?;
    let s = score_engine(&engine, truth)?;
    print_score(&s);
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({
            "precision": s.precision, "recall": s.recall, "true_pairs": s.true_pairs,
            "predicted_pairs": s.predicted_pairs, "correct_pairs": s.correct_pairs,
            "people": s.people, "profiles": s.profiles,
            "over_merged_profiles": s.over_merged_profiles, "under_merged_people": s.under_merged_people,
        }))?
    );
    Ok(())
}

/// Sends a Segment JSON-lines file to `/v1/batch` in batches under the size limit.
fn send_jsonl(
    addr: &str,
    key: &str,
    file: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<u64> {
    use std::io::BufRead;
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    let mut client = http::Client::connect(addr)?;
    let auth = http::basic(key);
    let mut sent = 0u64;
    let mut body = String::from("{\"batch\":[");
    let mut count = 0usize;
    let mut flush = |body: &mut String, count: &mut usize| -> Result<()> {
        if *count == 0 {
            return Ok(());
        }
        body.push_str("]}");
        let (status, answer) = client.post("/v1/batch", &auth, body.as_bytes())?;
        if status != 200 {
            bail!(
                "{}: HTTP {status}: {}",
                file.display(),
                String::from_utf8_lossy(&answer)
            );
        }
        sent += *count as u64;
        progress.inc(*count as u64);
        body.truncate("{\"batch\":[".len());
        *count = 0;
        Ok(())
    };
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if body.len() + line.len() > 400 * 1024 || count >= 500 {
            flush(&mut body, &mut count)?;
        }
        if count > 0 {
            body.push(',');
        }
        body.push_str(&line);
        count += 1;
    }
    flush(&mut body, &mut count)?;
    Ok(sent)
}

/// Options of `portrait demo`.
pub struct DemoOptions {
    /// Folder for the generated input and the data directory.
    pub dir: PathBuf,
    /// People to generate.
    pub people: u64,
    /// Generator seed.
    pub seed: u64,
    /// Address to serve on afterwards.
    pub listen: SocketAddr,
    /// Keep serving after the report (until Ctrl-C).
    pub serve: bool,
}

/// `portrait demo`.
pub fn demo(o: &DemoOptions) -> Result<()> {
    let started = Instant::now();
    let input = o.dir.join("input");
    let data = o.dir.join("data");
    if data.exists() {
        if !data.join("sources.json").exists() && std::fs::read_dir(&data)?.next().is_some() {
            bail!(
                "{} exists and is not a Portrait data directory; choose another --dir",
                data.display()
            );
        }
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot clear {}", data.display()))?;
    }
    println!(
        "Portrait demo — a brand with {} customers across 10 channels\n",
        o.people
    );
    println!(
        "[1/4] Generating the channels' exports into {}",
        input.display()
    );
    let opts = GenOptions {
        people: o.people,
        seed: o.seed,
        ..GenOptions::default()
    };
    generate(&input, &opts)?;
    let specs = portrait_gen::manifest(&input)?;

    let engine = Arc::new(crate::commands::open_with(&data, None)?.0);
    let mut keys = Vec::new();
    for spec in &specs {
        let kind = SourceKind::parse(&spec.kind)?;
        let source = engine.sources_mut().add(&spec.name, kind, None)?;
        keys.push(source.write_keys[0].clone());
    }
    let (token, _) =
        portrait_server::admin_token(&data, std::env::var("PORTRAIT_ADMIN_TOKEN").ok())?;
    let tagging = Arc::new(portrait_tagging::service::Tagging::open(engine.clone())?);
    let server =
        crate::commands::spawn_server(engine.clone(), tagging.clone(), o.listen, token.clone())?;
    let addr = server.addr.to_string();

    println!("[2/4] Importing files through their mappings");
    let mut records = 0u64;
    let mut rejected = 0u64;
    for spec in specs.iter().filter(|s| s.mapping.is_some()) {
        let mapping = spec.mapping.as_deref().unwrap_or(Path::new(""));
        let s = import(
            &engine,
            &spec.name,
            mapping,
            Some(&o.dir.join("rejects")),
            &spec.files,
            true,
        )?;
        records += s.rows;
        rejected += s.rejected;
    }
    println!("[3/4] Sending app and web clickstreams to http://{addr}/v1/batch");
    for (spec, key) in specs.iter().zip(&keys).filter(|(s, _)| s.mapping.is_none()) {
        let progress = bar(
            spec.records,
            "{msg} {bar:30} {pos}/{len} messages {per_sec}",
        );
        progress.set_message(spec.name.clone());
        for file in &spec.files {
            records += send_jsonl(&addr, key, file, &progress)?;
        }
        progress.finish_and_clear();
        println!("{}: {} messages sent over HTTP", spec.name, spec.records);
    }

    println!("\n[4/4] Report");
    let score = score_engine(&engine, &input)?;
    {
        let state = engine.state();
        let sources = engine.sources();
        println!(
            "{} source records ({} rejected as unusable) → {} profiles after identity resolution ({} merges, {} identifiers)",
            records,
            rejected,
            state.book.live(),
            state.book.merges(),
            state.book.identifiers(),
        );
        println!("events per source:");
        for (s, n) in &state.stats.per_source {
            println!("  {:<22} {n:>9}", sources.name(*s));
        }
    }
    print_score(&score);
    let lake = portrait_lake::compact(&engine, &mut |_| {})?;
    println!(
        "event lake for the batch engine: {} events in {} Parquet files ({:.1} MB) under {}",
        lake.events,
        lake.files.len(),
        lake.bytes as f64 / 1e6,
        portrait_lake::lake_dir(&data).display()
    );
    let as_of = engine.state().book.profiles().map(|p| p.last_seen).max();
    if let Some(as_of) = as_of {
        demo_tags(&tagging, as_of)?;
    }
    let example = {
        let state = engine.state();
        state
            .book
            .profiles()
            .max_by_key(|p| (p.sources.len(), p.events.len()))
            .map(|p| {
                (
                    p.id,
                    p.sources.len(),
                    p.identifiers.iter().find(|i| i.kind == "phone").cloned(),
                )
            })
    };
    println!("done in {:.1}s\n", started.elapsed().as_secs_f64());
    if let Some((id, n, phone)) = example {
        println!("The most connected profile, {id}, joins {n} channels:");
        println!("  curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/profiles/{id}");
        println!("  curl -H 'Authorization: Bearer {token}' 'http://{addr}/api/v1/profiles/{id}/events?limit=5'");
        println!(
            "  curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/profiles/{id}/merges"
        );
        println!("  curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/profiles/{id}/tags/lifecycle/explain");
        if let Some(phone) = phone {
            println!("  curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/profiles/by-identifier/phone/{}", phone.value.replace('+', "%2B"));
        }
    }
    if o.serve {
        println!("\nServing {} on http://{addr} (admin token above; write keys: portrait source list --data {} after stopping). Ctrl-C to stop.", data.display(), data.display());
        server.wait_ctrl_c();
    } else {
        server.stop();
    }
    engine.close();
    Ok(())
}

/// The starter tag bundle (examples/tags/retail.yaml), applied, computed as of the last event,
/// with its populations and two audiences.
fn demo_tags(tagging: &portrait_tagging::service::Tagging, as_of: i64) -> Result<()> {
    let bundle = include_str!("../../../examples/tags/retail.yaml");
    tagging
        .apply(bundle, "examples/tags/retail.yaml", "demo", true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = portrait_tagging::service::ComputeOptions {
        as_of: Some(as_of),
        skip_compaction: true,
        ..Default::default()
    };
    let report = tagging
        .compute(&opts, &mut |_| {})
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    portrait_history::record_computation(tagging, report.as_of)
        .map_err(|e| anyhow::anyhow!("tag history: {e}"))?;
    println!(
        "tags (examples/tags/retail.yaml) as of {}: {} tags from {} aggregates in one scan of {} events, {} ms",
        portrait_core::time::format_iso(report.as_of),
        report.tags.len(),
        report.aggregates,
        report.events_scanned,
        report.duration_ms
    );
    for t in &report.tags {
        println!("  {:<20} {:>8} profiles", t.name, t.population);
    }
    for expr in [
        r#"lifecycle in ("active", "new") and spend_90d >= 300"#,
        r#"lifecycle = "dormant" and rfm_f >= 2"#,
    ] {
        let p = tagging
            .preview(expr, 0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("  audience {expr}: {} of {}", p.count, p.universe);
    }
    Ok(())
}
