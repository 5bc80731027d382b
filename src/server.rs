//! Assembly: builds every stage, wires the channels between them, and takes
//! them down again in flow order.
//!
//! Owns: the stop channel and the join handles of every long-lived thread.
//! The running daemon is a [`Server`]: its address, a way to submit events,
//! the latest stats, and [`Server::stop`].

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::config::{Config, Knobs};
use crate::event::Event;
use crate::fanout::History;
use crate::hub::{self, Hub, LatestStats};
use crate::stats::{
    ClientState, Gauges, GeneratorState, Ledger, QueueState, Readings, Snapshot, WorkerState,
};
use crate::time::WallClock;
use crate::transport::ClientSlots;
use crate::workers::{self, Entry, Intake, WorkEstimator, WorkerContext};
use crate::{fanout, generator, http, limits};

/// A running punctual daemon.
pub struct Server {
    addr: SocketAddr,
    clock: WallClock,
    intake: Option<Intake>,
    latest: Arc<LatestStats>,
    stop: Option<Sender<()>>,
    /// Threads that end when `stop` closes: generator, HTTP front.
    producers: Vec<JoinHandle<()>>,
    /// Threads that end when their input channel is drained: workers, hub, fan-out (in that order).
    pipeline: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the listener, starts every stage, and returns once the daemon is
    /// serving. Fails only when the address cannot be bound or a thread cannot
    /// be started.
    pub fn start(config: Config) -> io::Result<Server> {
        let listener = http::bind(&config).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        let addr = listener.local_addr()?;
        let max_clients = limits::client_cap(config.max_clients as usize);

        let clock = WallClock::new();
        let knobs = Arc::new(Knobs::new(&config));
        let ledger = Arc::new(Ledger::default());
        let gauges = Arc::new(Gauges::default());
        let latest = Arc::new(LatestStats::default());
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);

        let (outcome_tx, outcome_rx) = crossbeam_channel::bounded(hub::OUTCOME_CHANNEL_CAPACITY);
        let (broadcast_tx, broadcast_rx) =
            crossbeam_channel::bounded(hub::BROADCAST_CHANNEL_CAPACITY);
        let (intake, queue) = workers::work_queue(
            config.queue as usize,
            Arc::clone(&ledger),
            outcome_tx.clone(),
        );

        let history = Arc::new(History::new(config.history as usize));
        let (subscriptions, fanout_thread) = fanout::spawn(
            broadcast_rx,
            config.client_queue as usize,
            Arc::clone(&history),
            Arc::clone(&gauges),
        )?;
        let readings = {
            let (ledger, gauges, knobs, queue) = (
                Arc::clone(&ledger),
                Arc::clone(&gauges),
                Arc::clone(&knobs),
                queue.clone(),
            );
            let (config, workers) = (config.clone(), config.workers as usize);
            move || Readings {
                totals: ledger.totals(),
                queue: QueueState {
                    depth: queue.len(),
                    capacity: queue.capacity().unwrap_or(0),
                },
                workers: WorkerState {
                    busy: gauges
                        .busy_workers
                        .load(std::sync::atomic::Ordering::Relaxed),
                    total: workers,
                    work_ms_total: gauges
                        .work_micros
                        .load(std::sync::atomic::Ordering::Relaxed)
                        as f64
                        / 1000.0,
                },
                clients: ClientState {
                    connected: gauges.clients.load(std::sync::atomic::Ordering::Relaxed),
                    max: max_clients,
                    dropped_messages: gauges
                        .client_dropped
                        .load(std::sync::atomic::Ordering::Relaxed),
                },
                generator: GeneratorState {
                    rate: knobs.rate(),
                    lag_ticks: gauges.lag_ticks.load(std::sync::atomic::Ordering::Relaxed),
                },
                config: config.effective(&knobs, max_clients),
            }
        };
        let hub_thread = Hub {
            outcomes: outcome_rx,
            broadcast: broadcast_tx,
            clock,
            readings: Box::new(readings),
            latest: Arc::clone(&latest),
            log_interval: std::time::Duration::from_secs(config.log_interval),
        }
        .spawn()?;

        let ctx = WorkerContext {
            knobs: Arc::clone(&knobs),
            ledger: Arc::clone(&ledger),
            gauges: Arc::clone(&gauges),
            estimator: Arc::new(Mutex::new(WorkEstimator::new(
                knobs.work(),
                knobs.work_jitter(),
            ))),
        };
        let mut pipeline = workers::spawn_workers(config.workers as usize, queue, outcome_tx, ctx)?;
        pipeline.push(hub_thread);
        pipeline.push(fanout_thread);

        let app = Arc::new(http::App {
            subscriptions,
            slots: ClientSlots::new(Arc::clone(&gauges), max_clients),
            latest: Arc::clone(&latest),
            static_dir: config.static_dir.clone(),
            next_client: Default::default(),
            knobs: Arc::clone(&knobs),
            config: config.clone(),
            intake: intake.clone(),
            clock,
            history,
            history_capacity: config.history as usize,
        });
        let mut producers = http::spawn(listener, app, stopped.clone())?;
        producers.push(generator::spawn(
            intake.clone(),
            Arc::clone(&knobs),
            gauges,
            stopped,
        )?);

        if config.token.is_none() && !config.listen.ip().is_loopback() {
            log::warn!(
                "listening on {} without --token: anyone who can reach it can post events and change settings",
                config.listen
            );
        }
        log::info!(
            "punctual {} serving http://{addr}/ — {}",
            env!("CARGO_PKG_VERSION"),
            config.effective(&knobs, max_clients)
        );
        Ok(Server {
            addr,
            clock,
            intake: Some(intake),
            latest,
            stop: Some(stop),
            producers,
            pipeline,
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

    /// Blocks until the daemon ends (it runs until stopped).
    pub fn wait(mut self) {
        join_all(&mut self.producers);
        self.shut_down();
    }

    /// Stops the daemon: producers first, then every event still in flight
    /// gets its verdict (bounded by its deadline), the hub publishes a final
    /// snapshot, and every client is sent a Close frame.
    pub fn stop(mut self) {
        let started = Instant::now();
        self.stop.take();
        join_all(&mut self.producers);
        self.shut_down();
        log::info!("stopped in {:?}", started.elapsed());
    }

    fn shut_down(&mut self) {
        self.intake.take();
        join_all(&mut self.pipeline);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.take();
        join_all(&mut self.producers);
        self.shut_down();
    }
}

fn join_all(threads: &mut Vec<JoinHandle<()>>) {
    for thread in threads.drain(..) {
        let name = thread.thread().name().unwrap_or("unnamed").to_owned();
        if thread.join().is_err() {
            log::error!("thread {name} panicked");
        }
    }
}
