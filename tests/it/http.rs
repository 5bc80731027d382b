//! The HTTP front as a client sees it: routes, errors, live settings, client
//! limits, and slow clients.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{assert_balances, connect, events, eventually, get_json, http, start};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_plain_get_of_ws_is_refused_with_400_and_the_server_keeps_serving() {
    let server = start(|c| c.rate = 50);
    let addr = server.local_addr();
    let response = http(addr, "GET", "/ws", &[], b"");
    assert_eq!(response.status, 400);
    assert!(
        response.json()["error"]
            .as_str()
            .expect("error text")
            .contains("WebSocket")
    );
    let (status, body) = get_json(addr, "/healthz");
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let mut client = connect(addr, "/ws");
    assert_eq!(events(&mut client, 3, WAIT).len(), 3);
}

#[test]
fn unknown_paths_and_wrong_methods_get_json_errors() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let missing = http(addr, "GET", "/nope", &[], b"");
    assert_eq!(missing.status, 404);
    assert!(
        missing.json()["error"]
            .as_str()
            .expect("error")
            .contains("/nope")
    );
    let wrong = http(addr, "POST", "/healthz", &[], b"");
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET"));
    assert!(wrong.json()["error"].is_string());
    assert_eq!(http(addr, "DELETE", "/api/config", &[], b"").status, 405);
}

#[test]
fn the_page_is_served_at_the_root() {
    let server = start(|c| c.rate = 0);
    let response = http(server.local_addr(), "GET", "/", &[], b"");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .expect("content type")
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&response.body).contains("<title>punctual"));
    let script = http(server.local_addr(), "GET", "/app.js", &[], b"");
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .expect("content type")
            .starts_with("text/javascript")
    );
}

#[test]
fn stats_are_served_and_balance() {
    let server = start(|c| c.rate = 100);
    let addr = server.local_addr();
    assert!(eventually(
        WAIT,
        || get_json(addr, "/api/stats").1["totals"]["generated"].as_u64() > Some(10)
    ));
    let (status, stats) = get_json(addr, "/api/stats");
    assert_eq!(status, 200);
    let t = &stats["totals"];
    assert_balances(t);
    for key in [
        "uptimeS",
        "rates",
        "latencyMs",
        "queue",
        "workers",
        "clients",
        "generator",
        "health",
        "config",
    ] {
        assert!(stats.get(key).is_some(), "stats lack {key}: {stats}");
    }
    assert_eq!(stats["queue"]["capacity"], 64);
    assert_eq!(stats["workers"]["total"], 4);
}

fn put_config(addr: std::net::SocketAddr, body: &str, token: Option<&str>) -> common::Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    http(addr, "PUT", "/api/config", &headers, body.as_bytes())
}

#[test]
fn a_config_change_applies_to_the_next_events() {
    let server = start(|c| c.rate = 50);
    let addr = server.local_addr();
    let response = put_config(addr, r#"{"workMs":150,"admission":"on"}"#, None);
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()["workMs"], 150);
    let mut client = connect(addr, "/ws");
    // Events already queued may still finish; the ones after must be infeasible.
    let got = events(&mut client, 30, WAIT);
    assert_eq!(got.last().expect("events")["dropReason"], "infeasible");
    assert_eq!(get_json(addr, "/api/config").1["workMs"], 150);
}

#[test]
fn a_bad_config_change_is_refused_and_changes_nothing() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let cases = [
        (r#"{"deadlineMs":0}"#, 400, "deadlineMs"),
        (r#"{"rate":-1}"#, 400, "rate"),
        (r#"{"workMs":10,"wrokMs":5}"#, 400, "wrokMs"),
        (r#"{"admission":"maybe"}"#, 400, "maybe"),
        ("not json", 400, "invalid"),
    ];
    for (body, status, mention) in cases {
        let response = put_config(addr, body, None);
        assert_eq!(response.status, status, "{body}");
        let error = response.json()["error"]
            .as_str()
            .expect("error text")
            .to_owned();
        assert!(
            error.contains(mention),
            "error for {body} should mention {mention}: {error}"
        );
    }
    let plain = http(
        addr,
        "PUT",
        "/api/config",
        &[("Content-Type", "text/plain")],
        b"{}",
    );
    assert_eq!(plain.status, 415);
    let config = get_json(addr, "/api/config").1;
    assert_eq!(
        (config["workMs"].as_u64(), config["deadlineMs"].as_u64()),
        (Some(50), Some(100))
    );
}

#[test]
fn with_a_token_config_changes_need_it() {
    let server = start(|c| {
        c.rate = 0;
        c.token = Some("s3cret-s3cret-s3cret".into());
    });
    let addr = server.local_addr();
    assert_eq!(put_config(addr, r#"{"rate":5}"#, None).status, 401);
    assert_eq!(put_config(addr, r#"{"rate":5}"#, Some("wrong")).status, 401);
    assert_eq!(get_json(addr, "/api/config").1["rate"], 0);
    assert_eq!(
        put_config(addr, r#"{"rate":5}"#, Some("s3cret-s3cret-s3cret")).status,
        200
    );
    assert_eq!(get_json(addr, "/api/config").1["rate"], 5);
}

#[test]
fn an_upgrade_beyond_the_client_limit_gets_503() {
    let server = start(|c| {
        c.rate = 0;
        c.max_clients = Some(2);
    });
    let addr = server.local_addr();
    let _first = connect(addr, "/ws");
    let _second = connect(addr, "/ws");
    let refused = tungstenite::connect(format!("ws://{addr}/ws"));
    match refused {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!(
            "third client should get 503, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
}

#[test]
fn a_client_that_goes_away_frees_its_slot() {
    let server = start(|c| c.rate = 200);
    let addr = server.local_addr();
    let client = connect(addr, "/ws");
    assert!(eventually(
        WAIT,
        || get_json(addr, "/api/stats").1["clients"]["connected"] == 1
    ));
    drop(client);
    assert!(
        eventually(
            WAIT,
            || get_json(addr, "/api/stats").1["clients"]["connected"] == 0
        ),
        "a closed client must be noticed at the next write and forgotten"
    );
}

/// Opens a WebSocket by hand and then never reads from it.
fn stalled_client(addr: std::net::SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("handshake");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("handshake answer");
    assert_eq!(&head, b"HTTP/1.1 101");
    stream
}

/// Thousands of instant, always on-time outcomes a second: enough to fill a
/// socket's buffers quickly.
fn firehose(c: &mut punctual::Config) {
    c.rate = 4_000;
    c.workers = 8;
    c.queue = 4_096;
    c.work_ms = 0;
    c.deadline_ms = 10_000;
}

#[test]
fn a_client_that_never_reads_does_not_stop_another_from_receiving_every_seq() {
    let server = start(|c| {
        firehose(c);
    });
    let addr = server.local_addr();
    let _stalled = stalled_client(addr);
    let mut reader = connect(addr, "/ws");
    let got = events(&mut reader, 12_000, Duration::from_secs(60));
    for pair in got.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64(),
            pair[0]["seq"].as_u64().map(|s| s + 1),
            "gap in the reading client's stream"
        );
    }
    // The stalled one is served by its own thread meanwhile (stats once a second).
    assert!(
        eventually(WAIT, || get_json(addr, "/api/stats").1["clients"]["slow"]
            .as_u64()
            >= Some(1)),
        "the stalled client should be counted as slow"
    );
}

#[test]
fn a_client_whose_socket_stays_unwritable_is_disconnected_after_the_write_timeout() {
    let server = start(|c| {
        firehose(c);
        c.write_timeout = 1;
    });
    let addr = server.local_addr();
    let _stalled = stalled_client(addr);
    assert!(eventually(
        WAIT,
        || get_json(addr, "/api/stats").1["clients"]["connected"] == 1
    ));
    // Its buffers fill within a second at this rate; a second later the send times out.
    assert!(
        eventually(
            Duration::from_secs(30),
            || get_json(addr, "/api/stats").1["clients"]["connected"] == 0
        ),
        "a client that never reads must be evicted, freeing its slot"
    );
}

#[test]
fn static_files_come_from_static_dir_when_given() {
    let dir = std::env::temp_dir().join(format!("punctual-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("index.html"), "<title>punctual from disk</title>")
        .expect("write page");
    let server = start(|c| {
        c.rate = 0;
        c.static_dir = Some(dir.clone());
    });
    let page = http(server.local_addr(), "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&page.body),
        "<title>punctual from disk</title>"
    );
    // A listed file missing from the directory is a clear server-side error, not a panic.
    let missing = http(server.local_addr(), "GET", "/app.js", &[], b"");
    assert_eq!(missing.status, 500);
    assert!(
        missing.json()["error"]
            .as_str()
            .expect("error")
            .contains("--static-dir")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_idle_client_is_pinged_after_15_seconds() {
    let server = start(|c| c.rate = 0);
    let mut client = connect(server.local_addr(), "/ws");
    let connected = std::time::Instant::now();
    let pinged = loop {
        assert!(
            connected.elapsed() < Duration::from_secs(30),
            "no Ping within 30 s"
        );
        match client.read() {
            Ok(tungstenite::Message::Ping(_)) => break connected.elapsed(),
            // Every stream opens with a hello naming the run.
            Ok(tungstenite::Message::Text(text)) if text.starts_with(r#"{"type":"hello""#) => {}
            Ok(other) => panic!("an idle client should only get a Ping, got {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("connection failed: {e}"),
        }
    };
    assert!(
        pinged >= Duration::from_secs(14),
        "pinged after only {pinged:?}"
    );
}
