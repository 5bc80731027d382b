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
pub(crate) mod publish;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::NodeRole;
use crate::pipeline::stats::ClusterState;

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take before the link counts as broken; above
/// the feed's `XREAD BLOCK`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failure; doubled after each, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            outcomes: format!("{prefix}:outcomes"),
            stats: format!("{prefix}:stats"),
            ingest: format!("{prefix}:ingest"),
            accepted: format!("{prefix}:ingest:accepted"),
            entered: format!("{prefix}:ingest:entered"),
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
            last_error: self.last_error(),
            ingest: None,
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
}

impl Redis {
    /// A link to `url` (checked when the flags were read); no connection yet.
    pub fn new(url: &str, link: std::sync::Arc<Link>) -> redis::RedisResult<Self> {
        Ok(Redis {
            client: redis::Client::open(url)?,
            connection: None,
            backoff: FIRST_BACKOFF,
            link,
        })
    }

    /// The connection, made now if there is none. On failure the error is
    /// recorded and returned: the caller waits [`Redis::pause`] and tries again.
    pub fn connected(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.connection.is_none() {
            let connection = self.connect().inspect_err(|e| self.broken(e))?;
            self.backoff = FIRST_BACKOFF;
            self.link.set_connected();
            log::info!("connected to Redis");
            return Ok(self.connection.insert(connection));
        }
        self.connection.as_mut().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "Redis unreachable").into()
        })
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        connect(&self.client)
    }

    /// Drops the connection after `error`; the next call reconnects.
    pub fn broken(&mut self, error: &redis::RedisError) {
        if self.connection.take().is_some() || self.link.is_connected() {
            log::warn!("lost Redis: {error}; reconnecting with backoff");
        }
        self.link.set_broken(error.to_string());
    }

    /// The wait before the next attempt, doubled each time up to a limit.
    pub fn pause(&mut self) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

/// A new connection, with the timeouts every call here relies on.
fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let connection = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    connection.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    connection.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(connection)
}

/// A stream id `<run>-<seq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EntryId {
    pub run: u64,
    pub seq: u64,
}

impl EntryId {
    pub fn parse(text: &str) -> Option<EntryId> {
        let (run, seq) = text.split_once('-')?;
        Some(EntryId {
            run: run.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.run, self.seq)
    }
}

/// A text field of a stream entry (Redis answers bulk strings).
fn field(map: &std::collections::HashMap<String, redis::Value>, name: &str) -> Option<Vec<u8>> {
    match map.get(name)? {
        redis::Value::BulkString(bytes) => Some(bytes.clone()),
        redis::Value::SimpleString(text) => Some(text.clone().into_bytes()),
        _ => None,
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
    }
}
