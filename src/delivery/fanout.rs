//! The fan-out thread: appends every broadcast to the log and writes each
//! batch to every caught-up client itself, without blocking.
//!
//! Owns: the list of connected clients. Reads the hub's broadcast channel and
//! the subscribe channel; writes the log and, on the fast path, clients'
//! sockets (non-blocking). A client whose socket would block, or that is
//! replaying, is served by its own thread meanwhile (see `client`); the
//! fan-out never waits for one.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, select_biased};

use super::client::{Client, Keep};
use super::message::Broadcast;
use super::shared_log::Log;
use crate::ops::faults::{Faults, Role};

/// Most broadcasts handed out in one pass of the fan-out (bounds the time a
/// new subscriber waits to be added).
const MAX_BATCH: usize = 256;

/// Capacity of the subscribe channel: transports wait briefly only if a burst
/// of connections outpaces the fan-out thread.
const SUBSCRIBE_CHANNEL_CAPACITY: usize = 1024;

/// Lets transports add clients to the fan-out.
#[derive(Clone)]
pub struct Subscriptions {
    subscribe: Sender<Arc<Client>>,
}

impl Subscriptions {
    /// Registers a client. The fan-out thread places it in the log between
    /// two batches, so its replay and the live stream meet without a seam;
    /// `false` when the daemon is stopping.
    pub fn subscribe(&self, client: Arc<Client>) -> bool {
        self.subscribe.send(client).is_ok()
    }
}

/// Starts the fan-out thread. It ends when the hub's broadcast channel is
/// closed, and then tells every client to finish. A panic in it is an
/// essential stage's death (see [`Faults::run_essential`]).
pub fn spawn(
    broadcasts: Receiver<Broadcast>,
    log: Arc<Log>,
    faults: Arc<Faults>,
) -> io::Result<(Subscriptions, JoinHandle<()>)> {
    let (subscribe, subscribed) = crossbeam_channel::bounded(SUBSCRIBE_CHANNEL_CAPACITY);
    let handle = thread::Builder::new()
        .name("fanout".into())
        .spawn(move || {
            let fanout = FanOut {
                clients: Vec::new(),
                log,
                faults: Arc::clone(&faults),
            };
            faults.run_essential(Role::Fanout, || fanout.run(&broadcasts, subscribed));
        })?;
    Ok((Subscriptions { subscribe }, handle))
}

/// The fan-out thread's state.
struct FanOut {
    clients: Vec<Arc<Client>>,
    log: Arc<Log>,
    faults: Arc<Faults>,
}

impl FanOut {
    fn run(mut self, broadcasts: &Receiver<Broadcast>, mut subscribed: Receiver<Arc<Client>>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            select_biased! {
                recv(subscribed) -> client => match client {
                    Ok(client) => self.add(client),
                    // No transport is left to subscribe (shutdown): stop watching.
                    Err(_) => subscribed = crossbeam_channel::never(),
                },
                recv(broadcasts) -> message => match message {
                    Ok(first) => {
                        // Whatever else is already waiting goes out with it.
                        batch.push(first);
                        batch.extend(broadcasts.try_iter().take(MAX_BATCH - 1));
                        // Clients that subscribed while the batch gathered may
                        // have connected before some of it was made.
                        for client in subscribed.try_iter() {
                            self.add(client);
                        }
                        self.deliver(&batch);
                        batch.clear();
                    }
                    Err(_) => break,
                },
            }
        }
        // Dropping `self` tells every client to finish (see `Drop`).
    }

    /// Places a new client in the log; its own thread takes it from there.
    fn add(&mut self, client: Arc<Client>) {
        client.join(self.log.start(&client.interest().resume));
        self.clients.push(client);
    }

    /// Appends `batch` to the log, then writes it to every caught-up client
    /// without blocking, forgetting the ones that have gone.
    fn deliver(&mut self, batch: &[Broadcast]) {
        self.faults.injection_point(Role::Fanout);
        let start = self.log.append(batch);
        self.clients
            .retain(|client| client.deliver(start, batch) == Keep::Yes);
    }
}

impl Drop for FanOut {
    /// However the fan-out ends — its input closed, or a panic unwinding it —
    /// every client is told to finish, so each thread sends what is left of
    /// the log, says goodbye and ends instead of waiting for more.
    fn drop(&mut self) {
        for client in self.clients.drain(..) {
            client.end();
        }
        // Nothing more will be appended: a waiting publisher drains and ends.
        self.log.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::client::Sink;
    use crate::delivery::{ClientCounts, Interest, Kind};
    use crate::epoch::Epoch;
    use bytes::Bytes;
    use std::sync::Mutex;

    /// A client's socket that keeps the seq of every outcome written to it.
    struct Seqs(Arc<Mutex<Vec<u64>>>);

    impl Sink for Seqs {
        fn write_message(&mut self, message: &Broadcast) -> io::Result<()> {
            self.0.lock().expect("lock").push(message.seq);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn set_blocking(&mut self, _blocking: bool) -> io::Result<()> {
            Ok(())
        }
        fn keepalive(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn goodbye(&mut self) {}
        fn fell_behind(&mut self, _gap: &Broadcast, _from: u64, _to: u64) -> io::Result<()> {
            Ok(())
        }
        fn restarted(&mut self, _reset: &Broadcast) -> io::Result<()> {
            Ok(())
        }
    }

    fn outcome(seq: u64) -> Broadcast {
        Broadcast {
            kind: Kind::Event,
            seq,
            status: "on-time",
            json: Bytes::from(format!(r#"{{"seq":{seq}}}"#)),
        }
    }

    /// A client whose subscription is waiting when a batch comes is placed
    /// in the log before that batch: it misses nothing made after it
    /// subscribed, whichever channel the fan-out looks at first.
    #[test]
    fn a_subscription_waiting_when_a_batch_comes_is_placed_before_the_batch() {
        // Heartbeats by `Default`: delivery may not name `ops::health`.
        let faults = Arc::new(Faults::new(Arc::default(), None));
        let log = Arc::new(Log::new(16, usize::MAX, Epoch::parse("e").expect("epoch")));
        let client = Arc::new(Client::new(
            Interest::default(),
            Arc::new(ClientCounts::default()),
        ));
        let written = Arc::new(Mutex::new(Vec::new()));
        client.attach(Box::new(Seqs(Arc::clone(&written))));
        // Subscribed first, then the batch: both wait when the fan-out looks.
        let (subscribe, subscribed) = crossbeam_channel::bounded(1);
        let (broadcast, broadcasts) = crossbeam_channel::bounded(2);
        subscribe.send(Arc::clone(&client)).expect("subscribed");
        broadcast.send(outcome(1)).expect("sent");
        broadcast.send(outcome(2)).expect("sent");
        drop((subscribe, broadcast));
        let fanout = FanOut {
            clients: Vec::new(),
            log: Arc::clone(&log),
            faults: Arc::clone(&faults),
        };
        // Ends with its input, telling the client to finish.
        fanout.run(&broadcasts, subscribed);
        // The client's own thread writes what its cursor has, then ends.
        client.serve(&log, &faults);
        assert_eq!(*written.lock().expect("lock"), [1, 2]);
    }
}
