//! Personas leave the signal tags are meant to find.

mod common;

use std::collections::HashMap;

use common::{gen, small};
use portrait_gen::truth::{people, TruthPerson};

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[test]
fn personas_have_signal() {
    let (_dir, out, summary) = gen(&small(8000, 17));
    let per_person = summary.events as f64 / 8000.0;
    assert!(
        (8.0..16.0).contains(&per_person),
        "about 10 events per person at scale 1, got {per_person}"
    );
    let all = people(&out).expect("people");
    let mut by: HashMap<&str, Vec<&TruthPerson>> = HashMap::new();
    for p in &all {
        by.entry(p.persona.as_str()).or_default().push(p);
    }
    let orders = |k: &str| mean(&by[k].iter().map(|p| p.orders as f64).collect::<Vec<_>>());
    let aov = |k: &str| {
        let ps: Vec<_> = by[k].iter().filter(|p| p.orders > 0).collect();
        mean(
            &ps.iter()
                .map(|p| p.revenue / p.orders as f64)
                .collect::<Vec<_>>(),
        )
    };
    assert!(
        orders("loyal") > 2.0 * orders("casual"),
        "loyal buy more often"
    );
    assert!(orders("high_arpu_vip") > orders("casual"));
    assert!(
        aov("high_arpu_vip") > 1.5 * aov("casual"),
        "VIPs spend more per order"
    );
    let discount = |k: &str| {
        let ps: Vec<_> = by[k].iter().filter(|p| p.orders > 0).collect();
        mean(&ps.iter().map(|p| p.discount_rate).collect::<Vec<_>>())
    };
    assert!(
        discount("bargain_hunter") > 1.5 * discount("loyal"),
        "bargain hunters buy at a discount: {} vs {}",
        discount("bargain_hunter"),
        discount("loyal")
    );
    assert_eq!(orders("prospect"), 0.0);
    // Dormant people stopped buying long before the end (2026-11-01), unless a win-back
    // campaign reactivated them.
    let dormant = &by["dormant"];
    let quiet = dormant
        .iter()
        .filter(|p| p.reactivated == 0 && !p.last_order.is_empty())
        .filter(|p| p.last_order.as_str() < "2026-07-01")
        .count();
    let with_orders = dormant
        .iter()
        .filter(|p| p.reactivated == 0 && !p.last_order.is_empty())
        .count();
    assert!(
        quiet as f64 > 0.9 * with_orders as f64,
        "{quiet} of {with_orders}"
    );
    assert!(
        dormant.iter().any(|p| p.reactivated == 1),
        "some dormant people come back after a campaign"
    );
    // Sensitive-skin people mostly buy the sensitive line.
    let sensitive = &by["sensitive_skin"];
    let top = sensitive
        .iter()
        .filter(|p| p.top_category == "敏感肌修护")
        .count();
    assert!(top as f64 > 0.6 * sensitive.iter().filter(|p| p.orders > 0).count() as f64);
    assert!(all
        .iter()
        .filter(|p| p.persona == "new")
        .all(|p| p.first_active.is_empty() || p.first_active.as_str() >= "2026-08-01"));
}
