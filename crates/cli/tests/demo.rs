//! `portrait demo` and `portrait gen` end to end, on a small population.

mod common;

use common::portrait;

#[test]
fn demo_ingests_every_source_and_scores_identity_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("demo");
    let d = d.to_str().expect("utf-8");
    let (ok, out, err) = portrait(&[
        "demo",
        "--dir",
        d,
        "--people",
        "600",
        "--no-serve",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(ok, "demo failed: {err}\n{out}");
    for source in [
        "crm",
        "wechat_followers",
        "tmall",
        "jd",
        "pos",
        "app",
        "web",
        "service",
        "ma",
    ] {
        assert!(
            out.contains(&format!("  {source} ")),
            "no events from {source}:\n{out}"
        );
    }
    let line = out
        .lines()
        .find(|l| l.starts_with("identity resolution"))
        .expect("score line");
    let number = |after: &str| -> f64 {
        let rest = &line[line.find(after).expect("field") + after.len()..];
        rest.split([',', ' '])
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse().ok())
            .expect("number")
    };
    assert!(number("precision ") >= 0.999, "{line}");
    assert!(number("recall ") >= 0.99, "{line}");
    assert!(out.contains("Parquet files"), "{out}");
    assert!(
        out.contains("tags (examples/tags/retail.yaml) as of"),
        "{out}"
    );
    assert!(out.contains("audience lifecycle in"), "{out}");

    // The data directory it leaves is a normal one: the CLI can read it.
    let data = format!("{d}/data");
    let (ok, stats, err) = portrait(&["stats", "--data", &data]);
    assert!(ok, "{err}");
    assert!(stats.contains("profiles"), "{stats}");
    let (ok, out, err) = portrait(&["score", "--data", &data, "--truth", &format!("{d}/input")]);
    assert!(ok, "{err}");
    assert!(out.contains("precision"), "{out}");
    // Re-importing a source changes nothing.
    let crm = format!("{d}/input/crm");
    let (ok, out, err) = portrait(&[
        "import",
        "--data",
        &data,
        "--source",
        "crm",
        "--mapping",
        &format!("{crm}/mapping.yaml"),
        &format!("{crm}/members.csv"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(" 0 imported"), "{out}");
    let (ok, out, err) = portrait(&["compact", "--data", &data]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("compacted 0 events"),
        "nothing new to compact: {out}"
    );
}

#[test]
fn gen_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for out in [&a, &b] {
        let (ok, _, err) = portrait(&[
            "gen",
            "--out",
            out.to_str().expect("utf-8"),
            "--people",
            "300",
            "--seed",
            "9",
        ]);
        assert!(ok, "{err}");
    }
    let read = |p: &std::path::Path| std::fs::read(p.join("crm/members.csv")).expect("crm file");
    assert_eq!(read(&a), read(&b));
    let (ok, _, err) = portrait(&["gen", "--out", "/proc/forbidden", "--people", "10"]);
    assert!(!ok && err.starts_with("error: "), "{err}");
}
