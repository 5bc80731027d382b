//! Producers posting events to `POST /api/events`: the accepted formats, the
//! outcomes they get on both transports, every refusal, the token, and the
//! conservation count with the generator and ingest running together.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Client, EventStream, connect, eventually, get_json, http, next_message, next_stats,
    open_event_stream, post_events, sse_id_seq, start,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// A WebSocket and an SSE client, both subscribed before anything is posted.
fn watchers(addr: SocketAddr) -> (Client, EventStream) {
    let ws = connect(addr, "/ws");
    let mut sse = open_event_stream(addr, "/events", &[]);
    assert_eq!(sse.status, 200, "GET /events should open a stream");
    let first = sse
        .next_message(WAIT)
        .expect("the stream opens with a retry hint");
    assert_eq!(first.retry, Some(2000), "{first:?}");
    (ws, sse)
}

/// Reads outcomes from `read` until one has arrived for every id in `ids`;
/// any other outcome fails the test (the generator is off, so only posted
/// events may flow). Returns them by id.
fn collect_by_id(
    ids: &[String],
    transport: &str,
    mut read: impl FnMut(Duration) -> Option<Value>,
) -> HashMap<String, Value> {
    let until = Instant::now() + WAIT;
    let mut got = HashMap::new();
    while got.len() < ids.len() {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{transport}: only {} of {} outcomes within {WAIT:?}: {got:?}",
            got.len(),
            ids.len()
        );
        let Some(event) = read(left) else { continue };
        let id = event["id"].as_str().expect("outcome id").to_owned();
        assert!(ids.contains(&id), "{transport}: unexpected outcome {event}");
        assert!(
            got.insert(id, event.clone()).is_none(),
            "{transport}: outcome delivered twice: {event}"
        );
    }
    got
}

fn ws_outcome(client: &mut Client, left: Duration) -> Option<Value> {
    next_message(client, left).filter(|m| m["type"] == "event")
}

fn sse_outcome(stream: &mut EventStream, left: Duration) -> Option<Value> {
    let message = stream.next_message(left)?;
    if message.event.is_some() || message.retry.is_some() {
        return None;
    }
    let json = message.json();
    assert_eq!(
        message.id.as_deref().and_then(sse_id_seq),
        json["seq"].as_u64(),
        "an SSE outcome's id must be EPOCH:SEQ"
    );
    Some(json)
}

/// The outcomes for `ids` as seen on both transports; checks that both carry
/// the same JSON for each.
fn outcomes_on_both(
    ws: &mut Client,
    sse: &mut EventStream,
    ids: &[String],
) -> HashMap<String, Value> {
    let on_ws = collect_by_id(ids, "/ws", |left| ws_outcome(ws, left));
    let on_sse = collect_by_id(ids, "/events", |left| sse_outcome(sse, left));
    assert_eq!(
        on_ws, on_sse,
        "/ws and /events must carry the same outcome JSON"
    );
    on_ws
}

/// The `ids` of a 202 answer, checking its counts.
fn accepted_ids(response: &common::Response, accepted: u64, dropped: u64) -> Vec<String> {
    assert_eq!(
        response.status,
        202,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let answer = response.json();
    assert_eq!(answer["accepted"].as_u64(), Some(accepted), "{answer}");
    assert_eq!(answer["dropped"].as_u64(), Some(dropped), "{answer}");
    answer["ids"]
        .as_array()
        .expect("ids array")
        .iter()
        .map(|id| id.as_str().expect("id string").to_owned())
        .collect()
}

fn now_epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        * 1000.0
}

/// The latest stats snapshot, once there is one.
fn stats(addr: SocketAddr) -> Value {
    let mut latest = Value::Null;
    assert!(
        eventually(WAIT, || {
            let (status, body) = get_json(addr, "/api/stats");
            latest = body;
            status == 200
        }),
        "no stats snapshot"
    );
    latest
}

fn count(stats: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(stats, |v, key| &v[*key])
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {stats}"))
}

#[test]
fn a_single_posted_event_reaches_both_transports_with_its_payload_and_source() {
    let server = start(|c| {
        c.rate = 0;
        c.deadline_ms = 5_000;
    });
    let addr = server.local_addr();
    let (mut ws, mut sse) = watchers(addr);
    let payload = json!({"order": 42, "tags": ["a", "b"], "nested": {"ok": true}});
    let body = json!({"id": "single-1", "workMs": 1, "payload": payload});
    let response = post_events(addr, JSON, body.to_string().as_bytes());
    assert_eq!(accepted_ids(&response, 1, 0), ["single-1"]);
    let got = outcomes_on_both(&mut ws, &mut sse, &["single-1".to_owned()]);
    let event = &got["single-1"];
    assert_eq!(event["type"], "event");
    assert_eq!(event["source"], "ingest");
    assert_eq!(event["payload"], payload);
    assert_eq!(event["deadlineMs"], 5_000.0, "the default deadline applies");
    assert_eq!(event["status"], "on-time", "{event}");
    assert!(event["seq"].as_u64().is_some(), "{event}");
}

#[test]
fn a_json_array_is_ingested_and_answered_with_ids_in_request_order() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let (mut ws, mut sse) = watchers(addr);
    let body = json!([
        {"id": "array-a", "deadlineMs": 5000, "workMs": 1, "payload": "first"},
        {"deadlineMs": 5000, "workMs": 1, "payload": [1, 2, 3]},
        {"id": "array-c", "deadlineMs": 5000, "workMs": 1, "payload": null},
        {"id": "array-d", "deadlineMs": 5000, "workMs": 1},
    ]);
    let response = post_events(addr, JSON, body.to_string().as_bytes());
    let ids = accepted_ids(&response, 4, 0);
    assert_eq!(ids.len(), 4);
    assert_eq!((ids[0].as_str(), ids[2].as_str()), ("array-a", "array-c"));
    assert_eq!(ids[3], "array-d");
    assert!(!ids[1].is_empty(), "an item without id gets one: {ids:?}");
    let got = outcomes_on_both(&mut ws, &mut sse, &ids);
    for (i, id) in ids.iter().enumerate() {
        let event = &got[id];
        assert_eq!(event["source"], "ingest", "{event}");
        assert_eq!(event["deadlineMs"], 5000.0, "{event}");
        match i {
            0 => assert_eq!(event["payload"], "first"),
            1 => assert_eq!(event["payload"], json!([1, 2, 3])),
            _ => {}
        }
    }
    assert!(
        got["array-d"].get("payload").is_none_or(Value::is_null),
        "no payload was sent: {}",
        got["array-d"]
    );
}

#[test]
fn ndjson_lines_are_each_ingested() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let (mut ws, mut sse) = watchers(addr);
    let body = "{\"id\":\"line-1\",\"deadlineMs\":5000,\"workMs\":1,\"payload\":{\"n\":1}}\n\
                \n\
                {\"id\":\"line-2\",\"deadlineMs\":5000,\"workMs\":1,\"payload\":{\"n\":2}}\n\
                {\"id\":\"line-3\",\"deadlineMs\":5000,\"workMs\":1,\"payload\":{\"n\":3}}\n";
    let response = post_events(addr, NDJSON, body.as_bytes());
    let ids = accepted_ids(&response, 3, 0);
    assert_eq!(ids, ["line-1", "line-2", "line-3"]);
    let got = outcomes_on_both(&mut ws, &mut sse, &ids);
    for n in 1..=3 {
        let event = &got[&format!("line-{n}")];
        assert_eq!(event["source"], "ingest");
        assert_eq!(event["payload"], json!({ "n": n }));
        assert_eq!(event["status"], "on-time", "{event}");
    }
}

#[test]
fn every_refused_request_names_its_problem_and_changes_nothing() {
    let max_body = 64 * 1024;
    let server = start(|c| {
        c.rate = 0;
        c.max_body = max_body;
    });
    let addr = server.local_addr();
    let (mut ws, mut sse) = watchers(addr);
    let before = stats(addr);
    let far_future = now_epoch_ms() + 120_000.0;
    let big_payload = json!({ "payload": "x".repeat(5 * 1024) }).to_string();
    let too_many = format!("[{}]", vec!["{}"; 10_001].join(","));
    let too_large = Value::from(vec![json!({ "payload": "y".repeat(3000) }); 30]).to_string();
    assert!(too_large.len() as u64 > max_body);
    let long_id = json!({ "id": "i".repeat(129) }).to_string();
    let cases: Vec<(&str, &str, String, u16, &[&str])> = vec![
        ("malformed JSON", JSON, r#"{"id": "a","#.into(), 400, &[]),
        (
            "malformed array",
            JSON,
            r#"[{"id": "a"}, {"#.into(),
            400,
            &[],
        ),
        (
            "a bad second item",
            JSON,
            r#"[{"id": "good-0"}, {"id": "bad-1", "deadlineMs": 0}]"#.into(),
            400,
            &["item 1", "deadlineMs"],
        ),
        (
            "negative deadline",
            JSON,
            r#"{"deadlineMs": -5}"#.into(),
            400,
            &["item 0", "deadlineMs"],
        ),
        (
            "deadline over an hour",
            JSON,
            r#"{"deadlineMs": 3600001}"#.into(),
            400,
            &["deadlineMs"],
        ),
        (
            "deadline as a string",
            JSON,
            r#"{"deadlineMs": "100"}"#.into(),
            400,
            &["deadlineMs"],
        ),
        (
            "negative work",
            JSON,
            r#"{"workMs": -1}"#.into(),
            400,
            &["workMs"],
        ),
        (
            "unknown field",
            JSON,
            r#"[{}, {}, {"colour": "red"}]"#.into(),
            400,
            &["item 2", "colour"],
        ),
        ("id too long", JSON, long_id, 400, &["id"]),
        (
            "createdAt two minutes ahead",
            JSON,
            json!({ "createdAt": far_future }).to_string(),
            400,
            &["createdAt"],
        ),
        ("payload over 4 KiB", JSON, big_payload, 400, &["payload"]),
        (
            "a bad NDJSON line",
            NDJSON,
            "{\"id\":\"nd-0\"}\nnot json\n".into(),
            400,
            &["item 1"],
        ),
        (
            "a bad NDJSON field",
            NDJSON,
            "{\"id\":\"nd-0\"}\n{\"id\":\"nd-1\"}\n{\"workMs\":\"slow\"}\n".into(),
            400,
            &["item 2", "workMs"],
        ),
        ("batch of 10,001", JSON, too_many, 413, &[]),
        ("body over --max-body", JSON, too_large, 413, &[]),
        ("text/plain", "text/plain", r#"{"id":"t"}"#.into(), 415, &[]),
        (
            "a form with a bad deadline",
            "application/x-www-form-urlencoded",
            "id=t&deadlineMs=soon".into(),
            400,
            &["deadlineMs"],
        ),
    ];
    for (what, content_type, body, status, mentions) in &cases {
        let response = post_events(addr, content_type, body.as_bytes());
        assert_eq!(
            response.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let error = response.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: error text"))
            .to_owned();
        for mention in *mentions {
            assert!(
                error.contains(mention),
                "{what}: the error should mention {mention:?}: {error}"
            );
        }
    }
    let no_type = http(addr, "POST", "/api/events", &[], br#"{"id":"n"}"#);
    assert_eq!(no_type.status, 415, "no Content-Type");

    // Nothing was counted: after one good event, ingested moved by exactly one.
    let ingested_before = count(&before, &["totals", "ingested"]);
    let sentinel = json!({"id": "sentinel", "deadlineMs": 5000, "workMs": 1});
    let response = post_events(addr, JSON, sentinel.to_string().as_bytes());
    accepted_ids(&response, 1, 0);
    assert!(
        eventually(WAIT, || count(&stats(addr), &["totals", "ingested"])
            > ingested_before),
        "the sentinel should be counted"
    );
    thread::sleep(Duration::from_millis(1_200));
    let after = stats(addr);
    assert_eq!(
        count(&after, &["totals", "ingested"]),
        ingested_before + 1,
        "refused requests must not be counted: {after}"
    );
    assert_eq!(count(&after, &["totals", "onTime"]), 1, "{after}");
    // Nothing but the sentinel appeared on either stream.
    let ids = ["sentinel".to_owned()];
    outcomes_on_both(&mut ws, &mut sse, &ids);
    let quiet = Duration::from_millis(1_000);
    assert!(
        ws_outcome(&mut ws, quiet).is_none(),
        "/ws got an outcome of a refused request"
    );
    assert!(
        sse_outcome(&mut sse, quiet).is_none(),
        "/events got an outcome of a refused request"
    );
}

#[test]
fn values_at_the_limits_are_accepted() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws");
    let long_id: String = "é".repeat(128);
    let payload = "p".repeat(4 * 1024 - 2);
    assert_eq!(json!(payload).to_string().len(), 4 * 1024);
    let body = json!([
        {"id": long_id, "workMs": 1},
        {"id": "hour", "deadlineMs": 3_600_000, "workMs": 1},
        {"id": "full-payload", "workMs": 1, "deadlineMs": 5000, "payload": payload},
        {"id": "skewed", "createdAt": now_epoch_ms() + 30_000.0, "workMs": 1},
    ]);
    let ids = accepted_ids(&post_events(addr, JSON, body.to_string().as_bytes()), 4, 0);
    assert_eq!(
        ids[0], long_id,
        "128 characters is the longest id, not 128 bytes"
    );
    let got = collect_by_id(&ids, "/ws", |left| ws_outcome(&mut ws, left));
    assert_eq!(got["hour"]["deadlineMs"], 3_600_000.0);
    assert_eq!(got["full-payload"]["payload"], json!(payload));
    assert_eq!(got[&long_id]["source"], "ingest");

    // The largest batch is accepted; what the queue cannot hold is dropped, counted.
    let most = format!("[{}]", vec!["{\"workMs\":1}"; 10_000].join(","));
    let response = post_events(addr, JSON, most.as_bytes());
    assert_eq!(response.status, 202, "a batch of 10,000 is allowed");
    let answer = response.json();
    assert_eq!(
        answer["accepted"].as_u64().expect("accepted")
            + answer["dropped"].as_u64().expect("dropped"),
        10_000,
        "{}",
        answer["accepted"]
    );
    assert_eq!(answer["ids"].as_array().map(Vec::len), Some(10_000));
    assert!(
        eventually(WAIT, || count(&stats(addr), &["totals", "ingested"])
            == 10_004),
        "all 10,004 events are counted"
    );
}

#[test]
fn with_a_token_posting_events_needs_it() {
    let server = start(|c| {
        c.rate = 0;
        c.token = Some("s3cret-s3cret-s3cret".into());
    });
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws");
    let body = br#"{"id":"tok","deadlineMs":5000,"workMs":1}"#;
    let post = |auth: Option<&str>| {
        let mut headers = vec![("Content-Type", JSON)];
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        http(addr, "POST", "/api/events", &headers, body)
    };
    let missing = post(None);
    assert_eq!(missing.status, 401);
    assert!(missing.json()["error"].is_string());
    assert_eq!(post(Some("Bearer wrong")).status, 401);
    assert_eq!(
        post(Some("s3cret-s3cret-s3cret")).status,
        401,
        "the Bearer scheme is needed"
    );
    assert_eq!(
        post(Some("Bearer s3cret-s3cret-s3cre")).status,
        401,
        "a prefix"
    );
    assert_eq!(
        post(Some("Bearer s3cret-s3cret-s3cret!")).status,
        401,
        "longer"
    );
    let ok = post(Some("bEARER s3cret-s3cret-s3cret"));
    assert_eq!(accepted_ids(&ok, 1, 0), ["tok"]);
    let got = collect_by_id(&["tok".to_owned()], "/ws", |left| ws_outcome(&mut ws, left));
    assert_eq!(got["tok"]["source"], "ingest");
    assert!(
        eventually(WAIT, || count(&stats(addr), &["totals", "ingested"]) == 1),
        "exactly the authorised event is counted"
    );
    thread::sleep(Duration::from_millis(1_200));
    assert_eq!(count(&stats(addr), &["totals", "ingested"]), 1);
    assert!(
        ws_outcome(&mut ws, Duration::from_millis(500)).is_none(),
        "refused posts must not produce outcomes"
    );
}

#[test]
fn an_ingested_event_created_past_its_deadline_is_dropped_as_expired() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws");
    let created = now_epoch_ms() - 5_000.0;
    let body = json!({"id": "old", "createdAt": created, "deadlineMs": 100, "workMs": 1});
    accepted_ids(&post_events(addr, JSON, body.to_string().as_bytes()), 1, 0);
    let got = collect_by_id(&["old".to_owned()], "/ws", |left| ws_outcome(&mut ws, left));
    let event = &got["old"];
    assert_eq!(event["status"], "dropped", "{event}");
    assert_eq!(event["dropReason"], "expired", "{event}");
    assert_eq!(event["source"], "ingest");
    let created_on_wire = event["createdAt"].as_f64().expect("createdAt");
    assert!(
        (created_on_wire - created).abs() < 5.0,
        "the posted createdAt is kept: sent {created}, got {created_on_wire}"
    );
    assert!(event["latencyMs"].as_f64().expect("latencyMs") >= 5_000.0);
}

#[test]
fn declared_work_decides_on_time_or_infeasible() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let mut ws = connect(addr, "/ws");
    let body = json!([
        {"id": "fits", "deadlineMs": 2000, "workMs": 5},
        {"id": "too-long", "deadlineMs": 100, "workMs": 1000},
    ]);
    let ids = accepted_ids(&post_events(addr, JSON, body.to_string().as_bytes()), 2, 0);
    let got = collect_by_id(&ids, "/ws", |left| ws_outcome(&mut ws, left));
    assert_eq!(got["fits"]["status"], "on-time", "{}", got["fits"]);
    let doomed = &got["too-long"];
    assert_eq!(doomed["status"], "dropped", "{doomed}");
    assert_eq!(doomed["dropReason"], "infeasible", "{doomed}");
    assert!(
        doomed["latencyMs"].as_f64().expect("latencyMs") < 1000.0,
        "an infeasible event is dropped without doing its work: {doomed}"
    );
}

#[test]
fn ingested_events_finding_the_queue_full_are_dropped_counted_and_broadcast() {
    let server = start(|c| {
        c.rate = 0;
        c.workers = 1;
        c.queue = 1;
    });
    let addr = server.local_addr();
    let (mut ws, mut sse) = watchers(addr);
    let items: Vec<Value> = (0..50)
        .map(|n| json!({"id": format!("burst-{n}"), "deadlineMs": 10_000, "workMs": 100}))
        .collect();
    let response = post_events(addr, JSON, Value::from(items).to_string().as_bytes());
    assert_eq!(response.status, 202);
    let answer = response.json();
    let (accepted, dropped) = (
        answer["accepted"].as_u64().expect("accepted"),
        answer["dropped"].as_u64().expect("dropped"),
    );
    assert_eq!(accepted + dropped, 50, "{answer}");
    assert!(
        dropped > 0,
        "one worker and a queue of one cannot take 50 at once: {answer}"
    );
    let ids = accepted_ids(&response, accepted, dropped);
    let expected: Vec<String> = (0..50).map(|n| format!("burst-{n}")).collect();
    assert_eq!(ids, expected, "ids in request order");
    let got = outcomes_on_both(&mut ws, &mut sse, &ids);
    let queue_full: Vec<&Value> = got
        .values()
        .filter(|e| e["dropReason"] == "queue-full")
        .collect();
    assert_eq!(queue_full.len() as u64, dropped);
    for event in queue_full {
        assert_eq!(event["status"], "dropped");
        assert_eq!(event["source"], "ingest");
    }
    assert!(
        eventually(WAIT, || {
            let s = stats(addr);
            count(&s, &["totals", "ingested"]) == 50
                && count(&s, &["totals", "dropped", "queueFull"]) == dropped
                && count(&s, &["totals", "inFlight"]) == 0
        }),
        "stats should count all 50 and the {dropped} queue-full drops: {}",
        stats(addr)
    );
}

fn balances(t: &Value) -> bool {
    let n = |v: &Value| v.as_u64().expect("count");
    n(&t["generated"]) + n(&t["ingested"])
        == n(&t["onTime"])
            + n(&t["late"])
            + n(&t["dropped"]["queueFull"])
            + n(&t["dropped"]["expired"])
            + n(&t["dropped"]["infeasible"])
            + n(&t["inFlight"])
}

#[test]
fn generator_and_ingest_together_under_overload_keep_every_snapshot_balanced() {
    let (queue, workers) = (8u64, 1u64);
    let server = start(|c| {
        c.rate = 2_000;
        c.workers = workers as u32;
        c.queue = queue as u32;
    });
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws?stats=1");
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let producer = {
        let (stop, posted) = (Arc::clone(&stop), Arc::clone(&posted));
        thread::spawn(move || {
            let batch: Vec<Value> = (0..500)
                .map(|n| json!({"deadlineMs": 200, "payload": {"n": n}}))
                .collect();
            let body = Value::from(batch).to_string();
            let until = Instant::now() + Duration::from_secs(4);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let response = post_events(addr, JSON, body.as_bytes());
                assert_eq!(response.status, 202, "a batch of 500 is accepted");
                posted.fetch_add(500, Ordering::Relaxed);
            }
        })
    };
    let mut last = Value::Null;
    let mut snapshots = 0;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until || snapshots < 5 {
        let stats = next_stats(&mut client, WAIT);
        let t = &stats["totals"];
        assert!(balances(t), "conservation broken in {t}");
        let in_flight = t["inFlight"].as_u64().expect("inFlight");
        assert!(
            in_flight <= queue + workers,
            "inFlight beyond queue + workers: {t}"
        );
        snapshots += 1;
        last = stats;
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("producer thread");
    assert!(posted.load(Ordering::Relaxed) > 0, "no batch was posted");
    let t = &last["totals"];
    assert!(t["ingested"].as_u64() > Some(0), "{t}");
    assert!(t["generated"].as_u64() > Some(0), "{t}");
    assert!(t["dropped"]["queueFull"].as_u64() > Some(0), "{t}");
    // After the posts stop, the final counts balance too and include every post.
    let total_posted = posted.load(Ordering::Relaxed);
    // Snapshots already queued for this client may predate the last post.
    let mut settled = next_stats(&mut client, WAIT);
    for _ in 0..10 {
        assert!(balances(&settled["totals"]), "{}", settled["totals"]);
        if settled["totals"]["ingested"].as_u64() == Some(total_posted) {
            break;
        }
        settled = next_stats(&mut client, WAIT);
    }
    assert_eq!(
        settled["totals"]["ingested"].as_u64(),
        Some(total_posted),
        "every accepted post is counted as ingested"
    );
}
