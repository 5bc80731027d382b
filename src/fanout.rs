//! The fan-out: hands every broadcast to every connected client without ever
//! waiting for one.
//!
//! Owns: the list of subscribers and each client's bounded [`ClientQueue`],
//! the [`History`] ring of this run (with the run's [`Epoch`]), and the
//! notices a stream opens with: `hello`, then `reset` and `gap` when a
//! resuming client needs them.
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

use crate::epoch::{Epoch, Position};
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Resume {
    /// Live only.
    #[default]
    Live,
    /// Every retained outcome after this position (a client resuming); a
    /// position from another run replays this run from its start.
    Since(Position),
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
            Kind::Gap | Kind::Hello | Kind::Reset => true,
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

/// The last `--history` outcomes of this run, for replay on resume and
/// `GET /api/events`. Written only by the fan-out thread, in `seq` order.
#[derive(Debug)]
pub struct History {
    epoch: Epoch,
    ring: Mutex<Ring>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Ring {
    messages: VecDeque<Broadcast>,
    /// The last `seq` handed out, retained or not (`--history 0` keeps none).
    newest: u64,
}

/// Retained outcomes after a position, and what the client must be told first.
#[derive(Debug, Default)]
pub struct Replay {
    /// Outcomes, oldest first.
    pub messages: Vec<Broadcast>,
    /// `(from, to)`: outcomes asked for but already gone from the ring.
    pub gap: Option<(u64, u64)>,
    /// Set when the position is not from this run: the replay then starts at
    /// this run's first outcome.
    pub reset: Option<Reset>,
}

/// A resuming client's position is from another run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The run the client named; `None` when it named none and its `seq` is
    /// beyond anything this run has handed out.
    pub previous: Option<Epoch>,
}

impl History {
    /// A ring of at most `capacity` outcomes of the run `epoch`.
    pub fn new(capacity: usize, epoch: Epoch) -> Self {
        History {
            epoch,
            ring: Mutex::new(Ring {
                messages: VecDeque::with_capacity(capacity.min(1024)),
                newest: 0,
            }),
            capacity,
        }
    }

    /// The run whose outcomes this ring holds.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    fn push(&self, message: &Broadcast) {
        let mut ring = self.lock();
        ring.newest = message.seq;
        if self.capacity == 0 {
            return;
        }
        if ring.messages.len() == self.capacity {
            ring.messages.pop_front();
        }
        ring.messages.push_back(message.clone());
    }

    /// Up to `limit` retained outcomes after `position`.
    ///
    /// A position names its run by epoch; one from another run is answered
    /// with a [`Reset`] and this run from its start, never with the outcomes
    /// after its `seq` (which would skip this run's first ones). A position
    /// without an epoch cannot be checked and is taken to be from this run,
    /// unless its `seq` is beyond the newest one handed out: that can only
    /// come from an earlier run.
    pub fn after(&self, position: &Position, limit: usize) -> Replay {
        let ring = self.lock();
        let from_this_run =
            position.seq <= ring.newest && position.epoch.as_ref().is_none_or(|e| *e == self.epoch);
        let (since, reset) = if from_this_run {
            (position.seq, None)
        } else {
            let previous = position.epoch.clone();
            (0, Some(Reset { previous }))
        };
        let first_retained = ring.messages.front().map_or(ring.newest + 1, |m| m.seq);
        let gap = (since + 1 < first_retained).then(|| (since + 1, first_retained - 1));
        let messages = ring
            .messages
            .iter()
            .filter(|m| m.seq > since)
            .take(limit)
            .cloned()
            .collect();
        Replay {
            messages,
            gap,
            reset,
        }
    }

    /// The last `n` retained outcomes, oldest first.
    pub fn last(&self, n: usize) -> Vec<Broadcast> {
        let ring = self.lock();
        let messages = &ring.messages;
        messages
            .iter()
            .skip(messages.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The last `seq` handed out in this run (0 before the first outcome).
    pub fn newest(&self) -> u64 {
        self.lock().newest
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
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

    /// Greets the subscriber, replays what it asked for, then makes it live.
    /// All of it happens on this thread between two broadcasts, which is what
    /// makes the seam exact and the `seq` in the hello the last one before
    /// the live stream.
    fn add(&mut self, subscriber: Subscriber) {
        let epoch = self.history.epoch();
        subscriber
            .queue
            .preload(hello_message(epoch, self.history.newest()));
        let replay = match &subscriber.interest.resume {
            Resume::Live => Replay::default(),
            Resume::Since(position) => self.history.after(position, usize::MAX),
            Resume::Last(n) => Replay {
                messages: self.history.last(*n),
                ..Replay::default()
            },
        };
        if let Some(reset) = &replay.reset {
            subscriber.queue.preload(reset_message(epoch, reset));
        }
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

/// The first message of every stream: which run this is, and the newest
/// `seq` at the moment the client joined (replayed and live outcomes follow).
fn hello_message(epoch: &Epoch, newest: u64) -> Broadcast {
    // An epoch is letters, digits, '-' and '_' only (see `Epoch::parse`):
    // nothing in it needs escaping.
    let json = format!(r#"{{"type":"hello","epoch":"{epoch}","seq":{newest}}}"#);
    Broadcast {
        kind: Kind::Hello,
        seq: newest,
        status: "",
        json: Bytes::from(json),
    }
}

/// The message telling a client its position is from another run: what
/// follows is this run from its start.
fn reset_message(epoch: &Epoch, reset: &Reset) -> Broadcast {
    let previous = match &reset.previous {
        Some(previous) => format!(r#""{previous}""#),
        None => "null".to_owned(),
    };
    let json = format!(r#"{{"type":"reset","epoch":"{epoch}","previousEpoch":{previous}}}"#);
    Broadcast {
        kind: Kind::Reset,
        seq: 0,
        status: "",
        json: Bytes::from(json),
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

    const RUN: &str = "00000000000000aa";

    fn run_epoch() -> Epoch {
        Epoch::parse(RUN).expect("valid epoch")
    }

    fn fan_out(history: usize) -> FanOut {
        FanOut {
            subscribers: Vec::new(),
            history: Arc::new(History::new(history, run_epoch())),
            gauges: Arc::new(Gauges::default()),
            faults: Arc::new(Faults::new(Arc::default(), None)),
        }
    }

    fn since(epoch: Option<&str>, seq: u64) -> Resume {
        Resume::Since(Position {
            epoch: epoch.map(|e| Epoch::parse(e).expect("valid epoch")),
            seq,
        })
    }

    fn subscribe(fan: &mut FanOut, capacity: usize, interest: Interest) -> Arc<ClientQueue> {
        let queue = Arc::new(ClientQueue::new(capacity));
        fan.add(Subscriber {
            queue: Arc::clone(&queue),
            interest,
        });
        queue
    }

    /// What a client got, without the `hello` every stream opens with.
    fn drain(queue: &ClientQueue) -> Vec<(Kind, u64)> {
        let mut got = Vec::new();
        queue.take_all(&mut got, Duration::ZERO);
        got.iter()
            .map(|m| (m.kind, m.seq))
            .filter(|(kind, _)| *kind != Kind::Hello)
            .collect()
    }

    /// Everything a client got, as JSON text.
    fn drain_text(queue: &ClientQueue) -> Vec<String> {
        let mut got = Vec::new();
        queue.take_all(&mut got, Duration::ZERO);
        got.iter()
            .map(|m| String::from_utf8_lossy(&m.json).into_owned())
            .collect()
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
            resume: since(Some(RUN), 7),
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
            resume: since(None, 3),
            ..Interest::default()
        };
        let q = subscribe(&mut fan, 10, interest);
        let got = drain(&q);
        assert_eq!(got[0], (Kind::Gap, 15));
        assert_eq!(
            got[1..].iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [16, 17, 18, 19, 20]
        );
        let position = Position {
            epoch: Some(run_epoch()),
            seq: 3,
        };
        let replay = fan.history.after(&position, usize::MAX);
        assert_eq!(replay.gap, Some((4, 15)));
        assert_eq!(replay.reset, None);
    }

    #[test]
    fn every_stream_opens_with_a_hello_naming_the_run_and_the_newest_seq() {
        let mut fan = fan_out(10);
        for seq in 1..=4 {
            fan.deliver(&[message(seq)]);
        }
        let q = subscribe(&mut fan, 10, Interest::default());
        fan.deliver(&[message(5)]);
        let got = drain_text(&q);
        assert_eq!(
            got[0],
            format!(r#"{{"type":"hello","epoch":"{RUN}","seq":4}}"#)
        );
        assert_eq!(got.len(), 2, "hello, then live outcome 5: {got:?}");
    }

    #[test]
    fn a_position_from_another_run_is_reset_and_replayed_from_this_runs_start() {
        let mut fan = fan_out(100);
        for seq in 1..=30 {
            fan.deliver(&[message(seq)]);
        }
        // The client left the other run at 20: this run is already past it.
        let interest = Interest {
            resume: since(Some("00000000000000bb"), 20),
            ..Interest::default()
        };
        let q = subscribe(&mut fan, 10, interest);
        let got = drain_text(&q);
        assert!(got[0].contains(r#""type":"hello""#), "{got:?}");
        assert_eq!(
            got[1],
            format!(r#"{{"type":"reset","epoch":"{RUN}","previousEpoch":"00000000000000bb"}}"#)
        );
        assert_eq!(got.len(), 2 + 30, "every outcome of this run follows");
    }

    #[test]
    fn a_reset_names_what_this_run_no_longer_retains_as_a_gap() {
        let mut fan = fan_out(5);
        for seq in 1..=20 {
            fan.deliver(&[message(seq)]);
        }
        let interest = Interest {
            resume: since(Some("old"), 18),
            ..Interest::default()
        };
        let q = subscribe(&mut fan, 10, interest);
        let got = drain(&q);
        assert_eq!(got[0].0, Kind::Reset);
        assert_eq!(got[1], (Kind::Gap, 15));
        assert_eq!(
            got[2..].iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [16, 17, 18, 19, 20]
        );
    }

    #[test]
    fn a_seq_without_an_epoch_is_trusted_unless_this_run_never_reached_it() {
        let history = History::new(100, run_epoch());
        for seq in 1..=10 {
            history.push(&message(seq));
        }
        let bare = |seq| Position { epoch: None, seq };
        let within = history.after(&bare(7), usize::MAX);
        assert_eq!(within.reset, None);
        assert_eq!(within.messages.len(), 3);
        let beyond = history.after(&bare(11), usize::MAX);
        assert_eq!(beyond.reset, Some(Reset { previous: None }));
        assert_eq!(beyond.messages.len(), 10);
    }

    #[test]
    fn with_no_history_kept_a_reset_names_the_whole_run_as_a_gap() {
        let history = History::new(0, run_epoch());
        for seq in 1..=10 {
            history.push(&message(seq));
        }
        let position = Position {
            epoch: Some(Epoch::parse("old").expect("valid")),
            seq: 4,
        };
        let replay = history.after(&position, usize::MAX);
        assert!(replay.reset.is_some());
        assert_eq!(replay.gap, Some((1, 10)));
        assert!(replay.messages.is_empty());
        assert_eq!(history.newest(), 10);
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
