//! Assembly: builds every stage, wires the channels between them, and takes
//! them down again in flow order.
//!
//! Owns: the stop channel and the join handles of every long-lived thread.
//! The running daemon is a [`Server`]: its address, a way to submit events,
//! the latest stats, health, and [`Server::stop`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::cluster::feed::Feed;
use crate::cluster::ingest::{ApplySettings, Consumer, Forwarder, IngestCounts};
use crate::cluster::lease::{Lease, LeaseKeeper, TakeOver};
use crate::cluster::publish::Publisher;
use crate::cluster::{Keys, Link, Redis};
use crate::config::{Config, Knobs, KnobsUpdate, NodeRole, WorkMode};
use crate::delivery::{Broadcast, ClientCounts, ClientSlots, Inbound, Log, Subscriptions};
use crate::epoch::Epoch;
use crate::http::Entrance;
use crate::ops::faults::Faults;
use crate::ops::health::Heartbeats;
use crate::ops::limits::Caps;
use crate::ops::logging::RateLimit;
use crate::pipeline::admission::WorkEstimator;
use crate::pipeline::event::{Event, Outcome};
use crate::pipeline::hub::{self, Hub, LatestStats};
use crate::pipeline::intake::{self, Entry, Intake};
use crate::pipeline::ledger::Ledger;
use crate::pipeline::meters::Meters;
use crate::pipeline::schedule::WorkQueue;
use crate::pipeline::stats::{
    ClientState, ClusterState, GeneratorState, QueueState, Readings, Snapshot, ThreadState,
    WorkState, WorkerState,
};
use crate::pipeline::workers::{self, Work, WorkerContext};
use crate::time::WallClock;
use crate::work::pull::RemoteWorkers;
use crate::{delivery, http, ops::limits, pipeline::generator};

/// How long shutdown waits for events in flight to get their verdicts. Their
/// deadlines bound the drain, but a deadline may be an hour away: past this
/// limit the daemon exits and says how many events it left without a verdict.
const DRAIN_LIMIT: Duration = Duration::from_millis(1500);

/// How long shutdown waits for client writers to send their goodbye.
const WRITER_GOODBYE: Duration = Duration::from_millis(400);

/// A running punctual daemon.
pub struct Server {
    addr: SocketAddr,
    clock: WallClock,
    intake: Option<Intake>,
    latest: Arc<LatestStats>,
    health: Arc<Heartbeats>,
    client_counts: Arc<ClientCounts>,
    ledger: Arc<Ledger>,
    stopper: Stopper,
    /// Threads that end when the stop channel closes: generator, HTTP front.
    producers: Vec<JoinHandle<()>>,
    /// Threads that end when their input channel is drained: workers, hub, fan-out (in that order).
    pipeline: Vec<JoinHandle<()>>,
}

/// Asks a running [`Server`] to stop, from any thread (a signal handler's, say).
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<Mutex<Option<Sender<()>>>>,
    health: Arc<Heartbeats>,
}

impl Stopper {
    /// Starts the shutdown: producers stop; [`Server::wait`] returns once
    /// every event in flight has its verdict and every client was told.
    pub fn stop(&self) {
        self.health.set_stopping();
        // Dropping the only sender closes the channel: every producer sees it.
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Reads a running [`Server`]'s health and stats from any thread.
#[derive(Clone)]
pub struct Monitor {
    health: Arc<Heartbeats>,
    latest: Arc<LatestStats>,
}

impl Monitor {
    /// Readiness, as `/readyz` reports it.
    pub fn ready(&self) -> Result<(), String> {
        self.health.ready()
    }

    /// Why the daemon can no longer work (a stage died, the processor
    /// lease was lost), once it is so.
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Liveness as the systemd watchdog sees it (see `Heartbeats::alive`).
    pub fn alive(&self) -> Result<(), String> {
        self.health.alive()
    }

    /// The latest stats snapshot.
    pub fn stats(&self) -> Option<Arc<Snapshot>> {
        self.latest.get().map(|(snapshot, _)| snapshot)
    }
}

impl Server {
    /// Binds the listener, starts every stage, and returns once the daemon is
    /// serving. Fails when the address cannot be bound, a thread cannot be
    /// started, or the open-file limit is too low to serve (`InvalidInput`).
    pub fn start(config: Config) -> io::Result<Server> {
        let listener = http::bind(&config).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        let addr = listener.local_addr()?;
        // A limit too low to serve is the operator's to fix: InvalidInput,
        // which the binary exits with as a usage error (status 2).
        let caps = limits::caps(config.max_connections, config.max_clients)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let redis = cluster_url(&config)?;
        // The bound address, so the Host rules know the real port when 0 was asked for.
        let config = Config {
            listen: addr,
            ..config
        };
        let node = match (config.role, redis) {
            (NodeRole::Edge, Some(url)) => start_edge(&config, caps, &url)?,
            (_, url) => start_pipeline(&config, caps, url.as_deref())?,
        };
        let mut producers = http::spawn(listener, node.app, node.stopped)?;
        producers.extend(node.producers);
        announce(&config, addr, &node.epoch, &node.shared.knobs, caps);
        let shared = node.shared;
        Ok(Server {
            addr,
            clock: shared.clock,
            intake: node.intake,
            latest: shared.latest,
            stopper: node.stopper,
            health: shared.health,
            client_counts: shared.client_counts,
            ledger: shared.ledger,
            producers,
            pipeline: node.pipeline,
        })
    }

    /// The address the daemon listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The converter between the daemon's instants and epoch milliseconds.
    pub fn clock(&self) -> WallClock {
        self.clock
    }

    /// Enters an event into the pipeline as a producer would.
    pub fn submit(&self, event: Event) -> Entry {
        match &self.intake {
            Some(intake) => intake.submit(event),
            None => Entry::QueueFull,
        }
    }

    /// The latest stats snapshot (taken once a second).
    pub fn stats(&self) -> Option<Arc<Snapshot>> {
        self.latest.get().map(|(snapshot, _)| snapshot)
    }

    /// Whether the daemon is healthy enough to be kept alive (see `/readyz`).
    pub fn ready(&self) -> Result<(), String> {
        self.health.ready()
    }

    /// A handle that reads health and stats from another thread.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            health: Arc::clone(&self.health),
            latest: Arc::clone(&self.latest),
        }
    }

    /// A handle that stops this server from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Blocks until a [`Stopper`] stops the daemon and the shutdown is done.
    pub fn wait(mut self) {
        self.shut_down();
    }

    /// Stops the daemon: producers first, then every event still in flight
    /// gets its verdict (bounded by its deadline), the hub publishes a final
    /// snapshot, and every client is sent a goodbye (WebSocket Close 1001).
    pub fn stop(mut self) {
        let started = Instant::now();
        self.stopper.stop();
        self.shut_down();
        log::info!("stopped in {:?}", started.elapsed());
    }

    /// Waits for the producers to end, then takes the pipeline down in flow order.
    fn shut_down(&mut self) {
        join_all(&mut self.producers);
        self.intake.take();
        if !join_within(&mut self.pipeline, Instant::now() + DRAIN_LIMIT) {
            let left = self.ledger.totals().in_flight;
            log::warn!(
                "drain limit of {DRAIN_LIMIT:?} reached: exiting with {left} events in flight"
            );
            // Detach the stragglers: they end with the process.
            self.pipeline.clear();
            return;
        }
        // The fan-out has closed every client queue; give writers a moment to
        // send their goodbye before the process may exit.
        let until = Instant::now() + WRITER_GOODBYE;
        while self.client_counts.connected.load(Ordering::Acquire) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopper.stop();
        self.shut_down();
    }
}

/// Joins `threads` in order if they all end before `until`; returns whether they did.
fn join_within(threads: &mut Vec<JoinHandle<()>>, until: Instant) -> bool {
    while threads.iter().any(|t| !t.is_finished()) {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    join_all(threads);
    true
}

fn join_all(threads: &mut Vec<JoinHandle<()>>) {
    for thread in threads.drain(..) {
        let name = thread.thread().name().unwrap_or("unnamed").to_owned();
        if thread.join().is_err() {
            log::error!("thread {name} panicked");
        }
    }
}

/// A node's stages, started; the HTTP front is started on them last.
struct Node {
    shared: Shared,
    app: Arc<http::App>,
    epoch: Epoch,
    intake: Option<Intake>,
    stopper: Stopper,
    stopped: Receiver<()>,
    /// Threads that end when the stop channel closes, besides the HTTP front.
    producers: Vec<JoinHandle<()>>,
    /// Threads that end when their input is drained, in flow order.
    pipeline: Vec<JoinHandle<()>>,
}

/// The Redis URL `--role processor` and `edge` need (`None` for `all`).
fn cluster_url(config: &Config) -> io::Result<Option<String>> {
    if config.role == NodeRole::All {
        return Ok(None);
    }
    let url = config.redis.clone().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--role {} needs --redis (PUNCTUAL_REDIS), such as redis://127.0.0.1:6379/0",
                config.role.name()
            ),
        )
    })?;
    Ok(Some(url))
}

/// A link to Redis of its own, for one thread.
fn redis_link(url: &str) -> io::Result<(Redis, Arc<Link>)> {
    let link = Arc::new(Link::default());
    let redis = Redis::new(url, Arc::clone(&link)).map_err(invalid_url)?;
    Ok((redis, link))
}

/// The URL was checked when the flags were read; this is that error again.
fn invalid_url(e: redis::RedisError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// A node with the pipeline (`all`, `processor`): generator, intake,
/// workers, hub, fan-out and, on a processor, the publisher, the consumer
/// of events posted at edges, and the lease that decides whether this
/// processor is the active one.
fn start_pipeline(config: &Config, caps: Caps, redis: Option<&str>) -> io::Result<Node> {
    let shared = Shared::new(config, Heartbeats::new());
    let (stopper, stopped) = stop_channel(&shared.health);
    let (outcome_tx, outcome_rx) = crossbeam_channel::bounded(hub::OUTCOME_CHANNEL_CAPACITY);
    let (broadcast_tx, broadcast_rx) = crossbeam_channel::bounded(hub::BROADCAST_CHANNEL_CAPACITY);
    let (intake, queue) = intake::work_queue(
        config.queue as usize,
        Arc::clone(&shared.knobs),
        Arc::clone(&shared.ledger),
        outcome_tx.clone(),
    );
    // Seqs restart at 1 in every run; the epoch tells clients which run a
    // seq is from.
    let epoch = Epoch::random();
    let (log, subscriptions, fanout_thread) = shared.delivery(config, &epoch, broadcast_rx)?;
    let work = match config.work {
        WorkMode::Simulate => Work::Simulate,
        WorkMode::Http => Work::Http(config.work_url.as_deref().unwrap_or_default().into()),
        WorkMode::Pull => Work::Pull(RemoteWorkers::new(Arc::clone(&shared.health))?),
    };
    let link = match redis {
        Some(url) => Some(ProcessorLink::new(
            config,
            url,
            &shared,
            &epoch,
            (&stopper, &stopped),
        )?),
        None => None,
    };
    let reader = SystemReader::new(config, &shared, &work, &queue, caps, &epoch, link.as_ref());
    let hub_thread = shared
        .hub(config, outcome_rx, broadcast_tx, reader)
        .spawn()?;
    let mut pipeline = shared.spawn_workers(config, &work, queue, outcome_tx)?;
    pipeline.push(hub_thread);
    pipeline.push(fanout_thread);
    let generate = shared.generator(intake.clone(), stopped.clone());
    let mut producers = Vec::new();
    match link {
        // The generator and the consumer wait for the lease.
        Some(link) => pipeline.extend(link.spawn(config, caps, &shared, &log, &intake, generate)?),
        None => producers.push(generate()?),
    }
    let app = shared.front(
        config.clone(),
        caps,
        subscriptions,
        Entrance::Intake(intake.clone()),
        log,
        &work,
    )?;
    Ok(Node {
        shared,
        app,
        epoch,
        intake: Some(intake),
        stopper,
        stopped,
        producers,
        pipeline,
    })
}

/// The stop channel, and the [`Stopper`] that closes it.
fn stop_channel(health: &Arc<Heartbeats>) -> (Stopper, Receiver<()>) {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let stopper = Stopper {
        stop: Arc::new(Mutex::new(Some(stop))),
        health: Arc::clone(health),
    };
    (stopper, stopped)
}

/// Starts a producer: the generator, once the node may generate.
type Generate = Box<dyn FnOnce() -> io::Result<JoinHandle<()>> + Send>;

/// A processor's side of Redis: the link its stats report, the ingest
/// counts, the lease and the connections its threads will use.
struct ProcessorLink {
    url: String,
    epoch: Epoch,
    stopped: Receiver<()>,
    link: Arc<Link>,
    publish: Redis,
    ingest: Arc<IngestCounts>,
    lease: Arc<Lease>,
}

impl ProcessorLink {
    /// A standby until the lease is taken; losing it stops the daemon.
    fn new(
        config: &Config,
        url: &str,
        shared: &Shared,
        epoch: &Epoch,
        (stopper, stopped): (&Stopper, &Receiver<()>),
    ) -> io::Result<Self> {
        let (publish, link) = redis_link(url)?;
        let stopper = stopper.clone();
        let lease = Arc::new(Lease::new(
            epoch.to_string(),
            Duration::from_millis(config.lease_ms),
            Arc::clone(&shared.health),
            Box::new(move || stopper.stop()),
        ));
        Ok(ProcessorLink {
            url: url.to_owned(),
            epoch: epoch.clone(),
            stopped: stopped.clone(),
            link,
            publish,
            ingest: Arc::new(IngestCounts::default()),
            lease,
        })
    }

    /// Starts the publisher and the lease thread, which starts the ingest
    /// consumer and the generator once this processor is the active one.
    /// Both end after the pipeline, in that order.
    fn spawn(
        self,
        config: &Config,
        caps: Caps,
        shared: &Shared,
        log: &Arc<Log>,
        intake: &Intake,
        generate: Generate,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let keys = Keys::new(&config.stream_prefix);
        let (published, publisher_ended) = crossbeam_channel::bounded(0);
        let publisher = Publisher {
            log: Arc::clone(log),
            latest: Arc::clone(&shared.latest),
            keys: keys.clone(),
            redis: self.publish,
            link: Arc::clone(&self.link),
            health: Arc::clone(&shared.health),
            epoch: self.epoch.clone(),
            history: config.history as usize,
            clock: shared.clock,
            id_warnings: RateLimit::new(Duration::from_secs(10)),
            lease: Arc::clone(&self.lease),
            _ended: published,
        }
        .spawn()?;
        let consumer = Consumer {
            intake: intake.clone(),
            redis: Redis::new(&self.url, Arc::clone(&self.link)).map_err(invalid_url)?,
            keys: keys.clone(),
            name: self.epoch.to_string(),
            health: Arc::clone(&shared.health),
            counts: self.ingest,
            clock: shared.clock,
            stop: self.stopped.clone(),
            notes: RateLimit::new(Duration::from_secs(10)),
            settings: shared.settings_applier(config, caps),
            lease: Arc::clone(&self.lease),
        };
        let knobs = Arc::clone(&shared.knobs);
        let take_over: TakeOver = Box::new(move |settings| {
            if let Some(settings) = settings {
                carry_on_with(&knobs, &settings);
            }
            Ok(vec![consumer.spawn()?, generate()?])
        });
        let keeper = LeaseKeeper {
            lease: self.lease,
            redis: Redis::new(&self.url, self.link).map_err(invalid_url)?,
            keys,
            stop: self.stopped,
            published: publisher_ended,
            take_over,
        }
        .spawn()?;
        Ok(vec![publisher, keeper])
    }
}

/// Applies the live settings the last active processor published.
fn carry_on_with(knobs: &Knobs, settings: &crate::config::Settings) {
    let update = settings.live();
    if let Err(e) = update
        .validate()
        .and_then(|()| http::apply_settings(knobs, &update))
    {
        log::warn!("the last processor's settings were not taken ({e}): this one's flags stay");
    }
}

/// An edge: no pipeline; the feed from Redis writes the broadcast channel
/// the fan-out reads, as the hub does on a node with a pipeline.
fn start_edge(config: &Config, caps: Caps, url: &str) -> io::Result<Node> {
    let (redis, link) = redis_link(url)?;
    let keys = Keys::new(&config.stream_prefix);
    let shared = Shared::new(config, Heartbeats::edge());
    let (stopper, stopped) = stop_channel(&shared.health);
    let (broadcast_tx, broadcast_rx) = crossbeam_channel::bounded(hub::BROADCAST_CHANNEL_CAPACITY);
    // The edge's own run until the stream names the processor's.
    let epoch = Epoch::random();
    let (log, subscriptions, fanout_thread) = shared.delivery(config, &epoch, broadcast_rx)?;
    let (counts, meters) = (
        Arc::clone(&shared.client_counts),
        Arc::clone(&shared.meters),
    );
    let forwarder = Arc::new(
        Forwarder::new(url, keys.clone(), Arc::clone(&link), shared.clock).map_err(invalid_url)?,
    );
    let feed = Feed {
        broadcast: broadcast_tx,
        latest: Arc::clone(&shared.latest),
        keys,
        redis,
        link,
        forwarder: Arc::clone(&forwarder),
        health: Arc::clone(&shared.health),
        history: config.history as usize,
        history_bytes: config.history_bytes as usize,
        epoch: epoch.clone(),
        clients: Box::new(move || client_state(&counts, &meters, caps)),
        stop: stopped.clone(),
    }
    .spawn()?;
    let app = shared.front(
        config.clone(),
        caps,
        subscriptions,
        Entrance::Stream(forwarder),
        log,
        &Work::Simulate,
    )?;
    Ok(Node {
        shared,
        app,
        epoch,
        intake: None,
        stopper,
        stopped,
        producers: vec![feed],
        pipeline: vec![fanout_thread],
    })
}

/// What the stages share, made once at start.
struct Shared {
    clock: WallClock,
    knobs: Arc<Knobs>,
    ledger: Arc<Ledger>,
    meters: Arc<Meters>,
    client_counts: Arc<ClientCounts>,
    health: Arc<Heartbeats>,
    faults: Arc<Faults>,
    latest: Arc<LatestStats>,
}

impl Shared {
    fn new(config: &Config, health: Heartbeats) -> Self {
        let health = Arc::new(health);
        Shared {
            clock: WallClock::new(),
            knobs: Arc::new(Knobs::new(config)),
            ledger: Arc::new(Ledger::default()),
            meters: Arc::new(Meters::default()),
            client_counts: Arc::new(ClientCounts::default()),
            faults: Arc::new(Faults::new(Arc::clone(&health), config.test_panic)),
            health,
            latest: Arc::new(LatestStats::default()),
        }
    }

    /// How a processor applies a settings change made at an edge: as
    /// `PUT /api/config` does here, answering the settings then in force.
    fn settings_applier(&self, config: &Config, caps: Caps) -> ApplySettings {
        let (knobs, config) = (Arc::clone(&self.knobs), config.clone());
        Box::new(move |change| {
            let update: KnobsUpdate = http::parse_json(change)?;
            http::apply_settings(&knobs, &update)?;
            Ok(config.effective(&knobs, caps).to_json())
        })
    }

    /// The shared log of the run `epoch`, and the fan-out (with its
    /// delivery threads) appending `broadcasts` to it and writing them to
    /// the clients it is handed.
    fn delivery(
        &self,
        config: &Config,
        epoch: &Epoch,
        broadcasts: Receiver<Broadcast>,
    ) -> io::Result<(Arc<Log>, Subscriptions, JoinHandle<()>)> {
        let log = Arc::new(Log::new(
            config.history as usize,
            config.history_bytes as usize,
            epoch.clone(),
        ));
        let (subscriptions, fanout_thread) = delivery::spawn(
            broadcasts,
            Arc::clone(&log),
            Arc::clone(&self.faults),
            config.delivery_threads(),
        )?;
        Ok((log, subscriptions, fanout_thread))
    }

    /// What starts the generator, writing `intake` until `stopped` closes.
    fn generator(&self, intake: Intake, stopped: Receiver<()>) -> Generate {
        let (knobs, meters, health, faults) = (
            Arc::clone(&self.knobs),
            Arc::clone(&self.meters),
            Arc::clone(&self.health),
            Arc::clone(&self.faults),
        );
        Box::new(move || generator::spawn(intake, knobs, meters, health, stopped, faults))
    }

    /// The hub, reading the outcome channel and writing the broadcast channel.
    fn hub(
        &self,
        config: &Config,
        outcomes: Receiver<Outcome>,
        broadcast: Sender<Broadcast>,
        reader: SystemReader,
    ) -> Hub {
        Hub {
            outcomes,
            broadcast,
            clock: self.clock,
            readings: Box::new(move || reader.read()),
            latest: Arc::clone(&self.latest),
            log_interval: Duration::from_secs(config.log_interval),
            deadline: self.knobs.deadline(),
            health: Arc::clone(&self.health),
            faults: Arc::clone(&self.faults),
        }
    }

    /// The worker threads and the expiry thread, all writing `outcomes`.
    fn spawn_workers(
        &self,
        config: &Config,
        work: &Work,
        queue: Arc<WorkQueue>,
        outcomes: Sender<Outcome>,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let ctx = WorkerContext {
            knobs: Arc::clone(&self.knobs),
            ledger: Arc::clone(&self.ledger),
            meters: Arc::clone(&self.meters),
            estimator: Arc::new(Mutex::new(WorkEstimator::new(
                self.knobs.work(),
                self.knobs.work_jitter(),
            ))),
            faults: Arc::clone(&self.faults),
            work: work.clone(),
            clock: self.clock,
        };
        let expiry = intake::spawn_expiry(
            Arc::clone(&queue),
            Arc::clone(&self.ledger),
            outcomes.clone(),
        )?;
        let mut threads = workers::spawn_workers(config.workers as usize, queue, outcomes, ctx)?;
        threads.push(expiry);
        Ok(threads)
    }

    /// What the HTTP front's handlers share.
    fn front(
        &self,
        config: Config,
        caps: Caps,
        subscriptions: Subscriptions,
        entrance: Entrance,
        log: Arc<Log>,
        work: &Work,
    ) -> io::Result<Arc<http::App>> {
        Ok(Arc::new(http::App {
            subscriptions,
            inbound: Inbound::spawn(Arc::clone(&self.faults))?,
            slots: ClientSlots::new(
                Arc::clone(&self.client_counts),
                caps.clients,
                Arc::clone(&self.faults),
            ),
            client_counts: Arc::clone(&self.client_counts),
            caps,
            latest: Arc::clone(&self.latest),
            static_dir: config.static_dir.clone(),
            next_client: Default::default(),
            knobs: Arc::clone(&self.knobs),
            entrance,
            clock: self.clock,
            log,
            history_capacity: config.history as usize,
            config,
            health: Arc::clone(&self.health),
            meters: Arc::clone(&self.meters),
            work: match work {
                Work::Pull(remote_workers) => Some(Arc::clone(remote_workers)),
                _ => None,
            },
            pages: Default::default(),
            refusals: Default::default(),
        }))
    }
}

/// The start line, and a warning when an open listener has no token.
fn announce(config: &Config, addr: SocketAddr, epoch: &Epoch, knobs: &Knobs, caps: Caps) {
    if config.token.is_none() && !config.listen.ip().is_loopback() {
        log::warn!(
            "listening on {addr} without --token: anyone who can reach it can post events and change settings"
        );
    }
    let role = match config.role {
        NodeRole::All => String::new(),
        NodeRole::Processor => format!(
            " as a processor publishing to {}:outcomes",
            config.stream_prefix
        ),
        NodeRole::Edge => format!(" as an edge fed from {}:outcomes", config.stream_prefix),
    };
    log::info!(
        "punctual {} serving http://{addr}/{role} (epoch {epoch}) — {}",
        env!("CARGO_PKG_VERSION"),
        config.effective(knobs, caps).to_json()
    );
}

/// Reads the rest of the system for the hub's snapshot.
struct SystemReader {
    work: Work,
    config: Config,
    ledger: Arc<Ledger>,
    meters: Arc<Meters>,
    client_counts: Arc<ClientCounts>,
    faults: Arc<Faults>,
    knobs: Arc<Knobs>,
    queue: Arc<WorkQueue>,
    caps: Caps,
    epoch: Epoch,
    /// On a processor, its link to Redis, the ingest stream's counts and
    /// the lease.
    cluster: Option<(Arc<Link>, Arc<IngestCounts>, Arc<Lease>)>,
}

impl SystemReader {
    fn new(
        config: &Config,
        shared: &Shared,
        work: &Work,
        queue: &Arc<WorkQueue>,
        caps: Caps,
        epoch: &Epoch,
        link: Option<&ProcessorLink>,
    ) -> Self {
        SystemReader {
            work: work.clone(),
            config: config.clone(),
            ledger: Arc::clone(&shared.ledger),
            meters: Arc::clone(&shared.meters),
            client_counts: Arc::clone(&shared.client_counts),
            faults: Arc::clone(&shared.faults),
            knobs: Arc::clone(&shared.knobs),
            queue: Arc::clone(queue),
            caps,
            epoch: epoch.clone(),
            cluster: link.map(|l| {
                (
                    Arc::clone(&l.link),
                    Arc::clone(&l.ingest),
                    Arc::clone(&l.lease),
                )
            }),
        }
    }

    fn work_state(&self) -> WorkState {
        let busy = self.meters.busy_workers.load(Ordering::Relaxed);
        let (target, connected, credit, in_flight) = match &self.work {
            Work::Simulate => (None, 0, 0, 0),
            Work::Http(url) => (Some(url.to_string()), 0, 0, busy),
            Work::Pull(d) => (
                Some("/api/work".into()),
                d.connected(),
                d.credit(),
                d.in_flight(),
            ),
        };
        WorkState {
            mode: self.config.work.name().into(),
            target,
            connected,
            credit,
            in_flight,
            // The window's share; the snapshot fills it in.
            error_rate: 0.0,
        }
    }

    fn read(&self) -> Readings {
        let gauge = |g: &std::sync::atomic::AtomicUsize| g.load(Ordering::Relaxed);
        let counter = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let (g, c) = (&self.meters, &self.client_counts);
        Readings {
            totals: self.ledger.totals(),
            queue: QueueState {
                depth: self.queue.len(),
                capacity: self.queue.capacity(),
            },
            workers: WorkerState {
                busy: gauge(&g.busy_workers),
                total: self.config.workers as usize,
                work_ms_total: counter(&g.work_micros) as f64 / 1000.0,
            },
            clients: client_state(c, g, self.caps),
            generator: GeneratorState {
                rate: self.knobs.rate(),
                lag_ticks: counter(&g.lag_ticks),
                tick_jitter_ms_p99: g.tick_jitter.take_p99_ms(),
            },
            work: self.work_state(),
            configured_work_ms: self.knobs.work().as_secs_f64() * 1000.0
                + self.knobs.work_jitter().as_secs_f64() * 500.0,
            threads: ThreadState {
                panics: self.faults.counts(),
            },
            config: self.config.effective(&self.knobs, self.caps),
            epoch: self.epoch.as_str().to_owned(),
            cluster: self
                .cluster
                .as_ref()
                .map(|(link, ingest, lease)| ClusterState {
                    ingest: Some(ingest.state()),
                    lease: Some(lease.state()),
                    ..link.state(NodeRole::Processor)
                }),
        }
    }
}

/// This node's clients, for a snapshot (`backlog` is the hub's or feed's to fill in).
fn client_state(c: &ClientCounts, g: &Meters, caps: Caps) -> ClientState {
    let gauge = |g: &std::sync::atomic::AtomicUsize| g.load(Ordering::Relaxed);
    let counter = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    ClientState {
        connected: gauge(&c.connected),
        websocket: gauge(&c.websocket),
        sse: gauge(&c.sse),
        max: caps.clients,
        dropped_messages: counter(&c.dropped_messages),
        slow: gauge(&c.slow),
        slow_turns: counter(&c.slow_turns),
        backlog: 0,
        connections: gauge(&g.connections),
        max_connections: caps.connections,
        accept_errors: counter(&g.accept_errors),
    }
}
