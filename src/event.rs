//! The data model: an [`Event`] with its own deadline, and the [`Outcome`] the
//! pipeline gives it. Times are monotonic [`Instant`]s here; they become epoch
//! milliseconds only when an outcome is written to the wire ([`Outcome::to_wire`]).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::time::{WallClock, millis};

/// Where an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The built-in fixed-rate generator.
    Generator,
    /// A producer that posted it over HTTP.
    Ingest,
}

/// A unit of time-sensitive work.
#[derive(Clone, Debug)]
pub struct Event {
    /// Unique id (a UUID v4 unless the producer chose one).
    pub id: String,
    /// Where it came from.
    pub source: Source,
    /// When it was created; its deadline clock starts here, not when work starts.
    pub created: Instant,
    /// How long after `created` it must be done.
    pub deadline: Duration,
    /// Its own simulated work, when it brings one; otherwise the configured work applies.
    pub work: Option<Duration>,
    /// Opaque producer data, carried through to the outcome.
    pub payload: Option<Box<serde_json::value::RawValue>>,
}

impl Event {
    /// A generator event created at `created`, with a fresh UUID v4.
    pub fn generated(created: Instant, deadline: Duration) -> Self {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            source: Source::Generator,
            created,
            deadline,
            work: None,
            payload: None,
        }
    }

    /// The absolute instant by which it must be done.
    pub fn deadline_at(&self) -> Instant {
        self.created + self.deadline
    }
}

/// Why an event was dropped without being worked on to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// The work queue was full when it arrived.
    QueueFull,
    /// Its deadline had already passed when a worker took it.
    Expired,
    /// The time left was shorter than the predicted work.
    Infeasible,
    /// The worker judging it panicked; the event is given up, not lost.
    Panicked,
}

/// The verdict on an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The work was seen finished no later than the deadline.
    OnTime,
    /// The verdict was reached after the deadline; the work was abandoned then.
    Late,
    /// Never worked on to the end, for the given reason.
    Dropped(DropReason),
}

impl Status {
    /// The wire name of the status (`on-time`, `late`, `dropped`).
    pub fn name(self) -> &'static str {
        match self {
            Status::OnTime => "on-time",
            Status::Late => "late",
            Status::Dropped(_) => "dropped",
        }
    }
}

/// An event with its verdict and the moment the verdict was given.
#[derive(Debug)]
pub struct Outcome {
    /// The event judged.
    pub event: Event,
    /// The verdict.
    pub status: Status,
    /// When the verdict was given.
    pub decided: Instant,
}

impl Outcome {
    /// Time from creation to verdict.
    pub fn latency(&self) -> Duration {
        self.decided.saturating_duration_since(self.event.created)
    }

    /// The JSON object sent to every client, with the sequence number the hub gave it.
    pub fn to_wire(&self, seq: u64, clock: &WallClock) -> Vec<u8> {
        let drop_reason = match self.status {
            Status::Dropped(reason) => Some(reason),
            _ => None,
        };
        let created_at = to_microsecond(clock.epoch_ms(self.event.created));
        let latency_ms = to_microsecond(millis(self.latency()));
        let wire = WireEvent {
            kind: "event",
            seq,
            id: &self.event.id,
            source: self.event.source,
            created_at,
            deadline_ms: whole_millis(self.event.deadline),
            // From the two rounded numbers, so that processedAt − createdAt is
            // latencyMs to the microsecond rather than off by one rounding.
            processed_at: to_microsecond(created_at + latency_ms),
            latency_ms,
            status: self.status.name(),
            drop_reason,
            payload: self.event.payload.as_deref(),
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// Milliseconds rounded to the microsecond: the clocks are no finer in
/// practice, and `50.174` reads better than `50.174535999999996`. Rounding is
/// monotonic and a whole-millisecond deadline lies on the microsecond grid, so
/// a latency at or under its deadline never rounds to one above it (nor one
/// above to one under).
fn to_microsecond(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// A deadline on the wire: whole milliseconds, as the flag, `PUT /api/config`
/// and ingest accept it, so every source spells it the same way (`100`).
fn whole_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wire shape of an outcome; field names are a published contract.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    id: &'a str,
    source: Source,
    created_at: f64,
    deadline_ms: u64,
    processed_at: f64,
    latency_ms: f64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<DropReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a serde_json::value::RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_outcome_names_its_reason_on_the_wire() {
        let t0 = Instant::now();
        let clock = WallClock::anchored(t0, 1_000.0);
        let outcome = Outcome {
            event: Event::generated(t0, Duration::from_millis(100)),
            status: Status::Dropped(DropReason::QueueFull),
            decided: t0 + Duration::from_millis(2),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&outcome.to_wire(7, &clock)).expect("valid JSON");
        assert_eq!(v["type"], "event");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["source"], "generator");
        assert_eq!(v["status"], "dropped");
        assert_eq!(v["dropReason"], "queue-full");
        assert_eq!(v["createdAt"], 1_000.0);
        assert_eq!(v["processedAt"], 1_002.0);
        assert_eq!(v["latencyMs"], 2.0);
        assert_eq!(v["deadlineMs"].as_u64(), Some(100), "an integer: {v}");
        assert!(v.get("payload").is_none());
    }

    #[test]
    fn wire_rounding_keeps_latency_on_the_side_of_the_deadline_its_status_says() {
        let t0 = Instant::now();
        // An epoch anchor with sub-microsecond digits, so every time is rounded.
        let clock = WallClock::anchored(t0, 1_763_800_000_123.456_6);
        let deadline = Duration::from_millis(100);
        let ns = Duration::from_nanos(1);
        for (offset, status) in [
            (deadline - ns, Status::OnTime),
            (deadline - 400 * ns, Status::OnTime),
            (deadline, Status::OnTime),
            (deadline + ns, Status::Late),
            (deadline + 600 * ns, Status::Late),
        ] {
            let outcome = Outcome {
                event: Event::generated(t0 + 37 * ns, deadline),
                status,
                decided: t0 + 37 * ns + offset,
            };
            let v: serde_json::Value =
                serde_json::from_slice(&outcome.to_wire(1, &clock)).expect("valid JSON");
            let latency = v["latencyMs"].as_f64().expect("latency");
            let deadline_ms = v["deadlineMs"].as_f64().expect("deadline");
            match status {
                Status::OnTime => assert!(latency <= deadline_ms, "{v}"),
                _ => assert!(latency >= deadline_ms, "{v}"),
            }
            let spanned = v["processedAt"].as_f64().expect("processed")
                - v["createdAt"].as_f64().expect("created");
            assert!((spanned - latency).abs() < 0.000_5, "{v}");
        }
    }

    #[test]
    fn an_on_time_outcome_has_no_drop_reason() {
        let t0 = Instant::now();
        let outcome = Outcome {
            event: Event::generated(t0, Duration::from_millis(100)),
            status: Status::OnTime,
            decided: t0 + Duration::from_millis(50),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&outcome.to_wire(1, &WallClock::new())).expect("valid JSON");
        assert_eq!(v["status"], "on-time");
        assert!(v.get("dropReason").is_none());
    }
}
