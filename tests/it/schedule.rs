//! The work queue's order and its promises, as a producer sees them: `edf`
//! serves the tightest deadline first and, full, refuses whichever event is
//! due latest; an event expiring in the queue is dropped at its deadline, not
//! when a worker reaches it; a switch at runtime loses nothing; the totals
//! balance in both modes.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_balances, eventually, get_json, http, outcome_of, post_events, start, totals};
use punctual::Schedule;
use punctual::{Config, Server};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// One worker, so that a long first event holds everything else in the queue.
fn one_worker(schedule: Schedule, queue: u32) -> Server {
    start(move |c: &mut Config| {
        c.rate = 0;
        c.workers = 1;
        c.queue = queue;
        c.schedule = schedule;
    })
}

/// Posts one event and returns its id and what the answer said of it.
fn post(addr: SocketAddr, id: &str, deadline_ms: u64, work_ms: u64) -> Value {
    let body = json!({ "id": id, "deadlineMs": deadline_ms, "workMs": work_ms }).to_string();
    let answer = post_events(addr, "application/json", body.as_bytes());
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()
}

/// Occupies the one worker for `work_ms` and waits until a stats snapshot
/// shows it busy with nothing queued: the blocker has been taken, so under
/// `edf` too what is posted next cannot overtake it. Snapshots come once a
/// second, so the blocker must outlast one by enough to post what follows.
fn block_the_worker(addr: SocketAddr, work_ms: u64) {
    post(addr, "blocker", 60_000, work_ms);
    assert!(eventually(WAIT, || {
        let stats = get_json(addr, "/api/stats").1;
        stats["workers"]["busy"] == 1 && stats["queue"]["depth"] == 0
    }));
}

/// The seqs of the outcomes of `ids`, in `ids` order.
fn seqs(addr: SocketAddr, ids: &[&str]) -> Vec<u64> {
    ids.iter()
        .map(|id| outcome_of(addr, id, WAIT)["seq"].as_u64().expect("seq"))
        .collect()
}

#[test]
fn edf_serves_a_tight_event_queued_after_loose_ones_first_and_fifo_does_not() {
    for schedule in [Schedule::Fifo, Schedule::Edf] {
        let server = one_worker(schedule, 16);
        let addr = server.local_addr();
        block_the_worker(addr, 2_500);
        for id in ["loose-1", "loose-2", "loose-3"] {
            post(addr, id, 9_000, 10);
        }
        post(addr, "tight", 5_000, 10);
        let order = seqs(addr, &["loose-1", "loose-2", "loose-3", "tight"]);
        let tight_first = order[3] < order[0];
        assert_eq!(
            tight_first,
            schedule == Schedule::Edf,
            "{schedule:?}: {order:?}"
        );
        for id in ["loose-1", "tight"] {
            assert_eq!(outcome_of(addr, id, WAIT)["status"], "on-time");
        }
        server.stop();
    }
}

#[test]
fn a_full_edf_queue_drops_the_latest_deadline_not_the_tight_newcomer() {
    let server = one_worker(Schedule::Edf, 2);
    let addr = server.local_addr();
    block_the_worker(addr, 2_500);
    post(addr, "a", 8_000, 10);
    post(addr, "b", 9_000, 10);
    // Full: the tight one is queued and b, due latest, makes room.
    assert_eq!(post(addr, "tight", 5_000, 10)["accepted"], 1);
    // Full again: a newcomer due later than everything queued is refused.
    assert_eq!(post(addr, "loose", 12_000, 10)["dropped"], 1);
    for (id, status) in [
        ("b", "dropped"),
        ("loose", "dropped"),
        ("a", "on-time"),
        ("tight", "on-time"),
    ] {
        let o = outcome_of(addr, id, WAIT);
        assert_eq!(o["status"], status, "{o}");
        if status == "dropped" {
            assert_eq!(o["dropReason"], "queue-full", "{o}");
        }
    }
    assert!(eventually(WAIT, || totals(&server)["inFlight"] == 0));
    assert_balances(&totals(&server));
    server.stop();
}

#[test]
fn an_event_expiring_in_the_queue_is_dropped_at_its_deadline_not_when_a_worker_is_free() {
    for schedule in [Schedule::Fifo, Schedule::Edf] {
        let server = one_worker(schedule, 16);
        let addr = server.local_addr();
        block_the_worker(addr, 3_000);
        post(addr, "doomed", 300, 10);
        let o = outcome_of(addr, "doomed", WAIT);
        assert_eq!(o["dropReason"], "expired", "{o}");
        let latency = o["latencyMs"].as_f64().expect("latency");
        // The worker is busy for 3 s; the drop comes at the 300 ms deadline.
        assert!((300.0..2_000.0).contains(&latency), "{schedule:?}: {o}");
        server.stop();
    }
}

#[test]
fn switching_the_schedule_at_runtime_loses_nothing_and_reorders_what_waits() {
    let server = one_worker(Schedule::Fifo, 64);
    let addr = server.local_addr();
    block_the_worker(addr, 2_500);
    let ids: Vec<String> = (0..20).map(|n| format!("e{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        // Later arrivals are due sooner: edf reverses the arrival order.
        post(addr, id, 10_000 - n as u64 * 100, 5);
    }
    let change = http(
        addr,
        "PUT",
        "/api/config",
        &[("Content-Type", "application/json")],
        br#"{"schedule":"edf"}"#,
    );
    assert_eq!(change.status, 200);
    assert_eq!(change.json()["schedule"], "edf");
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let order = seqs(addr, &refs);
    assert!(
        order.windows(2).all(|w| w[0] > w[1]),
        "edf after the switch: {order:?}"
    );
    let (_, page) = get_json(addr, "/api/events?since=0&limit=1000");
    let outcomes = page.as_array().expect("events").len();
    assert_eq!(outcomes, ids.len() + 1, "each event once, the blocker too");
    assert!(eventually(WAIT, || totals(&server)["inFlight"] == 0));
    assert_balances(&totals(&server));
    server.stop();
}

#[test]
fn under_overload_the_totals_balance_in_both_modes_and_u_says_so() {
    for schedule in [Schedule::Fifo, Schedule::Edf] {
        let server = start(move |c: &mut Config| {
            c.rate = 400;
            c.work_ms = 20;
            c.workers = 2;
            c.queue = 8;
            c.schedule = schedule;
        });
        let addr = server.local_addr();
        for n in 0..50 {
            post(
                addr,
                &format!("mixed-{n}"),
                if n % 2 == 0 { 30 } else { 500 },
                10,
            );
        }
        // 400 events/s × 20 ms on 2 workers: U = 4, overloaded by design.
        assert!(eventually(WAIT, || {
            get_json(addr, "/api/stats").1["schedulability"]["utilisation"]
                .as_f64()
                .is_some_and(|u| u >= 1.0)
        }));
        let (_, stats) = get_json(addr, "/api/stats");
        assert_eq!(stats["config"]["schedule"], json!(schedule));
        assert_balances(&stats["totals"]);
        // The snapshot's own verdict says so, first, in the dashboard's words.
        let u = stats["schedulability"]["utilisation"].as_f64().expect("U");
        assert!(u >= 1.0, "U stays at about 4: {stats}");
        assert_eq!(stats["health"]["state"], "overloaded", "{stats}");
        assert_eq!(
            stats["health"]["reasons"][0],
            json!(format!(
                "U {u:.2} ≥ 1: overloaded by design, drops expected"
            )),
            "{stats}"
        );
        let metrics = http(addr, "GET", "/metrics", &[], b"");
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing: {text}"))
        };
        let u = gauge("punctual_utilisation");
        assert!(u > 0.0, "{text}");
        assert!(
            (gauge("punctual_utilisation_headroom") - (1.0 - u)).abs() < 0.01,
            "{text}"
        );
        server.stop();
    }
}
