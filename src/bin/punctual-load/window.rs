//! One run against a serving daemon: the workers and clients connect, the
//! producer starts, the warm-up passes, the window is measured, the grace
//! is waited out, everything is closed, and the readings become the report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::{
    self, Connected, Shared, Tally, close_all, connect_all, connect_sse, connect_ws_at,
};
use crate::daemon::{daemon_report, http_agent, server_stats, verdict_rates, work_report};
use crate::drain::Drained;
use crate::ingest::Producer;
use crate::options::{Options, TargetKind};
use crate::peer::Publisher;
use crate::procfs::{self, ServerReadings, cpu_ticks, machine_busy, machine_ticks};
use crate::pull::{PullWorkers, close_pull_workers, connect_pull_workers};
use crate::replay::{Replays, close_replays, start_replays};
use crate::report::{
    Clients, Connections, Host, ReplayReport, Report, Server, Target, Window, round1, round3,
    tally_report,
};

/// Where the run happens: the daemon, and the machine before it started.
pub struct Setting<'a> {
    /// Where the clients connect, dealt out in turn; the first is also where
    /// the producer posts, the workers and replays connect and stats are read.
    pub addrs: Vec<SocketAddr>,
    /// The processes whose CPU, memory and threads are the server's.
    pub pids: Vec<u32>,
    pub cpus: usize,
    /// % of one core busy in the second before the daemon started.
    pub busy_before: f64,
    pub load_before: String,
    /// Calls the tool's HTTP worker answered, if it serves.
    pub http_calls: Option<&'a AtomicU64>,
}

/// Connects, measures and tallies: the report.
pub fn measure(options: &Options, setting: &Setting) -> Result<Report, String> {
    let agent = http_agent();
    let ticks_per_s = procfs::clock_ticks_per_second();
    let shared = Arc::new(Shared::new(options.seconds));
    let addr = setting.addrs[0];
    let opened = open(options, &setting.addrs, &shared)?;
    let mut producer = Producer::start(options, addr)?;
    let publisher = match &options.pub_url {
        Some(url) if options.target == TargetKind::Nchan => {
            Some(Publisher::start(url, options.rate)?)
        }
        _ => None,
    };

    // The window is fixed before it starts; events decided inside it count.
    shared.set_window(options.warmup, options.seconds);
    thread::sleep(Duration::from_secs_f64(options.warmup));

    let (readings, replays) = watch_window(options, setting, &agent, ticks_per_s)?;
    let ingest_seconds = producer.stop();
    let published = publisher.map(Publisher::stop);
    let closed = settle(options, opened.clients, replays, &shared, &agent, addr)?;
    let pull = close_pull_workers(opened.pull);
    let drained = opened.drained.map(Drained::close);

    let stats_start = &readings.stats_start;
    let tallies: Vec<&Tally> = closed.tallies.iter().collect();
    let tallied = tally_report(&tallies, options.seconds)?;
    let mut server = Server::new(&readings.server, &setting.pids);
    // Drained clients are counted as getting what a measured one got.
    let all_clients = tallies.len() + drained.as_ref().map_or(0, |d| d.connected);
    let delivered =
        tallied.messages.received as f64 * all_clients as f64 / tallies.len().max(1) as f64;
    server.cpu_us_per_message = readings
        .server
        .cpu_pct
        .filter(|_| delivered > 0.0)
        .map(|pct| round3(pct / 100.0 * readings.wall * 1e6 / delivered));
    Ok(Report {
        target: Target {
            kind: options.target,
            addr: setting
                .addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            spawned: options.spawn,
            pid: setting.pids.first().copied(),
            pids: setting.pids.clone(),
            daemon_args: None,
        },
        host: Host {
            cpus: setting.cpus,
            busy_before_pct: round1(setting.busy_before),
            load_average_before: setting.load_before.clone(),
            busy_during_pct: round1(readings.machine_cpu),
        },
        clients: Clients {
            ws: closed.ws,
            sse: closed.sse,
            connect_seconds: round3(opened.seconds),
            caught_up: closed.caught_up,
            grace_seconds: round3(closed.grace),
        },
        window: Window {
            warmup_seconds: options.warmup,
            seconds: round3(readings.wall),
        },
        server,
        load_cpu_pct: readings.own_cpu.map(round1),
        daemon_stats: daemon_report(stats_start, &closed.stats_end),
        verdicts_per_second: verdict_rates(
            stats_start,
            &readings.stats_window,
            readings.stats_seconds,
        ),
        work: work_report(stats_start, &closed.stats_end, setting.http_calls, pull),
        tallied,
        ingest: producer.report(options, ingest_seconds),
        replay: closed.replay,
        drained,
        published,
    })
}

/// The measured clients of both transports.
struct Measured {
    ws: clients::Connected,
    sse: clients::Connected,
}

/// What is connected before the window.
struct Opened {
    pull: PullWorkers,
    clients: Measured,
    /// The clients read in bulk (`--probes`), if any.
    drained: Option<Drained>,
    /// How long the clients took to connect.
    seconds: f64,
}

fn open(options: &Options, addrs: &[SocketAddr], shared: &Arc<Shared>) -> Result<Opened, String> {
    // The workers first: the pipeline is running by the time the clients join.
    let pull = connect_pull_workers(options.pull_workers, options.pull_credit, addrs[0]);
    let connecting = Instant::now();
    let path = match options.target {
        TargetKind::Punctual => "/ws?control=1",
        TargetKind::Nchan => options.sub_path.as_str(),
    };
    let connect_ws = |addr| connect_ws_at(addr, path);
    let (total, measured) = (options.ws, options.measured_ws());
    let every = Duration::from_millis(options.drain_ms);
    let mut drained = (total > measured)
        .then(|| Drained::new(total - measured, every))
        .transpose()?;
    // The probes are spread evenly over the connection order (a server
    // that writes to its clients in that order favours the first).
    let mut ws = Connected::with_capacity(measured);
    for i in 0..total {
        let addr = addrs[i as usize % addrs.len()];
        match drained.as_mut() {
            Some(d) if !is_probe(i, total, measured) => d.add(&connect_ws, addr),
            _ => ws.connect_one(format!("ws-{i}"), &connect_ws, addr, shared),
        }
    }
    if let Some(d) = drained.as_mut() {
        d.start()?;
    }
    let sse = connect_all(options.sse, "sse", &connect_sse, addrs, shared);
    Ok(Opened {
        pull,
        clients: Measured { ws, sse },
        drained,
        seconds: connecting.elapsed().as_secs_f64(),
    })
}

/// What was read over the window.
struct Readings {
    /// The daemon's stats as the window started, and as it ended
    /// (`stats_seconds` later).
    stats_start: Value,
    stats_window: Value,
    stats_seconds: f64,
    /// The window's length by this tool's clock.
    wall: f64,
    /// This tool's CPU, % of one core.
    own_cpu: Option<f64>,
    /// The machine's CPU, % of one core.
    machine_cpu: f64,
    server: ServerReadings,
}

/// Measures the window, the replaying clients reading meanwhile.
fn watch_window(
    options: &Options,
    setting: &Setting,
    agent: &ureq::Agent,
    ticks_per_s: f64,
) -> Result<(Readings, Replays), String> {
    let addr = setting.addrs[0];
    let stats_start = stats_of(options, agent, addr)?;
    let stats_started = Instant::now();
    let own_before = cpu_ticks("self");
    let machine_before = machine_ticks();
    let window = Instant::now();
    let epoch = stats_start["epoch"].as_str().unwrap_or_default().to_owned();
    let replays = start_replays(options.replay, options.replay_pause, addr, &epoch);
    let server = procfs::watch_server(
        &setting.pids,
        Duration::from_secs_f64(options.seconds),
        ticks_per_s,
        || stats_of(options, agent, addr).ok(),
    );
    let wall = window.elapsed().as_secs_f64();
    let stats_window = stats_of(options, agent, addr)?;
    let stats_seconds = stats_started.elapsed().as_secs_f64();
    let own_cpu = own_before
        .zip(cpu_ticks("self"))
        .map(|(from, to)| to.saturating_sub(from) as f64 / ticks_per_s / wall * 100.0);
    let machine_cpu = machine_busy(machine_before, machine_ticks(), setting.cpus);
    let readings = Readings {
        stats_start,
        stats_window,
        stats_seconds,
        wall,
        own_cpu,
        machine_cpu,
        server,
    };
    Ok((readings, replays))
}

/// The clients after the grace, closed.
struct Closed {
    ws: Connections,
    sse: Connections,
    /// Every measured client's tally, WebSocket ones first.
    tallies: Vec<Tally>,
    replay: Option<ReplayReport>,
    caught_up: usize,
    grace: f64,
    /// The daemon's stats after the grace.
    stats_end: Value,
}

/// Waits (at most `--grace`) for the clients to get what was decided in the
/// window, reads the daemon's stats, then closes the replays and clients.
fn settle(
    options: &Options,
    clients: Measured,
    replays: Replays,
    shared: &Shared,
    agent: &ureq::Agent,
    addr: SocketAddr,
) -> Result<Closed, String> {
    // Events decided near the end of the window may still be on their way.
    let live = clients.ws.readers.len() + clients.sse.readers.len();
    let grace = Instant::now();
    let limit = Duration::from_secs_f64(options.grace);
    while shared.settled() < live && grace.elapsed() < limit {
        thread::sleep(Duration::from_millis(20));
    }
    let grace = grace.elapsed().as_secs_f64();
    let caught_up = shared.caught_up();
    let stats_end = stats_of(options, agent, addr)?;
    let (ws_failures, sse_failures) = (clients.ws.failures.clone(), clients.sse.failures.clone());
    let replay = close_replays(replays);
    let ws_tallies = close_all(clients.ws, shared);
    let sse_tallies = close_all(clients.sse, shared);
    Ok(Closed {
        ws: Connections::of_clients(options.ws, &ws_tallies, &ws_failures),
        sse: Connections::of_clients(options.sse, &sse_tallies, &sse_failures),
        tallies: ws_tallies.into_iter().chain(sse_tallies).collect(),
        replay,
        caught_up,
        grace,
        stats_end,
    })
}

/// Whether client `i` of `total` is one of the `probes` measured ones:
/// exactly `probes` of them, evenly spread.
fn is_probe(i: u32, total: u32, probes: u32) -> bool {
    let share = |n: u32| u64::from(n) * u64::from(probes) / u64::from(total);
    share(i + 1) > share(i)
}

/// The daemon's `/api/stats`; nothing (`null`) for a peer, which has none.
fn stats_of(options: &Options, agent: &ureq::Agent, addr: SocketAddr) -> Result<Value, String> {
    match options.target {
        TargetKind::Punctual => server_stats(agent, addr),
        TargetKind::Nchan => Ok(Value::Null),
    }
}
