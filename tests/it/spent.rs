//! Every outcome says where its time went: `queueMs + waitMs + workMs` is its
//! `latencyMs` (within rounding) whatever the verdict, and every late or
//! dropped outcome names its `cause`. Each cause is produced on purpose here,
//! on a real server, and seen again in `/api/stats` and `/metrics`.

use crate::common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::{assert_balances, get_json, http, outcome_of, post_events, start, totals};
use punctual::{Admission, Config, Role, WorkMode};
use serde_json::{Value, json};
use tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

/// Posts `events` in one request (one JSON object per line) and returns their ids.
fn post(addr: SocketAddr, events: &[Value]) -> Vec<String> {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let response = post_events(addr, "application/x-ndjson", body.as_bytes());
    assert_eq!(response.status, 202, "{response:?}");
    response.json()["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("an id").to_owned())
        .collect()
}

/// Fails unless the outcome's parts add up to its latency, within the
/// rounding of each to the microsecond, and `workMs` is there exactly when
/// `worked` says the work started.
fn assert_parts_add_up(outcome: &Value, worked: bool) {
    let ms = |key: &str| outcome[key].as_f64();
    let transit = ms("transitMs").unwrap_or(0.0);
    let queue = ms("queueMs").unwrap_or_else(|| panic!("no queueMs: {outcome}"));
    let wait = ms("waitMs").unwrap_or_else(|| panic!("no waitMs: {outcome}"));
    let work = ms("workMs");
    assert_eq!(
        work.is_some(),
        worked,
        "workMs present iff work started: {outcome}"
    );
    let latency = ms("latencyMs").expect("latencyMs");
    let sum = transit + queue + wait + work.unwrap_or(0.0);
    assert!(
        (sum - latency).abs() <= 0.003,
        "{sum} ≠ {latency}: {outcome}"
    );
    assert!(
        queue >= 0.0 && wait >= 0.0 && work.unwrap_or(0.0) >= 0.0,
        "{outcome}"
    );
}

/// The outcome of `id` after checking its status, drop reason and cause.
fn judged(
    addr: SocketAddr,
    id: &str,
    status: &str,
    reason: Option<&str>,
    cause: Option<&str>,
) -> Value {
    let outcome = outcome_of(addr, id, WAIT);
    assert_eq!(outcome["status"], status, "{outcome}");
    assert_eq!(outcome["dropReason"].as_str(), reason, "{outcome}");
    assert_eq!(outcome["cause"].as_str(), cause, "{outcome}");
    outcome
}

fn misses_total(addr: SocketAddr) -> Value {
    get_json(addr, "/api/stats").1["spent"]["missesTotal"].clone()
}

#[test]
fn queue_work_and_capacity_misses_name_their_cause_and_every_part_adds_up() {
    // One worker, a queue of two, admission off: what is late is judged late.
    let server = start(|c: &mut Config| {
        c.rate = 0;
        c.workers = 1;
        c.queue = 2;
        c.admission = Admission::Off;
    });
    let addr = server.local_addr();

    let on_time = post(addr, &[json!({"deadlineMs": 2000, "workMs": 5})]);
    let outcome = judged(addr, &on_time[0], "on-time", None, None);
    assert_parts_add_up(&outcome, true);
    assert!(outcome["workMs"].as_f64() >= Some(5.0), "{outcome}");

    // The work alone runs past the deadline.
    let slow = post(addr, &[json!({"deadlineMs": 100, "workMs": 400})]);
    let outcome = judged(addr, &slow[0], "late", None, Some("work"));
    assert_parts_add_up(&outcome, true);
    assert!(
        outcome["workMs"].as_f64() > outcome["queueMs"].as_f64(),
        "{outcome}"
    );

    // A long event holds the only worker; behind it one event waits until it
    // is late, one expires in the queue, and one finds the queue full. The
    // worker is seen busy within a second or two (the stats' window): posted
    // T ≤ 3 s after the blocker started, the first one behind waits 8 − T s
    // and works T + 2 s of its 10 s: its wait is the longer part.
    let blocker = post(addr, &[json!({"deadlineMs": 20_000, "workMs": 8_000})]);
    assert!(common::eventually(WAIT, || {
        get_json(addr, "/api/stats").1["workers"]["busy"] == 1
    }));
    let behind = post(
        addr,
        &[
            json!({"deadlineMs": 10_000, "workMs": 6_000}),
            json!({"deadlineMs": 150, "workMs": 10}),
            json!({"deadlineMs": 2_000, "workMs": 10}),
        ],
    );
    judged(addr, &blocker[0], "on-time", None, None);
    let waited = judged(addr, &behind[0], "late", None, Some("queue"));
    assert_parts_add_up(&waited, true);
    assert!(
        waited["queueMs"].as_f64() > waited["workMs"].as_f64(),
        "{waited}"
    );
    let expired = judged(addr, &behind[1], "dropped", Some("expired"), Some("queue"));
    assert_parts_add_up(&expired, false);
    assert_eq!(expired["waitMs"], 0.0, "{expired}");
    let full = judged(
        addr,
        &behind[2],
        "dropped",
        Some("queue-full"),
        Some("capacity"),
    );
    assert_parts_add_up(&full, false);

    // The stats and the metrics count the same misses by cause.
    let expected =
        json!({"queue": 2, "work": 1, "capacity": 1, "admission": 0, "credit": 0, "transit": 0});
    assert!(
        common::eventually(WAIT, || misses_total(addr) == expected),
        "{} ≠ {expected}",
        misses_total(addr)
    );
    let (_, stats) = get_json(addr, "/api/stats");
    let producer = stats["producers"]
        .as_array()
        .and_then(|rows| rows.iter().find(|p| p["name"] == "ingest"))
        .unwrap_or_else(|| panic!("an ingest row: {stats}"));
    assert_eq!(producer["spent"]["missesTotal"], expected, "{producer}");
    let metrics =
        String::from_utf8_lossy(&http(addr, "GET", "/metrics", &[], b"").body).into_owned();
    for (cause, n) in [("queue", 2), ("work", 1), ("capacity", 1), ("credit", 0)] {
        let line = format!("punctual_misses_total{{cause=\"{cause}\"}} {n}");
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
        let line =
            format!("punctual_producer_misses_total{{producer=\"ingest\",cause=\"{cause}\"}} {n}");
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    for part in ["queue", "wait", "work"] {
        let family = format!("punctual_spent_p99_seconds{{part=\"{part}\"}} ");
        assert!(
            metrics.lines().any(|l| l.starts_with(&family)),
            "no {family} in\n{metrics}"
        );
    }
    assert_balances(&totals(&server));
    server.stop();
}

#[test]
fn the_time_split_of_a_window_shows_in_the_stats() {
    let server = start(|c: &mut Config| {
        c.rate = 0;
        c.workers = 1;
        c.admission = Admission::Off;
    });
    let addr = server.local_addr();
    let events: Vec<Value> = (0..5)
        .map(|_| json!({"deadlineMs": 5000, "workMs": 40}))
        .collect();
    // Batches of five events of 40 ms on one worker, one after another: the
    // work is about 40 ms each and the last of a batch waited for the four
    // before it. Posted until a one-second window shows it, however slowly
    // this thread runs.
    let mut seen = Value::Null;
    let split_shown = common::eventually(WAIT, || {
        let ids = post(addr, &events);
        outcome_of(addr, &ids[4], WAIT);
        seen = get_json(addr, "/api/stats").1["spent"].clone();
        seen["workMs"]["p50"].as_f64() >= Some(40.0)
            && seen["queueMs"]["p99"].as_f64() >= Some(120.0)
    });
    assert!(split_shown, "{seen}");
    assert_eq!(
        seen["waitMs"]["p99"], 0.0,
        "no credit wait outside pull: {seen}"
    );
    server.stop();
}

#[test]
fn an_infeasible_drop_is_caused_by_admission() {
    let server = start(|c: &mut Config| {
        c.rate = 0;
        c.admission = Admission::On;
    });
    let addr = server.local_addr();
    let ids = post(addr, &[json!({"deadlineMs": 50, "workMs": 400})]);
    let outcome = judged(
        addr,
        &ids[0],
        "dropped",
        Some("infeasible"),
        Some("admission"),
    );
    assert_parts_add_up(&outcome, false);
    server.stop();
}

#[test]
fn a_worker_panic_is_caused_by_the_work() {
    let server = start(|c: &mut Config| {
        c.rate = 0;
        c.workers = 1;
        c.test_panic = Some(Role::Worker);
    });
    let addr = server.local_addr();
    let ids = post(addr, &[json!({"deadlineMs": 2000, "workMs": 5})]);
    let outcome = judged(addr, &ids[0], "dropped", Some("panicked"), Some("work"));
    assert_parts_add_up(&outcome, true);
    server.stop();
}

#[test]
fn a_failed_call_has_its_work_measured_and_no_cause() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/work", closed.local_addr().expect("addr"));
    drop(closed);
    let server = start(|c: &mut Config| {
        c.rate = 0;
        c.work = WorkMode::Http;
        c.work_url = Some(url);
    });
    let addr = server.local_addr();
    let ids = post(addr, &[json!({"deadlineMs": 2000})]);
    let outcome = judged(addr, &ids[0], "failed", None, None);
    assert_parts_add_up(&outcome, true);
    server.stop();
}

#[test]
fn a_pull_task_waiting_for_credit_is_caused_by_credit_and_its_wait_is_measured() {
    let server = start(|c: &mut Config| {
        c.rate = 0;
        c.workers = 2;
        c.work = WorkMode::Pull;
    });
    let addr = server.local_addr();
    let (mut worker, _) =
        tungstenite::connect(format!("ws://{addr}/api/work?credit=1")).expect("a pull worker");
    assert!(common::eventually(WAIT, || {
        get_json(addr, "/api/stats").1["work"]["connected"] == 1
    }));
    // The worker's one place is taken by a task it holds; the next waits
    // for room until its deadline.
    let held = post(addr, &[json!({"deadlineMs": 5000})]);
    let task = read_task(&mut worker);
    assert_eq!(task["id"], held[0].as_str());
    let starved = post(addr, &[json!({"deadlineMs": 300})]);
    let outcome = judged(
        addr,
        &starved[0],
        "dropped",
        Some("expired"),
        Some("credit"),
    );
    assert_parts_add_up(&outcome, false);
    assert!(
        outcome["waitMs"].as_f64() > outcome["queueMs"].as_f64(),
        "{outcome}"
    );

    // Answered, the held task is on time, with its work measured.
    let done = json!({"type": "done", "id": held[0]});
    worker
        .send(Message::text(done.to_string()))
        .expect("answer");
    let outcome = judged(addr, &held[0], "on-time", None, None);
    assert_parts_add_up(&outcome, true);
    let expected =
        json!({"queue": 0, "work": 0, "capacity": 0, "admission": 0, "credit": 1, "transit": 0});
    assert!(common::eventually(WAIT, || misses_total(addr) == expected));
    server.stop();
}

fn read_task(worker: &mut common::Client) -> Value {
    loop {
        match worker.read().expect("a task") {
            Message::Text(text) => {
                let task: Value = serde_json::from_str(&text).expect("JSON");
                if task["type"] == "task" {
                    return task;
                }
            }
            Message::Close(_) => panic!("closed before a task"),
            _ => {}
        }
    }
}

#[test]
fn every_outcome_of_a_busy_run_has_parts_that_add_up() {
    // Many events, mixed verdicts: the check holds for each one, not only
    // for those made on purpose above.
    let server = start(|c: &mut Config| {
        c.rate = 0;
        c.workers = 2;
        c.queue = 20;
        c.admission = Admission::Off;
    });
    let addr = server.local_addr();
    let events: Vec<Value> = (0..60)
        .map(|n| json!({"deadlineMs": 40 + 5 * (n % 20), "workMs": n % 30}))
        .collect();
    let ids = post(addr, &events);
    let mut by_status = BTreeMap::new();
    for id in &ids {
        let outcome = outcome_of(addr, id, WAIT);
        let worked = !matches!(outcome["status"].as_str(), Some("dropped"));
        assert_parts_add_up(&outcome, worked);
        let missed = matches!(outcome["status"].as_str(), Some("late" | "dropped"));
        assert_eq!(outcome.get("cause").is_some(), missed, "{outcome}");
        *by_status
            .entry(outcome["status"].as_str().unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    assert!(by_status.len() >= 2, "mixed verdicts: {by_status:?}");
    server.stop();
}

#[test]
fn time_before_arrival_is_transit_and_not_queue_wait() {
    let server = start(|c: &mut Config| {
        c.rate = 0;
        c.admission = Admission::Off;
    });
    let addr = server.local_addr();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        * 1000.0;
    // Dated 2 s ago with 1 s to live: it arrives expired. Dated 200 ms ago
    // with 300 ms: it is late, most of its time spent before it arrived.
    let ids = post(
        addr,
        &[
            json!({"createdAt": now_ms - 2_000.0, "deadlineMs": 1_000}),
            json!({"createdAt": now_ms - 200.0, "deadlineMs": 300, "workMs": 250}),
        ],
    );
    let expired = judged(addr, &ids[0], "dropped", Some("expired"), Some("transit"));
    assert_parts_add_up(&expired, false);
    assert!(expired["transitMs"].as_f64() >= Some(2_000.0), "{expired}");
    assert!(expired["queueMs"].as_f64() < Some(1_000.0), "{expired}");
    let late = judged(addr, &ids[1], "late", None, Some("transit"));
    assert_parts_add_up(&late, true);
    assert!(late["transitMs"].as_f64() >= Some(200.0), "{late}");
    // An event not dated by its producer has no transit.
    let plain = post(addr, &[json!({"deadlineMs": 1_000})]);
    let outcome = judged(addr, &plain[0], "on-time", None, None);
    assert!(outcome.get("transitMs").is_none(), "{outcome}");
    assert!(common::eventually(WAIT, || misses_total(addr)["transit"] == 2));
    // The queue wait of the last window is not the producer's lateness.
    assert!(get_json(addr, "/api/stats").1["spent"]["queueMs"]["p99"].as_f64() < Some(1_000.0));
    server.stop();
}
