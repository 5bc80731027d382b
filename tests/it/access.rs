//! Who may reach the daemon from a browser, over real HTTP and WebSocket:
//! the `Origin` rules of the streams and the `Host` and `Origin` rules of the
//! mutating endpoints.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Response, events, get_json, http, http_as, open_event_stream, start};
use punctual::AllowedOrigin;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

const WAIT: Duration = Duration::from_secs(20);

/// A WebSocket handshake to `/ws` with these `Origin` and `Host` values:
/// the connected client on 101, or the refusal's status and JSON body.
fn open_ws(
    addr: SocketAddr,
    origin: Option<&str>,
    host: Option<&str>,
) -> Result<common::Client, (u16, serde_json::Value)> {
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    if let Some(origin) = origin {
        headers.insert("Origin", HeaderValue::from_str(origin).expect("ASCII"));
    }
    if let Some(host) = host {
        headers.insert("Host", HeaderValue::from_str(host).expect("ASCII"));
    }
    match tungstenite::connect(request) {
        Ok((client, response)) => {
            assert_eq!(response.status(), 101);
            Ok(client)
        }
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).expect("refusal is JSON");
            Err((response.status().as_u16(), json))
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

fn error_text(json: &serde_json::Value) -> &str {
    json["error"].as_str().expect("an error message")
}

fn put_config(addr: SocketAddr, host: &str, origin: Option<&str>, body: &str) -> Response {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    http_as(addr, host, "PUT", "/api/config", &headers, body.as_bytes())
}

fn allow(origins: &[&str]) -> Vec<AllowedOrigin> {
    origins
        .iter()
        .map(|o| AllowedOrigin::parse(o).expect("valid origin"))
        .collect()
}

#[test]
fn a_page_of_another_site_cannot_open_the_websocket() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let (status, body) = open_ws(addr, Some("https://evil.example"), None)
        .expect_err("cross-site WebSocket must be refused");
    assert_eq!(status, 403);
    assert!(error_text(&body).contains("https://evil.example"), "{body}");
    assert!(error_text(&body).contains("--allowed-origin"), "{body}");
}

#[test]
fn the_dashboard_its_own_page_and_clients_without_origin_stream_over_websocket() {
    let server = start(|c| c.rate = 50);
    let addr = server.local_addr();
    let port = addr.port();
    let mut same = open_ws(addr, Some(&format!("http://{addr}")), None).expect("same-origin");
    assert_eq!(events(&mut same, 2, WAIT).len(), 2);
    let localhost = format!("localhost:{port}");
    let via_name = open_ws(addr, Some(&format!("http://{localhost}")), Some(&localhost));
    assert!(via_name.is_ok(), "same-origin under localhost");
    let mut plain = open_ws(addr, None, None).expect("no Origin: not a browser");
    assert_eq!(events(&mut plain, 2, WAIT).len(), 2);
}

#[test]
fn a_dns_rebinding_page_cannot_open_the_websocket_under_its_own_name() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let evil = format!("evil.example:{}", addr.port());
    let (status, body) = open_ws(addr, Some(&format!("http://{evil}")), Some(&evil))
        .expect_err("rebinding must be refused");
    assert_eq!(status, 403);
    assert!(error_text(&body).contains("--allowed-host"), "{body}");
}

#[test]
fn an_allowed_origin_may_open_the_websocket_and_others_still_may_not() {
    let server = start(|c| {
        c.rate = 50;
        c.allowed_origins = allow(&["http://localhost:5173"]);
    });
    let addr = server.local_addr();
    let mut dev = open_ws(addr, Some("http://localhost:5173"), None).expect("allowed origin");
    assert_eq!(events(&mut dev, 1, WAIT).len(), 1);
    let other = open_ws(addr, Some("http://localhost:5174"), None);
    assert_eq!(other.err().map(|(status, _)| status), Some(403));
}

#[test]
fn a_star_lets_every_origin_open_the_websocket() {
    let server = start(|c| {
        c.rate = 0;
        c.allowed_origins = allow(&["*"]);
    });
    let addr = server.local_addr();
    for origin in ["https://evil.example", "null", "http://10.1.2.3:9999"] {
        assert!(open_ws(addr, Some(origin), None).is_ok(), "{origin}");
    }
}

#[test]
fn the_event_stream_follows_the_same_origin_rules() {
    let server = start(|c| {
        c.rate = 50;
        c.allowed_origins = allow(&["http://localhost:5173"]);
    });
    let addr = server.local_addr();
    let cross = open_event_stream(addr, "/events", &[("Origin", "https://evil.example")]);
    assert_eq!(cross.status, 403);

    let own = format!("http://{addr}");
    let mut same = open_event_stream(addr, "/events", &[("Origin", &own)]);
    assert_eq!(same.status, 200);
    assert_eq!(same.header("access-control-allow-origin"), None);
    assert_eq!(same.events(1, WAIT).len(), 1);

    // Another site's EventSource reads the stream only if it is told so.
    let mut dev = open_event_stream(addr, "/events", &[("Origin", "http://localhost:5173")]);
    assert_eq!(dev.status, 200);
    assert_eq!(
        dev.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(dev.events(1, WAIT).len(), 1);
}

#[test]
fn a_settings_change_under_a_foreign_host_is_refused_and_changes_nothing() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let evil = format!("evil.example:{}", addr.port());
    let refused = put_config(addr, &evil, None, r#"{"rate":7}"#);
    assert_eq!(refused.status, 403);
    let message = error_text(&refused.json()).to_owned();
    assert!(message.contains(&evil), "{message}");
    assert!(message.contains("--allowed-host"), "{message}");
    // Same-origin for the attacker's page, which is exactly the rebinding case.
    let rebound = put_config(
        addr,
        &evil,
        Some(&format!("http://{evil}")),
        r#"{"rate":7}"#,
    );
    assert_eq!(rebound.status, 403);
    assert_eq!(get_json(addr, "/api/config").1["rate"], 0);
}

#[test]
fn a_cross_site_post_of_events_is_refused_and_nothing_is_ingested() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let headers = [
        ("Content-Type", "application/json"),
        ("Origin", "https://evil.example"),
    ];
    let refused = http(addr, "POST", "/api/events", &headers, br#"{"id":"x"}"#);
    assert_eq!(refused.status, 403);
    assert!(error_text(&refused.json()).contains("--allowed-origin"));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(get_json(addr, "/api/stats").1["totals"]["ingested"], 0);
}

#[test]
fn the_dashboard_changes_settings_as_its_own_origin() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let own = format!("http://{addr}");
    let changed = put_config(addr, &addr.to_string(), Some(&own), r#"{"rate":3}"#);
    assert_eq!(
        changed.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&changed.body)
    );
    let localhost = format!("localhost:{}", addr.port());
    let by_name = put_config(addr, &localhost, None, r#"{"rate":4}"#);
    assert_eq!(by_name.status, 200);
    assert_eq!(get_json(addr, "/api/config").1["rate"], 4);
}

#[test]
fn an_allowed_host_may_change_settings() {
    let server = start(|c| {
        c.rate = 0;
        c.allowed_hosts = vec![punctual::AllowedHost::parse("monitor.example").expect("host")];
    });
    let addr = server.local_addr();
    let through_proxy = put_config(
        addr,
        "monitor.example",
        Some("https://monitor.example"),
        r#"{"rate":2}"#,
    );
    assert_eq!(through_proxy.status, 200);
    assert_eq!(get_json(addr, "/api/config").1["rate"], 2);
    assert_eq!(
        get_json(addr, "/api/config").1["allowedHosts"],
        serde_json::json!(["monitor.example"])
    );
}

#[test]
fn a_dns_rebinding_page_reads_nothing_and_only_the_probes_answer_any_host() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let posted = common::post_events(addr, "application/json", br#"{"payload":{"secret":1}}"#);
    assert_eq!(posted.status, 202);
    let rebound = format!("rebind.evil:{}", addr.port());
    for path in [
        "/api/events?limit=3",
        "/api/config",
        "/api/stats",
        "/",
        "/app.js",
        "/events",
    ] {
        let refused = http_as(addr, &rebound, "GET", path, &[], b"");
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
        let why = error_text(&refused.json()).to_owned();
        assert!(why.contains("--allowed-host rebind.evil"), "{path}: {why}");
        assert!(
            !String::from_utf8_lossy(&refused.body).contains("secret"),
            "{path}"
        );
    }
    let (status, refusal) = open_ws(addr, None, Some(&rebound)).expect_err("refused");
    assert_eq!(status, 403);
    assert!(error_text(&refusal).contains("--allowed-host"));
    for path in ["/healthz", "/readyz", "/metrics"] {
        let served = common::eventually(WAIT, || {
            http_as(addr, &rebound, "GET", path, &[], b"").status == 200
        });
        assert!(served, "{path} answers any Host");
    }
}

#[test]
fn a_star_lets_every_site_read_but_no_site_change_anything() {
    let server = start(|c| {
        c.rate = 0;
        c.allowed_origins = allow(&["*"]);
    });
    let addr = server.local_addr();
    let other = [("Origin", "https://other.example")];
    let read = http(addr, "GET", "/api/config", &other, b"");
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.header("access-control-allow-origin"), Some("*"));
    let page = http(addr, "GET", "/api/events?limit=1", &other, b"");
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.header("access-control-allow-origin"), Some("*"));

    let form = [
        ("Origin", "https://other.example"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    for (method, path) in [
        ("POST", "/api/events"),
        ("POST", "/api/webhook/ci"),
        ("PUT", "/api/config"),
    ] {
        let refused = http(addr, method, path, &form, b"payload=%7B%7D&rate=5");
        assert_eq!(refused.status, 403, "{method} {path}: {refused:?}");
        assert!(
            error_text(&refused.json()).contains("--allowed-origin"),
            "{refused:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(1200));
    let (_, stats) = get_json(addr, "/api/stats");
    assert_eq!(stats["totals"]["ingested"], 0, "{stats}");
    assert_eq!(get_json(addr, "/api/config").1["rate"], 0);
}

#[test]
fn a_webhook_takes_json_or_a_form_and_nothing_a_plain_form_can_forge() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let post = |content_type: Option<&str>| {
        let headers: Vec<_> = content_type
            .map(|t| ("Content-Type", t))
            .into_iter()
            .collect();
        http(addr, "POST", "/api/webhook/ci", &headers, br#"{"ok":true}"#)
    };
    for refused in [
        Some("text/plain"),
        None,
        Some("application/x-ndjson"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let answer = post(refused);
        assert_eq!(answer.status, 415, "{refused:?}: {answer:?}");
        assert!(
            error_text(&answer.json()).contains("application/json"),
            "{answer:?}"
        );
    }
    for accepted in [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
    ] {
        assert_eq!(post(Some(accepted)).status, 202, "{accepted}");
    }
}

#[test]
fn a_refused_host_or_origin_is_logged_once_naming_the_flag_that_admits_it() {
    let daemon = common::daemon::Daemon::spawn(&["--rate", "0"], &[]);
    let addr = daemon.addr;
    let rebound = format!("rebind.evil:{}", addr.port());
    for _ in 0..3 {
        assert_eq!(
            http_as(addr, &rebound, "GET", "/api/stats", &[], b"").status,
            403
        );
        let seed = [("Origin", "http://localhost:5173")];
        let refused = open_ws_raw(addr, &seed);
        assert_eq!(refused, 403);
    }
    // The log is read as it comes; both refusals are in it within seconds.
    let mut warnings = Vec::new();
    let both = common::eventually(Duration::from_secs(5), || {
        warnings.extend(
            daemon
                .log_so_far()
                .into_iter()
                .filter(|l| l.contains("WARN")),
        );
        let count = |needle: &str| warnings.iter().filter(|l| l.contains(needle)).count();
        count("--allowed-host rebind.evil") >= 1
            && count("--allowed-origin http://localhost:5173") >= 1
    });
    assert!(both, "{warnings:?}");
    std::thread::sleep(Duration::from_millis(500));
    warnings.extend(
        daemon
            .log_so_far()
            .into_iter()
            .filter(|l| l.contains("WARN")),
    );
    assert_eq!(warnings.len(), 2, "each refusal logged once: {warnings:?}");
}

/// The status of a `/ws` handshake sent with `headers`.
fn open_ws_raw(addr: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let mut all = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    all.extend_from_slice(headers);
    http(addr, "GET", "/ws", &all, b"").status
}
