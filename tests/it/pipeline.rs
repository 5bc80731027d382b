//! The deadline-aware pipeline seen from a WebSocket client: verdicts,
//! admission control, overload, and the conservation count.

use crate::common;

use std::time::{Duration, Instant};

use common::{assert_balances, connect, events, next_stats, start};
use punctual::{Admission, Event};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn statuses(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn every_client_receives_the_same_sequence_of_outcomes() {
    let server = start(|c| c.rate = 200);
    let addr = server.local_addr();
    let mut clients: Vec<_> = (0..3).map(|_| connect(addr, "/ws")).collect();
    let seen: Vec<Vec<(u64, String)>> = clients
        .iter_mut()
        .map(|client| {
            events(client, 150, WAIT)
                .iter()
                .map(|e| {
                    (
                        e["seq"].as_u64().expect("seq"),
                        e["id"].as_str().expect("id").to_owned(),
                    )
                })
                .collect()
        })
        .collect();
    for sequence in &seen {
        for pair in sequence.windows(2) {
            assert_eq!(
                pair[1].0,
                pair[0].0 + 1,
                "seq has a gap or repeat: {pair:?}"
            );
        }
    }
    // Clients joined at slightly different moments: compare where they overlap.
    let first = seen.iter().map(|s| s[0].0).max().expect("three clients");
    let overlap = |s: &Vec<(u64, String)>| {
        s.iter()
            .filter(|(seq, _)| *seq >= first)
            .take(100)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(overlap(&seen[0]).len() >= 100);
    assert_eq!(overlap(&seen[0]), overlap(&seen[1]));
    assert_eq!(overlap(&seen[0]), overlap(&seen[2]));
}

#[test]
fn work_well_inside_the_deadline_is_on_time() {
    let server = start(|c| {
        c.rate = 50;
        c.work_ms = 10;
        c.deadline_ms = 500;
    });
    let mut client = connect(server.local_addr(), "/ws");
    let got = events(&mut client, 30, WAIT);
    assert!(
        statuses(&got).iter().all(|s| s == "on-time"),
        "{:?}",
        statuses(&got)
    );
    for e in &got {
        let latency = e["latencyMs"].as_f64().expect("latencyMs");
        assert!((10.0..500.0).contains(&latency), "latency {latency}");
        assert_eq!(e["source"], "generator");
        assert_eq!(e["deadlineMs"], 500.0);
        let (created, processed) = (
            e["createdAt"].as_f64().expect("createdAt"),
            e["processedAt"].as_f64().expect("processedAt"),
        );
        assert!(
            (processed - created - latency).abs() < 0.01,
            "processedAt - createdAt must equal latencyMs"
        );
        assert!(e.get("dropReason").is_none());
    }
}

#[test]
fn late_verdict_is_given_at_the_deadline_not_when_work_ends() {
    let server = start(|c| {
        c.rate = 10;
        c.workers = 8;
        c.work_ms = 1_000;
        c.deadline_ms = 100;
        c.admission = Admission::Off;
    });
    let mut client = connect(server.local_addr(), "/ws");
    let got = events(&mut client, 10, WAIT);
    for e in &got {
        assert_eq!(e["status"], "late", "{e}");
        let latency = e["latencyMs"].as_f64().expect("latencyMs");
        // Close to the 100 ms deadline, far from the 1 000 ms of work.
        assert!(
            (99.0..400.0).contains(&latency),
            "late verdict came after {latency} ms"
        );
    }
}

#[test]
fn admission_control_drops_infeasible_work_without_spending_worker_time() {
    let server = start(|c| {
        c.rate = 50;
        c.work_ms = 150;
        c.deadline_ms = 100;
    });
    let mut client = connect(server.local_addr(), "/ws?stats=1");
    let got = events(&mut client, 20, WAIT);
    for e in &got {
        assert_eq!(e["status"], "dropped", "{e}");
        assert_eq!(e["dropReason"], "infeasible", "{e}");
        assert!(e["latencyMs"].as_f64().expect("latencyMs") < 100.0);
    }
    let stats = next_stats(&mut client, WAIT);
    assert_eq!(
        stats["workers"]["workMsTotal"], 0.0,
        "no worker time may be spent on doomed events"
    );
    assert_eq!(stats["totals"]["onTime"], 0);
    assert_eq!(stats["totals"]["late"], 0);
}

#[test]
fn an_event_created_past_its_deadline_is_dropped_as_expired() {
    let server = start(|c| c.rate = 0);
    let mut client = connect(server.local_addr(), "/ws");
    let mut event = Event::generated(
        Instant::now() - Duration::from_millis(500),
        Duration::from_millis(100),
    );
    event.id = "from-the-past".into();
    server.submit(event);
    let got = events(&mut client, 1, WAIT);
    assert_eq!(got[0]["id"], "from-the-past");
    assert_eq!(got[0]["status"], "dropped");
    assert_eq!(got[0]["dropReason"], "expired");
    assert!(got[0]["latencyMs"].as_f64().expect("latencyMs") >= 500.0);
}

#[test]
fn overload_drops_queue_full_and_every_snapshot_balances() {
    let (queue, workers) = (16u64, 1u64);
    let server = start(|c| {
        c.rate = 5_000;
        c.workers = workers as u32;
        c.queue = queue as u32;
        c.work_ms = 5;
        c.deadline_ms = 1_000;
    });
    let mut client = connect(server.local_addr(), "/ws?stats=1");
    let mut last = Value::Null;
    for _ in 0..5 {
        let stats = next_stats(&mut client, WAIT);
        let t = &stats["totals"];
        let n = |v: &Value| v.as_u64().expect("count");
        assert_balances(t);
        assert!(
            n(&t["inFlight"]) <= queue + workers,
            "inFlight beyond queue + workers: {t}"
        );
        last = stats;
    }
    assert!(
        last["totals"]["dropped"]["queueFull"]
            .as_u64()
            .expect("count")
            > 0,
        "{last}"
    );
    assert!(
        last["totals"]["onTime"].as_u64().expect("count") > 0,
        "{last}"
    );
}

/// On-time verdicts per second over a few seconds of 10× overload.
fn on_time_rate_under_tenfold_overload(admission: Admission) -> f64 {
    // 4 workers × 50 ms work = 80 events/s of capacity; 800 events/s offered.
    let server = start(|c| {
        c.rate = 800;
        c.admission = admission;
    });
    let mut client = connect(server.local_addr(), "/ws?stats=1");
    next_stats(&mut client, WAIT);
    let first = next_stats(&mut client, WAIT);
    let mut last = first.clone();
    for _ in 0..4 {
        last = next_stats(&mut client, WAIT);
    }
    let on_time = |s: &Value| s["totals"]["onTime"].as_f64().expect("count");
    let seconds = |s: &Value| s["uptimeS"].as_f64().expect("uptime");
    (on_time(&last) - on_time(&first)) / (seconds(&last) - seconds(&first))
}

#[test]
fn admission_control_keeps_on_time_throughput_under_overload() {
    let with = on_time_rate_under_tenfold_overload(Admission::On);
    let without = on_time_rate_under_tenfold_overload(Admission::Off);
    eprintln!("on-time/s under 10x overload: admission on {with:.1}, off {without:.1}");
    assert!(
        with >= 40.0,
        "with admission on-time throughput should stay near 80/s, got {with:.1}"
    );
    assert!(
        with > 2.0 * without,
        "admission on {with:.1}/s vs off {without:.1}/s"
    );
}
