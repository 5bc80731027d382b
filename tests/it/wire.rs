//! The wire stays exact: an outcome is one line of JSON whatever a producer
//! posted, query strings are read percent-decoded, and `deadlineMs` is the
//! same JSON number type whichever source an event came from.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    Client, EventStream, connect, eventually, http, open_event_stream, post_events, start,
};
use serde_json::{Value, json};
use tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);
const JSON: &str = "application/json";

/// The next event message on `client` as the exact text the server sent.
fn next_event_text(client: &mut Client, timeout: Duration) -> String {
    let until = Instant::now() + timeout;
    loop {
        assert!(
            Instant::now() < until,
            "no event message within {timeout:?}"
        );
        match client.read() {
            Ok(Message::Text(text)) => {
                let text = text.as_str().to_owned();
                let parsed: Value = serde_json::from_str(&text).expect("server sends JSON");
                if parsed["type"] == "event" {
                    return text;
                }
            }
            Ok(_) => {}
            Err(e) if common::is_timeout(&e) => {}
            Err(e) => panic!("WebSocket read failed: {e}"),
        }
    }
}

/// The next outcome on an event stream, with its raw `data` text.
fn next_sse_event(stream: &mut EventStream, timeout: Duration) -> (String, Value) {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no SSE outcome within {timeout:?}");
        if let Some(message) = stream.next_message(left)
            && message.event.is_none()
            && message.retry.is_none()
        {
            let json = message.json();
            return (message.data, json);
        }
    }
}

fn opened_stream(addr: SocketAddr, path: &str) -> EventStream {
    let mut stream = open_event_stream(addr, path, &[]);
    assert_eq!(stream.status, 200, "GET {path} should open a stream");
    let hint = stream.next_message(WAIT).expect("retry hint");
    assert_eq!(hint.retry, Some(2000), "{hint:?}");
    stream
}

fn accepted(response: &common::Response) {
    assert_eq!(
        response.status,
        202,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

#[test]
fn a_pretty_printed_payload_arrives_whole_and_on_one_line_on_both_transports() {
    let server = start(|c| {
        c.rate = 0;
        c.deadline_ms = 5_000;
    });
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws");
    let mut sse = opened_stream(addr, "/events");
    let body = "{\n  \"id\": \"pretty\",\n  \"workMs\": 1,\n  \"payload\": {\"a\":\n\n1,\r\n \
                \"list\": [ 1 ,\n\t2.5 ],\n  \"text\": \"two  spaces\\nand an escaped break\"\n  }\n}";
    let posted: Value = serde_json::from_str(body).expect("the test body is JSON");
    accepted(&post_events(addr, JSON, body.as_bytes()));

    let text = next_event_text(&mut ws, WAIT);
    assert!(!text.contains('\n'), "/ws outcome spans lines: {text:?}");
    let on_ws: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(on_ws["id"], "pretty");
    assert_eq!(on_ws["payload"], posted["payload"], "{text}");

    let (data, on_sse) = next_sse_event(&mut sse, WAIT);
    assert!(!data.contains('\n'), "SSE data spans lines: {data:?}");
    assert_eq!(on_sse["payload"], posted["payload"], "{data}");
    assert_eq!(on_sse, on_ws, "both transports carry the same JSON");
}

#[test]
fn a_percent_encoded_status_filter_is_understood_on_both_transports() {
    let server = start(|c| {
        c.rate = 0;
        c.deadline_ms = 5_000;
    });
    let addr = server.local_addr();
    let mut sse = opened_stream(addr, "/events?status=late%2Cdropped");
    let mut ws = connect(addr, "/ws?status=dropped%2C+late");
    // On time first, then a drop (its declared work cannot fit): only the drop passes the filter.
    let body = json!([
        {"id": "fast", "workMs": 1},
        {"id": "doomed", "deadlineMs": 20, "workMs": 500},
    ]);
    accepted(&post_events(addr, JSON, body.to_string().as_bytes()));
    let (_, on_sse) = next_sse_event(&mut sse, WAIT);
    assert_eq!(on_sse["id"], "doomed", "{on_sse}");
    assert_eq!(on_sse["status"], "dropped", "{on_sse}");
    let on_ws: Value = serde_json::from_str(&next_event_text(&mut ws, WAIT)).expect("JSON");
    assert_eq!(on_ws["id"], "doomed", "{on_ws}");
}

#[test]
fn history_parameters_are_percent_decoded() {
    let server = start(|c| {
        c.rate = 0;
        c.deadline_ms = 5_000;
    });
    let addr = server.local_addr();
    let body = json!([{"workMs": 1}, {"workMs": 1}, {"workMs": 1}]);
    accepted(&post_events(addr, JSON, body.to_string().as_bytes()));
    assert!(
        eventually(WAIT, || {
            let all = http(addr, "GET", "/api/events", &[], b"").json();
            all.as_array().is_some_and(|a| a.len() == 3)
        }),
        "three outcomes retained"
    );
    // `%31` is "1"; `+` is a space, which the number parser trims.
    let response = http(addr, "GET", "/api/events?since=%31&limit=+1", &[], b"");
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let seqs: Vec<u64> = response
        .json()
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [2]);
    let bad = http(addr, "GET", "/api/events?since=%ZZ", &[], b"");
    assert_eq!(bad.status, 400, "{}", String::from_utf8_lossy(&bad.body));
    assert!(
        bad.json()["error"]
            .as_str()
            .expect("error")
            .contains("since")
    );
}

/// The exact text of `"deadlineMs":…` in an outcome.
fn deadline_token(text: &str) -> &str {
    let start = text.find("\"deadlineMs\":").expect("deadlineMs field") + "\"deadlineMs\":".len();
    let len = text[start..].find([',', '}']).expect("end of the number");
    &text[start..start + len]
}

#[test]
fn ingested_and_generated_outcomes_spell_deadline_ms_the_same_way() {
    let server = start(|c| {
        c.rate = 20;
        c.deadline_ms = 100;
        c.work_ms = 1;
    });
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws");
    let body = json!([{"id": "posted", "deadlineMs": 100, "workMs": 1}]);
    accepted(&post_events(addr, JSON, body.to_string().as_bytes()));
    let (mut generated, mut ingested) = (None, None);
    while generated.is_none() || ingested.is_none() {
        let text = next_event_text(&mut ws, WAIT);
        let event: Value = serde_json::from_str(&text).expect("JSON");
        match event["source"].as_str() {
            Some("generator") => generated = Some(text),
            Some("ingest") => ingested = Some(text),
            other => panic!("unexpected source {other:?}"),
        }
    }
    let (generated, ingested) = (generated.unwrap(), ingested.unwrap());
    assert_eq!(deadline_token(&generated), "100", "{generated}");
    assert_eq!(deadline_token(&ingested), "100", "{ingested}");
}

#[test]
fn a_fractional_deadline_is_refused_naming_the_field() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let response = post_events(addr, JSON, br#"{"deadlineMs": 30.5}"#);
    assert_eq!(response.status, 400);
    let error = response.json()["error"].as_str().expect("error").to_owned();
    assert!(error.contains("deadlineMs"), "{error}");
    accepted(&post_events(
        addr,
        JSON,
        br#"{"deadlineMs": 30.0, "workMs": 1}"#,
    ));
}
