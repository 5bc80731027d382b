//! `punctual-load`: many dashboards (and optionally a producer and real
//! workers) on one punctual daemon, measured for a fixed window.
//!
//! ```sh
//! cargo build --release
//! target/release/punctual-load --spawn --ws 1000 --seconds 20 -- --rate 50 --work-ms 1 --deadline-ms 1000
//! target/release/punctual-load --spawn --ws 1 --http-worker -- --rate 1000 --deadline-ms 100
//! target/release/punctual-load --spawn --ws 1 --pull-workers 4 -- --rate 1000 --deadline-ms 100
//! target/release/punctual-load --addr 127.0.0.1:8080 --pid "$(pgrep -n punctual)" --sse 200 --json
//! target/release/punctual-load --addr 127.0.0.1:8081,127.0.0.1:8082 --pid "$(pgrep -d, punctual)" --ws 1000
//! ```
//!
//! It talks to a daemon at `--addr` (or to several, the edges of a cluster:
//! the clients are dealt over them in turn), or with `--spawn` starts the release
//! daemon itself (the `punctual` next to this binary, or `--server PATH`) on a
//! free port, with the flags after `--`, and stops it at the end (SIGTERM,
//! SIGKILL after 5 s). With `--http-worker` it first serves a trivial HTTP
//! worker on a free loopback port (an empty 200 to every POST) and points the
//! spawned daemon at it (`--work http --work-url …`); with `--pull-workers N`
//! it connects N WebSocket workers to `/api/work?credit=C` once the daemon is
//! up (a spawned one gets `--work pull`), each answering `done` to every task
//! at once. So the work costs nothing, and what the verdicts show is the
//! daemon's own cost of handing work out and taking the answer back.
//!
//! It opens `--ws` WebSocket and `--sse` Server-Sent Events clients one after
//! another, each read by its own small-stack thread with blocking reads,
//! optionally posts events at `--ingest-rate` (shaped by `--ingest-mix` and
//! `--ingest-work`: classes of producer and deadline, and a work range), waits `--warmup`, then
//! measures `--seconds`: an event counts if it was decided (`processedAt`)
//! inside the window, whenever it arrives. After the window it waits (at most
//! `--grace`) until every client has seen an event decided after it, then
//! prints one summary (`--json`: one JSON object).
//!
//! Threads: `main` (connects, samples `/proc`, reports), `ws-N` / `sse-N`
//! (one reader per client), `drain` (reads the drained clients, `--probes`),
//! `publish` (the messages of `--target nchan`), `ingest` (the producer), `daemon-log` (drains a
//! spawned daemon's log), `pull-N` (one per pull worker), and tiny_http's
//! `http-accept` and `http-conn` threads for the HTTP worker (one per
//! kept-alive connection from the daemon). The readers and workers share only
//! atomics with `main`; each reader keeps its own tally, handed back when it
//! is joined.

//!
//! The modules: `options` (the flags), `daemon` (a spawned daemon and its
//! `/api/stats`), `clients` (the measured readers and their tallies),
//! `drain` (the clients read in bulk), `replay` (the replaying clients),
//! `pull` (the tool's own workers), `peer` (what the tool publishes to
//! nginx + nchan), `ingest` (the producer), `procfs` (CPU, memory and threads from `/proc`),
//! `window` (one run, from connecting to closing), `report` (the typed
//! report) and `summary` (its human form).

mod clients;
mod daemon;
mod drain;
mod ingest;
mod options;
mod peer;
mod procfs;
mod pull;
mod replay;
mod report;
mod summary;
mod window;

use std::process;
use std::thread;
use std::time::Duration;

use clap::Parser;

use crate::daemon::SPARE_CONNECTIONS;
use crate::options::Options;
use crate::window::Setting;

fn main() {
    let options = Options::parse();
    if let Err(e) = options.check() {
        eprintln!("punctual-load: {e}");
        process::exit(2);
    }
    if let Err(e) = run(&options) {
        eprintln!("punctual-load: {e}");
        process::exit(1);
    }
}

fn run(options: &Options) -> Result<(), String> {
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    let needed = (options.connections() + SPARE_CONNECTIONS) as u64;
    if fd_limit < needed {
        return Err(format!(
            "the open-file limit is {fd_limit}, {} clients and workers need about {needed}: raise the hard limit (ulimit -Hn)",
            options.connections()
        ));
    }
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = procfs::load_average();
    let idle_from = procfs::machine_ticks();
    thread::sleep(Duration::from_secs(1));
    let busy_before = procfs::machine_busy(idle_from, procfs::machine_ticks(), cpus);

    // Serving before the daemon starts: its first calls find it there.
    let http_worker = if options.http_worker {
        Some(pull::start_http_worker()?)
    } else {
        None
    };
    let work_url = http_worker.as_ref().map(|w| w.url.as_str());
    let mut daemon = if options.spawn {
        Some(daemon::spawn_daemon(options, work_url)?)
    } else {
        None
    };
    let (addrs, pids) = match &daemon {
        Some(d) => (vec![d.addr], vec![d.child.id()]),
        None if options.addr.is_empty() => return Err("give --addr or --spawn".into()),
        None => (options.addr.clone(), options.pid.clone()),
    };
    let setting = Setting {
        addrs,
        pids,
        cpus,
        busy_before,
        load_before,
        http_calls: http_worker.as_ref().map(|w| &*w.answered),
    };
    let report = window::measure(options, &setting).map(|mut report| {
        report.target.daemon_args = daemon.as_ref().map(|d| d.args.clone());
        report
    });
    if let Some(d) = daemon.as_mut() {
        d.stop();
    }
    // Only now: the daemon's last calls (while it drains) still get answers.
    drop(http_worker);
    let report = report?;
    if options.json {
        println!("{}", report.to_json()?);
    } else {
        summary::print(&report);
    }
    Ok(())
}
