//! Erasure reaches the lake: no row, table or file keeps the erased person.

use arrow::array::Array;
use arrow::util::display::array_value_to_string;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use portrait_core::segment::{parse_message, Envelope};
use portrait_core::{Identifier, IdentityConfig, Message};
use portrait_store::{Engine, EngineOptions};
use serde_json::json;

fn msg(v: serde_json::Value) -> Message {
    let env = Envelope {
        source: 1,
        received_at: 1_700_000_000_000,
        ..Default::default()
    };
    parse_message(&v, &env, &IdentityConfig::default())
        .expect("valid")
        .message
}

/// Every cell of every Parquet file under `dir`, rendered as text (decompressed).
fn all_cells(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let f = std::fs::File::open(&p).expect("open");
                for batch in ParquetRecordBatchReaderBuilder::try_new(f)
                    .expect("parquet")
                    .build()
                    .expect("reader")
                {
                    let batch = batch.expect("batch");
                    for col in batch.columns() {
                        for i in 0..col.len() {
                            out.push(array_value_to_string(col, i).unwrap_or_default());
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn purge_removes_erased_events_and_profiles_from_every_lake_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), EngineOptions::default()).expect("open");
    let people = |n: u32| {
        vec![
            msg(
                json!({"type": "identify", "messageId": format!("i{n}"), "userId": format!("vip-{n}"),
                       "timestamp": "2024-06-18T10:00:00Z",
                       "traits": {"phone": format!("1370000{n:04}"), "name": format!("李四{n}")}}),
            ),
            msg(
                json!({"type": "track", "messageId": format!("t{n}"), "userId": format!("vip-{n}"),
                       "timestamp": "2024-11-11T10:00:00Z", "event": "Order Completed"}),
            ),
        ]
    };
    engine.ingest(people(1)).expect("ingest");
    engine.ingest(people(2)).expect("ingest");
    portrait_lake::compact(&engine, &mut |_| {}).expect("compact");
    assert!(all_cells(dir.path())
        .iter()
        .any(|c| c.contains("13700000001")));

    let id = engine
        .state()
        .book
        .by_identifier(&Identifier::new("user_id", "vip-1"))
        .expect("vip-1");
    let report = engine.erase(id).expect("erase");
    let purged = portrait_lake::purge(&engine, &report.events).expect("purge");
    assert_eq!(purged.rows, 2);
    let cells = all_cells(dir.path());
    for secret in ["13700000001", "李四1", "vip-1"] {
        assert!(
            !cells.iter().any(|c| c.contains(secret)),
            "{secret} still in the lake"
        );
    }
    assert!(
        cells.iter().any(|c| c.contains("vip-2")),
        "the other person stays"
    );
    // The lake and the store still agree: new events compact as usual.
    engine
        .ingest(vec![msg(
            json!({"type": "track", "messageId": "t3", "userId": "vip-2", "event": "E"}),
        )])
        .expect("ingest");
    let r = portrait_lake::compact(&engine, &mut |_| {}).expect("compact after purge");
    assert_eq!(r.events, 1);
}
