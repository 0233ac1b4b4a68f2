//! Parameterised definition files: a leading `params:` block, `${name}` placeholders, and
//! overrides (`portrait tags apply --set name=value`).

#![allow(clippy::unwrap_used)]

use portrait_tags::def::{parse_defs, parse_defs_with, to_yaml};

const FILE: &str = "params:\n  dormant_days: 30\n  label: dormant\n---\nname: lc\nkind: stage\ncases:\n  - ${label}: days_since(last(event = \"Order Completed\")) > ${dormant_days}\n  - other: true\n";

#[test]
fn defaults_overrides_and_errors() {
    let defs = parse_defs(FILE, "p.yaml").unwrap();
    let yaml = to_yaml(&defs);
    assert!(
        yaml.contains("dormant: days_since(last(event = \"Order Completed\")) > 30"),
        "{yaml}"
    );

    let set = vec![("dormant_days".to_string(), "45".to_string())];
    let yaml = to_yaml(&parse_defs_with(FILE, "p.yaml", &set).unwrap());
    assert!(yaml.contains("> 45"), "{yaml}");

    let unknown = vec![("dormant_dayz".to_string(), "45".to_string())];
    let e = parse_defs_with(FILE, "p.yaml", &unknown).unwrap_err();
    assert!(
        e[0].to_string()
            .contains("no such parameter (params: dormant_days, label)"),
        "{}",
        e[0]
    );

    let e = parse_defs(
        "params:\n  a: 1\n---\nname: x\nrule: count() > ${b}\n",
        "q.yaml",
    )
    .unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "q.yaml:5:1: error: ${b} names no parameter"
    );

    let e = parse_defs_with("name: x\nrule: count() > 1\n", "r.yaml", &set).unwrap_err();
    assert!(e[0].to_string().contains("declares no params"), "{}", e[0]);

    // Errors in the definitions keep their true line numbers after the parameter block.
    let defs = parse_defs(
        "params:\n  a: 1\n---\nname: x\nrule: count( > ${a}\n",
        "s.yaml",
    )
    .unwrap();
    let e = portrait_tags::compile::compile(&defs, &portrait_tags::compile::Known::default())
        .unwrap_err();
    assert!(e[0].to_string().starts_with("s.yaml:5:"), "{}", e[0]);
}

#[test]
fn the_lifecycle_template_compiles_with_defaults_and_overrides() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tags/lifecycle.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let known = portrait_tags::compile::Known::default();
    let defs = parse_defs(&text, "lifecycle.yaml").unwrap();
    portrait_tags::compile::compile(&defs, &known).unwrap();
    let set = vec![("vip_spend".to_string(), "3000".to_string())];
    let defs = parse_defs_with(&text, "lifecycle.yaml", &set).unwrap();
    assert!(to_yaml(&defs).contains(">= 3000"));
    portrait_tags::compile::compile(&defs, &known).unwrap();
}
