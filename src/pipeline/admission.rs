//! Admission: whether an event a worker has just taken can still finish in
//! time ([`admit`]), predicted by the work-time estimator
//! ([`WorkEstimator`]) from what was measured before — never from the
//! duration the event is about to get.
//!
//! Owns: the estimator's samples (a mutex shared by the worker threads).
//! Reads and writes no channel.
//!
//! Must not know: queues, verdicts beyond the drop it advises, clients.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a worker does with an event it has just taken from the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// The deadline has passed: drop it, do no work.
    Expired,
    /// The predicted work does not fit in the time left: drop it, do no work.
    Infeasible,
    /// Start the work; the deadline is `time_left` away.
    Start {
        /// Time from now until the absolute deadline.
        time_left: Duration,
    },
}

/// The admission decision at `now` for an event due at `deadline_at`.
/// `predicted` is the expected work time, or `None` when admission control is off.
pub fn admit(now: Instant, deadline_at: Instant, predicted: Option<Duration>) -> Admit {
    let Some(time_left) = deadline_at
        .checked_duration_since(now)
        .filter(|d| !d.is_zero())
    else {
        return Admit::Expired;
    };
    match predicted {
        Some(work) if work > time_left => Admit::Infeasible,
        _ => Admit::Start { time_left },
    }
}

/// Predicts how long configured work takes: the 90th percentile of the last
/// [`WorkEstimator::WINDOW`] measured durations no older than
/// [`WorkEstimator::MAX_AGE`].
///
/// - With fewer than [`WorkEstimator::MIN_SAMPLES`] fresh measurements, it
///   answers the 90th percentile of the configured distribution,
///   `work + 0.9 × jitter`.
/// - Measurements age out. Only admitted work is measured, so a pessimistic
///   estimate (say, learnt while the machine was starved) would otherwise
///   refuse all work and never hear otherwise; once its measurements are
///   stale it falls back to the seed and learns again.
/// - A run abandoned at its deadline is recorded as the time it did run, a lower
///   bound of its true length; the estimate can only err towards admitting.
/// - When the configured work or jitter changes, the history is discarded.
/// - It never looks at the duration an event is about to get: the decision
///   must rely on what the worker could know before starting.
#[derive(Debug)]
pub struct WorkEstimator {
    configured: (Duration, Duration),
    samples: VecDeque<(Instant, Duration)>,
    cached_p90: Option<Duration>,
    since_refresh: usize,
}

impl WorkEstimator {
    /// Measured durations the percentile is taken over.
    pub const WINDOW: usize = 256;
    /// Fresh measurements needed before they replace the configured seed.
    pub const MIN_SAMPLES: usize = 20;
    /// Measurements older than this no longer count.
    pub const MAX_AGE: Duration = Duration::from_secs(5);
    /// The percentile is recomputed after this many new samples (selecting from 256
    /// values on every event would be waste).
    const REFRESH_EVERY: usize = 16;

    /// An estimator seeded from configured `work` and `jitter`.
    pub fn new(work: Duration, jitter: Duration) -> Self {
        WorkEstimator {
            configured: (work, jitter),
            samples: VecDeque::with_capacity(Self::WINDOW),
            cached_p90: None,
            since_refresh: 0,
        }
    }

    /// The predicted work time at `now` for the configuration `(work, jitter)`.
    pub fn predict(&mut self, now: Instant, work: Duration, jitter: Duration) -> Duration {
        if self.configured != (work, jitter) {
            *self = WorkEstimator::new(work, jitter);
        }
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > Self::MAX_AGE)
        {
            self.samples.pop_front();
            self.cached_p90 = None;
        }
        if self.samples.len() < Self::MIN_SAMPLES {
            return seed(work, jitter);
        }
        *self
            .cached_p90
            .get_or_insert_with(|| percentile_90(&self.samples))
    }

    /// Records a work duration measured at `now`.
    pub fn observe(&mut self, now: Instant, took: Duration) {
        if self.samples.len() == Self::WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back((now, took));
        self.since_refresh += 1;
        if self.since_refresh >= Self::REFRESH_EVERY || self.samples.len() <= Self::MIN_SAMPLES {
            self.cached_p90 = None;
            self.since_refresh = 0;
        }
    }
}

fn seed(work: Duration, jitter: Duration) -> Duration {
    work + jitter.mul_f64(0.9)
}

/// The 90th percentile (nearest rank) by selection: only the rank is needed,
/// and a full sort of the window on every refresh was the costliest step of an
/// event at high rates.
fn percentile_90(samples: &VecDeque<(Instant, Duration)>) -> Duration {
    let mut took: Vec<Duration> = samples.iter().map(|(_, took)| *took).collect();
    let rank = (took.len() * 9).div_ceil(10).max(1) - 1;
    *took.select_nth_unstable(rank).1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_event_past_its_deadline_is_expired() {
        let now = Instant::now();
        assert_eq!(admit(now, now - 5 * MS, Some(10 * MS)), Admit::Expired);
        assert_eq!(admit(now, now, None), Admit::Expired);
    }

    #[test]
    fn work_longer_than_the_time_left_is_infeasible() {
        let now = Instant::now();
        assert_eq!(admit(now, now + 40 * MS, Some(50 * MS)), Admit::Infeasible);
    }

    #[test]
    fn work_that_fits_starts_with_the_time_left() {
        let now = Instant::now();
        assert_eq!(
            admit(now, now + 100 * MS, Some(50 * MS)),
            Admit::Start {
                time_left: 100 * MS
            }
        );
    }

    #[test]
    fn without_admission_control_any_unexpired_event_starts() {
        let now = Instant::now();
        assert_eq!(
            admit(now, now + 10 * MS, None),
            Admit::Start { time_left: 10 * MS }
        );
    }

    #[test]
    fn the_estimator_follows_measured_work() {
        let now = Instant::now();
        let mut est = WorkEstimator::new(50 * MS, Duration::ZERO);
        for n in 1..=100u32 {
            est.observe(now, n * MS);
        }
        // p90 of 1..=100 ms is 90 ms.
        assert_eq!(est.predict(now, 50 * MS, Duration::ZERO), 90 * MS);
    }

    #[test]
    fn the_estimator_forgets_its_history_when_the_configuration_changes() {
        let now = Instant::now();
        let mut est = WorkEstimator::new(50 * MS, Duration::ZERO);
        for _ in 0..100 {
            est.observe(now, 80 * MS);
        }
        assert_eq!(est.predict(now, 50 * MS, Duration::ZERO), 80 * MS);
        assert_eq!(est.predict(now, 10 * MS, Duration::ZERO), 10 * MS);
    }

    #[test]
    fn a_pessimistic_estimate_goes_stale_so_admission_cannot_lock_up() {
        let then = Instant::now();
        let mut est = WorkEstimator::new(50 * MS, Duration::ZERO);
        // Learnt while the machine was starved: work seemed to take 120 ms.
        for _ in 0..100 {
            est.observe(then, 120 * MS);
        }
        assert_eq!(est.predict(then, 50 * MS, Duration::ZERO), 120 * MS);
        // No work was admitted since, so nothing new was measured.
        let later = then + WorkEstimator::MAX_AGE + MS;
        assert_eq!(est.predict(later, 50 * MS, Duration::ZERO), 50 * MS);
    }
}
