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
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn status(&self) -> u16 {
        self.start.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    fn wants_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn read_line(r: &mut impl BufRead, raw: &mut Vec<u8>) -> std::io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    raw.extend_from_slice(&line);
    Ok(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string())
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
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
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
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("content-length: {e}"))
        })?;
        body = vec![0; n];
        r.read_exact(&mut body)?;
        raw.extend_from_slice(&body);
    } else if is_response {
        r.read_to_end(&mut body)?;
        raw.extend_from_slice(&body);
    }
    Ok(Some(HttpMessage { start, headers, body, raw }))
}

/// A one-shot HTTP request to the server; answers the status and the body as JSON (or as a
/// JSON string when the body is not JSON).
fn http(port: u16, method: &str, path: &str, auth: Option<&str>) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let response = read_http(&mut reader, true)?.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response")
    })?;
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
                .env("PORTRAIT_LOG", "warn")
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
