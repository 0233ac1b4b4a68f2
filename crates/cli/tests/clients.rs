//! End to end: real Segment and RudderStack SDKs, unchanged, against `portrait serve`.
//!
//! Each test starts the `portrait` binary on a fresh data directory and a free loopback port,
//! runs one client script from `tests/clients/` (Python or Node) through a small recording
//! proxy, then checks through the admin API what the server made of it: the profiles, their
//! identifiers and traits, the merge of the anonymous and the identified profile, and the
//! events with their properties. The proxy also shows how each SDK talks (gzip or not, content
//! type, auth) without changing a byte.
//!
//! The SDKs are installed by `.ci/install-test-deps.sh`; a missing one fails the test with
//! that hint rather than skipping it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "pat_clients_e2e_token";
const INSTALL_HINT: &str = "run `bash .ci/install-test-deps.sh` from the repository root \
     (it pip-installs tests/clients/requirements.txt and runs `npm ci` in tests/clients)";

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 messages over std::net
// ---------------------------------------------------------------------------------------------

/// One HTTP message as read off the wire: its head parsed, its bytes kept for forwarding.
struct HttpMessage {
    /// `POST /v1/batch HTTP/1.1` or `HTTP/1.1 200 OK`.
    start: String,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    /// The body after undoing chunked transfer coding (not content coding).
    body: Vec<u8>,
    /// Every byte as received.
    raw: Vec<u8>,
}

impl HttpMessage {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn status(&self) -> u16 {
        self.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn read_line(r: &mut impl BufRead, raw: &mut Vec<u8>) -> std::io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    raw.extend_from_slice(&line);
    Ok(String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

/// Reads one message; `None` on a clean end of stream before it starts. A response without
/// length is read to the end of the stream.
fn read_http(r: &mut impl BufRead, is_response: bool) -> std::io::Result<Option<HttpMessage>> {
    let mut raw = Vec::new();
    let start = read_line(r, &mut raw)?;
    if raw.is_empty() {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, &mut raw)?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let size_line = read_line(r, &mut raw)?;
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunk size: {e}"))
            })?;
            if size == 0 {
                while !read_line(r, &mut raw)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            raw.extend_from_slice(&chunk);
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = get("content-length") {
        let n: usize = n.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("content-length: {e}"),
            )
        })?;
        body = vec![0; n];
        r.read_exact(&mut body)?;
        raw.extend_from_slice(&body);
    } else if is_response {
        r.read_to_end(&mut body)?;
        raw.extend_from_slice(&body);
    }
    Ok(Some(HttpMessage {
        start,
        headers,
        body,
        raw,
    }))
}

/// A one-shot HTTP request to the server; answers the status and the body as JSON (or as a
/// JSON string when the body is not JSON).
fn http(port: u16, method: &str, path: &str, auth: Option<&str>) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let response = read_http(&mut reader, true)?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response"))?;
    let body = serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()));
    Ok((response.status(), body))
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A child process killed (and reaped) on drop, also when the test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `portrait serve` on its own data directory.
struct Server {
    // Dropped first: the process is gone before its directory is removed.
    _process: KillOnDrop,
    port: u16,
    source: String,
    write_key: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn wait_healthy(child: &mut Child, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("the server exited with {status}"));
        }
        if let Ok((200, body)) = http(port, "GET", "/health", None) {
            if body == json!("ok") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no healthy answer on port {port} within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Server {
    /// Adds source `source` with `write_key` to a new data directory, then serves it on a free
    /// loopback port (another one if the port was taken in between).
    fn start(source: &str, write_key: &str) -> Server {
        let bin = env!("CARGO_BIN_EXE_portrait");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = Command::new(bin)
            .args(["source", "add", "--data"])
            .arg(&data)
            .args([source, "--kind", "app", "--write-key", write_key])
            .output()
            .expect("run `portrait source add`");
        assert!(
            out.status.success(),
            "`portrait source add` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), write_key);

        let log = dir.path().join("server.log");
        for attempt in 1..=5 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).expect("create server log");
            let child = Command::new(bin)
                .args(["serve", "--data"])
                .arg(&data)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("PORTRAIT_ADMIN_TOKEN", ADMIN_TOKEN)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone log handle"))
                .stderr(log_file)
                .spawn()
                .expect("spawn `portrait serve`");
            let mut process = KillOnDrop(child);
            match wait_healthy(&mut process.0, port, Duration::from_secs(30)) {
                Ok(()) => {
                    return Server {
                        _process: process,
                        port,
                        source: source.to_string(),
                        write_key: write_key.to_string(),
                        _dir: dir,
                    }
                }
                Err(why) => {
                    drop(process);
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if attempt < 5 && text.contains("cannot listen") {
                        eprintln!("port {port} was taken ({why}); trying another");
                        continue;
                    }
                    panic!("`portrait serve` did not come up: {why}\nserver log:\n{text}");
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `GET` on the admin API; panics unless the answer is 200.
    fn admin(&self, path: &str) -> Value {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (status, body) = http(self.port, "GET", &format!("/api/v1{path}"), Some(&auth))
            .unwrap_or_else(|e| panic!("GET /api/v1{path}: {e}"));
        assert_eq!(status, 200, "GET /api/v1{path} answered {status}: {body}");
        body
    }
}

// ---------------------------------------------------------------------------------------------
// A recording proxy between the SDK and the server
// ---------------------------------------------------------------------------------------------

/// One request the SDK made, as the proxy saw it, with the server's answer.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    path: String,
    content_type: Option<String>,
    content_encoding: Option<String>,
    authorization: Option<String>,
    /// Body after undoing gzip when the body is gzip.
    body: Vec<u8>,
    gzip_magic: bool,
    status: u16,
    response: String,
}

/// Forwards every byte unchanged from the SDK to the server and back, recording each
/// request/response pair.
struct Proxy {
    port: u16,
    log: Arc<Mutex<Vec<Exchange>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let log = log2.clone();
                std::thread::spawn(move || {
                    if let Err(e) = relay(conn, upstream, &log) {
                        eprintln!("proxy connection ended with an error: {e}");
                    }
                });
            }
        });
        Proxy { port, log, stop }
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().expect("proxy log").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn relay(client: TcpStream, upstream: u16, log: &Mutex<Vec<Exchange>>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut to_server = server.try_clone()?;
    let mut from_server = BufReader::new(server);
    while let Some(request) = read_http(&mut from_client, false)? {
        to_server.write_all(&request.raw)?;
        let response = read_http(&mut from_server, true)?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed")
        })?;
        // Recorded before the client has its answer: when the script exits, every request it
        // made is in the log.
        let mut parts = request.start.split_whitespace();
        let gzip_magic = request.body.starts_with(&[0x1f, 0x8b]);
        let mut body = Vec::new();
        if !gzip_magic
            || flate2::read::GzDecoder::new(&request.body[..])
                .read_to_end(&mut body)
                .is_err()
        {
            body = request.body.clone(); // not gzip: the JSON check shows what it is
        }
        log.lock().expect("proxy log").push(Exchange {
            method: parts.next().unwrap_or("").to_string(),
            path: parts.next().unwrap_or("").to_string(),
            content_type: request.header("content-type").map(str::to_string),
            content_encoding: request.header("content-encoding").map(str::to_string),
            authorization: request.header("authorization").map(str::to_string),
            body,
            gzip_magic,
            status: response.status(),
            response: String::from_utf8_lossy(&response.body).into_owned(),
        });
        to_client.write_all(&response.raw)?;
        to_client.flush()?;
        if request.wants_close() || response.wants_close() {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Running a client script
// ---------------------------------------------------------------------------------------------

/// Fails (never skips) when `program` is not on the PATH.
fn require_program(program: &str) {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{program}` is not installed or not on the PATH; {INSTALL_HINT}"
    );
}

/// Fails unless Python distribution `dist` is installed at `version`.
fn require_python_package(dist: &str, version: &str) {
    require_program("python3");
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))",
            dist,
        ])
        .output()
        .expect("run python3");
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && found == version,
        "the Python package {dist}=={version} is missing (found: {:?}); {INSTALL_HINT}",
        if out.status.success() {
            found
        } else {
            "none".into()
        }
    );
}

/// Fails unless `tests/clients/node_modules/{name}` is installed at `version`.
fn require_node_package(name: &str, version: &str) {
    require_program("node");
    let manifest = clients_dir()
        .join("node_modules")
        .join(name)
        .join("package.json");
    let found = std::fs::read(&manifest)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string));
    assert_eq!(
        found.as_deref(),
        Some(version),
        "the npm package {name}@{version} is missing from tests/clients/node_modules; {INSTALL_HINT}"
    );
}

/// Runs `program script` in tests/clients with the server's address and key; panics with the
/// script's output when it fails or takes longer than two minutes.
fn run_client(program: &str, script: &str, host_port: u16, write_key: &str, tag: &str) -> String {
    let dir = clients_dir();
    let mut child = KillOnDrop(
        Command::new(program)
            .arg(script)
            .current_dir(&dir)
            .env("PORTRAIT_HOST", format!("http://127.0.0.1:{host_port}"))
            .env("PORTRAIT_WRITE_KEY", write_key)
            .env("PORTRAIT_TAG", tag)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{program} {script}`: {e}; {INSTALL_HINT}")),
    );
    let mut stdout = child.0.stdout.take().expect("stdout");
    let mut stderr = child.0.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the client") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = child.0.kill();
    }
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("`{program} {script}` failed ({s})\nstdout:\n{out}\nstderr:\n{err}"),
        None => panic!("`{program} {script}` took over 2 minutes\nstdout:\n{out}\nstderr:\n{err}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// `YYYY-MM-DDTHH:MM:SS(.mmm)Z` as milliseconds since the epoch.
fn iso_millis(text: &str) -> i64 {
    fn bad<T>(text: &str) -> T {
        panic!("`{text}` is not a UTC ISO-8601 timestamp")
    }
    let t = text.strip_suffix('Z').unwrap_or_else(|| bad(text));
    let (date, time) = t.split_once('T').unwrap_or_else(|| bad(text));
    let num = |s: &str| s.parse::<i64>().unwrap_or_else(|_| bad(text));
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(num).collect();
    if d.len() != 3 || h.len() != 3 {
        bad::<()>(text);
    }
    let ms = num(&format!("{frac:0<3}")[..3]);
    // Days from civil (H. Hinnant).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + h[0]) * 60 + h[1]) * 60_000 + h[2] * 1000 + ms
}

fn identifiers(profile: &Value) -> BTreeSet<String> {
    profile["identifiers"]
        .as_array()
        .expect("identifiers array")
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["type"].as_str().expect("type"),
                i["value"].as_str().expect("value")
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn trait_value<'a>(profile: &'a Value, name: &str) -> &'a Value {
    &profile["traits"][name]["value"]
}

/// All events of a profile, newest first.
fn events(server: &Server, id: u64) -> Vec<Value> {
    let page = server.admin(&format!("/profiles/{id}/events?limit=100"));
    assert_eq!(page["next"], Value::Null, "more than 100 events: {page}");
    page["events"].as_array().expect("events array").clone()
}

fn find<'a>(events: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let key = if kind == "track" { "event" } else { "name" };
    let hits: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == kind && e[key] == name)
        .collect();
    assert_eq!(hits.len(), 1, "expected one {kind} `{name}` in {events:#?}");
    hits[0]
}

fn only<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    let hits: Vec<&Value> = events.iter().filter(|e| e["type"] == kind).collect();
    assert_eq!(hits.len(), 1, "expected one {kind} in {events:#?}");
    hits[0]
}

/// What every client script sends (see tests/clients/segment_python.py), checked through the
/// admin API.
fn check_scenario(server: &Server, tag: &str) {
    let src = server.source.as_str();
    let (u1, a1, u2, a2) = (
        format!("u-{tag}-1"),
        format!("a-{tag}-1"),
        format!("u-{tag}-2"),
        format!("a-{tag}-2"),
    );

    let stats = server.admin("/stats");
    assert_eq!(stats["events"], 10, "stats: {stats}");
    assert_eq!(stats["duplicates"], 0, "stats: {stats}");
    assert_eq!(stats["profiles"], 2, "stats: {stats}");
    assert_eq!(stats["identifiers"], 7, "stats: {stats}");
    // One merge for user 1 (alias). User 2 needs none when its messages arrive in order, but
    // SDKs that send batches concurrently (the RudderStack node SDK resumes several waiting
    // flushes at once) may deliver its screen before its identify: then a second merge.
    let merges = stats["merges"].as_u64().expect("merges");
    assert!((1..=2).contains(&merges), "stats: {stats}");
    assert_eq!(stats["events_per_source"][src], 10, "stats: {stats}");

    // User 1: the anonymous profile (track + page) and the identified one (identify with
    // phone and email) merged by the alias call.
    let p1 = server.admin(&format!("/profiles/by-identifier/user_id/{u1}"));
    let id1 = p1["id"].as_u64().expect("profile id");
    for (kind, value) in [
        ("anonymous_id", a1.as_str()),
        ("phone", "13800000001"),
        ("phone", "%2B86%20138-0000-0001"),
        ("email", "Zhang.San%40Example.COM"),
    ] {
        let other = server.admin(&format!("/profiles/by-identifier/{kind}/{value}"));
        assert_eq!(
            other["id"], id1,
            "{kind} {value} resolves elsewhere: {other}"
        );
    }
    assert_eq!(
        identifiers(&p1),
        set(&[
            &format!("user_id:{u1}"),
            &format!("anonymous_id:{a1}"),
            "phone:+8613800000001",
            "email:zhang.san@example.com",
        ]),
        "profile: {p1}"
    );
    assert_eq!(p1["event_count"], 7, "profile: {p1}");
    assert_eq!(p1["sources"], json!({ src: 7 }), "profile: {p1}");
    // The anonymous events always reach the server before the identify and alias calls.
    assert_eq!(
        p1["merged_from"].as_array().map(Vec::len),
        Some(1),
        "profile: {p1}"
    );
    for (name, value) in [
        ("name", json!("张三")),
        ("email", json!("Zhang.San@Example.COM")),
        ("phone", json!("+86 138-0000-0001")),
        ("plan", json!("gold")),
        ("age", json!(30)),
        ("vip", json!(true)),
    ] {
        assert_eq!(trait_value(&p1, name), &value, "trait {name}: {p1}");
        assert_eq!(p1["traits"][name]["source"], src, "trait {name}: {p1}");
    }
    // The merged-away profile answers with its survivor.
    let gone = p1["merged_from"][0].as_u64().expect("merged id");
    assert_eq!(server.admin(&format!("/profiles/{gone}"))["id"], id1);

    let ev1 = events(server, id1);
    assert_eq!(ev1.len(), 7, "events: {ev1:#?}");
    let viewed = find(&ev1, "track", "Product Viewed");
    assert_eq!(viewed["anonymousId"], a1.as_str());
    assert_eq!(
        viewed["properties"],
        json!({"sku": "SKU-1", "price": 99.5, "currency": "CNY", "tags": ["new", "sale"],
               "variant": {"color": "red", "size": "M"}}),
        "{viewed}"
    );
    let home = find(&ev1, "page", "Home");
    assert_eq!(home["anonymousId"], a1.as_str());
    assert_eq!(
        home["properties"],
        json!({"path": "/", "title": "首页"}),
        "{home}"
    );
    let identify = only(&ev1, "identify");
    assert_eq!(identify["userId"], u1.as_str());
    assert_eq!(identify["traits"]["name"], "张三", "{identify}");
    assert_eq!(
        identify["traits"]["phone"], "+86 138-0000-0001",
        "{identify}"
    );
    let alias = only(&ev1, "alias");
    assert_eq!(alias["userId"], u1.as_str(), "{alias}");
    assert_eq!(alias["previousId"], a1.as_str(), "{alias}");
    let order = find(&ev1, "track", "Order Completed");
    assert_eq!(order["userId"], u1.as_str());
    assert_eq!(
        order["properties"],
        json!({"order_id": "O-1001", "revenue": 199.9, "currency": "CNY",
               "products": [{"sku": "SKU-1", "quantity": 2, "price": 99.5}]}),
        "{order}"
    );
    let checkout = find(&ev1, "page", "Checkout");
    assert_eq!(checkout["properties"]["path"], "/checkout", "{checkout}");
    let group = only(&ev1, "group");
    assert_eq!(group["groupId"], format!("g-{tag}"), "{group}");
    assert_eq!(group["userId"], u1.as_str(), "{group}");

    // User 2: identify carried both ids, so the anonymous track joined the identified user.
    let p2 = server.admin(&format!("/profiles/by-identifier/anonymous_id/{a2}"));
    let id2 = p2["id"].as_u64().expect("profile id");
    assert_ne!(id1, id2);
    for path in [
        format!("user_id/{u2}"),
        "email/li.si@example.com".to_string(),
    ] {
        let other = server.admin(&format!("/profiles/by-identifier/{path}"));
        assert_eq!(other["id"], id2, "{path} resolves elsewhere: {other}");
    }
    assert_eq!(
        identifiers(&p2),
        set(&[
            &format!("user_id:{u2}"),
            &format!("anonymous_id:{a2}"),
            "email:li.si@example.com"
        ]),
        "profile: {p2}"
    );
    assert_eq!(p2["event_count"], 3, "profile: {p2}");
    assert_eq!(trait_value(&p2, "name"), &json!("李四"), "profile: {p2}");
    let ev2 = events(server, id2);
    assert_eq!(ev2.len(), 3, "events: {ev2:#?}");
    let signup = find(&ev2, "track", "Signup Started");
    assert_eq!(signup["anonymousId"], a2.as_str());
    assert_eq!(signup["properties"], json!({"step": 1}), "{signup}");
    let identify2 = only(&ev2, "identify");
    assert_eq!(identify2["userId"], u2.as_str(), "{identify2}");
    assert_eq!(identify2["anonymousId"], a2.as_str(), "{identify2}");
    let screen = find(&ev2, "screen", "Settings");
    assert_eq!(screen["userId"], u2.as_str());
    assert_eq!(screen["properties"], json!({"tab": "privacy"}), "{screen}");

    // Every event: this source, a distinct client message id, and an event time that the
    // SDK's timestamp format and clock-skew correction put next to the receive time.
    let all: Vec<&Value> = ev1.iter().chain(&ev2).collect();
    let ids: BTreeSet<&str> = all
        .iter()
        .map(|e| e["messageId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 10, "message ids are not distinct: {ids:?}");
    for e in &all {
        assert_eq!(e["source"], src, "{e}");
        let at = iso_millis(e["timestamp"].as_str().expect("timestamp"));
        let received = iso_millis(e["receivedAt"].as_str().expect("receivedAt"));
        assert!(
            (at - received).abs() < 60_000,
            "event time far from receive time: {e}"
        );
    }
}

/// How the SDK talked: every request a `POST /v1/batch` with HTTP Basic auth carrying the
/// write key, answered 200, the 10 messages in all; and which requests were gzipped.
fn check_wire(proxy: &Proxy, write_key: &str) -> Vec<Exchange> {
    let exchanges = proxy.exchanges();
    assert!(!exchanges.is_empty(), "the SDK made no request");
    let mut messages = 0;
    for x in &exchanges {
        assert_eq!(
            (x.method.as_str(), x.path.as_str()),
            ("POST", "/v1/batch"),
            "{x:?}"
        );
        assert_eq!(x.status, 200, "the server refused a request: {x:?}");
        let basic = x
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "));
        let user = basic
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        assert_eq!(user, Some(format!("{write_key}:")), "auth of {x:?}");
        if x.content_encoding.as_deref() == Some("gzip") {
            assert!(
                x.gzip_magic,
                "Content-Encoding: gzip on a body that is not gzip: {x:?}"
            );
        }
        let body: Value = serde_json::from_slice(&x.body).expect("a JSON batch body");
        let batch = body["batch"].as_array().expect("a batch array");
        messages += batch.len();
        let answer: Value = serde_json::from_str(&x.response).expect("a JSON answer");
        assert_eq!(answer["success"], true, "{answer}");
        assert_eq!(answer["accepted"], batch.len(), "{answer}");
    }
    assert_eq!(
        messages,
        10,
        "the SDK sent {messages} messages in {} requests",
        exchanges.len()
    );
    exchanges
}

fn gzipped(exchanges: &[Exchange]) -> usize {
    exchanges
        .iter()
        .filter(|x| x.content_encoding.as_deref() == Some("gzip"))
        .count()
}

/// Starts a server and a proxy, runs the script and checks both the wire and the result.
fn run_scenario(program: &str, script: &str, tag: &str) -> Vec<Exchange> {
    let source = format!("app-{tag}");
    let write_key = format!("wk_e2e_{}", tag.replace('-', "_"));
    let server = Server::start(&source, &write_key);
    let proxy = Proxy::start(server.port);
    let out = run_client(program, script, proxy.port, &server.write_key, tag);
    eprintln!("{}", out.trim());
    let exchanges = check_wire(&proxy, &server.write_key);
    for x in &exchanges {
        eprintln!(
            "{} {}: {} bytes, Content-Type {:?}, Content-Encoding {:?} -> {}",
            x.method,
            x.path,
            x.body.len(),
            x.content_type,
            x.content_encoding,
            x.status
        );
    }
    check_scenario(&server, tag);
    exchanges
}

// ---------------------------------------------------------------------------------------------
// One test per SDK
// ---------------------------------------------------------------------------------------------

#[test]
fn segment_python_sdk() {
    require_python_package("segment-analytics-python", "2.4.0");
    let wire = run_scenario("python3", "segment_python.py", "py");
    // The module-level client gzips (analytics.gzip = True); the sync_mode client does not.
    assert!(gzipped(&wire) >= 1, "no gzip request: {wire:?}");
    assert!(gzipped(&wire) < wire.len(), "no plain request: {wire:?}");
    assert!(wire
        .iter()
        .all(|x| x.content_type.as_deref() == Some("application/json")));
}

#[test]
fn segment_node_sdk() {
    require_node_package("@segment/analytics-node", "3.1.0");
    let wire = run_scenario("node", "segment_node.mjs", "node");
    // analytics-node has no gzip option: plain JSON, several batches (flushAt: 4).
    assert_eq!(gzipped(&wire), 0, "{wire:?}");
    assert!(wire.len() >= 3, "expected several batches: {wire:?}");
    assert!(wire
        .iter()
        .all(|x| x.content_type.as_deref() == Some("application/json")));
}

#[test]
fn rudderstack_node_sdk() {
    require_node_package("@rudderstack/rudder-sdk-node", "3.0.13");
    let wire = run_scenario("node", "rudder_node.mjs", "rudder-node");
    // Every batch gzipped, labelled as a form by axios: the server must sniff the gzip.
    assert_eq!(gzipped(&wire), wire.len(), "{wire:?}");
    assert!(
        wire.iter().all(|x| x
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))),
        "{wire:?}"
    );
}

#[test]
fn rudderstack_python_sdk() {
    require_python_package("rudder-sdk-python", "2.1.9");
    let wire = run_scenario("python3", "rudder_python.py", "rudder-py");
    assert!(gzipped(&wire) >= 1, "no gzip request: {wire:?}");
    assert!(gzipped(&wire) < wire.len(), "no plain request: {wire:?}");
}
