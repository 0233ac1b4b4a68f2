//! Persistence: round trip, dirty tracking, corruption.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::fs;

use portrait_tags::ir::{CmpOp, Expr};
use portrait_tags::value::Value;
use portrait_tagstore::persist::tag_file_name;
use portrait_tagstore::{select, RoaringBitmap, StoreError, TagStore};

fn bm(ids: &[u32]) -> RoaringBitmap {
    ids.iter().copied().collect()
}

fn store() -> TagStore {
    let s = TagStore::new();
    s.set_universe((0..100_000).step_by(3).chain([u32::MAX]).collect());
    s.set_bool("vip", (0..100_000).step_by(6).collect());
    s.set_enum(
        "阶段",
        vec![
            ("潜客".into(), bm(&[0, 3, 9])),
            ("active".into(), bm(&[6, u32::MAX])),
        ],
    )
    .unwrap();
    s.set_numeric(
        "spend_90d",
        (0..100_000u32).step_by(9).map(|i| (i, f64::from(i) * 1.5)),
    );
    s.set_numeric("days", [(3, 4.0), (12, -2.0), (u32::MAX, 30.0)]);
    s
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = store();
    let stats = s.save(dir.path()).unwrap();
    assert_eq!(stats.written, 4);
    assert!(stats.universe_written);
    let back = TagStore::open(dir.path()).unwrap();
    assert_eq!(*back.snapshot(), *s.snapshot());
    let tags = vec!["spend_90d".to_string()];
    let e = Expr::Cmp(
        CmpOp::Ge,
        Box::new(Expr::Tag(0)),
        Box::new(Expr::Lit(Value::Num(100_000.0))),
    );
    assert_eq!(
        select(&back.snapshot(), &e, &tags).unwrap(),
        select(&s.snapshot(), &e, &tags).unwrap()
    );
}

#[test]
fn only_dirty_tags_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let s = store();
    s.save(dir.path()).unwrap();
    let again = s.save(dir.path()).unwrap();
    assert_eq!(
        (again.written, again.deleted, again.universe_written),
        (0, 0, false)
    );

    s.set_bool("vip", bm(&[3]));
    assert!(s.remove_tag("days"));
    let stats = s.save(dir.path()).unwrap();
    assert_eq!(
        (stats.written, stats.deleted, stats.universe_written),
        (1, 1, false)
    );
    assert!(!dir.path().join(tag_file_name("days")).exists());

    // Retire touches the universe and the tags holding the id.
    let touched = s.retire(9);
    assert_eq!(touched, vec!["spend_90d".to_string(), "阶段".to_string()]);
    let stats = s.save(dir.path()).unwrap();
    assert_eq!((stats.written, stats.universe_written), (2, true));
    let back = TagStore::open(dir.path()).unwrap();
    assert_eq!(*back.snapshot(), *s.snapshot());
    assert!(!back.snapshot().universe().contains(9));

    // A different directory gets everything.
    let other = tempfile::tempdir().unwrap();
    assert_eq!(s.save(other.path()).unwrap().written, 3);
}

#[test]
fn corrupt_or_truncated_files_are_typed_errors() {
    let s = store();
    for damage in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        s.save(dir.path()).unwrap();
        let path = dir.path().join(tag_file_name("spend_90d"));
        let mut bytes = fs::read(&path).unwrap();
        match damage {
            0 => bytes.truncate(bytes.len() / 2),
            1 => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x40;
            }
            2 => bytes.truncate(5),
            _ => bytes.clear(),
        }
        fs::write(&path, &bytes).unwrap();
        match TagStore::open(dir.path()) {
            Err(StoreError::Corrupt { path: p, reason }) => {
                assert_eq!(p, path, "{reason}");
            }
            other => panic!("damage {damage}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn missing_universe_and_leftover_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = store();
    s.save(dir.path()).unwrap();
    fs::write(dir.path().join("t-00.tag.tmp"), b"half-written").unwrap();
    assert!(TagStore::open(dir.path()).is_ok());
    fs::remove_file(dir.path().join("universe.bin")).unwrap();
    assert!(matches!(
        TagStore::open(dir.path()),
        Err(StoreError::MissingUniverse(_))
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(TagStore::open(empty.path())
        .unwrap()
        .snapshot()
        .universe()
        .is_empty());
}

#[test]
fn ids_outside_the_universe_on_disk_are_pruned() {
    // A crash between a tag file and the universe file: the tag holds an id the universe lacks.
    let dir = tempfile::tempdir().unwrap();
    let s = store();
    s.save(dir.path()).unwrap();
    let smaller = TagStore::new();
    smaller.set_universe((3..100_000).step_by(3).collect());
    let other = tempfile::tempdir().unwrap();
    smaller.save(other.path()).unwrap();
    fs::copy(
        other.path().join("universe.bin"),
        dir.path().join("universe.bin"),
    )
    .unwrap();
    let back = TagStore::open(dir.path()).unwrap();
    let snap = back.snapshot();
    assert!(!snap.universe().contains(0));
    assert!(!snap.tag("vip").unwrap().present().contains(0));
    assert!(!snap.tag("阶段").unwrap().present().contains(u32::MAX));
    assert_eq!(snap.value_of("days", u32::MAX), None);
    assert_eq!(
        snap.value_of("days", 3),
        Some(portrait_tagstore::StoredValue::Num(4.0))
    );
}
