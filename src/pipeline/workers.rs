//! The worker threads: where each admitted event gets its verdict.
//!
//! Owns: the worker threads, which take events from the work queue in the
//! live schedule's order, ask admission ([`admit`]) whether each can still
//! finish, and give every verdict on admitted work in each `--work` mode
//! ([`Work`]): simulated here, real through `work::http` (the thread makes
//! the call) or `work::pull` (the thread hands a task to a remote worker and
//! waits on its answer until the deadline).
//!
//! Channels: takes from the work queue (`schedule::WorkQueue`); writes every
//! verdict to the hub's outcome channel, after recording it in the ledger.
//!
//! A panic while judging an event is caught around that event: the event gets
//! the verdict `dropped/panicked` (so it leaves the ledger's in-flight count and
//! reaches every client like any verdict), the panic is counted, and the
//! worker takes the next event. A worker keeps nothing of its own between
//! events, so carrying on is the same as starting a fresh one; the shared
//! state it touches (estimator, ledger) tolerates a lock poisoned mid-panic.
//!
//! Must not know: how outcomes are serialised or who watches them.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::config::Knobs;
use crate::ops::faults::{Faults, Role};
use crate::pipeline::admission::{Admit, WorkEstimator, admit};
use crate::pipeline::event::{DropReason, Event, Outcome, Stages, Status, error_text};
use crate::pipeline::ledger::Ledger;
use crate::pipeline::meters::Meters;
use crate::pipeline::schedule::WorkQueue;
use crate::time::WallClock;
use crate::work::pull::{Offer, RemoteWorkers};
use crate::work::{Answer, http, task_json};

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

/// Where the work of an admitted event runs (`--work`).
#[derive(Clone)]
pub enum Work {
    /// A sleep for the event's work time.
    Simulate,
    /// A POST to this URL, by the worker thread itself.
    Http(Arc<str>),
    /// A task for a worker connected to `/api/work`.
    Pull(Arc<RemoteWorkers>),
}

/// What every worker shares.
#[derive(Clone)]
pub struct WorkerContext {
    /// The live settings.
    pub knobs: Arc<Knobs>,
    /// The conservation ledger.
    pub ledger: Arc<Ledger>,
    /// Busy-worker count and work time.
    pub meters: Arc<Meters>,
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
    Pull(Arc<RemoteWorkers>),
}

/// A verdict with the instant it follows from, where the time until then
/// went and, for `failed`, why.
struct Verdict {
    status: Status,
    decided: Instant,
    error: Option<Box<str>>,
    stages: Stages,
}

impl Verdict {
    /// A verdict reached at `decided` on an event taken from the queue at
    /// `dequeued` whose work never started.
    fn unworked(status: Status, dequeued: Instant, decided: Instant) -> Self {
        Verdict {
            status,
            decided,
            error: None,
            stages: Stages {
                dequeued: Some(dequeued),
                work_started: None,
            },
        }
    }

    /// A verdict reached at `decided` on work that started at `stages.work_started`.
    fn worked(status: Status, stages: Stages, decided: Instant) -> Self {
        Verdict {
            status,
            decided,
            error: None,
            stages,
        }
    }
}

impl WorkerContext {
    fn hands(&self) -> Hands {
        match &self.work {
            Work::Simulate => Hands::Simulate,
            Work::Http(url) => Hands::Http(http::Caller::new(Arc::clone(url), self.clock)),
            Work::Pull(remote_workers) => Hands::Pull(Arc::clone(remote_workers)),
        }
    }

    /// Gives `event` its verdict. A panic on the way is caught here, around
    /// this one event, and becomes the verdict `dropped/panicked`, decided
    /// when the panic was caught (its time after leaving the queue counted
    /// as work: what ran there was the worker's).
    fn judge(&self, event: Event, hands: &mut Hands) -> Outcome {
        let dequeued = Instant::now();
        let verdict = self
            .faults
            .catch(Role::Worker, || self.verdict(&event, hands, dequeued))
            .unwrap_or_else(|| {
                let panicked = Status::Dropped(DropReason::Panicked);
                Verdict::worked(panicked, Stages::starting(dequeued), Instant::now())
            });
        Outcome {
            error: verdict.error,
            ..Outcome::staged(event, verdict.status, verdict.decided, verdict.stages)
        }
    }

    /// Decides on `event`, taken from the queue at `dequeued`, and, when
    /// admitted, runs its work under its deadline.
    fn verdict(&self, event: &Event, hands: &mut Hands, dequeued: Instant) -> Verdict {
        self.faults.injection_point(Role::Worker);
        let simulated = matches!(hands, Hands::Simulate);
        let predicted = self.prediction(event, simulated);
        let now = Instant::now();
        if let Some(refused) = refusal(admit(now, event.deadline_at(), predicted)) {
            // Deciding is part of leaving the queue: no credit was waited for.
            return Verdict::unworked(refused, now, now);
        }
        match hands {
            Hands::Simulate => self.simulate(event),
            Hands::Http(caller) => self.real_work(event, None, || caller.call(event)),
            Hands::Pull(remote_workers) => {
                self.hand_over(remote_workers, event, predicted, dequeued)
            }
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
        let busy = Busy::start(&self.meters);
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
        Verdict::worked(status, Stages::starting(started), decided)
    }

    /// Waits for a connected worker with room, sends it `event` and waits for
    /// its answer. An event still waiting for room at its deadline is
    /// `dropped/expired`; admission is asked again once room is found, since
    /// the wait used some of the time left. A remote whose socket is still
    /// taking an earlier frame, or that stopped taking tasks (it closed or
    /// went) since its credit was taken, is left at once for other room,
    /// within the deadline: no worker thread waits on a write, and no event
    /// fails for a worker that never had it. The time from `dequeued` until
    /// a worker took the task is the event's credit wait.
    fn hand_over(
        &self,
        remote_workers: &RemoteWorkers,
        event: &Event,
        predicted: Option<Duration>,
        dequeued: Instant,
    ) -> Verdict {
        let unworked = |status, decided| Verdict::unworked(status, dequeued, decided);
        loop {
            let Some(credit) = remote_workers.acquire(event.deadline_at()) else {
                return unworked(Status::Dropped(DropReason::Expired), Instant::now());
            };
            let now = Instant::now();
            if let Some(refused) = refusal(admit(now, event.deadline_at(), predicted)) {
                credit.give_back(remote_workers);
                return unworked(refused, now);
            }
            let task = match task_json(event, &self.clock, now, Some("task")) {
                Ok(task) => task,
                Err(e) => {
                    credit.give_back(remote_workers);
                    let error = error_text(&format!("unserialisable event: {e}"));
                    return Verdict {
                        error: Some(error),
                        ..unworked(Status::Failed, now)
                    };
                }
            };
            match credit.offer(remote_workers, &event.id, task) {
                Offer::Taken(handover) => {
                    let answer = || handover.answer(event.deadline_at());
                    return self.real_work(event, Some(dequeued), answer);
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
    /// `dequeued` is when the event left the queue, when that was not when
    /// its work started (a pull task's credit wait lies between).
    fn real_work(
        &self,
        event: &Event,
        dequeued: Option<Instant>,
        call: impl FnOnce() -> Answer,
    ) -> Verdict {
        let deadline_at = event.deadline_at();
        let busy = Busy::start(&self.meters);
        let started = Instant::now();
        let stages = Stages {
            dequeued: Some(dequeued.unwrap_or(started)),
            work_started: Some(started),
        };
        let answer = call();
        let mut decided = Instant::now();
        drop(busy);
        let took = self.count_work(started, decided);
        match answer {
            Answer::Failed(error) if decided <= deadline_at => Verdict {
                error: Some(error),
                ..Verdict::worked(Status::Failed, stages, decided)
            },
            Answer::Failed(_) => Verdict::worked(Status::Late, stages, decided),
            Answer::Done | Answer::TimedOut => {
                if answer == Answer::TimedOut && decided <= deadline_at {
                    // A timeout that fired early must not give `late` before the deadline.
                    sleep_until(decided, deadline_at + Duration::from_nanos(1));
                    decided = Instant::now();
                }
                self.lock_estimator().observe(decided, took);
                Verdict::worked(verdict_at(decided, deadline_at), stages, decided)
            }
        }
    }

    /// Adds the time from `started` to `decided` to the work-time gauge and returns it.
    fn count_work(&self, started: Instant, decided: Instant) -> Duration {
        let took = decided.saturating_duration_since(started);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.meters.work_micros.fetch_add(micros, Ordering::Relaxed);
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
struct Busy<'a>(&'a Meters);

impl<'a> Busy<'a> {
    fn start(meters: &'a Meters) -> Self {
        meters.busy_workers.fetch_add(1, Ordering::Relaxed);
        Busy(meters)
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
    use crate::ops::health::Heartbeats;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use tungstenite::protocol::Role;
    use tungstenite::{Message, WebSocket};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_verdict_is_on_time_up_to_and_at_the_deadline_and_late_after_it() {
        let deadline_at = Instant::now() + 100 * MS;
        let ns = Duration::from_nanos(1);
        assert_eq!(verdict_at(deadline_at - ns, deadline_at), Status::OnTime);
        assert_eq!(verdict_at(deadline_at, deadline_at), Status::OnTime);
        assert_eq!(verdict_at(deadline_at + ns, deadline_at), Status::Late);
    }

    /// A context whose estimator is seeded at 1 ms, with admission on.
    fn context(work: Work) -> WorkerContext {
        let health = Arc::new(Heartbeats::new());
        let config = Config {
            work_ms: 1,
            work_jitter_ms: 0,
            ..Config::default()
        };
        WorkerContext {
            knobs: Arc::new(Knobs::new(&config)),
            ledger: Arc::new(Ledger::default()),
            meters: Arc::new(Meters::default()),
            estimator: Arc::new(Mutex::new(WorkEstimator::new(MS, Duration::ZERO))),
            faults: Arc::new(Faults::new(health, None)),
            work,
            clock: WallClock::new(),
        }
    }

    #[test]
    fn real_work_is_predicted_from_measurements_never_from_the_events_own_work_ms() {
        let ctx = context(Work::Http("http://127.0.0.1:9/".into()));
        let mut event = Event::generated(Instant::now(), 5_000 * MS);
        event.work = Some(3_000 * MS);
        assert_eq!(ctx.prediction(&event, false), Some(MS), "the seed");
        assert_eq!(ctx.prediction(&event, true), Some(3_000 * MS));
    }

    #[test]
    fn a_failed_answer_teaches_the_estimator_nothing_and_a_done_one_does() {
        let ctx = context(Work::Http("http://127.0.0.1:9/".into()));
        let event = Event::generated(Instant::now(), 5_000 * MS);
        let slow = |answer: Answer| {
            move || {
                thread::sleep(5 * MS);
                answer
            }
        };
        for _ in 0..WorkEstimator::MIN_SAMPLES {
            let verdict = ctx.real_work(&event, None, slow(Answer::Failed("HTTP 500".into())));
            assert_eq!(verdict.status, Status::Failed);
        }
        let predicted = |ctx: &WorkerContext| ctx.prediction(&event, false).expect("admission on");
        assert_eq!(predicted(&ctx), MS, "failures measured nothing");
        for _ in 0..WorkEstimator::MIN_SAMPLES {
            let verdict = ctx.real_work(&event, None, slow(Answer::Done));
            assert_eq!(verdict.status, Status::OnTime);
        }
        assert!(predicted(&ctx) >= 5 * MS, "{:?}", predicted(&ctx));
    }

    /// Both ends of a loopback connection: the daemon's, the worker's.
    fn connection(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().expect("address");
        let peer = TcpStream::connect(addr).expect("connect");
        let (ours, _) = listener.accept().expect("accept");
        (ours, peer)
    }

    #[test]
    fn a_task_the_remote_whose_credit_was_taken_cannot_take_is_on_time_on_another() {
        let health = Arc::new(Heartbeats::new());
        let remote_workers = RemoteWorkers::new(Arc::clone(&health)).expect("remote_workers");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // The first remote, offered first, fails the write of any task: its
        // socket no longer sends. The second answers.
        let (first, _first_peer) = connection(&listener);
        first
            .try_clone()
            .and_then(|first| first.shutdown(Shutdown::Write))
            .expect("shut");
        remote_workers
            .connect(first, None, 1, Duration::from_secs(5))
            .expect("connects");
        let (second, second_peer) = connection(&listener);
        remote_workers
            .connect(second, None, 1, Duration::from_secs(5))
            .expect("connects");
        let worker = thread::spawn(move || {
            let mut socket = WebSocket::from_raw_socket(second_peer, Role::Client, None);
            let message = socket.read().expect("a task");
            let task: serde_json::Value =
                serde_json::from_str(message.to_text().expect("text")).expect("JSON");
            let done = serde_json::json!({"type": "done", "id": task["id"]});
            socket
                .send(Message::text(done.to_string()))
                .expect("answer");
            socket
        });
        let ctx = WorkerContext {
            knobs: Arc::new(Knobs::new(&Config::default())),
            ledger: Arc::new(Ledger::default()),
            meters: Arc::new(Meters::default()),
            estimator: Arc::new(Mutex::new(WorkEstimator::new(MS, MS))),
            faults: Arc::new(Faults::new(health, None)),
            work: Work::Pull(Arc::clone(&remote_workers)),
            clock: WallClock::new(),
        };
        let event = Event::generated(Instant::now(), 5_000 * MS);
        let verdict = ctx.hand_over(&remote_workers, &event, None, Instant::now());
        assert_eq!((verdict.status, verdict.error), (Status::OnTime, None));
        drop(worker.join().expect("worker"));
    }
}
