//! End-to-end tests of `portrait-import` through its public API: mapping → file → messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portrait_core::{IdentityConfig, Message, MessageKind};
use portrait_import::{
    read_bytes, read_file, Format, ImportError, Mapping, RejectWriter, RowContext, RowError,
};
use serde_json::{json, Value};

const RECEIVED: i64 = 1_750_000_000_000;
/// 2024-01-01T00:00:00Z, i.e. 2024-01-01 08:00:00 in Asia/Shanghai.
const NEW_YEAR_UTC: i64 = 1_704_067_200_000;

fn ctx() -> RowContext {
    RowContext {
        config: IdentityConfig::default(),
        source: 7,
        received_at: RECEIVED,
    }
}

fn mapping(yaml: &str) -> Mapping {
    Mapping::from_yaml(yaml).unwrap_or_else(|e| panic!("mapping should parse: {e}"))
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// All items of a read: good messages and rejects.
fn read_all(path: &Path, mapping: &Mapping) -> (Vec<(u64, Message)>, Vec<RowError>) {
    let rows = read_file(path, mapping, &ctx()).unwrap_or_else(|e| panic!("file opens: {e}"));
    split(rows)
}

fn split(rows: portrait_import::Rows) -> (Vec<(u64, Message)>, Vec<RowError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in rows {
        match item {
            Ok(m) => good.push(m),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

fn ids(m: &Message) -> Vec<String> {
    m.identifiers.iter().map(ToString::to_string).collect()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON text")
}

const ORDERS_MAPPING: &str = r#"
kind: track
event: Order Completed
identifiers:
  phone: 手机号
  tmall_nick: 买家昵称
  wechat_openid: { column: openid, scope_column: appid }
timestamp: { column: 付款时间, format: "%Y-%m-%d %H:%M:%S" }
traits:
  姓名: 收货人
properties:
  order_id: 订单号
  revenue: { column: 实付金额, type: decimal }
  quantity: { column: 数量, type: integer }
  gift: { column: 赠品, type: boolean }
message_id: 订单号
"#;

const ORDERS_CSV: &str = "\
订单号,买家昵称,手机号,openid,appid,收货人,实付金额,数量,赠品,付款时间
T1001,小明同学,138-0000-1234,oAbc,wxApp1,张三,199.90,2,是,2024-01-01 08:00:00
T1002,,+86 139 0000 5678,,,李四,88,1,否,2024-02-29 23:59:59
";

#[test]
fn doc_example_mapping_is_valid() {
    let doc = include_str!("../../../docs/import-mapping.md");
    let start = doc.find("```yaml").expect("the doc has a yaml block") + "```yaml".len();
    let end = start + doc[start..].find("```").expect("closed block");
    let m = mapping(&doc[start..end]);
    m.validate(&IdentityConfig::default())
        .expect("doc example validates");
    assert_eq!(m.event.as_deref(), Some("Order Completed"));
    assert_eq!(m.identifiers.len(), 3);
    assert_eq!(m.message_id, ["order_id"]);
    let keys: Vec<&str> = m.traits.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["姓名", "points"], "written order is kept");
}

#[test]
fn utf8_csv_with_chinese_headers_and_bom() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "orders.csv", format!("\u{feff}{ORDERS_CSV}"));
    let (good, bad) = read_all(&path, &mapping(ORDERS_MAPPING));
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(good.len(), 2);

    let (line, m) = &good[0];
    assert_eq!(*line, 2, "the header is line 1");
    assert_eq!(m.kind, MessageKind::Track);
    assert_eq!(m.event.as_deref(), Some("Order Completed"));
    assert_eq!(m.message_id, "import:T1001");
    assert_eq!(m.source, 7);
    assert_eq!(m.timestamp, NEW_YEAR_UTC);
    assert_eq!(m.received_at, RECEIVED);
    assert_eq!((m.sent_at, m.original_timestamp), (None, None));
    assert_eq!(
        ids(m),
        [
            "tmall_nick:小明同学",
            "phone:+8613800001234",
            "wechat_openid:wxApp1:oAbc"
        ],
        "normalised and in priority order"
    );
    assert_eq!(json_of(&m.traits), json!({"姓名": "张三"}));
    assert_eq!(
        json_of(&m.properties),
        json!({"order_id": "T1001", "revenue": 199.9, "quantity": 2, "gift": true})
    );
    assert_eq!(
        json_of(&m.context),
        json!({"library": {"name": "portrait-import"}})
    );
    assert_eq!((&m.user_id, &m.anonymous_id), (&None, &None));

    let (line, m) = &good[1];
    assert_eq!(*line, 3);
    assert_eq!(
        ids(m),
        ["phone:+8613900005678"],
        "empty nick and openid are skipped"
    );
    assert_eq!(json_of(&m.properties)["gift"], json!(false));
    assert_eq!(json_of(&m.properties)["revenue"], json!(88));
}

#[test]
fn gbk_csv_is_detected_and_decoded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(ORDERS_CSV);
    assert!(!unmappable);
    assert!(std::str::from_utf8(&gbk).is_err(), "really not UTF-8");
    let path = write(dir.path(), "orders_gbk.csv", &gbk);

    let (good, bad) = read_all(&path, &mapping(ORDERS_MAPPING));
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(good.len(), 2);
    assert_eq!(ids(&good[0].1)[0], "tmall_nick:小明同学");
    assert_eq!(json_of(&good[0].1.traits), json!({"姓名": "张三"}));

    // Saying so explicitly works too, and the same rows get the same ids as the UTF-8 file.
    let explicit = mapping(&format!("{ORDERS_MAPPING}encoding: gbk\n"));
    let (again, _) = read_all(&path, &explicit);
    assert_eq!(again, good);
    let utf8 = write(dir.path(), "orders.csv", ORDERS_CSV);
    let (from_utf8, _) = read_all(&utf8, &mapping(ORDERS_MAPPING));
    assert_eq!(from_utf8, good);

    // Forcing UTF-8 on GBK bytes fails at the header, with a hint.
    let forced = mapping(&format!("{ORDERS_MAPPING}encoding: utf-8\n"));
    let err = read_file(&path, &forced, &ctx()).expect_err("header is GBK");
    assert!(err.to_string().contains("encoding: gbk"), "{err}");
}

#[test]
fn json_lines_with_nested_paths_and_event_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = [
        r#"{"action": "Coupon Redeemed", "buyer": {"phone": "13800001234", "uid": "u-1"}, "ts": 1704067200000, "detail": {"coupon": {"value": 20}}, "tags": ["vip"]}"#,
        "",
        r#"{"action": "Coupon Redeemed", "buyer": {"phone": "138****0000"}, "ts": 1704067200000}"#,
        r#"{"action": "", "buyer": {"uid": "u-2"}, "ts": 1704067200000}"#,
        r#"{"action": "Viewed", "buyer": {"uid": "u-3"}, "ts": "soon"}"#,
        r#"{"action": "Viewed", "buyer": {"uid": "u-4"}"#,
        "   ",
        r#"[1, 2]"#,
        r#"{"action": "Viewed", "buyer.phone": "+8613900005678", "ts": 1704067200001, "detail": null}"#,
    ];
    let path = write(dir.path(), "events.jsonl", lines.join("\n"));
    let m = mapping(
        r#"
kind: track
event_column: action
identifiers:
  user_id: buyer.uid
  phone: buyer.phone
timestamp: { column: ts, format: epoch_ms }
properties:
  coupon_value: { column: detail.coupon.value, type: integer }
  tags: { column: tags, type: json }
"#,
    );
    let (good, bad) = read_all(&path, &m);

    let lines_ok: Vec<u64> = good.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        lines_ok,
        [1, 9],
        "physical line numbers, blank lines counted but skipped"
    );
    let first = &good[0].1;
    assert_eq!(first.event.as_deref(), Some("Coupon Redeemed"));
    assert_eq!(first.user_id.as_deref(), Some("u-1"));
    assert_eq!(ids(first), ["user_id:u-1", "phone:+8613800001234"]);
    assert_eq!(first.timestamp, NEW_YEAR_UTC);
    assert_eq!(
        json_of(&first.properties),
        json!({"coupon_value": 20, "tags": ["vip"]})
    );
    let last = &good[1].1;
    assert_eq!(
        ids(last),
        ["phone:+8613900005678"],
        "a literal dotted key wins"
    );
    assert_eq!(last.event.as_deref(), Some("Viewed"));
    assert_eq!(
        json_of(&last.properties),
        json!({}),
        "null and missing fields are omitted"
    );

    let rejected: Vec<(u64, &str)> = bad.iter().map(|e| (e.line, e.reason.as_str())).collect();
    assert_eq!(rejected.len(), 5, "{rejected:#?}");
    assert_eq!(rejected[0].0, 3);
    assert!(rejected[0].1.contains("`138****0000`"), "{}", rejected[0].1);
    assert!(
        rejected[0].1.contains("masked phone number"),
        "{}",
        rejected[0].1
    );
    assert_eq!(rejected[1], (4, "event column `action` is empty"));
    assert_eq!(rejected[2].0, 5);
    assert!(rejected[2]
        .1
        .starts_with("timestamp column `ts`: `soon` does not match"));
    assert_eq!(rejected[3].0, 6);
    assert!(
        rejected[3].1.starts_with("invalid JSON"),
        "{}",
        rejected[3].1
    );
    assert_eq!(rejected[4], (8, "expected a JSON object, found an array"));
    assert_eq!(bad[3].raw, lines[5], "the raw line is kept");
}

#[test]
fn parquet_written_with_arrow() {
    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
        RecordBatch, StringArray, StructArray, TimestampMillisecondArray, TimestampSecondArray,
    };
    use arrow::datatypes::{DataType, Field};

    let phone: ArrayRef = Arc::new(StringArray::from(vec![
        Some("13800001234"),
        Some("138****0000"),
        Some("13900005678"),
    ]));
    let buyer = StructArray::from(vec![(
        Arc::new(Field::new("nick", DataType::Utf8, true)),
        Arc::new(StringArray::from(vec![Some("nick-a"), None, None])) as ArrayRef,
    )]);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("phone", phone),
        ("buyer", Arc::new(buyer)),
        (
            "points",
            Arc::new(Int64Array::from(vec![Some(10), Some(20), None])),
        ),
        ("score", Arc::new(Float64Array::from(vec![1.5, 2.0, 3.25]))),
        (
            "paid_at",
            Arc::new(
                TimestampMillisecondArray::from(vec![NEW_YEAR_UTC, NEW_YEAR_UTC, NEW_YEAR_UTC])
                    .with_timezone("UTC"),
            ),
        ),
        // Zone-less: read in the mapping's time zone (Asia/Shanghai).
        (
            "local_at",
            Arc::new(TimestampSecondArray::from(vec![
                NEW_YEAR_UTC / 1000 + 8 * 3600,
                0,
                0,
            ])),
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from(vec![19990, 100, -5])
                    .with_precision_and_scale(10, 2)
                    .expect("valid decimal"),
            ),
        ),
        (
            "member",
            Arc::new(BooleanArray::from(vec![true, false, true])),
        ),
        (
            "birthday",
            Arc::new(Date32Array::from(vec![Some(19723), None, Some(0)])),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("members.parquet");
    let file = std::fs::File::create(&path).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");

    let m = mapping(
        r#"
kind: identify
identifiers:
  phone: phone
  tmall_nick: buyer.nick
timestamp: local_at
traits:
  points: { column: points, type: integer }
  score: { column: score, type: decimal }
  paid_at: paid_at
  amount: { column: amount, type: decimal }
  amount_text: amount
  member: { column: member, type: boolean }
  birthday: birthday
"#,
    );
    let (good, bad) = read_all(&path, &m);
    assert_eq!(good.len(), 2);
    let (line, first) = &good[0];
    assert_eq!(*line, 1, "row index + 1");
    assert_eq!(first.kind, MessageKind::Identify);
    assert_eq!(first.event, None);
    assert_eq!(ids(first), ["tmall_nick:nick-a", "phone:+8613800001234"]);
    assert_eq!(
        first.timestamp, NEW_YEAR_UTC,
        "zone-less timestamp read as Shanghai time"
    );
    assert_eq!(
        json_of(&first.traits),
        json!({
            "points": 10, "score": 1.5, "paid_at": "2024-01-01T00:00:00.000Z",
            "amount": 199.9, "amount_text": "199.90", "member": true, "birthday": "2024-01-01"
        })
    );
    assert_eq!(good[1].0, 3);
    assert_eq!(json_of(&good[1].1.traits)["amount"], json!(-0.05));
    assert_eq!(
        json_of(&good[1].1.traits).get("points"),
        None,
        "null omitted"
    );

    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].line, 2);
    assert!(
        bad[0].reason.contains("masked phone number"),
        "{}",
        bad[0].reason
    );
    let raw = json_of(&bad[0].raw);
    assert_eq!(
        raw["phone"],
        json!("138****0000"),
        "raw shows the mapped cells: {raw}"
    );

    // The same bytes through the upload API give the same messages.
    let bytes = std::fs::read(&path).expect("read back");
    let rows = read_bytes(bytes, Format::Parquet, &m, &ctx()).expect("opens");
    let total = rows.total_bytes();
    let (from_bytes, _) = split(rows);
    assert_eq!(from_bytes, good);
    assert!(total > 0);

    // A mapped column the file lacks is a file-level error naming it.
    let missing = mapping("kind: identify\nidentifiers: { phone: mobile }\n");
    let err = read_file(&path, &missing, &ctx()).expect_err("no such column");
    let text = err.to_string();
    assert!(
        text.contains("`mobile`") && text.contains("phone, buyer, points"),
        "{text}"
    );
}

#[test]
fn bad_rows_go_to_the_reject_file_and_good_rows_come_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = "\
order_id,phone,nick,pay_time,amount
A1,13800001234,n1,2024-01-01 08:00:00,10
A2,138****0000,,2024-01-01 08:00:00,10
A3,13800001235,n3,2024-13-45 99:00:00,10
A4,13800001236,n4
A5,13800001237,n5,2024-01-01 08:00:00,ten
,,,,
\"A6\",\"13800001238\",\"multi
line nick\",2024-01-01 08:00:00,12.5
A7,138****0000,n7,2024-01-01 08:00:00,3
";
    let path = write(dir.path(), "orders.csv", csv);
    let m = mapping(
        r#"
kind: track
event: Order Completed
identifiers: { phone: phone, tmall_nick: nick }
timestamp: pay_time
properties:
  amount: { column: amount, type: decimal }
message_id: [order_id, phone]
"#,
    );
    let rows = read_file(&path, &m, &ctx()).expect("opens");
    let total = rows.total_bytes();
    let reject_path = dir.path().join("rejects.csv");
    let mut rejects = RejectWriter::new(&reject_path);
    let mut good = Vec::new();
    let mut rows = rows;
    for item in rows.by_ref() {
        match item {
            Ok((line, msg)) => good.push((line, msg)),
            Err(e) => rejects.write(&e).expect("reject written"),
        }
    }
    assert_eq!(rows.bytes_read(), total, "progress reaches the end");
    assert!(!rows.interrupted());
    assert_eq!(rejects.count(), 4);
    assert_eq!(rejects.finish().expect("flush"), 4);

    let good_lines: Vec<u64> = good.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        good_lines,
        [2, 8, 10],
        "blank row 7 skipped; a multi-line record starts at 8"
    );
    assert_eq!(good[0].1.message_id, "import:A1:13800001234");
    assert_eq!(
        ids(&good[2].1),
        ["tmall_nick:n7"],
        "masked phone dropped, nick kept"
    );
    assert_eq!(
        good[2].1.message_id, "import:A7:138****0000",
        "ids use the raw values"
    );

    let mut reader = csv::Reader::from_path(&reject_path).expect("reject file exists");
    assert_eq!(
        reader.headers().expect("header"),
        vec!["line", "reason", "raw"]
    );
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.expect("record").iter().map(str::to_string).collect())
        .collect();
    let lines: Vec<&str> = records.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(lines, ["3", "4", "5", "6"]);
    assert_eq!(
        records[0][1],
        "no usable identifier: phone `138****0000` (column `phone`): masked phone number"
    );
    assert_eq!(records[0][2], "A2,138****0000,,2024-01-01 08:00:00,10");
    assert!(records[1][1].starts_with("timestamp column `pay_time`: `2024-13-45 99:00:00`"));
    assert_eq!(
        records[2][1],
        "broken CSV record: expected 5 fields as in the header, found 3"
    );
    assert_eq!(records[2][2], "A4,13800001236,n4");
    assert_eq!(
        records[3][1],
        "column `amount`: `ten` is not a decimal number"
    );

    // No rejects: no file.
    let clean = write(
        dir.path(),
        "clean.csv",
        "order_id,phone,nick,pay_time,amount\n",
    );
    let mut none = RejectWriter::new(dir.path().join("none.csv"));
    for item in read_file(&clean, &m, &ctx()).expect("opens") {
        if let Err(e) = item {
            none.write(&e).expect("write");
        }
    }
    assert_eq!(none.count(), 0);
    assert!(!none.path().exists());
}

#[test]
fn masked_phone_is_not_an_identifier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.csv",
        "phone,email\n138****0000,\n138****0000,a@b.cn\n,\n",
    );
    let m = mapping("kind: identify\nidentifiers: { phone: phone, email: email }\n");
    let (good, bad) = read_all(&path, &m);
    assert_eq!(good.len(), 1);
    assert_eq!(ids(&good[0].1), ["email:a@b.cn"]);
    assert_eq!(bad.len(), 1, "the all-empty row is blank and skipped");
    assert_eq!(bad[0].line, 2);
    assert!(bad[0].reason.contains("phone `138****0000`"));

    let path = write(
        dir.path(),
        "e.csv",
        "phone,email\n138****0000,\n,x\n , \"\"\n",
    );
    let (_, bad) = read_all(&path, &m);
    assert!(bad[1]
        .reason
        .contains("email `x` (column `email`): not an email address"));
}

#[test]
fn timezones_apply_to_times_without_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "t.csv",
        "uid,t\nu1,2024-01-01 08:00:00\nu2,2024-01-01T08:00:00+08:00\nu3,2024-01-01T00:00:00Z\n",
    );
    let times = |yaml: &str| -> Vec<i64> {
        let (good, bad) = read_all(&path, &mapping(yaml));
        assert!(bad.is_empty(), "{bad:?}");
        good.iter().map(|(_, m)| m.timestamp).collect()
    };
    let base = "kind: identify\nidentifiers: { user_id: uid }\n";
    assert_eq!(times(&format!("{base}timestamp: t\n")), [NEW_YEAR_UTC; 3]);
    assert_eq!(
        times(&format!(
            "{base}timestamp: {{ column: t, timezone: Asia/Shanghai }}\n"
        )),
        [NEW_YEAR_UTC; 3]
    );
    let eight_hours = 8 * 3600 * 1000;
    assert_eq!(
        times(&format!(
            "{base}timestamp: {{ column: t, timezone: UTC }}\n"
        )),
        [NEW_YEAR_UTC + eight_hours, NEW_YEAR_UTC, NEW_YEAR_UTC],
        "only the zone-less time moves"
    );
    // Without a timestamp the import time is used.
    assert_eq!(times(base), [RECEIVED; 3]);
    let (good, _) = read_all(&path, &mapping(base));
    assert_eq!(good[0].1.user_id.as_deref(), Some("u1"));
}

#[test]
fn reading_twice_gives_the_same_ids_and_a_changed_row_a_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = "phone,sku,qty\n13800001234,X1,1\n13800001234,X1,2\n13800001234,X1,1\n";
    let path = write(dir.path(), "a.csv", csv);
    let m = mapping(
        "kind: track\nevent: Added\nidentifiers: { phone: phone }\n\
         properties: { sku: sku, qty: { column: qty, type: integer } }\n",
    );
    let first: Vec<String> = read_all(&path, &m)
        .0
        .into_iter()
        .map(|(_, m)| m.message_id)
        .collect();
    let later = RowContext {
        received_at: RECEIVED + 86_400_000,
        ..ctx()
    };
    let rows = read_file(&path, &m, &later).expect("opens");
    let second: Vec<String> = split(rows)
        .0
        .into_iter()
        .map(|(_, m)| m.message_id)
        .collect();
    assert_eq!(first, second, "import time does not enter the id");
    assert!(first[0].starts_with("import:h-") && first[0].len() == "import:h-".len() + 32);
    assert_ne!(first[0], first[1], "a changed value is a new message");
    assert_eq!(first[0], first[2], "an identical row is the same message");

    let event = mapping(
        "kind: track\nevent: Removed\nidentifiers: { phone: phone }\n\
         properties: { sku: sku, qty: { column: qty, type: integer } }\n",
    );
    let other: Vec<String> = read_all(&path, &event)
        .0
        .into_iter()
        .map(|(_, m)| m.message_id)
        .collect();
    assert_ne!(first[0], other[0], "the event name is part of the content");
}

#[test]
fn mapping_errors_are_clear() {
    let err = |yaml: &str| {
        Mapping::from_yaml(yaml)
            .expect_err("should be refused")
            .to_string()
    };

    let e = err("kind: track\nevnt: Paid\nidentifiers: { phone: p }\n");
    assert!(
        e.contains("unknown field `evnt`") && e.contains("line 2"),
        "{e}"
    );
    assert!(
        e.starts_with("bad mapping: ") && e.contains("docs/import-mapping.md"),
        "{e}"
    );

    let e = err("kind: track\nidentifiers:\n  phone: { colum: p }\n");
    assert!(
        e.contains("unknown field `colum`") && e.contains("identifiers"),
        "{e}"
    );

    let e = err("kind: track\nidentifiers: { phone: p }\n");
    assert!(
        e.contains("kind `track` needs `event`") && e.contains("`event_column`"),
        "{e}"
    );

    let e = err("kind: track\nevent: A\nevent_column: b\nidentifiers: { phone: p }\n");
    assert!(e.contains("not both"), "{e}");

    let e = err("kind: identify\nevent: A\nidentifiers: { phone: p }\n");
    assert!(e.contains("only to kind `track`"), "{e}");

    let e = err("kind: identify\nidentifiers: { phone: p }\ntimestamp: { column: t, timezone: Asia/Shangai }\n");
    assert!(
        e.contains("unknown timezone `Asia/Shangai`") && e.contains("line 3"),
        "{e}"
    );

    let e = err(
        "kind: identify\nidentifiers: { phone: p }\ntimestamp: { column: t, format: \"%Y-%Q\" }\n",
    );
    assert!(e.contains("strftime"), "{e}");

    let e = err("kind: page\nidentifiers: { phone: p }\n");
    assert!(
        e.contains("unknown variant `page`") && e.contains("track"),
        "{e}"
    );

    let e =
        err("kind: identify\nidentifiers: { phone: p }\ntraits: { n: { column: n, type: int } }\n");
    assert!(
        e.contains("unknown variant `int`") && e.contains("integer"),
        "{e}"
    );

    let e = err("kind: identify\nidentifiers: {}\n");
    assert!(e.contains("`identifiers` is empty"), "{e}");

    let e = err("kind: identify\n");
    assert!(e.contains("missing field `identifiers`"), "{e}");

    let e = err("kind: identify\nidentifiers: { phone: p }\ndelimiter: ';;'\n");
    assert!(e.contains("delimiter must be one ASCII character"), "{e}");

    let e = err("kind: identify\nformat: parquet\nencoding: gbk\nidentifiers: { phone: p }\n");
    assert!(e.contains("`encoding` applies only to csv"), "{e}");

    let e = err("kind: identify\nidentifiers: { phone: p, phone: q }\n");
    assert!(e.contains("phone"), "{e}");

    // Unknown identifier types are caught against the identity configuration.
    let m = mapping("kind: identify\nidentifiers: { fax: f }\n");
    let e = m
        .validate(&IdentityConfig::default())
        .expect_err("fax is unknown");
    assert!(matches!(&e, ImportError::UnknownIdentifierType { kind, .. } if kind == "fax"));
    assert!(
        e.to_string().contains("`fax`") && e.to_string().contains("phone"),
        "{e}"
    );

    // Loading from a file names the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "bad.yaml",
        "kind: track\nidentifiers: { phone: p }\n",
    );
    let e = Mapping::load(&path).expect_err("no event").to_string();
    assert!(e.contains("bad.yaml"), "{e}");
    let e = Mapping::load(&dir.path().join("absent.yaml")).expect_err("no file");
    assert!(e.is_io() && e.to_string().contains("absent.yaml"), "{e}");
}

#[test]
fn file_level_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mapping("kind: identify\nidentifiers: { phone: phone }\n");

    let txt = write(dir.path(), "data.txt", "phone\n1\n");
    let e = read_file(&txt, &m, &ctx()).expect_err("unknown format");
    assert!(matches!(e, ImportError::UnknownFormat { .. }));
    assert!(e.to_string().contains("set `format:`"), "{e}");
    let as_csv = mapping("kind: identify\nformat: csv\nidentifiers: { phone: phone }\n");
    assert!(
        read_file(&txt, &as_csv, &ctx()).is_ok(),
        "format from the mapping wins"
    );

    let empty = write(dir.path(), "empty.csv", "");
    let e = read_file(&empty, &m, &ctx())
        .expect_err("no header")
        .to_string();
    assert!(e.contains("CSV header") && e.contains("empty"), "{e}");

    let wrong = write(dir.path(), "wrong.csv", "mobile;name\n13800001234;x\n");
    let e = read_file(&wrong, &m, &ctx())
        .expect_err("missing column")
        .to_string();
    assert!(
        e.contains("`phone`") && e.contains("mobile;name") && e.contains("delimiter"),
        "{e}"
    );
    let semicolon = mapping("kind: identify\ndelimiter: ';'\nidentifiers: { phone: mobile }\n");
    let (good, _) = read_all(&wrong, &semicolon);
    assert_eq!(ids(&good[0].1), ["phone:+8613800001234"]);

    let dup = write(dir.path(), "dup.csv", "phone,phone\n1,2\n");
    let e = read_file(&dup, &m, &ctx())
        .expect_err("ambiguous")
        .to_string();
    assert!(e.contains("appears 2 times"), "{e}");

    let e = read_file(&dir.path().join("nope.csv"), &m, &ctx()).expect_err("absent");
    assert!(e.is_io(), "{e}");

    let not_parquet = write(dir.path(), "x.parquet", "phone\n1\n");
    let e = read_file(&not_parquet, &m, &ctx()).expect_err("not parquet");
    assert!(matches!(e, ImportError::Parquet { .. }), "{e}");

    let unknown = mapping("kind: identify\nidentifiers: { fax: phone }\n");
    let e = read_bytes(b"phone\n1\n".to_vec(), Format::Csv, &unknown, &ctx()).expect_err("fax");
    assert!(matches!(e, ImportError::UnknownIdentifierType { .. }));
}

#[test]
fn upload_bytes_read_like_files() {
    let m = mapping(ORDERS_MAPPING);
    let (gbk, _, _) = encoding_rs::GBK.encode(ORDERS_CSV);
    let rows = read_bytes(gbk.into_owned(), Format::Csv, &m, &ctx()).expect("opens");
    let (good, bad) = split(rows);
    assert!(bad.is_empty());
    assert_eq!(good.len(), 2);
    assert_eq!(good[0].1.message_id, "import:T1001");

    let jsonl = "\u{feff}{\"p\": \"13800001234\"}\n".as_bytes().to_vec();
    let m = mapping("kind: identify\nidentifiers: { phone: p }\n");
    let (good, _) = split(read_bytes(jsonl, Format::JsonLines, &m, &ctx()).expect("opens"));
    assert_eq!(
        ids(&good[0].1),
        ["phone:+8613800001234"],
        "BOM skipped on JSON lines too"
    );
}

#[test]
fn rows_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<portrait_import::Rows>();
    send::<RejectWriter>();
    send::<ImportError>();
}

#[test]
fn format_from_path() {
    assert_eq!(Format::from_path(Path::new("a/b.CSV")), Some(Format::Csv));
    assert_eq!(
        Format::from_path(Path::new("x.ndjson")),
        Some(Format::JsonLines)
    );
    assert_eq!(
        Format::from_path(Path::new("x.json")),
        Some(Format::JsonLines)
    );
    assert_eq!(
        Format::from_path(Path::new("x.jsonl")),
        Some(Format::JsonLines)
    );
    assert_eq!(
        Format::from_path(Path::new("x.parquet")),
        Some(Format::Parquet)
    );
    assert_eq!(Format::from_path(Path::new("x.xlsx")), None);
    assert_eq!(Format::from_path(Path::new("noext")), None);
}
