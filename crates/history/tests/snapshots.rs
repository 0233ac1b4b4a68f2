//! Hand-made histories: snapshots built from `TagData` by hand, with known transitions,
//! populations, paths and trails asserted exactly; storage sharing, retention, rewrites and
//! corruption.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

use portrait_history::{parse_day, Day, History, HistoryError, PathCount, Transition, NONE};
use portrait_tagstore::{RoaringBitmap, TagData};

fn bm(ids: &[u32]) -> RoaringBitmap {
    ids.iter().copied().collect()
}

fn d(s: &str) -> Day {
    parse_day(s).unwrap()
}

fn stage(values: &[(&str, &[u32])]) -> TagData {
    TagData::enumeration(values.iter().map(|(k, ids)| (k.to_string(), bm(ids)))).unwrap()
}

fn t(from: &str, to: &str, count: u64) -> Transition {
    Transition {
        from: from.into(),
        to: to.into(),
        count,
    }
}

/// Three days of a stage tag, a bool tag and a numeric tag (see the comments for the ids).
fn three_days(h: &History) {
    let days: Vec<(&str, RoaringBitmap, TagData, TagData, TagData)> = vec![
        (
            "2024-03-01",
            bm(&[1, 2, 3, 4, 5, 6]),
            stage(&[("active", &[1, 2, 3]), ("dormant", &[4]), ("new", &[5])]),
            TagData::Bool(bm(&[1, 2])),
            TagData::numeric([(1, 10.0), (2, 20.5)]),
        ),
        (
            "2024-03-02",
            bm(&[1, 2, 3, 4, 5, 6, 7]),
            stage(&[("active", &[1, 5]), ("dormant", &[2, 3]), ("churned", &[4])]),
            TagData::Bool(bm(&[1, 2])),
            TagData::numeric([(1, 10.0), (2, 20.5)]),
        ),
        (
            "2024-03-03",
            bm(&[1, 2, 3, 4, 5, 6, 7]),
            stage(&[("active", &[1, 2]), ("dormant", &[5]), ("churned", &[3, 4])]),
            TagData::Bool(bm(&[2])),
            TagData::numeric([(1, 15.0)]),
        ),
    ];
    for (date, universe, st, vip, spend) in &days {
        let tags = vec![
            ("stage".to_string(), st),
            ("vip".to_string(), vip),
            ("spend".to_string(), spend),
        ];
        h.record_tags(universe, &tags, d(date)).unwrap();
    }
}

#[test]
fn transitions_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    three_days(&h);
    assert_eq!(
        h.transitions("stage", d("2024-03-01"), d("2024-03-02"), None)
            .unwrap(),
        vec![
            t("active", "active", 1),
            t("active", "dormant", 2),
            t("dormant", "churned", 1),
            t("new", "active", 1),
            t(NONE, NONE, 2),
        ]
    );
    // Restricted to an audience: 1, 2, 4 and 7 (7 was not live on the first date).
    assert_eq!(
        h.transitions(
            "stage",
            d("2024-03-01"),
            d("2024-03-02"),
            Some(&bm(&[1, 2, 4, 7]))
        )
        .unwrap(),
        vec![
            t("active", "active", 1),
            t("active", "dormant", 1),
            t("dormant", "churned", 1),
            t(NONE, NONE, 1),
        ]
    );
    // Bool tags: true/false, and (none) for ids not live at a date.
    assert_eq!(
        h.transitions("vip", d("2024-03-01"), d("2024-03-03"), None)
            .unwrap(),
        vec![
            t("true", "true", 1),
            t("true", "false", 1),
            t("false", "false", 4),
            t(NONE, "false", 1),
        ]
    );
    assert!(matches!(
        h.transitions("spend", d("2024-03-01"), d("2024-03-02"), None),
        Err(HistoryError::NotCategorical(_))
    ));
    assert!(matches!(
        h.transitions("stage", d("2024-03-01"), d("2024-03-09"), None),
        Err(HistoryError::NoSnapshot { .. })
    ));
    assert!(matches!(
        h.transitions("nope", d("2024-03-01"), d("2024-03-02"), None),
        Err(HistoryError::UnknownTag(_))
    ));
}

#[test]
fn entered_exited_stayed() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    three_days(&h);
    let c = h
        .change(
            "stage",
            Some("dormant"),
            d("2024-03-01"),
            d("2024-03-02"),
            None,
        )
        .unwrap();
    assert_eq!(
        (c.before, c.after, c.entered, c.exited, c.stayed),
        (1, 2, 2, 1, 0)
    );
    let c = h
        .change("vip", None, d("2024-03-02"), d("2024-03-03"), None)
        .unwrap();
    assert_eq!(
        (c.before, c.after, c.entered, c.exited, c.stayed),
        (2, 1, 0, 1, 1)
    );
    let c = h
        .change("spend", None, d("2024-03-01"), d("2024-03-03"), None)
        .unwrap();
    assert_eq!(
        (c.before, c.after, c.entered, c.exited, c.stayed),
        (2, 1, 0, 1, 1)
    );
}

#[test]
fn population_series() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    three_days(&h);
    let p = h
        .population("stage", d("2024-03-01"), d("2024-03-03"), None)
        .unwrap();
    let got: Vec<(String, u64, Vec<(String, u64)>)> = p
        .iter()
        .map(|x| {
            (
                x.date.clone(),
                x.total,
                x.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            )
        })
        .collect();
    let row = |date: &str, total, v: &[(&str, u64)]| {
        (
            date.to_string(),
            total,
            v.iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        got,
        vec![
            row(
                "2024-03-01",
                6,
                &[(NONE, 1), ("active", 3), ("dormant", 1), ("new", 1)]
            ),
            row(
                "2024-03-02",
                7,
                &[(NONE, 2), ("active", 2), ("churned", 1), ("dormant", 2)]
            ),
            row(
                "2024-03-03",
                7,
                &[(NONE, 2), ("active", 2), ("churned", 2), ("dormant", 1)]
            ),
        ]
    );
    // Range bounds are inclusive and the audience path agrees with the index path.
    let p2 = h
        .population("stage", d("2024-03-02"), d("2024-03-02"), None)
        .unwrap();
    assert_eq!(p2.len(), 1);
    let all: RoaringBitmap = (0..100).collect();
    let p3 = h
        .population("stage", d("2024-03-02"), d("2024-03-02"), Some(&all))
        .unwrap();
    assert_eq!(p2, p3);
    let v = h
        .population(
            "vip",
            d("2024-03-03"),
            d("2024-03-03"),
            Some(&bm(&[1, 2, 9])),
        )
        .unwrap();
    assert_eq!(v[0].total, 2);
    assert_eq!(v[0].values.get("true"), Some(&1));
    assert_eq!(v[0].values.get("false"), Some(&1));
}

#[test]
fn paths_over_three_dates() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    three_days(&h);
    let dates = [d("2024-03-01"), d("2024-03-02"), d("2024-03-03")];
    let p = |v: &[&str], count| PathCount {
        path: v.iter().map(|s| s.to_string()).collect(),
        count,
    };
    assert_eq!(
        h.paths("stage", &dates, None, false, 10).unwrap(),
        vec![
            p(&[NONE, NONE, NONE], 2),
            p(&["active", "active", "active"], 1),
            p(&["active", "dormant", "active"], 1),
            p(&["active", "dormant", "churned"], 1),
            p(&["dormant", "churned", "churned"], 1),
            p(&["new", "active", "dormant"], 1),
        ]
    );
    assert_eq!(
        h.paths("stage", &dates, None, true, 3).unwrap(),
        vec![
            p(&[NONE], 2),
            p(&["active"], 1),
            p(&["active", "dormant", "active"], 1),
        ]
    );
    // Who came back: active → dormant → active within an audience.
    assert_eq!(
        h.paths("stage", &dates, Some(&bm(&[2, 3])), true, 10)
            .unwrap(),
        vec![
            p(&["active", "dormant", "active"], 1),
            p(&["active", "dormant", "churned"], 1),
        ]
    );
}

#[test]
fn trails_of_one_profile() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    three_days(&h);
    let trail = h.trail(2, None, None, None).unwrap();
    let got: Vec<(String, String, Option<String>, Option<String>, String)> = trail
        .into_iter()
        .map(|e| (e.tag, e.date, e.from, e.to, e.cause))
        .collect();
    let s = |x: &str| Some(x.to_string());
    let e = |tag: &str, date: &str, from: Option<String>, to: Option<String>, cause: &str| {
        (
            tag.to_string(),
            date.to_string(),
            from,
            to,
            cause.to_string(),
        )
    };
    assert_eq!(
        got,
        vec![
            e("stage", "2024-03-01", None, s("active"), "initial"),
            e("stage", "2024-03-02", s("active"), s("dormant"), "refresh"),
            e("stage", "2024-03-03", s("dormant"), s("active"), "refresh"),
            e("vip", "2024-03-01", None, s("true"), "initial"),
        ]
    );
    // Numeric tags when named; id 7 appears on the second date.
    let trail = h
        .trail(2, Some(&["spend".to_string()]), None, None)
        .unwrap();
    assert_eq!(trail.len(), 2);
    assert_eq!(
        (trail[1].from.as_deref(), trail[1].to.as_deref()),
        (Some("20.5"), None)
    );
    let trail = h.trail(7, Some(&["vip".to_string()]), None, None).unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (trail[0].date.as_str(), trail[0].to.as_deref()),
        ("2024-03-02", Some("false"))
    );
}

fn big_stage(day: u32) -> TagData {
    // 3 values over 30 000 ids; each day moves a handful of ids.
    let mut a = RoaringBitmap::new();
    let mut b = RoaringBitmap::new();
    let mut c = RoaringBitmap::new();
    for i in 0..30_000u32 {
        match (i + if i % 97 == 0 { day } else { 0 }) % 3 {
            0 => a.insert(i),
            1 => b.insert(i),
            _ => c.insert(i),
        };
    }
    TagData::enumeration([
        ("a".to_string(), a),
        ("b".to_string(), b),
        ("c".to_string(), c),
    ])
    .unwrap()
}

fn universe() -> RoaringBitmap {
    (0..30_000).collect()
}

fn day(n: u32) -> Day {
    d("2024-01-01") + chrono::Duration::days(i64::from(n))
}

#[test]
fn unchanged_bitmaps_are_shared_and_small_changes_delta_coded() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    let u = universe();
    let flag = TagData::Bool((0..30_000).filter(|i| i % 2 == 0).collect());
    for n in 0..4 {
        let st = big_stage(n / 2); // days 0,1 equal; 2,3 equal
        let tags = vec![("stage".to_string(), &st), ("flag".to_string(), &flag)];
        h.record_tags(&u, &tags, day(n)).unwrap();
    }
    let e = h.entries("flag").unwrap();
    let sizes: Vec<u64> = e.values().map(|x| x.bytes).collect();
    assert!(
        sizes[1] < 100 && sizes[2] < 100 && sizes[3] < 100,
        "{sizes:?}"
    );
    assert!(sizes[0] > 1000, "{sizes:?}");
    let s = h.entries("stage").unwrap();
    let sizes: Vec<u64> = s.values().map(|x| x.bytes).collect();
    assert!(sizes[1] < 200, "unchanged: {sizes:?}");
    assert!(
        sizes[2] * 4 < sizes[0],
        "delta much smaller than full: {sizes:?}"
    );
    for n in 0..4 {
        let at = h.load("stage", day(n)).unwrap();
        assert_eq!(at.data, big_stage(n / 2), "day {n}");
        assert_eq!(at.universe, u);
        assert_eq!(h.load("flag", day(n)).unwrap().data, flag);
    }
    let st = h.storage().unwrap();
    assert_eq!(st.tags, 2);
    assert_eq!(st.tag_value_days, 4 * 3 + 4);
    assert!(st.bytes_per_tag_value_day > 0.0);
}

#[test]
fn retention_removes_old_dates_and_keeps_what_kept_ones_need() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path()).unwrap();
    h.set_retention_days(5).unwrap();
    // Reopening reads the retention back.
    let h2 = History::open(dir.path()).unwrap();
    assert_eq!(h2.retention_days(), 5);
    let u = universe();
    let flag = TagData::Bool(bm(&[1, 2, 3]));
    for n in 0..10 {
        let st = big_stage(n);
        let tags = vec![("stage".to_string(), &st), ("flag".to_string(), &flag)];
        h.record_tags(&u, &tags, day(n)).unwrap();
    }
    // Newest is day 9 (2024-01-10): kept are the dates after 2024-01-05.
    let kept: Vec<Day> = (5..10).map(day).collect();
    assert_eq!(h.dates("stage").unwrap(), kept);
    assert_eq!(h.dates("flag").unwrap(), kept);
    for n in 5..10 {
        assert_eq!(
            h.load("stage", day(n)).unwrap().data,
            big_stage(n),
            "day {n}"
        );
        assert_eq!(h.load("flag", day(n)).unwrap().data, flag);
        assert_eq!(h.universe(day(n)).unwrap(), u);
    }
    // On disk: exactly the kept files.
    for sub in ["t-7374616765", "t-666c6167", "_universe"] {
        let mut files: Vec<String> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut want: Vec<String> = kept
            .iter()
            .map(|d| format!("{}.snap", portrait_history::format_day(*d)))
            .collect();
        want.push("index.json".into());
        assert_eq!(files, want, "{sub}");
    }
    // An explicit prune at a later day removes exactly the two oldest.
    let r = h.prune(day(11)).unwrap();
    assert_eq!(
        r.removed_dates,
        vec!["2024-01-06".to_string(), "2024-01-07".to_string()]
    );
    assert_eq!(r.files_removed, 6);
    assert_eq!(
        h.dates("stage").unwrap(),
        (7..10).map(day).collect::<Vec<_>>()
    );
    for n in 7..10 {
        assert_eq!(
            h.load("stage", day(n)).unwrap().data,
            big_stage(n),
            "day {n}"
        );
    }
    // Nothing old enough: nothing removed.
    assert!(h.prune(day(11)).unwrap().removed_dates.is_empty());
}

#[test]
fn recording_a_date_again_keeps_later_dates_intact() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    let u = universe();
    let st = big_stage(0);
    for n in 0..3 {
        h.record_tags(&u, &[("stage".to_string(), &st)], day(n))
            .unwrap();
    }
    // Days 1 and 2 reference day 0; replace day 0.
    let other = big_stage(5);
    let r = h
        .record_tags(&u, &[("stage".to_string(), &other)], day(0))
        .unwrap();
    assert_eq!(r.files_written, 1, "the universe is unchanged");
    assert_eq!(h.load("stage", day(0)).unwrap().data, other);
    assert_eq!(h.load("stage", day(1)).unwrap().data, st);
    assert_eq!(h.load("stage", day(2)).unwrap().data, st);
    // The same values again: nothing written.
    let r = h
        .record_tags(&u, &[("stage".to_string(), &other)], day(0))
        .unwrap();
    assert_eq!((r.files_written, r.files_unchanged), (0, 2));
}

#[test]
fn corrupt_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    three_days(&h);
    let path = dir.path().join("t-7374616765").join("2024-03-02.snap");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = h
        .transitions("stage", d("2024-03-01"), d("2024-03-02"), None)
        .unwrap_err();
    match &err {
        HistoryError::Corrupt { path: p, reason } => {
            assert_eq!(p, &path);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("2024-03-02.snap"), "{err}");
    // Truncated.
    std::fs::write(&path, &bytes[..10]).unwrap();
    assert!(matches!(
        h.load("stage", d("2024-03-02")),
        Err(HistoryError::Corrupt { .. })
    ));
    // A corrupt index is named too.
    let index = dir.path().join("t-766970").join("index.json");
    std::fs::write(&index, b"{not json").unwrap();
    let err = h.dates("vip").unwrap_err();
    assert!(err.to_string().contains("index.json"), "{err}");
    // Other tags still answer.
    assert_eq!(
        h.population("spend", d("2024-03-01"), d("2024-03-03"), None)
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn erasure_removes_an_id_from_every_snapshot_and_keeps_the_rest() {
    use portrait_history::{History, RoaringBitmap};
    use portrait_tagstore::TagData;
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(dir.path()).unwrap();
    let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let universe: RoaringBitmap = (0..100).collect();
    let stage = |active: std::ops::Range<u32>| {
        let a: RoaringBitmap = active.clone().collect();
        let rest = &universe - &a;
        TagData::enumeration(vec![
            ("active".to_string(), a),
            ("dormant".to_string(), rest),
        ])
        .unwrap()
    };
    let vip: RoaringBitmap = (0..50).collect();
    let (d1, d2, d3) = (stage(0..60), stage(0..60), stage(5..60));
    h.record_tags(
        &universe,
        &[
            ("stage".into(), &d1),
            ("vip".into(), &TagData::Bool(vip.clone())),
        ],
        day("2024-06-01"),
    )
    .unwrap();
    h.record_tags(
        &universe,
        &[
            ("stage".into(), &d2),
            ("vip".into(), &TagData::Bool(vip.clone())),
        ],
        day("2024-06-02"),
    )
    .unwrap();
    h.record_tags(
        &universe,
        &[
            ("stage".into(), &d3),
            ("vip".into(), &TagData::Bool(vip.clone())),
        ],
        day("2024-06-03"),
    )
    .unwrap();
    let gone: RoaringBitmap = [7u32].into_iter().collect();
    assert_eq!(h.erase(&gone).unwrap(), 3);
    for d in ["2024-06-01", "2024-06-02", "2024-06-03"] {
        let u = h.universe(day(d)).unwrap();
        assert!(!u.contains(7) && u.len() == 99, "{d}");
        let s = h.load("stage", day(d)).unwrap().data;
        assert!(!s.present().contains(7), "{d}");
        assert_eq!(s.present().len(), 99, "{d}: everyone else kept");
        let v = h.load("vip", day(d)).unwrap().data;
        assert!(!v.present().contains(7) && v.present().len() == 49, "{d}");
    }
    // Other moves are untouched: id 3 went active → dormant on the 3rd.
    let t = h
        .transitions("stage", day("2024-06-02"), day("2024-06-03"), None)
        .unwrap();
    let moved = t
        .iter()
        .find(|c| c.from == "active" && c.to == "dormant")
        .map(|c| c.count);
    assert_eq!(
        moved,
        Some(5),
        "ids 0..5 except none erased among them: {t:?}"
    );
}
