//! Several nodes over Redis Streams: one processor runs the pipeline and
//! publishes every outcome; edges, with no pipeline, serve dashboards from
//! what it published.
//!
//! Owns: the Redis keys of a deployment ([`Keys`]), the link to Redis with its
//! backoff ([`Redis`]), the link's counts ([`Link`], `cluster` in the stats),
//! and two threads:
//! - `publish` (processor): reads the processor's shared log, waiting on it,
//!   and appends its outcomes to `<prefix>:outcomes` and its stats to
//!   `<prefix>:stats`, pipelined, one round trip per batch.
//! - `feed` (edge): blocks on `XREAD` and writes what it reads to the edge's
//!   broadcast channel, which the fan-out appends to the edge's own log as it
//!   appends the hub's output on a single node; the latest stats go to the
//!   edge's `LatestStats`.
//!
//! A stream entry's id is `<run>-<seq>`: `run` is fixed when a processor
//! starts (its clock in ms, past any run already in the stream) and `seq` is
//! the outcome's. So ids increase across restarts, an edge resumes after the
//! last id it appended, and a skipped seq is a gap it can name.
//!
//! Must not know: deadlines, verdicts, clients, sockets.

pub(crate) mod feed;
pub(crate) mod ingest;
pub(crate) mod lease;
pub(crate) mod publish;
mod reply;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::NodeRole;
use crate::ops::logging::RateLimit;
use crate::pipeline::stats::ClusterState;

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take before the link counts as broken; above
/// the feed's `XREAD BLOCK`.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failure; doubled after each, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Least time between two warnings of one link.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The keys of one deployment (`--stream-prefix`).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    /// Every outcome, as `<run>-<seq>` entries with `epoch`, `status`, `json`.
    pub outcomes: String,
    /// The processor's stats snapshots, once a second (`epoch`, `json`, `latency`).
    pub stats: String,
    /// Batches of events posted at edges, waiting for a processor (`events`, `count`).
    pub ingest: String,
    /// Events edges put in `ingest`, and events processors took out of it.
    pub accepted: String,
    pub entered: String,
    /// Settings changes made at edges (`change`, `reply`, `until`), and the
    /// prefix of the list each answer is pushed to.
    pub config: String,
    pub config_replies: String,
    /// The processor lease: the id (epoch) of the active processor, and
    /// how many times a processor took it.
    pub leader: String,
    pub leader_term: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            outcomes: format!("{prefix}:outcomes"),
            stats: format!("{prefix}:stats"),
            ingest: format!("{prefix}:ingest"),
            accepted: format!("{prefix}:ingest:accepted"),
            entered: format!("{prefix}:ingest:entered"),
            config: format!("{prefix}:config"),
            config_replies: format!("{prefix}:config:reply"),
            leader: format!("{prefix}:leader"),
            leader_term: format!("{prefix}:leader:term"),
        }
    }
}

/// The link's counts and state, written by the cluster thread, read for stats
/// and `/readyz`.
#[derive(Debug, Default)]
pub(crate) struct Link {
    connected: AtomicBool,
    /// Outcomes appended to the stream (processor) or read from it (edge).
    pub outcomes: AtomicU64,
    /// Processor: outcomes the log forgot before they could be published
    /// (Redis was unreachable for longer than the log holds). Edge: outcomes
    /// missing from the stream when it read on (trimmed while it was away).
    pub missed: AtomicU64,
    /// Times the link was lost.
    pub disconnects: AtomicU64,
    /// Stream entries this version could not read, skipped.
    pub unreadable: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Link {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
    }

    fn set_broken(&self, error: String) {
        if self.connected.swap(false, Ordering::Relaxed) {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.set_error(error);
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `cluster` section of a snapshot.
    pub fn state(&self, role: NodeRole) -> ClusterState {
        ClusterState {
            role,
            redis: if self.is_connected() {
                "connected".into()
            } else {
                "unreachable".into()
            },
            outcomes: self.outcomes.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            unreadable: self.unreadable.load(Ordering::Relaxed),
            last_error: self.last_error(),
            ingest: None,
            lease: None,
            processor: None,
        }
    }
}

/// A connection to Redis that reconnects with backoff and records its state
/// in a [`Link`].
pub(crate) struct Redis {
    client: redis::Client,
    connection: Option<redis::Connection>,
    backoff: Duration,
    link: std::sync::Arc<Link>,
    /// What this link says in the journal, at most once per period.
    warnings: RateLimit,
    /// Command timeout of new connections (shortened while shutting down).
    timeout: Duration,
}

impl Redis {
    /// A link to `url` (checked when the flags were read); no connection yet.
    pub fn new(url: &str, link: std::sync::Arc<Link>) -> redis::RedisResult<Self> {
        Ok(Redis {
            client: redis::Client::open(url)?,
            connection: None,
            backoff: FIRST_BACKOFF,
            link,
            warnings: RateLimit::new(WARN_EVERY),
            timeout: COMMAND_TIMEOUT,
        })
    }

    /// The connection, made now if there is none. On failure the error is
    /// returned; the caller reports it ([`Redis::failed`]), waits
    /// [`Redis::pause`] and tries again.
    pub fn connected(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.connection.is_none() {
            let connection = connect(&self.client, self.timeout)?;
            if !self.link.is_connected() {
                log::info!("connected to Redis");
            }
            self.link.set_connected();
            self.connection = Some(connection);
        }
        self.connection.as_mut().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "Redis unreachable").into()
        })
    }

    /// Whether the last attempt found Redis reachable.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// A round of commands succeeded: the next failure backs off from the start.
    pub fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// Reports `error` from `what`. A broken link (I/O, a timeout, a reply
    /// that cannot be parsed) drops the connection and the link counts as
    /// down; an error Redis answered (a command refused, a key of another
    /// type) leaves both, as the next attempt needs no new connection. Either
    /// way the caller backs off, and the journal hears of it at most every
    /// [`WARN_EVERY`].
    pub fn failed(&mut self, what: &str, error: &redis::RedisError) {
        let link_broke = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error();
        if link_broke {
            self.connection = None;
            self.link.set_broken(error.to_string());
        } else {
            self.link.set_error(error.to_string());
        }
        if self.warnings.allow() {
            log::warn!("{what}: {error}; retrying with backoff");
        }
    }

    /// Shortens every command's timeout (and the connect timeout): for the
    /// last attempts while the daemon stops, and for the lease, whose calls
    /// are worthless once they take longer than the lease lasts.
    pub fn hurry(&mut self, timeout: Duration) {
        self.timeout = timeout;
        if let Some(connection) = &self.connection {
            let _ = connection.set_read_timeout(Some(timeout));
            let _ = connection.set_write_timeout(Some(timeout));
        }
    }

    /// The wait before the next attempt, doubled each time up to a limit.
    pub fn pause(&mut self) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

/// The newest entry of the stream at `key` (`XREVRANGE key + - COUNT 1`),
/// as Redis sent it: the feed's stats and run, the lease's carried settings
/// and the publisher's first id all start from it.
fn newest_entry(connection: &mut redis::Connection, key: &str) -> redis::RedisResult<redis::Value> {
    redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(connection)
}

/// A new connection, with the timeouts every call here relies on.
fn connect(client: &redis::Client, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let connection = client.get_connection_with_timeout(CONNECT_TIMEOUT.min(timeout))?;
    connection.set_read_timeout(Some(timeout))?;
    connection.set_write_timeout(Some(timeout))?;
    Ok(connection)
}

/// A stream id `<run>-<seq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EntryId {
    pub run: u64,
    pub seq: u64,
}

impl EntryId {
    /// An id this version writes: `run` and `seq` below `u64::MAX` (so the
    /// next one can always be named) and `seq` from 1.
    pub fn parse(text: &str) -> Option<EntryId> {
        let (run, seq) = text.split_once('-')?;
        let id = EntryId {
            run: run.parse().ok()?,
            seq: seq.parse().ok()?,
        };
        (id.run < u64::MAX && (1..u64::MAX).contains(&id.seq)).then_some(id)
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.run, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_reads_back_as_written_and_orders_by_run_then_seq() {
        let id = EntryId { run: 17, seq: 4 };
        assert_eq!(EntryId::parse(&id.to_string()), Some(id));
        assert!(EntryId { run: 17, seq: 9 } < EntryId { run: 18, seq: 1 });
        assert_eq!(EntryId::parse("17"), None);
        assert_eq!(EntryId::parse("a-1"), None);
        assert_eq!(EntryId::parse("18446744073709551615-1"), None);
        assert_eq!(EntryId::parse("1-18446744073709551615"), None);
    }
}
