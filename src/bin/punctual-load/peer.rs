//! The peer measured beside punctual (`--target nchan`): nginx with the
//! nchan module has no pipeline, so the tool publishes the messages itself,
//! `--rate` a second to the publisher location `--pub`, each a JSON outcome
//! as punctual sends one (the same fields and size; `processedAt` = the
//! moment it is sent), and the clients subscribe on the WebSocket location
//! `--sub-path`. Delivery is then receive − publish, as it is receive −
//! verdict for punctual: both start where the server has the message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::clients::now_ms;
use crate::daemon::http_agent;
use crate::report::{PublishReport, round3};

/// What the publisher did.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    /// Posts that got no answer, or an error status.
    failed: AtomicU64,
    /// Posts more than a second behind their schedule when sent.
    late: AtomicU64,
}

/// The publisher thread.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    rate: f64,
    started: Instant,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts publishing `rate` messages a second to `url`.
    pub fn start(url: &str, rate: f64) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (url, thread_stop, thread_counts) =
            (url.to_owned(), Arc::clone(&stop), Arc::clone(&counts));
        let thread = thread::Builder::new()
            .name("publish".into())
            .spawn(move || publish(&url, rate, &thread_stop, &thread_counts))
            .map_err(|e| format!("cannot start the publisher thread: {e}"))?;
        Ok(Publisher {
            stop,
            counts,
            rate,
            started: Instant::now(),
            thread: Some(thread),
        })
    }

    /// Stops publishing; what was sent, and how long it ran.
    pub fn stop(mut self) -> PublishReport {
        self.stop.store(true, Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        PublishReport {
            rate: self.rate,
            seconds: round3(seconds),
            sent: get(&self.counts.sent),
            failed: get(&self.counts.failed),
            late: get(&self.counts.late),
        }
    }
}

/// An outcome as punctual's generator makes one at `--work-ms 1` (same
/// fields, same size, ~230 bytes), decided at `at`: both servers carry the
/// same bytes.
fn outcome(seq: u64, at: f64) -> String {
    let id = uuid::Uuid::new_v4();
    let created = at - 1.0;
    format!(
        r#"{{"type":"event","seq":{seq},"id":"{id}","source":"generator","producer":"generator","createdAt":{created:.3},"deadlineMs":1000,"processedAt":{at:.3},"latencyMs":1.000,"status":"on-time"}}"#
    )
}

/// Publishes message n at start + n / rate, until `stop` is set.
fn publish(url: &str, rate: f64, stop: &AtomicBool, counts: &Counts) {
    let agent = http_agent();
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + period.mul_f64(seq as f64);
        let now = Instant::now();
        if due > now {
            thread::sleep((due - now).min(Duration::from_millis(100)));
            continue;
        }
        if now - due > Duration::from_secs(1) {
            counts.late.fetch_add(1, Ordering::Relaxed);
        }
        seq += 1;
        let body = outcome(seq, now_ms());
        let sent = agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(&body);
        // The answer is read whole, so the connection is kept for the next.
        let published = sent.is_ok_and(|mut response| {
            response.status().is_success() && response.body_mut().read_to_vec().is_ok()
        });
        let count = if published {
            &counts.sent
        } else {
            &counts.failed
        };
        count.fetch_add(1, Ordering::Relaxed);
    }
}
