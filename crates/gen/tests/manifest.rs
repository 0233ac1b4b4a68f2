//! The manifest round-trips, every mapping follows docs/import-mapping.md, and every file
//! parses with its mapping (CSV) or as Segment messages (JSON lines).

mod common;

use std::collections::HashSet;

use common::{csv_rows, gen, load_mapping, row_message, small};
use portrait_core::segment::{parse_message, Envelope};
use portrait_core::IdentityConfig;
use portrait_gen::manifest;

#[test]
fn manifest_round_trip_and_shapes_parse() {
    let (_dir, out, summary) = gen(&small(1500, 11));
    let specs = manifest(&out).expect("manifest");
    let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, portrait_gen::source_names());
    let kinds: HashSet<_> = specs.iter().map(|s| s.kind.as_str()).collect();
    for k in [
        "crm",
        "wechat",
        "ecommerce",
        "pos",
        "app",
        "web",
        "ma",
        "service",
    ] {
        assert!(kinds.contains(k), "no source of kind {k}");
    }
    let config = IdentityConfig::default();
    for spec in &specs {
        assert_eq!(summary.records_per_source[&spec.name], spec.records);
        assert!(spec.records > 0, "{} is empty", spec.name);
        assert!(!spec.files.is_empty());
        let mut rows = 0u64;
        let mut ids = HashSet::new();
        match &spec.mapping {
            Some(path) => {
                assert_eq!(spec.format, "csv");
                let text = std::fs::read_to_string(path).expect("mapping");
                assert_eq!(portrait_gen::mapping_yaml(&spec.name), Some(text.as_str()));
                let m = load_mapping(path);
                assert_eq!(m.encoding == "gbk", spec.name == "crm");
                for file in &spec.files {
                    assert!(file.starts_with(out.join(&spec.name)));
                    for (line, row) in csv_rows(file, m.encoding == "gbk") {
                        let msg = row_message(&m, &row, &config, 0)
                            .unwrap_or_else(|e| panic!("{}:{line}: {e}", file.display()));
                        assert!(
                            ids.insert(msg.message_id.clone()),
                            "{}:{line}: duplicate message id",
                            file.display()
                        );
                        rows += 1;
                    }
                }
            }
            None => {
                assert_eq!(spec.format, "segment-jsonl");
                for file in &spec.files {
                    let text = std::fs::read_to_string(file).expect("read");
                    for (i, line) in text.lines().enumerate() {
                        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
                        for key in ["type", "messageId", "timestamp", "context"] {
                            assert!(
                                v.get(key).is_some(),
                                "{}:{}: no {key}",
                                file.display(),
                                i + 1
                            );
                        }
                        let t = v["timestamp"].as_str().expect("timestamp");
                        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");
                        let env = Envelope {
                            source: 1,
                            received_at: 0,
                            ..Envelope::default()
                        };
                        let p = parse_message(&v, &env, &config)
                            .unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), i + 1));
                        assert!(
                            ids.insert(p.message.message_id.clone()),
                            "duplicate messageId"
                        );
                        rows += 1;
                    }
                }
            }
        }
        assert_eq!(rows, spec.records, "{}", spec.name);
    }
}

#[test]
fn noise_is_present_at_the_default_level_and_absent_at_zero() {
    let (_dir, out, _) = gen(&small(4000, 5));
    let text = |p: &str| std::fs::read_to_string(out.join(p)).unwrap_or_default();
    let all = |src: &str| -> String {
        manifest(&out)
            .expect("manifest")
            .iter()
            .filter(|s| s.name == src)
            .flat_map(|s| s.files.clone())
            .map(|f| std::fs::read_to_string(f).expect("read"))
            .collect()
    };
    let tmall = all("tmall");
    assert!(tmall.contains("****"), "masked phones in Tmall orders");
    let pos = all("pos");
    assert!(
        pos.contains("+86 1") || pos.contains("0086 1") || pos.contains("86-1"),
        "phone variants in POS"
    );
    let app = all("app");
    assert!(
        app.contains("\"anonymousId\":\"undefined\"") || app.contains("\"anonymousId\":\"null\"")
    );
    let people = text("truth/people.csv");
    assert!(people.contains("test_account"));
    assert!(
        people
            .lines()
            .any(|l| !l.split(',').nth(2).unwrap_or("").is_empty()),
        "shared family phones"
    );
    let crm = std::fs::read(out.join("crm/members.csv")).expect("crm");
    assert!(
        String::from_utf8(crm.clone()).is_err(),
        "CRM is GBK, not UTF-8"
    );
    let (crm_text, _, bad) = encoding_rs::GBK.decode(&crm);
    assert!(!bad);
    assert!(crm_text.contains("TEST"), "test accounts in the CRM");
    assert!(crm_text.contains("13800138000"), "QA's shared test phone");

    let (_dir0, out0, _) = gen(&portrait_gen::GenOptions {
        noise: 0.0,
        ..small(2000, 5)
    });
    let clean: String = manifest(&out0)
        .expect("manifest")
        .iter()
        .filter(|s| s.name == "tmall" || s.name == "jd" || s.name == "app")
        .flat_map(|s| s.files.clone())
        .map(|f| std::fs::read_to_string(f).expect("read"))
        .collect();
    assert!(!clean.contains("****"));
    assert!(!clean.contains("\"anonymousId\":\"undefined\""));
    assert!(!std::fs::read_to_string(out0.join("truth/people.csv"))
        .expect("people")
        .contains("test_account"));
}

#[test]
fn seasonality_peaks_on_618_and_double_11() {
    let (_dir, out, _) = gen(&small(6000, 3));
    let mut per_day = std::collections::HashMap::<String, u32>::new();
    for spec in manifest(&out).expect("manifest") {
        if spec.name != "tmall" {
            continue;
        }
        for f in spec.files {
            for (_, row) in csv_rows(&f, false) {
                *per_day
                    .entry(row["付款时间"][..10].to_string())
                    .or_default() += 1;
            }
        }
    }
    let mut counts: Vec<u32> = per_day.values().copied().collect();
    counts.sort_unstable();
    let median = counts[counts.len() / 2].max(1);
    for day in ["2026-06-18", "2025-11-11"] {
        let n = per_day.get(day).copied().unwrap_or(0);
        assert!(n > 5 * median, "{day}: {n} orders vs median {median}");
    }
}
