//! `punctual-load`: many dashboards (and optionally a producer and real
//! workers) on one punctual daemon, measured for a fixed window.
//!
//! ```sh
//! cargo build --release
//! target/release/punctual-load --spawn --ws 1000 --seconds 20 -- --rate 50 --work-ms 1 --deadline-ms 1000
//! target/release/punctual-load --spawn --ws 1 --http-worker -- --rate 1000 --deadline-ms 100
//! target/release/punctual-load --spawn --ws 1 --pull-workers 4 -- --rate 1000 --deadline-ms 100
//! target/release/punctual-load --addr 127.0.0.1:8080 --pid "$(pgrep -n punctual)" --sse 200 --json
//! ```
//!
//! It talks to a daemon at `--addr`, or with `--spawn` starts the release
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
//! (one reader per client), `ingest` (the producer), `daemon-log` (drains a
//! spawned daemon's log), `pull-N` (one per pull worker), and tiny_http's
//! `http-accept` and `http-conn` threads for the HTTP worker (one per
//! kept-alive connection from the daemon). The readers and workers share only
//! atomics with `main`; each reader keeps its own tally, handed back when it
//! is joined.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{self, Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{HandshakeError, Message, WebSocket};

/// Stack of a reader thread: its buffers and histograms live on the heap.
const READER_STACK: usize = 64 * 1024;
/// Socket read buffer of a client: a few dozen ~250-byte events per read.
const READ_BUFFER: usize = 8 * 1024;
/// Largest delay the histograms resolve, in microseconds (60 s).
const MAX_DELAY_US: u64 = 60_000_000;
/// Connections the tool and a spawned daemon need beyond the clients
/// (stats, ingest, the daemon's own probe, a margin).
const SPARE_CONNECTIONS: usize = 64;
/// How long one connection attempt, handshake included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most pull workers the tool connects.
const MAX_PULL_WORKERS: u32 = 1024;
/// Most tasks a pull worker may hold at once (the daemon's `MAX_CREDIT`).
const MAX_PULL_CREDIT: u32 = 1024;

/// Load tool for punctual: WebSocket and SSE clients, optional ingest, one fixed measured window.
#[derive(Parser, Debug)]
#[command(name = "punctual-load", version)]
struct Options {
    /// Address of a running daemon.
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    addr: Option<SocketAddr>,
    /// Start the daemon as a child process on a free port; flags after `--` go to it.
    #[arg(long)]
    spawn: bool,
    /// Daemon binary for --spawn (default: `punctual` next to this binary).
    #[arg(long, requires = "spawn")]
    server: Option<PathBuf>,
    /// Process id of the daemon at --addr, for its CPU, RSS and threads.
    #[arg(long, conflicts_with = "spawn")]
    pid: Option<u32>,
    /// WebSocket clients (`GET /ws`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    ws: u32,
    /// Server-Sent Events clients (`GET /events`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    sse: u32,
    /// Events per second to post to `POST /api/events` (0: none).
    #[arg(long, default_value_t = 0.0)]
    ingest_rate: f64,
    /// Events per posted batch (a JSON array).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Classes of posted events as PRODUCER:DEADLINE_MS:WEIGHT,… (e.g.
    /// `tight:20:1,loose:500:1`): each event is of one class, drawn by weight,
    /// and names it as its producer (default: empty events, the daemon's defaults).
    #[arg(long, value_parser = parse_mix, requires = "ingest_rate")]
    ingest_mix: Option<Mix>,
    /// Each posted event's own work, uniform in MIN-MAX ms (e.g. `5-15`).
    #[arg(long, value_parser = parse_work_range, requires = "ingest_rate")]
    ingest_work: Option<(f64, f64)>,
    /// Seconds between the last connection and the window.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Longest wait after the window for events decided inside it, seconds.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// Serve a trivial HTTP worker (an empty 200 to every POST) and run the
    /// spawned daemon with `--work http --work-url` pointing at it.
    #[arg(long, requires = "spawn", conflicts_with = "pull_workers")]
    http_worker: bool,
    /// WebSocket workers to connect to `GET /api/work`, each answering `done`
    /// to every task at once; a spawned daemon gets `--work pull` unless `--work` is given.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_PULL_WORKERS)))]
    pull_workers: u32,
    /// Tasks each pull worker takes at once (`?credit=C`).
    #[arg(long, default_value_t = 1, requires = "pull_workers", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PULL_CREDIT)))]
    pull_credit: u32,
    /// WebSocket clients that replay this run from its first outcome
    /// (`/ws?epoch=E&since=0`), connecting as the window starts; not measured
    /// themselves: they load the daemon while the live clients are timed.
    #[arg(long, default_value_t = 0)]
    replay: u32,
    /// Seconds a replaying client waits between reads (0: reads as fast as
    /// it can; longer than the run: never reads).
    #[arg(long, default_value_t = 0.0)]
    replay_pause: f64,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Flags for the spawned daemon.
    #[arg(last = true, requires = "spawn")]
    daemon_args: Vec<String>,
}

impl Options {
    fn check(&self) -> Result<(), String> {
        if self.ws + self.sse == 0 && self.ingest_rate == 0.0 {
            return Err("nothing to do: give --ws, --sse or --ingest-rate".into());
        }
        if !(0.0..=1_000_000.0).contains(&self.ingest_rate) {
            return Err("--ingest-rate must be between 0 and 1000000 events/s".into());
        }
        if !(0.5..=3600.0).contains(&self.seconds) {
            return Err("--seconds must be between 0.5 and 3600".into());
        }
        if !(0.0..=3600.0).contains(&self.replay_pause) {
            return Err("--replay-pause must be between 0 and 3600 seconds".into());
        }
        if !(0.0..=600.0).contains(&self.warmup) || !(0.0..=600.0).contains(&self.grace) {
            return Err("--warmup and --grace must be between 0 and 600".into());
        }
        if self.http_worker && (self.daemon_flag("--work") || self.daemon_flag("--work-url")) {
            return Err(
                "--http-worker sets the daemon's --work and --work-url: drop them after `--`"
                    .into(),
            );
        }
        Ok(())
    }

    fn clients(&self) -> usize {
        (self.ws + self.sse + self.replay) as usize
    }

    /// Connections the tool opens to the daemon, besides its own few.
    fn connections(&self) -> usize {
        self.clients() + self.pull_workers as usize
    }

    /// Whether `flag` is among the flags after `--`.
    fn daemon_flag(&self, flag: &str) -> bool {
        self.daemon_args
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    }
}

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

/// Wall-clock time in epoch milliseconds, the scale of `processedAt`.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

// ------------------------------------------------------------- the daemon

/// A spawned daemon; killed if still running when dropped.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    args: Vec<String>,
}

impl Daemon {
    /// SIGTERM (the daemon drains and says goodbye), SIGKILL if it is not
    /// gone within 5 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `--server`, else `punctual` in the directory of this binary.
fn server_binary(options: &Options) -> Result<PathBuf, String> {
    let path = match &options.server {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this binary: {e}"))?
            .with_file_name("punctual"),
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release` first, or pass --server PATH",
            path.display()
        ))
    }
}

/// The daemon's flags: ours (a free port, a quiet log, caps that fit the
/// clients) unless given after `--`, then the given ones, then the work mode
/// the tool's own workers serve (`work_url`: the HTTP worker's).
fn daemon_args(options: &Options, work_url: Option<&str>) -> Vec<String> {
    let room = (options.connections() + SPARE_CONNECTIONS).to_string();
    let mut args = Vec::new();
    for (flag, value) in [
        ("--listen", "127.0.0.1:0"),
        ("--log-interval", "3600"),
        ("--max-connections", room.as_str()),
        ("--max-clients", room.as_str()),
    ] {
        if !options.daemon_flag(flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(options.daemon_args.iter().cloned());
    if let Some(url) = work_url {
        args.extend(["--work", "http", "--work-url", url].map(String::from));
    } else if options.pull_workers > 0 && !options.daemon_flag("--work") {
        args.extend(["--work", "pull"].map(String::from));
    }
    args
}

fn spawn_daemon(options: &Options, work_url: Option<&str>) -> Result<Daemon, String> {
    let binary = server_binary(options)?;
    let args = daemon_args(options, work_url);
    let mut command = Command::new(&binary);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
    // Only the flags given here configure the daemon.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PUNCTUAL_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let mut daemon = Daemon {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        args,
    };
    let serving = follow_daemon_log(stderr)?;
    let addr = match serving.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(addr)) => addr,
        Ok(Err(log)) => return Err(format!("the daemon ended before serving:\n{log}")),
        Err(_) => return Err("the daemon did not log `serving http://…` within 15 s".into()),
    };
    daemon.addr = addr
        .parse()
        .map_err(|e| format!("cannot parse the daemon's address {addr:?}: {e}"))?;
    Ok(daemon)
}

/// Drains the daemon's log so it never blocks on a full pipe, and sends the
/// address of its `serving http://ADDR/` line (or, if it ends first, its
/// log). Later warnings and errors are passed on to stderr.
fn follow_daemon_log(
    stderr: process::ChildStderr,
) -> Result<mpsc::Receiver<Result<String, String>>, String> {
    let (tell, serving) = mpsc::channel();
    thread::Builder::new()
        .name("daemon-log".into())
        .spawn(move || {
            let mut tell = Some(tell);
            let mut before = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match (line.split("serving http://").nth(1), tell.take()) {
                    (Some(rest), Some(found)) => {
                        let addr = rest.split('/').next().unwrap_or("").to_string();
                        let _ = found.send(Ok(addr));
                    }
                    (_, waiting) => {
                        tell = waiting;
                        if line.contains("WARN") || line.contains("ERROR") {
                            eprintln!("daemon: {line}");
                        }
                        if tell.is_some() {
                            before.push(line);
                        }
                    }
                }
            }
            if let Some(found) = tell {
                let _ = found.send(Err(before.join("\n")));
            }
        })
        .map_err(|e| format!("cannot start the log reader: {e}"))?;
    Ok(serving)
}

// ------------------------------------------------------------- HTTP (ureq)

/// A kept-alive HTTP client that hands back every status as an answer.
fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `GET /api/stats` as JSON.
fn server_stats(agent: &ureq::Agent, addr: SocketAddr) -> Result<Value, String> {
    let fail = |e: &dyn std::fmt::Display| format!("GET /api/stats: {e}");
    let mut response = agent
        .get(format!("http://{addr}/api/stats"))
        .call()
        .map_err(|e| fail(&e))?;
    let status = response.status();
    let body = response.body_mut().read_to_string().map_err(|e| fail(&e))?;
    if !status.is_success() {
        return Err(fail(&format!("{status}: {body}")));
    }
    serde_json::from_str(&body).map_err(|e| fail(&e))
}

fn stat_u64(stats: &Value, path: &str) -> u64 {
    stats.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// `generated + ingested == onTime + late + failed + dropped.* + inFlight`.
fn conserved(stats: &Value) -> bool {
    let totals = |key: &str| stat_u64(stats, &format!("/totals/{key}"));
    let dropped: u64 = stats
        .pointer("/totals/dropped")
        .and_then(Value::as_object)
        .map_or(0, |d| d.values().filter_map(Value::as_u64).sum());
    stats.pointer("/totals").is_some()
        && totals("generated") + totals("ingested")
            == totals("onTime") + totals("late") + totals("failed") + dropped + totals("inFlight")
}

// ------------------------------------------------------------- ingest

/// What the producer got back, summed over its posts.
#[derive(Default)]
struct IngestCounts {
    posts: AtomicU64,
    accepted: AtomicU64,
    dropped: AtomicU64,
    /// Events in batches answered with an error status.
    refused: AtomicU64,
    /// Posts that got no answer at all (connection or timeout).
    failed_posts: AtomicU64,
    /// Posts more than a second behind their schedule when sent.
    late_posts: AtomicU64,
}

#[derive(serde::Deserialize)]
struct IngestAnswer {
    accepted: u64,
    dropped: u64,
}

/// Classes of posted events, drawn by weight.
#[derive(Clone, Debug)]
struct Mix(Vec<(String, u64, f64)>);

fn parse_mix(text: &str) -> Result<Mix, String> {
    let classes = text
        .split(',')
        .map(|class| {
            let parts: Vec<&str> = class.split(':').collect();
            let [producer, deadline, weight] = parts[..] else {
                return Err(format!("{class:?} is not PRODUCER:DEADLINE_MS:WEIGHT"));
            };
            let deadline = deadline.parse::<u64>().ok().filter(|d| *d > 0);
            let weight = weight
                .parse::<f64>()
                .ok()
                .filter(|w| *w > 0.0 && w.is_finite());
            match (producer.is_empty(), deadline, weight) {
                (false, Some(d), Some(w)) => Ok((producer.to_owned(), d, w)),
                _ => Err(format!(
                    "{class:?}: a name, a deadline > 0 ms and a weight > 0"
                )),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Mix(classes))
}

fn parse_work_range(text: &str) -> Result<(f64, f64), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or("give MIN-MAX in ms, e.g. 5-15")?;
    match (low.parse::<f64>(), high.parse::<f64>()) {
        (Ok(low), Ok(high)) if 0.0 <= low && low <= high && high <= 3_600_000.0 => Ok((low, high)),
        _ => Err(format!("{text:?}: MIN-MAX with 0 ≤ MIN ≤ MAX ms")),
    }
}

/// What each posted event says: its class (producer and deadline) and work.
#[derive(Clone, Debug, Default)]
struct Shape {
    mix: Option<Mix>,
    work: Option<(f64, f64)>,
}

impl Shape {
    /// A batch of `n` events as a JSON array; `{}` each without a shape.
    fn batch(&self, n: u32) -> String {
        let events: Vec<Value> = (0..n).map(|_| self.event()).collect();
        Value::Array(events).to_string()
    }

    fn event(&self) -> Value {
        let mut event = serde_json::Map::new();
        if let Some(Mix(classes)) = &self.mix {
            let total: f64 = classes.iter().map(|c| c.2).sum();
            let mut pick = fastrand::f64() * total;
            let class = classes
                .iter()
                .find(|c| {
                    pick -= c.2;
                    pick < 0.0
                })
                .unwrap_or(&classes[classes.len() - 1]);
            event.insert("producer".into(), json!(class.0));
            event.insert("deadlineMs".into(), json!(class.1));
        }
        if let Some((low, high)) = self.work {
            let ms = low + fastrand::f64() * (high - low);
            event.insert("workMs".into(), json!((ms * 1000.0).round() / 1000.0));
        }
        Value::Object(event)
    }
}

/// Posts a batch of `batch` events every `batch / rate` seconds, on
/// schedule (tick n is due at start + n·period), until `stop` is set.
fn ingest(
    addr: SocketAddr,
    (rate, batch): (f64, u32),
    shape: &Shape,
    stop: &AtomicBool,
    counts: &IngestCounts,
) {
    let agent = http_agent();
    let url = format!("http://{addr}/api/events");
    // Without a shape, empty objects: each event takes the daemon's default
    // deadline and work, and one body serves every post.
    let shaped = shape.mix.is_some() || shape.work.is_some();
    let fixed = shape.batch(batch);
    let period = Duration::from_secs_f64(f64::from(batch) / rate);
    let start = Instant::now();
    let mut tick: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + period * tick;
        let now = Instant::now();
        if due > now {
            thread::sleep((due - now).min(Duration::from_millis(100)));
            continue;
        }
        if now - due > Duration::from_secs(1) {
            counts.late_posts.fetch_add(1, Ordering::Relaxed);
        }
        tick += 1;
        counts.posts.fetch_add(1, Ordering::Relaxed);
        let body = if shaped {
            shape.batch(batch)
        } else {
            fixed.clone()
        };
        post_batch(&agent, &url, &body, batch, counts);
    }
}

fn post_batch(agent: &ureq::Agent, url: &str, body: &str, batch: u32, counts: &IngestCounts) {
    let answer = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body);
    let Ok(mut response) = answer else {
        counts.failed_posts.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let ok = response.status().is_success();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    match serde_json::from_str::<IngestAnswer>(&text) {
        Ok(answer) if ok => {
            counts
                .accepted
                .fetch_add(answer.accepted, Ordering::Relaxed);
            counts.dropped.fetch_add(answer.dropped, Ordering::Relaxed);
        }
        _ => {
            counts
                .refused
                .fetch_add(u64::from(batch), Ordering::Relaxed);
        }
    }
}

// ------------------------------------------------------------- the HTTP worker

/// The daemon's `--work-url` endpoint, served while the tool runs.
struct HttpWorker {
    /// Dropping it closes the listener; it lives until the daemon is stopped.
    _server: tiny_http::Server,
    url: String,
    answered: Arc<AtomicU64>,
}

/// Serves an empty 200 to every request on a free loopback port.
///
/// Each daemon worker thread keeps one connection alive and waits for its
/// answer before the next call, so the requests are answered on their
/// connection's own thread (the patched tiny_http's `handler`): tiny_http
/// starts one such thread per open connection (four idle to begin with), so
/// every worker thread's call is answered at once, none waits behind another's
/// in a shared queue. No limits are set: the only client is the daemon.
fn start_http_worker() -> Result<HttpWorker, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot start the HTTP worker: {e}");
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| fail(&e))?;
    let addr = listener.local_addr().map_err(|e| fail(&e))?;
    let answered = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&answered);
    let handler: tiny_http::Handler = Arc::new(move |request: tiny_http::Request| {
        // Counted once the answer is written: a call the daemon got back.
        if request.respond(tiny_http::Response::empty(200)).is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let options = tiny_http::ServerOptions {
        handler: Some(handler),
        ..Default::default()
    };
    let server =
        tiny_http::Server::from_listener_with(listener, None, options).map_err(|e| fail(&e))?;
    Ok(HttpWorker {
        _server: server,
        url: format!("http://{addr}/work"),
        answered,
    })
}

// ------------------------------------------------------------- pull workers

/// The connected pull workers, and why the others are not.
struct PullWorkers {
    requested: u32,
    sockets: Vec<Socket>,
    threads: Vec<JoinHandle<Option<String>>>,
    failures: BTreeMap<String, u64>,
    /// Tasks answered `done`, by all of them.
    answered: Arc<AtomicU64>,
    /// Set just before the tool closes the connections.
    stopping: Arc<AtomicBool>,
}

/// What is read of a task: its id, as the JSON text it came as, so that the
/// answer names it exactly (escapes and all) without decoding it.
#[derive(serde::Deserialize)]
struct TaskId<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    id: &'a RawValue,
}

/// Connects `count` workers one after another, each then answered on its
/// own thread; a worker that cannot connect is counted with its reason.
fn connect_pull_workers(count: u32, credit: u32, addr: SocketAddr) -> PullWorkers {
    let mut workers = PullWorkers {
        requested: count,
        sockets: Vec::with_capacity(count as usize),
        threads: Vec::with_capacity(count as usize),
        failures: BTreeMap::new(),
        answered: Arc::new(AtomicU64::new(0)),
        stopping: Arc::new(AtomicBool::new(false)),
    };
    for i in 0..count {
        let url = format!("ws://{addr}/api/work?credit={credit}");
        let result = connect_websocket(addr, &url).and_then(|(socket, ws)| {
            let (answered, stopping) =
                (Arc::clone(&workers.answered), Arc::clone(&workers.stopping));
            let thread = thread::Builder::new()
                .name(format!("pull-{i}"))
                .stack_size(READER_STACK)
                .spawn(move || answer_tasks(ws, &answered, &stopping))
                .map_err(|e| format!("cannot start a pull worker thread: {e}"))?;
            Ok((socket, thread))
        });
        match result {
            Ok((socket, thread)) => {
                workers.sockets.push(socket);
                workers.threads.push(thread);
            }
            Err(why) => *workers.failures.entry(why).or_default() += 1,
        }
    }
    workers
}

/// Answers `done` to every task as soon as it is read, until the connection
/// ends; returns why it did, unless the tool ended it.
fn answer_tasks(
    mut ws: Box<WebSocket<Socket>>,
    answered: &AtomicU64,
    stopping: &AtomicBool,
) -> Option<String> {
    let why = loop {
        let text = match ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                break frame.map_or("the daemon sent Close".into(), |f| {
                    format!("the daemon sent Close {}: {}", f.code, f.reason)
                });
            }
            Ok(_) => continue, // Ping (answered by tungstenite), Pong, Binary: not tasks.
            Err(e) => break e.to_string(),
        };
        let Ok(task) = serde_json::from_str::<TaskId>(text.as_str()) else {
            let start: String = text.as_str().chars().take(200).collect();
            break format!("unreadable task: {start}");
        };
        if task.kind != "task" {
            continue;
        }
        let done = format!(r#"{{"type":"done","id":{}}}"#, task.id.get());
        if let Err(e) = ws.send(Message::text(done)) {
            break format!("answer: {e}");
        }
        answered.fetch_add(1, Ordering::Relaxed);
    };
    (!stopping.load(Ordering::Relaxed)).then_some(why)
}

/// Ends every worker's connection from this side; reports how many had
/// connected, why the others had not or had ended early, and the tasks they
/// answered; `None` if none were asked for.
fn close_pull_workers(workers: PullWorkers) -> Option<Value> {
    workers.stopping.store(true, Ordering::Relaxed);
    for socket in &workers.sockets {
        let _ = socket.0.shutdown(Shutdown::Both);
    }
    let ended: Vec<String> = workers
        .threads
        .into_iter()
        .filter_map(|t| {
            t.join()
                .unwrap_or_else(|_| Some("the worker thread panicked".into()))
        })
        .collect();
    (workers.requested > 0).then(|| {
        json!({
            "requested": workers.requested,
            "connected": workers.sockets.len(),
            "connectFailures": workers.failures.values().sum::<u64>(),
            "failureReasons": workers.failures,
            "endedEarly": ended.len(),
            "endedExample": ended.first(),
            "tasksAnswered": workers.answered.load(Ordering::Relaxed),
        })
    })
}

// ------------------------------------------------------------- /proc

/// User + system clock ticks of a process (`/proc/<pid>/stat`).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the name (which may hold spaces): utime and stime are the 12th
    // and 13th fields.
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory (KiB) and threads of a process (`/proc/<pid>/status`).
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Busy and total clock ticks of the whole machine (`/proc/stat`).
fn machine_ticks() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).unwrap_or(&0) + fields.get(4).unwrap_or(&0);
    (total.saturating_sub(idle), total)
}

/// Share of all CPUs busy between two `machine_ticks`, in % of one core.
fn machine_busy(from: (u64, u64), to: (u64, u64), cpus: usize) -> f64 {
    let busy = to.0.saturating_sub(from.0) as f64;
    let total = to.1.saturating_sub(from.1).max(1) as f64;
    busy / total * 100.0 * cpus as f64
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ------------------------------------------------------------- clients

/// What every reader shares with `main`.
struct Shared {
    /// The window in epoch ms, as f64 bits; infinite (nothing counts) until set.
    start: AtomicU64,
    end: AtomicU64,
    seconds: usize,
    /// Readers that have seen an event decided after the window: they have
    /// everything from inside it they are going to get.
    caught_up: AtomicUsize,
    /// Readers whose stream ended before the run did.
    ended: AtomicUsize,
    /// Set just before the tool closes the connections: errors after it are
    /// its own doing.
    stopping: AtomicBool,
}

impl Shared {
    fn window(&self) -> (f64, f64) {
        (
            f64::from_bits(self.start.load(Ordering::Relaxed)),
            f64::from_bits(self.end.load(Ordering::Relaxed)),
        )
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// A client's socket, shared between its reader (which owns the stream on
/// top of it) and `main` (which shuts it down at the end): one descriptor
/// per client, not two.
#[derive(Clone)]
struct Socket(Arc<TcpStream>);

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

fn open_socket(addr: SocketAddr) -> Result<Socket, String> {
    let stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    // Bounds the handshake; lifted once the stream is open.
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(Socket(Arc::new(stream)))
}

/// What one client saw.
struct Tally {
    /// Events decided inside the window.
    received: u64,
    /// Sequence numbers missing between consecutive events (from the hello on).
    missing: u64,
    out_of_order: u64,
    gap_notices: u64,
    resets: u64,
    /// Newest `seq` seen (the hello's at first).
    newest: Option<u64>,
    /// Oldest and newest `seq` decided inside the window.
    first_in_window: u64,
    last_in_window: u64,
    /// The run's epoch from the hello; SSE ids must name it.
    epoch: Vec<u8>,
    /// SSE ids that were not `EPOCH:SEQ` of this run and event.
    bad_ids: u64,
    delay_us: Histogram<u32>,
    end_to_end_us: Histogram<u32>,
    /// `processedAt − createdAt` of events worked on: the pipeline and the
    /// work, delivery left out.
    verdict_us: Histogram<u32>,
    /// How long after its deadline each late verdict came (latency − deadline).
    lateness_us: Histogram<u32>,
    max_delay_us: u64,
    /// Per second of the window (by `processedAt`): delay sum (µs) and count.
    by_second: Vec<(u64, u64)>,
    past_end: bool,
    unparsed: u64,
    ended: Option<String>,
}

/// A histogram of microseconds to two significant figures (< 1 % error);
/// `u32` counts keep it at ~10 KiB a client.
fn delay_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_DELAY_US, 2).expect("constant bounds are valid")
}

impl Tally {
    fn new(seconds: usize) -> Self {
        Tally {
            received: 0,
            missing: 0,
            out_of_order: 0,
            gap_notices: 0,
            resets: 0,
            newest: None,
            first_in_window: u64::MAX,
            last_in_window: 0,
            epoch: Vec::new(),
            bad_ids: 0,
            delay_us: delay_histogram(),
            end_to_end_us: delay_histogram(),
            verdict_us: delay_histogram(),
            lateness_us: delay_histogram(),
            max_delay_us: 0,
            by_second: vec![(0, 0); seconds],
            past_end: false,
            unparsed: 0,
            ended: None,
        }
    }

    /// One JSON message of either transport. Only the prefix and the few
    /// numbers needed are looked at; nothing is allocated.
    fn message(&mut self, json: &[u8], received_at: f64, shared: &Shared) -> Option<u64> {
        if json.starts_with(br#"{"type":"event""#) {
            return self.event(json, received_at, shared);
        }
        if json.starts_with(br#"{"type":"hello""#) {
            self.newest = number(json, br#""seq":"#);
            self.epoch = string(json, br#""epoch":""#).unwrap_or_default().to_vec();
        } else if json.starts_with(br#"{"type":"gap""#) {
            self.gap_notices += 1;
        } else if json.starts_with(br#"{"type":"reset""#) {
            self.resets += 1;
            self.epoch = string(json, br#""epoch":""#).unwrap_or_default().to_vec();
        } else if !json.starts_with(br#"{"type":"stats""#) {
            self.unparsed += 1;
        }
        None
    }

    /// Counts an event; answers its `seq`.
    fn event(&mut self, json: &[u8], received_at: f64, shared: &Shared) -> Option<u64> {
        let seq = number(json, br#""seq":"#);
        let created_at = number(json, br#""createdAt":"#);
        let processed_at = number(json, br#""processedAt":"#);
        let (Some(seq), Some(created_at), Some(processed_at)) = (seq, created_at, processed_at)
        else {
            self.unparsed += 1;
            return None;
        };
        self.follow(seq);
        let (start, end) = shared.window();
        if processed_at >= end && !self.past_end {
            self.past_end = true;
            shared.caught_up.fetch_add(1, Ordering::Relaxed);
        }
        if processed_at >= start && processed_at < end {
            self.in_window(seq, received_at, created_at, processed_at, start);
            self.judged(json, created_at, processed_at);
        }
        Some(seq)
    }

    /// Sequence continuity: every `seq` after the hello's, once, in order.
    fn follow(&mut self, seq: u64) {
        match self.newest {
            Some(newest) if seq > newest + 1 => self.missing += seq - newest - 1,
            Some(newest) if seq <= newest => self.out_of_order += 1,
            _ => {}
        }
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
    }

    fn in_window(&mut self, seq: u64, received_at: f64, created: f64, processed: f64, start: f64) {
        self.received += 1;
        self.first_in_window = self.first_in_window.min(seq);
        self.last_in_window = self.last_in_window.max(seq);
        let micros = |ms: f64| (ms.max(0.0) * 1000.0) as u64;
        let delay_us = micros(received_at - processed);
        self.max_delay_us = self.max_delay_us.max(delay_us);
        self.delay_us
            .saturating_record(delay_us.clamp(1, MAX_DELAY_US));
        self.end_to_end_us
            .saturating_record(micros(received_at - created).clamp(1, MAX_DELAY_US));
        let second = ((processed - start) / 1000.0) as usize;
        if let Some((sum, n)) = self.by_second.get_mut(second) {
            *sum += delay_us;
            *n += 1;
        }
    }

    /// How long an event worked on (on time, late or failed) took to its
    /// verdict. Drops are left out: they are decided at once, without work,
    /// and under overload they would hide what the work costs.
    fn judged(&mut self, json: &[u8], created: f64, processed: f64) {
        if after(json, br#""status":"dropped""#).is_none() {
            let us = ((processed - created).max(0.0) * 1000.0) as u64;
            self.verdict_us.saturating_record(us.clamp(1, MAX_DELAY_US));
        }
        if after(json, br#""status":"late""#).is_some() {
            let deadline: f64 = number(json, br#""deadlineMs":"#).unwrap_or(0.0);
            let us = ((processed - created - deadline).max(0.0) * 1000.0) as u64;
            self.lateness_us
                .saturating_record(us.clamp(1, MAX_DELAY_US));
        }
    }

    /// Why the stream ended, unless the tool ended it.
    fn end(&mut self, why: String, shared: &Shared) {
        if !shared.stopping() {
            self.ended = Some(why);
            shared.ended.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The number after the first `key` (up to `,` or `}`).
fn number<T: std::str::FromStr>(json: &[u8], key: &[u8]) -> Option<T> {
    let rest = after(json, key)?;
    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The string after the first `key` (which ends with the opening quote);
/// only for values that hold no escapes (an epoch).
fn string<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let rest = after(json, key)?;
    Some(&rest[..rest.iter().position(|&b| b == b'"')?])
}

fn after<'a>(bytes: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = bytes.windows(key.len()).position(|w| w == key)? + key.len();
    Some(&bytes[at..])
}

/// A client that has finished its handshake, ready for its reader thread.
enum Stream {
    WebSocket(Box<WebSocket<Socket>>),
    Sse(BufReader<Socket>),
}

fn connect_ws(addr: SocketAddr) -> Result<(Socket, Stream), String> {
    let (socket, ws) = connect_websocket(addr, &format!("ws://{addr}/ws?control=1"))?;
    Ok((socket, Stream::WebSocket(ws)))
}

/// A WebSocket client of `url` (on the daemon at `addr`), handshake done.
fn connect_websocket(
    addr: SocketAddr,
    url: &str,
) -> Result<(Socket, Box<WebSocket<Socket>>), String> {
    let socket = open_socket(addr)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let (ws, _) = tungstenite::client::client_with_config(url, socket.clone(), Some(config))
        .map_err(|e| match e {
            HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                format!("handshake refused: {}", response.status())
            }
            other => format!("handshake: {other}"),
        })?;
    socket.0.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((socket, Box::new(ws)))
}

/// `GET /events`; the answer is a close-delimited `text/event-stream`.
fn connect_sse(addr: SocketAddr) -> Result<(Socket, Stream), String> {
    let socket = open_socket(addr)?;
    let request = format!(
        "GET /events?control=1 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    (&*socket.0)
        .write_all(request.as_bytes())
        .map_err(|e| format!("request: {e}"))?;
    let mut reader = BufReader::with_capacity(READ_BUFFER, socket.clone());
    let mut line = String::new();
    let mut status = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("response head: {e}"))?;
        if n == 0 {
            return Err("response head: connection closed".into());
        }
        if status.is_empty() {
            status = line.trim_end().to_string();
        } else if line.trim_end().is_empty() {
            break;
        } else if line.to_ascii_lowercase().starts_with("transfer-encoding:") {
            return Err(format!("unexpected {}", line.trim_end()));
        }
    }
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("refused: {status}"));
    }
    socket.0.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((socket, Stream::Sse(reader)))
}

fn read_ws(ws: &mut WebSocket<Socket>, tally: &mut Tally, shared: &Shared) {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                tally.message(text.as_bytes(), now_ms(), shared);
            }
            Ok(Message::Close(frame)) => {
                let why = frame.map_or("Close".into(), |f| format!("Close {}", f.code));
                return tally.end(format!("the daemon sent {why}"), shared);
            }
            Ok(_) => {} // Ping (answered by tungstenite), Pong, Binary: nothing to measure.
            Err(e) => return tally.end(e.to_string(), shared),
        }
    }
}

/// Reads SSE messages (`id:`, `event:`, `data:` lines up to a blank line).
/// The JSON is in `data:`; an outcome's id must be `EPOCH:SEQ` of this run.
fn read_sse(reader: &mut BufReader<Socket>, tally: &mut Tally, shared: &Shared) {
    let mut line = Vec::with_capacity(1024);
    let mut data = Vec::with_capacity(1024);
    let mut id = Vec::with_capacity(64);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return tally.end("the daemon closed the stream".into(), shared),
            Ok(_) => {}
            Err(e) => return tally.end(e.to_string(), shared),
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if let Some(value) = text.strip_prefix(b"data: ") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
        } else if let Some(value) = text.strip_prefix(b"id: ") {
            id.clear();
            id.extend_from_slice(value);
        } else if text.is_empty() && !data.is_empty() {
            let seq = tally.message(&data, now_ms(), shared);
            if let Some(seq) = seq {
                check_id(&id, seq, tally);
            }
            data.clear();
            id.clear();
        }
        // `event:` repeats the JSON's type, `retry:` and `:` comments carry nothing.
    }
}

/// An outcome's SSE id is `EPOCH:SEQ`, naming this run and this outcome.
fn check_id(id: &[u8], seq: u64, tally: &mut Tally) {
    let ok = id.strip_prefix(tally.epoch.as_slice()).is_some_and(|rest| {
        rest.strip_prefix(b":")
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok())
            == Some(seq)
    });
    if !ok || tally.epoch.is_empty() {
        tally.bad_ids += 1;
    }
}

fn spawn_reader(
    name: String,
    stream: Stream,
    shared: &Arc<Shared>,
) -> io::Result<JoinHandle<Tally>> {
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name(name)
        .stack_size(READER_STACK)
        .spawn(move || {
            let mut tally = Tally::new(shared.seconds);
            match stream {
                Stream::WebSocket(mut ws) => read_ws(&mut ws, &mut tally, &shared),
                Stream::Sse(mut reader) => read_sse(&mut reader, &mut tally, &shared),
            }
            tally
        })
}

/// The clients of one transport that are connected, and why the others are not.
struct Connected {
    sockets: Vec<Socket>,
    readers: Vec<JoinHandle<Tally>>,
    failures: BTreeMap<String, u64>,
}

/// Connects the clients one after another from this thread, so no burst
/// overflows the listen backlog; each then reads on its own thread.
fn connect_all(
    count: u32,
    kind: &str,
    connect: fn(SocketAddr) -> Result<(Socket, Stream), String>,
    addr: SocketAddr,
    shared: &Arc<Shared>,
) -> Connected {
    let mut connected = Connected {
        sockets: Vec::with_capacity(count as usize),
        readers: Vec::with_capacity(count as usize),
        failures: BTreeMap::new(),
    };
    for i in 0..count {
        let result = connect(addr).and_then(|(socket, stream)| {
            let reader = spawn_reader(format!("{kind}-{i}"), stream, shared)
                .map_err(|e| format!("cannot start a reader thread: {e}"))?;
            Ok((socket, reader))
        });
        match result {
            Ok((socket, reader)) => {
                connected.sockets.push(socket);
                connected.readers.push(reader);
            }
            Err(why) => *connected.failures.entry(why).or_default() += 1,
        }
    }
    connected
}

/// What a replaying client got: this run from seq 1 up to the newest outcome
/// when it joined (`target`), in order, or how far it came.
#[derive(Default)]
struct Replayed {
    target: u64,
    last_seq: u64,
    holes: u64,
    gap_notices: u64,
}

impl Replayed {
    fn complete(&self) -> bool {
        self.target > 0 && self.last_seq >= self.target && self.holes == 0 && self.gap_notices == 0
    }

    fn message(&mut self, json: &[u8]) {
        match string(json, b"\"type\":\"") {
            Some(b"hello") => self.target = number(json, b"\"seq\":").unwrap_or(0),
            Some(b"gap") => {
                self.gap_notices += 1;
                self.last_seq = number(json, b"\"to\":").unwrap_or(self.last_seq);
            }
            Some(b"event") => {
                let seq = number(json, b"\"seq\":").unwrap_or(0);
                if seq != self.last_seq + 1 {
                    self.holes += 1;
                }
                self.last_seq = seq;
            }
            _ => {}
        }
    }
}

/// Replaying clients of this run (`epoch`), each reading on its own thread:
/// continuously, or for a moment every `pause` seconds.
fn start_replays(
    count: u32,
    pause: f64,
    addr: SocketAddr,
    epoch: &str,
) -> (Vec<Socket>, Vec<JoinHandle<Replayed>>) {
    let url = format!("ws://{addr}/ws?epoch={epoch}&since=0");
    let mut sockets = Vec::new();
    let mut readers = Vec::new();
    for i in 0..count {
        let Ok((socket, mut ws)) = connect_websocket(addr, &url) else {
            continue;
        };
        if pause > 0.0 {
            let _ = socket.0.set_read_timeout(Some(Duration::from_millis(100)));
        }
        let reader = thread::Builder::new()
            .name(format!("replay-{i}"))
            .stack_size(READER_STACK)
            .spawn(move || read_replay(&mut ws, pause));
        if let Ok(reader) = reader {
            sockets.push(socket);
            readers.push(reader);
        }
    }
    (sockets, readers)
}

fn read_replay(ws: &mut WebSocket<Socket>, pause: f64) -> Replayed {
    let mut replayed = Replayed::default();
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => replayed.message(text.as_bytes()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                thread::sleep(Duration::from_secs_f64(pause));
            }
            Err(_) => return replayed,
        }
    }
}

fn replay_report(
    pause: f64,
    requested: u32,
    sockets: &[Socket],
    readers: Vec<JoinHandle<Replayed>>,
) -> Value {
    for socket in sockets {
        let _ = socket.0.shutdown(Shutdown::Both);
    }
    let replayed: Vec<Replayed> = readers.into_iter().filter_map(|r| r.join().ok()).collect();
    json!({
        "requested": requested,
        "connected": replayed.len(),
        "pauseSeconds": pause,
        "complete": replayed.iter().filter(|r| r.complete()).count(),
        "holes": replayed.iter().map(|r| r.holes).sum::<u64>(),
        "gapNotices": replayed.iter().map(|r| r.gap_notices).sum::<u64>(),
    })
}

/// Ends every stream from this side and collects the readers' tallies.
fn close_all(clients: Connected, shared: &Shared) -> Vec<Tally> {
    shared.stopping.store(true, Ordering::Relaxed);
    for socket in &clients.sockets {
        let _ = socket.0.shutdown(Shutdown::Both);
    }
    // A reader that panicked has no tally; it shows as a client short.
    clients
        .readers
        .into_iter()
        .filter_map(|r| r.join().ok())
        .collect()
}

// ------------------------------------------------------------- the run

/// What the process under test did during the window.
#[derive(Default)]
struct ServerReadings {
    cpu_pct: Option<f64>,
    busiest_second_pct: Option<f64>,
    rss_kib: u64,
    max_rss_kib: u64,
    threads: u64,
    /// The daemon's `generator.tickJitterMsP99`, read once a second.
    tick_jitter_ms: Vec<f64>,
}

/// Samples the daemon's CPU, RSS, threads and tick jitter once a second for `length`.
fn watch_server(
    pid: Option<u32>,
    length: Duration,
    ticks_per_s: f64,
    stats: impl Fn() -> Option<Value>,
) -> ServerReadings {
    let pid_text = pid.map(|p| p.to_string());
    let ticks = || pid_text.as_deref().and_then(cpu_ticks);
    let started = Instant::now();
    let first = ticks();
    let mut last = (started, first);
    let mut readings = ServerReadings::default();
    while started.elapsed() < length {
        thread::sleep(
            length
                .saturating_sub(started.elapsed())
                .min(Duration::from_secs(1)),
        );
        if let Some(pid) = pid {
            let (rss, _) = rss_and_threads(pid);
            readings.max_rss_kib = readings.max_rss_kib.max(rss);
        }
        let jitter = stats().and_then(|s| s.pointer("/generator/tickJitterMsP99")?.as_f64());
        readings.tick_jitter_ms.extend(jitter);
        let now = (Instant::now(), ticks());
        if let (Some(from), Some(to)) = (last.1, now.1) {
            let wall = (now.0 - last.0).as_secs_f64();
            if wall >= 0.5 {
                let pct = to.saturating_sub(from) as f64 / ticks_per_s / wall * 100.0;
                readings.busiest_second_pct =
                    Some(readings.busiest_second_pct.unwrap_or(0.0).max(pct));
            }
        }
        last = now;
    }
    let wall = started.elapsed().as_secs_f64();
    if let (Some(from), Some(to)) = (first, ticks()) {
        readings.cpu_pct = Some(to.saturating_sub(from) as f64 / ticks_per_s / wall * 100.0);
    }
    if let Some(pid) = pid {
        (readings.rss_kib, readings.threads) = rss_and_threads(pid);
        readings.max_rss_kib = readings.max_rss_kib.max(readings.rss_kib);
    }
    readings
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
    let load_before = load_average();
    let idle_from = machine_ticks();
    thread::sleep(Duration::from_secs(1));
    let busy_before = machine_busy(idle_from, machine_ticks(), cpus);

    // Serving before the daemon starts: its first calls find it there.
    let http_worker = if options.http_worker {
        Some(start_http_worker()?)
    } else {
        None
    };
    let work_url = http_worker.as_ref().map(|w| w.url.as_str());
    let mut daemon = if options.spawn {
        Some(spawn_daemon(options, work_url)?)
    } else {
        None
    };
    let addr = match (&daemon, options.addr) {
        (Some(d), _) => d.addr,
        (None, Some(addr)) => addr,
        (None, None) => return Err("give --addr or --spawn".into()),
    };
    let pid = daemon.as_ref().map(|d| d.child.id()).or(options.pid);
    let http_calls = http_worker.as_ref().map(|w| &*w.answered);
    let result = measure(
        options,
        addr,
        pid,
        busy_before,
        &load_before,
        cpus,
        http_calls,
    );
    let report = result.map(|mut report| {
        if let Some(d) = &daemon {
            report["target"]["daemonArgs"] = json!(d.args);
        }
        report
    });
    if let Some(d) = daemon.as_mut() {
        d.stop();
    }
    // Only now: the daemon's last calls (while it drains) still get answers.
    drop(http_worker);
    let report = report?;
    if options.json {
        println!("{report}");
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// Connects, measures and tallies: the report as JSON.
fn measure(
    options: &Options,
    addr: SocketAddr,
    pid: Option<u32>,
    busy_before: f64,
    load_before: &str,
    cpus: usize,
    http_calls: Option<&AtomicU64>,
) -> Result<Value, String> {
    let agent = http_agent();
    let ticks_per_s = clock_ticks_per_second();
    let shared = Arc::new(Shared {
        start: AtomicU64::new(f64::INFINITY.to_bits()),
        end: AtomicU64::new(f64::INFINITY.to_bits()),
        seconds: options.seconds.ceil() as usize,
        caught_up: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
    });
    // The workers first: the pipeline is running by the time the clients join.
    let pull = connect_pull_workers(options.pull_workers, options.pull_credit, addr);
    let connecting = Instant::now();
    let ws = connect_all(options.ws, "ws", connect_ws, addr, &shared);
    let sse = connect_all(options.sse, "sse", connect_sse, addr, &shared);
    let connected_in = connecting.elapsed().as_secs_f64();

    let stop_ingest = Arc::new(AtomicBool::new(false));
    let ingest_counts = Arc::new(IngestCounts::default());
    let ingest_started = Instant::now();
    let producer = start_ingest(options, addr, &stop_ingest, &ingest_counts)?;

    // The window is fixed before it starts; events decided inside it count.
    let window_start = now_ms() + options.warmup * 1000.0;
    shared
        .start
        .store(window_start.to_bits(), Ordering::Relaxed);
    let window_end = window_start + options.seconds * 1000.0;
    shared.end.store(window_end.to_bits(), Ordering::Relaxed);
    thread::sleep(Duration::from_secs_f64(options.warmup));

    let stats_start = server_stats(&agent, addr)?;
    let stats_started = Instant::now();
    let own_before = cpu_ticks("self");
    let machine_before = machine_ticks();
    let window = Instant::now();
    let epoch = stats_start["epoch"].as_str().unwrap_or_default().to_owned();
    let (replay_sockets, replays) =
        start_replays(options.replay, options.replay_pause, addr, &epoch);
    let server = watch_server(
        pid,
        Duration::from_secs_f64(options.seconds),
        ticks_per_s,
        || server_stats(&agent, addr).ok(),
    );
    let window_wall = window.elapsed().as_secs_f64();
    let stats_window = server_stats(&agent, addr)?;
    let stats_seconds = stats_started.elapsed().as_secs_f64();
    let own_cpu = own_before
        .zip(cpu_ticks("self"))
        .map(|(from, to)| to.saturating_sub(from) as f64 / ticks_per_s / window_wall * 100.0);
    let machine_cpu = machine_busy(machine_before, machine_ticks(), cpus);
    stop_ingest.store(true, Ordering::Relaxed);
    let ingest_seconds = ingest_started.elapsed().as_secs_f64();
    if let Some(producer) = producer {
        let _ = producer.join();
    }

    // Events decided near the end of the window may still be on their way.
    let live = ws.readers.len() + sse.readers.len();
    let grace = Instant::now();
    let limit = Duration::from_secs_f64(options.grace);
    while shared.caught_up.load(Ordering::Relaxed) + shared.ended.load(Ordering::Relaxed) < live
        && grace.elapsed() < limit
    {
        thread::sleep(Duration::from_millis(20));
    }
    let grace = grace.elapsed().as_secs_f64();
    let caught_up = shared.caught_up.load(Ordering::Relaxed);
    let stats_end = server_stats(&agent, addr)?;
    let ws_failures = ws.failures.clone();
    let sse_failures = sse.failures.clone();
    let replay = replay_report(
        options.replay_pause,
        options.replay,
        &replay_sockets,
        replays,
    );
    let ws_tallies = close_all(ws, &shared);
    let sse_tallies = close_all(sse, &shared);
    let pull = close_pull_workers(pull);

    let mut report = json!({
        "target": {"addr": addr.to_string(), "spawned": options.spawn, "pid": pid},
        "host": {"cpus": cpus, "busyBeforePct": round1(busy_before), "loadAverageBefore": load_before,
                 "busyDuringPct": round1(machine_cpu)},
        "clients": {
            "ws": transport_report(options.ws, &ws_tallies, &ws_failures),
            "sse": transport_report(options.sse, &sse_tallies, &sse_failures),
            "connectSeconds": round3(connected_in),
            "caughtUp": caught_up,
            "graceSeconds": round3(grace),
        },
        "window": {"warmupSeconds": options.warmup, "seconds": round3(window_wall)},
        "server": {
            "cpuPct": server.cpu_pct.map(round1),
            "busiestSecondPct": server.busiest_second_pct.map(round1),
            "rssMiB": pid.map(|_| round1(server.rss_kib as f64 / 1024.0)),
            "maxRssMiB": pid.map(|_| round1(server.max_rss_kib as f64 / 1024.0)),
            "threads": pid.map(|_| server.threads),
            "tickJitterMsP99": spread(&server.tick_jitter_ms),
        },
        "loadCpuPct": own_cpu.map(round1),
        "daemonStats": daemon_report(&stats_start, &stats_end),
        "verdictsPerSecond": verdict_rates(&stats_start, &stats_window, stats_seconds),
        "work": work_report(&stats_start, &stats_end, http_calls, pull),
    });
    let all: Vec<&Tally> = ws_tallies.iter().chain(&sse_tallies).collect();
    tally_report(&all, options.seconds, &mut report)?;
    if producer_ran(options) {
        report["ingest"] = ingest_report(options, &ingest_counts, ingest_seconds);
    }
    if options.replay > 0 {
        report["replay"] = replay;
    }
    Ok(report)
}

fn producer_ran(options: &Options) -> bool {
    options.ingest_rate > 0.0
}

fn start_ingest(
    options: &Options,
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    counts: &Arc<IngestCounts>,
) -> Result<Option<JoinHandle<()>>, String> {
    if !producer_ran(options) {
        return Ok(None);
    }
    let pace = (options.ingest_rate, options.batch);
    let shape = Shape {
        mix: options.ingest_mix.clone(),
        work: options.ingest_work,
    };
    let (stop, counts) = (Arc::clone(stop), Arc::clone(counts));
    thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest(addr, pace, &shape, &stop, &counts))
        .map(Some)
        .map_err(|e| format!("cannot start the ingest thread: {e}"))
}

/// Median and largest of a second-by-second reading (`null` without one).
fn spread(samples: &[f64]) -> Value {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.last() {
        Some(&max) => json!({"median": sorted[sorted.len() / 2], "max": max}),
        None => Value::Null,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn transport_report(requested: u32, tallies: &[Tally], failures: &BTreeMap<String, u64>) -> Value {
    let ended: Vec<&str> = tallies.iter().filter_map(|t| t.ended.as_deref()).collect();
    json!({
        "requested": requested,
        "connected": tallies.len(),
        "connectFailures": failures.values().sum::<u64>(),
        "failureReasons": failures,
        "endedEarly": ended.len(),
        "endedExample": ended.first(),
    })
}

fn percentiles(histogram: &Histogram<u32>, max_us: u64) -> Value {
    let ms = |us: u64| round3(us as f64 / 1000.0);
    let at = |q: f64| ms(histogram.value_at_quantile(q));
    json!({"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p999": at(0.999), "max": ms(max_us)})
}

/// Merges the clients' tallies into `report`: messages, delays, gaps.
fn tally_report(tallies: &[&Tally], seconds: f64, report: &mut Value) -> Result<(), String> {
    let mut delay = delay_histogram();
    let mut end_to_end = delay_histogram();
    let mut verdict = delay_histogram();
    let mut lateness = delay_histogram();
    let mut by_second = vec![(0u64, 0u64); seconds.ceil() as usize];
    let (mut first_seq, mut last_seq, mut max_delay_us) = (u64::MAX, 0u64, 0u64);
    let mut rates: Vec<f64> = Vec::with_capacity(tallies.len());
    for t in tallies {
        delay.add(&t.delay_us).map_err(|e| e.to_string())?;
        end_to_end
            .add(&t.end_to_end_us)
            .map_err(|e| e.to_string())?;
        verdict.add(&t.verdict_us).map_err(|e| e.to_string())?;
        lateness.add(&t.lateness_us).map_err(|e| e.to_string())?;
        for (total, (sum, n)) in by_second.iter_mut().zip(&t.by_second) {
            total.0 += sum;
            total.1 += n;
        }
        max_delay_us = max_delay_us.max(t.max_delay_us);
        if t.received > 0 {
            first_seq = first_seq.min(t.first_in_window);
            last_seq = last_seq.max(t.last_in_window);
        }
        rates.push(t.received as f64 / seconds);
    }
    rates.sort_by(f64::total_cmp);
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(|t| f(t)).sum::<u64>();
    let clients_with = |f: fn(&Tally) -> u64| tallies.iter().filter(|t| f(t) > 0).count();
    let received = sum(|t| t.received);
    let decided = if received > 0 {
        last_seq - first_seq + 1
    } else {
        0
    };
    let expected = decided * tallies.len() as u64;
    report["messages"] = json!({
        "received": received,
        "perSecond": round1(received as f64 / seconds),
        "perClientPerSecond": {
            "min": rates.first().copied().map(round1),
            "median": rates.get(rates.len() / 2).copied().map(round1),
        },
        "seqRange": if received > 0 { json!([first_seq, last_seq]) } else { Value::Null },
        "expected": expected,
        "deliveredPct": if expected > 0 { Some(round3(received as f64 * 100.0 / expected as f64)) } else { None },
        "unparsed": sum(|t| t.unparsed),
        "badSseIds": sum(|t| t.bad_ids),
    });
    let means: Vec<Option<f64>> = by_second
        .iter()
        .map(|&(sum, n)| (n > 0).then(|| round3(sum as f64 / n as f64 / 1000.0)))
        .collect();
    report["deliveryMs"] = percentiles(&delay, max_delay_us);
    report["deliveryMs"]["meanPerSecond"] = json!(means);
    report["endToEndMs"] = percentiles(&end_to_end, end_to_end.max());
    report["verdictMs"] = percentiles(&verdict, verdict.max());
    report["latenessMs"] = percentiles(&lateness, lateness.max());
    report["latenessMs"]["late"] = json!(lateness.len());
    report["gaps"] = json!({
        "missingSeqs": sum(|t| t.missing),
        "clientsWithMissing": clients_with(|t| t.missing),
        "gapNotices": sum(|t| t.gap_notices),
        "clientsWithGapNotices": clients_with(|t| t.gap_notices),
        "maxGapNoticesPerClient": tallies.iter().map(|t| t.gap_notices).max().unwrap_or(0),
        "resets": sum(|t| t.resets),
        "outOfOrder": sum(|t| t.out_of_order),
    });
    Ok(())
}

fn daemon_report(start: &Value, end: &Value) -> Value {
    let dropped = stat_u64(end, "/clients/droppedMessages");
    json!({
        "droppedMessages": dropped,
        "droppedMessagesDuringRun": dropped.saturating_sub(stat_u64(start, "/clients/droppedMessages")),
        "backlog": end.pointer("/clients/backlog"),
        "connected": end.pointer("/clients/connected"),
        "generatedDuringRun": stat_u64(end, "/totals/generated").saturating_sub(stat_u64(start, "/totals/generated")),
        "totals": end.pointer("/totals"),
        "producers": end.pointer("/producers"),
        "conservation": conserved(end),
    })
}

/// What the daemon decided between two stats readings `seconds` apart, per
/// second: the window's throughput, by verdict and drop reason.
fn verdict_rates(start: &Value, end: &Value, seconds: f64) -> Value {
    let per_second = |path: &str| {
        round1(stat_u64(end, path).saturating_sub(stat_u64(start, path)) as f64 / seconds)
    };
    let dropped: serde_json::Map<String, Value> = end
        .pointer("/totals/dropped")
        .and_then(Value::as_object)
        .map_or_else(Default::default, |reasons| {
            reasons
                .keys()
                .map(|reason| {
                    (
                        reason.clone(),
                        json!(per_second(&format!("/totals/dropped/{reason}"))),
                    )
                })
                .collect()
        });
    let (on_time, late, failed) = (
        per_second("/totals/onTime"),
        per_second("/totals/late"),
        per_second("/totals/failed"),
    );
    json!({
        "seconds": round3(seconds),
        "entered": per_second("/totals/generated") + per_second("/totals/ingested"),
        "onTime": on_time,
        "late": late,
        "failed": failed,
        "worked": round1(on_time + late + failed),
        "dropped": dropped,
    })
}

/// Where the work ran, what the tool's own workers answered, and what the
/// daemon counted as failed meanwhile (the tool's workers never answer
/// `failed`, so anything here is the daemon's doing or a lost connection).
fn work_report(
    start: &Value,
    end: &Value,
    http_calls: Option<&AtomicU64>,
    pull: Option<Value>,
) -> Value {
    json!({
        "mode": end.pointer("/work/mode"),
        "target": end.pointer("/work/target"),
        "errorRate": end.pointer("/work/errorRate"),
        "httpCalls": http_calls.map(|n| n.load(Ordering::Relaxed)),
        "pullTasks": pull.as_ref().map(|p| p["tasksAnswered"].clone()),
        "pullWorkers": pull,
        "failedDuringRun": stat_u64(end, "/totals/failed").saturating_sub(stat_u64(start, "/totals/failed")),
    })
}

fn ingest_report(options: &Options, counts: &IngestCounts, seconds: f64) -> Value {
    let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
    json!({
        "rate": options.ingest_rate,
        "batch": options.batch,
        "seconds": round3(seconds),
        "posts": get(&counts.posts),
        "accepted": get(&counts.accepted),
        "dropped": get(&counts.dropped),
        "refused": get(&counts.refused),
        "failedPosts": get(&counts.failed_posts),
        "latePosts": get(&counts.late_posts),
    })
}

// ------------------------------------------------------------- the summary

fn print_summary(r: &Value) {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let at = |path: &str| s(r.pointer(path).unwrap_or(&Value::Null));
    println!("punctual-load against {}", at("/target/addr"));
    if let Some(args) = r.pointer("/target/daemonArgs").and_then(Value::as_array) {
        let args: Vec<String> = args.iter().map(s).collect();
        println!(
            "  daemon      punctual {} (pid {})",
            args.join(" "),
            at("/target/pid")
        );
    }
    println!(
        "  host        {} CPUs; {} % busy in the second before (load average {}), {} % during the window (of one core)",
        at("/host/cpus"),
        at("/host/busyBeforePct"),
        at("/host/loadAverageBefore"),
        at("/host/busyDuringPct")
    );
    for kind in ["ws", "sse"] {
        let c = |f: &str| at(&format!("/clients/{kind}/{f}"));
        if c("requested") != "0" {
            let mut line = format!(
                "  {kind:<11} {}/{} connected",
                c("connected"),
                c("requested")
            );
            if c("connectFailures") != "0" {
                line += &format!("; {} failed: {}", c("connectFailures"), c("failureReasons"));
            }
            if c("endedEarly") != "0" {
                line += &format!(
                    "; {} ended early, e.g. {}",
                    c("endedEarly"),
                    c("endedExample")
                );
            }
            println!("{line}");
        }
    }
    println!(
        "  window      {} s after {} s warm-up (connecting took {} s); {} clients caught up {} s after it",
        at("/window/seconds"),
        at("/window/warmupSeconds"),
        at("/clients/connectSeconds"),
        at("/clients/caughtUp"),
        at("/clients/graceSeconds")
    );
    println!(
        "  messages    {} decided in the window = {}/s; per client min {}/s, median {}/s; delivered {} % of seq {} × clients",
        at("/messages/received"),
        at("/messages/perSecond"),
        at("/messages/perClientPerSecond/min"),
        at("/messages/perClientPerSecond/median"),
        at("/messages/deliveredPct"),
        at("/messages/seqRange")
    );
    for (label, key, what) in [
        ("delivery", "deliveryMs", "receive − processedAt"),
        ("end-to-end", "endToEndMs", "receive − createdAt"),
        (
            "verdict",
            "verdictMs",
            "processedAt − createdAt of events worked on: pipeline + work",
        ),
    ] {
        let p = |q: &str| at(&format!("/{key}/{q}"));
        println!(
            "  {label:<11} p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  ({what})",
            p("p50"),
            p("p90"),
            p("p99"),
            p("p999"),
            p("max")
        );
    }
    let means: Vec<String> = r
        .pointer("/deliveryMs/meanPerSecond")
        .and_then(Value::as_array)
        .map_or(Vec::new(), |m| m.iter().map(s).collect());
    println!("  mean/s      {} ms", means.join(" "));
    println!(
        "  gaps        {} seqs missing in {} clients; {} gap notices in {} clients (most {} per client); {} resets; {} out of order",
        at("/gaps/missingSeqs"),
        at("/gaps/clientsWithMissing"),
        at("/gaps/gapNotices"),
        at("/gaps/clientsWithGapNotices"),
        at("/gaps/maxGapNoticesPerClient"),
        at("/gaps/resets"),
        at("/gaps/outOfOrder")
    );
    if r.get("ingest").is_some() {
        println!(
            "  ingest      {} posts of {} in {} s: {} accepted, {} dropped, {} refused; {} posts failed, {} late",
            at("/ingest/posts"),
            at("/ingest/batch"),
            at("/ingest/seconds"),
            at("/ingest/accepted"),
            at("/ingest/dropped"),
            at("/ingest/refused"),
            at("/ingest/failedPosts"),
            at("/ingest/latePosts")
        );
    }
    println!(
        "  verdicts/s  {} on time, {} late, {} failed, dropped {} (the daemon's counts over {} s from the window's start; {} entered/s)",
        at("/verdictsPerSecond/onTime"),
        at("/verdictsPerSecond/late"),
        at("/verdictsPerSecond/failed"),
        at("/verdictsPerSecond/dropped"),
        at("/verdictsPerSecond/seconds"),
        at("/verdictsPerSecond/entered")
    );
    print_work(r, &at);
    println!(
        "  server      CPU {} % of one core (busiest second {} %); RSS {} MiB (max {} MiB); {} threads; this tool {} %",
        at("/server/cpuPct"),
        at("/server/busiestSecondPct"),
        at("/server/rssMiB"),
        at("/server/maxRssMiB"),
        at("/server/threads"),
        at("/loadCpuPct")
    );
    println!(
        "  clock       generator tick jitter p99 per second: median {} ms, max {} ms",
        at("/server/tickJitterMsP99/median"),
        at("/server/tickJitterMsP99/max")
    );
    if r.get("replay").is_some() {
        println!(
            "  replay      {}/{} replaying clients (reading every {} s): {} got the whole run to their start, {} holes, {} gap notices",
            at("/replay/connected"),
            at("/replay/requested"),
            at("/replay/pauseSeconds"),
            at("/replay/complete"),
            at("/replay/holes"),
            at("/replay/gapNotices")
        );
    }
    let conservation = if r.pointer("/daemonStats/conservation") == Some(&Value::Bool(true)) {
        "holds"
    } else {
        "DOES NOT HOLD"
    };
    println!(
        "  daemon      droppedMessages {} during the run ({} in all); backlog {}; {} generated during the run; conservation {conservation}",
        at("/daemonStats/droppedMessagesDuringRun"),
        at("/daemonStats/droppedMessages"),
        at("/daemonStats/backlog"),
        at("/daemonStats/generatedDuringRun")
    );
    println!("  totals      {}", at("/daemonStats/totals"));
}

/// The work line, when the tool's own workers served the daemon.
fn print_work(r: &Value, at: &dyn Fn(&str) -> String) {
    let answered = match (r.pointer("/work/httpCalls"), r.pointer("/work/pullTasks")) {
        (Some(calls), _) if !calls.is_null() => format!("{calls} HTTP calls answered"),
        (_, Some(tasks)) if !tasks.is_null() => {
            let p = |f: &str| at(&format!("/work/pullWorkers/{f}"));
            let mut line = format!(
                "{}/{} pull workers connected, {tasks} tasks answered",
                p("connected"),
                p("requested")
            );
            if p("connectFailures") != "0" {
                line += &format!("; {} failed: {}", p("connectFailures"), p("failureReasons"));
            }
            if p("endedEarly") != "0" {
                line += &format!(
                    "; {} ended early, e.g. {}",
                    p("endedEarly"),
                    p("endedExample")
                );
            }
            line
        }
        _ => return,
    };
    println!(
        "  work        {} → {}: {answered}; the daemon judged {} failed during the run (error rate {})",
        at("/work/mode"),
        at("/work/target"),
        at("/work/failedDuringRun"),
        at("/work/errorRate")
    );
}
