//! Live meters: lock-free counts the stages update as they work (busy
//! workers, work time, generator lag, open connections, accept errors) and
//! the generator's recent wake-up delays, read by the hub once a second.
//!
//! Owns: [`Meters`], [`RecentDurations`] and the microsecond histograms the
//! stats share. Reads and writes no channel.
//!
//! Must not know: what the stages do.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram records exactly; beyond it values are clamped.
pub(super) const MAX_TRACKED_LATENCY_US: u64 = 3_600_000_000;

/// Live meters updated by the stages that own them: atomics, and one
/// mutex for the tick jitter, taken once per generator wake.
#[derive(Debug, Default)]
pub struct Meters {
    /// Workers currently running work.
    pub busy_workers: AtomicUsize,
    /// Total time workers spent running work, in microseconds.
    pub work_micros: AtomicU64,
    /// Generator ticks skipped because it fell behind.
    pub lag_ticks: AtomicU64,
    /// Open HTTP connections, clients included (read from the front once a second).
    pub connections: AtomicUsize,
    /// Failed `accept` calls, e.g. with descriptors exhausted.
    pub accept_errors: AtomicU64,
    /// How late the generator woke for its ticks, in the current window.
    pub tick_jitter: RecentDurations,
}

/// Durations recorded by one stage and taken as a p99 by the snapshot, which
/// starts the next window. Recorded at most once per generator wake, so the
/// lock is taken a few thousand times a second at most, never per event.
#[derive(Debug)]
pub struct RecentDurations {
    micros: Mutex<Histogram<u64>>,
}

impl Default for RecentDurations {
    fn default() -> Self {
        RecentDurations {
            micros: Mutex::new(micros_histogram()),
        }
    }
}

impl RecentDurations {
    /// Adds one duration to the current window.
    pub fn record(&self, took: Duration) {
        record_micros(&mut self.lock(), took);
    }

    /// The 99th percentile of the window in ms (0 when empty); empties it.
    pub fn take_p99_ms(&self) -> f64 {
        let mut micros = self.lock();
        let p99 = p99_ms(&micros);
        micros.reset();
        p99
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        self.micros.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, 3)
        .expect("constant histogram bounds are valid")
}

/// Records `took` in whole microseconds, at least 1 (the histogram's floor) and
/// clamped at its ceiling.
pub(super) fn record_micros(histogram: &mut Histogram<u64>, took: Duration) {
    let micros = crate::time::whole_micros(took);
    histogram.saturating_record(micros.clamp(1, MAX_TRACKED_LATENCY_US));
}

pub(super) fn p99_ms(histogram: &Histogram<u64>) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(0.99) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_durations_give_the_p99_of_their_window_and_start_afresh() {
        let recent = RecentDurations::default();
        assert_eq!(recent.take_p99_ms(), 0.0, "an empty window");
        for n in 1..=100u64 {
            recent.record(Duration::from_micros(n * 100));
        }
        let p99 = recent.take_p99_ms();
        assert!((9.8..=9.91).contains(&p99), "{p99}");
        assert_eq!(recent.take_p99_ms(), 0.0, "taken windows are emptied");
    }
}
