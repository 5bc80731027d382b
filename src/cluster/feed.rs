//! An edge's feed: what the processor published, into this edge's log.
//!
//! Owns: the last stream ids it appended, the processor's last snapshot, and
//! the edge's own stats made from it once a second. Reads Redis (`XREAD
//! BLOCK` on the outcome and stats streams at once); writes the edge's
//! broadcast channel (the fan-out appends to the log, as on a single node it
//! appends the hub's output) and the edge's latest stats.
//!
//! At its first connection it backfills the log with the current run's
//! retained outcomes (the stream keeps `--history` of them), so a client
//! resuming here finds what it would on any other edge. A new run in the
//! stream (the processor restarted) goes out as a run switch (`reset`); a
//! skipped seq (the stream was trimmed past this edge while it was away)
//! goes out as a `gap` notice, never silently.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use super::ingest::Forwarder;
use super::{EntryId, Keys, Link, Redis, field};
use crate::config::NodeRole;
use crate::delivery::{Broadcast, Kind, gap_message, run_switch};
use crate::epoch::Epoch;
use crate::ops::health::{Heartbeats, Stage};
use crate::pipeline::hub::{LatestStats, STATS_INTERVAL};
use crate::pipeline::overload::State;
use crate::pipeline::stats::{ClientState, CumulativeLatency, Snapshot};

/// Longest one `XREAD` blocks: the feed turns at least this often (its
/// heartbeat, the stop channel, the edge's own stats).
const BLOCK: Duration = Duration::from_millis(500);
/// Most entries one `XREAD` returns.
const READ_COUNT: usize = 1024;
/// The processor's stats older than this make the edge's health degraded.
const STATS_STALE: Duration = Duration::from_secs(3);

/// Everything the feed thread needs.
pub(crate) struct Feed {
    pub broadcast: Sender<Broadcast>,
    pub latest: Arc<LatestStats>,
    pub keys: Keys,
    pub redis: Redis,
    pub link: Arc<Link>,
    /// Where this edge's posted events go, for its stats.
    pub forwarder: Arc<Forwarder>,
    pub health: Arc<Heartbeats>,
    /// Outcomes backfilled at the first connection (`--history`).
    pub history: usize,
    /// The edge's log's run until the stream names the processor's.
    pub epoch: Epoch,
    /// This edge's own clients, for its stats.
    pub clients: Box<dyn Fn() -> ClientState + Send>,
    /// Closed when the edge stops.
    pub stop: Receiver<()>,
}

/// Where the feed is in the streams.
struct Place {
    /// The run the log holds now, and its epoch.
    run: Option<u64>,
    epoch: Epoch,
    /// The last seq appended in that run.
    seq: u64,
    /// Read outcomes after this id.
    after: String,
    /// Read stats after this id.
    stats_after: String,
    /// Whether the log was backfilled (done once, at the first connection).
    backfilled: bool,
}

/// The processor's last snapshot and when it arrived.
struct Received {
    snapshot: Snapshot,
    at: Instant,
}

impl Feed {
    /// Starts the `feed` thread; it ends when the stop channel closes, and
    /// dropping its broadcast sender then ends the fan-out.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("feed".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let mut place = Place {
            run: None,
            epoch: self.epoch.clone(),
            seq: 0,
            after: "0-0".into(),
            stats_after: "0-0".into(),
            backfilled: false,
        };
        let mut processor = None;
        let mut next_stats = Instant::now();
        while self.stop.try_recv() != Err(TryRecvError::Disconnected) {
            self.health.beat(Stage::Feed);
            if let Err(e) = self.turn(&mut place, &mut processor) {
                self.redis.broken(&e);
                self.health.set_degraded(Some(format!(
                    "this edge cannot reach Redis ({e}): it shows what it had"
                )));
                if self.stop.recv_timeout(self.redis.pause()) != Err(RecvTimeoutError::Timeout) {
                    break;
                }
            }
            if Instant::now() >= next_stats {
                self.publish_stats(&place, processor.as_ref());
                next_stats = Instant::now() + STATS_INTERVAL;
            }
        }
    }

    /// One read from Redis, or the first connection's backfill.
    fn turn(
        &mut self,
        place: &mut Place,
        processor: &mut Option<Received>,
    ) -> redis::RedisResult<()> {
        if !place.backfilled {
            let (outcomes, stats) = backfill(self.redis.connected()?, &self.keys, self.history)?;
            for entry in outcomes {
                self.accept(place, &entry, false);
            }
            if let Some(entry) = stats {
                place.stats_after = entry.id.clone();
                *processor = received(&entry).or(processor.take());
            }
            place.backfilled = true;
        }
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.outcomes)
            .arg(&self.keys.stats)
            .arg(&place.after)
            .arg(&place.stats_after)
            .query(self.redis.connected()?)?;
        self.health.set_degraded(None);
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            if stream.key == self.keys.outcomes {
                for entry in &stream.ids {
                    self.accept(place, entry, true);
                }
            } else if let Some(entry) = stream.ids.last() {
                place.stats_after = entry.id.clone();
                *processor = received(entry).or(processor.take());
            }
        }
        Ok(())
    }

    /// Appends one outcome entry; a new run first, and a gap when seqs were
    /// skipped (`live`: not the backfill, whose first entry starts wherever
    /// the stream's history does).
    fn accept(&self, place: &mut Place, entry: &StreamId, live: bool) {
        place.after = entry.id.clone();
        let (Some(id), Some(epoch), Some(json)) = (
            EntryId::parse(&entry.id),
            field(&entry.map, "epoch")
                .and_then(|e| Epoch::parse(&String::from_utf8_lossy(&e)).ok()),
            field(&entry.map, "json"),
        ) else {
            log::warn!(
                "skipped stream entry {}: not an outcome this version publishes",
                entry.id
            );
            return;
        };
        if place.run != Some(id.run) {
            self.send(run_switch(&epoch, &place.epoch));
            log::info!("the processor's run is now {epoch}");
            place.run = Some(id.run);
            place.epoch = epoch;
            place.seq = 0;
        }
        if id.seq <= place.seq {
            return;
        }
        let first_missing = place.seq + 1;
        if id.seq > first_missing && (live || place.seq > 0) {
            let missed = id.seq - first_missing;
            self.link.missed.fetch_add(missed, Ordering::Relaxed);
            log::warn!(
                "the stream no longer held outcomes {first_missing}..={}: clients are told of the gap",
                id.seq - 1
            );
            self.send(gap_message(first_missing, id.seq - 1));
        }
        place.seq = id.seq;
        self.link.outcomes.fetch_add(1, Ordering::Relaxed);
        let status = field(&entry.map, "status").map_or("", |s| known_status(&s));
        self.send(Broadcast {
            kind: Kind::Event,
            seq: id.seq,
            status,
            json: Bytes::from(json),
        });
    }

    /// The edge's stats: the processor's last snapshot with this edge's own
    /// clients and link, degraded while Redis or the processor is silent.
    fn publish_stats(&self, place: &Place, processor: Option<&Received>) {
        let Some(received) = processor else {
            return;
        };
        let mut snapshot = received.snapshot.clone();
        snapshot.clients = (self.clients)();
        snapshot.clients.backlog = self.broadcast.len();
        let mut cluster = self.link.state(NodeRole::Edge);
        cluster.ingest = Some(self.forwarder.state());
        cluster.processor = snapshot.cluster.take().map(Box::new);
        snapshot.cluster = Some(cluster);
        let silent = received.at.elapsed();
        let reason = if !self.link.is_connected() {
            Some(format!(
                "this edge cannot reach Redis: what it shows is {} s old",
                silent.as_secs()
            ))
        } else if silent > STATS_STALE {
            Some(format!(
                "no stats from the processor for {} s",
                silent.as_secs()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            if snapshot.health.state == State::Healthy {
                snapshot.health.state = State::Degraded;
            }
            snapshot.health.reasons.push(reason);
        }
        let snapshot = Arc::new(snapshot);
        let json = Bytes::from(serde_json::to_vec(&*snapshot).unwrap_or_default());
        self.latest.set(Arc::clone(&snapshot), json.clone());
        self.send(Broadcast {
            kind: Kind::Stats,
            seq: place.seq,
            status: "",
            json,
        });
    }

    fn send(&self, message: Broadcast) {
        // The fan-out ends only after the feed; an error here means shutdown.
        let _ = self.broadcast.send(message);
    }
}

/// The current run's retained outcomes, oldest first, and the latest stats entry.
fn backfill(
    connection: &mut redis::Connection,
    keys: &Keys,
    history: usize,
) -> redis::RedisResult<(Vec<StreamId>, Option<StreamId>)> {
    let newest_first: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&keys.outcomes)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(history.max(1))
        .query(connection)?;
    let run_of = |entry: &StreamId| EntryId::parse(&entry.id).map(|id| id.run);
    let current = newest_first.ids.first().and_then(run_of);
    let mut outcomes: Vec<StreamId> = newest_first
        .ids
        .into_iter()
        .take_while(|entry| run_of(entry) == current)
        .collect();
    outcomes.reverse();
    let stats: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&keys.stats)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(connection)?;
    Ok((outcomes, stats.ids.into_iter().next()))
}

/// A stats entry read back; `None` (and a warning) for one this version cannot read.
fn received(entry: &StreamId) -> Option<Received> {
    let json = field(&entry.map, "json")?;
    let mut snapshot: Snapshot = match serde_json::from_slice(&json) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            log::warn!("skipped stats entry {}: {e}", entry.id);
            return None;
        }
    };
    snapshot.cumulative_latency = field(&entry.map, "latency")
        .and_then(|l| serde_json::from_slice::<CumulativeLatency>(&l).ok())
        .unwrap_or_default();
    Some(Received {
        snapshot,
        at: Instant::now(),
    })
}

/// The status name a client filters on (`Broadcast::status` is static).
fn known_status(name: &[u8]) -> &'static str {
    match name {
        b"on-time" => "on-time",
        b"late" => "late",
        b"failed" => "failed",
        b"dropped" => "dropped",
        _ => "",
    }
}
