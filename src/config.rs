//! Configuration: the command-line flags (each also read from a `PUNCTUAL_<NAME>`
//! environment variable) and the live knobs the pipeline reads on every event.
//!
//! Owns: [`Config`], parsed once at start, and [`Knobs`], the subset of settings
//! that the generator and the workers read atomically so they can change at
//! runtime without restarting a thread. Reads and writes no channel.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Serialize;

use crate::http::origin::{AllowedHost, AllowedOrigin};
use crate::ops::limits::Caps;

/// Whether workers refuse work that cannot finish before its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Drop an event as `infeasible` when the predicted work exceeds the time left.
    On,
    /// Start every unexpired event, however little time it has left.
    Off,
}

/// The order in which workers take queued events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// First in, first out: arrival order.
    Fifo,
    /// Earliest deadline first; a full queue refuses the latest deadline.
    Edf,
}

/// Where each admitted event's work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkMode {
    /// The worker sleeps for the event's work time (`--work-ms`, or the event's `workMs`).
    Simulate,
    /// The worker POSTs the event to `--work-url` and waits for the answer or the deadline.
    Http,
    /// The event goes to a worker connected to `GET /api/work`; the worker thread
    /// waits for its answer or the deadline.
    Pull,
}

impl WorkMode {
    /// The flag's spelling (`simulate`, `http`, `pull`).
    pub fn name(self) -> &'static str {
        match self {
            WorkMode::Simulate => "simulate",
            WorkMode::Http => "http",
            WorkMode::Pull => "pull",
        }
    }
}

/// What a node does in a deployment of several (see `cluster`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// The whole daemon on one node; no Redis.
    All,
    /// Generator, ingest, workers and hub; publishes every outcome to Redis.
    Processor,
    /// No pipeline: serves dashboards what the processor published.
    Edge,
}

impl NodeRole {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::All => "all",
            NodeRole::Processor => "processor",
            NodeRole::Edge => "edge",
        }
    }
}

/// Every setting of the daemon. `Config::default()` is what `punctual` with no
/// flags runs, except that tests usually set `listen` to port 0.
#[derive(Clone, Debug, Parser, Serialize)]
#[command(
    name = "punctual",
    version,
    allow_negative_numbers = true,
    about = "Deadline-aware live event monitor: processes each event under its own deadline, \
             drops what cannot finish in time, and streams every outcome to dashboards."
)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Address to serve HTTP and WebSocket on (port 0 picks a free port).
    #[arg(long, env = "PUNCTUAL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Events generated per second by the built-in generator (0 disables it).
    #[arg(long, env = "PUNCTUAL_RATE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=RATE_MAX as i64))]
    pub rate: u32,

    /// Deadline of each generated event, in milliseconds after its creation.
    #[arg(long, env = "PUNCTUAL_DEADLINE_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=MS_MAX))]
    pub deadline_ms: u64,

    /// Simulated work per event, in milliseconds.
    #[arg(long, env = "PUNCTUAL_WORK_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=MS_MAX))]
    pub work_ms: u64,

    /// Uniform random extra work per event: 0..=N milliseconds.
    #[arg(long, env = "PUNCTUAL_WORK_JITTER_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MS_MAX))]
    pub work_jitter_ms: u64,

    /// Drop events whose predicted work does not fit in the time left (on|off).
    #[arg(long, env = "PUNCTUAL_ADMISSION", value_enum, default_value_t = Admission::On)]
    pub admission: Admission,

    /// The order workers take queued events in: fifo (arrival) or edf (earliest
    /// deadline first; a full queue then refuses whichever event is due latest).
    #[arg(long, env = "PUNCTUAL_SCHEDULE", value_enum, default_value_t = Schedule::Fifo)]
    pub schedule: Schedule,

    /// Where the work runs: simulate (sleep for the work time), http (POST each
    /// event to --work-url), pull (hand it to a worker connected to /api/work).
    #[arg(long, env = "PUNCTUAL_WORK", value_enum, default_value_t = WorkMode::Simulate)]
    pub work: WorkMode,

    /// The URL each event is POSTed to with --work http (plain http://).
    #[arg(long, env = "PUNCTUAL_WORK_URL", value_name = "URL", value_parser = parse_work_url,
          required_if_eq("work", "http"))]
    pub work_url: Option<String>,

    /// Worker threads processing events.
    #[arg(long, env = "PUNCTUAL_WORKERS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,

    /// Capacity of the work queue; an event arriving when it is full is dropped as `queue-full`.
    #[arg(long, env = "PUNCTUAL_QUEUE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue: u32,

    /// Most dashboard clients (WebSocket and SSE) at once; an upgrade beyond it gets 503.
    /// Default: 10000, or --max-connections if lower.
    #[arg(long, env = "PUNCTUAL_MAX_CLIENTS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_clients: Option<u32>,

    /// Threads that write outcomes to caught-up dashboards, each to its own
    /// share of the clients. Default: one per core; 1 writes from the
    /// fan-out thread itself.
    #[arg(long, env = "PUNCTUAL_DELIVERY_THREADS",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub delivery_threads: Option<u32>,

    /// Most open connections at once, clients included; more are answered 503 with
    /// Retry-After. Default: what the open-file limit allows after a reserve of an
    /// eighth of it (32 to 256), at most 11024.
    #[arg(long, env = "PUNCTUAL_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,

    /// Seconds a request may take to arrive whole (head and body), from its first byte;
    /// a slower one is answered 408 and its connection closed.
    #[arg(long, env = "PUNCTUAL_REQUEST_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub request_timeout: u64,

    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "PUNCTUAL_IDLE_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub idle_timeout: u64,

    /// Outcomes kept for replay to reconnecting clients and `GET /api/events`.
    #[arg(long, env = "PUNCTUAL_HISTORY", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub history: u32,

    /// Most bytes of outcomes kept for replay: big payloads shorten the history
    /// rather than grow the daemon past its memory limit.
    #[arg(long, env = "PUNCTUAL_HISTORY_BYTES", default_value_t = 128 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024 * 1024..=64 * 1024 * 1024 * 1024))]
    pub history_bytes: u64,

    /// Largest request body accepted by `POST /api/events` and webhooks, in bytes;
    /// also the largest outcome any client receives.
    #[arg(long, env = "PUNCTUAL_MAX_BODY", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=256 * 1024 * 1024))]
    pub max_body: u64,

    /// Serve the page from this directory instead of the copy built into the binary.
    #[arg(long, env = "PUNCTUAL_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Seconds between summary lines in the log.
    #[arg(long, env = "PUNCTUAL_LOG_INTERVAL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub log_interval: u64,

    /// Seconds a whole HTTP response may take to be written, and a streaming client's
    /// socket may stay unwritable before it is disconnected.
    #[arg(long, env = "PUNCTUAL_WRITE_TIMEOUT", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub write_timeout: u64,

    /// Bearer token required by every mutating endpoint (unset: no authentication;
    /// one under 16 bytes is refused).
    #[arg(long, env = "PUNCTUAL_TOKEN", hide_env_values = true, value_parser = parse_token)]
    #[serde(skip)]
    pub token: Option<String>,

    /// Another site whose pages may use the streams and the API, as scheme://host or scheme://host:port
    /// (or * for any); repeatable, comma-separated in the environment.
    #[arg(long = "allowed-origin", env = "PUNCTUAL_ALLOWED_ORIGIN", value_name = "ORIGIN",
          value_delimiter = ',', value_parser = AllowedOrigin::parse)]
    pub allowed_origins: Vec<AllowedOrigin>,

    /// Another name (host or host:port) under which mutating requests may reach the daemon,
    /// e.g. a reverse proxy's; repeatable, comma-separated in the environment.
    #[arg(long = "allowed-host", env = "PUNCTUAL_ALLOWED_HOST", value_name = "HOST",
          value_delimiter = ',', value_parser = AllowedHost::parse)]
    pub allowed_hosts: Vec<AllowedHost>,

    /// Seconds unacknowledged data may wait before the kernel drops a connection (TCP_USER_TIMEOUT).
    #[arg(long, env = "PUNCTUAL_TCP_USER_TIMEOUT", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub tcp_user_timeout: u64,

    /// Send each message to dashboards at once (TCP_NODELAY) instead of
    /// letting the kernel merge the small messages written while an earlier
    /// one is unacknowledged, as nginx leaves WebSocket subscribers. Merging
    /// halves the segments and ACKs per message; a client that reads late
    /// may wait up to its delayed ACK (~40 ms) for a message.
    #[arg(long, env = "PUNCTUAL_CLIENT_NODELAY")]
    pub client_nodelay: bool,

    /// What this node does: `all` (one node, no Redis), `processor` (the
    /// pipeline, publishing to Redis) or `edge` (dashboards fed from Redis).
    #[arg(long, env = "PUNCTUAL_ROLE", value_enum, default_value_t = NodeRole::All)]
    pub role: NodeRole,

    /// The Redis server a processor publishes to and edges read from
    /// (`redis://HOST:PORT/DB`); needed by `--role processor` and `edge`.
    #[arg(long, env = "PUNCTUAL_REDIS", value_name = "URL", value_parser = parse_redis_url)]
    #[serde(skip)] // may carry a password
    pub redis: Option<String>,

    /// Prefix of the Redis keys (`<prefix>:outcomes`, `<prefix>:stats`): one
    /// per deployment sharing a Redis.
    #[arg(long, env = "PUNCTUAL_STREAM_PREFIX", default_value = "punctual",
          value_parser = parse_stream_prefix)]
    pub stream_prefix: String,

    /// Time to live of the processor lease, ms: a standby processor takes
    /// over within this of the active one's death (see "Several nodes").
    #[arg(long, env = "PUNCTUAL_LEASE_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(400..=60_000))]
    pub lease_ms: u64,

    /// Makes the named stage panic once, so tests can reach the fault paths
    /// of a real daemon. Not for operators: hidden from `--help`.
    #[doc(hidden)]
    #[arg(long, value_enum, hide = true)]
    #[serde(skip)]
    pub test_panic: Option<crate::ops::faults::Role>,
}

/// A worker URL must be plain `http://` with a host: the daemon carries no
/// TLS stack (put a local proxy in front of an `https` worker).
fn parse_work_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    let Some(rest) = value.strip_prefix("http://") else {
        return Err(format!(
            "{value:?} is not an http:// URL (https is not supported: put a local proxy in front of the worker)"
        ));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || value.parse::<ureq::http::Uri>().is_err() {
        return Err(format!("{value:?} is not a URL with a host"));
    }
    Ok(value.to_owned())
}

/// A Redis URL the `redis` crate can open: `redis://` (or `rediss://`,
/// `redis+unix://`, `unix://`), checked at start rather than at the first
/// connection.
fn parse_redis_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    redis::Client::open(value)
        .map(|_| value.to_owned())
        .map_err(|e| format!("{value:?} is not a Redis URL such as redis://127.0.0.1:6379/0: {e}"))
}

/// A key prefix: 1 to 64 letters, digits, `-`, `_`, `.` or `:`, so a key
/// name never needs quoting in `redis-cli` or a log line.
fn parse_stream_prefix(value: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a key prefix: use 1 to 64 letters, digits, '-', '_', '.' or ':'"
        ))
    }
}

/// Fewest bytes a token may have: a short one is guessed by trying.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The token must be a secret: an empty or short one would leave every
/// mutating endpoint open (or guessable) while the operator believes it is
/// protected. Surrounding whitespace is dropped (an `Authorization` header
/// cannot carry it).
fn parse_token(value: &str) -> Result<String, String> {
    match value.trim() {
        "" => Err(
            "an empty token would leave every mutating endpoint open; set \
                   PUNCTUAL_TOKEN / --token to a secret, or remove it to run without a token"
                .into(),
        ),
        token if token.len() < MIN_TOKEN_BYTES => Err(format!(
            "a token of {} bytes is too easily guessed: use at least {MIN_TOKEN_BYTES}, \
             such as the output of `openssl rand -hex 16`",
            token.len()
        )),
        token => Ok(token.to_owned()),
    }
}

/// An environment line `PUNCTUAL_X=` with nothing after `=` (as an env file
/// invites) counts as unset, so the flag's default applies — except the
/// token's, which goes on to be refused by [`parse_token`].
fn blank_env_is_unset(arg: clap::Arg) -> clap::Arg {
    let blank = arg
        .get_env()
        .and_then(std::env::var_os)
        .is_some_and(|value| value.to_string_lossy().trim().is_empty());
    if blank && arg.get_id() != "token" {
        arg.env(None::<&str>)
    } else {
        arg
    }
}

impl Default for Config {
    fn default() -> Self {
        // The defaults live in one place: the flag declarations above.
        Config::parse_from(["punctual"])
    }
}

impl Config {
    /// The delivery threads to run: `--delivery-threads`, else one per core.
    pub(crate) fn delivery_threads(&self) -> usize {
        self.delivery_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n as usize,
        )
    }

    /// Reads this process's flags and `PUNCTUAL_*` variables (a blank variable
    /// counts as unset); on nonsense it prints what is wrong, naming the flag,
    /// and exits with status 2.
    pub fn from_env_and_args() -> Config {
        Config::try_from_env_and_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Config::from_env_and_args`] with the given arguments, returning the error.
    pub fn try_from_env_and_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = Config::command().mut_args(blank_env_is_unset);
        let mut matches = command.try_get_matches_from_mut(args)?;
        Config::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
    }

    /// The settings in force, with the live knobs' current values: reported in
    /// stats, at `GET /api/config`, and in the start line.
    pub fn effective(&self, knobs: &Knobs, caps: Caps) -> Settings {
        Settings {
            admission: if knobs.admission() {
                Admission::On
            } else {
                Admission::Off
            },
            allowed_hosts: self.allowed_hosts.clone(),
            allowed_origins: self.allowed_origins.clone(),
            auth: self.token.is_some(),
            deadline_ms: knobs.deadline_ms.load(Ordering::Relaxed),
            history: self.history,
            history_bytes: self.history_bytes,
            idle_timeout: self.idle_timeout,
            listen: self.listen,
            log_interval: self.log_interval,
            max_body: self.max_body,
            max_clients: caps.clients,
            max_connections: caps.connections,
            queue: self.queue,
            rate: knobs.rate(),
            request_timeout: self.request_timeout,
            schedule: knobs.schedule(),
            work: self.work,
            work_jitter_ms: knobs.work_jitter_ms.load(Ordering::Relaxed),
            work_ms: knobs.work_ms.load(Ordering::Relaxed),
            work_url: self.work_url.clone(),
            workers: self.workers,
            write_timeout: self.write_timeout,
        }
    }

    /// The default configuration, listening on a free loopback port: what tests start.
    pub fn for_tests() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        }
    }
}

/// The settings in force ([`Config::effective`]): every snapshot's `config`,
/// the answer of `GET /api/config` and the start line. The token itself is
/// never in it, only whether one is required.
///
/// The fields are in alphabetical order of their wire names, the order the
/// untyped map this replaced wrote them in, so the JSON is byte for byte what
/// it was.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Admission control now (`--admission`, live).
    pub admission: Admission,
    /// `--allowed-host`s.
    pub allowed_hosts: Vec<AllowedHost>,
    /// `--allowed-origin`s.
    pub allowed_origins: Vec<AllowedOrigin>,
    /// Whether changes need a token (`--token` set).
    pub auth: bool,
    /// The deadline of generated events and the default of posted ones, ms (live).
    pub deadline_ms: u64,
    /// `--history`: messages the log keeps for replay.
    pub history: u32,
    /// `--history-bytes`: most bytes the log keeps.
    pub history_bytes: u64,
    /// `--idle-timeout`, seconds.
    pub idle_timeout: u64,
    /// `--listen`: the address served on.
    pub listen: SocketAddr,
    /// `--log-interval`, seconds.
    pub log_interval: u64,
    /// `--max-body`, bytes.
    pub max_body: u64,
    /// Effective most clients at once.
    pub max_clients: usize,
    /// Effective most open connections at once.
    pub max_connections: usize,
    /// `--queue`: the work queue's capacity.
    pub queue: u32,
    /// Generated events per second (live).
    pub rate: u64,
    /// `--request-timeout`, seconds.
    pub request_timeout: u64,
    /// The queue's order now (live).
    pub schedule: Schedule,
    /// `--work`: where the work runs.
    pub work: WorkMode,
    /// Simulated work's jitter, ms (live).
    pub work_jitter_ms: u64,
    /// Simulated work, ms (live).
    pub work_ms: u64,
    /// `--work-url` (`--work http`), else none.
    pub work_url: Option<String>,
    /// `--workers`: worker threads.
    pub workers: u32,
    /// `--write-timeout`, seconds.
    pub write_timeout: u64,
}

impl Settings {
    /// The settings as compact JSON.
    pub fn to_json(&self) -> String {
        // Only numbers, strings, booleans and text-serialised addresses:
        // serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The live part, as a change that sets each live setting to these
    /// values: what a standby processor carries on with.
    pub fn live(&self) -> KnobsUpdate {
        KnobsUpdate {
            rate: Some(self.rate),
            deadline_ms: Some(self.deadline_ms),
            work_ms: Some(self.work_ms),
            work_jitter_ms: Some(self.work_jitter_ms),
            admission: Some(self.admission),
            schedule: Some(self.schedule),
        }
    }
}

/// Settings the pipeline reads per event. Atomics, so a reader never waits and
/// a change applies from the next event or tick on.
#[derive(Debug)]
pub struct Knobs {
    rate: AtomicU64,
    deadline_ms: AtomicU64,
    work_ms: AtomicU64,
    work_jitter_ms: AtomicU64,
    admission: AtomicBool,
    edf: AtomicBool,
}

impl Knobs {
    /// Knobs holding the values of `config`.
    pub fn new(config: &Config) -> Self {
        Knobs {
            rate: AtomicU64::new(u64::from(config.rate)),
            deadline_ms: AtomicU64::new(config.deadline_ms),
            work_ms: AtomicU64::new(config.work_ms),
            work_jitter_ms: AtomicU64::new(config.work_jitter_ms),
            admission: AtomicBool::new(config.admission == Admission::On),
            edf: AtomicBool::new(config.schedule == Schedule::Edf),
        }
    }

    /// Events per second the generator aims at (0: generator idle).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Deadline given to each generated event.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.load(Ordering::Relaxed))
    }

    /// Configured work per event, without jitter.
    pub fn work(&self) -> Duration {
        Duration::from_millis(self.work_ms.load(Ordering::Relaxed))
    }

    /// Upper bound of the uniform extra work.
    pub fn work_jitter(&self) -> Duration {
        Duration::from_millis(self.work_jitter_ms.load(Ordering::Relaxed))
    }

    /// Whether admission control is on.
    pub fn admission(&self) -> bool {
        self.admission.load(Ordering::Relaxed)
    }

    /// The order workers take queued events in now.
    pub fn schedule(&self) -> Schedule {
        if self.edf.load(Ordering::Relaxed) {
            Schedule::Edf
        } else {
            Schedule::Fifo
        }
    }
}

/// A change of live settings, as sent to `PUT /api/config`. Absent fields stay
/// as they are; unknown fields are refused so a typo is loud.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnobsUpdate {
    /// New generator rate, events/s (0 stops the generator).
    pub rate: Option<u64>,
    /// New deadline of generated events, ms.
    pub deadline_ms: Option<u64>,
    /// New configured work, ms.
    pub work_ms: Option<u64>,
    /// New jitter bound, ms.
    pub work_jitter_ms: Option<u64>,
    /// Admission control on or off.
    pub admission: Option<Admission>,
    /// The queue's order: fifo or edf.
    pub schedule: Option<Schedule>,
}

/// The accepted ranges of the live settings, shared by flags and updates.
const RATE_MAX: u64 = 1_000_000;
const MS_MAX: u64 = 3_600_000;

impl KnobsUpdate {
    /// Checks every field against its range; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, value: Option<u64>, min: u64, max: u64| match value {
            Some(v) if v < min || v > max => {
                Err(format!("{name} must be between {min} and {max}, got {v}"))
            }
            _ => Ok(()),
        };
        check("rate", self.rate, 0, RATE_MAX)?;
        check("deadlineMs", self.deadline_ms, 1, MS_MAX)?;
        check("workMs", self.work_ms, 0, MS_MAX)?;
        check("workJitterMs", self.work_jitter_ms, 0, MS_MAX)
    }
}

impl Knobs {
    /// Applies a validated update and describes what changed (for the log).
    pub fn apply(&self, update: &KnobsUpdate) -> Result<Vec<String>, String> {
        update.validate()?;
        let mut changes = Vec::new();
        let mut set = |name: &str, cell: &AtomicU64, value: Option<u64>| {
            if let Some(new) = value {
                let old = cell.swap(new, Ordering::Relaxed);
                if old != new {
                    changes.push(format!("{name} {old} → {new}"));
                }
            }
        };
        set("rate", &self.rate, update.rate);
        set("deadlineMs", &self.deadline_ms, update.deadline_ms);
        set("workMs", &self.work_ms, update.work_ms);
        set("workJitterMs", &self.work_jitter_ms, update.work_jitter_ms);
        if let Some(admission) = update.admission {
            let on = admission == Admission::On;
            if self.admission.swap(on, Ordering::Relaxed) != on {
                changes.push(format!("admission → {}", if on { "on" } else { "off" }));
            }
        }
        if let Some(schedule) = update.schedule {
            let edf = schedule == Schedule::Edf;
            if self.edf.swap(edf, Ordering::Relaxed) != edf {
                changes.push(format!("schedule → {}", if edf { "edf" } else { "fifo" }));
            }
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_settings_are_the_json_they_always_were() {
        let config = Config {
            token: Some("0123456789abcdef0123".into()),
            work: WorkMode::Http,
            work_url: Some("http://127.0.0.1:9/x".into()),
            allowed_origins: vec![AllowedOrigin::Any],
            allowed_hosts: vec![AllowedHost::parse("foo.example").expect("a host")],
            ..Config::for_tests()
        };
        let knobs = Knobs::new(&config);
        let caps = Caps {
            connections: 11024,
            clients: 10000,
        };
        // Byte for byte what the untyped map gave before it was a struct
        // (keys in alphabetical order), so no reader of it sees a change.
        assert_eq!(
            config.effective(&knobs, caps).to_json(),
            r#"{"admission":"on","allowedHosts":["foo.example"],"allowedOrigins":["*"],"auth":true,"#.to_owned()
                + r#""deadlineMs":100,"history":10000,"historyBytes":134217728,"idleTimeout":30,"#
                + r#""listen":"127.0.0.1:0","logInterval":10,"maxBody":1048576,"maxClients":10000,"#
                + r#""maxConnections":11024,"queue":64,"rate":20,"requestTimeout":10,"schedule":"fifo","#
                + r#""work":"http","workJitterMs":0,"workMs":50,"workUrl":"http://127.0.0.1:9/x","#
                + r#""workers":4,"writeTimeout":5}"#
        );
        let local = Config::for_tests();
        let json = local.effective(&Knobs::new(&local), caps).to_json();
        assert!(json.contains(r#""auth":false"#), "{json}");
        assert!(json.contains(r#""workUrl":null"#), "{json}");
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (c.rate, c.deadline_ms, c.work_ms, c.work_jitter_ms),
            (20, 100, 50, 0)
        );
        assert_eq!((c.workers, c.queue, c.max_clients), (4, 64, None));
        assert_eq!(c.admission, Admission::On);
    }

    #[test]
    fn an_update_out_of_range_is_refused_and_changes_nothing() {
        let knobs = Knobs::new(&Config::default());
        let update = KnobsUpdate {
            rate: Some(50),
            deadline_ms: Some(0),
            ..KnobsUpdate::default()
        };
        let err = knobs.apply(&update).expect_err("deadline 0 is nonsense");
        assert!(err.contains("deadlineMs"), "{err}");
        assert_eq!(knobs.rate(), 20);
    }

    #[test]
    fn an_update_reports_what_it_changed() {
        let knobs = Knobs::new(&Config::default());
        let update = KnobsUpdate {
            work_ms: Some(150),
            admission: Some(Admission::Off),
            ..KnobsUpdate::default()
        };
        let changes = knobs.apply(&update).expect("valid");
        assert_eq!(changes, ["workMs 50 → 150", "admission → off"]);
        assert_eq!(knobs.work(), Duration::from_millis(150));
        assert!(!knobs.admission());
    }

    #[test]
    fn an_empty_token_or_static_dir_flag_is_refused_with_the_flag_named() {
        for args in [
            ["punctual", "--token", ""],
            ["punctual", "--token", "  "],
            ["punctual", "--static-dir", ""],
            ["punctual", "--allowed-origin", ""],
            ["punctual", "--allowed-host", ""],
        ] {
            let err = Config::try_from_env_and_args(args).expect_err("must be refused");
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(args[1]), "{err}");
        }
    }

    #[test]
    fn the_token_loses_surrounding_whitespace_and_origins_repeat() {
        let args = [
            "punctual",
            "--token",
            " s3cret-s3cret-s3cret\n",
            "--allowed-origin",
            "http://localhost:5173,https://a.example",
            "--allowed-origin",
            "*",
        ];
        let config = Config::try_from_env_and_args(args).expect("valid");
        assert_eq!(config.token.as_deref(), Some("s3cret-s3cret-s3cret"));
        let origins: Vec<String> = config
            .allowed_origins
            .iter()
            .map(|o| o.to_string())
            .collect();
        assert_eq!(origins, ["http://localhost:5173", "https://a.example", "*"]);
    }

    #[test]
    fn http_work_needs_a_plain_http_url() {
        let err =
            Config::try_from_env_and_args(["punctual", "--work", "http"]).expect_err("no URL");
        assert!(err.to_string().contains("--work-url"), "{err}");
        for url in [
            "https://a.example/work",
            "ftp://x",
            "http://",
            "http:///path",
            "http://a b/",
        ] {
            let err =
                Config::try_from_env_and_args(["punctual", "--work-url", url]).expect_err(url);
            assert!(err.to_string().contains("--work-url"), "{err}");
        }
        let config = Config::try_from_env_and_args([
            "punctual",
            "--work",
            "http",
            "--work-url",
            "http://127.0.0.1:9000/work?x=1",
        ])
        .expect("valid");
        assert_eq!(config.work, WorkMode::Http);
        assert_eq!(
            config.work_url.as_deref(),
            Some("http://127.0.0.1:9000/work?x=1")
        );
    }

    #[test]
    fn nonsense_values_are_refused_with_the_flag_named() {
        for args in [
            ["punctual", "--workers", "0"],
            ["punctual", "--queue", "0"],
            ["punctual", "--rate", "-5"],
            ["punctual", "--deadline-ms", "soon"],
        ] {
            let err = Config::try_parse_from(args).expect_err("must be refused");
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(args[1]), "{err}");
        }
    }
}
