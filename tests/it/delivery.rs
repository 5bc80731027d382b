//! Delivery from the shared log: a client that stops reading turns slow and
//! comes back to the fast path, a client that falls off the log is told what
//! it missed, and many clients replaying at once each get the whole retained
//! range in order while live clients lose nothing.

use crate::common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, connect, eventually, get_json, next_message, start};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Messages until `n` events arrived, with any notices among them.
fn messages(client: &mut Client, n: usize, timeout: Duration) -> Vec<Value> {
    let until = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut events = 0;
    while events < n {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {events} of {n} events within {timeout:?}"
        );
        if let Some(message) = next_message(client, left) {
            if message["type"] == "event" {
                events += 1;
            }
            if message["type"] != "hello" {
                got.push(message);
            }
        }
    }
    got
}

/// A WebSocket client with a small receive buffer, so that not reading
/// fills its socket quickly.
fn connect_small_buffer(addr: SocketAddr, path: &str) -> Client {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    socket.connect(&addr.into()).expect("connect");
    let stream: std::net::TcpStream = socket.into();
    // The handshake gets the patience of a busy machine; reads after it
    // time out quickly, as the tests' other clients do.
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let (client, _) = tungstenite::client::client(
        format!("ws://{addr}{path}"),
        tungstenite::stream::MaybeTlsStream::Plain(stream),
    )
    .expect("handshake");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = client.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
    }
    client
}

fn seq(message: &Value) -> u64 {
    message["seq"].as_u64().expect("an event has a seq")
}

fn stats(addr: SocketAddr) -> Value {
    get_json(addr, "/api/stats").1
}

/// Every seq once, in order: each event follows the last, or a gap notice
/// names exactly what lies between.
fn assert_every_seq_accounted_for(messages: &[Value]) -> usize {
    let mut gaps = 0;
    let mut last: Option<u64> = None;
    for message in messages {
        match message["type"].as_str() {
            Some("event") => {
                if let Some(last) = last {
                    assert_eq!(seq(message), last + 1, "seq out of order or missing");
                }
                last = Some(seq(message));
            }
            Some("gap") => {
                let (from, to) = (message["from"].as_u64(), message["to"].as_u64());
                if let Some(last) = last {
                    assert_eq!(from, Some(last + 1), "the gap starts right after {last}");
                }
                last = to;
                gaps += 1;
            }
            _ => {}
        }
    }
    gaps
}

#[test]
fn a_client_that_stops_reading_turns_slow_and_comes_back_to_the_fast_path() {
    let server = start(|c| {
        c.rate = 2_000;
        c.work_ms = 0;
        c.workers = 4;
        c.queue = 4_096;
        c.write_timeout = 30;
    });
    let addr = server.local_addr();
    let mut client = connect_small_buffer(addr, "/ws");
    let mut got = messages(&mut client, 100, WAIT);
    // Not reading: the socket fills, the fan-out leaves the client to its thread.
    thread::sleep(Duration::from_secs(3));
    assert!(
        stats(addr)["clients"]["slow"].as_u64() >= Some(1),
        "a client whose socket is full is served by its own thread"
    );
    got.extend(messages(&mut client, 10_000, WAIT));
    assert_eq!(
        assert_every_seq_accounted_for(&got),
        0,
        "no gap: the log held it all"
    );
    assert!(
        eventually(WAIT, || {
            let _ = messages(&mut client, 100, WAIT);
            stats(addr)["clients"]["slow"] == 0
        }),
        "caught up, the client is back on the fast path"
    );
    assert_eq!(stats(addr)["clients"]["droppedMessages"], 0);
}

#[test]
fn a_client_that_falls_off_the_log_is_told_what_it_missed_and_goes_on() {
    let server = start(|c| {
        // No history kept: the log holds only its slack of 4096 messages.
        c.history = 0;
        c.rate = 20_000;
        c.work_ms = 0;
        c.workers = 4;
        c.queue = 4_096;
        c.write_timeout = 60;
    });
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws?control=1");
    let mut got = messages(&mut client, 100, WAIT);
    // 20,000 outcomes a second for 3 s: far more than the log and the
    // socket buffers hold together.
    thread::sleep(Duration::from_secs(3));
    got.extend(messages(&mut client, 20_000, Duration::from_secs(60)));
    let gaps = assert_every_seq_accounted_for(&got);
    assert!(gaps >= 1, "the client was told it missed outcomes");
    assert!(
        eventually(WAIT, || stats(addr)["clients"]["droppedMessages"].as_u64()
            > Some(0)),
        "what it missed is counted"
    );
}

#[test]
fn two_hundred_clients_resuming_from_zero_get_the_whole_range_and_live_ones_lose_nothing() {
    let server = start(|c| {
        c.rate = 1_000;
        c.work_ms = 0;
        c.queue = 4_096;
    });
    let addr = server.local_addr();
    let mut live = connect(addr, "/ws");
    let mut live_got = messages(&mut live, 3_000, WAIT);
    let epoch = stats(addr)["epoch"].as_str().expect("an epoch").to_owned();
    let lag_before = stats(addr)["generator"]["lagTicks"].as_u64();

    let resuming: Vec<_> = (0..200)
        .map(|_| {
            let path = format!("/ws?epoch={epoch}&since=0");
            thread::spawn(move || {
                let mut client = connect(addr, &path);
                let got = messages(&mut client, 3_500, Duration::from_secs(60));
                assert_eq!(
                    seq(&got[0]),
                    1,
                    "the replay starts at this run's first outcome"
                );
                assert_eq!(
                    assert_every_seq_accounted_for(&got),
                    0,
                    "no gap in a replay"
                );
            })
        })
        .collect();
    live_got.extend(messages(&mut live, 2_000, Duration::from_secs(60)));
    for client in resuming {
        client
            .join()
            .expect("a resuming client got everything in order");
    }
    assert_eq!(
        assert_every_seq_accounted_for(&live_got),
        0,
        "the live client lost nothing"
    );
    assert_eq!(stats(addr)["clients"]["droppedMessages"], 0);
    let lag_after = stats(addr)["generator"]["lagTicks"].as_u64();
    println!("generator lag ticks: {lag_before:?} before, {lag_after:?} after the replays");
}

#[test]
fn a_plain_client_gets_outcome_objects_only_each_with_id_status_and_latency() {
    let server = start(|c| {
        c.rate = 200;
        c.work_ms = 0;
    });
    let addr = server.local_addr();
    // What the seed's own frontend does with every WebSocket message:
    // JSON.parse, then e.id.slice(…), e.status, e.latencyMs.
    let mut ws = connect(addr, "/ws");
    for _ in 0..50 {
        let message = next_message(&mut ws, WAIT).expect("a message");
        assert!(message["id"].is_string(), "not an outcome: {message}");
        assert!(message["status"].is_string(), "{message}");
        assert!(message["latencyMs"].is_number(), "{message}");
    }
    // `EventSource.onmessage` sees unnamed messages only: outcomes, each with its id.
    let mut sse = common::open_event_stream(addr, "/events", &[]);
    let mut outcomes = 0;
    while outcomes < 50 {
        let message = sse.next_message(WAIT).expect("a message");
        if message.retry.is_some() || message.event.is_some() {
            continue;
        }
        let json = message.json();
        assert!(json["id"].is_string(), "not an outcome: {json}");
        assert!(json["status"].is_string() && json["latencyMs"].is_number());
        assert!(
            message.id.is_some(),
            "an outcome carries EPOCH:SEQ as its SSE id"
        );
        outcomes += 1;
    }
}

#[test]
fn a_plain_client_that_falls_off_the_log_is_closed_with_4001_naming_what_it_missed() {
    let server = start(|c| {
        c.history = 0;
        c.rate = 20_000;
        c.work_ms = 0;
        c.workers = 4;
        c.queue = 4_096;
        c.write_timeout = 60;
    });
    let addr = server.local_addr();
    let mut client = connect_small_buffer(addr, "/ws");
    let _ = messages(&mut client, 10, WAIT);
    thread::sleep(Duration::from_secs(3));
    let until = Instant::now() + Duration::from_secs(60);
    let close = loop {
        assert!(Instant::now() < until, "no close frame within 60 s");
        match client.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.expect("a close code"),
            Ok(tungstenite::Message::Text(text)) => {
                let message: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(message["type"], "event", "only outcomes: {message}");
            }
            Ok(_) => {}
            Err(e) if common::is_timeout(&e) => {}
            Err(e) => panic!("the connection ended without a close frame: {e}"),
        }
    };
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert!(close.reason.contains("missed outcomes"), "{close:?}");
}

/// The longest silence a live client sees in `window`.
fn longest_silence(client: &mut Client, window: Duration) -> Duration {
    let end = Instant::now() + window;
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    while Instant::now() < end {
        if next_message(client, Duration::from_millis(200)).is_some() {
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
    }
    longest.max(last.elapsed())
}

#[test]
fn replay_clients_that_read_slowly_or_never_do_not_hold_up_live_clients() {
    let server = start(|c| {
        c.rate = 1_000;
        c.work_ms = 0;
        c.queue = 4_096;
        c.history = 10_000;
        // A blocked write may last this long: before the fix, the fan-out
        // waited for it and every live client went silent that long.
        c.write_timeout = 30;
    });
    let addr = server.local_addr();
    let mut live = connect(addr, "/ws");
    let _ = messages(&mut live, 5_000, WAIT);
    let epoch = stats(addr)["epoch"].as_str().expect("an epoch").to_owned();
    let path = format!("/ws?epoch={epoch}&since=0");
    let _never_reads = connect_small_buffer(addr, &path);
    let mut reads_slowly = connect_small_buffer(addr, &path);
    let slow_reader = thread::spawn(move || {
        for _ in 0..4 {
            thread::sleep(Duration::from_secs(2));
            let _ = messages(&mut reads_slowly, 50, WAIT);
        }
    });
    let silence = longest_silence(&mut live, Duration::from_secs(8));
    slow_reader.join().expect("the slow reader read");
    assert!(
        silence < Duration::from_secs(3),
        "a live client went {silence:?} without a message while replays were stuck"
    );
}
