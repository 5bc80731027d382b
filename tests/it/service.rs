//! punctual as an operator runs it: a child process stopped by signals, its
//! log format under journald, and the health and metrics endpoints.

use crate::common;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{connect, get_json, http, start};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn sigterm_drains_says_goodbye_to_every_client_and_exits_zero_within_two_seconds() {
    let mut daemon = Daemon::spawn(&["--rate", "200"], &[]);
    let mut clients: Vec<_> = (0..3).map(|_| connect(daemon.addr, "/ws")).collect();
    for client in &mut clients {
        common::events(client, 5, Duration::from_secs(20));
    }
    let signalled = Instant::now();
    daemon.signal("TERM");
    for client in &mut clients {
        let close = read_until_close(client, Duration::from_secs(5));
        assert_eq!(close, Some(CloseCode::Away), "every client gets Close 1001");
    }
    let status = daemon.wait_for_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let log = daemon.log_so_far().join("\n");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("final:"), "a final summary is logged: {log}");
}

#[test]
fn sigterm_with_long_deadlines_queued_drains_sends_the_final_snapshot_and_closes_1001() {
    let mut daemon = Daemon::spawn(&["--rate", "0", "--work-ms", "20"], &[]);
    let mut client = connect(daemon.addr, "/ws?stats=1");
    let batch: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"id":"q{i}","deadlineMs":60000}}"#))
        .collect();
    let body = format!("[{}]", batch.join(","));
    let posted = common::post_events(daemon.addr, "application/json", body.as_bytes());
    assert_eq!(posted.status, 202, "{posted:?}");
    let signalled = Instant::now();
    daemon.signal("TERM");
    let mut last_stats = None;
    let close = loop {
        match client.read() {
            Ok(Message::Text(text)) => {
                let message: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                if message["type"] == "stats" {
                    last_stats = Some(message);
                }
            }
            Ok(Message::Close(frame)) => break frame.map(|f| f.code),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("connection ended without a Close frame: {e}"),
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "no Close frame"
        );
    };
    assert_eq!(close, Some(CloseCode::Away));
    let status = daemon.wait_for_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took <= Duration::from_secs(2), "shutdown took {took:?}");
    // The final snapshot counts every queued event as judged.
    let totals = &last_stats.expect("a stats snapshot")["totals"];
    assert_eq!(totals["ingested"], 20, "{totals}");
    assert_eq!(
        totals["inFlight"], 0,
        "the final snapshot came after the drain: {totals}"
    );
}

/// Reads messages until the server's Close frame; returns its code.
fn read_until_close(client: &mut common::Client, timeout: Duration) -> Option<CloseCode> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        match client.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("connection ended without a Close frame: {e}"),
        }
    }
    None
}

#[test]
fn sigterm_ends_event_streams() {
    let mut daemon = Daemon::spawn(&["--rate", "50"], &[]);
    let mut stream = std::net::TcpStream::connect(daemon.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(
        &mut stream,
        format!("GET /events HTTP/1.1\r\nHost: {}\r\n\r\n", daemon.addr).as_bytes(),
    )
    .expect("request");
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).expect("stream opens");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    daemon.signal("TERM");
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("the stream ends cleanly");
    assert!(daemon.wait_for_exit(Duration::from_secs(5)).success());
}

#[test]
fn a_second_signal_exits_at_once_without_draining() {
    // Work of 10 s against a 60 s deadline keeps the drain busy past its limit.
    let args = [
        "--rate",
        "20",
        "--work-ms",
        "10000",
        "--deadline-ms",
        "60000",
        "--admission",
        "off",
    ];
    let mut daemon = Daemon::spawn(&args, &[]);
    thread::sleep(Duration::from_millis(500));
    daemon.signal("INT");
    thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    daemon.signal("INT");
    let status = daemon.wait_for_exit(Duration::from_secs(5));
    assert!(
        second.elapsed() < Duration::from_secs(1),
        "took {:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(128 + 2), "exit status {status}");
}

#[test]
fn under_journald_lines_carry_syslog_priorities_and_no_timestamp() {
    let args = ["--rate", "0", "--listen", "0.0.0.0:0"];
    let daemon = Daemon::spawn(&args, &[("JOURNAL_STREAM", "8:12345")]);
    for line in &daemon.startup {
        assert!(
            line.starts_with("<4>punctual") || line.starts_with("<6>punctual"),
            "{line}"
        );
    }
    let serving = daemon.startup.last().expect("start line");
    assert!(
        serving.starts_with("<6>punctual::server: punctual "),
        "{serving}"
    );
    // Listening on all interfaces without a token is a warning: priority 4.
    let warning = daemon
        .startup
        .iter()
        .find(|l| l.contains("without --token"))
        .expect("token warning");
    assert!(warning.starts_with("<4>"), "{warning}");
}

#[test]
fn outside_journald_lines_start_with_an_rfc3339_timestamp() {
    let daemon = Daemon::spawn(&["--rate", "0"], &[]);
    let line = daemon.startup.last().expect("start line");
    assert!(line.starts_with('['), "{line}");
    let stamp = line[1..].split(' ').next().expect("timestamp");
    assert!(
        stamp.len() >= 20
            && stamp.as_bytes()[4] == b'-'
            && stamp.contains('T')
            && stamp.ends_with('Z'),
        "{stamp}"
    );
    assert!(line.contains("INFO"), "{line}");
}

#[test]
fn metrics_parse_as_prometheus_text_and_agree_with_stats() {
    let server = start(|c| c.rate = 200);
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws");
    common::events(&mut client, 50, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(1200));
    let response = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .expect("type")
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let text = String::from_utf8(response.body).expect("UTF-8");
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF:\n{text}"
    );
    // OpenMetrics names a counter family without `_total` (`# TYPE punctual_events counter`)
    // and only its samples carry the suffix. prometheus-parse reads the older Prometheus text
    // format, where the TYPE line names the sample itself, so it files these samples as untyped:
    // the counter type is checked on the TYPE line instead.
    for counter in [
        "punctual_events",
        "punctual_outcomes",
        "punctual_client_dropped_messages",
        "punctual_generator_lag_ticks",
    ] {
        assert!(
            text.contains(&format!("# TYPE {counter} counter\n")),
            "{counter} should be a counter in\n{text}"
        );
    }
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for expected in [
        "punctual_events_total",
        "punctual_outcomes_total",
        "punctual_latency_seconds",
        "punctual_queue_depth",
        "punctual_queue_capacity",
        "punctual_workers_busy",
        "punctual_clients",
        "punctual_client_dropped_messages_total",
        "punctual_generator_lag_ticks_total",
        "punctual_generator_tick_jitter_p99_seconds",
        "punctual_late_after_deadline_p99_seconds",
        "punctual_build_info",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(expected)),
            "missing {expected} in\n{text}"
        );
    }
    let generated = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "punctual_events_total" && s.labels.get("source") == Some("generator")
        })
        .expect("generator events");
    match generated.value {
        prometheus_parse::Value::Untyped(v) => assert!(v >= 50.0, "{v}"),
        ref other => panic!("events_total should be a plain number, got {other:?}"),
    }
    let latency = scrape
        .samples
        .iter()
        .find(|s| s.metric == "punctual_latency_seconds")
        .expect("latency histogram");
    match &latency.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let top = buckets.last().expect("buckets");
            assert!(top.less_than.is_infinite(), "{buckets:?}");
            assert!(top.count >= 50.0, "{buckets:?}");
        }
        other => panic!("latency should be a histogram, got {other:?}"),
    }
    let websocket = scrape
        .samples
        .iter()
        .find(|s| s.metric == "punctual_clients" && s.labels.get("transport") == Some("websocket"))
        .expect("websocket clients");
    assert!(
        matches!(websocket.value, prometheus_parse::Value::Gauge(v) if v == 1.0),
        "{:?}",
        websocket.value
    );
}

#[test]
fn health_and_readiness_answer_json() {
    let server = start(|c| c.rate = 20);
    let addr = server.local_addr();
    let (status, body) = get_json(addr, "/healthz");
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    // Ready once the self-probe has seen the front answer.
    assert!(common::eventually(Duration::from_secs(20), || get_json(
        addr, "/readyz"
    )
    .0 == 200));
    assert_eq!(get_json(addr, "/readyz").1["status"], "ready");
}

#[test]
fn a_stopping_daemon_is_not_ready() {
    let server = start(|c| c.rate = 20);
    let monitor = server.monitor();
    assert!(common::eventually(Duration::from_secs(20), || monitor
        .ready()
        .is_ok()));
    server.stop();
    assert_eq!(monitor.ready(), Err("shutting down".to_owned()));
}

#[test]
fn under_systemd_it_reports_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("punctual-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let notify_socket = path.to_str().expect("UTF-8 path").to_owned();
    let mut daemon = Daemon::spawn(
        &["--rate", "50"],
        &[
            ("NOTIFY_SOCKET", &notify_socket),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut seen: Vec<String> = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    let status_with_figures = |seen: &[String]| {
        seen.iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("events/s"))
    };
    // The first STATUS says "serving"; one with figures follows within 5 s.
    while Instant::now() < until
        && !(has(&seen, "READY=1") && count(&seen, "WATCHDOG=1") >= 3 && status_with_figures(&seen))
    {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
    }
    assert!(has(&seen, "READY=1"), "{seen:?}");
    assert!(
        count(&seen, "WATCHDOG=1") >= 3,
        "watchdog pings at half of WATCHDOG_USEC: {seen:?}"
    );
    assert!(status_with_figures(&seen), "{seen:?}");
    daemon.signal("TERM");
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && !has(&seen, "STOPPING=1") {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
    }
    assert!(has(&seen, "STOPPING=1"), "{seen:?}");
    assert!(daemon.wait_for_exit(Duration::from_secs(5)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

fn has(lines: &[String], wanted: &str) -> bool {
    lines
        .iter()
        .any(|l| l == wanted || (wanted.ends_with('=') && l.starts_with(wanted)))
}

fn count(lines: &[String], wanted: &str) -> usize {
    lines.iter().filter(|l| *l == wanted).count()
}
