//! The fan-out: hands every broadcast to every connected client without ever
//! waiting for one.
//!
//! Owns: the list of subscribers and each client's bounded [`ClientQueue`].
//!
//! Channels: reads [`Broadcast`]s from the hub and new subscribers from the
//! transports; writes into each client's queue with a non-blocking push. A
//! full client queue loses that one message for that one client, counted on
//! the client and in the total.
//!
//! Must not know: deadlines, outcomes' meaning, or how a client's bytes reach
//! the network.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, select_biased};

use crate::faults::{Faults, Role};
use crate::hub::{Broadcast, Kind};
use crate::stats::Gauges;

/// Most broadcasts handed out in one pass of the fan-out (bounds the time a
/// new subscriber waits to be added).
const MAX_BATCH: usize = 256;

/// Capacity of the subscribe channel: transports wait briefly only if a burst
/// of connections outpaces the fan-out thread.
const SUBSCRIBE_CHANNEL_CAPACITY: usize = 1024;

/// A client's bounded message queue.
///
/// A `Mutex<VecDeque>` + `Condvar` rather than a crossbeam channel: it allocates
/// as it fills instead of reserving every slot per client up front, and a
/// waiting writer parks at once instead of spinning and yielding first, which
/// matters with thousands of writer threads.
#[derive(Debug)]
pub struct ClientQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: VecDeque<Broadcast>,
    /// Replayed messages not yet taken: they do not count against the
    /// capacity, so live messages behind a long replay are not lost.
    replayed: usize,
    closed: bool,
}

/// The result of offering a message to a client queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the client.
    Queued,
    /// The queue was full; the message is lost for this client and counted.
    Full,
    /// The client is gone.
    Closed,
}

/// What became of a batch offered to a client queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Messages lost for this client because its queue was full (counted).
    pub dropped: u64,
    /// The client is gone; nothing was queued.
    pub closed: bool,
}

/// What a writer got from its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// Messages were moved into the caller's buffer.
    Messages,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// The queue is closed and empty: the writer should say goodbye and end.
    Closed,
}

impl ClientQueue {
    /// An empty queue that holds at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        ClientQueue {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Adds a message without waiting.
    pub fn offer(&self, message: Broadcast) -> Offer {
        match self.offer_all(std::iter::once(&message)) {
            Delivery { closed: true, .. } => Offer::Closed,
            Delivery { dropped: 0, .. } => Offer::Queued,
            Delivery { .. } => Offer::Full,
        }
    }

    /// Adds several messages under one lock and with at most one wake-up of
    /// the writer: under load the fan-out hands out batches, and a wake-up
    /// per message per client is what it would otherwise spend its time on.
    pub fn offer_all<'a>(&self, messages: impl Iterator<Item = &'a Broadcast>) -> Delivery {
        let mut state = self.lock();
        if state.closed {
            return Delivery {
                dropped: 0,
                closed: true,
            };
        }
        let was_empty = state.messages.is_empty();
        let mut dropped = 0;
        for message in messages {
            if state.messages.len() >= self.capacity + state.replayed {
                dropped += 1;
            } else {
                state.messages.push_back(message.clone());
            }
        }
        let wake = was_empty && !state.messages.is_empty();
        drop(state);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        // The writer only waits on an empty queue: wake it on that edge only.
        if wake {
            self.ready.notify_one();
        }
        Delivery {
            dropped,
            closed: false,
        }
    }

    /// Waits up to `idle` for messages and moves all of them into `into`.
    pub fn take_all(&self, into: &mut Vec<Broadcast>, idle: Duration) -> Batch {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, idle, |s| s.messages.is_empty() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        if !state.messages.is_empty() {
            into.extend(state.messages.drain(..));
            state.replayed = 0;
            Batch::Messages
        } else if state.closed {
            Batch::Closed
        } else {
            Batch::Idle
        }
    }

    /// Adds a replayed message regardless of capacity: a replay is bounded by
    /// the history ring, and losing part of it would defeat its purpose.
    fn preload(&self, message: Broadcast) {
        let mut state = self.lock();
        state.messages.push_back(message);
        state.replayed += 1;
        drop(state);
        self.ready.notify_one();
    }

    /// Closes the queue: no more offers; the writer drains what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Messages this client lost because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which outcomes a client wants replayed before the live stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resume {
    /// Live only.
    #[default]
    Live,
    /// Every retained outcome after this `seq` (a client resuming).
    Since(u64),
    /// The last N retained outcomes.
    Last(usize),
}

/// What a client asks for when it connects.
#[derive(Clone, Debug, Default)]
pub struct Interest {
    /// Stats messages too, once a second.
    pub stats: bool,
    /// What to replay first.
    pub resume: Resume,
    /// Only outcomes with these statuses (`None`: all).
    pub statuses: Option<Vec<String>>,
}

impl Interest {
    fn wants(&self, message: &Broadcast) -> bool {
        match message.kind {
            Kind::Stats => self.stats,
            Kind::Gap => true,
            Kind::Event => self
                .statuses
                .as_ref()
                .is_none_or(|wanted| wanted.iter().any(|s| s == message.status)),
        }
    }
}

/// A client's subscription: its queue and what it asked for.
#[derive(Clone, Debug)]
struct Subscriber {
    queue: Arc<ClientQueue>,
    interest: Interest,
}

/// The last `--history` outcomes, for replay on resume and `GET /api/events`.
/// Written only by the fan-out thread, in `seq` order.
#[derive(Debug)]
pub struct History {
    ring: Mutex<VecDeque<Broadcast>>,
    capacity: usize,
}

/// Retained outcomes after a `seq`, and the range that was no longer retained.
#[derive(Debug, Default)]
pub struct Replay {
    /// Outcomes, oldest first.
    pub messages: Vec<Broadcast>,
    /// `(from, to)`: outcomes asked for but already gone from the ring.
    pub gap: Option<(u64, u64)>,
}

impl History {
    /// A ring of at most `capacity` outcomes.
    pub fn new(capacity: usize) -> Self {
        History {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
        }
    }

    fn push(&self, message: &Broadcast) {
        if self.capacity == 0 {
            return;
        }
        let mut ring = self.lock();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(message.clone());
    }

    /// Up to `limit` retained outcomes after `since`, given that `newest` is the
    /// last `seq` handed out. A `since` beyond `newest` comes from an earlier
    /// run (sequence numbers restart at 1), so it is read as 0.
    pub fn after(&self, since: u64, newest: u64, limit: usize) -> Replay {
        let since = if since > newest { 0 } else { since };
        let ring = self.lock();
        let first_retained = ring.front().map_or(newest + 1, |m| m.seq);
        let gap = (since + 1 < first_retained).then(|| (since + 1, first_retained - 1));
        let messages = ring
            .iter()
            .filter(|m| m.seq > since)
            .take(limit)
            .cloned()
            .collect();
        Replay { messages, gap }
    }

    /// The last `n` retained outcomes, oldest first.
    pub fn last(&self, n: usize) -> Vec<Broadcast> {
        let ring = self.lock();
        ring.iter()
            .skip(ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The newest retained `seq` (0 when empty).
    pub fn newest(&self) -> u64 {
        self.lock().back().map_or(0, |m| m.seq)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Broadcast>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Lets transports add subscribers to the fan-out.
#[derive(Clone)]
pub struct Subscriptions {
    subscribe: Sender<Subscriber>,
    client_queue: usize,
}

impl Subscriptions {
    /// Registers a new client and returns its queue. The fan-out thread puts
    /// the replay in the queue before the first live message, so the seam has
    /// no gap and no duplicate.
    pub fn subscribe(&self, interest: Interest) -> Option<Arc<ClientQueue>> {
        let queue = Arc::new(ClientQueue::new(self.client_queue));
        let subscriber = Subscriber {
            queue: Arc::clone(&queue),
            interest,
        };
        self.subscribe.send(subscriber).ok()?;
        Some(queue)
    }
}

/// Starts the fan-out thread. It ends when the hub's broadcast channel is
/// closed, and then closes every client queue so writers say goodbye. A
/// panic in it is an essential stage's death (see [`Faults::run_essential`]).
pub fn spawn(
    broadcasts: Receiver<Broadcast>,
    client_queue: usize,
    history: Arc<History>,
    gauges: Arc<Gauges>,
    faults: Arc<Faults>,
) -> io::Result<(Subscriptions, JoinHandle<()>)> {
    let (subscribe, subscribed) = crossbeam_channel::bounded(SUBSCRIBE_CHANNEL_CAPACITY);
    let handle = thread::Builder::new()
        .name("fanout".into())
        .spawn(move || {
            let fanout = FanOut {
                subscribers: Vec::new(),
                history,
                newest: 0,
                gauges,
                faults: Arc::clone(&faults),
            };
            faults.run_essential(Role::Fanout, || fanout.run(&broadcasts, subscribed));
        })?;
    Ok((
        Subscriptions {
            subscribe,
            client_queue,
        },
        handle,
    ))
}

/// The fan-out thread's state.
struct FanOut {
    subscribers: Vec<Subscriber>,
    history: Arc<History>,
    /// The last outcome `seq` seen.
    newest: u64,
    gauges: Arc<Gauges>,
    faults: Arc<Faults>,
}

impl FanOut {
    fn run(mut self, broadcasts: &Receiver<Broadcast>, mut subscribed: Receiver<Subscriber>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            select_biased! {
                recv(subscribed) -> s => match s {
                    Ok(s) => self.add(s),
                    // No transport is left to subscribe (shutdown): stop watching.
                    Err(_) => subscribed = crossbeam_channel::never(),
                },
                recv(broadcasts) -> message => match message {
                    Ok(first) => {
                        // Whatever else is already waiting goes out with it.
                        batch.push(first);
                        batch.extend(broadcasts.try_iter().take(MAX_BATCH - 1));
                        self.deliver_joining(&batch, subscribed.try_iter());
                        batch.clear();
                    }
                    Err(_) => break,
                },
            }
        }
        // Dropping `self` closes every client queue (see `Drop`).
    }

    /// Replays what the subscriber asked for, then makes it live. Both happen
    /// on this thread between two broadcasts, which is what makes the seam exact.
    fn add(&mut self, subscriber: Subscriber) {
        let replay = match subscriber.interest.resume {
            Resume::Live => Replay::default(),
            Resume::Since(seq) => self.history.after(seq, self.newest, usize::MAX),
            Resume::Last(n) => Replay {
                messages: self.history.last(n),
                gap: None,
            },
        };
        if let Some((from, to)) = replay.gap {
            subscriber.queue.preload(gap_message(from, to));
        }
        for message in replay
            .messages
            .into_iter()
            .filter(|m| subscriber.interest.wants(m))
        {
            subscriber.queue.preload(message);
        }
        self.subscribers.push(subscriber);
    }

    /// Adds the clients that subscribed while `batch` gathered, then delivers
    /// it: such a client may have connected before some of these outcomes
    /// were made, and must not miss them.
    fn deliver_joining(&mut self, batch: &[Broadcast], joined: impl Iterator<Item = Subscriber>) {
        for subscriber in joined {
            self.add(subscriber);
        }
        self.deliver(batch);
    }

    /// Records the outcomes of `batch` in the history and offers every
    /// subscriber the messages it wants, forgetting the ones that have gone.
    fn deliver(&mut self, batch: &[Broadcast]) {
        self.faults.injection_point(Role::Fanout);
        for message in batch.iter().filter(|m| m.kind == Kind::Event) {
            self.newest = message.seq;
            self.history.push(message);
        }
        let gauges = &self.gauges;
        self.subscribers.retain(|s| {
            let delivery = s
                .queue
                .offer_all(batch.iter().filter(|m| s.interest.wants(m)));
            if delivery.dropped > 0 {
                gauges
                    .client_dropped
                    .fetch_add(delivery.dropped, Ordering::Relaxed);
            }
            !delivery.closed
        });
    }
}

impl Drop for FanOut {
    /// However the fan-out ends — its input closed, or a panic unwinding it —
    /// every client queue is closed, so each writer says goodbye and ends
    /// instead of waiting for messages that will never come.
    fn drop(&mut self) {
        for subscriber in self.subscribers.drain(..) {
            subscriber.queue.close();
        }
    }
}

/// The message telling a client that outcomes `from..=to` are no longer retained.
pub fn gap_message(from: u64, to: u64) -> Broadcast {
    Broadcast {
        kind: Kind::Gap,
        seq: to,
        status: "",
        json: Bytes::from(format!(r#"{{"type":"gap","from":{from},"to":{to}}}"#)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> Broadcast {
        Broadcast {
            kind: Kind::Event,
            seq,
            status: if seq % 2 == 0 { "late" } else { "on-time" },
            json: Bytes::from_static(b"{}"),
        }
    }

    fn fan_out(history: usize) -> FanOut {
        FanOut {
            subscribers: Vec::new(),
            history: Arc::new(History::new(history)),
            newest: 0,
            gauges: Arc::new(Gauges::default()),
            faults: Arc::new(Faults::new(Arc::default(), None)),
        }
    }

    fn subscribe(fan: &mut FanOut, capacity: usize, interest: Interest) -> Arc<ClientQueue> {
        let queue = Arc::new(ClientQueue::new(capacity));
        fan.add(Subscriber {
            queue: Arc::clone(&queue),
            interest,
        });
        queue
    }

    fn drain(queue: &ClientQueue) -> Vec<(Kind, u64)> {
        let mut got = Vec::new();
        queue.take_all(&mut got, Duration::ZERO);
        got.iter().map(|m| (m.kind, m.seq)).collect()
    }

    #[test]
    fn a_full_queue_refuses_and_counts_instead_of_waiting() {
        let q = ClientQueue::new(2);
        assert_eq!(q.offer(message(1)), Offer::Queued);
        assert_eq!(q.offer(message(2)), Offer::Queued);
        assert_eq!(q.offer(message(3)), Offer::Full);
        assert_eq!(q.dropped(), 1);
        assert_eq!(drain(&q), [(Kind::Event, 1), (Kind::Event, 2)]);
    }

    #[test]
    fn a_closed_queue_is_drained_before_it_reports_closed() {
        let q = ClientQueue::new(4);
        q.offer(message(1));
        q.close();
        assert_eq!(q.offer(message(2)), Offer::Closed);
        let mut got = Vec::new();
        assert_eq!(q.take_all(&mut got, Duration::ZERO), Batch::Messages);
        assert_eq!(q.take_all(&mut got, Duration::ZERO), Batch::Closed);
    }

    #[test]
    fn an_empty_queue_reports_idle_after_the_timeout() {
        let q = ClientQueue::new(4);
        let mut got = Vec::new();
        assert_eq!(q.take_all(&mut got, Duration::from_millis(5)), Batch::Idle);
    }

    #[test]
    fn one_full_client_does_not_stop_delivery_to_another() {
        let mut fan = fan_out(0);
        let slow = subscribe(&mut fan, 1, Interest::default());
        let fast = subscribe(&mut fan, 100, Interest::default());
        for seq in 1..=10 {
            fan.deliver(&[message(seq)]);
        }
        assert_eq!(drain(&fast).len(), 10);
        assert_eq!(slow.dropped(), 9);
        assert_eq!(fan.gauges.client_dropped.load(Ordering::Relaxed), 9);
    }

    #[test]
    fn a_batch_is_queued_with_one_wake_and_its_overflow_counted() {
        let mut fan = fan_out(0);
        let q = subscribe(&mut fan, 3, Interest::default());
        let batch: Vec<Broadcast> = (1..=5).map(message).collect();
        fan.deliver(&batch);
        assert_eq!(
            drain(&q).into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(q.dropped(), 2);
        assert_eq!(fan.gauges.client_dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_client_subscribing_while_a_batch_gathers_gets_the_whole_batch() {
        let mut fan = fan_out(10);
        let queue = Arc::new(ClientQueue::new(10));
        let joined = Subscriber {
            queue: Arc::clone(&queue),
            interest: Interest::default(),
        };
        fan.deliver_joining(&[message(1), message(2)], std::iter::once(joined));
        let seqs: Vec<u64> = drain(&queue).into_iter().map(|(_, s)| s).collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn a_resuming_client_gets_the_missed_outcomes_then_live_ones_without_seam() {
        let mut fan = fan_out(100);
        for seq in 1..=10 {
            fan.deliver(&[message(seq)]);
        }
        let interest = Interest {
            resume: Resume::Since(7),
            ..Interest::default()
        };
        let q = subscribe(&mut fan, 2, interest);
        fan.deliver(&[message(11)]);
        let seqs: Vec<u64> = drain(&q).into_iter().map(|(_, seq)| seq).collect();
        assert_eq!(seqs, [8, 9, 10, 11]);
    }

    #[test]
    fn resuming_from_beyond_the_ring_is_announced_as_a_gap() {
        let mut fan = fan_out(5);
        for seq in 1..=20 {
            fan.deliver(&[message(seq)]);
        }
        let interest = Interest {
            resume: Resume::Since(3),
            ..Interest::default()
        };
        let q = subscribe(&mut fan, 10, interest);
        let got = drain(&q);
        assert_eq!(got[0], (Kind::Gap, 15));
        assert_eq!(
            got[1..].iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [16, 17, 18, 19, 20]
        );
        let replay = fan.history.after(3, 20, usize::MAX);
        assert_eq!(replay.gap, Some((4, 15)));
    }

    #[test]
    fn a_status_filter_passes_only_those_outcomes() {
        let mut fan = fan_out(0);
        let interest = Interest {
            statuses: Some(vec!["late".into()]),
            ..Interest::default()
        };
        let q = subscribe(&mut fan, 10, interest);
        for seq in 1..=6 {
            fan.deliver(&[message(seq)]);
        }
        assert_eq!(
            drain(&q).into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
            [2, 4, 6]
        );
    }
}
