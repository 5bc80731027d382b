//! A verdict never contradicts its own numbers: an `on-time` outcome has
//! `latencyMs ≤ deadlineMs` and a `late` one `latencyMs ≥ deadlineMs`, even
//! when the CPU is so contended that workers wake up late.

mod common;

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
