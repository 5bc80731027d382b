//! Helpers shared by the integration tests: start the real server in-process
//! on a free port and talk to it as a client would.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use punctual::{Config, Server};
use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A WebSocket client connection.
pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// Starts a server on a free loopback port with `adjust` applied to the test defaults.
pub fn start(adjust: impl FnOnce(&mut Config)) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = Config::for_tests();
    adjust(&mut config);
    Server::start(config).expect("server starts")
}

/// Connects a WebSocket client to `path` (e.g. `/ws?stats=1`).
pub fn connect(addr: SocketAddr, path: &str) -> Client {
    let (client, response) =
        tungstenite::connect(format!("ws://{addr}{path}")).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    if let MaybeTlsStream::Plain(stream) = client.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("set read timeout");
    }
    client
}

/// The next JSON message within `timeout`, or `None`.
pub fn next_message(client: &mut Client, timeout: Duration) -> Option<Value> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        match client.read() {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(&text).expect("server sends JSON"));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("WebSocket read failed: {e}"),
        }
    }
    None
}

/// The next `n` event messages (skipping stats), failing after `timeout`.
pub fn events(client: &mut Client, n: usize, timeout: Duration) -> Vec<Value> {
    let until = Instant::now() + timeout;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} events within {timeout:?}",
            got.len()
        );
        if let Some(message) = next_message(client, left) {
            if message["type"] == "event" {
                got.push(message);
            }
        }
    }
    got
}

/// The next stats message, failing after `timeout`.
pub fn next_stats(client: &mut Client, timeout: Duration) -> Value {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no stats message within {timeout:?}");
        if let Some(message) = next_message(client, left) {
            if message["type"] == "stats" {
                return message;
            }
        }
    }
}

/// A plain HTTP/1.1 exchange: returns the status, the lower-cased headers and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).expect("send request");
    stream.write_all(body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    Response::parse(&raw)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of headers");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// GET `path` and parse the JSON body.
pub fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let response = http(addr, "GET", path, &[], b"");
    (response.status, response.json())
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}
