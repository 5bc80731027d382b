//! Time as data. Deadlines and schedules use the monotonic [`Instant`]; the wire
//! carries milliseconds since the Unix epoch. [`WallClock`] is the one place
//! that converts between the two, from a single anchor taken at start, so every
//! epoch number of a run is consistent with every other and immune to the
//! system clock being stepped while the daemon runs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Converts monotonic instants to epoch milliseconds and back.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    anchor: Instant,
    anchor_epoch_ms: f64,
}

impl WallClock {
    /// Anchors the conversion at this moment.
    pub fn new() -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        WallClock::anchored(Instant::now(), epoch.as_secs_f64() * 1000.0)
    }

    /// A clock whose `anchor` instant reads `anchor_epoch_ms` (tests inject this).
    pub fn anchored(anchor: Instant, anchor_epoch_ms: f64) -> Self {
        WallClock {
            anchor,
            anchor_epoch_ms,
        }
    }

    /// Milliseconds since the Unix epoch at `t`, with sub-millisecond precision.
    pub fn epoch_ms(&self, t: Instant) -> f64 {
        if t >= self.anchor {
            self.anchor_epoch_ms + millis(t - self.anchor)
        } else {
            self.anchor_epoch_ms - millis(self.anchor - t)
        }
    }

    /// The instant that reads `epoch_ms`, or `None` when it lies before the
    /// earliest instant the platform can represent.
    pub fn instant_at(&self, epoch_ms: f64) -> Option<Instant> {
        let offset_ms = epoch_ms - self.anchor_epoch_ms;
        let offset = Duration::try_from_secs_f64(offset_ms.abs() / 1000.0).ok()?;
        if offset_ms >= 0.0 {
            self.anchor.checked_add(offset)
        } else {
            self.anchor.checked_sub(offset)
        }
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

/// A duration in fractional milliseconds, the unit of every duration on the wire.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A duration in whole microseconds, rounded down, saturating. Unlike
/// `Duration::as_micros` it needs no 128-bit division: it runs several times
/// for every outcome.
pub fn whole_micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_convert_to_epoch_ms_and_back() {
        let anchor = Instant::now();
        let clock = WallClock::anchored(anchor, 1_000_000.0);
        let later = anchor + Duration::from_micros(1500);
        assert_eq!(clock.epoch_ms(later), 1_000_001.5);
        let back = clock.instant_at(1_000_001.5).expect("representable");
        assert!(back.max(later) - back.min(later) < Duration::from_micros(1));
    }

    #[test]
    fn an_instant_before_the_anchor_reads_earlier() {
        let anchor = Instant::now() + Duration::from_secs(10);
        let clock = WallClock::anchored(anchor, 50_000.0);
        let before = anchor - Duration::from_millis(250);
        assert_eq!(clock.epoch_ms(before), 49_750.0);
        assert_eq!(clock.instant_at(49_750.0), Some(before));
    }
}
