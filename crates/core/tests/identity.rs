//! Identity resolution through `ProfileBook::apply`: data-driven cases built from Segment
//! messages (parsed with `segment::parse_message`), merge records, per-type limits, blocked
//! values, trait merge rules, event order and unmerge.

use std::collections::BTreeSet;

use portrait_core::profile::ProfileError;
use portrait_core::segment::{parse_message, Envelope};
use portrait_core::time::{format_iso, Millis};
use portrait_core::{
    ApplyOutcome, Identifier, IdentityConfig, Message, MessageKind, Profile, ProfileBook,
    ProfileId, SourceId,
};
use serde_json::{json, Map, Value};

/// 2024-01-01T00:00:00Z.
const BASE: Millis = 1_704_067_200_000;

/// Builds the `n`th message of a case from a compact spec: whitespace-separated `key=value`.
///
/// Keys: `type` (default `identify`), `mid` (message id, default `m{n}`), `ts` (event time, in
/// seconds after [`BASE`]; default the receive time `BASE + n s`), `src` (source id, default 1),
/// `user_id`, `anonymous_id`, `previous_id`, `device_id`, `ext.TYPE` (a `context.externalIds`
/// entry), `t.KEY` (a trait), and any other key is a trait too (`phone`, `email`, `member_id`, …).
fn spec_json(spec: &str, n: usize) -> (Value, SourceId, Millis) {
    let mut obj = Map::new();
    let mut traits = Map::new();
    let mut context = Map::new();
    let mut external = Vec::new();
    let mut source = 1;
    obj.insert("type".into(), "identify".into());
    obj.insert("messageId".into(), format!("m{n}").into());
    for token in spec.split_whitespace() {
        let (k, v) = token
            .split_once('=')
            .unwrap_or_else(|| panic!("bad token `{token}`"));
        match k {
            "type" => {
                obj.insert("type".into(), v.into());
                if v == "track" {
                    obj.insert("event".into(), "Order Completed".into());
                }
            }
            "mid" => {
                obj.insert("messageId".into(), v.into());
            }
            "ts" => {
                let secs: i64 = v.parse().expect("ts is whole seconds");
                obj.insert("timestamp".into(), format_iso(BASE + secs * 1000).into());
            }
            "src" => source = v.parse().expect("src is a number"),
            "user_id" => {
                obj.insert("userId".into(), v.into());
            }
            "anonymous_id" => {
                obj.insert("anonymousId".into(), v.into());
            }
            "previous_id" => {
                obj.insert("previousId".into(), v.into());
            }
            "device_id" => {
                context.insert("device".into(), json!({ "id": v }));
            }
            _ => {
                if let Some(kind) = k.strip_prefix("ext.") {
                    external.push(json!({ "id": v, "type": kind }));
                } else {
                    traits.insert(k.strip_prefix("t.").unwrap_or(k).into(), v.into());
                }
            }
        }
    }
    if !external.is_empty() {
        context.insert("externalIds".into(), external.into());
    }
    // Segment requires userId or anonymousId; identifier-only specs get a blocked placeholder
    // that parse_message drops, so the message is identified by its traits alone.
    if !obj.contains_key("userId") && !obj.contains_key("anonymousId") {
        obj.insert("anonymousId".into(), "anonymous".into());
    }
    obj.insert("traits".into(), traits.into());
    obj.insert("context".into(), context.into());
    (Value::Object(obj), source, BASE + n as i64 * 1000)
}

fn parse_with(spec: &str, n: usize, config: &IdentityConfig) -> Message {
    let (value, source, received_at) = spec_json(spec, n);
    let env = Envelope {
        source,
        received_at,
        ..Default::default()
    };
    parse_message(&value, &env, config)
        .unwrap_or_else(|e| panic!("message {n} `{spec}` refused: {e}"))
        .message
}

fn ids(list: &[Identifier]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn ident(text: &str) -> Identifier {
    Identifier::parse_pair(text).expect("type:value")
}

/// The live profiles as sets of `type:value` identifiers.
fn groups(book: &ProfileBook) -> BTreeSet<BTreeSet<String>> {
    book.profiles()
        .map(|p| ids(&p.identifiers).into_iter().collect())
        .collect()
}

fn expected_groups(groups: &[&[&str]]) -> BTreeSet<BTreeSet<String>> {
    groups
        .iter()
        .map(|g| g.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Invariants that hold after every apply.
fn check(book: &ProfileBook, applied: usize) {
    let mut seen = BTreeSet::new();
    let mut events = 0;
    for p in book.profiles() {
        assert_eq!(
            book.resolve(p.id),
            Some(p.id),
            "a live profile resolves to itself"
        );
        for id in &p.identifiers {
            assert_eq!(
                book.by_identifier(id),
                Some(p.id),
                "{id} indexed to its profile"
            );
            assert!(seen.insert(id.to_string()), "{id} listed by two profiles");
        }
        assert!(
            p.events.windows(2).all(|w| w[0] <= w[1]),
            "events sorted in {}",
            p.id
        );
        events += p.events.len();
    }
    assert_eq!(
        book.identifiers(),
        seen.len(),
        "index size equals listed identifiers"
    );
    assert_eq!(book.live(), book.profiles().count());
    assert_eq!(
        events, applied,
        "every applied message is in exactly one profile"
    );
}

/// Applies specs in order (log position = index), checking invariants after each.
fn run(book: &mut ProfileBook, specs: &[&str]) -> Vec<(Message, ApplyOutcome)> {
    let config = book.config().clone();
    let start = book.profiles().map(|p| p.events.len()).sum::<usize>();
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let n = start + i;
            let m = parse_with(spec, n, &config);
            let out = book.apply(&m, n as u64);
            check(book, n + 1);
            (m, out)
        })
        .collect()
}

fn config_with(limits: &[(&str, u32)]) -> IdentityConfig {
    let mut types = IdentityConfig::default().types;
    for (name, limit) in limits {
        let t = types
            .iter_mut()
            .find(|t| t.name == *name)
            .expect("known type");
        t.limit = *limit;
    }
    IdentityConfig::new(types, Vec::new()).expect("valid config")
}

struct Case {
    name: &'static str,
    config: IdentityConfig,
    messages: &'static [&'static str],
    /// Expected live profiles at the end, as identifier sets.
    groups: &'static [&'static [&'static str]],
    /// `(message index, identifiers dropped by the limits)`; other messages drop nothing.
    dropped: &'static [(usize, &'static [&'static str])],
    /// Total merges at the end.
    merges: u64,
}

fn cases() -> Vec<Case> {
    let default = IdentityConfig::default;
    vec![
        Case {
            name: "a first message creates a profile with its normalised identifiers",
            config: default(),
            messages: &["user_id=u1 phone=138-0000-0001 email=Li.Lei@Example.COM"],
            groups: &[&["user_id:u1", "phone:+8613800000001", "email:li.lei@example.com"]],
            dropped: &[],
            merges: 0,
        },
        Case {
            name: "phone spellings normalise to one identifier",
            config: default(),
            messages: &["phone=13800000001", "mobile=+86-138-0000-0001 email=a@x.cn"],
            groups: &[&["phone:+8613800000001", "email:a@x.cn"]],
            dropped: &[],
            merges: 0,
        },
        Case {
            name: "anonymous visitor then sign-in merges",
            config: default(),
            messages: &["anonymous_id=a1", "user_id=u1", "user_id=u1 anonymous_id=a1"],
            groups: &[&["user_id:u1", "anonymous_id:a1"]],
            dropped: &[],
            merges: 1,
        },
        Case {
            name: "alias links previousId to userId",
            config: default(),
            messages: &["anonymous_id=a1", "type=alias previous_id=a1 user_id=u1", "user_id=u1"],
            groups: &[&["user_id:u1", "anonymous_id:a1"]],
            dropped: &[],
            merges: 0,
        },
        Case {
            name: "three profiles joined by one message",
            config: default(),
            messages: &[
                "phone=13800000001",
                "email=e1@x.cn",
                "device_id=d1",
                "phone=13800000001 email=e1@x.cn device_id=d1",
            ],
            groups: &[&["phone:+8613800000001", "email:e1@x.cn", "device_id:d1"]],
            dropped: &[],
            merges: 2,
        },
        Case {
            name: "a shared device does not merge two user ids",
            config: default(),
            messages: &["user_id=u1 device_id=d1", "user_id=u2 device_id=d1", "device_id=d1"],
            groups: &[&["user_id:u1", "device_id:d1"], &["user_id:u2"]],
            dropped: &[(1, &["device_id:d1"])],
            merges: 0,
        },
        Case {
            name: "a shared anonymous id does not merge two user ids",
            config: default(),
            messages: &[
                "anonymous_id=a1",
                "user_id=u1 anonymous_id=a1",
                "user_id=u2 anonymous_id=a1",
                "user_id=u2 anonymous_id=a2",
            ],
            groups: &[&["user_id:u1", "anonymous_id:a1"], &["user_id:u2", "anonymous_id:a2"]],
            dropped: &[(2, &["anonymous_id:a1"])],
            merges: 0,
        },
        Case {
            name: "a message carrying identifiers of two user profiles goes to the higher-priority one",
            config: default(),
            messages: &[
                "user_id=u1 device_id=d1",
                "user_id=u2 anonymous_id=a2",
                "anonymous_id=a2 device_id=d1",
            ],
            // [device_id:d1, anonymous_id:a2] joins u1 and u2: over the user_id limit, so the
            // lowest-priority identifier (a2) is dropped and the message goes to u1.
            groups: &[&["user_id:u1", "device_id:d1"], &["user_id:u2", "anonymous_id:a2"]],
            dropped: &[(2, &["anonymous_id:a2"])],
            merges: 0,
        },
        Case {
            name: "phone limit 2: a third phone on one visitor starts its own profile",
            config: default(),
            messages: &[
                "anonymous_id=a1 phone=13800000001",
                "anonymous_id=a1 phone=13800000002",
                "anonymous_id=a1 phone=13800000003",
            ],
            // [phone:3, anonymous_id:a1] would give a1's profile 3 phones: a1 (lowest) is dropped.
            groups: &[
                &["anonymous_id:a1", "phone:+8613800000001", "phone:+8613800000002"],
                &["phone:+8613800000003"],
            ],
            dropped: &[(2, &["anonymous_id:a1"])],
            merges: 0,
        },
        Case {
            name: "a phone shared by three members stays with the first",
            config: default(),
            messages: &[
                "member_id=m1 phone=13800000009",
                "member_id=m2 phone=13800000009",
                "member_id=m3 phone=13800000009",
                "phone=13800000009",
            ],
            groups: &[&["member_id:m1", "phone:+8613800000009"], &["member_id:m2"], &["member_id:m3"]],
            dropped: &[(1, &["phone:+8613800000009"]), (2, &["phone:+8613800000009"])],
            merges: 0,
        },
        Case {
            name: "a phone shared by three anonymous visitors merges them (one phone value)",
            config: default(),
            messages: &[
                "anonymous_id=a1 phone=13800000009",
                "anonymous_id=a2 phone=13800000009",
                "anonymous_id=a3 phone=13800000009",
            ],
            groups: &[&[
                "phone:+8613800000009",
                "anonymous_id:a1",
                "anonymous_id:a2",
                "anonymous_id:a3",
            ]],
            dropped: &[],
            merges: 0,
        },
        Case {
            name: "phone limit 1 (custom): two phones never share a profile",
            config: config_with(&[("phone", 1)]),
            messages: &["email=e@x.cn phone=13800000001", "email=e@x.cn phone=13800000002"],
            groups: &[&["email:e@x.cn", "phone:+8613800000001"], &["phone:+8613800000002"]],
            dropped: &[(1, &["email:e@x.cn"])],
            merges: 0,
        },
        Case {
            name: "member_id limit 1: a second member id splits off",
            config: default(),
            messages: &["member_id=m1 email=e@x.cn", "member_id=m2 email=e@x.cn"],
            groups: &[&["member_id:m1", "email:e@x.cn"], &["member_id:m2"]],
            dropped: &[(1, &["email:e@x.cn"])],
            merges: 0,
        },
        Case {
            name: "a test account used on many devices keeps at most 10 devices",
            config: default(),
            messages: &[
                "user_id=test-account device_id=d01",
                "user_id=test-account device_id=d02",
                "user_id=test-account device_id=d03",
                "user_id=test-account device_id=d04",
                "user_id=test-account device_id=d05",
                "user_id=test-account device_id=d06",
                "user_id=test-account device_id=d07",
                "user_id=test-account device_id=d08",
                "user_id=test-account device_id=d09",
                "user_id=test-account device_id=d10",
                "user_id=test-account device_id=d11",
                "device_id=d11",
            ],
            groups: &[
                &[
                    "user_id:test-account",
                    "device_id:d01",
                    "device_id:d02",
                    "device_id:d03",
                    "device_id:d04",
                    "device_id:d05",
                    "device_id:d06",
                    "device_id:d07",
                    "device_id:d08",
                    "device_id:d09",
                    "device_id:d10",
                ],
                &["device_id:d11"],
            ],
            dropped: &[(10, &["device_id:d11"])],
            merges: 0,
        },
        Case {
            name: "blocked values never link",
            config: default(),
            messages: &[
                "user_id=u1 anonymous_id=undefined phone=00000000000 email=null device_id=0",
                "user_id=u2 anonymous_id=undefined phone=00000000000 email=null device_id=0",
                "user_id=u3 anonymous_id=NULL phone=138****0000 member_id=-1 device_id=unknown",
                "user_id=u4 phone=11111111111 email=N/A ext.wechat_unionid=nil",
            ],
            groups: &[&["user_id:u1"], &["user_id:u2"], &["user_id:u3"], &["user_id:u4"]],
            dropped: &[],
            merges: 0,
        },
        Case {
            name: "openids are scoped by app",
            config: default(),
            messages: &[
                "user_id=u1 wechat_openid=oX wechat_appid=wxA",
                "user_id=u2 wechat_openid=oX wechat_appid=wxB",
                "wechat_openid=oX wechat_appid=wxA",
            ],
            groups: &[&["user_id:u1", "wechat_openid:wxA:oX"], &["user_id:u2", "wechat_openid:wxB:oX"]],
            dropped: &[],
            merges: 0,
        },
    ]
}

#[test]
fn data_driven_cases() {
    for case in cases() {
        let mut book = ProfileBook::new(case.config.clone());
        let results = run(&mut book, case.messages);
        assert_eq!(
            groups(&book),
            expected_groups(case.groups),
            "case `{}`: profiles",
            case.name
        );
        for (i, (_, out)) in results.iter().enumerate() {
            let want: Vec<String> = case
                .dropped
                .iter()
                .find(|(n, _)| *n == i)
                .map(|(_, d)| d.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            assert_eq!(
                ids(&out.dropped),
                want,
                "case `{}`: dropped by message {i}",
                case.name
            );
            // The profile a message went to may have been merged away later; it still resolves.
            assert!(book.resolve(out.profile).is_some(), "case `{}`", case.name);
        }
        assert_eq!(book.merges(), case.merges, "case `{}`: merges", case.name);
    }
}

#[test]
fn blocked_only_messages_are_refused_before_the_book() {
    let config = IdentityConfig::default();
    for spec in [
        "user_id=undefined",
        "anonymous_id=0",
        "user_id=null phone=00000000000",
    ] {
        let (value, source, received_at) = spec_json(spec, 0);
        let env = Envelope {
            source,
            received_at,
            ..Default::default()
        };
        let err = parse_message(&value, &env, &config).expect_err(spec);
        assert!(err.reason.contains("no usable identifier"), "{spec}: {err}");
    }
    // A custom blocked pattern (a brand's test accounts) is dropped like the built-in ones.
    let mut types = IdentityConfig::default().types;
    types[1].blocked = vec!["test-.*".into()];
    let config = IdentityConfig::new(types, vec!["demo".into()]).expect("valid");
    let mut book = ProfileBook::new(config);
    run(
        &mut book,
        &[
            "user_id=u1 member_id=TEST-1",
            "user_id=u2 member_id=test-1 email=demo",
        ],
    );
    assert_eq!(
        groups(&book),
        expected_groups(&[&["user_id:u1"], &["user_id:u2"]])
    );
}

#[test]
fn new_profile_outcome_and_fields() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    let r = run(&mut book, &["type=track user_id=u1 src=3 ts=-60 t.name=Li"]);
    let out = &r[0].1;
    assert_eq!(
        *out,
        ApplyOutcome {
            profile: 0,
            created: true,
            merged: vec![],
            dropped: vec![]
        }
    );
    let p = book.get(0).expect("live");
    assert_eq!(p.id, 0);
    assert_eq!(ids(&p.identifiers), ["user_id:u1"]);
    assert_eq!((p.first_seen, p.last_seen), (BASE - 60_000, BASE - 60_000));
    assert_eq!(p.sources.get(&3), Some(&1));
    assert_eq!(p.events, vec![(BASE - 60_000, 0)]);
    assert_eq!(p.traits["name"].value, "\"Li\"");
    assert!(p.history.is_empty() && p.merged_from.is_empty());
    assert_eq!(
        (
            book.live(),
            book.identifiers(),
            book.id_space(),
            book.merges()
        ),
        (1, 1, 1, 0)
    );
    // The same person again: no new profile.
    let r = run(&mut book, &["user_id=u1"]);
    assert_eq!(
        r[0].1,
        ApplyOutcome {
            profile: 0,
            created: false,
            merged: vec![],
            dropped: vec![]
        }
    );
    assert_eq!(book.by_identifier(&ident("user_id:u1")), Some(0));
    assert_eq!(book.by_identifier(&ident("user_id:u2")), None);
    assert_eq!(book.get(1), None);
    assert_eq!(book.resolve(7), None);
}

#[test]
fn merge_record_lists_message_identifiers_survivor_and_others() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    let r = run(
        &mut book,
        &[
            "anonymous_id=a1",                               // profile 0
            "user_id=u1",                                    // profile 1
            "email=e@x.cn",                                  // profile 2
            "mid=join-1 src=4 user_id=u1 anonymous_id=a1",   // 1 into 0
            "mid=join-2 src=5 email=e@x.cn anonymous_id=a1", // 2 into 0
        ],
    );
    assert_eq!(
        r[3].1,
        ApplyOutcome {
            profile: 0,
            created: false,
            merged: vec![1],
            dropped: vec![]
        }
    );
    assert_eq!(r[4].1.merged, vec![2]);
    let p = book.get(0).expect("survivor");
    assert_eq!(p.merged_from, vec![1, 2]);
    assert_eq!(p.history.len(), 2);
    let rec = &p.history[0];
    assert_eq!(rec.action, "merge");
    assert_eq!(rec.message_id.as_deref(), Some("join-1"));
    assert_eq!(rec.source, Some(4));
    assert_eq!(rec.at, BASE + 3_000, "receive time of the message");
    assert_eq!(ids(&rec.identifiers), ["user_id:u1", "anonymous_id:a1"]);
    assert_eq!((rec.survivor, rec.others.clone()), (0, vec![1]));
    assert_eq!(p.history[1].message_id.as_deref(), Some("join-2"));
    assert_eq!(
        (p.history[1].survivor, p.history[1].others.clone()),
        (0, vec![2])
    );
    // Retired ids resolve to the survivor.
    for retired in [1, 2] {
        assert_eq!(book.resolve(retired), Some(0));
        assert_eq!(book.get(retired).map(|p| p.id), Some(0));
    }
    assert_eq!(book.redirects().collect::<Vec<_>>(), vec![(1, 0), (2, 0)]);
    assert_eq!((book.live(), book.merges(), book.id_space()), (1, 2, 3));
    assert_eq!(p.events.len(), 5);
    assert_eq!(p.sources.values().sum::<u64>(), 5);
}

#[test]
fn survivor_is_the_lowest_id_whichever_identifier_ranks_first() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    let r = run(
        &mut book,
        &[
            "device_id=d1", // 0: lowest priority type, lowest id
            "email=e@x.cn", // 1
            "user_id=u1",   // 2: highest priority type
            "user_id=u1 email=e@x.cn device_id=d1",
        ],
    );
    let out = &r[3].1;
    assert_eq!((out.profile, out.merged.clone()), (0, vec![1, 2]));
    let rec = &book.get(0).expect("live").history[0];
    assert_eq!((rec.survivor, rec.others.clone()), (0, vec![1, 2]));
    assert_eq!(book.by_identifier(&ident("user_id:u1")), Some(0));
    // A chain of merges: the retired id of a retired id still resolves.
    let mut book = ProfileBook::new(IdentityConfig::default());
    run(
        &mut book,
        &[
            "email=a@x.cn",                      // 0
            "email=b@x.cn",                      // 1
            "email=c@x.cn",                      // 2
            "ext.email=b@x.cn ext.email=c@x.cn", // 2 into 1
            "ext.email=a@x.cn ext.email=b@x.cn", // 1 into 0
        ],
    );
    assert_eq!(book.live(), 1);
    assert_eq!(book.resolve(2), Some(0));
    assert_eq!(book.resolve(1), Some(0));
}

#[test]
fn long_merge_chains_still_resolve() {
    // Each merge retires the higher id into the lower one; merging downwards one step at a time
    // builds a chain 69 → 68 → … → 0. With a generous anonymous_id limit this is legal.
    let config = config_with(&[("anonymous_id", 100)]);
    let mut book = ProfileBook::new(config);
    let n = 70;
    let singles: Vec<String> = (0..n).map(|i| format!("anonymous_id=a{i:02}")).collect();
    let joins: Vec<String> = (0..n - 1)
        .rev()
        .map(|i| format!("ext.anonymous_id=a{i:02} ext.anonymous_id=a{:02}", i + 1))
        .collect();
    let specs: Vec<&str> = singles.iter().chain(&joins).map(String::as_str).collect();
    run(&mut book, &specs);
    assert_eq!(book.live(), 1);
    for id in 0..n as ProfileId {
        assert_eq!(book.resolve(id), Some(0), "retired id {id}");
    }
}

fn trait_of(p: &Profile, key: &str) -> String {
    p.traits
        .get(key)
        .map(|t| t.value.clone())
        .unwrap_or_default()
}

#[test]
fn later_event_time_wins_and_late_events_do_not_overwrite() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    run(
        &mut book,
        &[
            "user_id=u1 ts=100 t.city=Shanghai",
            "user_id=u1 ts=50 t.city=Beijing t.age=30",
        ],
    );
    let p = book.get(0).expect("live");
    assert_eq!(
        trait_of(p, "city"),
        "\"Shanghai\"",
        "a late (older) event loses"
    );
    assert_eq!(
        trait_of(p, "age"),
        "\"30\"",
        "an absent trait is set by a late event"
    );
    assert_eq!(p.traits["city"].updated_at, BASE + 100_000);
    run(&mut book, &["user_id=u1 ts=101 t.city=Hangzhou"]);
    assert_eq!(trait_of(book.get(0).expect("live"), "city"), "\"Hangzhou\"");
    // Equal event time and priority: the later-applied message wins.
    run(&mut book, &["user_id=u1 ts=101 t.city=Suzhou"]);
    assert_eq!(trait_of(book.get(0).expect("live"), "city"), "\"Suzhou\"");
}

#[test]
fn source_priority_wins_regardless_of_time() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    book.set_priority(9, 10); // CRM
    book.set_priority(7, -1); // a noisy scraper below the default 0
    run(
        &mut book,
        &[
            "user_id=u1 src=9 ts=10 t.name=CRM-Name",
            "user_id=u1 src=1 ts=500 t.name=App-Name t.tier=app",
            "user_id=u1 src=7 ts=900 t.tier=scraped t.name=Scraped",
        ],
    );
    let p = book.get(0).expect("live");
    assert_eq!(trait_of(p, "name"), "\"CRM-Name\"");
    assert_eq!(p.traits["name"].source, 9);
    assert_eq!(
        trait_of(p, "tier"),
        "\"app\"",
        "negative priority loses to default even later"
    );
    // Among the high-priority source, the later event wins again.
    run(
        &mut book,
        &[
            "user_id=u1 src=9 ts=20 t.name=CRM-New",
            "user_id=u1 src=9 ts=15 t.name=CRM-Old",
        ],
    );
    assert_eq!(trait_of(book.get(0).expect("live"), "name"), "\"CRM-New\"");
}

#[test]
fn merging_profiles_keeps_the_winning_trait_values() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    book.set_priority(9, 10);
    run(
        &mut book,
        &[
            // profile 0: older name, newer city
            "anonymous_id=a1 ts=10 t.name=Old t.city=Newer-City",
            // profile 1: newer name, older city, and a CRM gender set long ago
            "user_id=u1 ts=20 t.name=New t.city=Old-City",
            "user_id=u1 src=9 ts=1 t.gender=F",
            // profile 0 has a later app gender, but CRM outranks it
            "anonymous_id=a1 ts=30 t.gender=M t.city=Newest-City",
            "user_id=u1 anonymous_id=a1 ts=5",
        ],
    );
    let p = book.get(0).expect("survivor");
    assert_eq!(book.live(), 1);
    assert_eq!(
        trait_of(p, "name"),
        "\"New\"",
        "the later value from the retired profile"
    );
    assert_eq!(
        trait_of(p, "city"),
        "\"Newest-City\"",
        "the survivor's later value"
    );
    assert_eq!(
        trait_of(p, "gender"),
        "\"F\"",
        "priority beats time across a merge"
    );
    assert_eq!(p.traits["gender"].source, 9);
    // The reverse order of ids gives the same winners.
    let mut other = ProfileBook::new(IdentityConfig::default());
    other.set_priority(9, 10);
    run(
        &mut other,
        &[
            "user_id=u1 ts=20 t.name=New t.city=Old-City",
            "user_id=u1 src=9 ts=1 t.gender=F",
            "anonymous_id=a1 ts=10 t.name=Old t.city=Newer-City",
            "anonymous_id=a1 ts=30 t.gender=M t.city=Newest-City",
            "user_id=u1 anonymous_id=a1 ts=5",
        ],
    );
    let q = other.get(0).expect("survivor");
    for key in ["name", "city", "gender"] {
        assert_eq!(trait_of(p, key), trait_of(q, key), "{key}");
    }
}

#[test]
fn events_stay_sorted_by_time_then_log_position() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    run(
        &mut book,
        &[
            "user_id=u1 ts=300",
            "user_id=u1 ts=100", // late
            "user_id=u1 ts=200", // late
            "user_id=u1 ts=100", // late, same time: after log position 1
            "user_id=u1 ts=400",
        ],
    );
    let s = |secs: i64| BASE + secs * 1000;
    let p = book.get(0).expect("live");
    assert_eq!(
        p.events,
        vec![
            (s(100), 1),
            (s(100), 3),
            (s(200), 2),
            (s(300), 0),
            (s(400), 4)
        ]
    );
    assert_eq!((p.first_seen, p.last_seen), (s(100), s(400)));
    // Merging interleaves the two logs.
    run(
        &mut book,
        &[
            "anonymous_id=a1 ts=150",
            "anonymous_id=a1 ts=50",
            "anonymous_id=a1 user_id=u1 ts=350",
        ],
    );
    let p = book.get(0).expect("live");
    assert_eq!(
        p.events,
        vec![
            (s(50), 6),
            (s(100), 1),
            (s(100), 3),
            (s(150), 5),
            (s(200), 2),
            (s(300), 0),
            (s(350), 7),
            (s(400), 4)
        ]
    );
    assert_eq!((p.first_seen, p.last_seen), (s(50), s(400)));
}

/// Runs an unmerge the way the store does: replay the returned log positions through `apply`.
fn unmerge(
    book: &mut ProfileBook,
    log: &[Message],
    profile: ProfileId,
    cut: &Identifier,
    at: Millis,
) -> Vec<ProfileId> {
    let refs = book.begin_unmerge(profile, cut).expect("unmerge starts");
    assert!(refs.windows(2).all(|w| w[0] < w[1]), "replay in log order");
    let mut parts: Vec<ProfileId> = refs
        .iter()
        .map(|r| book.apply(&log[*r as usize], *r).profile)
        .collect();
    parts.sort_unstable();
    parts.dedup();
    book.finish_unmerge(profile, cut, &parts, at);
    check(book, log.len());
    parts
}

fn logged(book: &mut ProfileBook, log: &mut Vec<Message>, specs: &[&str]) {
    for (m, _) in run(book, specs) {
        log.push(m);
    }
}

#[test]
fn unmerge_splits_a_bridged_profile_and_the_cut_identifier_never_links_again() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    let mut log = Vec::new();
    logged(
        &mut book,
        &mut log,
        &[
            "phone=13800000001 anonymous_id=shared-tablet ts=1 t.name=Wang", // 0: profile 0
            "email=li@x.cn ts=2 t.name=Li",                                  // 1: profile 1
            "email=li@x.cn anonymous_id=shared-tablet ts=3",                 // 2: merges 1 into 0
            "phone=13800000001 ts=4 t.city=Shanghai",                        // 3
            "email=li@x.cn ts=5 t.city=Beijing",                             // 4
        ],
    );
    assert_eq!(book.live(), 1);
    assert_eq!(book.merges(), 1);
    let cut = ident("anonymous_id:shared-tablet");
    let parts = unmerge(&mut book, &log, 0, &cut, BASE + 99_000);
    assert_eq!(book.live(), 2);
    assert_eq!(
        groups(&book),
        expected_groups(&[&["phone:+8613800000001"], &["email:li@x.cn"]])
    );
    let wang = book
        .by_identifier(&ident("phone:+8613800000001"))
        .expect("linked");
    let li = book.by_identifier(&ident("email:li@x.cn")).expect("linked");
    assert_eq!(
        wang, 0,
        "the first rebuilt part keeps the split profile's id"
    );
    assert_ne!(li, wang);
    assert_eq!(parts, vec![wang, li]);
    let (w, l) = (book.get(wang).expect("live"), book.get(li).expect("live"));
    assert_eq!(w.events.iter().map(|e| e.1).collect::<Vec<_>>(), vec![0, 3]);
    assert_eq!(
        l.events.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    assert_eq!(
        (trait_of(w, "name"), trait_of(w, "city")),
        ("\"Wang\"".into(), "\"Shanghai\"".into())
    );
    assert_eq!(
        (trait_of(l, "name"), trait_of(l, "city")),
        ("\"Li\"".into(), "\"Beijing\"".into())
    );
    for p in [w, l] {
        let rec = p.history.last().expect("unmerge recorded");
        assert_eq!(rec.action, "unmerge");
        assert_eq!((rec.survivor, rec.others.clone()), (0, vec![wang, li]));
        assert_eq!(rec.identifiers, vec![cut.clone()]);
        assert_eq!(
            (rec.message_id.clone(), rec.source, rec.at),
            (None, None, BASE + 99_000)
        );
    }
    // The retired id of Li's old profile still resolves to a live profile.
    assert!(book.resolve(1).is_some());
    // Afterwards the cut identifier never links: not with either part, not with newcomers.
    let merges = book.merges();
    logged(
        &mut book,
        &mut log,
        &[
            "phone=13800000001 anonymous_id=shared-tablet",
            "email=li@x.cn anonymous_id=shared-tablet",
            "anonymous_id=shared-tablet",
            "anonymous_id=shared-tablet email=new@x.cn",
            "anonymous_id=shared-tablet user_id=u9",
        ],
    );
    assert_eq!(book.merges(), merges, "no merge through the cut identifier");
    let alone = book
        .by_identifier(&cut)
        .expect("a message with only the cut id gets a profile");
    assert_eq!(
        ids(&book.get(alone).expect("live").identifiers),
        [cut.to_string()]
    );
    assert_eq!(book.get(alone).expect("live").events.len(), 1);
    assert_eq!(
        groups(&book),
        expected_groups(&[
            &["phone:+8613800000001"],
            &["email:li@x.cn"],
            &["anonymous_id:shared-tablet"],
            &["email:new@x.cn"],
            &["user_id:u9"],
        ])
    );
}

#[test]
fn unmerge_keeps_a_split_part_whole_when_other_identifiers_bind_it() {
    // Cutting one of several identifiers of one person leaves the rest together.
    let mut book = ProfileBook::new(IdentityConfig::default());
    let mut log = Vec::new();
    logged(
        &mut book,
        &mut log,
        &[
            "user_id=u1 phone=13800000001 anonymous_id=a1",
            "user_id=u1 email=u1@x.cn",
            "anonymous_id=a1 device_id=d1",
        ],
    );
    let parts = unmerge(&mut book, &log, 0, &ident("anonymous_id:a1"), BASE);
    assert_eq!(parts.len(), 2);
    assert_eq!(
        groups(&book),
        expected_groups(&[
            &["user_id:u1", "phone:+8613800000001", "email:u1@x.cn"],
            &["device_id:d1"],
        ])
    );
}

#[test]
fn unmerge_through_a_retired_id_records_the_split_profile() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    let mut log = Vec::new();
    logged(
        &mut book,
        &mut log,
        &[
            "phone=13800000001 anonymous_id=s",
            "email=b@x.cn",
            "email=b@x.cn anonymous_id=s",
        ],
    );
    assert_eq!(book.resolve(1), Some(0));
    let cut = ident("anonymous_id:s");
    let parts = unmerge(&mut book, &log, 1, &cut, BASE);
    for p in &parts {
        let rec = book
            .get(*p)
            .expect("live")
            .history
            .last()
            .cloned()
            .expect("recorded");
        assert_eq!(
            rec.survivor, 0,
            "the record names the profile that was split"
        );
    }
    for id in 0..book.id_space() {
        assert!(
            book.resolve(id).is_some(),
            "id {id} resolves after the unmerge"
        );
    }
}

#[test]
fn unmerge_errors() {
    let mut book = ProfileBook::new(IdentityConfig::default());
    run(&mut book, &["user_id=u1 phone=13800000001", "user_id=u2"]);
    assert_eq!(
        book.begin_unmerge(0, &ident("user_id:u2")),
        Err(ProfileError::NotLinked {
            profile: 0,
            identifier: "user_id:u2".into()
        })
    );
    assert_eq!(
        book.begin_unmerge(0, &ident("user_id:nobody")),
        Err(ProfileError::NotLinked {
            profile: 0,
            identifier: "user_id:nobody".into()
        })
    );
    assert_eq!(
        book.begin_unmerge(1, &ident("user_id:u2")),
        Err(ProfileError::Single(1))
    );
    assert_eq!(
        book.begin_unmerge(42, &ident("user_id:u1")),
        Err(ProfileError::NoProfile(42))
    );
    // Refusals change nothing.
    assert_eq!(book.live(), 2);
    assert_eq!(book.by_identifier(&ident("user_id:u2")), Some(1));
    assert_eq!(
        ProfileError::Single(1).to_string(),
        "profile 1 has a single identifier; there is nothing to unmerge"
    );
}

#[test]
fn directly_built_messages_resolve_like_parsed_ones() {
    let config = IdentityConfig::default();
    let mut list = vec![
        ident("anonymous_id:a1"),
        ident("user_id:u1"),
        ident("phone:+8613800000001"),
    ];
    config.sort(&mut list);
    let m = Message {
        kind: MessageKind::Track,
        message_id: "direct".into(),
        source: 2,
        event: Some("Order Completed".into()),
        user_id: Some("u1".into()),
        anonymous_id: Some("a1".into()),
        previous_id: None,
        group_id: None,
        timestamp: BASE,
        received_at: BASE,
        sent_at: None,
        original_timestamp: None,
        traits: "{}".into(),
        properties: "{\"revenue\":10}".into(),
        context: "{}".into(),
        identifiers: list,
    };
    let mut book = ProfileBook::new(config.clone());
    book.apply(&m, 0);
    let parsed = parse_with("user_id=u1 anonymous_id=a1 phone=13800000001", 1, &config);
    let out = book.apply(&parsed, 1);
    assert_eq!((out.profile, out.created), (0, false));
    assert_eq!(
        ids(&book.get(0).expect("live").identifiers),
        ["user_id:u1", "phone:+8613800000001", "anonymous_id:a1"]
    );
}

#[test]
fn erase_removes_the_person_and_suppresses_their_identifiers() {
    use portrait_core::segment::{parse_message, Envelope};
    use portrait_core::{IdentityConfig, ProfileBook};
    let config = IdentityConfig::default();
    let env = Envelope {
        source: 1,
        received_at: 1,
        ..Default::default()
    };
    let msg = |v: serde_json::Value| parse_message(&v, &env, &config).expect("valid").message;
    let mut book = ProfileBook::new(config.clone());
    let a = msg(
        serde_json::json!({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "1",
                                   "traits": {"phone": "13800000001"}}),
    );
    let b = msg(
        serde_json::json!({"type": "track", "anonymousId": "a2", "event": "E", "messageId": "2"}),
    );
    let c = msg(
        serde_json::json!({"type": "identify", "userId": "u1", "anonymousId": "a2", "messageId": "3"}),
    );
    book.apply(&a, 10);
    book.apply(&b, 20);
    let merged = book.apply(&c, 30);
    let id = merged.profile;
    let erased = book
        .erase(merged.merged.first().copied().unwrap_or(id))
        .expect("erase");
    assert_eq!(erased.profile, id);
    assert_eq!(erased.events.len(), 3);
    assert_eq!(erased.identifiers.len(), 4);
    assert_eq!(book.live(), 0);
    assert!(book.get(id).is_none());
    for m in [&a, &b, &c] {
        assert!(book.is_suppressed(m));
    }
    assert!(book.erase(id).is_err(), "nothing left to erase");
    let other = msg(
        serde_json::json!({"type": "track", "anonymousId": "a9", "event": "E", "messageId": "9"}),
    );
    assert!(!book.is_suppressed(&other));
}
