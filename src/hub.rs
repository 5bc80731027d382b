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
use crossbeam_channel::{Receiver, Sender, select_biased, tick};

use crate::event::Outcome;
use crate::stats::{Readings, Snapshot, Window};
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

/// What a broadcast message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One outcome (`{"type":"event",…}`).
    Event,
    /// A stats snapshot (`{"type":"stats",…}`), for clients that asked for stats.
    Stats,
    /// Outcomes a resuming client asked for that are no longer retained
    /// (`{"type":"gap","from":…,"to":…}`); made by the fan-out, per client.
    Gap,
}

/// One message for the dashboards, serialised once and shared by every client.
#[derive(Clone, Debug)]
pub struct Broadcast {
    /// Event or stats.
    pub kind: Kind,
    /// The outcome's sequence number; for stats, the last outcome's.
    pub seq: u64,
    /// The outcome's status name (`on-time`, `late`, `dropped`), for filters;
    /// empty for other kinds.
    pub status: &'static str,
    /// The JSON text.
    pub json: Bytes,
}

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

    fn set(&self, snapshot: Arc<Snapshot>, json: Bytes) {
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
}

impl Hub {
    /// Starts the hub thread. It ends when every outcome sender is gone and the
    /// channel is drained, after publishing a final snapshot.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("hub".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        let started = Instant::now();
        let mut window = Window::new(started);
        let mut seq = 0u64;
        let mut next_log = started + self.log_interval;
        let stats_tick = tick(STATS_INTERVAL);
        loop {
            // Outcomes first: a snapshot waits for the outcomes already queued.
            select_biased! {
                recv(self.outcomes) -> outcome => match outcome {
                    Ok(outcome) => {
                        seq += 1;
                        window.record(&outcome);
                        let json = Bytes::from(outcome.to_wire(seq, &self.clock));
                        log::debug!("outcome seq={seq} id={} status={}", outcome.event.id, outcome.status.name());
                        self.send(Broadcast { kind: Kind::Event, seq, status: outcome.status.name(), json });
                    }
                    Err(_) => break,
                },
                recv(stats_tick) -> _ => {
                    let snapshot = self.publish_snapshot(&mut window, seq);
                    let now = Instant::now();
                    if now >= next_log {
                        log::info!("{}", snapshot.summary_line());
                        next_log = now + self.log_interval;
                    }
                }
            }
        }
        let last = self.publish_snapshot(&mut window, seq);
        log::info!("final: {}", last.summary_line());
    }

    fn publish_snapshot(&self, window: &mut Window, seq: u64) -> Arc<Snapshot> {
        let snapshot = Arc::new(window.snapshot(Instant::now(), (self.readings)()));
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
