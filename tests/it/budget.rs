//! One size budget from ingest to every transport: the largest payload each
//! ingest path accepts reaches every kind of client whole, one more byte is
//! refused, and history full of the largest outcomes keeps the daemon within
//! the memory its unit grants it.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{Client, connect, http, post_events};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const FORM: &str = "application/x-www-form-urlencoded";
/// What an outcome may take besides its payload (`event::MAX_ENVELOPE_BYTES`).
const ENVELOPE: usize = 4 * 1024;
/// Largest payload of `POST /api/events` (`ingest::MAX_PAYLOAD_BYTES`).
const EVENT_PAYLOAD: usize = 4 * 1024;

/// A JSON object of exactly `bytes` bytes, compact.
fn payload_of(bytes: usize) -> Value {
    let filler = bytes - r#"{"blob":""}"#.len();
    json!({ "blob": "x".repeat(filler) })
}

fn ids(answer: &common::Response) -> Vec<String> {
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("an id").to_owned())
        .collect()
}

/// Every way a producer can post its largest payload, and the payload sent.
fn post_largest_on_every_path(addr: std::net::SocketAddr, max_body: usize) -> Vec<(String, Value)> {
    let mut posted = Vec::new();
    let small = payload_of(EVENT_PAYLOAD);
    let object = json!({ "payload": small });
    for id in ids(&post_events(
        addr,
        "application/json",
        object.to_string().as_bytes(),
    )) {
        posted.push((id, small.clone()));
    }
    let array = json!([{ "payload": small }, { "payload": small }]);
    for id in ids(&post_events(
        addr,
        "application/json",
        array.to_string().as_bytes(),
    )) {
        posted.push((id, small.clone()));
    }
    let ndjson = format!("{object}\n{object}\n");
    for id in ids(&post_events(
        addr,
        "application/x-ndjson",
        ndjson.as_bytes(),
    )) {
        posted.push((id, small.clone()));
    }
    // A form's other fields become the payload's: {"blob": "..."}.
    let form = format!(
        "blob={}",
        "x".repeat(EVENT_PAYLOAD - r#"{"blob":""}"#.len())
    );
    for id in ids(&post_events(addr, FORM, form.as_bytes())) {
        posted.push((id, small.clone()));
    }
    let largest = payload_of(max_body - ENVELOPE);
    let webhook = |content_type: &str, body: &[u8]| {
        http(
            addr,
            "POST",
            "/api/webhook/ci",
            &[("Content-Type", content_type)],
            body,
        )
    };
    for id in ids(&webhook("application/json", largest.to_string().as_bytes())) {
        posted.push((id, largest.clone()));
    }
    // A form-encoded hook sends its JSON in `payload`; the escaped body is
    // larger than the JSON, so this payload is what fits in --max-body.
    let in_form = payload_of(max_body / 3 - ENVELOPE);
    let form = format!("payload={}", form_escape(&in_form.to_string()));
    assert!(form.len() <= max_body);
    for id in ids(&webhook(FORM, form.as_bytes())) {
        posted.push((id, in_form.clone()));
    }
    posted
}

fn form_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ws_events(client: &mut Client, n: usize) -> Vec<Value> {
    let got = common::events(client, n, WAIT);
    assert_eq!(
        got.len(),
        n,
        "the WebSocket client got {} of {n} outcomes",
        got.len()
    );
    got
}

fn assert_received_whole(client: &str, got: &[Value], posted: &[(String, Value)]) {
    for (id, payload) in posted {
        let outcome = got
            .iter()
            .find(|o| o["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{client} never got {id}"));
        assert!(
            outcome["payload"] == *payload,
            "{client} got {id} with a payload of {} bytes instead of {}",
            outcome["payload"].to_string().len(),
            payload.to_string().len()
        );
    }
}

#[test]
fn the_largest_payload_of_every_ingest_path_reaches_every_transport_whole() {
    let server = common::start(|c| c.rate = 0);
    let addr = server.local_addr();
    let max_body = punctual::Config::for_tests().max_body as usize;
    let mut live = connect(addr, "/ws");
    let mut stream = common::open_event_stream(addr, "/events", &[]);
    assert_eq!(stream.status, 200);

    let posted = post_largest_on_every_path(addr, max_body);
    let n = posted.len();
    assert_received_whole("a live WebSocket client", &ws_events(&mut live, n), &posted);
    assert_received_whole("an SSE client", &stream.events(n, WAIT), &posted);
    let mut replay = connect(addr, &format!("/ws?replay={n}"));
    assert_received_whole("a ?replay= client", &ws_events(&mut replay, n), &posted);
    let mut resumed = common::open_event_stream(addr, "/events?since=0", &[]);
    assert_received_whole("a resumed SSE client", &resumed.events(n, WAIT), &posted);
    let (status, page) = common::get_json(addr, "/api/events?since=0");
    assert_eq!(status, 200);
    assert_received_whole("GET /api/events", page.as_array().expect("array"), &posted);

    // Clients still connected: the live one gets the next outcome too.
    let next = ids(&post_events(addr, "application/json", b"{}"));
    let got = ws_events(&mut live, 1);
    assert_eq!(got[0]["id"], next[0].as_str());
}

#[test]
fn one_byte_over_each_payload_limit_is_refused_413_and_enters_nothing() {
    let server = common::start(|c| c.rate = 0);
    let addr = server.local_addr();
    let max_body = punctual::Config::for_tests().max_body as usize;
    let over = json!({ "payload": payload_of(EVENT_PAYLOAD + 1) });
    let answer = post_events(addr, "application/json", over.to_string().as_bytes());
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .expect("error")
            .contains("payload")
    );
    let over = payload_of(max_body - ENVELOPE + 1).to_string();
    let answer = http(
        addr,
        "POST",
        "/api/webhook/ci",
        &[("Content-Type", "application/json")],
        over.as_bytes(),
    );
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .expect("error")
            .contains("payload")
    );
    let (_, stats) = common::get_json(addr, "/api/stats");
    assert_eq!(stats["totals"]["ingested"], 0, "{stats}");
}

#[test]
fn a_payload_nested_deeper_than_64_levels_is_refused_400() {
    let server = common::start(|c| c.rate = 0);
    let addr = server.local_addr();
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let post = |body: String| {
        http(
            addr,
            "POST",
            "/api/webhook/ci",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    assert_eq!(post(nested(64)).status, 202);
    let answer = post(nested(2_000));
    assert_eq!(answer.status, 400, "{answer:?}");
    let error = answer.json()["error"].as_str().expect("error").to_owned();
    assert!(error.contains("64"), "{error}");
    let deep = format!(r#"{{"payload":{}}}"#, nested(65));
    assert_eq!(
        post_events(addr, "application/json", deep.as_bytes()).status,
        400
    );
}

/// The daemon's resident memory, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// `MemoryHigh=` of the shipped unit, MiB.
fn unit_memory_high() -> f64 {
    let unit = include_str!("../../systemd/punctual.service");
    unit.lines()
        .find_map(|l| l.strip_prefix("MemoryHigh="))
        .and_then(|v| v.strip_suffix('M'))
        .and_then(|v| v.parse().ok())
        .expect("MemoryHigh=NM")
}

/// A `GET` whose answer is read a little at a time, on a small receive buffer.
fn slow_reader(addr: std::net::SocketAddr, path: &str, done: Instant) -> thread::JoinHandle<usize> {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(8192).expect("small buffer");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    let ask = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(ask.as_bytes()).expect("ask");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    thread::spawn(move || {
        let mut total = 0;
        let mut buf = [0u8; 16 * 1024];
        while Instant::now() < done {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => {}
            }
            thread::sleep(Duration::from_millis(100));
        }
        total
    })
}

#[test]
fn history_full_of_the_largest_webhooks_and_slow_readers_stay_under_memory_high() {
    // Webhooks of the default --max-body (1 MiB): the log's byte bound, not
    // its count of 10,000, is what holds.
    let max_body = punctual::Config::for_tests().max_body as usize;
    let daemon = Daemon::spawn(&["--rate", "0"], &[]);
    let addr = daemon.addr;
    let pid = daemon.child.id();
    let body = payload_of(max_body - ENVELOPE).to_string();
    let post = || {
        let answer = http(
            addr,
            "POST",
            "/api/webhook/ci",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(answer.status, 202, "{answer:?}");
    };
    // More than MemoryHigh if the log kept them all, over ten times the history's
    // default 128 MiB.
    for _ in 0..1_600 {
        post();
    }
    let high = unit_memory_high();
    let done = Instant::now() + Duration::from_secs(10);
    let readers: Vec<_> = (0..10)
        .map(|_| slow_reader(addr, "/api/events?since=0&limit=10000", done))
        .collect();
    let mut peak = rss_mib(pid);
    // The log moves on under them: what the readers hold is no longer shared.
    while Instant::now() < done {
        for _ in 0..10 {
            post();
        }
        peak = peak.max(rss_mib(pid));
        thread::sleep(Duration::from_millis(200));
    }
    for reader in readers {
        assert!(reader.join().expect("reader") > 0, "a reader got nothing");
    }
    assert!(
        peak < high,
        "RSS peaked at {peak:.0} MiB, above the unit's MemoryHigh={high}M"
    );
    assert_eq!(common::daemon::healthz_status(addr), Some(200));
    eprintln!("peak RSS {peak:.0} MiB (MemoryHigh {high} MiB)");
}
