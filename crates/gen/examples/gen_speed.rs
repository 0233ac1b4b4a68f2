//! Measures generation speed: `cargo run --profile bench -p portrait-gen --example gen_speed
//! -- [PEOPLE] [SCALE_EVENTS] [OUT]`. Prints people, events, bytes and events per second.

use std::io::Write;
use std::time::Instant;

use portrait_gen::{generate, GenOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let people: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let scale: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1.0);
    let keep = args.next();
    let tmp = tempfile::tempdir()?;
    let out = keep
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("gen"));
    let opts = GenOptions {
        people,
        scale_events: scale,
        ..GenOptions::default()
    };
    let started = Instant::now();
    let summary = generate(&out, &opts, &mut |_| {})?;
    let secs = started.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "people {}  events {}  bytes {} MB  files {}  {:.2} s  {:.0} events/s  {:.1} events/person",
        summary.people,
        summary.events,
        summary.bytes / 1_000_000,
        summary.files,
        secs,
        summary.events as f64 / secs,
        summary.events as f64 / summary.people.max(1) as f64,
    );
    for (source, n) in &summary.records_per_source {
        let _ = writeln!(stdout, "  {source:<20} {n}");
    }
    Ok(())
}
