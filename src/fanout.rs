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

use crossbeam_channel::{Receiver, Sender, select_biased};

use crate::hub::{Broadcast, Kind};
use crate::stats::Gauges;

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
        let mut state = self.lock();
        if state.closed {
            return Offer::Closed;
        }
        if state.messages.len() >= self.capacity {
            drop(state);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Offer::Full;
        }
        let was_empty = state.messages.is_empty();
        state.messages.push_back(message);
        drop(state);
        // The writer only waits on an empty queue: wake it on that edge only.
        if was_empty {
            self.ready.notify_one();
        }
        Offer::Queued
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
            Batch::Messages
        } else if state.closed {
            Batch::Closed
        } else {
            Batch::Idle
        }
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

/// A client's subscription: its queue and what it asked for.
#[derive(Clone, Debug)]
pub struct Subscriber {
    /// Where its messages go.
    pub queue: Arc<ClientQueue>,
    /// Whether it gets stats messages too.
    pub wants_stats: bool,
}

/// Lets transports add subscribers to the fan-out.
#[derive(Clone)]
pub struct Subscriptions {
    subscribe: Sender<Subscriber>,
    client_queue: usize,
}

impl Subscriptions {
    /// Registers a new client and returns its queue.
    pub fn subscribe(&self, wants_stats: bool) -> Option<Arc<ClientQueue>> {
        let queue = Arc::new(ClientQueue::new(self.client_queue));
        let subscriber = Subscriber {
            queue: Arc::clone(&queue),
            wants_stats,
        };
        self.subscribe.send(subscriber).ok()?;
        Some(queue)
    }
}

/// Starts the fan-out thread. It ends when the hub's broadcast channel is
/// closed, and then closes every client queue so writers say goodbye.
pub fn spawn(
    broadcasts: Receiver<Broadcast>,
    client_queue: usize,
    gauges: Arc<Gauges>,
) -> io::Result<(Subscriptions, JoinHandle<()>)> {
    let (subscribe, subscribed) = crossbeam_channel::bounded(SUBSCRIBE_CHANNEL_CAPACITY);
    let handle = thread::Builder::new()
        .name("fanout".into())
        .spawn(move || run(&broadcasts, subscribed, &gauges))?;
    Ok((
        Subscriptions {
            subscribe,
            client_queue,
        },
        handle,
    ))
}

fn run(broadcasts: &Receiver<Broadcast>, subscribed: Receiver<Subscriber>, gauges: &Gauges) {
    let mut subscribers: Vec<Subscriber> = Vec::new();
    let mut subscribed = subscribed;
    loop {
        select_biased! {
            recv(subscribed) -> s => match s {
                Ok(s) => subscribers.push(s),
                // No transport is left to subscribe (shutdown): stop watching.
                Err(_) => subscribed = crossbeam_channel::never(),
            },
            recv(broadcasts) -> message => match message {
                Ok(message) => deliver(&mut subscribers, &message, gauges),
                Err(_) => break,
            },
        }
    }
    for subscriber in subscribers.drain(..) {
        subscriber.queue.close();
    }
}

/// Offers `message` to every subscriber that wants it, forgetting the ones
/// that have gone.
fn deliver(subscribers: &mut Vec<Subscriber>, message: &Broadcast, gauges: &Gauges) {
    subscribers.retain(|s| {
        if message.kind == Kind::Stats && !s.wants_stats {
            return !s.queue.is_closed();
        }
        match s.queue.offer(message.clone()) {
            Offer::Queued => true,
            Offer::Full => {
                gauges.client_dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Offer::Closed => false,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(seq: u64) -> Broadcast {
        Broadcast {
            kind: Kind::Event,
            seq,
            json: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn a_full_queue_refuses_and_counts_instead_of_waiting() {
        let q = ClientQueue::new(2);
        assert_eq!(q.offer(message(1)), Offer::Queued);
        assert_eq!(q.offer(message(2)), Offer::Queued);
        assert_eq!(q.offer(message(3)), Offer::Full);
        assert_eq!(q.dropped(), 1);
        let mut got = Vec::new();
        assert_eq!(q.take_all(&mut got, Duration::ZERO), Batch::Messages);
        assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
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
        let gauges = Gauges::default();
        let slow = Arc::new(ClientQueue::new(1));
        let fast = Arc::new(ClientQueue::new(100));
        let mut subs = vec![
            Subscriber {
                queue: Arc::clone(&slow),
                wants_stats: false,
            },
            Subscriber {
                queue: Arc::clone(&fast),
                wants_stats: false,
            },
        ];
        for seq in 1..=10 {
            deliver(&mut subs, &message(seq), &gauges);
        }
        let mut got = Vec::new();
        fast.take_all(&mut got, Duration::ZERO);
        assert_eq!(got.len(), 10);
        assert_eq!(slow.dropped(), 9);
        assert_eq!(gauges.client_dropped.load(Ordering::Relaxed), 9);
    }
}
