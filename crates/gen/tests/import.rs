//! The generated files through the real importer (`portrait-import`): every CSV row becomes a
//! message with the generator's record id, none is rejected, and identity resolution over the
//! imported messages meets the same floor as the generator's own reading.

mod common;

use std::collections::HashMap;

use common::{gen, small};
use portrait_core::segment::{parse_message, Envelope};
use portrait_core::{IdentityConfig, ProfileBook};
use portrait_gen::manifest;
use portrait_gen::truth::score;
use portrait_import::{read_file, Mapping, RowContext};

#[test]
fn generated_files_import_without_rejects_and_resolve() {
    let (_dir, out, summary) = gen(&small(2500, 21));
    let config = IdentityConfig::default();
    // Record ids from the ground truth, per source.
    let mut truth: HashMap<String, Vec<String>> = HashMap::new();
    let text = std::fs::read_to_string(out.join("truth/records.csv")).expect("records");
    let mut r = csv::Reader::from_reader(text.as_bytes());
    for rec in r.records() {
        let rec = rec.expect("record");
        truth
            .entry(rec[0].to_string())
            .or_default()
            .push(rec[1].to_string());
    }
    let mut book = ProfileBook::new(config.clone());
    let mut n = 0u64;
    for (s, spec) in manifest(&out).expect("manifest").iter().enumerate() {
        let mut ids = Vec::new();
        match &spec.mapping {
            Some(path) => {
                let mapping =
                    Mapping::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let ctx = RowContext {
                    config: config.clone(),
                    source: s as u32,
                    received_at: 0,
                };
                for file in &spec.files {
                    let rows = read_file(file, &mapping, &ctx)
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    for row in rows {
                        let (line, msg) = row.unwrap_or_else(|e| {
                            panic!("{}: rejected {e}: {}", file.display(), e.raw)
                        });
                        assert!(line >= 2);
                        assert!(!msg.identifiers.is_empty());
                        assert!(
                            msg.timestamp > 1_600_000_000_000,
                            "{}:{line}: timestamp from the file",
                            file.display()
                        );
                        ids.push(
                            msg.message_id
                                .strip_prefix("import:")
                                .expect("import: prefix")
                                .to_string(),
                        );
                        book.apply(&msg, n);
                        n += 1;
                    }
                }
            }
            None => {
                for file in &spec.files {
                    for line in std::fs::read_to_string(file).expect("read").lines() {
                        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
                        let env = Envelope {
                            source: s as u32,
                            received_at: 0,
                            ..Envelope::default()
                        };
                        let msg = parse_message(&v, &env, &config).expect("segment").message;
                        ids.push(msg.message_id.clone());
                        book.apply(&msg, n);
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(ids.len() as u64, spec.records, "{}", spec.name);
        let mut expected = truth.remove(&spec.name).unwrap_or_default();
        expected.sort_unstable();
        ids.sort_unstable();
        assert!(
            ids == expected,
            "{}: message ids differ from the truth record ids",
            spec.name
        );
    }
    assert_eq!(n, summary.events);
    let s = score(&out, &config, |id| {
        book.by_identifier(id).and_then(|p| book.resolve(p))
    })
    .expect("score");
    eprintln!("{s}");
    assert!(s.precision >= 0.999, "precision {}", s.precision);
    assert!(s.recall >= 0.99, "recall {}", s.recall);
    assert!(
        s.linkable_recall >= 0.999,
        "linkable recall {}",
        s.linkable_recall
    );
}
