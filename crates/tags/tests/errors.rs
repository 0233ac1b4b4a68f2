//! Snapshots of rendered diagnostics for broken definitions and audiences.

#![allow(clippy::unwrap_used)]

use expect_test::{expect, Expect};
use portrait_tags::compile::{compile, compile_audience, Known};
use portrait_tags::def::parse_defs;
use portrait_tags::value::Type;

fn diagnostics(yaml: &str) -> String {
    let known = Known {
        events: vec!["Order Completed".into(), "Product Viewed".into()],
        ..Known::default()
    };
    let result = parse_defs(yaml, "defs/tags.yaml").and_then(|defs| compile(&defs, &known));
    match result {
        Ok(c) => {
            let w: Vec<String> = c.warnings.iter().map(|d| d.render()).collect();
            format!("OK\n{}", w.join(""))
        }
        Err(ds) => ds.iter().map(|d| d.render()).collect::<Vec<_>>().join(""),
    }
}

fn check(yaml: &str, expect: Expect) {
    expect.assert_eq(&diagnostics(yaml));
}

fn audience(text: &str) -> String {
    let tags = vec![
        ("high_intent".to_string(), Type::Bool),
        ("lifecycle".to_string(), Type::Str),
        ("arpu_90d".to_string(), Type::Number),
        ("complained_30d".to_string(), Type::Bool),
    ];
    match compile_audience(text, &tags, chrono_tz::Asia::Shanghai) {
        Ok(e) => format!("OK {e}"),
        Err(ds) => ds.iter().map(|d| d.render()).collect::<Vec<_>>().join(""),
    }
}

#[test]
fn unknown_function() {
    check(
        "name: a\nrule: cnt(event = \"Order Completed\") > 1\n",
        expect![[r#"
        error: unknown function "cnt"
         --> defs/tags.yaml:2:7
          |
        2 | rule: cnt(event = "Order Completed") > 1
          |       ^^^
          = hint: did you mean "count"?
    "#]],
    );
}

#[test]
fn bad_duration() {
    check(
        "name: a\nrule: count(event = \"Order Completed\", within 7days) > 1\n",
        expect![[r#"
        error: bad duration "7days"
         --> defs/tags.yaml:2:47
          |
        2 | rule: count(event = "Order Completed", within 7days) > 1
          |                                               ^^^^^
          = hint: a duration is a number followed by m (minutes), h, d or w, e.g. 7d
    "#]],
    );
}

#[test]
fn missing_unit() {
    check(
        "name: a\nrule: count(event = \"Order Completed\", within 7) > 1\n",
        expect![[r#"
        error: missing unit in `within`
         --> defs/tags.yaml:2:47
          |
        2 | rule: count(event = "Order Completed", within 7) > 1
          |                                               ^
          = hint: add a unit: m (minutes), h, d or w, e.g. 7d; or write `within 7 calendar days`
    "#]],
    );
}

#[test]
fn unclosed_paren() {
    check(
        "name: a\nrule: (count(event = \"Order Completed\") > 1\n",
        expect![[r#"
        error: expected `)` to close the parenthesis, found end of expression
         --> defs/tags.yaml:2:44
          |
        2 | rule: (count(event = "Order Completed") > 1
          |                                            ^
          = hint: close the parenthesis
    "#]],
    );
}

#[test]
fn missing_operand() {
    check(
        "name: a\nrule: count(event = \"Order Completed\") >\n",
        expect![[r#"
        error: missing operand at the end of the expression
         --> defs/tags.yaml:2:41
          |
        2 | rule: count(event = "Order Completed") >
          |                                         ^
          = hint: an operator needs a value on each side
    "#]],
    );
}

#[test]
fn type_mismatch() {
    check(
        "name: a\nrule: count(event = \"Order Completed\") = \"x\"\n",
        expect![[r#"
        error: type mismatch: cannot compare a number with text
         --> defs/tags.yaml:2:7
          |
        2 | rule: count(event = "Order Completed") = "x"
          |       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
          = hint: a count or sum is a number: compare it with a number, e.g. `>= 1`
    "#]],
    );
}

#[test]
fn aggregate_inside_filter() {
    check(
        "name: a\nrule: count(count(event = \"Order Completed\") > 1) > 1\n",
        expect![[r#"
        error: aggregate `count` inside a filter
         --> defs/tags.yaml:2:13
          |
        2 | rule: count(count(event = "Order Completed") > 1) > 1
          |             ^^^^^
          = hint: filters test one event; move the aggregate out, e.g. count(A) >= 1 and count(B) >= 1
    "#]],
    );
}

#[test]
fn nested_aggregate() {
    check(
        "name: a\nkind: metric\nvalue: max(sum(properties.revenue))\n",
        expect![[r#"
        error: aggregates cannot nest: `sum` inside another aggregate
         --> defs/tags.yaml:3:12
          |
        3 | value: max(sum(properties.revenue))
          |            ^^^
    "#]],
    );
}

#[test]
fn cycle_between_two_tags() {
    check(
        "name: a\nrule: tag.b\n---\nname: b\nrule: not tag.a\n",
        expect![[r#"
        error: tags depend on each other in a cycle: a → b → a
         --> defs/tags.yaml:2:7
          |
        2 | rule: tag.b
          |       ^^^^^
          = hint: a tag cannot read itself, directly or through other tags
    "#]],
    );
}

#[test]
fn unknown_tag() {
    check(
        "name: a\nrule: tag.high_intnet\n---\nname: high_intent\nrule: count(event = \"Product Viewed\") > 5\n",
        expect![[r#"
            error: unknown tag "high_intnet"
             --> defs/tags.yaml:2:7
              |
            2 | rule: tag.high_intnet
              |       ^^^^^^^^^^^^^^^
              = hint: did you mean "high_intent"?
        "#]],
    );
}

#[test]
fn wrong_window_order() {
    check(
        "name: a\nrule: count(event = \"Order Completed\", between 30d and 90d ago) > 1\n",
        expect![[r#"
            error: wrong window order: 30d is not further back than 90d
             --> defs/tags.yaml:2:48
              |
            2 | rule: count(event = "Order Completed", between 30d and 90d ago) > 1
              |                                                ^^^
              = hint: write the far end first: between 90d and 30d ago
        "#]],
    );
}

#[test]
fn unknown_yaml_field() {
    check(
        "name: a\nrule: true\naudience: true\n",
        expect![[r#"
        error: unknown field `audience`
         --> defs/tags.yaml:3:1
          |
        3 | audience: true
          | ^^^^^^^^
          = hint: audiences are defined separately, not as tag fields
    "#]],
    );
}

#[test]
fn trailing_garbage() {
    check(
        "name: a\nrule: count(event = \"Order Completed\") > 1 )\n",
        expect![[r#"
        error: unexpected `)` after the end of the expression
         --> defs/tags.yaml:2:44
          |
        2 | rule: count(event = "Order Completed") > 1 )
          |                                            ^
          = hint: remove the extra `)`
    "#]],
    );
}

#[test]
fn depth_limit() {
    let deep = format!("name: a\nrule: {}true{}\n", "not ".repeat(100), "");
    check(
        &deep,
        expect![[r#"
        error: expression nested too deeply (more than 64 levels)
         --> defs/tags.yaml:2:263
          |
        2 | rule: not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not not true
          |                                                                                                                                                                                                                                                                       ^^^
          = hint: split it into several tags
    "#]],
    );
}

#[test]
fn within_outside_aggregate() {
    check(
        "name: a\nrule: count(event = \"Order Completed\") > 1 within 7d\n",
        expect![[r#"
        error: unexpected `within` after the end of the expression
         --> defs/tags.yaml:2:44
          |
        2 | rule: count(event = "Order Completed") > 1 within 7d
          |                                            ^^^^^^
          = hint: a window belongs inside an aggregate's parentheses, e.g. count(event = "X", within 7d)
    "#]],
    );
}

#[test]
fn error_in_folded_block_points_into_the_right_line() {
    check(
        "name: a\ntitle: 测试\nrule: >\n  count(event = \"Product Viewed\", within 7d) >= 5\n  and count(evnt = \"Order Completed\", within 30d) >= 1\n",
        expect![[r#"
            error: unknown name `evnt`
             --> defs/tags.yaml:5:13
              |
            5 |   and count(evnt = "Order Completed", within 30d) >= 1
              |             ^^^^
              = hint: did you mean `event`?
        "#]],
    );
}

#[test]
fn stage_case_error_points_into_its_case() {
    check(
        "name: s\nkind: stage\ncases:\n  - a: true\n  - b: count(event = \"Order Completed\") >= \"1\"\n",
        expect![[r#"
            error: type mismatch: cannot compare a number with text
             --> defs/tags.yaml:5:8
              |
            5 |   - b: count(event = "Order Completed") >= "1"
              |        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
              = hint: a count or sum is a number: compare it with a number, e.g. `>= 1`
        "#]],
    );
}

#[test]
fn warning_unknown_event() {
    check(
        "name: a\nrule: count(event = \"Order Complete\") >= 1\n",
        expect![[r#"
        OK
        warning: unknown event "Order Complete"
         --> defs/tags.yaml:2:21
          |
        2 | rule: count(event = "Order Complete") >= 1
          |                     ^^^^^^^^^^^^^^^^
          = hint: did you mean "Order Completed"?
    "#]],
    );
}

#[test]
fn audience_using_an_aggregate() {
    expect![[r#"
        error: aggregates such as `count` are not allowed in audiences
         --> <audience>:1:17
          |
        1 | high_intent and count(event = "Order Completed") > 1
          |                 ^^^^^
          = hint: define a tag with the aggregate and select on the tag
    "#]]
    .assert_eq(&audience(
        "high_intent and count(event = \"Order Completed\") > 1",
    ));
}

#[test]
fn audience_ok() {
    expect![[r#"OK t0 and t1 in ("active", "new") and t2 >= 500 and not t3 and traits.city::string = "上海""#]].assert_eq(&audience(
        "high_intent and lifecycle in (\"active\",\"new\") and arpu_90d >= 500 and not tag.complained_30d and traits.city = \"上海\"",
    ));
}

#[test]
fn audience_unknown_tag() {
    expect![[r#"
        error: unknown tag "high_intnt"
         --> <audience>:1:1
          |
        1 | high_intnt or arpu_90d > 1
          | ^^^^^^^^^^
          = hint: did you mean "high_intent"?
    "#]]
    .assert_eq(&audience("high_intnt or arpu_90d > 1"));
}
