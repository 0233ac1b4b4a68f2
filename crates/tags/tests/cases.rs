//! Runs every `tests/cases/*.tagtest` file through the reference evaluator.
//! `PORTRAIT_BLESS=1 cargo test -p portrait-tags --test cases` rewrites the expectations.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use portrait_tags::casefile;
use portrait_tags::eval::reference;

#[test]
fn case_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let bless = std::env::var("PORTRAIT_BLESS").is_ok_and(|v| v == "1");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tagtest"))
        .collect();
    paths.sort();
    let mut failures = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        let name = format!("cases/{}", path.file_name().unwrap().to_string_lossy());
        let outcome = casefile::run(
            &text,
            &name,
            &|plan, profiles, as_of| reference(plan, profiles, as_of),
            bless,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        if let Some(new) = outcome.blessed {
            if new != text {
                std::fs::write(path, new).unwrap();
            }
        } else {
            failures.extend(outcome.failures);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        paths.len() >= 12,
        "expected at least 12 case files, found {}",
        paths.len()
    );
}
