//! Same options → same bytes, whatever the thread count; another seed → other bytes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{gen, small};
use portrait_gen::GenOptions;

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn same_seed_same_bytes_across_thread_counts() {
    let opts = GenOptions {
        threads: 1,
        ..small(700, 7)
    };
    let (_a, out_a, sum_a) = gen(&opts);
    let (_b, out_b, sum_b) = gen(&GenOptions {
        threads: 3,
        ..opts.clone()
    });
    assert_eq!(sum_a, sum_b);
    let (fa, fb) = (files(&out_a), files(&out_b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        assert!(bytes == &fb[name], "{name} differs between runs");
    }
    assert!(
        fa.len() > 20,
        "expected monthly files for every source, got {}",
        fa.len()
    );
    assert_eq!(sum_a.files as usize, fa.len());
    assert_eq!(
        sum_a.bytes,
        fa.values().map(|b| b.len() as u64).sum::<u64>()
    );
}

#[test]
fn other_seed_other_bytes_and_regeneration_replaces() {
    let (_a, out_a, _) = gen(&small(300, 1));
    let (_b, out_b, _) = gen(&small(300, 2));
    let (fa, fb) = (files(&out_a), files(&out_b));
    for name in [
        "crm/members.csv",
        "truth/identifiers.csv",
        "wechat_followers/followers.csv",
    ] {
        assert_ne!(fa[name], fb[name], "{name} should depend on the seed");
    }
    // Regenerating into the same folder with other options replaces the old set.
    let shorter = GenOptions {
        days: 40,
        ..small(300, 2)
    };
    portrait_gen::generate(&out_a, &shorter, &mut |_| {}).expect("regenerate");
    let again = files(&out_a);
    let listed: Vec<_> = portrait_gen::manifest(&out_a)
        .expect("manifest")
        .iter()
        .flat_map(|s| {
            s.files
                .iter()
                .chain(&s.mapping)
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    let data_files = again
        .keys()
        .filter(|k| !k.starts_with("truth/") && k.as_str() != "sources.yaml")
        .count();
    assert_eq!(
        data_files,
        listed.len(),
        "stale files from the first generation remain"
    );
    // A non-empty folder that is not a generation is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("precious.txt"), "keep").expect("write");
    let err = portrait_gen::generate(dir.path(), &small(10, 1), &mut |_| {});
    assert!(matches!(err, Err(portrait_gen::GenError::NotEmpty(_))));
}

#[test]
fn progress_reaches_people_and_counts_add_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    let opts = GenOptions {
        people: 9000,
        scale_events: 0.2,
        ..GenOptions::default()
    };
    let summary = portrait_gen::generate(&dir.path().join("o"), &opts, &mut |n| seen.push(n))
        .expect("generate");
    assert_eq!(summary.people, 9000);
    assert_eq!(seen.last().copied(), Some(9000));
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        summary.events,
        summary.records_per_source.values().sum::<u64>()
    );
    let people = portrait_gen::truth::people(&dir.path().join("o")).expect("people");
    assert_eq!(people.len(), 9000);
}

#[test]
fn edge_options() {
    for opts in [
        GenOptions {
            people: 0,
            ..GenOptions::default()
        },
        GenOptions {
            days: 1,
            ..small(200, 3)
        },
        GenOptions {
            days: 3650,
            ..small(100, 3)
        },
        GenOptions {
            scale_events: 0.0,
            ..small(200, 3)
        },
        GenOptions {
            noise: 20.0,
            scale_events: 5.0,
            ..small(200, 3)
        },
        GenOptions {
            record_truth: false,
            ..small(50, 3)
        },
    ] {
        let (_d, out, summary) = gen(&opts);
        assert_eq!(summary.people, opts.people);
        let specs = portrait_gen::manifest(&out).expect("manifest");
        assert_eq!(specs.iter().map(|s| s.records).sum::<u64>(), summary.events);
        assert_eq!(out.join("truth/records.csv").exists(), opts.record_truth);
        if opts.days == 1 {
            for s in &specs {
                assert!(s.files.len() <= 1, "{}: one month at most", s.name);
            }
        }
    }
    for bad in [
        GenOptions {
            days: 0,
            ..GenOptions::default()
        },
        GenOptions {
            noise: f64::NAN,
            ..GenOptions::default()
        },
        GenOptions {
            scale_events: -1.0,
            ..GenOptions::default()
        },
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = portrait_gen::generate(dir.path(), &bad, &mut |_| {});
        assert!(
            matches!(r, Err(portrait_gen::GenError::Options(_))),
            "{bad:?}"
        );
    }
}
