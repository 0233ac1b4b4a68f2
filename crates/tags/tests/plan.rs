//! The printed plan of the example bundle (proves aggregate dedup) and YAML round trips.

#![allow(clippy::unwrap_used)]

use expect_test::expect;
use portrait_tags::compile::{compile, Known};
use portrait_tags::def::parse_defs;

const EXAMPLE: &str = include_str!("example.yaml");

#[test]
fn example_plan() {
    let defs = parse_defs(EXAMPLE, "example.yaml").unwrap();
    let compiled = compile(&defs, &Known::default()).unwrap();
    assert!(compiled.warnings.is_empty());
    expect![[r#"
        time zone Asia/Shanghai
        aggregates:
          a0 = count(event = "Product Viewed", within 7d)  :: number
          a1 = count(event = "Product Favorited", within 7d)  :: number
          a2 = count(event = "Product Added", within 7d)  :: number
          a3 = sum(properties.revenue::number, event = "Order Completed", within 90d)  :: number
          a4 = last_time(event = "Order Completed")  :: time
          a5 = count(event = "Order Completed", within 30d)  :: number
          a6 = count(event = "Order Completed")  :: number
        tags:
          t0 high_intent :: bool = rule a0 >= 5 and (a1 >= 1 or a2 >= 2)
              reads events "Product Added", "Product Favorited", "Product Viewed"
          t1 spend_90d :: number = metric a3
              reads events "Order Completed"; properties "revenue"
          t2 lifecycle :: string = stage
              churned: days_since(a4) > 180
              dormant: days_since(a4) > 30
              active: a5 >= 1 and a6 >= 2
              new: a6 >= 1
              prospect: true
              reads events "Order Completed"
          t3 rfm_r :: number = buckets(quantiles 5, reverse) of days_since(a4)
              reads events "Order Completed"
          t4 credit_level :: string = external
    "#]]
    .assert_eq(&compiled.plan.to_string());
}
