//! Health: heartbeats of the stages whose silence means the daemon is stuck.
//!
//! Owns the [`Heartbeats`]: the generator beats on every wake (it wakes at
//! least every 100 ms, even at rate 0), the hub on every loop turn (at least
//! once a second, for the stats tick), and the HTTP self-probe on every
//! answered probe. `/healthz`, `/readyz` and the systemd watchdog read them.
//! A stage that died (see `faults`) is recorded here too and makes the daemon
//! not live at once, without waiting for its heartbeat to go stale.
//! Reads and writes no channel.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stage that reports it is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The generator thread.
    Generator,
    /// The hub thread.
    Hub,
    /// The HTTP front, as seen by its own loopback probe.
    Front,
    /// An edge's feed from Redis (it turns every 500 ms while Redis answers,
    /// and within 9 s while it hangs).
    Feed,
}

/// Silence after which a stage counts as stalled.
const GENERATOR_SILENCE: Duration = Duration::from_secs(3);
const HUB_SILENCE: Duration = Duration::from_secs(3);
/// The probe runs every second with a 2 s timeout.
const FRONT_SILENCE: Duration = Duration::from_secs(5);
/// Longer than the feed's worst turn while Redis hangs (a connect, a
/// command timeout and the longest backoff): a hung Redis degrades an edge,
/// it does not make it look dead.
const FEED_SILENCE: Duration = Duration::from_secs(10);

/// The stages whose silence makes a node not live: a node with a pipeline
/// watches its generator and hub; an edge has neither, only its feed.
const PIPELINE_STAGES: &[(Stage, Duration)] = &[
    (Stage::Generator, GENERATOR_SILENCE),
    (Stage::Hub, HUB_SILENCE),
];
const EDGE_STAGES: &[(Stage, Duration)] = &[(Stage::Feed, FEED_SILENCE)];

/// When each stage last reported, in ms since start.
#[derive(Debug)]
pub struct Heartbeats {
    started: Instant,
    watched: &'static [(Stage, Duration)],
    generator: AtomicU64,
    feed: AtomicU64,
    hub: AtomicU64,
    front: AtomicU64,
    /// When accepting last failed for want of descriptors, in ms since start (0: never).
    out_of_descriptors: AtomicU64,
    stopping: AtomicBool,
    /// `--work pull` with no worker connected: events can only expire.
    no_workers: AtomicBool,
    /// Why the daemon can no longer work (a stage died), once it is so.
    failed: Mutex<Option<String>>,
    /// Why the node serves, but not all it should (Redis unreachable), while it is so.
    degraded: Mutex<Option<String>>,
    /// An edge that has not yet read the processor's run: it has nothing
    /// to serve a resuming client, not even the run's epoch.
    awaiting_feed: AtomicBool,
    /// Why a processor is waiting as a standby, while it is: it generates
    /// nothing (its generator is not watched) and takes no events.
    standby: Mutex<Option<String>>,
}

/// After the last accept that failed for want of descriptors, the daemon
/// counts as not ready for this long.
const DESCRIPTORS_RECOVERY: Duration = Duration::from_secs(2);

impl Heartbeats {
    /// Every stage counts as just seen; the generator and hub are watched.
    pub fn new() -> Self {
        Heartbeats::watching(PIPELINE_STAGES)
    }

    /// An edge's heartbeats: its feed is watched, as it has no pipeline.
    pub fn edge() -> Self {
        let health = Heartbeats::watching(EDGE_STAGES);
        health.awaiting_feed.store(true, Ordering::Relaxed);
        health
    }

    fn watching(watched: &'static [(Stage, Duration)]) -> Self {
        Heartbeats {
            started: Instant::now(),
            watched,
            generator: AtomicU64::new(0),
            feed: AtomicU64::new(0),
            hub: AtomicU64::new(0),
            front: AtomicU64::new(0),
            out_of_descriptors: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            no_workers: AtomicBool::new(false),
            failed: Mutex::new(None),
            degraded: Mutex::new(None),
            awaiting_feed: AtomicBool::new(false),
            standby: Mutex::new(None),
        }
    }

    fn cell(&self, stage: Stage) -> &AtomicU64 {
        match stage {
            Stage::Generator => &self.generator,
            Stage::Hub => &self.hub,
            Stage::Front => &self.front,
            Stage::Feed => &self.feed,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records that `stage` is alive now.
    pub fn beat(&self, stage: Stage) {
        self.cell(stage).store(self.now_ms(), Ordering::Relaxed);
    }

    /// Records that a connection could not be accepted for want of descriptors.
    pub fn out_of_descriptors(&self) {
        self.out_of_descriptors
            .store(self.now_ms().max(1), Ordering::Relaxed);
    }

    /// Marks the daemon as shutting down: it is no longer ready.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Records whether the daemon is waiting for a worker to connect to
    /// `/api/work` (`--work pull` with none connected).
    pub fn set_no_workers(&self, none: bool) {
        self.no_workers.store(none, Ordering::Relaxed);
    }

    /// Records why the node is degraded (`None`: it no longer is). A
    /// degraded node stays ready: see `/readyz` in ARCHITECTURE.md.
    pub fn set_degraded(&self, reason: Option<String>) {
        *self.degraded.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Why the node is degraded, while it is.
    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records that an edge has read the processor's run from Redis.
    pub fn set_fed(&self) {
        self.awaiting_feed.store(false, Ordering::Relaxed);
    }

    /// Whether this node has something to stream: always, but for an edge
    /// before its first read from Redis.
    pub fn is_fed(&self) -> bool {
        !self.awaiting_feed.load(Ordering::Relaxed)
    }

    /// Records why this processor is a standby (`None`: it became active,
    /// and its generator starts now, so its silence counts from now).
    pub fn set_standby(&self, reason: Option<String>) {
        if reason.is_none() {
            self.beat(Stage::Generator);
        }
        *self.standby.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Why this processor is a standby, while it is.
    pub fn standby(&self) -> Option<String> {
        self.standby
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records that a stage died: the daemon is not live from now on.
    pub fn fail(&self, reason: String) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert(reason);
    }

    /// Why the daemon can no longer work, once it is so.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn silent(&self, stage: Stage, limit: Duration) -> Option<String> {
        let since = self
            .now_ms()
            .saturating_sub(self.cell(stage).load(Ordering::Relaxed));
        (since > limit.as_millis() as u64)
            .then(|| format!("{stage:?} silent for {since} ms").to_lowercase())
    }

    /// Liveness: the pipeline's own threads are turning.
    pub fn live(&self) -> Result<(), String> {
        if let Some(reason) = self.failure() {
            return Err(reason);
        }
        let standby = self.standby().is_some();
        let stalled: Vec<String> = self
            .watched
            .iter()
            .filter(|&&(stage, _)| !(standby && stage == Stage::Generator))
            .filter_map(|&(stage, limit)| self.silent(stage, limit))
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled.join(", "))
        }
    }

    /// What the systemd watchdog asks: live, and the HTTP front answers its
    /// own probe. Running out of descriptors is not a reason to restart —
    /// the front waits it out and keeps its clients — so it is not counted here.
    pub fn alive(&self) -> Result<(), String> {
        self.live()?;
        match self.silent(Stage::Front, FRONT_SILENCE) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Readiness: alive, new connections can be accepted, work can be done
    /// (with `--work pull`, a worker is connected), and not stopping.
    pub fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        self.alive()?;
        let last = self.out_of_descriptors.load(Ordering::Relaxed);
        if last > 0 && self.now_ms().saturating_sub(last) < DESCRIPTORS_RECOVERY.as_millis() as u64
        {
            return Err("out of file descriptors: new connections are refused".into());
        }
        if !self.is_fed() {
            return Err("an edge waiting for its first read from Redis".into());
        }
        if let Some(reason) = self.standby() {
            return Err(reason);
        }
        if self.no_workers.load(Ordering::Relaxed) {
            return Err("no workers connected to /api/work: events wait and expire".into());
        }
        Ok(())
    }
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_daemon_is_live_and_ready() {
        let beats = Heartbeats::new();
        assert_eq!(beats.live(), Ok(()));
        assert_eq!(beats.ready(), Ok(()));
    }

    #[test]
    fn a_silent_stage_is_named() {
        let beats = Heartbeats::new();
        beats.hub.store(0, Ordering::Relaxed);
        let later = Heartbeats {
            started: beats.started - Duration::from_secs(10),
            ..Heartbeats::new()
        };
        later.beat(Stage::Generator);
        let reason = later.live().expect_err("hub silent for 10 s");
        assert!(reason.contains("hub"), "{reason}");
        assert!(!reason.contains("generator"), "{reason}");
    }

    #[test]
    fn a_daemon_without_pull_workers_is_live_but_not_ready() {
        let beats = Heartbeats::new();
        beats.set_no_workers(true);
        let reason = beats.ready().expect_err("no workers");
        assert!(reason.contains("no workers"), "{reason}");
        assert_eq!(beats.live(), Ok(()));
        beats.set_no_workers(false);
        assert_eq!(beats.ready(), Ok(()));
    }

    /// What the watchdog asks ([`Heartbeats::alive`]): a front deaf to its
    /// own probe for over 5 s withholds it; running out of descriptors
    /// costs readiness for 2 s, never the watchdog.
    #[test]
    fn the_watchdog_needs_the_front_to_answer_its_probe_but_not_spare_descriptors() {
        let ten_seconds_in = Heartbeats {
            started: Instant::now() - Duration::from_secs(10),
            ..Heartbeats::new()
        };
        ten_seconds_in.beat(Stage::Generator);
        ten_seconds_in.beat(Stage::Hub);
        assert_eq!(ten_seconds_in.live(), Ok(()));
        let reason = ten_seconds_in.alive().expect_err("front silent for 10 s");
        assert!(reason.contains("front"), "{reason}");

        let beats = Heartbeats::new();
        beats.out_of_descriptors();
        assert_eq!(beats.alive(), Ok(()), "out of descriptors is not deaf");
        let reason = beats.ready().expect_err("out of descriptors");
        assert!(reason.contains("descriptors"), "{reason}");
        // The last failed accept 1 ms in, looked at over 2 s later.
        let later = Heartbeats {
            started: Instant::now() - DESCRIPTORS_RECOVERY - Duration::from_millis(10),
            out_of_descriptors: AtomicU64::new(1),
            ..Heartbeats::new()
        };
        assert_eq!(later.ready(), Ok(()), "ready again 2 s after the last");
    }

    #[test]
    fn a_stopping_daemon_is_not_ready() {
        let beats = Heartbeats::new();
        beats.set_stopping();
        assert_eq!(beats.ready(), Err("shutting down".into()));
        assert_eq!(beats.live(), Ok(()));
    }
}
