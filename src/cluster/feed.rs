//! An edge's feed: what the processor published, into this edge's log.
//!
//! Owns: the last stream ids it appended, the processor's last snapshot, and
//! the edge's own stats made from it once a second. Reads Redis (`XREAD
//! BLOCK` on the outcome and stats streams at once); writes the edge's
//! broadcast channel (the fan-out appends to the log, as on a single node it
//! appends the hub's output) and the edge's latest stats.
//!
//! At its first connection it backfills the log with the current run's
//! retained outcomes (the stream keeps `--history` of them; the backfill
//! stops at `--history-bytes` too), so a client resuming here finds what it
//! would on any other edge. A new epoch in the stream (the processor
//! restarted) goes out as a run switch (`reset`); a skipped seq (the stream
//! was trimmed past this edge while it was away) goes out as a `gap` notice,
//! never silently. An entry it cannot read is skipped and counted, and the
//! stats stream is read apart, so neither can stop the outcomes.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::ingest::Forwarder;
use super::reply::{self, Entries, Entry};
use super::{EntryId, Keys, Link, Redis, newest_entry};
use crate::config::NodeRole;
use crate::delivery::{Broadcast, Kind, gap_message, run_switch};
use crate::epoch::Epoch;
use crate::ops::health::{Heartbeats, Stage};
use crate::ops::logging::RateLimit;
use crate::pipeline::hub::{LatestStats, STATS_INTERVAL};
use crate::pipeline::overload::State;
use crate::pipeline::stats::{ClientState, CumulativeLatency, Snapshot};

/// Longest one `XREAD` blocks: the feed turns at least this often while
/// Redis answers (its heartbeat, the stop channel, the edge's own stats).
const BLOCK: Duration = Duration::from_millis(500);
/// Most entries one read returns: with outcomes of up to `--max-body`
/// each, this bounds what one reply holds.
const READ_COUNT: usize = 64;
/// The processor's stats older than this make the edge's health degraded.
const STATS_STALE: Duration = Duration::from_secs(3);
/// Most producer rows kept from a snapshot read back (the hub makes 33).
const MAX_PRODUCER_ROWS: usize = 33;
/// Least time between two journal lines about what the stream holds.
const NOTE_EVERY: Duration = Duration::from_secs(10);
/// Runs remembered as left behind.
const RUNS_LEFT: usize = 16;

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
    /// Outcomes and bytes backfilled at the first connection (`--history`,
    /// `--history-bytes`).
    pub history: usize,
    pub history_bytes: usize,
    /// The edge's log's run until the stream names the processor's.
    pub epoch: Epoch,
    /// This edge's own clients, for its stats.
    pub clients: Box<dyn Fn() -> ClientState + Send>,
    /// Closed when the edge stops.
    pub stop: Receiver<()>,
}

/// Where the feed is in the streams.
struct Place {
    /// The run the log holds now (by its epoch), and the last seq appended.
    epoch: Epoch,
    seq: u64,
    /// Read outcomes after this id.
    after: String,
    /// The stats entry last read.
    stats_id: String,
    /// Whether the log was backfilled (done once, at the first connection).
    backfilled: bool,
    /// Whether this connection checked that the stream did not go back.
    checked: bool,
    /// Whether the last read of the outcome stream succeeded and found
    /// nothing: only then may the stats name the run (an outcome of the
    /// current run may still wait behind a failed read).
    quiet: bool,
    /// The runs this log switched away from, newest last (at most
    /// [`RUNS_LEFT`]): a stream Redis restored from an older copy may hold
    /// one again, and the log never goes back to it.
    left: VecDeque<Epoch>,
}

impl Place {
    /// Switches the log to run `epoch`, remembering the one it leaves.
    fn leave_for(&mut self, epoch: Epoch) {
        if self.left.len() == RUNS_LEFT {
            self.left.pop_front();
        }
        self.left
            .push_back(std::mem::replace(&mut self.epoch, epoch));
    }
}

/// The processor's last snapshot and when it arrived.
struct Received {
    snapshot: Snapshot,
    at: Instant,
}

/// What the journal hears of odd entries, at most once per period.
struct Notes {
    unreadable: RateLimit,
    gaps: RateLimit,
    runs: RateLimit,
}

impl Feed {
    /// Starts the `feed` thread; it ends when the stop channel closes, and
    /// dropping its broadcast sender then ends the fan-out. Should it
    /// panic, the edge is marked not live: it would serve nothing new.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        let health = Arc::clone(&self.health);
        thread::Builder::new().name("feed".into()).spawn(move || {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run())).is_err() {
                log::error!("the feed thread panicked: this edge serves nothing new");
                health.fail("feed thread panicked".into());
            }
        })
    }

    fn run(mut self) {
        let mut place = Place {
            epoch: self.epoch.clone(),
            seq: 0,
            after: "0-0".into(),
            stats_id: String::new(),
            backfilled: false,
            checked: false,
            quiet: false,
            left: VecDeque::new(),
        };
        let notes = Notes {
            unreadable: RateLimit::new(NOTE_EVERY),
            gaps: RateLimit::new(NOTE_EVERY),
            runs: RateLimit::new(NOTE_EVERY),
        };
        let mut processor = None;
        let mut next_stats = Instant::now();
        while self.stop.try_recv() != Err(TryRecvError::Disconnected) {
            self.health.beat(Stage::Feed);
            match self.turn(&mut place, &notes) {
                Ok(()) => {
                    self.redis.succeeded();
                    self.health.set_degraded(None);
                }
                Err(e) => {
                    self.redis.failed("reading the outcome stream", &e);
                    place.checked = false;
                    place.quiet = false;
                    self.health.set_degraded(Some(format!(
                        "this edge cannot read Redis ({e}): it shows what it had"
                    )));
                    if self.stop.recv_timeout(self.redis.pause()) != Err(RecvTimeoutError::Timeout)
                    {
                        break;
                    }
                }
            }
            if Instant::now() >= next_stats {
                self.read_stats(&mut place, &mut processor);
                self.publish_stats(&place, processor.as_ref());
                next_stats = Instant::now() + STATS_INTERVAL;
            }
        }
    }

    /// One read of the outcome stream, after the first connection's backfill.
    fn turn(&mut self, place: &mut Place, notes: &Notes) -> redis::RedisResult<()> {
        if !place.backfilled {
            let backfill = self.backfill()?;
            self.note_unreadable(backfill.unreadable, notes);
            for entry in &backfill.entries {
                self.accept(place, entry, false, notes);
            }
            if backfill.entries.is_empty() {
                self.adopt_the_processors_run(place)?;
            }
            place.backfilled = true;
            place.checked = true;
            self.health.set_fed();
        }
        if !place.checked {
            self.check_stream_did_not_go_back(place)?;
        }
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.outcomes)
            .arg(&place.after)
            .query(self.redis.connected()?)?;
        let read = reply::read(&reply, &self.keys.outcomes);
        self.note_unreadable(read.unreadable, notes);
        place.quiet = read.entries.is_empty() && read.unreadable == 0;
        for entry in &read.entries {
            self.accept(place, entry, true, notes);
        }
        Ok(())
    }

    /// The current run's retained outcomes, oldest first, read newest first
    /// in pages until `--history` of them or `--history-bytes`.
    fn backfill(&mut self) -> redis::RedisResult<Entries> {
        let mut newest_first = Entries::default();
        let (mut before, mut bytes, mut run) = ("+".to_owned(), 0usize, None);
        while newest_first.entries.len() < self.history && bytes < self.history_bytes {
            let count = (self.history - newest_first.entries.len()).min(READ_COUNT);
            let page: redis::Value = redis::cmd("XREVRANGE")
                .arg(&self.keys.outcomes)
                .arg(&before)
                .arg("-")
                .arg("COUNT")
                .arg(count)
                .query(self.redis.connected()?)?;
            let page = reply::range(&page);
            newest_first.unreadable += page.unreadable;
            let Some(last) = page.entries.last() else {
                break;
            };
            before = format!("({}", last.id);
            for entry in page.entries {
                let epoch = entry.field("epoch").map(<[u8]>::to_vec);
                if run.get_or_insert_with(|| epoch.clone()) != &epoch {
                    newest_first.entries.reverse();
                    return Ok(newest_first);
                }
                bytes += entry.field("json").map_or(0, <[u8]>::len);
                newest_first.entries.push(entry);
            }
        }
        newest_first.entries.reverse();
        Ok(newest_first)
    }

    /// A processor that has judged nothing yet has published its stats: its
    /// epoch is taken from them, so clients that connect before its first
    /// outcome are already in its run (a plain client would otherwise be
    /// closed at the switch).
    /// A stats key Redis refuses to read is the stats' problem, not the
    /// outcomes': the run is then learnt from the first outcome.
    fn adopt_the_processors_run(&mut self, place: &mut Place) -> redis::RedisResult<()> {
        let newest = newest_entry(self.redis.connected()?, &self.keys.stats);
        let Ok(newest) = newest else {
            return Ok(());
        };
        if let Some(entry) = reply::range(&newest).entries.first() {
            self.adopt_a_run_without_outcomes(place, entry);
        }
        Ok(())
    }

    /// Takes the run of the processor whose stats `entry` is, while the
    /// log holds no outcome: a processor that has judged nothing yet (just
    /// started, or a standby that just took over) is then the run clients
    /// join, and no plain client is closed at its first outcome.
    fn adopt_a_run_without_outcomes(&mut self, place: &mut Place, entry: &Entry) {
        if place.seq != 0 {
            return;
        }
        let epoch = entry
            .field("epoch")
            .and_then(|e| Epoch::parse(&String::from_utf8_lossy(e)).ok());
        if let Some(epoch) = epoch.filter(|e| *e != place.epoch && !place.left.contains(e)) {
            self.send(run_switch(&epoch, &place.epoch));
            place.leave_for(epoch);
        }
    }

    /// After a reconnection: if the stream's newest entry sorts before the
    /// last one appended here, Redis lost what it held (a restart without
    /// persistence) and ids may start lower; the feed then reads from the
    /// stream's start, where seqs already appended are skipped.
    fn check_stream_did_not_go_back(&mut self, place: &mut Place) -> redis::RedisResult<()> {
        let top = newest_entry(self.redis.connected()?, &self.keys.outcomes)?;
        let newest = reply::range(&top).entries.first().map(|e| e.id.clone());
        let went_back = newest.is_none_or(|id| id_before(&id, &place.after));
        if went_back && place.after != "0-0" {
            log::warn!(
                "the outcome stream holds nothing after {}: Redis lost its data; reading it from its start",
                place.after
            );
            place.after = "0-0".into();
        }
        place.checked = true;
        Ok(())
    }

    /// Appends one outcome entry; a run switch first when its epoch is new,
    /// and a gap when seqs were skipped (`live`: not the backfill, whose
    /// first entry starts wherever the stream's history does).
    fn accept(&self, place: &mut Place, entry: &Entry, live: bool, notes: &Notes) {
        place.after = entry.id.clone();
        let (Some(id), Some(epoch), Some(json)) = (
            EntryId::parse(&entry.id),
            entry
                .field("epoch")
                .and_then(|e| Epoch::parse(&String::from_utf8_lossy(e)).ok()),
            entry.field("json"),
        ) else {
            self.note_unreadable(1, notes);
            return;
        };
        if place.left.contains(&epoch) {
            return;
        }
        if epoch != place.epoch {
            self.send(run_switch(&epoch, &place.epoch));
            if notes.runs.allow() {
                log::info!("the processor's run is now {epoch}");
            }
            place.leave_for(epoch);
            place.seq = 0;
        }
        if id.seq <= place.seq {
            return;
        }
        let first_missing = place.seq + 1;
        if id.seq > first_missing && (live || place.seq > 0) {
            let missed = id.seq - first_missing;
            self.link.missed.fetch_add(missed, Ordering::Relaxed);
            if notes.gaps.allow() {
                log::warn!(
                    "the stream no longer held outcomes {first_missing}..={}: clients are told of the gap",
                    id.seq - 1
                );
            }
            self.send(gap_message(first_missing, id.seq - 1));
        }
        place.seq = id.seq;
        self.link.outcomes.fetch_add(1, Ordering::Relaxed);
        let status = entry.field("status").map_or("", known_status);
        self.send(Broadcast {
            kind: Kind::Event,
            seq: id.seq,
            status,
            json: Bytes::copy_from_slice(json),
        });
    }

    fn note_unreadable(&self, count: usize, notes: &Notes) {
        if count == 0 {
            return;
        }
        self.link
            .unreadable
            .fetch_add(count as u64, Ordering::Relaxed);
        if notes.unreadable.allow() {
            log::warn!(
                "skipped {count} stream entries this version cannot read (counted in cluster.unreadable)"
            );
        }
    }

    /// The processor's newest snapshot, if a new one was published. Its
    /// own failures (a key of another type, an entry this version cannot
    /// read) leave the outcomes alone: they are warned of and counted.
    fn read_stats(&mut self, place: &mut Place, processor: &mut Option<Received>) {
        let newest = (self.redis.connected())
            .and_then(|connection| newest_entry(connection, &self.keys.stats));
        let newest = match newest {
            Ok(value) => reply::range(&value),
            Err(e) => {
                self.redis.failed("reading the stats stream", &e);
                place.checked = false;
                return;
            }
        };
        let Some(entry) = newest.entries.first() else {
            return;
        };
        if entry.id != place.stats_id {
            place.stats_id = entry.id.clone();
            if place.backfilled && place.quiet {
                self.adopt_a_run_without_outcomes(place, entry);
            }
            match received(entry) {
                Some(snapshot) => *processor = Some(snapshot),
                None => {
                    self.link.unreadable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
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

/// Whether stream id `a` sorts before `b` (an id that cannot be read sorts first).
fn id_before(a: &str, b: &str) -> bool {
    reply::id_parts(a) < reply::id_parts(b)
}

/// A stats entry read back; `None` (and a warning) for one this version
/// cannot read. What the edge does not compute itself is bounded here: the
/// producer rows, as the hub bounds them.
fn received(entry: &Entry) -> Option<Received> {
    let json = entry.field("json")?;
    let mut snapshot: Snapshot = match serde_json::from_slice(json) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            log::debug!("skipped stats entry {}: {e}", entry.id);
            return None;
        }
    };
    snapshot.kind = "stats".into();
    snapshot.producers.truncate(MAX_PRODUCER_ROWS);
    snapshot.cumulative_latency = entry
        .field("latency")
        .and_then(|l| serde_json::from_slice::<CumulativeLatency>(l).ok())
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
