//! The fan-out thread: appends every broadcast to the log and has each batch
//! written to every caught-up client, without blocking, by the delivery
//! threads (`--delivery-threads`, one per core by default), each of which
//! owns a share of the clients; with one, the fan-out writes itself.
//!
//! Owns: the delivery threads and which clients each serves. Reads the hub's
//! broadcast channel and the subscribe channel; writes the log (its one
//! writer) and each delivery thread's work channel, in order: a client is
//! handed to its thread after it is placed in the log and before the first
//! batch appended after that, so it misses nothing and gets nothing twice.
//! A delivery thread writes clients' sockets on the fast path only. A client
//! whose socket would block, or that is replaying, is served by its own
//! thread meanwhile (see `client`); nobody here waits for one.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Batches (and new clients) waiting for one delivery thread; past it the
/// fan-out waits for that thread, as it would for its own writes. Small:
/// what waits here is held beside the log (at most 8 × `MAX_BATCH` messages
/// behind the slowest thread) and shows in no backlog.
const WORK_CHANNEL_CAPACITY: usize = 8;

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

/// Starts the fan-out thread and, when `threads` > 1, that many delivery
/// threads. It ends when the hub's broadcast channel is closed, and then
/// tells every client to finish. A panic in any of them is an essential
/// stage's death (see [`Faults::run_essential`]).
pub fn spawn(
    broadcasts: Receiver<Broadcast>,
    log: Arc<Log>,
    faults: Arc<Faults>,
    threads: usize,
) -> io::Result<(Subscriptions, JoinHandle<()>)> {
    let (subscribe, subscribed) = crossbeam_channel::bounded(SUBSCRIBE_CHANNEL_CAPACITY);
    let mut shards = Vec::new();
    if threads > 1 {
        for n in 1..=threads {
            shards.push(Shard::spawn(n, Arc::clone(&faults))?);
        }
    }
    let handle = thread::Builder::new()
        .name("fanout".into())
        .spawn(move || {
            let fanout = FanOut {
                clients: Clients::default(),
                shards,
                next_shard: 0,
                log,
                faults: Arc::clone(&faults),
            };
            faults.run_essential(Role::Fanout, || fanout.run(&broadcasts, subscribed));
        })?;
    Ok((Subscriptions { subscribe }, handle))
}

/// What the fan-out hands a delivery thread, in the log's order.
enum Work {
    /// A client placed in the log: this thread writes to it from now on.
    Add(Arc<Client>),
    /// A batch appended to the log at this position.
    Batch(u64, Arc<[Broadcast]>),
}

/// One delivery thread, seen from the fan-out.
struct Shard {
    work: Option<Sender<Work>>,
    thread: Option<JoinHandle<()>>,
    /// Clients handed to it and not yet gone: counted up by the fan-out
    /// before it sends one, down by the thread as they go, so it is never
    /// less than what the thread holds or will hold. A thread with none is
    /// not sent batches (a wake-up per batch for nothing, with no client:
    /// a tenth of the context switches of an ingest request).
    clients: Arc<AtomicUsize>,
}

impl Shard {
    fn spawn(n: usize, faults: Arc<Faults>) -> io::Result<Self> {
        let (work, todo) = crossbeam_channel::bounded(WORK_CHANNEL_CAPACITY);
        let count = Arc::new(AtomicUsize::new(0));
        let held = Arc::clone(&count);
        let thread = thread::Builder::new()
            .name(format!("delivery-{n}"))
            .spawn(move || {
                let mut clients = Clients::default();
                faults.run_essential(Role::Fanout, || {
                    for work in todo {
                        match work {
                            Work::Add(client) => clients.0.push(client),
                            Work::Batch(start, batch) => {
                                let before = clients.0.len();
                                clients.deliver(start, &batch);
                                held.fetch_sub(before - clients.0.len(), Ordering::Relaxed);
                            }
                        }
                    }
                });
                // Dropping `clients` tells each to finish.
            })?;
        Ok(Shard {
            work: Some(work),
            thread: Some(thread),
            clients: count,
        })
    }

    /// Whether it has clients to write a batch to.
    fn serves_anyone(&self) -> bool {
        self.alive() && self.clients.load(Ordering::Relaxed) > 0
    }

    /// Hands `work` over; gives it back if the thread is gone (it
    /// panicked: the daemon is dying, or an embedded one serves on), and
    /// from then on takes nothing.
    fn send(&mut self, work: Work) -> Result<(), Work> {
        let Some(sender) = &self.work else {
            return Err(work);
        };
        sender.send(work).map_err(|refused| {
            self.work = None;
            refused.into_inner()
        })
    }

    /// Whether it still takes work.
    fn alive(&self) -> bool {
        self.work.is_some()
    }
}

/// Clients one thread writes to. However that thread ends — its input
/// closed, or a panic unwinding it — each is told to finish, so its own
/// thread sends what is left of the log, says goodbye and ends instead of
/// waiting for more.
#[derive(Default)]
struct Clients(Vec<Arc<Client>>);

impl Clients {
    /// Writes `batch` (appended at `start`) to every caught-up client
    /// without blocking, forgetting the ones that have gone.
    fn deliver(&mut self, start: u64, batch: &[Broadcast]) {
        self.0
            .retain(|client| client.deliver(start, batch) == Keep::Yes);
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for client in self.0.drain(..) {
            client.end();
        }
    }
}

/// The fan-out thread's state.
struct FanOut {
    /// The clients it writes to itself (when there are no delivery threads).
    clients: Clients,
    shards: Vec<Shard>,
    /// The delivery thread the next client goes to.
    next_shard: usize,
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

    /// Places a new client in the log, then hands it to the delivery
    /// thread whose turn it is (round robin); its own thread takes it from
    /// there.
    fn add(&mut self, client: Arc<Client>) {
        client.join(self.log.start(&client.interest().resume));
        if self.shards.is_empty() {
            self.clients.0.push(client);
            return;
        }
        let mut work = Work::Add(client);
        for _ in 0..self.shards.len() {
            let turn = self.next_shard % self.shards.len();
            self.next_shard = self.next_shard.wrapping_add(1);
            let shard = &mut self.shards[turn];
            shard.clients.fetch_add(1, Ordering::Relaxed);
            match shard.send(work) {
                Ok(()) => return,
                Err(refused) => {
                    shard.clients.fetch_sub(1, Ordering::Relaxed);
                    work = refused;
                }
            }
        }
        // Every delivery thread is gone: the client is told to finish
        // rather than left waiting for outcomes nobody will write.
        if let Work::Add(client) = work {
            client.end();
        }
    }

    /// Appends `batch` to the log, then has it written to every caught-up
    /// client: by the delivery threads, each to its own, or here.
    fn deliver(&mut self, batch: &[Broadcast]) {
        self.faults.injection_point(Role::Fanout);
        let start = self.log.append(batch);
        if self.shards.is_empty() {
            self.clients.deliver(start, batch);
            return;
        }
        let mut shared: Option<Arc<[Broadcast]>> = None;
        for shard in self.shards.iter_mut().filter(|s| s.serves_anyone()) {
            let batch = shared.get_or_insert_with(|| batch.into());
            let _ = shard.send(Work::Batch(start, Arc::clone(batch)));
        }
    }
}

impl Drop for FanOut {
    /// However the fan-out ends, every client is told to finish (by its
    /// delivery thread, which ends once its work channel closes), and only
    /// then is the log closed.
    fn drop(&mut self) {
        drop(std::mem::take(&mut self.clients));
        // Every channel closed first, so the threads finish side by side.
        for shard in &mut self.shards {
            shard.work = None;
        }
        for shard in &mut self.shards {
            if let Some(thread) = shard.thread.take() {
                let _ = thread.join();
            }
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
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    /// A client's socket that keeps the seq of every outcome written to
    /// it, and the name of each thread that wrote one.
    struct Seqs(Arc<Mutex<Vec<u64>>>, Arc<Mutex<BTreeSet<String>>>);

    impl Sink for Seqs {
        fn write_message(&mut self, message: &Broadcast) -> io::Result<()> {
            self.0.lock().expect("lock").push(message.seq);
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.1.lock().expect("lock").insert(name);
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
        client.attach(Box::new(Seqs(Arc::clone(&written), Arc::default())));
        // Subscribed first, then the batch: both wait when the fan-out looks.
        let (subscribe, subscribed) = crossbeam_channel::bounded(1);
        let (broadcast, broadcasts) = crossbeam_channel::bounded(2);
        subscribe.send(Arc::clone(&client)).expect("subscribed");
        broadcast.send(outcome(1)).expect("sent");
        broadcast.send(outcome(2)).expect("sent");
        drop((subscribe, broadcast));
        let fanout = FanOut {
            clients: Clients::default(),
            shards: Vec::new(),
            next_shard: 0,
            log: Arc::clone(&log),
            faults: Arc::clone(&faults),
        };
        // Ends with its input, telling the client to finish.
        fanout.run(&broadcasts, subscribed);
        // The client's own thread writes what its cursor has, then ends.
        client.serve(&log, &faults);
        assert_eq!(*written.lock().expect("lock"), [1, 2]);
    }

    /// A fan-out running with `threads` delivery threads over a log of
    /// 1,024 messages, and what a test feeds it through.
    struct Running {
        faults: Arc<Faults>,
        log: Arc<Log>,
        broadcast: Sender<Broadcast>,
        subscriptions: Subscriptions,
        fanout: JoinHandle<()>,
    }

    fn running(threads: usize) -> Running {
        let faults = Arc::new(Faults::new(Arc::default(), None));
        let log = Arc::new(Log::new(
            1024,
            usize::MAX,
            Epoch::parse("e").expect("epoch"),
        ));
        let (broadcast, broadcasts) = crossbeam_channel::bounded(1024);
        let (subscriptions, fanout) =
            spawn(broadcasts, Arc::clone(&log), Arc::clone(&faults), threads).expect("spawn");
        Running {
            faults,
            log,
            broadcast,
            subscriptions,
            fanout,
        }
    }

    /// Which threads wrote to the clients of a test.
    type Writers = Arc<Mutex<BTreeSet<String>>>;

    /// A subscribed client with its own thread serving it, as a transport
    /// starts one: the thread, and the seqs written to it.
    fn served_client(
        subscriptions: &Subscriptions,
        log: &Arc<Log>,
        faults: &Arc<Faults>,
        writers: &Writers,
    ) -> (JoinHandle<String>, Arc<Mutex<Vec<u64>>>) {
        let client = Arc::new(Client::new(
            Interest::default(),
            Arc::new(ClientCounts::default()),
        ));
        let written = Arc::new(Mutex::new(Vec::new()));
        client.attach(Box::new(Seqs(Arc::clone(&written), Arc::clone(writers))));
        assert!(subscriptions.subscribe(Arc::clone(&client)));
        let (log, faults) = (Arc::clone(log), Arc::clone(faults));
        let thread = std::thread::spawn(move || client.serve(&log, &faults));
        (thread, written)
    }

    /// With delivery threads, clients dealt out round robin each get every
    /// outcome once, in order, while the fan-out runs (not only from their
    /// own threads at the end), whichever thread writes to them.
    #[test]
    fn delivery_threads_write_every_outcome_once_in_order_to_each_of_their_clients() {
        let Running {
            faults,
            log,
            broadcast,
            subscriptions,
            fanout,
        } = running(3);
        let writers = Writers::default();
        let clients: Vec<_> = (0..7)
            .map(|_| served_client(&subscriptions, &log, &faults, &writers))
            .collect();
        // Paced, so the clients' threads have gone fast when most come.
        for seq in 1..=500 {
            broadcast.send(outcome(seq)).expect("sent");
            if seq % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let all: Vec<u64> = (1..=500).collect();
        let everyone_has_all = || {
            clients
                .iter()
                .all(|(_, written)| written.lock().expect("lock").len() == all.len())
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !everyone_has_all() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            everyone_has_all(),
            "every client got every outcome while it ran"
        );
        drop((broadcast, subscriptions));
        fanout.join().expect("the fan-out ends with its input");
        for (thread, written) in clients {
            thread.join().expect("the client's thread ends");
            assert_eq!(*written.lock().expect("lock"), all);
        }
        // The fast path ran on the delivery threads, every one of them.
        let writers = writers.lock().expect("lock");
        for n in 1..=3 {
            assert!(writers.contains(&format!("delivery-{n}")), "{writers:?}");
        }
    }

    /// Batches appended while no client is connected go to no delivery
    /// thread; the first client handed to one afterwards still gets every
    /// outcome from where it joined, in order, from that thread.
    #[test]
    fn a_delivery_thread_sent_nothing_while_it_had_no_client_misses_nothing_after() {
        let Running {
            faults,
            log,
            broadcast,
            subscriptions,
            fanout,
        } = running(2);
        for seq in 1..=100 {
            broadcast.send(outcome(seq)).expect("sent");
        }
        let writers = Writers::default();
        let (thread, written) = served_client(&subscriptions, &log, &faults, &writers);
        for seq in 101..=300 {
            broadcast.send(outcome(seq)).expect("sent");
            if seq % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while written.lock().expect("lock").last() != Some(&300)
            && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop((broadcast, subscriptions));
        fanout.join().expect("the fan-out ends with its input");
        thread.join().expect("the client's thread ends");
        let written = written.lock().expect("lock");
        let first = *written.first().expect("outcomes written");
        assert!(first <= 101, "it joined before 101 was made: {first}");
        assert_eq!(*written, (first..=300).collect::<Vec<_>>());
        assert!(writers.lock().expect("lock").contains("delivery-1"));
    }
}
