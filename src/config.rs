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

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Whether workers refuse work that cannot finish before its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Drop an event as `infeasible` when the predicted work exceeds the time left.
    On,
    /// Start every unexpired event, however little time it has left.
    Off,
}

/// Every setting of the daemon. `Config::default()` is what `punctual` with no
/// flags runs, except that tests usually set `listen` to port 0.
#[derive(Clone, Debug, Parser, Serialize)]
#[command(
    name = "punctual",
    version,
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
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate: u32,

    /// Deadline of each generated event, in milliseconds after its creation.
    #[arg(long, env = "PUNCTUAL_DEADLINE_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub deadline_ms: u64,

    /// Simulated work per event, in milliseconds.
    #[arg(long, env = "PUNCTUAL_WORK_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub work_ms: u64,

    /// Uniform random extra work per event: 0..=N milliseconds.
    #[arg(long, env = "PUNCTUAL_WORK_JITTER_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub work_jitter_ms: u64,

    /// Drop events whose predicted work does not fit in the time left (on|off).
    #[arg(long, env = "PUNCTUAL_ADMISSION", value_enum, default_value_t = Admission::On)]
    pub admission: Admission,

    /// Worker threads processing events.
    #[arg(long, env = "PUNCTUAL_WORKERS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,

    /// Capacity of the work queue; an event arriving when it is full is dropped as `queue-full`.
    #[arg(long, env = "PUNCTUAL_QUEUE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue: u32,

    /// Messages buffered per dashboard client; when full, that client misses messages (counted).
    #[arg(long, env = "PUNCTUAL_CLIENT_QUEUE", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub client_queue: u32,

    /// Most dashboard clients at once; an upgrade beyond it gets 503. Lowered at start
    /// (with a warning) to what the file-descriptor limit allows.
    #[arg(long, env = "PUNCTUAL_MAX_CLIENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_clients: u32,

    /// Serve the page from this directory instead of the copy built into the binary.
    #[arg(long, env = "PUNCTUAL_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Seconds between summary lines in the log.
    #[arg(long, env = "PUNCTUAL_LOG_INTERVAL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub log_interval: u64,

    /// Seconds a client's socket may stay unwritable before it is disconnected.
    #[arg(long, env = "PUNCTUAL_WRITE_TIMEOUT", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub write_timeout: u64,

    /// Seconds unacknowledged data may wait before the kernel drops a connection (TCP_USER_TIMEOUT).
    #[arg(long, env = "PUNCTUAL_TCP_USER_TIMEOUT", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub tcp_user_timeout: u64,
}

impl Default for Config {
    fn default() -> Self {
        // The defaults live in one place: the flag declarations above.
        Config::parse_from(["punctual"])
    }
}

impl Config {
    /// The default configuration, listening on a free loopback port: what tests start.
    pub fn for_tests() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!((c.rate, c.deadline_ms, c.work_ms, c.work_jitter_ms), (20, 100, 50, 0));
        assert_eq!((c.workers, c.queue, c.client_queue, c.max_clients), (4, 64, 256, 10_000));
        assert_eq!(c.admission, Admission::On);
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
