//! A minimal keep-alive HTTP/1.1 client for loopback use by `demo` and `portrait-loadgen`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, Result};

/// One kept-alive connection.
pub struct Client {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Client {
    /// Connects to `addr` (`host:port`).
    pub fn connect(addr: &str) -> Result<Self> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    /// POSTs a JSON body with an `Authorization` header; returns status and body.
    pub fn post(&mut self, path: &str, authorization: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.send("POST", path, authorization, body)
    }

    /// GETs `path` with an `Authorization` header; returns status and body.
    #[allow(dead_code)] // used by portrait-loadgen only
    pub fn get(&mut self, path: &str, authorization: &str) -> Result<(u16, Vec<u8>)> {
        self.send("GET", path, authorization, b"")
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        authorization: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut status = String::new();
        self.stream.read_line(&mut status)?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .context("no HTTP status line")?
            .parse()?;
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut out = vec![0u8; len];
        self.stream.read_exact(&mut out)?;
        Ok((code, out))
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
