//! Fan-out benchmark: many WebSocket dashboards on one daemon.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example fanout_bench -- --clients 1000 --rate 50 --seconds 20
//! ```
//!
//! Starts the release daemon (`target/release/punctual`, brought up to date
//! first with `cargo build --release --bin punctual` unless `--no-build`) as a
//! child process on `127.0.0.1:0` with `--rate R --work-ms 1 --deadline-ms
//! 1000`, so every event is on time and the load is the fan-out itself. Then
//! it connects N WebSocket clients over loopback, one small-stack thread each
//! doing blocking reads and parsing only `seq` and `processedAt` out of each
//! event, and after a warm-up measures for `--seconds`:
//!
//! - server CPU from `/proc/<pid>/stat`, and per thread group (`ws-*`,
//!   `fanout`, …) from `/proc/<pid>/task/*`: time on a CPU and time waiting
//!   for one (`schedstat`), voluntary and involuntary context switches;
//! - server RSS and thread count from `/proc/<pid>/status`;
//! - delivery delay = client receive time − `processedAt` (p50/p90/p99/max,
//!   and the mean per second of the window, which shows a growing backlog);
//! - messages received against expected, and `seq` gaps per client;
//! - the server's own `clients.droppedMessages` from `GET /api/stats`.
//!
//! The window is defined by `processedAt`: an event decided inside it counts
//! whenever it arrives. After the window the run waits until every client has
//! seen an event decided after it (at most 30 s), then closes the clients and
//! stops the daemon (SIGTERM, SIGKILL after 5 s). Everything is on loopback.

use std::collections::HashMap;
use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Stack of a client reader thread: its buffer and histogram live on the heap.
const CLIENT_STACK: usize = 64 * 1024;
/// Read buffer of a client: several frames per read when it falls behind.
const READ_BUFFER: usize = 16 * 1024;
/// Longest wait after the window for events decided inside it to arrive.
const MAX_GRACE: Duration = Duration::from_secs(30);
/// Largest delay the histograms resolve, in microseconds (60 s).
const MAX_DELAY_US: u64 = 60_000_000;

const USAGE: &str = "\
usage: fanout_bench [--clients N] [--rate EV_PER_S] [--seconds S] [--warmup S]
                    [--server PATH] [--no-build] [--server-arg ARG]...
  --clients     WebSocket clients to connect (default 1000)
  --rate        generated events per second (default 50)
  --seconds     measured window, after the warm-up (default 20)
  --warmup      seconds between the last connection and the window (default 3)
  --server      daemon binary (default: punctual in the target directory of this example)
  --no-build    do not run `cargo build --release --bin punctual` first
  --server-arg  one more flag for the daemon, repeatable (--server-arg=--client-queue=64);
                not one the benchmark sets itself (--listen --rate --work-ms --deadline-ms
                --max-clients --log-interval)";

struct Options {
    clients: usize,
    rate: u32,
    seconds: f64,
    warmup: f64,
    server: Option<PathBuf>,
    build: bool,
    server_args: Vec<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        clients: 1000,
        rate: 50,
        seconds: 20.0,
        warmup: 3.0,
        server: None,
        build: true,
        server_args: Vec::new(),
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--clients" => options.clients = number(&value()?, &flag)?,
            "--rate" => options.rate = number(&value()?, &flag)?,
            "--seconds" => options.seconds = number(&value()?, &flag)?,
            "--warmup" => options.warmup = number(&value()?, &flag)?,
            "--server" => options.server = Some(PathBuf::from(value()?)),
            "--server-arg" => options.server_args.push(value()?),
            "--no-build" => options.build = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.clients == 0 || options.rate == 0 {
        return Err("--clients and --rate must be at least 1".into());
    }
    if !(options.seconds >= 1.0 && options.seconds <= 3600.0) {
        return Err("--seconds must be between 1 and 3600".into());
    }
    if !(options.warmup >= 0.0 && options.warmup <= 600.0) {
        return Err("--warmup must be between 0 and 600".into());
    }
    Ok(options)
}

fn number<T: std::str::FromStr>(text: &str, flag: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: not a valid number: {text}"))
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("fanout_bench: {e}\n{USAGE}");
            process::exit(2);
        }
    };
    if let Err(e) = run(&options) {
        eprintln!("fanout_bench: {e}");
        process::exit(1);
    }
}

/// Wall-clock time in epoch milliseconds, the daemon's `processedAt` scale.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------- the daemon

/// The daemon as a child process; killed if still running when dropped.
struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (the daemon drains and says goodbye), SIGKILL if it is not
    /// gone within 5 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
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

/// The daemon binary: `--server`, else `punctual` in the target directory
/// this example was built into (`target/release/punctual`).
fn server_binary(options: &Options) -> PathBuf {
    if let Some(path) = &options.server {
        return path.clone();
    }
    // …/target/release/examples/fanout_bench → …/target/release/punctual
    env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("punctual")))
        .filter(|path| path.exists() || options.build)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/punctual")
        })
}

/// Brings the daemon up to date: `cargo run --example` builds the library,
/// not the binary, which could otherwise be stale.
fn build_server() -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    eprintln!("fanout_bench: cargo build --release --bin punctual");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "punctual", "--manifest-path"])
        .arg(&manifest)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build --release --bin punctual: {status}"))
    }
}

fn start_daemon(binary: &Path, args: &[String]) -> Result<Daemon, String> {
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
    // Only the flags given here configure the daemon.
    for (name, _) in env::vars_os() {
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
    };
    // Keeps draining the daemon's log, so it never blocks on a full pipe.
    // Warnings and errors are passed on; until it serves, every line is kept
    // to explain a failed start.
    let (found, address) = mpsc::channel();
    thread::Builder::new()
        .name("server-log".into())
        .spawn(move || {
            let mut found = Some(found);
            let mut before = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let serving = line.split("serving http://").nth(1);
                if let (Some(rest), true) = (serving, found.is_some()) {
                    let addr = rest.split('/').next().unwrap_or("").to_string();
                    if let Some(tell) = found.take() {
                        let _ = tell.send(Ok(addr));
                    }
                } else {
                    if line.contains("WARN") || line.contains("ERROR") {
                        eprintln!("daemon: {line}");
                    }
                    if found.is_some() {
                        before.push(line);
                    }
                }
            }
            if let Some(tell) = found {
                let _ = tell.send(Err(before.join("\n")));
            }
        })
        .map_err(|e| format!("cannot spawn the log reader: {e}"))?;
    let addr = match address.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(addr)) => addr,
        Ok(Err(log)) => return Err(format!("the daemon ended before serving:\n{log}")),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err("the daemon did not log `serving http://…` within 15 s".into());
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err("the daemon's log reader ended".into());
        }
    };
    daemon.addr = addr
        .parse()
        .map_err(|e| format!("cannot parse the daemon's address {addr:?}: {e}"))?;
    Ok(daemon)
}

/// `GET /api/stats` as JSON.
fn server_stats(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let fail = |e: &dyn std::fmt::Display| format!("GET /api/stats: {e}");
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| fail(&e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail(&e))?;
    stream
        .write_all(b"GET /api/stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| fail(&e))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| fail(&e))?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => &body[start..=end],
        _ => return Err(fail(&format!("not JSON: {body:?}"))),
    };
    serde_json::from_str(json).map_err(|e| fail(&e))
}

fn stat_u64(stats: &serde_json::Value, path: &str) -> u64 {
    stats.pointer(path).and_then(|v| v.as_u64()).unwrap_or(0)
}

fn stat_f64(stats: &serde_json::Value, path: &str) -> f64 {
    stats.pointer(path).and_then(|v| v.as_f64()).unwrap_or(0.0)
}

// ---------------------------------------------------------------- /proc

/// Name and user + system clock ticks of a process or thread (`stat` file).
fn cpu_ticks(stat_path: &str) -> Option<(String, u64)> {
    let text = fs::read_to_string(stat_path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    // After the name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// What a `status` file says about memory, threads and context switches.
#[derive(Clone, Copy, Default)]
struct Status {
    rss_kib: u64,
    threads: u64,
    voluntary: u64,
    involuntary: u64,
}

fn status(path: &str) -> Status {
    let mut s = Status::default();
    let Ok(text) = fs::read_to_string(path) else {
        return s;
    };
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match key {
            "VmRSS:" => s.rss_kib = value,
            "Threads:" => s.threads = value,
            "voluntary_ctxt_switches:" => s.voluntary = value,
            "nonvoluntary_ctxt_switches:" => s.involuntary = value,
            _ => {}
        }
    }
    s
}

/// One thread's counters at one moment.
#[derive(Clone, Default)]
struct ThreadReading {
    name: String,
    ticks: u64,
    voluntary: u64,
    involuntary: u64,
    /// From `schedstat` (exact, unlike the tick-sampled `ticks`): nanoseconds
    /// on a CPU, and waiting on a run queue (runnable but not running).
    running_ns: u64,
    waiting_ns: u64,
}

/// Time on a CPU and time waiting for one (ns), from a `schedstat` file.
fn schedstat(path: &str) -> (u64, u64) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

/// Every thread of `pid`, by thread id.
fn threads(pid: u32) -> HashMap<u32, ThreadReading> {
    let mut all = HashMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return all;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Some((name, ticks)) = cpu_ticks(&format!("/proc/{pid}/task/{tid}/stat")) {
            let s = status(&format!("/proc/{pid}/task/{tid}/status"));
            let reading = ThreadReading {
                name,
                ticks,
                voluntary: s.voluntary,
                involuntary: s.involuntary,
                running_ns: 0,
                waiting_ns: 0,
            };
            let (running_ns, waiting_ns) = schedstat(&format!("/proc/{pid}/task/{tid}/schedstat"));
            let reading = ThreadReading {
                running_ns,
                waiting_ns,
                ..reading
            };
            all.insert(tid, reading);
        }
    }
    all
}

/// `ws-17` → `ws-*`, `worker-0` → `worker-*`, `hub` → `hub`.
fn group(name: &str) -> String {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() < name.len() && stem.ends_with('-') {
        format!("{stem}*")
    } else {
        name.to_string()
    }
}

/// A thread group's threads and its counters' growth between two readings.
struct Group {
    name: String,
    threads: usize,
    delta: ThreadReading,
}

fn by_group(
    before: &HashMap<u32, ThreadReading>,
    after: &HashMap<u32, ThreadReading>,
) -> Vec<Group> {
    let mut groups: HashMap<String, (usize, ThreadReading)> = HashMap::new();
    for (tid, now) in after {
        let then = before.get(tid).cloned().unwrap_or_default();
        let (threads, delta) = groups.entry(group(&now.name)).or_default();
        *threads += 1;
        delta.ticks += now.ticks.saturating_sub(then.ticks);
        delta.voluntary += now.voluntary.saturating_sub(then.voluntary);
        delta.involuntary += now.involuntary.saturating_sub(then.involuntary);
        delta.running_ns += now.running_ns.saturating_sub(then.running_ns);
        delta.waiting_ns += now.waiting_ns.saturating_sub(then.waiting_ns);
    }
    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|(name, (threads, delta))| Group {
            name,
            threads,
            delta,
        })
        .collect();
    groups.sort_by(|a, b| {
        let key = |g: &Group| {
            let d = &g.delta;
            (d.running_ns, d.ticks, d.voluntary + d.involuntary)
        };
        key(b).cmp(&key(a))
    });
    groups
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
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).unwrap_or(&0) + fields.get(4).unwrap_or(&0);
    (total.saturating_sub(idle), total)
}

fn clock_ticks() -> f64 {
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

// ---------------------------------------------------------------- clients

/// What every client shares: the window, in epoch milliseconds (as f64
/// bits; until it is set nothing counts), and the end of the run.
struct Shared {
    start: AtomicU64,
    end: AtomicU64,
    seconds: usize,
    /// Clients that have seen an event decided after the window: they have
    /// everything from inside it they are going to get.
    caught_up: AtomicUsize,
    /// Set just before this side closes the connections: errors after it
    /// are our own doing.
    stopping: AtomicBool,
}

impl Shared {
    fn window(&self) -> (f64, f64) {
        (
            f64::from_bits(self.start.load(Ordering::Relaxed)),
            f64::from_bits(self.end.load(Ordering::Relaxed)),
        )
    }
}

/// What one client saw of the events decided inside the window.
struct Tally {
    received: u64,
    gaps: u64,
    reordered: u64,
    /// Newest `seq` seen, inside the window or not (for gaps).
    newest: u64,
    /// Oldest and newest `seq` seen inside the window.
    first_in_window: u64,
    last_in_window: u64,
    delay_us: Histogram<u64>,
    max_delay_us: u64,
    /// Per second of the window (by `processedAt`): delay sum (µs) and count.
    by_second: Vec<(u64, u64)>,
    past_end: bool,
    negative: u64,
    unparsed: u64,
    ended: Option<String>,
}

impl Tally {
    fn new(seconds: usize) -> Self {
        Tally {
            received: 0,
            gaps: 0,
            reordered: 0,
            newest: 0,
            first_in_window: u64::MAX,
            last_in_window: 0,
            // Two significant figures (< 1 % error) keep it at ~20 KiB a client.
            delay_us: Histogram::new_with_bounds(1, MAX_DELAY_US, 2)
                .expect("valid histogram bounds"),
            max_delay_us: 0,
            by_second: vec![(0, 0); seconds],
            past_end: false,
            negative: 0,
            unparsed: 0,
            ended: None,
        }
    }

    fn count(&mut self, payload: &[u8], received_at: f64, shared: &Shared) {
        if !payload.starts_with(br#"{"type":"event""#) {
            return;
        }
        let seq = number_field(payload, br#""seq":"#).and_then(|s| s.parse::<u64>().ok());
        let processed_at =
            number_field(payload, br#""processedAt":"#).and_then(|s| s.parse::<f64>().ok());
        let (Some(seq), Some(processed_at)) = (seq, processed_at) else {
            self.unparsed += 1;
            return;
        };
        let previous = self.newest;
        self.newest = self.newest.max(seq);
        let (start, end) = shared.window();
        if processed_at < start {
            return;
        }
        if processed_at >= end {
            if !self.past_end {
                self.past_end = true;
                shared.caught_up.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if previous != 0 {
            if seq > previous + 1 {
                self.gaps += seq - previous - 1;
            } else if seq <= previous {
                self.reordered += 1;
            }
        }
        self.first_in_window = self.first_in_window.min(seq);
        self.last_in_window = self.last_in_window.max(seq);
        self.received += 1;
        let delay = received_at - processed_at;
        if delay < 0.0 {
            self.negative += 1;
        }
        let delay_us = (delay.max(0.0) * 1000.0) as u64;
        self.max_delay_us = self.max_delay_us.max(delay_us);
        self.delay_us
            .saturating_record(delay_us.clamp(1, MAX_DELAY_US));
        let second = ((processed_at - start) / 1000.0) as usize;
        if let Some((sum, n)) = self.by_second.get_mut(second) {
            *sum += delay_us;
            *n += 1;
        }
    }
}

/// The text of a numeric JSON field: what follows `key` up to `,` or `}`.
fn number_field<'a>(payload: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &payload[at..];
    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Connects one client; answers the stream and any bytes read past the
/// handshake.
fn connect(addr: SocketAddr) -> Result<(TcpStream, Vec<u8>), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // A fixed key: only the status line of the answer is checked.
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: ZmFub3V0LWJlbmNoLWtleQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .map_err(|e| format!("handshake: {e}"))?;
    let mut answer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("handshake: {e}"))?;
        if n == 0 {
            return Err("handshake: connection closed".into());
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if answer.len() > 16 * 1024 {
            return Err("handshake: answer too long".into());
        }
    };
    let head = String::from_utf8_lossy(&answer[..head_end]);
    if !head.starts_with("HTTP/1.1 101") {
        let status_line = head.lines().next().unwrap_or("");
        let hint = if status_line.contains(" 503 ") {
            " (the daemon's client cap: is its open-file limit high enough?)"
        } else {
            ""
        };
        return Err(format!("handshake refused: {status_line}{hint}"));
    }
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((stream, answer[head_end..].to_vec()))
}

/// Reads frames until the connection ends. Server frames are never masked.
fn read_events(mut stream: TcpStream, leftover: Vec<u8>, shared: &Shared) -> Tally {
    let mut tally = Tally::new(shared.seconds);
    let mut buffer = leftover;
    let mut filled = buffer.len();
    buffer.resize(filled.max(READ_BUFFER), 0);
    let mut received_at = now_ms();
    loop {
        let mut at = 0;
        while let Some((opcode, start, end)) = frame(&buffer[at..filled]) {
            match opcode {
                0x1 => tally.count(&buffer[at + start..at + end], received_at, shared),
                0x8 => {
                    if !shared.stopping.load(Ordering::Relaxed) {
                        tally.ended = Some("the daemon sent Close".into());
                    }
                    return tally;
                }
                _ => {} // Ping, Pong, continuation: nothing to measure.
            }
            at += end;
        }
        buffer.copy_within(at..filled, 0);
        filled -= at;
        if filled == buffer.len() {
            // A frame larger than the buffer (events are ~250 bytes).
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = stream.read(&mut buffer[filled..]);
        let stopping = shared.stopping.load(Ordering::Relaxed);
        match read {
            Ok(0) => {
                if !stopping {
                    tally.ended = Some("the daemon closed the connection".into());
                }
                return tally;
            }
            Ok(n) => {
                filled += n;
                received_at = now_ms();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if !stopping {
                    tally.ended = Some(e.to_string());
                }
                return tally;
            }
        }
    }
}

/// The opcode and payload range of the first complete frame in `bytes`.
fn frame(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let (length, mut header): (u64, usize) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if second & 0x80 != 0 {
        header += 4; // a mask key (a server should not send one)
    }
    let end = header.checked_add(usize::try_from(length).ok()?)?;
    (bytes.len() >= end).then_some((first & 0x0f, header, end))
}

// ---------------------------------------------------------------- the run

fn run(options: &Options) -> Result<(), String> {
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    if fd_limit < options.clients as u64 + 64 {
        return Err(format!(
            "the open-file limit is {fd_limit}: too low for {} clients (raise ulimit -n)",
            options.clients
        ));
    }
    let load_before = load_average();
    // How busy the machine is before anything starts: other work skews the run.
    let idle_from = machine_ticks();
    thread::sleep(Duration::from_secs(1));
    let idle_to = machine_ticks();
    let busy_before = idle_to.0.saturating_sub(idle_from.0) as f64
        / idle_to.1.saturating_sub(idle_from.1).max(1) as f64
        * 100.0;
    let binary = server_binary(options);
    if options.build {
        build_server()?;
    }
    if !binary.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release` first (or pass --server PATH)",
            binary.display()
        ));
    }
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--rate",
        &options.rate.to_string(),
        "--work-ms",
        "1",
        "--deadline-ms",
        "1000",
        "--max-clients",
        &(options.clients + 16).to_string(),
        "--log-interval",
        "3600",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(options.server_args.iter().cloned());
    let mut daemon = start_daemon(&binary, &args)?;
    let pid = daemon.pid();
    let ticks_per_s = clock_ticks();

    // Connect one by one from this thread, so no burst overflows the listen
    // backlog; each client then reads on its own thread.
    let shared = Arc::new(Shared {
        start: AtomicU64::new(f64::INFINITY.to_bits()),
        end: AtomicU64::new(f64::INFINITY.to_bits()),
        seconds: options.seconds.ceil() as usize,
        caught_up: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
    });
    let connecting = Instant::now();
    let mut readers = Vec::with_capacity(options.clients);
    let mut sockets = Vec::with_capacity(options.clients);
    for i in 0..options.clients {
        let (stream, leftover) = connect(daemon.addr).map_err(|e| format!("client {i}: {e}"))?;
        sockets.push(stream.try_clone().map_err(|e| e.to_string())?);
        let shared = Arc::clone(&shared);
        let reader = thread::Builder::new()
            .name(format!("client-{i}"))
            .stack_size(CLIENT_STACK)
            .spawn(move || read_events(stream, leftover, &shared))
            .map_err(|e| format!("cannot spawn client thread {i}: {e}"))?;
        readers.push(reader);
    }
    let connected_in = connecting.elapsed();

    // The window is fixed before it starts; events decided inside it count.
    let warmup = Duration::from_secs_f64(options.warmup);
    let length = Duration::from_secs_f64(options.seconds);
    let window_start = now_ms() + warmup.as_secs_f64() * 1000.0;
    let window_end = window_start + length.as_secs_f64() * 1000.0;
    shared
        .start
        .store(window_start.to_bits(), Ordering::Relaxed);
    shared.end.store(window_end.to_bits(), Ordering::Relaxed);
    thread::sleep(warmup);

    let stats_start = server_stats(daemon.addr)?;
    let cpu_path = format!("/proc/{pid}/stat");
    let status_path = format!("/proc/{pid}/status");
    let own_before = cpu_ticks("/proc/self/stat").map_or(0, |(_, t)| t);
    let threads_before = threads(pid);
    let (_, ticks_before) = cpu_ticks(&cpu_path).ok_or("cannot read the daemon's stat")?;
    let measuring = Instant::now();
    let (mut max_rss_kib, mut max_threads, mut busiest_second) = (0, 0, 0.0f64);
    let mut last = (measuring, ticks_before);
    while measuring.elapsed() < length {
        thread::sleep(
            length
                .saturating_sub(measuring.elapsed())
                .min(Duration::from_secs(1)),
        );
        let s = status(&status_path);
        max_rss_kib = max_rss_kib.max(s.rss_kib);
        max_threads = max_threads.max(s.threads);
        if let Some((_, ticks)) = cpu_ticks(&cpu_path) {
            let wall = last.0.elapsed().as_secs_f64();
            if wall >= 0.5 {
                let share = ticks.saturating_sub(last.1) as f64 / ticks_per_s / wall * 100.0;
                busiest_second = busiest_second.max(share);
            }
            last = (Instant::now(), ticks);
        }
    }
    let wall = measuring.elapsed().as_secs_f64();
    let (_, ticks_after) = cpu_ticks(&cpu_path).ok_or("cannot read the daemon's stat")?;
    let threads_after = threads(pid);
    let own_after = cpu_ticks("/proc/self/stat").map_or(0, |(_, t)| t);
    let status_after = status(&status_path);
    let stats_end = server_stats(daemon.addr)?;

    // Events decided near the end of the window may still be on their way.
    let grace = Instant::now();
    while shared.caught_up.load(Ordering::Relaxed) < options.clients && grace.elapsed() < MAX_GRACE
    {
        thread::sleep(Duration::from_millis(20));
    }
    let grace = grace.elapsed();
    let caught_up = shared.caught_up.load(Ordering::Relaxed);
    let stats_last = server_stats(daemon.addr)?;
    shared.stopping.store(true, Ordering::Relaxed);
    for socket in &sockets {
        let _ = socket.shutdown(Shutdown::Both);
    }
    let tallies: Vec<Tally> = readers
        .into_iter()
        .map(|r| r.join().map_err(|_| "a client thread panicked".to_string()))
        .collect::<Result<_, _>>()?;
    daemon.stop();

    // ---------------------------------------------------------- the summary
    let mut delay = Histogram::<u64>::new_with_bounds(1, MAX_DELAY_US, 2).expect("valid bounds");
    let mut by_second = vec![(0u64, 0u64); shared.seconds];
    let (mut received, mut gaps, mut gap_clients, mut reordered) = (0u64, 0u64, 0u64, 0u64);
    let (mut negative, mut unparsed, mut max_delay_us) = (0u64, 0u64, 0u64);
    let (mut first_seq, mut last_seq) = (u64::MAX, 0u64);
    let mut ended_early = Vec::new();
    for (i, t) in tallies.iter().enumerate() {
        delay.add(&t.delay_us).map_err(|e| e.to_string())?;
        for (total, (sum, n)) in by_second.iter_mut().zip(&t.by_second) {
            total.0 += sum;
            total.1 += n;
        }
        received += t.received;
        gaps += t.gaps;
        gap_clients += u64::from(t.gaps > 0);
        reordered += t.reordered;
        negative += t.negative;
        unparsed += t.unparsed;
        max_delay_us = max_delay_us.max(t.max_delay_us);
        if t.received > 0 {
            first_seq = first_seq.min(t.first_in_window);
            last_seq = last_seq.max(t.last_in_window);
        }
        if let Some(why) = &t.ended {
            ended_early.push(format!("client {i}: {why}"));
        }
    }
    let clients = options.clients as u64;
    let nominal = (f64::from(options.rate) * options.seconds).round() as u64 * clients;
    let sent = if received > 0 {
        (last_seq - first_seq + 1) * clients
    } else {
        0
    };
    let share = |part: u64, whole: u64| part as f64 * 100.0 / whole.max(1) as f64;
    let cpu = |ticks: u64| ticks as f64 / ticks_per_s / wall * 100.0;
    let ms = |us: u64| us as f64 / 1000.0;
    let groups = by_group(&threads_before, &threads_after);
    let voluntary: u64 = groups.iter().map(|g| g.delta.voluntary).sum();
    let involuntary: u64 = groups.iter().map(|g| g.delta.involuntary).sum();
    let generated = stat_u64(&stats_end, "/totals/generated")
        .saturating_sub(stat_u64(&stats_start, "/totals/generated"));
    // Snapshots are taken once a second: a rate over their own clock.
    let snapshot_span = stat_f64(&stats_end, "/uptimeS") - stat_f64(&stats_start, "/uptimeS");
    let dropped_total = stat_u64(&stats_last, "/clients/droppedMessages");
    let dropped = dropped_total.saturating_sub(stat_u64(&stats_start, "/clients/droppedMessages"));
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());

    println!();
    println!("punctual fan-out benchmark");
    println!("  daemon      punctual {}", args.join(" "));
    println!(
        "  host        {cpus} CPUs; {busy_before:.0} % busy in the second before the run; load average {load_before}"
    );
    println!(
        "  clients     {} WebSocket clients over loopback, connected in {:.2} s, one {} KiB-stack reader thread each",
        options.clients,
        connected_in.as_secs_f64(),
        CLIENT_STACK / 1024
    );
    println!(
        "  window      {wall:.1} s after {:.1} s warm-up; {caught_up}/{} clients caught up {:.1} s after it",
        options.warmup,
        options.clients,
        grace.as_secs_f64()
    );
    let server_cpu = cpu(ticks_after.saturating_sub(ticks_before));
    let client_cpu = cpu(own_after.saturating_sub(own_before));
    println!(
        "  server CPU  {server_cpu:.1} % of one core (busiest second {busiest_second:.1} %); \
         this process (the clients) {client_cpu:.1} %"
    );
    println!(
        "  switches    {:.0}/s voluntary, {:.0}/s involuntary (preempted) in the daemon; by thread group \
         (CPU and run-queue wait in % of one core):",
        voluntary as f64 / wall,
        involuntary as f64 / wall
    );
    // Per-thread ticks are sampled and miss threads that run in short bursts;
    // `schedstat` run time is exact where the kernel has it.
    let exact = groups.iter().any(|g| g.delta.running_ns > 0);
    let group_cpu = |d: &ThreadReading| {
        if exact {
            d.running_ns as f64 / 1e7 / wall
        } else {
            cpu(d.ticks)
        }
    };
    for g in groups
        .iter()
        .filter(|g| group_cpu(&g.delta) >= 0.05 || g.delta.voluntary + g.delta.involuntary > 0)
        .take(8)
    {
        let count = if g.threads > 1 {
            format!(" ×{}", g.threads)
        } else {
            String::new()
        };
        println!(
            "    {:<16} {:>6.1} % CPU {:>7.1} % run-queue wait {:>8.0} vol/s {:>7.0} invol/s",
            format!("{}{count}", g.name),
            group_cpu(&g.delta),
            g.delta.waiting_ns as f64 / 1e7 / wall,
            g.delta.voluntary as f64 / wall,
            g.delta.involuntary as f64 / wall
        );
    }
    println!(
        "  memory      RSS {:.1} MiB (max {:.1} MiB); {} threads",
        status_after.rss_kib as f64 / 1024.0,
        max_rss_kib.max(status_after.rss_kib) as f64 / 1024.0,
        max_threads.max(status_after.threads)
    );
    println!(
        "  generated   {generated} events in {snapshot_span:.1} s at the daemon ({:.1}/s)",
        generated as f64 / snapshot_span.max(f64::MIN_POSITIVE)
    );
    println!(
        "  delivered   {received} of {sent} sent (seq {first_seq}..={last_seq} × {clients}) = {:.3} %; nominal {nominal} (rate × s × clients) = {:.3} %",
        share(received, sent),
        share(received, nominal)
    );
    println!("  seq gaps    {gaps} missing in {gap_clients} clients; {reordered} out of order");
    println!(
        "  delay       p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (receive − processedAt)",
        ms(delay.value_at_quantile(0.50)),
        ms(delay.value_at_quantile(0.90)),
        ms(delay.value_at_quantile(0.99)),
        ms(delay.value_at_quantile(0.999)),
        ms(max_delay_us)
    );
    let means: Vec<String> = by_second
        .iter()
        .map(|&(sum, n)| {
            if n == 0 {
                "-".into()
            } else {
                format!("{:.1}", sum as f64 / n as f64 / 1000.0)
            }
        })
        .collect();
    println!("  mean/s      {} ms", means.join(" "));
    println!(
        "  dropped     clients.droppedMessages {dropped} during the run ({dropped_total} in all); {} clients connected",
        stat_u64(&stats_last, "/clients/connected")
    );
    if negative > 0 || unparsed > 0 {
        println!(
            "  note        {negative} negative delays (counted as 0), {unparsed} unparsed events"
        );
    }
    if let Some(example) = ended_early.first() {
        println!(
            "  note        {} clients ended before the run did, e.g. {example}",
            ended_early.len()
        );
    }
    Ok(())
}
