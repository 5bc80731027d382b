//! The work queue and the worker pool: where each event gets its verdict.
//!
//! Owns: the bounded work queue (`--queue`), the [`Intake`] every producer
//! uses to enter events, the admission decision ([`admit`]), the work-time
//! estimator ([`WorkEstimator`]), and the worker threads, which give every
//! verdict on admitted work in each `--work` mode ([`Work`]): simulated here,
//! real through `work::http` (the thread makes the call) or `work::pull`
//! (the thread hands a task to a connected worker and waits on its answer
//! channel until the deadline).
//!
//! Channels: producers push events into the work queue (`schedule::WorkQueue`)
//! without waiting (a full queue is a `dropped/queue-full` verdict on the
//! spot); workers take them in the live schedule's order; the `expiry` thread
//! takes out those whose deadline passes while they wait. Every verdict,
//! including queue-full and expiry drops, is written to the hub's outcome channel.
//! The ledger records each entry and each verdict, so nothing leaves uncounted.
//!
//! A panic while judging an event is caught around that event: the event gets
//! the verdict `dropped/panicked` (so it leaves the ledger's in-flight count and
//! reaches every client like any verdict), the panic is counted, and the
//! worker takes the next event. A worker keeps nothing of its own between
//! events, so carrying on is the same as starting a fresh one; the shared
//! state it touches (estimator, ledger) tolerates a lock poisoned mid-panic.
//!
//! Must not know: how outcomes are serialised or who watches them.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::config::Knobs;
use crate::ops::faults::{Faults, Role};
use crate::pipeline::event::{DropReason, Event, Outcome, Status, error_text};
use crate::pipeline::schedule::{Pushed, WorkQueue};
use crate::pipeline::stats::{Door, Gauges, Ledger};
use crate::time::WallClock;
use crate::work::pull::{Dispatcher, Offer};
use crate::work::{Answer, http, task_json};

/// The way into the pipeline, shared by the generator, ingest and tests.
/// When the last clone is dropped, the work queue closes: workers judge what
/// is left and end.
#[derive(Clone)]
pub struct Intake {
    open: Arc<OpenQueue>,
    knobs: Arc<Knobs>,
    ledger: Arc<Ledger>,
    outcomes: Sender<Outcome>,
}

/// The producers' hold on the work queue; closes it when the last goes.
struct OpenQueue(Arc<WorkQueue>);

impl Drop for OpenQueue {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What became of a submitted event at the door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// It is in the work queue and will get a verdict.
    Queued,
    /// The queue was full: it is counted and reported as `dropped/queue-full`.
    QueueFull,
}

impl Intake {
    /// Hands `event` to the work queue without waiting. A full queue drops it
    /// at once — or, under `edf`, the queued event due latest when that is
    /// due later than this one; either way every event is counted and will
    /// be reported downstream.
    pub fn submit(&self, event: Event) -> Entry {
        let schedule = self.knobs.schedule();
        let mut pushed = None;
        let source = event.source;
        let door = self.ledger.enter(source, || {
            let outcome = self.open.0.push(event, schedule);
            let door = match &outcome {
                Pushed::Queued => Door::Queued,
                Pushed::Refused(_) => Door::Refused,
                Pushed::Evicted(_) => Door::QueuedInPlaceOfAnother,
            };
            pushed = Some(outcome);
            door
        });
        if let Some(Pushed::Refused(event) | Pushed::Evicted(event)) = pushed {
            self.report_full(event);
        }
        match door {
            Door::Refused => Entry::QueueFull,
            Door::Queued | Door::QueuedInPlaceOfAnother => Entry::Queued,
        }
    }

    fn report_full(&self, event: Event) {
        let outcome = Outcome::new(
            event,
            Status::Dropped(DropReason::QueueFull),
            Instant::now(),
        );
        // The hub outlives every producer; a send error only happens in shutdown.
        let _ = self.outcomes.send(outcome);
    }
}

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

/// The verdict on admitted work whose race ended at `decided`: `on-time` when
/// that is no later than `deadline_at`, `late` otherwise. Status and latency
/// come from the same instant, so they cannot contradict each other.
pub fn verdict_at(decided: Instant, deadline_at: Instant) -> Status {
    if decided <= deadline_at {
        Status::OnTime
    } else {
        Status::Late
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

/// Builds the bounded work queue and the intake that feeds it. Returns the
/// intake and the queue the workers and the expiry thread read.
pub fn work_queue(
    capacity: usize,
    knobs: Arc<Knobs>,
    ledger: Arc<Ledger>,
    outcomes: Sender<Outcome>,
) -> (Intake, Arc<WorkQueue>) {
    let queue = Arc::new(WorkQueue::new(capacity));
    let intake = Intake {
        open: Arc::new(OpenQueue(Arc::clone(&queue))),
        knobs,
        ledger,
        outcomes,
    };
    (intake, queue)
}

/// Starts the `expiry` thread: an event whose deadline passes while it waits
/// in the queue is dropped as `expired` at that instant, costing no worker
/// time and no queue place. It ends with the queue.
pub fn spawn_expiry(
    queue: Arc<WorkQueue>,
    ledger: Arc<Ledger>,
    outcomes: Sender<Outcome>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name("expiry".into()).spawn(move || {
        let status = Status::Dropped(DropReason::Expired);
        while queue.wait_until_expired() {
            let decided = Instant::now();
            // Taken out and judged under the ledger's lock: no snapshot sees
            // them out of the queue yet still in flight.
            let expired = ledger.judge_each(status, || queue.take_expired(decided));
            for event in expired {
                if outcomes.send(Outcome::new(event, status, decided)).is_err() {
                    return;
                }
            }
        }
    })
}

/// Where the work of an admitted event runs (`--work`).
#[derive(Clone)]
pub enum Work {
    /// A sleep for the event's work time.
    Simulate,
    /// A POST to this URL, by the worker thread itself.
    Http(Arc<str>),
    /// A task for a worker connected to `/api/work`.
    Pull(Arc<Dispatcher>),
}

/// What every worker shares.
#[derive(Clone)]
pub struct WorkerContext {
    /// The live settings.
    pub knobs: Arc<Knobs>,
    /// The conservation ledger.
    pub ledger: Arc<Ledger>,
    /// Busy-worker and work-time gauges.
    pub gauges: Arc<Gauges>,
    /// The shared work-time estimator.
    pub estimator: Arc<Mutex<WorkEstimator>>,
    /// Where a panic while judging is counted.
    pub faults: Arc<Faults>,
    /// Where the work runs.
    pub work: Work,
    /// For the epoch times a real worker is told.
    pub clock: WallClock,
}

/// Starts `count` workers reading `queue`. They end once every intake is
/// dropped and the queue is empty, each remaining event having got its verdict.
pub fn spawn_workers(
    count: usize,
    queue: Arc<WorkQueue>,
    outcomes: Sender<Outcome>,
    ctx: WorkerContext,
) -> io::Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|n| {
            let (queue, outcomes, ctx) = (queue.clone(), outcomes.clone(), ctx.clone());
            thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || {
                    let mut hands = ctx.hands();
                    while let Some(event) = queue.pop(|| ctx.knobs.schedule()) {
                        let outcome = ctx.judge(event, &mut hands);
                        ctx.ledger.judge(outcome.status);
                        if outcomes.send(outcome).is_err() {
                            break;
                        }
                    }
                })
        })
        .collect()
}

/// A worker thread's own means of doing the work: in `http` mode its
/// kept-alive client, so no two threads share a connection.
enum Hands {
    Simulate,
    Http(http::Caller),
    Pull(Arc<Dispatcher>),
}

/// A verdict with the instant it follows from and, for `failed`, why.
struct Verdict {
    status: Status,
    decided: Instant,
    error: Option<Box<str>>,
}

impl Verdict {
    fn at(status: Status, decided: Instant) -> Self {
        Verdict {
            status,
            decided,
            error: None,
        }
    }
}

impl WorkerContext {
    fn hands(&self) -> Hands {
        match &self.work {
            Work::Simulate => Hands::Simulate,
            Work::Http(url) => Hands::Http(http::Caller::new(Arc::clone(url), self.clock)),
            Work::Pull(dispatcher) => Hands::Pull(Arc::clone(dispatcher)),
        }
    }

    /// Gives `event` its verdict. A panic on the way is caught here, around
    /// this one event, and becomes the verdict `dropped/panicked`, decided
    /// when the panic was caught.
    fn judge(&self, event: Event, hands: &mut Hands) -> Outcome {
        let verdict = self
            .faults
            .catch(Role::Worker, || self.verdict(&event, hands))
            .unwrap_or_else(|| Verdict::at(Status::Dropped(DropReason::Panicked), Instant::now()));
        Outcome {
            event,
            status: verdict.status,
            decided: verdict.decided,
            error: verdict.error,
        }
    }

    /// Decides on `event` and, when admitted, runs its work under its deadline.
    fn verdict(&self, event: &Event, hands: &mut Hands) -> Verdict {
        self.faults.injection_point(Role::Worker);
        let simulated = matches!(hands, Hands::Simulate);
        let predicted = self.prediction(event, simulated);
        let now = Instant::now();
        if let Some(refused) = refusal(admit(now, event.deadline_at(), predicted)) {
            return Verdict::at(refused, now);
        }
        match hands {
            Hands::Simulate => self.simulate(event),
            Hands::Http(caller) => self.real_work(event, || caller.call(event)),
            Hands::Pull(dispatcher) => self.hand_over(dispatcher, event, predicted),
        }
    }

    /// The expected work time, or `None` with admission control off. A
    /// simulated event that declares its own work is predicted by its
    /// declaration; real work only by what was measured.
    fn prediction(&self, event: &Event, simulated: bool) -> Option<Duration> {
        if !self.knobs.admission() {
            return None;
        }
        let declared = event.work.filter(|_| simulated);
        Some(declared.unwrap_or_else(|| {
            self.lock_estimator().predict(
                Instant::now(),
                self.knobs.work(),
                self.knobs.work_jitter(),
            )
        }))
    }

    /// Runs the simulated work, racing it against the absolute deadline, and
    /// returns the verdict with the instant it was reached. The worker sleeps
    /// until the earlier of the two instants (the work's end, the deadline) and
    /// reads the clock once on waking, before anything else; the status follows
    /// from that reading alone ([`verdict_at`]), so a wake-up delayed past the
    /// deadline is `late` even when the work would have ended in time. Either
    /// way the work is abandoned and the worker is free at once.
    ///
    /// One sleep to a known instant does what a race of two timer channels
    /// did, without allocating two channels per event.
    fn simulate(&self, event: &Event) -> Verdict {
        let work = event.work.unwrap_or_else(|| self.sample_work());
        let busy = Busy::start(&self.gauges);
        let started = Instant::now();
        let wake_at = (started + work).min(event.deadline_at());
        sleep_until(started, wake_at);
        let decided = Instant::now();
        let status = verdict_at(decided, event.deadline_at());
        drop(busy);
        let took = self.count_work(started, decided);
        if event.work.is_none() {
            self.lock_estimator().observe(decided, took);
        }
        Verdict::at(status, decided)
    }

    /// Waits for a connected worker with room, sends it `event` and waits for
    /// its answer. An event still waiting for room at its deadline is
    /// `dropped/expired`; admission is asked again once room is found, since
    /// the wait used some of the time left. A remote whose socket is still
    /// taking an earlier frame, or that stopped taking tasks (it closed or
    /// went) since its credit was taken, is left at once for other room,
    /// within the deadline: no worker thread waits on a write, and no event
    /// fails for a worker that never had it.
    fn hand_over(
        &self,
        dispatcher: &Dispatcher,
        event: &Event,
        predicted: Option<Duration>,
    ) -> Verdict {
        loop {
            let Some(credit) = dispatcher.acquire(event.deadline_at()) else {
                return Verdict::at(Status::Dropped(DropReason::Expired), Instant::now());
            };
            let now = Instant::now();
            if let Some(refused) = refusal(admit(now, event.deadline_at(), predicted)) {
                credit.give_back(dispatcher);
                return Verdict::at(refused, now);
            }
            let task = match task_json(event, &self.clock, now, Some("task")) {
                Ok(task) => task,
                Err(e) => {
                    credit.give_back(dispatcher);
                    return failed(error_text(&format!("unserialisable event: {e}")), now);
                }
            };
            match credit.offer(dispatcher, &event.id, task) {
                Offer::Taken(handover) => {
                    return self.real_work(event, || handover.answer(event.deadline_at()));
                }
                Offer::Elsewhere => continue,
            }
        }
    }

    /// Runs `call` (the real work of `event`, which returns by the deadline)
    /// and judges what it answered: done by the deadline is `on-time`, an
    /// error by the deadline is `failed`, anything after it is `late`. No
    /// answer is `late` at the deadline instant. The duration of answered
    /// work (and of work abandoned at the deadline, a lower bound) teaches
    /// the estimator; a failure's does not, it says nothing of the work.
    fn real_work(&self, event: &Event, call: impl FnOnce() -> Answer) -> Verdict {
        let deadline_at = event.deadline_at();
        let busy = Busy::start(&self.gauges);
        let started = Instant::now();
        let answer = call();
        let mut decided = Instant::now();
        drop(busy);
        let took = self.count_work(started, decided);
        match answer {
            Answer::Failed(error) if decided <= deadline_at => failed(error, decided),
            Answer::Failed(_) => Verdict::at(Status::Late, decided),
            Answer::Done | Answer::TimedOut => {
                if answer == Answer::TimedOut && decided <= deadline_at {
                    // A timeout that fired early must not give `late` before the deadline.
                    sleep_until(decided, deadline_at + Duration::from_nanos(1));
                    decided = Instant::now();
                }
                self.lock_estimator().observe(decided, took);
                Verdict::at(verdict_at(decided, deadline_at), decided)
            }
        }
    }

    /// Adds the time from `started` to `decided` to the work-time gauge and returns it.
    fn count_work(&self, started: Instant, decided: Instant) -> Duration {
        let took = decided.saturating_duration_since(started);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.gauges.work_micros.fetch_add(micros, Ordering::Relaxed);
        took
    }

    fn sample_work(&self) -> Duration {
        let jitter_ms = u64::try_from(self.knobs.work_jitter().as_millis()).unwrap_or(u64::MAX);
        self.knobs.work() + Duration::from_millis(fastrand::u64(0..=jitter_ms))
    }

    fn lock_estimator(&self) -> std::sync::MutexGuard<'_, WorkEstimator> {
        self.estimator.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The drop verdict of an admission decision, or `None` when the work starts.
fn refusal(admitted: Admit) -> Option<Status> {
    match admitted {
        Admit::Expired => Some(Status::Dropped(DropReason::Expired)),
        Admit::Infeasible => Some(Status::Dropped(DropReason::Infeasible)),
        Admit::Start { .. } => None,
    }
}

fn failed(error: Box<str>, decided: Instant) -> Verdict {
    Verdict {
        status: Status::Failed,
        decided,
        error: Some(error),
    }
}

/// Sleeps from `now` until `wake_at`; not at all when it is already due
/// (zero work costs no system call).
fn sleep_until(now: Instant, wake_at: Instant) {
    let left = wake_at.saturating_duration_since(now);
    if !left.is_zero() {
        thread::sleep(left);
    }
}

/// A worker counted in `busy_workers` until dropped, so a panic mid-work
/// cannot leave the gauge one too high.
struct Busy<'a>(&'a Gauges);

impl<'a> Busy<'a> {
    fn start(gauges: &'a Gauges) -> Self {
        gauges.busy_workers.fetch_add(1, Ordering::Relaxed);
        Busy(gauges)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy_workers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::Schedule;
    use std::sync::atomic::AtomicBool;

    const MS: Duration = Duration::from_millis(1);

    /// With no worker, an event leaves the queue only by expiry or a full
    /// queue, so `inFlight` must never exceed the queue's capacity — also
    /// while the expiry thread hands a batch to a slow hub and producers
    /// refill the queue behind it.
    #[test]
    fn in_flight_never_exceeds_the_queue_while_the_expiry_thread_judges() {
        in_flight_stays_within_the_queue(Schedule::Fifo);
    }

    /// Under edf a newcomer due sooner displaces a queued event: entered and
    /// judged in one step, never both counted in flight.
    #[test]
    fn in_flight_never_exceeds_the_queue_while_edf_displaces_queued_events() {
        in_flight_stays_within_the_queue(Schedule::Edf);
    }

    fn in_flight_stays_within_the_queue(schedule: Schedule) {
        const CAPACITY: usize = 8;
        let ledger = Arc::new(Ledger::default());
        let (outcomes, hub) = crossbeam_channel::bounded(1);
        let config = Config {
            schedule,
            ..Config::default()
        };
        let knobs = Arc::new(Knobs::new(&config));
        let (intake, queue) = work_queue(CAPACITY, knobs, Arc::clone(&ledger), outcomes.clone());
        let expiry = spawn_expiry(queue, Arc::clone(&ledger), outcomes).expect("expiry starts");
        let slow_hub = thread::spawn(move || {
            for _ in hub.iter() {
                thread::sleep(Duration::from_micros(200));
            }
        });
        let done = Arc::new(AtomicBool::new(false));
        let producer = {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                // Deadlines of 1 to 4 ms: under edf, later ones are displaced.
                for n in 0..5_000 {
                    intake.submit(Event::generated(Instant::now(), (4 - n % 4) * MS));
                }
                done.store(true, Ordering::Relaxed);
            })
        };
        let mut most = 0;
        while !done.load(Ordering::Relaxed) {
            most = most.max(ledger.totals().in_flight);
        }
        producer.join().expect("the producer ends");
        expiry
            .join()
            .expect("the expiry thread ends with the queue");
        slow_hub.join().expect("the hub ends");
        assert!(most <= CAPACITY as u64, "inFlight reached {most}");
        assert_eq!(ledger.totals().in_flight, 0);
        assert!(ledger.totals().balances());
    }

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
    fn the_verdict_is_on_time_up_to_and_at_the_deadline_and_late_after_it() {
        let deadline_at = Instant::now() + 100 * MS;
        let ns = Duration::from_nanos(1);
        assert_eq!(verdict_at(deadline_at - ns, deadline_at), Status::OnTime);
        assert_eq!(verdict_at(deadline_at, deadline_at), Status::OnTime);
        assert_eq!(verdict_at(deadline_at + ns, deadline_at), Status::Late);
    }

    #[test]
    fn the_estimator_starts_from_the_configured_90th_percentile() {
        let mut est = WorkEstimator::new(50 * MS, 100 * MS);
        assert_eq!(est.predict(Instant::now(), 50 * MS, 100 * MS), 140 * MS);
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
