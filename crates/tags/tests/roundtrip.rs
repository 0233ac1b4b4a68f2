//! YAML round trips, parser robustness and the one-line diagnostic format.

#![allow(clippy::unwrap_used)]

use portrait_tags::compile::{compile, Known};
use portrait_tags::def::{parse_defs, to_yaml, Refresh, TagKindDef};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("example.yaml");

#[test]
fn example_round_trips() {
    let defs = parse_defs(EXAMPLE, "example.yaml").unwrap();
    assert_eq!(defs.len(), 5);
    assert_eq!(defs[0].refresh, Refresh::Realtime);
    assert_eq!(defs[0].title.as_deref(), Some("高意向用户"));
    assert_eq!(defs[2].origin.line, 17);
    let yaml = to_yaml(&defs);
    let again = parse_defs(&yaml, "again.yaml").unwrap();
    assert_eq!(defs, again);
    // Same plan from the re-read definitions.
    let a = compile(&defs, &Known::default()).unwrap().plan;
    let b = compile(&again, &Known::default()).unwrap().plan;
    assert_eq!(a, b);
}

#[test]
fn cron_thresholds_and_multiline_round_trip() {
    let text = "name: r\nrefresh: cron \"0 3 * * *\"\nkind: buckets\nof: |\n  days_since(\n    last(event = \"Order Completed\"))\nthresholds: [7, 30.5, 90]\n";
    let defs = parse_defs(text, "x.yaml").unwrap();
    assert_eq!(defs[0].refresh, Refresh::Cron("0 3 * * *".into()));
    match &defs[0].kind {
        TagKindDef::Buckets { of, .. } => {
            assert_eq!(of.text, "days_since(\n  last(event = \"Order Completed\"))")
        }
        other => panic!("{other:?}"),
    }
    let again = parse_defs(&to_yaml(&defs), "y.yaml").unwrap();
    assert_eq!(defs, again);
}

#[test]
fn one_line_diagnostic_format() {
    let text = "name: a\n\nrule:   cnt(event = \"X\") > 1\n";
    let defs = parse_defs(text, "defs/tags.yaml").unwrap();
    let errs = compile(&defs, &Known::default()).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "defs/tags.yaml:3:9: error: unknown function \"cnt\"; did you mean \"count\"?"
    );
}

#[test]
fn dedup_is_structural_across_tags() {
    let text = "name: a\nrule: count(event = \"X\", within 7d) >= 1\n---\nname: b\nrule: count(\"X\" = event, within 168h) >= 2\n";
    let plan = compile(&parse_defs(text, "x").unwrap(), &Known::default())
        .unwrap()
        .plan;
    assert_eq!(plan.aggregates.len(), 1, "{plan}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The parser never panics and errors always point inside (or at the end of) the text.
    #[test]
    fn parser_never_panics(text in "[a-z()\"' ,.=<>!0-9dhw+*/%-]{0,60}") {
        if let Err(e) = portrait_tags::syntax::parse(&text) {
            prop_assert!(e.span.start <= text.len());
        }
    }

    /// Arbitrary nesting depth never overflows the stack.
    #[test]
    fn deep_nesting_is_an_error(depth in 60usize..5000) {
        let text = format!("{}true{}", "(".repeat(depth), ")".repeat(depth));
        let r = portrait_tags::syntax::parse(&text);
        prop_assert_eq!(r.is_ok(), depth < 64);
    }
}
