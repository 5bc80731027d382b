//! Thousands of broken HTTP requests over fresh loopback connections: the
//! daemon must answer none of them with a server error (503 aside), keep
//! answering `/healthz` and WebSocket clients, and keep its count balanced.
//!
//! The requests are valid ones mutated by a seeded RNG (byte flips,
//! truncation, duplicate headers, absurd Content-Length, bad chunked bodies,
//! random methods and paths, NUL bytes, header lines up to ~100 kB). The seed
//! is printed; `PUNCTUAL_GARBAGE_SEED=N` replays a run.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Requests sent in all.
const REQUESTS: usize = 3000;
/// Client threads sending them.
const SENDERS: usize = 4;
/// How long one connection waits for the start of an answer.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Stop sending after this long, however many were sent (a busy machine).
const TIME_BUDGET: Duration = Duration::from_secs(35);
const DEFAULT_SEED: u64 = 20_261_201;

/// Valid requests the mutations start from. None changes the rate: a mutated
/// one could otherwise ask the generator for a million events a second.
const VALID: &[&[u8]] = &[
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /api/stats HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n",
    b"GET /api/config HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /api/events?since=0&limit=5 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /events?stats=1&status=late,dropped HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 3\r\n\r\n",
    b"GET /ws?since=2 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    b"POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 46\r\n\r\n[{\"id\":\"g\",\"deadlineMs\":30,\"workMs\":1},{}]   ",
    b"POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\nContent-Length: 22\r\n\r\n{\"id\":\"n\"}\n{\"id\":\"m\"}\n",
    b"PUT /api/config HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"admission\":\"on\"}  ",
];

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "BREW", "get",
    "", "G\0ET",
];
const PATHS: &[&str] = &[
    "/",
    "*",
    "/ws",
    "/events",
    "/api/events",
    "/api/config",
    "/api/stats",
    "/../../etc/passwd",
    "/%00",
    "//api//stats",
    "/app.js",
    "/api/events?since=-1&limit=99999999999999999999",
    "/ws?replay=18446744073709551616",
    "/events?status=",
    "http://t/api/stats",
    "/\u{7f}\u{1}",
];

/// One mutation of a valid request, chosen and shaped by `rng`.
fn mutate(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut request = VALID[rng.usize(..VALID.len())].to_vec();
    match rng.u8(..10) {
        0 => flip_bytes(rng, &mut request),
        1 => request.truncate(rng.usize(..request.len())),
        2 => duplicate_header(rng, &mut request),
        3 => set_content_length(rng, &mut request),
        4 => bad_chunked(rng, &mut request),
        5 => request = random_request_line(rng, &request),
        6 => {
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..=request.len());
                request.insert(at, 0);
            }
        }
        7 => huge_header(rng, &mut request),
        8 => request = (0..rng.usize(1..2048)).map(|_| rng.u8(..)).collect(),
        _ => {} // sent as is: the daemon must still answer the valid ones
    }
    request
}

fn flip_bytes(rng: &mut fastrand::Rng, request: &mut [u8]) {
    for _ in 0..rng.usize(1..8) {
        let at = rng.usize(..request.len());
        request[at] ^= 1 << rng.u8(..8);
    }
}

fn header_end(request: &[u8]) -> usize {
    request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |p| p + 2)
}

fn insert_header(request: &mut Vec<u8>, line: &[u8]) {
    let at = header_end(request);
    request.splice(at..at, line.iter().copied());
}

fn duplicate_header(rng: &mut fastrand::Rng, request: &mut Vec<u8>) {
    let head = String::from_utf8_lossy(&request[..header_end(request)]).into_owned();
    let lines: Vec<&str> = head
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect();
    let Some(line) = lines.get(rng.usize(..lines.len().max(1))) else {
        return;
    };
    let line = format!("{line}\r\n");
    for _ in 0..rng.usize(1..50) {
        insert_header(request, line.as_bytes());
    }
}

fn set_content_length(rng: &mut fastrand::Rng, request: &mut Vec<u8>) {
    let values = [
        "99999999999999999999999",
        "18446744073709551616",
        "4294967296",
        "1000000000",
        "100000000000000000",
        "-1",
        "abc",
        "",
        "10, 20",
        "0x10",
        "1048577",
    ];
    let line = format!("Content-Length: {}\r\n", values[rng.usize(..values.len())]);
    insert_header(request, line.as_bytes());
}

fn bad_chunked(rng: &mut fastrand::Rng, request: &mut Vec<u8>) {
    let bodies: [&[u8]; 6] = [
        b"zz\r\n{}\r\n0\r\n\r\n",
        b"ffffffffffffffffff\r\n{}",
        b"5\r\n{}\r\n",
        b"2\r\n{}",
        b"-1\r\n\r\n",
        b"2;ext=\"\0\"\r\n{}\r\n0\r\n\r\n",
    ];
    let end = header_end(request);
    request.truncate(end);
    request.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    request.extend_from_slice(bodies[rng.usize(..bodies.len())]);
}

fn random_request_line(rng: &mut fastrand::Rng, request: &[u8]) -> Vec<u8> {
    let first_line_end = request
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(request.len());
    let versions = [
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/2.0",
        "HTTP/9.9",
        "HTTP/1.1 extra",
        "",
    ];
    let line = format!(
        "{} {} {}",
        METHODS[rng.usize(..METHODS.len())],
        PATHS[rng.usize(..PATHS.len())],
        versions[rng.usize(..versions.len())]
    );
    let mut out = line.into_bytes();
    out.extend_from_slice(&request[first_line_end..]);
    out
}

fn huge_header(rng: &mut fastrand::Rng, request: &mut Vec<u8>) {
    let len = rng.usize(1_000..=100_000);
    let mut line = b"X-Filler: ".to_vec();
    line.extend(std::iter::repeat_n(b'a', len));
    line.extend_from_slice(b"\r\n");
    insert_header(request, &line);
}

/// What one connection saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Status(u16),
    ClosedWithoutAnswer,
    NoAnswerInTime,
    CouldNotSend,
}

/// Sends `request` on a fresh connection, closes the sending side (so a
/// half-sent body ends instead of waiting), and reads up to the status line.
fn exchange(addr: SocketAddr, request: &[u8]) -> Seen {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return Seen::CouldNotSend;
    };
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    if stream.write_all(request).is_err() {
        // The daemon may refuse a huge header before it is all sent; its
        // answer can still be waiting.
        return read_status(&mut stream).unwrap_or(Seen::CouldNotSend);
    }
    let _ = stream.shutdown(Shutdown::Write);
    read_status(&mut stream).unwrap_or(Seen::ClosedWithoutAnswer)
}

fn read_status(stream: &mut TcpStream) -> Option<Seen> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = answer.iter().position(|b| *b == b'\n') {
            return punctual::fuzzing::status_of(&answer[..end]).map(Seen::Status);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Some(Seen::NoAnswerInTime);
            }
            Err(_) => return None,
        }
    }
}

fn seed() -> u64 {
    std::env::var("PUNCTUAL_GARBAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// Sends [`REQUESTS`] mutated requests from [`SENDERS`] threads; returns what
/// was seen, with one example request per kind of answer.
fn bombard(addr: SocketAddr, seed: u64) -> BTreeMap<Seen, (usize, Vec<u8>)> {
    let seen = Mutex::new(BTreeMap::new());
    let started = Instant::now();
    thread::scope(|scope| {
        for sender in 0..SENDERS {
            let seen = &seen;
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(sender as u64));
                for _ in 0..REQUESTS / SENDERS {
                    if started.elapsed() > TIME_BUDGET {
                        break;
                    }
                    let request = mutate(&mut rng);
                    let outcome = exchange(addr, &request);
                    let mut seen = seen.lock().expect("tally");
                    let entry = seen.entry(outcome).or_insert((0, request));
                    entry.0 += 1;
                }
            });
        }
    });
    seen.into_inner().expect("tally")
}

fn balanced(stats: &Value) -> bool {
    let t = &stats["totals"];
    let n = |v: &Value| v.as_u64().unwrap_or(u64::MAX / 4);
    n(&t["generated"]) + n(&t["ingested"])
        == n(&t["onTime"])
            + n(&t["late"])
            + n(&t["dropped"]["queueFull"])
            + n(&t["dropped"]["expired"])
            + n(&t["dropped"]["infeasible"])
            + n(&t["inFlight"])
}

#[test]
fn thousands_of_broken_requests_leave_the_daemon_answering_and_balanced() {
    let server = common::start(|c| c.rate = 50);
    let addr = server.local_addr();
    let seed = seed();
    println!("garbage seed: {seed} (replay with PUNCTUAL_GARBAGE_SEED={seed})");
    let started = Instant::now();
    let seen = bombard(addr, seed);
    let sent: usize = seen.values().map(|(n, _)| n).sum();
    println!("{sent} requests in {:?}", started.elapsed());
    for (outcome, (count, example)) in &seen {
        let shown = String::from_utf8_lossy(&example[..example.len().min(160)]).into_owned();
        println!("{outcome:?}: {count}, e.g. {shown:?}");
    }
    assert!(sent >= 500, "only {sent} requests sent");
    // 503 is a documented refusal (a limit); 505 is HTTP's answer to a
    // request line naming a version other than 1.x, a client's fault.
    let server_errors: Vec<String> = seen
        .iter()
        .filter(|(outcome, _)| matches!(outcome, Seen::Status(s) if *s >= 500 && !matches!(*s, 503 | 505)))
        .map(|(outcome, (count, example))| {
            let shown = String::from_utf8_lossy(&example[..example.len().min(300)]).into_owned();
            format!("{outcome:?} x{count}, e.g. {shown:?}")
        })
        .collect();
    assert!(server_errors.is_empty(), "server errors: {server_errors:?}");

    let (status, health) = common::get_json(addr, "/healthz");
    assert_eq!((status, &health["status"]), (200, &Value::from("ok")));
    let mut client = common::connect(addr, "/ws");
    common::events(&mut client, 3, Duration::from_secs(10));
    let (status, stats) = common::get_json(addr, "/api/stats");
    assert_eq!(status, 200);
    assert!(balanced(&stats), "the count does not balance: {stats}");
    server.stop();
}
