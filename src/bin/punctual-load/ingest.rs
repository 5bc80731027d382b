//! The optional producer: events posted to `POST /api/events` on schedule
//! (`--ingest-rate`, shaped by `--ingest-mix` and `--ingest-work`), and what
//! the daemon answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::http_agent;
use crate::options::{Mix, Options};
use crate::report::{IngestReport, round3};

/// What the producer got back, summed over its posts.
#[derive(Default)]
struct IngestCounts {
    posts: AtomicU64,
    accepted: AtomicU64,
    dropped: AtomicU64,
    /// Events in batches answered with an error status.
    refused: AtomicU64,
    /// Posts that got no answer at all (connection or timeout).
    failed_posts: AtomicU64,
    /// Posts more than a second behind their schedule when sent.
    late_posts: AtomicU64,
}

#[derive(serde::Deserialize)]
struct IngestAnswer {
    accepted: u64,
    dropped: u64,
}

/// What each posted event says: its class (producer and deadline) and work.
#[derive(Clone, Debug, Default)]
struct Shape {
    mix: Option<Mix>,
    work: Option<(f64, f64)>,
}

impl Shape {
    /// A batch of `n` events as a JSON array; `{}` each without a shape.
    fn batch(&self, n: u32) -> String {
        let events: Vec<Value> = (0..n).map(|_| self.event()).collect();
        Value::Array(events).to_string()
    }

    fn event(&self) -> Value {
        let mut event = serde_json::Map::new();
        if let Some(Mix(classes)) = &self.mix {
            let total: f64 = classes.iter().map(|c| c.2).sum();
            let mut pick = fastrand::f64() * total;
            let class = classes
                .iter()
                .find(|c| {
                    pick -= c.2;
                    pick < 0.0
                })
                .unwrap_or(&classes[classes.len() - 1]);
            event.insert("producer".into(), json!(class.0));
            event.insert("deadlineMs".into(), json!(class.1));
        }
        if let Some((low, high)) = self.work {
            let ms = low + fastrand::f64() * (high - low);
            event.insert("workMs".into(), json!((ms * 1000.0).round() / 1000.0));
        }
        Value::Object(event)
    }
}

/// Posts a batch of `batch` events every `batch / rate` seconds, on
/// schedule (tick n is due at start + n·period), until `stop` is set.
fn ingest(
    addr: SocketAddr,
    (rate, batch): (f64, u32),
    shape: &Shape,
    stop: &AtomicBool,
    counts: &IngestCounts,
) {
    let agent = http_agent();
    let url = format!("http://{addr}/api/events");
    // Without a shape, empty objects: each event takes the daemon's default
    // deadline and work, and one body serves every post.
    let shaped = shape.mix.is_some() || shape.work.is_some();
    let fixed = shape.batch(batch);
    let period = Duration::from_secs_f64(f64::from(batch) / rate);
    let start = Instant::now();
    let mut tick: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + period * tick;
        let now = Instant::now();
        if due > now {
            thread::sleep((due - now).min(Duration::from_millis(100)));
            continue;
        }
        if now - due > Duration::from_secs(1) {
            counts.late_posts.fetch_add(1, Ordering::Relaxed);
        }
        tick += 1;
        counts.posts.fetch_add(1, Ordering::Relaxed);
        let body = if shaped {
            shape.batch(batch)
        } else {
            fixed.clone()
        };
        post_batch(&agent, &url, &body, batch, counts);
    }
}

fn post_batch(agent: &ureq::Agent, url: &str, body: &str, batch: u32, counts: &IngestCounts) {
    let answer = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body);
    let Ok(mut response) = answer else {
        counts.failed_posts.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let ok = response.status().is_success();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    match serde_json::from_str::<IngestAnswer>(&text) {
        Ok(answer) if ok => {
            counts
                .accepted
                .fetch_add(answer.accepted, Ordering::Relaxed);
            counts.dropped.fetch_add(answer.dropped, Ordering::Relaxed);
        }
        _ => {
            counts
                .refused
                .fetch_add(u64::from(batch), Ordering::Relaxed);
        }
    }
}

/// The producer thread, if one runs, and what it has counted.
pub struct Producer {
    stop: Arc<AtomicBool>,
    counts: Arc<IngestCounts>,
    started: Instant,
    thread: Option<JoinHandle<()>>,
}

impl Producer {
    /// Starts posting, if `--ingest-rate` asks for it.
    pub fn start(options: &Options, addr: SocketAddr) -> Result<Self, String> {
        let mut producer = Producer {
            stop: Arc::new(AtomicBool::new(false)),
            counts: Arc::new(IngestCounts::default()),
            started: Instant::now(),
            thread: None,
        };
        if !runs(options) {
            return Ok(producer);
        }
        let pace = (options.ingest_rate, options.batch);
        let shape = Shape {
            mix: options.ingest_mix.clone(),
            work: options.ingest_work,
        };
        let (stop, counts) = (Arc::clone(&producer.stop), Arc::clone(&producer.counts));
        let thread = thread::Builder::new()
            .name("ingest".into())
            .spawn(move || ingest(addr, pace, &shape, &stop, &counts))
            .map_err(|e| format!("cannot start the ingest thread: {e}"))?;
        producer.thread = Some(thread);
        Ok(producer)
    }

    /// Stops posting and waits for the last post; answers how long it ran.
    pub fn stop(&mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        seconds
    }

    /// What was posted in `seconds` and answered; `None` without a producer.
    pub fn report(&self, options: &Options, seconds: f64) -> Option<IngestReport> {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let counts = &self.counts;
        runs(options).then(|| IngestReport {
            rate: options.ingest_rate,
            batch: options.batch,
            seconds: round3(seconds),
            posts: get(&counts.posts),
            accepted: get(&counts.accepted),
            dropped: get(&counts.dropped),
            refused: get(&counts.refused),
            failed_posts: get(&counts.failed_posts),
            late_posts: get(&counts.late_posts),
        })
    }
}

fn runs(options: &Options) -> bool {
    options.ingest_rate > 0.0
}
