//! The HTTP front under hostile peers: half-sent requests, dribblers, idle
//! keep-alive connections, pipelining behind a stream, slow readers, oversized
//! requests, a flood past the connection cap and running out of descriptors.
//! Each runs against a real `punctual` child process over loopback.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{connect, eventually};

/// What a well-behaved client must get within this long, however many hostile
/// connections are open.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Sends `request` on a fresh connection and returns the status code of the
/// answer, or `None` when none came within `ANSWER_WITHIN`.
fn status_of(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, ANSWER_WITHIN).ok()?;
    stream.set_read_timeout(Some(ANSWER_WITHIN)).ok()?;
    stream.write_all(request).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A POST must name the daemon in `Host` (the DNS-rebinding defence).
fn post_event(addr: SocketAddr) -> Vec<u8> {
    let body = r#"{"id":"probe"}"#;
    format!(
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Opens `n` connections that each send `prefix` and then hold still.
fn hold(addr: SocketAddr, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.write_all(prefix).expect("send prefix");
            stream
        })
        .collect()
}

/// Opens `n` kept-alive connections that each had a `/healthz` answered, so
/// that they all hold a place under the cap. A connection refused for want of
/// room (the daemon's own probe may hold one for a moment) is opened again.
fn hold_admitted(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < n && Instant::now() < deadline {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(request).expect("send");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut head = [0u8; 12];
        if stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200" {
            held.push(stream);
        } else {
            thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(held.len(), n, "could not hold {n} connections");
    held
}

/// Waits until the server ends `stream` (EOF, reset, or an answer followed by
/// EOF); returns how long that took, or `None` if it stays open past `limit`.
fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set timeout");
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

fn threads_of(daemon: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", daemon.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn descriptors_of(daemon: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn six_hundred_half_open_connections_neither_deafen_the_front_nor_stay_open() {
    let daemon = Daemon::spawn(
        &[
            "--rate",
            "20",
            "--request-timeout",
            "4",
            "--idle-timeout",
            "4",
        ],
        &[],
    );
    let addr = daemon.addr;
    let held_at = Instant::now();
    let mut held = hold(addr, 200, b"GET /api/st");
    held.extend(hold(
        addr,
        200,
        format!(
            "POST /api/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 2000\r\n\r\n{{\"id\":"
        )
        .as_bytes(),
    ));
    // Kept-alive connections that were answered once and then say nothing.
    let mut idle = hold(addr, 200, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    for stream in &mut idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).expect("first answer");
        assert_eq!(&head[9..12], b"200");
    }
    held.extend(idle);

    let mut ws = connect(addr, "/ws");
    let mut rounds = 0;
    while held_at.elapsed() < Duration::from_secs(3) {
        for (what, request) in [
            ("GET /", get(addr, "/")),
            ("GET /healthz", get(addr, "/healthz")),
            ("GET /api/stats", get(addr, "/api/stats")),
            ("POST /api/events", post_event(addr)),
        ] {
            let status = status_of(addr, &request);
            assert!(
                matches!(status, Some(200 | 202)),
                "{what} with 600 half-open connections held: {status:?}"
            );
        }
        let mut fresh = connect(addr, "/ws");
        assert!(
            common::events(&mut fresh, 1, Duration::from_secs(5)).len() == 1,
            "a new WebSocket client gets events"
        );
        rounds += 1;
    }
    assert!(rounds >= 2, "only {rounds} rounds of probes");
    assert_eq!(common::events(&mut ws, 3, Duration::from_secs(5)).len(), 3);

    // Every one of them is closed by the server once its timeout (4 s) has passed.
    for (i, stream) in held.iter_mut().enumerate() {
        let left = Duration::from_secs(12).saturating_sub(held_at.elapsed());
        assert!(
            closed_by_server(stream, left).is_some(),
            "connection {i} still open {:?} after it was opened",
            held_at.elapsed()
        );
    }
    let elapsed = held_at.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3),
        "closed before the timeout: {elapsed:?}"
    );
}

#[test]
fn a_client_dribbling_its_head_byte_by_byte_is_cut_off_at_the_request_timeout() {
    let daemon = Daemon::spawn(&["--rate", "0", "--request-timeout", "3"], &[]);
    let mut stream = TcpStream::connect(daemon.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(400)))
        .expect("timeout");
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in head.iter().cycle() {
        // One byte every 400 ms: each read would be quick, the whole never arrives.
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a dribbling client kept its connection for 10 s"
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2), "cut off early");
}

#[test]
fn requests_pipelined_behind_event_streams_hold_no_thread() {
    let daemon = Daemon::spawn(&["--rate", "20"], &[]);
    let before = threads_of(&daemon);
    let pipelined = format!(
        "GET /events HTTP/1.1\r\nHost: {0}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: {0}\r\n\r\n",
        daemon.addr
    );
    let streams = hold(daemon.addr, 50, pipelined.as_bytes());
    // Each stream costs its writer thread; the connection thread that read
    // it has nothing left to do. tiny_http keeps idle pool threads for 5 s.
    let settled = eventually(Duration::from_secs(15), || {
        threads_of(&daemon) <= before + 50 + 4
    });
    assert!(
        settled,
        "threads: {before} before, {} with 50 streams",
        threads_of(&daemon)
    );
    assert_eq!(
        status_of(daemon.addr, &get(daemon.addr, "/healthz")),
        Some(200)
    );
    drop(streams);
}

#[test]
fn an_upgraded_client_costs_one_descriptor_and_one_thread() {
    let daemon = Daemon::spawn(&["--rate", "20"], &[]);
    thread::sleep(Duration::from_secs(1));
    let (threads, descriptors) = (threads_of(&daemon), descriptors_of(&daemon));
    let clients: Vec<_> = (0..40).map(|_| connect(daemon.addr, "/ws")).collect();
    let settled = eventually(Duration::from_secs(15), || {
        threads_of(&daemon) <= threads + 40 + 4
    });
    let added_threads = threads_of(&daemon) - threads;
    let added_descriptors = descriptors_of(&daemon) - descriptors;
    assert!(settled, "40 clients added {added_threads} threads");
    assert!(
        added_descriptors <= 40 + 2,
        "40 clients added {added_descriptors} descriptors"
    );
    drop(clients);
}

#[test]
fn a_slow_reader_of_a_big_reply_is_cut_off_after_the_write_timeout() {
    let daemon = Daemon::spawn(
        &[
            "--rate",
            "0",
            "--work-ms",
            "0",
            "--history",
            "3000",
            "--queue",
            "4096",
            "--write-timeout",
            "2",
        ],
        &[],
    );
    // 3000 outcomes of ~4 KiB each: a reply of ~12 MB, more than loopback buffers hold.
    let payload = format!("\"{}\"", "x".repeat(4000));
    for _ in 0..15 {
        let batch: Vec<String> = (0..200)
            .map(|_| format!("{{\"payload\":{payload}}}"))
            .collect();
        let body = format!("[{}]", batch.join(","));
        let answer = common::post_events(daemon.addr, "application/json", body.as_bytes());
        assert_eq!(answer.status, 202);
    }
    assert!(eventually(Duration::from_secs(10), || {
        let (_, stats) = common::get_json(daemon.addr, "/api/stats");
        stats["totals"]["ingested"] == 3000 && stats["totals"]["inFlight"] == 0
    }));

    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    socket.connect(&daemon.addr.into()).expect("connect");
    let mut slow: TcpStream = socket.into();
    slow.write_all(&get(daemon.addr, "/api/events?since=0&limit=3000"))
        .expect("ask");
    // Never read while the server writes; after the write timeout it gives up.
    thread::sleep(Duration::from_secs(5));
    let mut received = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let ended = slow.read_to_end(&mut received);
    assert!(
        ended.is_ok(),
        "the server kept the connection open: {ended:?}"
    );
    // A big reply is sent chunked; a whole one ends with the last, empty chunk.
    let head = String::from_utf8_lossy(&received[..received.len().min(300)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !received.ends_with(b"\r\n0\r\n\r\n") && received.len() < 12_000_000,
        "the whole reply ({} bytes) was delivered to a reader that did not read",
        received.len()
    );
    assert_eq!(
        status_of(daemon.addr, &get(daemon.addr, "/healthz")),
        Some(200)
    );
}

#[test]
fn oversized_requests_get_413_414_431_and_the_connection_closes() {
    let daemon = Daemon::spawn(&["--rate", "0", "--max-body", "1000"], &[]);
    let addr = daemon.addr;
    // Refused from Content-Length before a byte of the body is read, and the
    // connection is closed rather than drained.
    let mut big = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000000\r\n\r\n"
    );
    big.write_all(head.as_bytes()).expect("send head");
    big.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut head = [0u8; 12];
    big.read_exact(&mut head)
        .expect("an answer before the body");
    assert_eq!(&head[9..12], b"413");
    assert!(
        closed_by_server(&mut big, Duration::from_secs(3)).is_some(),
        "the connection stays open behind a refused body"
    );

    let long_url = format!("/{}", "a".repeat(70_000));
    assert_eq!(status_of(addr, &get(addr, &long_url)), Some(414));
    let big_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-Filler-{i}: {}\r\n", "b".repeat(1000)))
            .collect::<String>()
    );
    assert_eq!(status_of(addr, big_headers.as_bytes()), Some(431));

    // The refusals are JSON that says what was wrong.
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(&get(addr, &long_url)).expect("send");
    let mut answer = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let _ = stream.read_to_string(&mut answer);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("8192")),
        "{json}"
    );
}

#[test]
fn connections_past_the_cap_get_503_with_retry_after() {
    let daemon = Daemon::spawn(&["--rate", "0", "--max-connections", "20"], &[]);
    let addr = daemon.addr;
    let held = hold_admitted(addr, 20);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(&get(addr, "/api/stats")).expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || status_of(
            addr,
            &get(addr, "/api/stats")
        ) == Some(200)),
        "a slot is free again once connections close"
    );
}

#[test]
fn running_out_of_descriptors_is_survived_without_losing_clients() {
    // An explicit cap the descriptor limit cannot honour: it is kept, and said so.
    let mut daemon = Daemon::spawn_with_fd_limit(
        300,
        &[
            "--rate",
            "50",
            "--max-connections",
            "1000",
            "--request-timeout",
            "60",
        ],
    );
    assert!(
        daemon
            .startup
            .iter()
            .any(|l| l.contains("--max-connections 1000 is more than")),
        "{:?}",
        daemon.startup
    );
    let mut client = connect(daemon.addr, "/ws");
    assert_eq!(
        common::events(&mut client, 3, Duration::from_secs(5)).len(),
        3
    );

    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(daemon.addr).ok())
        .collect();
    thread::sleep(Duration::from_secs(3));
    // The pipeline and the connected client carry on.
    assert_eq!(
        common::events(&mut client, 50, Duration::from_secs(10)).len(),
        50
    );
    let log = daemon.log_so_far().join("\n");
    assert_eq!(
        log.matches("cannot accept connections").count(),
        1,
        "logged once, rate-limited:\n{log}"
    );

    drop(flood);
    let freed = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || common::daemon::healthz_status(
            daemon.addr
        ) == Some(200)),
        "the front never answered again"
    );
    println!(
        "serving again {:?} after descriptors were freed",
        freed.elapsed()
    );
    assert_eq!(
        common::events(&mut client, 5, Duration::from_secs(5)).len(),
        5
    );
    assert!(
        daemon.child.try_wait().expect("poll").is_none(),
        "still running"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_for_exit(Duration::from_secs(5)).success());
}

#[test]
fn a_low_descriptor_limit_is_served_with_one_warning_and_its_caps_scaled() {
    for (limit, connections) in [(256, 224), (512, 448), (1024, 896)] {
        let daemon = Daemon::spawn_with_fd_limit(limit, &["--rate", "0"]);
        let warnings: Vec<_> = daemon
            .startup
            .iter()
            .filter(|l| l.contains("WARN"))
            .collect();
        assert_eq!(warnings.len(), 1, "ulimit -n {limit}: {:?}", daemon.startup);
        assert!(warnings[0].contains("LimitNOFILE"), "{warnings:?}");
        assert_eq!(
            status_of(daemon.addr, &get(daemon.addr, "/healthz")),
            Some(200)
        );
        let (status, config) = common::get_json(daemon.addr, "/api/config");
        assert_eq!(status, 200);
        assert_eq!(config["maxConnections"], connections, "ulimit -n {limit}");
        assert_eq!(config["maxClients"], connections, "ulimit -n {limit}");
        let mut client = connect(daemon.addr, "/ws");
        let posted = common::post_events(daemon.addr, "application/json", b"{}");
        assert_eq!(posted.status, 202, "ulimit -n {limit}");
        assert_eq!(
            common::events(&mut client, 1, Duration::from_secs(5)).len(),
            1
        );
    }
}

#[test]
fn a_descriptor_limit_too_low_to_serve_exits_with_status_2_naming_the_fix() {
    let output = std::process::Command::new("bash")
        .args([
            "-c",
            "ulimit -n 40 && exec \"$0\" --listen 127.0.0.1:0 --rate 0",
            env!("CARGO_BIN_EXE_punctual"),
        ])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run punctual");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{log}");
    assert!(
        log.contains("ulimit -n") && log.contains("LimitNOFILE"),
        "{log}"
    );
    assert!(!log.contains("serving http://"), "{log}");
}

/// `POST /api/events` with `Content-Length: length` and whatever `extra`
/// headers, up to the blank line: the body is the caller's to send (or not).
fn post_head(addr: SocketAddr, length: u64, extra: &str) -> Vec<u8> {
    format!(
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// The status and the `error` of a JSON refusal in `answer` (head and body
/// as read off the wire), or why it is not one.
fn json_refusal(answer: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no whole answer: {text:?}"))?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("body is not JSON ({e}): {body:?}"))?;
    let error = json["error"]
        .as_str()
        .ok_or_else(|| format!("no \"error\" in {json}"))?;
    Ok((status, error.to_owned()))
}

/// Reads until the server ends its side of `stream`, or `limit` passes.
fn read_answer(stream: &mut TcpStream, limit: Duration) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(limit))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// Sends a whole over-limit request, head and body, before reading a byte
/// of the answer, as Python's `urllib` does; the answer read once it is all sent.
fn post_whole_then_read(addr: SocketAddr, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&post_head(addr, body.len() as u64, ""))
        .map_err(|e| format!("sending the head: {e}"))?;
    // A moment later and in pieces, as a client streams a body it reads from
    // elsewhere: the refusal, sent once the head is read, arrives while the
    // body is still to be written.
    thread::sleep(Duration::from_millis(20));
    for piece in body.chunks(16 * 1024) {
        stream
            .write_all(piece)
            .map_err(|e| format!("sending the body: {e}"))?;
    }
    read_answer(&mut stream, Duration::from_secs(10))
        .map_err(|e| format!("reading the answer: {e}"))
}

#[test]
fn a_client_that_sends_its_whole_body_before_reading_gets_the_413() {
    let daemon = Daemon::spawn(&["--rate", "0", "--max-body", "1000"], &[]);
    let body = vec![b' '; 2 * 1024 * 1024];
    let failures: Vec<String> = (0..20)
        .filter_map(|attempt| {
            let outcome =
                post_whole_then_read(daemon.addr, &body).and_then(|answer| json_refusal(&answer));
            match outcome {
                Ok((413, error)) if error.contains("1000") => None,
                Ok(other) => Some(format!("attempt {attempt}: {other:?}")),
                Err(e) => Some(format!("attempt {attempt}: {e}")),
            }
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 20 did not get the 413: {failures:#?}",
        failures.len()
    );
}

#[test]
fn an_expect_100_continue_request_refused_from_its_head_gets_the_refusal_and_no_100_continue() {
    let token = "a-token-long-enough-to-be-taken";
    let daemon = Daemon::spawn(
        &["--rate", "0", "--max-body", "1000", "--token", token],
        &[],
    );
    let addr = daemon.addr;
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let expect = "Expect: 100-continue\r\n";
    for (what, head, status) in [
        (
            "a body over --max-body",
            post_head(addr, 2 * 1024 * 1024, &format!("{bearer}{expect}")),
            413,
        ),
        ("no token", post_head(addr, 100, expect), 401),
    ] {
        // The head only: a client that expects 100 Continue sends its body
        // after it, and must never be asked to send one that is refused.
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(&head).expect("send head");
        let answer = read_answer(&mut stream, Duration::from_secs(10)).expect("an answer");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {text}"
        );
        assert!(!text.contains(" 100 "), "{what}: {text}");
        assert!(json_refusal(&answer).is_ok(), "{what}: {text}");
    }

    // A request that is accepted does get its 100 Continue, then the answer.
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(&post_head(addr, 2, &format!("{bearer}{expect}")))
        .expect("send head");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).expect("100 Continue");
        interim.push(byte[0]);
    }
    let interim = String::from_utf8_lossy(&interim);
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    stream.write_all(b"{}").expect("send body");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("the answer");
    assert_eq!(&head, b"HTTP/1.1 202");
}

/// A peer that announced an endless body and keeps sending it: returns how
/// the sending ended (the error, and when) once the connection is cut.
fn keep_sending(
    mut stream: TcpStream,
    piece: usize,
    pause: Duration,
) -> thread::JoinHandle<(std::io::Error, Instant)> {
    thread::spawn(move || {
        // A write blocked this long means the daemon stopped reading without
        // closing: the connection was held, not cut.
        let _ = stream.set_write_timeout(Some(Duration::from_secs(20)));
        let bytes = vec![b' '; piece];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Err(e) = stream.write_all(&bytes) {
                return (e, Instant::now());
            }
            thread::sleep(pause);
        }
        let held = std::io::Error::other("still sending after 30 s");
        (held, Instant::now())
    })
}

#[test]
fn a_peer_that_keeps_sending_after_the_refusal_is_cut_off_within_the_bound() {
    // A request deadline far away: only the linger's own bounds can end it soon.
    let daemon = Daemon::spawn(
        &[
            "--rate",
            "0",
            "--max-body",
            "1000",
            "--request-timeout",
            "60",
        ],
        &[],
    );
    let addr = daemon.addr;
    // One floods and reads as it goes (the byte bound ends it); one
    // trickles 1 KiB every 20 ms and reads only a moment later, as a client
    // busy sending does (the time bound ends it).
    for (what, piece, pause, read_after) in [
        ("a flood", 64 * 1024, Duration::ZERO, None),
        (
            "a trickle",
            1024,
            Duration::from_millis(20),
            Some(Duration::from_millis(200)),
        ),
    ] {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(&post_head(addr, 1 << 40, ""))
            .expect("send head");
        let sender = keep_sending(stream.try_clone().expect("clone"), piece, pause);
        thread::sleep(read_after.unwrap_or_default());
        let answer = read_answer(&mut stream, Duration::from_secs(10));
        let answered = Instant::now();
        let refusal = answer
            .map_err(|e| e.to_string())
            .and_then(|answer| json_refusal(&answer));
        assert!(
            matches!(refusal, Ok((413, _))),
            "{what}: the refusal was not read: {refusal:?}"
        );
        // The daemon answers others while it reads and throws away.
        assert_eq!(common::daemon::healthz_status(addr), Some(200), "{what}");
        let (error, ended) = sender.join().expect("sender");
        assert!(
            !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{what}: the daemon stopped reading but kept the connection: {error}"
        );
        if read_after.is_some() {
            // What it sent after the refusal was taken, not answered with a
            // reset, at least until it had read the refusal (the bound is
            // 2 s; it read 0.2 s in).
            assert!(
                ended > answered,
                "{what}: cut off before it read the refusal: {error}"
            );
        }
        let cut_after = ended.saturating_duration_since(answered);
        assert!(
            cut_after < Duration::from_secs(10),
            "{what}: still sending {cut_after:?} after the refusal"
        );
    }
    assert_eq!(common::daemon::healthz_status(addr), Some(200));
}

/// Kept-alive connections opened together, as a load tool opens them: each
/// must be answered at once. tiny_http's pool counted a woken thread as idle
/// until it had taken its task, so connections accepted in a row were queued
/// for one idle thread, and the others waited, unread, until some connection
/// ended: on a fresh daemon the self-probe's, once a second.
#[test]
fn connections_opened_together_are_each_answered_at_once() {
    const TOGETHER: usize = 8;
    // The pool starts with four idle threads: the first burst is the test,
    // so each round is a fresh daemon.
    for _ in 0..5 {
        let daemon = Daemon::spawn(&["--rate", "0"], &[]);
        let addr = daemon.addr;
        let mut streams: Vec<TcpStream> = (0..TOGETHER)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let sent = Instant::now();
        for stream in &mut streams {
            stream.write_all(request.as_bytes()).expect("send");
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            let left = Duration::from_millis(500).saturating_sub(sent.elapsed());
            stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut head = [0u8; 12];
            assert!(
                stream.read_exact(&mut head).is_ok(),
                "connection {i} of {TOGETHER} opened together was not answered within 500 ms"
            );
        }
    }
}
