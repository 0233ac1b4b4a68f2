//! Test harness: a real `portrait serve` process on a loopback port, and a tiny HTTP client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Admin token used by every test server.
pub const TOKEN: &str = "test-admin-token";

/// Path of the built `portrait` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portrait")
}

/// Runs `portrait ARGS` to completion; returns (success, stdout, stderr).
pub fn portrait(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run portrait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Adds a source with a chosen key (server must not be running on `data`).
pub fn add_source(data: &Path, name: &str, kind: &str, key: &str) {
    let d = data.to_str().expect("utf-8 path");
    let (ok, out, err) = portrait(&[
        "source",
        "add",
        "--data",
        d,
        name,
        "--kind",
        kind,
        "--write-key",
        key,
    ]);
    assert!(ok, "source add failed: {err}");
    assert_eq!(out.trim(), key);
}

/// A running server, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

impl Server {
    /// Starts `portrait serve` on `data` with extra args and waits for `/health`.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::start_with_stderr(data, extra, None)
    }

    /// Like [`Server::start`], with the server's stderr appended to `log` when given.
    pub fn start_with_stderr(data: &Path, extra: &[&str], log: Option<&Path>) -> Server {
        let stderr = || match log {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Stdio::from)
                .expect("open the stderr log"),
            None => Stdio::null(),
        };
        for _ in 0..5 {
            let addr = free_port();
            let child = Command::new(bin())
                .args([
                    "serve",
                    "--data",
                    data.to_str().expect("utf-8"),
                    "--listen",
                    &addr.to_string(),
                ])
                .args(extra)
                .env("PORTRAIT_ADMIN_TOKEN", TOKEN)
                .stdout(Stdio::null())
                .stderr(stderr())
                .spawn()
                .expect("spawn portrait serve");
            let mut server = Server {
                child,
                addr,
                data: data.to_path_buf(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break;
                }
                if let Ok(r) = server.try_request("GET", "/health", &[], b"") {
                    if r.status == 200 {
                        return server;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("portrait serve did not start");
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a request; panics on transport errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .expect("request")
    }

    /// Sends a request.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        request(self.addr, method, path, headers, body)
    }

    /// POSTs JSON to the ingest API with a write key (HTTP Basic).
    pub fn ingest(&self, path: &str, key: &str, body: &str) -> Response {
        let auth = basic(key);
        self.request(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// GETs an admin endpoint and parses JSON.
    pub fn admin_get(&self, path: &str) -> Response {
        let auth = format!("Bearer {TOKEN}");
        self.request("GET", path, &[("Authorization", &auth)], b"")
    }

    /// POSTs JSON to an admin endpoint.
    pub fn admin_post(&self, path: &str, body: &str) -> Response {
        let auth = format!("Bearer {TOKEN}");
        self.request(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }
}

impl Server {
    /// Sends a request with `Authorization: Bearer TOKEN` (no header when `token` is `None`).
    pub fn request_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        self.request(method, path, &headers, body)
    }

    /// GETs with a bearer token.
    pub fn get_as(&self, token: &str, path: &str) -> Response {
        self.request_as(Some(token), "GET", path, b"")
    }

    /// Stops the server as Ctrl-C does (SIGINT) and waits for it to exit cleanly (snapshot,
    /// flushed logs); SIGKILL after 30 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Basic base64(key:)`.
pub fn basic(key: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        data = &data[pos + 2 + size + 2..];
    }
    out
}

/// Every file under `dir` as text: Parquet files decoded cell by cell, others as raw bytes.
pub fn all_text(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = if p.extension().is_some_and(|x| x == "parquet") {
                parquet_text(&p)
            } else {
                String::from_utf8_lossy(&std::fs::read(&p).expect("read")).to_string()
            };
            out.push((p.display().to_string(), text));
        }
    }
    out
}

pub fn parquet_text(path: &std::path::Path) -> String {
    use arrow::array::Array;
    let f = std::fs::File::open(path).expect("open");
    let mut text = String::new();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .build()
        .expect("reader");
    for batch in reader {
        let batch = batch.expect("batch");
        for col in batch.columns() {
            for i in 0..col.len() {
                text.push_str(
                    &arrow::util::display::array_value_to_string(col, i).unwrap_or_default(),
                );
                text.push('\n');
            }
        }
    }
    text
}
