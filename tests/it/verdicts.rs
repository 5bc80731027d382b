//! A verdict never contradicts its own numbers: an `on-time` outcome has
//! `latencyMs ≤ deadlineMs` and a `late` one `latencyMs ≥ deadlineMs`, even
//! when the CPU is so contended that workers wake up late.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{connect, next_message, start};
use punctual::Admission;

/// Threads that burn CPU until dropped, so the daemon's workers are preempted.
struct Contention {
    stop: Arc<AtomicBool>,
    spinners: Vec<JoinHandle<()>>,
}

impl Contention {
    fn start(threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let spinners = (0..threads)
            .map(|n| {
                let stop = Arc::clone(&stop);
                thread::Builder::new()
                    .name(format!("spinner-{n}"))
                    .spawn(move || {
                        let mut x = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                        }
                    })
                    .expect("spawn a spinner")
            })
            .collect();
        Contention { stop, spinners }
    }
}

impl Drop for Contention {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for spinner in self.spinners.drain(..) {
            let _ = spinner.join();
        }
    }
}

#[test]
fn no_verdict_contradicts_its_latency_under_cpu_contention() {
    let server = start(|c| {
        c.rate = 800;
        c.work_jitter_ms = 30;
        c.admission = Admission::On;
    });
    let mut client = connect(server.local_addr(), "/ws?status=on-time,late");
    let contention = Contention::start(4);
    let until = Instant::now() + Duration::from_secs(10);
    let (mut on_time, mut late) = (0usize, 0usize);
    let mut contradictions = Vec::new();
    while Instant::now() < until && on_time + late < 600 {
        let Some(event) = next_message(&mut client, Duration::from_millis(500)) else {
            continue;
        };
        if event["type"] != "event" {
            continue; // the stream's hello
        }
        let latency = event["latencyMs"].as_f64().expect("latencyMs");
        let deadline = event["deadlineMs"].as_f64().expect("deadlineMs");
        let contradicts = match event["status"].as_str() {
            Some("on-time") => {
                on_time += 1;
                latency > deadline
            }
            Some("late") => {
                late += 1;
                latency < deadline
            }
            other => panic!("the filter passes on-time and late only, got {other:?}"),
        };
        if contradicts {
            contradictions.push(event);
        }
    }
    drop(contention);
    eprintln!(
        "{on_time} on-time, {late} late, {} contradicting",
        contradictions.len()
    );
    assert!(
        on_time + late >= 100,
        "too few worked-on outcomes to judge: {on_time} on-time, {late} late"
    );
    assert!(
        contradictions.is_empty(),
        "{} of {} verdicts contradict their latency, e.g. {}",
        contradictions.len(),
        on_time + late,
        contradictions[0]
    );
}

#[test]
fn late_verdicts_report_how_long_after_the_deadline_they_came() {
    // Work of 150 ms against a 100 ms deadline, admitted anyway: every verdict
    // is late, given when the worker wakes at the deadline.
    let server = start(|c| {
        c.rate = 50;
        c.work_ms = 150;
        c.admission = Admission::Off;
    });
    let addr = server.local_addr();
    let mut reported = None;
    common::eventually(Duration::from_secs(20), || {
        let (_, stats) = common::get_json(addr, "/api/stats");
        let late = stats["latencyMs"]["lateAfterDeadlineP99"].as_f64();
        let jitter = stats["generator"]["tickJitterMsP99"].as_f64();
        reported = Some((late, jitter, stats));
        matches!(late, Some(ms) if ms > 0.0)
    });
    let (late, jitter, stats) = reported.expect("a stats reading");
    let late = late.expect("latencyMs.lateAfterDeadlineP99 in the stats");
    // Generous: a busy machine wakes workers late, but not by the work's length.
    assert!(late > 0.0 && late < 50.0, "{stats}");
    let jitter = jitter.expect("generator.tickJitterMsP99 in the stats");
    assert!((0.0..1000.0).contains(&jitter), "{stats}");
}
