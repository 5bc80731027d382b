//! The command line: `Options` (clap) and the checks clap cannot make.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Most pull workers the tool connects.
const MAX_PULL_WORKERS: u32 = 1024;
/// Most tasks a pull worker may hold at once (the daemon's `MAX_CREDIT`).
const MAX_PULL_CREDIT: u32 = 1024;

/// Load tool for punctual: WebSocket and SSE clients, optional ingest, one fixed measured window.
#[derive(Parser, Debug)]
#[command(name = "punctual-load", version)]
pub struct Options {
    /// Address of a running daemon, or several (`A,B`, or the flag again):
    /// the clients are dealt out over them in turn, the first also takes the
    /// producer, the pull workers, the replays and the stats readings.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "spawn",
        required_unless_present = "spawn"
    )]
    pub addr: Vec<SocketAddr>,
    /// Start the daemon as a child process on a free port; flags after `--` go to it.
    #[arg(long)]
    pub spawn: bool,
    /// Daemon binary for --spawn (default: `punctual` next to this binary).
    #[arg(long, requires = "spawn")]
    pub server: Option<PathBuf>,
    /// Process id of the daemon at --addr, for its CPU, RSS and threads; or
    /// several (`P,Q`, or the flag again: the nodes of a cluster, Redis
    /// too), added up and also shown one by one.
    #[arg(long, value_delimiter = ',', conflicts_with = "spawn")]
    pub pid: Vec<u32>,
    /// WebSocket clients (`GET /ws`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub ws: u32,
    /// Server-Sent Events clients (`GET /events`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub sse: u32,
    /// Events per second to post to `POST /api/events` (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub ingest_rate: f64,
    /// Events per posted batch (a JSON array).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Classes of posted events as PRODUCER:DEADLINE_MS:WEIGHT,… (e.g.
    /// `tight:20:1,loose:500:1`): each event is of one class, drawn by weight,
    /// and names it as its producer (default: empty events, the daemon's defaults).
    #[arg(long, value_parser = parse_mix, requires = "ingest_rate")]
    pub ingest_mix: Option<Mix>,
    /// Each posted event's own work, uniform in MIN-MAX ms (e.g. `5-15`).
    #[arg(long, value_parser = parse_work_range, requires = "ingest_rate")]
    pub ingest_work: Option<(f64, f64)>,
    /// Seconds between the last connection and the window.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Longest wait after the window for events decided inside it, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub grace: f64,
    /// Serve a trivial HTTP worker (an empty 200 to every POST) and run the
    /// spawned daemon with `--work http --work-url` pointing at it.
    #[arg(long, requires = "spawn", conflicts_with = "pull_workers")]
    pub http_worker: bool,
    /// WebSocket workers to connect to `GET /api/work`, each answering `done`
    /// to every task at once; a spawned daemon gets `--work pull` unless `--work` is given.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_PULL_WORKERS)))]
    pub pull_workers: u32,
    /// Tasks each pull worker takes at once (`?credit=C`).
    #[arg(long, default_value_t = 1, requires = "pull_workers", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PULL_CREDIT)))]
    pub pull_credit: u32,
    /// WebSocket clients that replay this run from its first outcome
    /// (`/ws?epoch=E&since=0`), connecting as the window starts; not measured
    /// themselves: they load the daemon while the live clients are timed.
    #[arg(long, default_value_t = 0)]
    pub replay: u32,
    /// Seconds a replaying client waits between reads (0: reads as fast as
    /// it can; longer than the run: never reads).
    #[arg(long, default_value_t = 0.0)]
    pub replay_pause: f64,
    /// Of the `--ws` clients, how many are measured, each on its own
    /// reader thread; the others are drained: read in bulk every
    /// `--drain-ms` by one thread, their bytes only counted (default:
    /// every client is measured).
    #[arg(long)]
    pub probes: Option<u32>,
    /// How often the drained clients are read, ms.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub drain_ms: u64,
    /// The server measured: punctual, or nginx with nchan (the tool then
    /// publishes `--rate` messages a second to `--pub` and subscribes on
    /// `--sub-path`).
    #[arg(long, value_enum, default_value_t = TargetKind::Punctual)]
    pub target: TargetKind,
    /// The nchan publisher location (`--target nchan`), e.g.
    /// `http://127.0.0.1:8090/pub`.
    #[arg(long = "pub")]
    pub pub_url: Option<String>,
    /// The nchan WebSocket subscriber location (`--target nchan`).
    #[arg(long, default_value = "/sub")]
    pub sub_path: String,
    /// Messages a second the tool publishes (`--target nchan`).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Flags for the spawned daemon.
    #[arg(last = true, requires = "spawn")]
    pub daemon_args: Vec<String>,
}

/// What the tool measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Punctual,
    Nchan,
}

impl Options {
    pub fn check(&self) -> Result<(), String> {
        if self.probes.is_some_and(|p| p > self.ws) {
            return Err("--probes counts among the --ws clients: at most --ws".into());
        }
        if self.target == TargetKind::Nchan {
            self.check_nchan()?;
        }
        if self.ws + self.sse == 0 && self.ingest_rate == 0.0 && self.target == TargetKind::Punctual
        {
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

    /// nchan has no pipeline and no stats: only WebSocket clients of what
    /// the tool publishes itself.
    fn check_nchan(&self) -> Result<(), String> {
        if self.pub_url.is_none() || self.spawn {
            return Err("--target nchan needs --pub URL and --addr (it cannot be spawned)".into());
        }
        if self.sse + self.replay + self.pull_workers > 0 || self.ingest_rate > 0.0 {
            return Err(
                "--target nchan takes only --ws clients (no --sse, --replay, --pull-workers or --ingest-rate)"
                    .into(),
            );
        }
        if !(0.1..=100_000.0).contains(&self.rate) {
            return Err("--rate must be between 0.1 and 100000 messages/s".into());
        }
        Ok(())
    }

    /// The measured WebSocket clients; the rest of `--ws` are drained.
    pub fn measured_ws(&self) -> u32 {
        self.probes.unwrap_or(self.ws)
    }

    fn clients(&self) -> usize {
        (self.ws + self.sse + self.replay) as usize
    }

    /// Connections the tool opens to the daemon, besides its own few.
    pub fn connections(&self) -> usize {
        self.clients() + self.pull_workers as usize
    }

    /// Whether `flag` is among the flags after `--`.
    pub fn daemon_flag(&self, flag: &str) -> bool {
        self.daemon_args
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    }
}

/// Classes of posted events, drawn by weight.
#[derive(Clone, Debug)]
pub struct Mix(pub Vec<(String, u64, f64)>);

/// Reads `--ingest-mix`: `PRODUCER:DEADLINE_MS:WEIGHT,…`.
pub fn parse_mix(text: &str) -> Result<Mix, String> {
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

/// Reads `--ingest-work`: `MIN-MAX` in ms.
pub fn parse_work_range(text: &str) -> Result<(f64, f64), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or("give MIN-MAX in ms, e.g. 5-15")?;
    match (low.parse::<f64>(), high.parse::<f64>()) {
        (Ok(low), Ok(high)) if 0.0 <= low && low <= high && high <= 3_600_000.0 => Ok((low, high)),
        _ => Err(format!("{text:?}: MIN-MAX with 0 ≤ MIN ≤ MAX ms")),
    }
}
