//! The hub: the single point every outcome passes through.
//!
//! Owns: the sequence counter (`seq` 1, 2, 3, … per run), the statistics
//! [`Window`], and the latest stats snapshot served at `/api/stats`.
//!
//! Channels: reads the outcome channel (written by the intake and the workers);
//! writes [`Broadcast`]s — outcomes and stats already serialised — to the fan-out
//! channel. That channel is the boundary between producing outcomes and fanning
//! them out: anything that can write serialised outcomes into it (another node,
//! later) can feed the dashboards.
//!
//! Must not know: clients, transports, sockets.

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::delivery::{Broadcast, Kind};
use crate::ops::faults::{Faults, Role};
use crate::ops::health::{Heartbeats, Stage};
use crate::pipeline::event::Outcome;
use crate::pipeline::overload::State;
use crate::pipeline::stats::{Readings, Snapshot};
use crate::pipeline::window::Window;
use crate::time::WallClock;

/// Capacity of the outcome channel into the hub. The hub only serialises and
/// counts, so it is full only if the hub thread is starved; producers then wait
/// (showing as generator lag) rather than lose an outcome.
pub const OUTCOME_CHANNEL_CAPACITY: usize = 16 * 1024;

/// Capacity of the channel from the hub to the fan-out. Full means the fan-out
/// thread is starved; the hub then waits, as above — never a silent loss.
pub const BROADCAST_CHANNEL_CAPACITY: usize = 16 * 1024;

/// How often a stats snapshot is taken.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The latest stats snapshot, shared with the HTTP front.
#[derive(Default)]
pub struct LatestStats {
    latest: Mutex<Option<(Arc<Snapshot>, Bytes)>>,
}

impl LatestStats {
    /// The latest snapshot and its JSON, once the first one is taken.
    pub fn get(&self) -> Option<(Arc<Snapshot>, Bytes)> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes a snapshot and its JSON (the hub; on an edge, the feed).
    pub fn set(&self, snapshot: Arc<Snapshot>, json: Bytes) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some((snapshot, json));
    }
}

/// Everything the hub thread needs.
pub struct Hub {
    /// Outcomes to sequence and count.
    pub outcomes: Receiver<Outcome>,
    /// Where serialised messages go.
    pub broadcast: Sender<Broadcast>,
    /// Epoch conversion for the wire.
    pub clock: WallClock,
    /// Reads the rest of the system for a snapshot.
    pub readings: Box<dyn Fn() -> Readings + Send>,
    /// Where the latest snapshot is published.
    pub latest: Arc<LatestStats>,
    /// Seconds between summary log lines.
    pub log_interval: Duration,
    /// Deadline in force at start: the metrics histogram's buckets sit around it.
    pub deadline: Duration,
    /// Where the hub reports that it is turning.
    pub health: Arc<Heartbeats>,
    /// Where the hub's own death is reported (it is an essential stage).
    pub faults: Arc<Faults>,
}

/// What the log says about the snapshots: a summary every `--log-interval`,
/// client-count changes, and overload entered and left (never per event).
struct Reports {
    log_interval: Duration,
    next_summary: Instant,
    next_client_line: Instant,
    clients_reported: usize,
    overloaded: bool,
    calm_snapshots: u32,
    overloaded_since: Instant,
}

/// Calm snapshots in a row before an overload counts as over (no flapping).
const CALM_TO_RECOVER: u32 = 5;
/// Least time between two client-count lines.
const CLIENT_LINE_EVERY: Duration = Duration::from_secs(10);

impl Reports {
    fn new(now: Instant, log_interval: Duration) -> Self {
        Reports {
            log_interval,
            next_summary: now + log_interval,
            next_client_line: now,
            clients_reported: 0,
            overloaded: false,
            calm_snapshots: 0,
            overloaded_since: now,
        }
    }

    fn after(&mut self, snapshot: &Snapshot, now: Instant) {
        if now >= self.next_summary {
            log::info!("{}", snapshot.summary_line());
            self.next_summary = now + self.log_interval;
        }
        let clients = snapshot.clients.connected;
        if clients != self.clients_reported && now >= self.next_client_line {
            log::info!("clients: {} → {clients}", self.clients_reported);
            self.clients_reported = clients;
            self.next_client_line = now + CLIENT_LINE_EVERY;
        }
        self.watch_overload(snapshot, now);
    }

    fn watch_overload(&mut self, snapshot: &Snapshot, now: Instant) {
        let r = &snapshot.rates;
        // The journal follows the verdict operators see (`health`, judged
        // once, over five windows), so the log and the page use one rule (the
        // journal says "over" only after CALM_TO_RECOVER calm snapshots).
        let overloaded = snapshot.health.state == State::Overloaded;
        match (self.overloaded, overloaded) {
            (false, true) => {
                self.overloaded = true;
                self.overloaded_since = now;
                log::warn!(
                    "overloaded: {}; {:.0} late/s, {:.0} failed/s, {:.0} dropped/s (queue-full {:.0}, \
                     expired {:.0}, infeasible {:.0}) against {:.0} on-time/s; queue {}/{}; U = {:.2}",
                    snapshot.health.reasons.join("; "),
                    r.late,
                    r.failed,
                    r.dropped,
                    r.queue_full,
                    r.expired,
                    r.infeasible,
                    r.on_time,
                    snapshot.queue.depth,
                    snapshot.queue.capacity,
                    snapshot.schedulability.utilisation,
                );
            }
            (true, true) => self.calm_snapshots = 0,
            (true, false) => {
                self.calm_snapshots += 1;
                if self.calm_snapshots >= CALM_TO_RECOVER {
                    self.overloaded = false;
                    self.calm_snapshots = 0;
                    let lasted = now
                        .saturating_duration_since(self.overloaded_since)
                        .as_secs();
                    log::warn!(
                        "overload over after {lasted} s: {:.0} on-time/s, not overloaded for {CALM_TO_RECOVER} s",
                        r.on_time
                    );
                }
            }
            (false, false) => {}
        }
    }
}

impl Hub {
    /// Starts the hub thread. It ends when every outcome sender is gone and the
    /// channel is drained, after publishing a final snapshot. A panic in it
    /// is an essential stage's death (see [`Faults::run_essential`]).
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("hub".into()).spawn(move || {
            let faults = Arc::clone(&self.faults);
            faults.run_essential(Role::Hub, || self.run());
        })
    }

    fn run(self) {
        let started = Instant::now();
        let mut window = Window::new(started, self.deadline);
        let mut seq = 0u64;
        let mut reports = Reports::new(started, self.log_interval);
        let mut next_snapshot = started + STATS_INTERVAL;
        self.publish_snapshot(&mut window, seq);
        loop {
            // The snapshot is due by the clock, not by a tick channel, so a
            // steady stream of outcomes can never starve it.
            match self.outcomes.recv_deadline(next_snapshot) {
                Ok(outcome) => {
                    self.faults.injection_point(Role::Hub);
                    seq += 1;
                    window.record(&outcome);
                    let json = Bytes::from(outcome.to_wire(seq, &self.clock));
                    log::debug!(
                        "outcome seq={seq} id={} status={}",
                        outcome.event.id,
                        outcome.status.name()
                    );
                    let status = outcome.status.name();
                    self.send(Broadcast {
                        kind: Kind::Event,
                        seq,
                        status,
                        json,
                    });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.health.beat(Stage::Hub);
            let now = Instant::now();
            if now >= next_snapshot {
                let snapshot = self.publish_snapshot(&mut window, seq);
                reports.after(&snapshot, now);
                next_snapshot = (next_snapshot + STATS_INTERVAL).max(now);
            }
        }
        let last = self.publish_snapshot(&mut window, seq);
        log::info!("final: {}", last.summary_line());
    }

    fn publish_snapshot(&self, window: &mut Window, seq: u64) -> Arc<Snapshot> {
        let mut snapshot = window.snapshot(Instant::now(), (self.readings)());
        snapshot.clients.backlog = self.broadcast.len();
        let snapshot = Arc::new(snapshot);
        // A snapshot holds only numbers and strings: serialising cannot fail.
        let json = Bytes::from(serde_json::to_vec(&*snapshot).unwrap_or_default());
        self.latest.set(Arc::clone(&snapshot), json.clone());
        self.send(Broadcast {
            kind: Kind::Stats,
            seq,
            status: "",
            json,
        });
        snapshot
    }

    fn send(&self, message: Broadcast) {
        // The fan-out ends only after the hub; an error here means shutdown.
        let _ = self.broadcast.send(message);
    }
}
