//! The data model: an [`Event`] with its own deadline, and the [`Outcome`] the
//! pipeline gives it. Times are monotonic [`Instant`]s here; they become epoch
//! milliseconds only when an outcome is written to the wire ([`Outcome::to_wire`]).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::time::WallClock;

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
    /// When it reached this process: `created`, unless its producer dated
    /// it earlier (`createdAt`); the time between is its transit.
    pub arrived: Instant,
    /// How long after `created` it must be done.
    pub deadline: Duration,
    /// Its own simulated work, when it brings one; otherwise the configured work applies.
    pub work: Option<Duration>,
    /// Opaque producer data, carried through to the outcome.
    pub payload: Option<Box<serde_json::value::RawValue>>,
    /// The producer that sent it, when it named one (at most
    /// `MAX_PRODUCER_CHARS` characters); otherwise its source's name.
    pub producer: Option<Box<str>>,
}

/// Longest producer name.
pub const MAX_PRODUCER_CHARS: usize = 64;
/// Most events one post carries (one request, one batch in the ingest stream).
pub const MAX_BATCH: usize = 10_000;
/// Longest producer-chosen id.
pub const MAX_ID_CHARS: usize = 128;
/// Largest deadline or work, ms (one hour).
pub const MAX_MS: f64 = 3_600_000.0;
/// How far in the future `createdAt` may lie (clock skew allowance).
pub const MAX_FUTURE_MS: f64 = 60_000.0;

/// A producer's name: 1 to [`MAX_PRODUCER_CHARS`] characters, no control
/// characters (it is shown on dashboards and used as a metrics label).
pub fn check_producer(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_PRODUCER_CHARS || name.chars().any(char::is_control) {
        return Err(format!(
            "producer: must be 1 to {MAX_PRODUCER_CHARS} characters without control characters"
        ));
    }
    Ok(())
}

impl Event {
    /// A generator event created at `created`, with a fresh UUID v4.
    pub fn generated(created: Instant, deadline: Duration) -> Self {
        Event {
            id: fresh_id(),
            source: Source::Generator,
            created,
            arrived: created,
            deadline,
            work: None,
            payload: None,
            producer: None,
        }
    }

    /// Who produced it: the name it was given, or `generator` / `ingest`.
    pub fn producer(&self) -> &str {
        self.producer.as_deref().unwrap_or(self.source.name())
    }

    /// The absolute instant by which it must be done.
    pub fn deadline_at(&self) -> Instant {
        self.created + self.deadline
    }
}

thread_local! {
    /// Each thread's id source, seeded once from the operating system.
    static ID_SOURCE: std::cell::RefCell<fastrand::Rng> = std::cell::RefCell::new(seeded_from_os());
}

fn seeded_from_os() -> fastrand::Rng {
    let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
    fastrand::Rng::with_seed(high ^ low.rotate_left(32))
}

/// A fresh UUID v4 (version and variant bits set, the other 122 bits random).
///
/// The bits come from a fast per-thread generator seeded once from the
/// operating system, not from a system call per id: at hundreds of thousands
/// of events a second that call was a measurable share of an event's cost.
/// Ids must be unique, not secret. Within a thread the generator's 64-bit
/// state never repeats in 2^64 draws; two threads' sequences would have to
/// start within the same few billion steps of 2^64 to overlap.
pub(crate) fn fresh_id() -> String {
    let bits = ID_SOURCE.with(|rng| {
        let mut rng = rng.borrow_mut();
        (u128::from(rng.u64(..)) << 64) | u128::from(rng.u64(..))
    });
    let id = uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid();
    let mut text = String::with_capacity(uuid::fmt::Hyphenated::LENGTH);
    text.push_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    text
}

impl Source {
    /// The wire name (`generator`, `ingest`).
    pub fn name(self) -> &'static str {
        match self {
            Source::Generator => "generator",
            Source::Ingest => "ingest",
        }
    }
}

/// Why an event was dropped without being worked on to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// The work queue was full when it arrived.
    QueueFull,
    /// Its deadline passed before any work started: in the queue (the
    /// expiry thread drops it at that instant), or just as a worker took it,
    /// or while it waited for a pull worker with room.
    Expired,
    /// The time left was shorter than the predicted work.
    Infeasible,
    /// The worker judging it panicked; the event is given up, not lost.
    Panicked,
}

impl DropReason {
    /// The wire name (`queue-full`, `expired`, `infeasible`, `panicked`).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue-full",
            DropReason::Expired => "expired",
            DropReason::Infeasible => "infeasible",
            DropReason::Panicked => "panicked",
        }
    }
}

/// The verdict on an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The work was seen finished no later than the deadline.
    OnTime,
    /// The verdict was reached after the deadline; the work was abandoned then.
    Late,
    /// The worker it was handed to (`--work http` or `pull`) answered with an
    /// error before the deadline; the outcome's `error` says which.
    Failed,
    /// Never worked on to the end, for the given reason.
    Dropped(DropReason),
}

impl Status {
    /// The wire name of the status (`on-time`, `late`, `failed`, `dropped`).
    pub fn name(self) -> &'static str {
        match self {
            Status::OnTime => "on-time",
            Status::Late => "late",
            Status::Failed => "failed",
            Status::Dropped(_) => "dropped",
        }
    }
}

/// Why a deadline was missed: the one word a late or dropped outcome carries
/// (`cause` on the wire). The rule, also in the README:
///
/// - a drop at the queue's door is `capacity`, a drop by admission
///   `admission`, a worker's panic `work`;
/// - any other miss (late, or expired before its work started) is the part
///   of its time that was longest: `transit` (from the `createdAt` its
///   producer gave until it arrived), `queue` (arrival until a worker took
///   it), `credit` (a pull task waiting for a worker with room) or `work`
///   (the work, until its verdict); a tie goes to the earlier part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// It spent most of its time waiting in the queue.
    Queue,
    /// Its work ran past what was left.
    Work,
    /// The queue was full when it arrived.
    Capacity,
    /// Admission saw it could not finish in the time left.
    Admission,
    /// It spent most of its time waiting for a pull worker with room.
    Credit,
    /// Most of its time had passed before it arrived: its producer dated it
    /// (`createdAt`) long before posting it.
    Transit,
}

impl Cause {
    /// Every cause, in the order stats and metrics list them.
    pub const ALL: [Cause; 6] = [
        Cause::Queue,
        Cause::Work,
        Cause::Capacity,
        Cause::Admission,
        Cause::Credit,
        Cause::Transit,
    ];

    /// The wire name (`queue`, `work`, `capacity`, `admission`, `credit`, `transit`).
    pub fn name(self) -> &'static str {
        match self {
            Cause::Queue => "queue",
            Cause::Work => "work",
            Cause::Capacity => "capacity",
            Cause::Admission => "admission",
            Cause::Credit => "credit",
            Cause::Transit => "transit",
        }
    }
}

/// The instants that cut an outcome's time into queue wait, credit wait and
/// work. Left `None`, a stage did not happen: an event judged in the queue
/// (refused at the door, expired there) spent all its time queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stages {
    /// When it left the queue: a worker took it. In `pull` mode the credit
    /// wait starts here; in the other modes the work does.
    pub dequeued: Option<Instant>,
    /// When its work started (after any credit wait and admission).
    pub work_started: Option<Instant>,
}

impl Stages {
    /// Work that started as the event left the queue (no credit wait).
    pub fn starting(started: Instant) -> Self {
        Stages {
            dequeued: Some(started),
            work_started: Some(started),
        }
    }
}

/// Where an outcome's time went: the parts add up to its latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// From creation until it arrived: zero unless its producer dated it.
    pub transit: Duration,
    /// From arrival until a worker took it (or the verdict, if none did).
    pub queue: Duration,
    /// A pull task waiting for a worker with room; zero in other modes.
    pub wait: Duration,
    /// The work as measured, until the verdict; `None` when no work started.
    pub work: Option<Duration>,
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
    /// What went wrong, for a `failed` verdict: a status code, an error kind,
    /// or the worker's own words (at most [`MAX_ERROR_CHARS`] characters).
    pub error: Option<Box<str>>,
    /// The instants its time was cut at on the way to the verdict.
    pub stages: Stages,
    /// Its latency cut at `stages`, taken once where the outcome is made
    /// (a worker, the expiry thread, the intake), not on the hub's thread.
    pub split: Split,
}

/// Longest `error` an outcome carries; a worker's longer message is cut.
pub const MAX_ERROR_CHARS: usize = 200;

/// Most bytes an outcome's message takes besides its payload, with room:
/// the fixed fields, an id of [`MAX_ID_CHARS`]
/// and a producer of [`MAX_PRODUCER_CHARS`] characters that each need a
/// six-byte escape, and an error of [`MAX_ERROR_CHARS`] such characters come
/// to under 2.6 KiB (a test builds that outcome). The one size budget: a
/// message is at most its payload plus this, so every payload limit is set
/// from the largest message a transport must carry.
pub const MAX_ENVELOPE_BYTES: usize = 4 * 1024;

/// `text` cut to [`MAX_ERROR_CHARS`] characters, as an outcome's `error`.
pub fn error_text(text: &str) -> Box<str> {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => text[..end].into(),
        None => text.into(),
    }
}

impl Outcome {
    /// Time from creation to verdict.
    pub fn latency(&self) -> Duration {
        self.decided.saturating_duration_since(self.event.created)
    }

    /// An outcome with no `error` given in the queue: refused at the door
    /// or expired there.
    pub fn new(event: Event, status: Status, decided: Instant) -> Self {
        Outcome::staged(event, status, decided, Stages::default())
    }

    /// An outcome with no `error` whose time went through `stages`.
    pub fn staged(event: Event, status: Status, decided: Instant, stages: Stages) -> Self {
        let split = Split::of(&event, decided, stages);
        Outcome {
            event,
            status,
            decided,
            error: None,
            stages,
            split,
        }
    }

    /// Why it missed its deadline (see [`Cause`]); `None` for on-time and
    /// failed verdicts.
    pub fn cause(&self) -> Option<Cause> {
        let split = &self.split;
        match self.status {
            Status::OnTime | Status::Failed => None,
            Status::Dropped(DropReason::QueueFull) => Some(Cause::Capacity),
            Status::Dropped(DropReason::Infeasible) => Some(Cause::Admission),
            Status::Dropped(DropReason::Panicked) => Some(Cause::Work),
            Status::Late | Status::Dropped(DropReason::Expired) => Some(split.longest()),
        }
    }

    /// The JSON object sent to every client, with the sequence number the hub gave it.
    pub fn to_wire(&self, seq: u64, clock: &WallClock) -> Vec<u8> {
        let drop_reason = match self.status {
            Status::Dropped(reason) => Some(reason),
            _ => None,
        };
        let created_at = to_microsecond(clock.epoch_ms(self.event.created));
        let latency_ms = nearest_micro_ms(self.latency());
        let processed_at = to_microsecond(created_at + latency_ms);
        let payload = self.event.payload.as_deref().map(|p| p.get());
        // Sized for the whole message so that it is written without growing.
        let error = self.error.as_deref();
        let mut out = Vec::with_capacity(
            WIRE_FIXED_BYTES
                + self.event.id.len() * 2
                + self.event.producer.as_deref().map_or(0, |p| p.len() * 2)
                + payload.map_or(0, str::len)
                + error.map_or(0, |e| e.len() * 2),
        );
        out.extend_from_slice(br#"{"type":"event","seq":"#);
        push_json(&mut out, &seq);
        out.extend_from_slice(br#","id":"#);
        push_json(&mut out, self.event.id.as_str());
        out.extend_from_slice(br#","source":""#);
        out.extend_from_slice(self.event.source.name().as_bytes());
        out.extend_from_slice(br#"","producer":"#);
        push_json(&mut out, self.event.producer());
        out.extend_from_slice(br#","createdAt":"#);
        push_json(&mut out, &created_at);
        out.extend_from_slice(br#","deadlineMs":"#);
        push_json(&mut out, &whole_millis(self.event.deadline));
        // From the two rounded numbers, so that processedAt − createdAt is
        // latencyMs to the microsecond rather than off by one rounding.
        out.extend_from_slice(br#","processedAt":"#);
        push_json(&mut out, &processed_at);
        out.extend_from_slice(br#","latencyMs":"#);
        push_json(&mut out, &latency_ms);
        let split = &self.split;
        if !split.transit.is_zero() {
            out.extend_from_slice(br#","transitMs":"#);
            push_ms(&mut out, split.transit);
        }
        out.extend_from_slice(br#","queueMs":"#);
        push_ms(&mut out, split.queue);
        out.extend_from_slice(br#","waitMs":"#);
        push_ms(&mut out, split.wait);
        if let Some(work) = split.work {
            out.extend_from_slice(br#","workMs":"#);
            push_ms(&mut out, work);
        }
        out.extend_from_slice(br#","status":""#);
        out.extend_from_slice(self.status.name().as_bytes());
        out.push(b'"');
        if let Some(reason) = drop_reason {
            out.extend_from_slice(br#","dropReason":""#);
            out.extend_from_slice(reason.name().as_bytes());
            out.push(b'"');
        }
        if let Some(cause) = self.cause() {
            out.extend_from_slice(br#","cause":""#);
            out.extend_from_slice(cause.name().as_bytes());
            out.push(b'"');
        }
        if let Some(error) = error {
            out.extend_from_slice(br#","error":"#);
            push_json(&mut out, error);
        }
        if let Some(payload) = payload {
            // Already JSON, checked when it was posted.
            out.extend_from_slice(br#","payload":"#);
            out.extend_from_slice(payload.as_bytes());
        }
        out.push(b'}');
        out
    }
}

impl Split {
    /// The time from the event's creation to `decided` cut at its arrival
    /// and at `stages`. Each cut is held between the one before and the
    /// verdict, so the parts add up to the latency exactly, even for an
    /// event dated (by its producer) after it was judged.
    fn of(event: &Event, decided: Instant, stages: Stages) -> Self {
        let created = event.created;
        let decided = decided.max(created);
        let arrived = event.arrived.clamp(created, decided);
        let dequeued = stages.dequeued.map(|t| t.clamp(arrived, decided));
        let left_queue = dequeued.unwrap_or(decided);
        let work_started = stages.work_started.map(|t| t.clamp(left_queue, decided));
        Split {
            transit: arrived - created,
            queue: left_queue - arrived,
            wait: work_started.unwrap_or(decided) - left_queue,
            work: work_started.map(|started| decided - started),
        }
    }

    /// The longest part as a cause; a tie goes to the earlier part.
    fn longest(&self) -> Cause {
        let parts = [
            (self.queue, Cause::Queue),
            (self.wait, Cause::Credit),
            (self.work.unwrap_or_default(), Cause::Work),
        ];
        let mut longest = (self.transit, Cause::Transit);
        for part in parts {
            if part.0 > longest.0 {
                longest = part;
            }
        }
        longest.1
    }
}

/// Bytes of an outcome message besides its id and payload, with room to spare:
/// the keys and punctuation (~210), eight numbers (≤ 24 each) and the names.
const WIRE_FIXED_BYTES: usize = 480;

/// Appends `value` as JSON (escaping, number formatting). The field names and
/// punctuation around the values are constants written as they are: a derived
/// serialiser escaped every key of every message again.
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing a string or a finite number into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// Appends `d` in milliseconds to the nearest microsecond, spelled as
/// `serde_json` spells that `f64` (`0.0`, `1.5`, `12.345`), but from whole
/// numbers: three of these go into every outcome, and float rounding and
/// formatting cost several times more.
fn push_ms(out: &mut Vec<u8>, d: Duration) {
    let micros = nearest_micros(d);
    push_json(out, &(micros / 1000));
    let fraction = micros % 1000;
    let digits = [
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let significant = if fraction.is_multiple_of(100) {
        1
    } else if fraction.is_multiple_of(10) {
        2
    } else {
        3
    };
    out.push(b'.');
    out.extend_from_slice(&digits[..significant]);
}

/// `d` in whole microseconds, to the nearest (a half rounds up).
fn nearest_micros(d: Duration) -> u64 {
    crate::time::whole_micros(d.saturating_add(Duration::from_nanos(500)))
}

/// `d` in milliseconds to the nearest microsecond, rounded as [`push_ms`]
/// rounds the parts, so that a latency made of one part reads the same.
fn nearest_micro_ms(d: Duration) -> f64 {
    nearest_micros(d) as f64 / 1000.0
}

/// Milliseconds rounded to the microsecond: the clocks are no finer in
/// practice, and `50.174` reads better than `50.174535999999996`. Rounding is
/// monotonic and a whole-millisecond deadline lies on the microsecond grid, so
/// a latency at or under its deadline never rounds to one above it (nor one
/// above to one under).
pub(crate) fn to_microsecond(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// A deadline on the wire: whole milliseconds, as the flag, `PUT /api/config`
/// and ingest accept it, so every source spells it the same way (`100`).
pub(crate) fn whole_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wire shape of an outcome; field names are a published contract. The
/// tests check [`Outcome::to_wire`] against it, field for field and byte for byte.
#[cfg(test)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    id: &'a str,
    source: Source,
    producer: &'a str,
    created_at: f64,
    deadline_ms: u64,
    processed_at: f64,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    transit_ms: Option<f64>,
    queue_ms: f64,
    wait_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    work_ms: Option<f64>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<DropReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
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
            error: None,
            ..Outcome::staged(
                Event::generated(t0, Duration::from_millis(100)),
                Status::Dropped(DropReason::QueueFull),
                t0 + Duration::from_millis(2),
                Stages::default(),
            )
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
                error: None,
                ..Outcome::staged(
                    Event::generated(t0 + 37 * ns, deadline),
                    status,
                    t0 + 37 * ns + offset,
                    Stages::default(),
                )
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
            error: None,
            ..Outcome::staged(
                Event::generated(t0, Duration::from_millis(100)),
                Status::OnTime,
                t0 + Duration::from_millis(50),
                Stages::default(),
            )
        };
        let v: serde_json::Value =
            serde_json::from_slice(&outcome.to_wire(1, &WallClock::new())).expect("valid JSON");
        assert_eq!(v["status"], "on-time");
        assert!(v.get("dropReason").is_none());
    }

    #[test]
    fn a_part_is_spelled_as_serde_spells_its_value_in_ms() {
        for nanos in [
            0,
            499,
            500,
            1_000,
            1_499_999,
            1_500_000,
            12_345_678,
            100_000_000,
            3_600_000_000_000,
        ] {
            let d = Duration::from_nanos(nanos);
            let mut written = Vec::new();
            push_ms(&mut written, d);
            let rounded = (d.as_nanos() as f64 / 1000.0).round() / 1000.0;
            let expected = serde_json::to_string(&rounded).expect("a number");
            assert_eq!(String::from_utf8_lossy(&written), expected, "{nanos} ns");
        }
    }

    /// The reference serialisation of the published shape, by `serde` derive.
    fn derived_wire(outcome: &Outcome, seq: u64, clock: &WallClock) -> Vec<u8> {
        let created_at = to_microsecond(clock.epoch_ms(outcome.event.created));
        let latency_ms = nearest_micro_ms(outcome.latency());
        let split = &outcome.split;
        let wire = WireEvent {
            kind: "event",
            seq,
            id: &outcome.event.id,
            source: outcome.event.source,
            producer: outcome.event.producer(),
            created_at,
            deadline_ms: whole_millis(outcome.event.deadline),
            processed_at: to_microsecond(created_at + latency_ms),
            latency_ms,
            transit_ms: (!split.transit.is_zero()).then(|| nearest_micro_ms(split.transit)),
            queue_ms: nearest_micro_ms(split.queue),
            wait_ms: nearest_micro_ms(split.wait),
            work_ms: split.work.map(nearest_micro_ms),
            status: outcome.status.name(),
            drop_reason: match outcome.status {
                Status::Dropped(reason) => Some(reason),
                _ => None,
            },
            cause: outcome.cause().map(Cause::name),
            error: outcome.error.as_deref(),
            payload: outcome.event.payload.as_deref(),
        };
        serde_json::to_vec(&wire).expect("serialisable")
    }

    #[test]
    fn the_written_wire_json_is_byte_for_byte_the_published_shape() {
        let t0 = Instant::now();
        let clock = WallClock::anchored(t0, 1_763_800_000_123.456_6);
        let payload = serde_json::value::RawValue::from_string(r#"{"a":[1,"é\n"]}"#.into())
            .expect("valid JSON");
        let mut ingested = Event::generated(t0, Duration::from_millis(250));
        ingested.id = "quote \" back\\slash \u{1} é".into();
        ingested.source = Source::Ingest;
        ingested.payload = Some(payload);
        ingested.producer = Some("ci \"nightly\" é".into());
        let statuses = [
            Status::OnTime,
            Status::Late,
            Status::Failed,
            Status::Dropped(DropReason::QueueFull),
            Status::Dropped(DropReason::Expired),
            Status::Dropped(DropReason::Infeasible),
            Status::Dropped(DropReason::Panicked),
        ];
        for (n, status) in statuses.into_iter().enumerate() {
            for event in [
                Event::generated(t0, Duration::from_millis(100)),
                ingested.clone(),
            ] {
                let at = |nanos: u64| Some(t0 + Duration::from_nanos(nanos));
                let stages = match n % 3 {
                    0 => Stages::default(),
                    1 => Stages {
                        dequeued: at(1_234_567 * n as u64),
                        work_started: None,
                    },
                    _ => Stages {
                        dequeued: at(1_234_567 * n as u64),
                        work_started: at(7_654_321 * n as u64),
                    },
                };
                let decided = t0 + Duration::from_nanos(123_456_789 * n as u64 + 1);
                let outcome = Outcome {
                    error: status
                        .eq(&Status::Failed)
                        .then(|| error_text("HTTP 500 \"quoted\"")),
                    ..Outcome::staged(event, status, decided, stages)
                };
                let written = outcome.to_wire(u64::MAX - n as u64, &clock);
                let derived = derived_wire(&outcome, u64::MAX - n as u64, &clock);
                assert_eq!(
                    String::from_utf8_lossy(&written),
                    String::from_utf8_lossy(&derived)
                );
            }
        }
    }

    #[test]
    fn the_largest_outcome_envelope_fits_its_budget() {
        let t0 = Instant::now();
        let clock = WallClock::anchored(t0, 1_763_800_000_123.456_6);
        let escaped = |n: usize| "\u{1}".repeat(n);
        let mut event = Event::generated(t0, Duration::from_millis(3_600_000));
        event.id = escaped(MAX_ID_CHARS);
        event.producer = Some(escaped(MAX_PRODUCER_CHARS).into());
        event.source = Source::Ingest;
        event.payload = Some(serde_json::value::RawValue::from_string("0".into()).expect("JSON"));
        let outcome = Outcome {
            error: Some(error_text(&escaped(MAX_ERROR_CHARS + 10))),
            ..Outcome::staged(
                event,
                Status::Dropped(DropReason::Infeasible),
                t0 + Duration::from_secs(3_600),
                Stages {
                    dequeued: Some(t0 + Duration::from_secs(1_800)),
                    work_started: Some(t0 + Duration::from_secs(2_700)),
                },
            )
        };
        let envelope = outcome.to_wire(u64::MAX, &clock).len() - 1;
        assert!(
            envelope <= MAX_ENVELOPE_BYTES,
            "{envelope} bytes besides the payload"
        );
    }

    /// An outcome of a 100 ms deadline judged `decided_ms` after creation,
    /// with its stages at the given offsets.
    fn staged(
        status: Status,
        dequeued_ms: Option<u64>,
        work_ms: Option<u64>,
        decided_ms: u64,
    ) -> Outcome {
        let t0 = Instant::now();
        let at = |ms: Option<u64>| ms.map(|ms| t0 + Duration::from_millis(ms));
        Outcome {
            error: None,
            ..Outcome::staged(
                Event::generated(t0, Duration::from_millis(100)),
                status,
                t0 + Duration::from_millis(decided_ms),
                Stages {
                    dequeued: at(dequeued_ms),
                    work_started: at(work_ms),
                },
            )
        }
    }

    #[test]
    fn the_parts_of_the_split_add_up_to_the_latency() {
        let ms = Duration::from_millis;
        for (outcome, queue, wait, work) in [
            (
                staged(Status::OnTime, Some(10), Some(10), 30),
                10,
                0,
                Some(20),
            ),
            (
                staged(Status::Late, Some(10), Some(60), 100),
                10,
                50,
                Some(40),
            ),
            (
                staged(Status::Dropped(DropReason::Expired), None, None, 100),
                100,
                0,
                None,
            ),
            (
                staged(Status::Dropped(DropReason::Expired), Some(20), None, 100),
                20,
                80,
                None,
            ),
        ] {
            let split = outcome.split;
            assert_eq!(
                split,
                Split {
                    transit: ms(0),
                    queue: ms(queue),
                    wait: ms(wait),
                    work: work.map(ms)
                }
            );
            assert_eq!(
                split.queue + split.wait + split.work.unwrap_or_default(),
                outcome.latency()
            );
        }
        // An event its producer dated after the verdict: every part is empty.
        let past = staged(Status::OnTime, Some(10), Some(10), 30);
        let mut event = past.event;
        event.created += ms(60_000);
        let split = Outcome::staged(event, past.status, past.decided, past.stages).split;
        assert_eq!(
            (split.queue, split.wait, split.work),
            (ms(0), ms(0), Some(ms(0)))
        );
    }

    #[test]
    fn a_miss_is_caused_by_its_drop_reason_or_else_its_longest_part() {
        let cause =
            |status, dequeued, work, decided| staged(status, dequeued, work, decided).cause();
        let dropped = Status::Dropped;
        assert_eq!(cause(Status::OnTime, Some(90), Some(90), 100), None);
        assert_eq!(cause(Status::Failed, Some(90), Some(90), 100), None);
        assert_eq!(
            cause(dropped(DropReason::QueueFull), None, None, 0),
            Some(Cause::Capacity)
        );
        assert_eq!(
            cause(dropped(DropReason::Infeasible), Some(5), None, 5),
            Some(Cause::Admission)
        );
        assert_eq!(
            cause(dropped(DropReason::Panicked), Some(5), Some(5), 6),
            Some(Cause::Work)
        );
        assert_eq!(
            cause(dropped(DropReason::Expired), None, None, 100),
            Some(Cause::Queue)
        );
        assert_eq!(
            cause(dropped(DropReason::Expired), Some(10), None, 100),
            Some(Cause::Credit)
        );
        assert_eq!(
            cause(Status::Late, Some(90), Some(90), 101),
            Some(Cause::Queue)
        );
        assert_eq!(
            cause(Status::Late, Some(20), Some(20), 101),
            Some(Cause::Work)
        );
        assert_eq!(
            cause(Status::Late, Some(10), Some(70), 101),
            Some(Cause::Credit)
        );
        // An event its producer dated 80 ms before it arrived.
        let mut event = Event::generated(Instant::now(), Duration::from_millis(100));
        event.arrived = event.created + Duration::from_millis(80);
        let stages = Stages::starting(event.arrived + Duration::from_millis(5));
        let decided = event.created + Duration::from_millis(101);
        let outcome = Outcome::staged(event, Status::Late, decided, stages);
        assert_eq!(outcome.split.transit, Duration::from_millis(80));
        assert_eq!(outcome.cause(), Some(Cause::Transit));
        assert_eq!(
            cause(Status::Late, Some(50), Some(50), 100),
            Some(Cause::Queue),
            "a tie"
        );
    }

    #[test]
    fn fresh_ids_are_distinct_uuid_v4_across_threads() {
        let batch = || (0..20_000).map(|_| fresh_id()).collect::<Vec<_>>();
        let other = std::thread::spawn(batch).join().expect("id thread");
        let mut seen = std::collections::HashSet::new();
        for id in batch().into_iter().chain(other) {
            let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
            assert_eq!(uuid.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(id, uuid.hyphenated().to_string(), "lower-case, hyphenated");
            assert!(seen.insert(id), "ids repeat");
        }
    }
}
