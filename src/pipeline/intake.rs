//! The way in: the [`Intake`] every producer (generator, ingest, webhooks,
//! `Server::submit`) uses to enter events, the work queue it feeds, and the
//! `expiry` thread that drops what expires while it waits.
//!
//! Channels: pushes into the work queue (`schedule::WorkQueue`) without
//! waiting — a full queue is a `dropped/queue-full` verdict on the spot —
//! and writes queue-full and expiry verdicts to the hub's outcome channel.
//! Each entry and each such verdict is recorded in the ledger in the same
//! critical section as the queue's change, so `inFlight` never counts an
//! event that left the queue unjudged.
//!
//! Must not know: workers, admission, or how outcomes are serialised.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::config::Knobs;
use crate::pipeline::event::{DropReason, Event, Outcome, Status};
use crate::pipeline::ledger::{Door, Ledger};
use crate::pipeline::schedule::{Pushed, WorkQueue};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Schedule};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

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
}
