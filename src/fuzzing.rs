//! Entry points for the fuzz targets under `fuzz/` and for the test that
//! replays what they once found (`tests/it/fuzz_regressions.rs`).
//!
//! Each function takes arbitrary bytes, feeds them to the same code a request
//! reaches, and panics only when a promise is broken: a refusal with the wrong
//! status, an accepted value outside its documented range, a 5xx answer other
//! than 503, or a daemon that stops answering. Not part of the public API.
//!
//! Channels: `raw_request` talks to one in-process `Server` over loopback;
//! the other functions are pure.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::KnobsUpdate;
use crate::delivery::Resume;
use crate::http::ingest::{self, Format, MAX_PAYLOAD_BYTES};
use crate::pipeline::event::{MAX_BATCH, MAX_FUTURE_MS, MAX_ID_CHARS};
use crate::time::WallClock;
use crate::{Config, Server, http, http::query};

/// Deadline given to ingested items without `deadlineMs`.
const DEFAULT_DEADLINE: Duration = Duration::from_millis(100);

/// History size the query target pretends the daemon keeps.
const HISTORY: usize = 10_000;

/// `POST /api/events` bodies: the first byte picks the format (3 mod 4: a
/// form; otherwise even: JSON object or array, odd: NDJSON), the rest is the body.
pub fn ingest_body(data: &[u8]) {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let format = match selector % 4 {
        3 => Format::Form,
        n if n % 2 == 0 => Format::Json,
        _ => Format::Ndjson,
    };
    let now = Instant::now();
    let clock = WallClock::anchored(now, 1_700_000_000_000.0);
    match ingest::parse_batch(format, body, now, &clock, DEFAULT_DEADLINE) {
        Ok(events) => {
            assert!(
                !events.is_empty() && events.len() <= MAX_BATCH,
                "{} events accepted",
                events.len()
            );
            for event in &events {
                assert!(
                    event.producer().chars().count() <= crate::pipeline::event::MAX_PRODUCER_CHARS
                );
                let chars = event.id.chars().count();
                assert!((1..=MAX_ID_CHARS).contains(&chars), "id of {chars} chars");
                assert!(!event.deadline.is_zero() && event.deadline <= Duration::from_secs(3600));
                assert!(event.work.is_none_or(|w| w <= Duration::from_secs(3600)));
                assert!(
                    event
                        .payload
                        .as_ref()
                        .is_none_or(|p| p.get().len() <= MAX_PAYLOAD_BYTES)
                );
                let created_ms = clock.epoch_ms(event.created);
                assert!(created_ms <= clock.epoch_ms(now) + MAX_FUTURE_MS + 1.0);
            }
        }
        Err(refusal) => {
            assert!(
                matches!(refusal.status, 400 | 413),
                "refused with {}",
                refusal.status
            );
            assert!(!refusal.message.is_empty());
        }
    }
}

/// `PUT /api/config` bodies: a change that parses and validates stays within
/// the documented ranges.
pub fn config_change(data: &[u8]) {
    let Ok(update) = http::parse_json::<KnobsUpdate>(data) else {
        return;
    };
    if update.validate().is_ok() {
        assert!(update.rate.is_none_or(|r| r <= 1_000_000));
        assert!(
            update
                .deadline_ms
                .is_none_or(|d| (1..=3_600_000).contains(&d))
        );
    }
}

/// Query strings of `/ws`, `/events` and `GET /api/events`: the first line is
/// the URL, a second line (if any) a `Last-Event-ID` header.
pub fn stream_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (url, last_event_id) = match text.split_once('\n') {
        Some((url, id)) => (url, Some(id)),
        None => (text, None),
    };
    if let Ok(interest) = query::interest(url, last_event_id, HISTORY) {
        if let Resume::Last(n) = interest.resume {
            assert!(n <= HISTORY, "replay of {n} beyond the history");
        }
        if let Some(statuses) = &interest.statuses {
            assert!(
                statuses
                    .iter()
                    .all(|s| ["on-time", "late", "dropped"].contains(&s.as_str()))
            );
        }
    }
    let _ = query::events_page(url);
    for name in ["since", "replay", "status", "stats", "limit", ""] {
        if let Some(value) = http::query_param(url, name) {
            // Percent-decoding only ever shortens what was sent.
            assert!(value.len() <= url.len(), "{name}={value:?} from {url:?}");
        }
    }
}

/// How long a raw request waits for its answer before the next input.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Every this many raw requests, `/healthz` must still answer.
const HEALTH_EVERY: u64 = 128;

/// One daemon per process, started by the first raw request. It stays in a
/// static (not forgotten) so a leak checker sees it as still reachable.
fn daemon() -> SocketAddr {
    static DAEMON: OnceLock<Mutex<Server>> = OnceLock::new();
    let server = DAEMON.get_or_init(|| {
        let config = Config {
            rate: 50,
            ..Config::for_tests()
        };
        let server = Server::start(config).unwrap_or_else(|e| panic!("daemon starts: {e}"));
        Mutex::new(server)
    });
    server
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .local_addr()
}

/// The status code of an HTTP response's first line.
pub fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// Sends `data` as-is on a fresh loopback connection, closes the sending side
/// (so a half-sent body ends instead of waiting) and reads until the status
/// line is in, the daemon closes, or `ANSWER_WAIT` passes. Returns what was
/// read: only the status matters, and a stream (/events, /ws) never ends.
pub fn send_raw(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, ANSWER_WAIT) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(ANSWER_WAIT));
    let _ = stream.set_write_timeout(Some(ANSWER_WAIT));
    if stream.write_all(data).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
    }
    // A refused huge header may be answered before it is all sent: read anyway.
    let mut answer = Vec::new();
    let until = Instant::now() + ANSWER_WAIT;
    let mut chunk = [0u8; 4096];
    while Instant::now() < until && !answer.contains(&b'\n') {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    answer
}

/// Whether `GET /healthz` answers 200 at `addr`.
pub fn healthy(addr: SocketAddr) -> bool {
    let answer = send_raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n",
    );
    status_of(&answer) == Some(200)
}

/// Whether the daemon [`raw_request`] talks to still answers `/healthz`.
pub fn raw_request_daemon_healthy() -> bool {
    healthy(daemon())
}

/// A whole raw HTTP request, sent to a running daemon over loopback.
pub fn raw_request(data: &[u8]) {
    static SENT: AtomicU64 = AtomicU64::new(0);
    let addr = daemon();
    let answer = send_raw(addr, data);
    if let Some(status) = status_of(&answer) {
        assert!(
            !(500..600).contains(&status) || matches!(status, 503 | 505),
            "answered {status}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    if SENT
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(HEALTH_EVERY)
    {
        assert!(healthy(addr), "/healthz stopped answering");
    }
}
