//! The built-in event source: one thread making events at a fixed rate.
//!
//! Owns: the [`Ticker`] schedule and the generator thread. Writes events into
//! the work queue through the [`Intake`]; reads the stop channel and the live
//! rate and deadline from [`Knobs`]. Counts skipped ticks in the lag gauge.
//!
//! The schedule is drift-free: tick *n* is due at `start + n × period`, however
//! late the thread woke for tick *n − 1*.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::config::Knobs;
use crate::ops::faults::{Faults, Role};
use crate::ops::health::{Heartbeats, Stage};
use crate::pipeline::event::Event;
use crate::pipeline::intake::Intake;
use crate::pipeline::meters::Meters;

/// Most of a schedule emitted in one wake, as a span of time: a generator that
/// fell behind catches up by at most this much and counts the rest as lag.
const MAX_BURST_SPAN: Duration = Duration::from_millis(100);

/// How often an idle generator (rate 0) looks at the rate again (and beats).
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The ticks a wake-up found due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// Events to emit now.
    pub emit: u64,
    /// Ticks passed over because they exceeded the burst cap (lag).
    pub skipped: u64,
}

/// A drift-free fixed-rate schedule.
#[derive(Clone, Debug)]
pub struct Ticker {
    start: Instant,
    rate: u64,
    next: u64,
    max_burst: u64,
}

impl Ticker {
    /// A schedule of `rate` ticks per second whose tick 0 is due at `start`.
    pub fn new(start: Instant, rate: u64) -> Self {
        let per_burst = rate.saturating_mul(MAX_BURST_SPAN.as_millis() as u64) / 1000;
        Ticker {
            start,
            rate,
            next: 0,
            max_burst: per_burst.max(1),
        }
    }

    /// Ticks per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// When the next tick is due.
    pub fn next_due(&self) -> Instant {
        self.start + self.offset_of(self.next)
    }

    /// Takes every tick due at `now`, up to the burst cap; ticks beyond the cap
    /// are skipped and reported, never emitted later as a burst.
    pub fn poll(&mut self, now: Instant) -> Due {
        if self.rate == 0 || now < self.next_due() {
            return Due {
                emit: 0,
                skipped: 0,
            };
        }
        let elapsed = now.duration_since(self.start).as_nanos();
        let last_due = (elapsed * u128::from(self.rate) / 1_000_000_000) as u64;
        let due = last_due + 1 - self.next;
        self.next = last_due + 1;
        let emit = due.min(self.max_burst);
        Due {
            emit,
            skipped: due - emit,
        }
    }

    fn offset_of(&self, tick: u64) -> Duration {
        if self.rate == 0 {
            return Duration::MAX;
        }
        let nanos = u128::from(tick) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Starts the generator thread. It ends when `stop` is disconnected; a panic
/// in it is an essential stage's death (see [`Faults::run_essential`]).
pub fn spawn(
    intake: Intake,
    knobs: Arc<Knobs>,
    meters: Arc<Meters>,
    health: Arc<Heartbeats>,
    stop: Receiver<()>,
    faults: Arc<Faults>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("generator".into())
        .spawn(move || {
            faults.run_essential(Role::Generator, || {
                run(&intake, &knobs, &meters, &health, &stop, &faults)
            })
        })
}

fn run(
    intake: &Intake,
    knobs: &Knobs,
    meters: &Meters,
    health: &Heartbeats,
    stop: &Receiver<()>,
    faults: &Faults,
) {
    let mut ticker = Ticker::new(Instant::now(), knobs.rate());
    loop {
        health.beat(Stage::Generator);
        faults.injection_point(Role::Generator);
        if knobs.rate() != ticker.rate() {
            log::info!("generator rate now {} events/s", knobs.rate());
            ticker = Ticker::new(Instant::now(), knobs.rate());
        }
        let wake_at = if ticker.rate() == 0 {
            Instant::now() + IDLE_POLL
        } else {
            ticker.next_due()
        };
        match stop.recv_deadline(wake_at) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let woke = Instant::now();
        if ticker.rate() > 0 {
            meters
                .tick_jitter
                .record(woke.saturating_duration_since(wake_at));
        }
        let due = ticker.poll(woke);
        if due.skipped > 0 {
            meters.lag_ticks.fetch_add(due.skipped, Ordering::Relaxed);
            log::debug!("generator behind: skipped {} ticks", due.skipped);
        }
        let deadline = knobs.deadline();
        for _ in 0..due.emit {
            intake.submit(Event::generated(Instant::now(), deadline));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ticks_are_due_at_absolute_multiples_of_the_period() {
        let t0 = Instant::now();
        let mut ticker = Ticker::new(t0, 20);
        assert_eq!(ticker.next_due(), t0);
        assert_eq!(
            ticker.poll(t0),
            Due {
                emit: 1,
                skipped: 0
            }
        );
        assert_eq!(ticker.next_due(), t0 + 50 * MS);
        // Waking 30 ms late does not shift the schedule.
        assert_eq!(
            ticker.poll(t0 + 80 * MS),
            Due {
                emit: 1,
                skipped: 0
            }
        );
        assert_eq!(ticker.next_due(), t0 + 100 * MS);
    }

    #[test]
    fn a_wake_before_the_next_tick_emits_nothing() {
        let t0 = Instant::now();
        let mut ticker = Ticker::new(t0, 20);
        ticker.poll(t0);
        assert_eq!(
            ticker.poll(t0 + 49 * MS),
            Due {
                emit: 0,
                skipped: 0
            }
        );
    }

    #[test]
    fn a_high_rate_emits_every_tick_due_at_a_wake() {
        let t0 = Instant::now();
        let mut ticker = Ticker::new(t0, 5000);
        ticker.poll(t0);
        // 1 ms at 5000/s is 5 ticks (0.2 ms apart).
        assert_eq!(
            ticker.poll(t0 + MS),
            Due {
                emit: 5,
                skipped: 0
            }
        );
    }

    #[test]
    fn falling_far_behind_is_capped_and_counted_as_lag() {
        let t0 = Instant::now();
        let mut ticker = Ticker::new(t0, 1000);
        ticker.poll(t0);
        // 2 s behind at 1000/s: 2000 ticks due, at most 100 ms worth (100) emitted.
        let due = ticker.poll(t0 + Duration::from_secs(2));
        assert_eq!(
            due,
            Due {
                emit: 100,
                skipped: 1900
            }
        );
        assert_eq!(ticker.next_due(), t0 + Duration::from_secs(2) + MS);
    }

    #[test]
    fn the_schedule_does_not_drift_over_many_ticks() {
        let t0 = Instant::now();
        let mut ticker = Ticker::new(t0, 20);
        let mut emitted = 0;
        for n in 0..=14_285u32 {
            emitted += ticker.poll(t0 + n * 7 * MS).emit;
        }
        // The last wake is at 99.995 s: ticks 0..=1999 at 20/s are due, each once.
        assert_eq!(emitted, 2000);
    }
}
