//! Helpers shared by the integration tests: start the real server in-process
//! on a free port and talk to it as a client would.

pub mod daemon;

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
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("WebSocket read failed: {e}"),
        }
    }
    None
}

/// Whether a WebSocket read only timed out (the client's read timeout).
pub fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e)
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
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
        if let Some(message) = next_message(client, left)
            && message["type"] == "event"
        {
            got.push(message);
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
        if let Some(message) = next_message(client, left)
            && message["type"] == "stats"
        {
            return message;
        }
    }
}

/// A plain HTTP/1.1 exchange with `Host` naming `addr`, as curl sends it:
/// returns the status, the lower-cased headers and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    http_as(addr, &addr.to_string(), method, path, headers, body)
}

/// [`http`] with the `Host` header saying `host`.
pub fn http_as(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
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
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            dechunk(&raw[split + 4..])
        } else {
            raw[split + 4..].to_vec()
        };
        Response {
            status,
            headers,
            body,
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

/// The body of a `Transfer-Encoding: chunked` response (large answers come so).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("hexadecimal chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
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

/// A Server-Sent Events client over a raw TCP connection: the response head
/// has been read; messages are parsed from the stream as they arrive.
pub struct EventStream {
    stream: TcpStream,
    pending: Vec<u8>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// One SSE message: the fields of one block up to its blank line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    /// The `data:` lines joined with `\n` (empty when there were none).
    pub data: String,
    pub retry: Option<u64>,
    /// Comment lines (`: …`), without the leading colon.
    pub comments: Vec<String>,
}

impl SseMessage {
    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }
}

/// Opens `GET path` as an event stream with extra `headers` and reads the head.
pub fn open_event_stream(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut client = EventStream {
        stream,
        pending: Vec::new(),
        status: 0,
        headers: Vec::new(),
    };
    let until = Instant::now() + Duration::from_secs(20);
    let split = loop {
        if let Some(at) = client.pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        assert!(
            Instant::now() < until,
            "no response head within 20 s: {:?}",
            String::from_utf8_lossy(&client.pending)
        );
        assert!(client.fill(), "connection closed before the response head");
    };
    let head = String::from_utf8_lossy(&client.pending[..split]).into_owned();
    client.pending.drain(..split + 4);
    let mut lines = head.split("\r\n");
    client.status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status code");
    client.headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    client
}

impl EventStream {
    /// The value of the lower-cased header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads what is available; `false` once the server closed the connection.
    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(e) => panic!("event stream read failed: {e}"),
        }
    }

    /// The next complete message within `timeout`, or `None`.
    pub fn next_message(&mut self, timeout: Duration) -> Option<SseMessage> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(at) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block =
                    String::from_utf8(self.pending[..at].to_vec()).expect("event stream is UTF-8");
                self.pending.drain(..at + 2);
                return Some(parse_sse_block(&block));
            }
            if Instant::now() >= until {
                return None;
            }
            assert!(self.fill(), "the server closed the event stream");
        }
    }

    /// The next `n` outcome messages (`event: event`), as JSON, skipping other
    /// kinds; checks that each message's `id:` ends in its `seq`. Fails after `timeout`.
    pub fn events(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let until = Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {n} SSE events within {timeout:?}",
                got.len()
            );
            if let Some(message) = self.next_message(left)
                && message.event.is_none()
                && message.retry.is_none()
            {
                let json = message.json();
                assert_eq!(
                    message.id.as_deref().and_then(sse_id_seq),
                    json["seq"].as_u64(),
                    "an SSE outcome's id must be EPOCH:SEQ: {message:?}"
                );
                got.push(json);
            }
        }
        got
    }
}

/// The seq of an SSE outcome id `EPOCH:SEQ`.
pub fn sse_id_seq(id: &str) -> Option<u64> {
    let (epoch, seq) = id.split_once(':')?;
    (!epoch.is_empty()).then_some(())?;
    seq.parse().ok()
}

fn parse_sse_block(block: &str) -> SseMessage {
    let mut message = SseMessage::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.split('\n') {
        if let Some(comment) = line.strip_prefix(':') {
            message.comments.push(comment.trim_start().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => message.id = Some(value.to_owned()),
            "event" => message.event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => message.retry = value.parse().ok(),
            _ => {}
        }
    }
    message.data = data.join("\n");
    message
}

/// `POST /api/events` with `content_type` and `body`.
pub fn post_events(addr: SocketAddr, content_type: &str, body: &[u8]) -> Response {
    http(
        addr,
        "POST",
        "/api/events",
        &[("Content-Type", content_type)],
        body,
    )
}

/// The outcome of `id`, read from the recent events.
pub fn outcome_of(addr: SocketAddr, id: &str, within: Duration) -> Value {
    let mut found = Value::Null;
    let seen = eventually(within, || {
        let (_, page) = get_json(addr, "/api/events?since=0&limit=10000");
        let events = page.as_array().cloned().unwrap_or_default();
        match events.into_iter().find(|e| e["id"] == id) {
            Some(e) => {
                found = e;
                true
            }
            None => false,
        }
    });
    assert!(seen, "no outcome for {id} within {within:?}");
    found
}

/// The totals of the latest stats snapshot.
pub fn totals(server: &Server) -> Value {
    let (status, stats) = get_json(server.local_addr(), "/api/stats");
    assert_eq!(status, 200);
    stats["totals"].clone()
}

/// Fails unless `totals` satisfy the conservation count.
pub fn assert_balances(totals: &Value) {
    let n = |k: &str| {
        totals[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no count {k} in {totals}"))
    };
    let dropped: u64 = ["queueFull", "expired", "infeasible", "panicked"]
        .iter()
        .map(|k| {
            totals["dropped"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("no dropped.{k} in {totals}"))
        })
        .sum();
    assert_eq!(
        n("generated") + n("ingested"),
        n("onTime") + n("late") + n("failed") + dropped + n("inFlight"),
        "{totals}"
    );
}
