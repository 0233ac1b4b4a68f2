//! Writes a synthetic tag store of N profiles into `DIR/tags/store` for the audience preview
//! benchmark (`bench/audience.sh`): `high_intent` (bool, ~50%), `vip` (bool, ~50%),
//! `complained_30d` (bool, ~3%), `lifecycle` (5 stages), `spend_90d` (numeric, 0–2000).
//!
//! `cargo run --release -p portrait-tagging --example synth_store -- DIR 10000000`

use std::collections::BTreeMap;

use portrait_tagstore::synth::{half_set, mix};
use portrait_tagstore::{RoaringBitmap, TagStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: synth_store DIR N")?);
    let n: u64 = args.next().map_or(Ok(10_000_000), |s| s.parse())?;
    let started = std::time::Instant::now();
    let store = TagStore::new();
    let universe: RoaringBitmap = (0..n as u32).collect();
    store.set_universe(universe);
    store.set_bool("high_intent", half_set(n, 11));
    store.set_bool("vip", half_set(n, 12));
    store.set_bool(
        "complained_30d",
        (0..n as u32)
            .filter(|i| mix(u64::from(*i), 13) % 100 < 3)
            .collect(),
    );
    let stages = ["prospect", "new", "active", "dormant", "churned"];
    let mut by_stage: BTreeMap<String, RoaringBitmap> = BTreeMap::new();
    for i in 0..n as u32 {
        let s = stages[(mix(u64::from(i), 14) % 5) as usize];
        by_stage.entry(s.to_string()).or_default().insert(i);
    }
    store.set_enum("lifecycle", by_stage.into_iter().collect())?;
    store.set_numeric(
        "spend_90d",
        (0..n as u32).map(|i| (i, (mix(u64::from(i), 15) % 200_000) as f64 / 100.0)),
    );
    let stats = store.save(&dir.join("tags").join("store"))?;
    println!(
        "{n} profiles, 5 tags written in {:.1}s: {stats:?}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
