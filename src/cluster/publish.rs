//! The processor's publisher: every outcome of the shared log to
//! `<prefix>:outcomes`, and the stats to `<prefix>:stats`.
//!
//! Owns: its position in the log and the run's id in the stream. Reads the
//! shared log (waiting on it: the fan-out appends, then signals) and the
//! latest stats; writes Redis only. It never holds the log's lock while it
//! talks to Redis: it copies a batch out first.
//!
//! While Redis is unreachable it keeps its place in the log; the log is the
//! bounded buffer. Outcomes the log forgets before they are published are
//! counted in `cluster.missed`, never silently lost; publishing resumes after
//! the last entry the stream holds, so a batch cut short is neither lost nor
//! written twice.
//!
//! Every append is fenced by the processor lease (see `lease`): a standby
//! publishes nothing, and a processor that lost the lease cannot write.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::lease::{FENCE, Lease};
use super::reply;
use super::{EntryId, Keys, Link, Redis, newest_entry};
use crate::delivery::{Broadcast, Kind, Log, Read};
use crate::epoch::Epoch;
use crate::ops::health::Heartbeats;
use crate::ops::logging::RateLimit;
use crate::pipeline::hub::LatestStats;
use crate::time::WallClock;

/// Most messages published in one round trip, and the most bytes of them
/// (at least one message goes, however large).
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long the last tries take while the daemon stops with Redis away.
const LAST_TRY: Duration = Duration::from_millis(500);
/// Stats entries the stats stream keeps (a minute of them).
const STATS_KEPT: u64 = 60;
/// How long the publisher sleeps on an idle log before looking again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Appends entries to a stream while the lease is this processor's (after
/// [`FENCE`]): KEYS[3] the stream; ARGV[4] its `MAXLEN ~`, ARGV[5] the
/// fields of each entry; then each entry's id and field/value pairs. An
/// `XADD` refused midway leaves the entries before it: the caller asks the
/// stream what it holds before trying again.
const APPEND: &str = r"
local per = 1 + 2 * tonumber(ARGV[5])
for i = 6, #ARGV, per do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], unpack(ARGV, i, i + per - 1))
end
return 1";

/// Everything the publisher thread needs.
pub(crate) struct Publisher {
    pub log: Arc<Log>,
    pub latest: Arc<LatestStats>,
    pub keys: Keys,
    pub redis: Redis,
    pub link: Arc<Link>,
    pub health: Arc<Heartbeats>,
    pub epoch: Epoch,
    /// Entries the outcome stream keeps (`MAXLEN ~`): `--history`.
    pub history: usize,
    pub clock: WallClock,
    /// "Another writer" is said at most every 10 s.
    pub id_warnings: RateLimit,
    /// Whether this processor is the active one.
    pub lease: Arc<Lease>,
    /// Dropped when the thread ends: the lease thread then gives the lease back.
    pub _ended: crossbeam_channel::Sender<()>,
}

/// Where the publisher is.
#[derive(Default)]
struct Progress {
    /// Next log position to read.
    next: u64,
    /// The last seq published (or given up on).
    last_seq: u64,
    /// This run's id in the stream, fixed at the first connection.
    run: Option<u64>,
    /// After a failure the stream is asked what it holds before writing.
    check_stream: bool,
}

impl Publisher {
    /// Starts the `publish` thread. It ends once the log is closed (the
    /// fan-out ended) and everything in it is published, or given up on when
    /// Redis cannot be reached at that moment.
    /// Should it panic, the processor is marked not live: its judging
    /// would no longer reach any edge.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        let health = Arc::clone(&self.health);
        thread::Builder::new()
            .name("publish".into())
            .spawn(move || {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run())).is_err() {
                    log::error!("the publish thread panicked: edges get nothing new");
                    health.fail("publish thread panicked".into());
                }
            })
    }

    fn run(mut self) {
        let mut progress = Progress::default();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut closed_at = None;
        let append = redis::Script::new(&format!("{FENCE}{APPEND}"));
        loop {
            if batch.is_empty() && !self.read(&mut progress, &mut batch) {
                break;
            }
            if !self.lease.is_active() {
                // A standby's own stats are nobody's business.
                batch.retain(|m| m.kind == Kind::Event);
            }
            if batch.is_empty() {
                continue;
            }
            match self.publish(&mut progress, &batch, &append) {
                Ok(()) => {
                    batch.clear();
                    self.redis.succeeded();
                    self.health.set_degraded(None);
                }
                Err(e) => {
                    self.failed(&mut progress, &e);
                    if !self.log.is_closed() {
                        // Wakes early when the log closes.
                        self.log.wait_past(u64::MAX, self.redis.pause());
                        continue;
                    }
                    // Stopping: short last tries, then what is left is counted.
                    let at = *closed_at.get_or_insert_with(|| {
                        self.redis.hurry(LAST_TRY);
                        Instant::now()
                    });
                    if at.elapsed() >= LAST_TRY {
                        self.give_up(&progress);
                        break;
                    }
                    thread::sleep(self.redis.pause().min(LAST_TRY));
                }
            }
        }
    }

    /// After a failed batch: backs off, and asks the stream what it holds
    /// before the next try. Another writer's entry above this run's ids
    /// makes every later one refused: the run moves past it (edges follow
    /// the epoch, not the run, so clients see nothing of it).
    fn failed(&mut self, progress: &mut Progress, error: &redis::RedisError) {
        if self.lease.refused(error) {
            // Stopping: what is left is counted once the log closes.
            return;
        }
        self.redis.failed("publishing outcomes", error);
        progress.check_stream = true;
        if error
            .to_string()
            .contains("equal or smaller than the target stream top item")
        {
            progress.run = None;
            if self.id_warnings.allow() {
                log::error!(
                    "another writer appended to {} above this processor's ids: publishing goes on past it",
                    self.keys.outcomes
                );
            }
        }
        self.health
            .set_degraded(Some(format!("cannot publish to Redis: {error}")));
    }

    /// Copies the next batch out of the log; `false` once the log is closed
    /// and fully read.
    fn read(&self, progress: &mut Progress, batch: &mut Vec<Broadcast>) -> bool {
        match self
            .log
            .read(progress.next, MAX_BATCH, MAX_BATCH_BYTES, batch)
        {
            Read::Messages(next) => progress.next = next,
            Read::Behind {
                oldest, oldest_seq, ..
            } => {
                // The log forgot outcomes this thread never got to publish.
                let lost = oldest_seq.saturating_sub(progress.last_seq + 1);
                self.link
                    .missed
                    .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                if lost > 0 {
                    log::warn!(
                        "{lost} outcomes were never published: Redis was away longer than the log holds"
                    );
                }
                progress.last_seq = progress.last_seq.max(oldest_seq.saturating_sub(1));
                progress.next = oldest;
            }
            Read::CaughtUp => return self.log.wait_past(progress.next, IDLE_WAIT),
        }
        true
    }

    /// Writes `batch`'s outcomes in one round trip, then the stats apart:
    /// a stats key Redis refuses (another type, say) must not stop outcomes.
    fn publish(
        &mut self,
        progress: &mut Progress,
        batch: &[Broadcast],
        append: &redis::Script,
    ) -> redis::RedisResult<()> {
        if !self.lease.is_active() {
            return Err(not_active());
        }
        let (run, published) = self.position_in_stream(progress)?;
        let mut call = self.fenced(append, &self.keys.outcomes, self.history as u64, 3);
        let mut added = 0;
        for message in batch {
            if message.kind == Kind::Event && message.seq > published {
                let id = EntryId {
                    run,
                    seq: message.seq,
                };
                call.arg(id.to_string())
                    .arg("epoch")
                    .arg(self.epoch.as_str())
                    .arg("status")
                    .arg(message.status)
                    .arg("json")
                    .arg(&message.json[..]);
                added += 1;
            }
        }
        if added > 0 {
            call.invoke::<i64>(self.redis.connected()?)?;
        }
        progress.check_stream = false;
        // Counted once each: those a batch cut short had written are
        // published too.
        let outcomes = batch
            .iter()
            .filter(|m| m.kind == Kind::Event && m.seq > progress.last_seq)
            .count() as u64;
        if let Some(last) = batch.iter().rev().find(|m| m.kind == Kind::Event) {
            progress.last_seq = progress.last_seq.max(last.seq);
        }
        self.link
            .outcomes
            .fetch_add(outcomes, std::sync::atomic::Ordering::Relaxed);
        if batch.iter().any(|m| m.kind == Kind::Stats) {
            self.publish_stats(append);
        }
        Ok(())
    }

    /// A call of the fenced `append` to `stream`, entries of `fields`
    /// fields each to follow.
    fn fenced<'a>(
        &self,
        append: &'a redis::Script,
        stream: &str,
        max_len: u64,
        fields: u32,
    ) -> redis::ScriptInvocation<'a> {
        let mut call = self.lease.fenced(append, &self.keys);
        call.key(stream).arg(max_len).arg(fields);
        call
    }

    /// This run's id, and the last seq the stream holds of it: after a
    /// failure, asked of the stream (a batch may have been written in part).
    fn position_in_stream(&mut self, progress: &mut Progress) -> redis::RedisResult<(u64, u64)> {
        let connection = self.redis.connected()?;
        let (keys, clock) = (&self.keys, &self.clock);
        let run = match progress.run {
            Some(run) => run,
            None => *progress.run.insert(new_run(connection, keys, clock)?),
        };
        let published = if progress.check_stream {
            last_seq_of(connection, keys, run)?
        } else {
            progress.last_seq
        };
        Ok((run, published))
    }

    /// The latest snapshot, with the latency histogram `/metrics` needs
    /// (which the wire snapshot leaves out). A failure is warned of (at
    /// most every 10 s); the outcomes go on.
    fn publish_stats(&mut self, append: &redis::Script) {
        let Some((snapshot, json)) = self.latest.get() else {
            return;
        };
        let latency = serde_json::to_vec(&snapshot.cumulative_latency).unwrap_or_default();
        let mut call = self.fenced(append, &self.keys.stats, STATS_KEPT, 3);
        call.arg("*")
            .arg("epoch")
            .arg(self.epoch.as_str())
            .arg("json")
            .arg(&json[..])
            .arg("latency")
            .arg(latency);
        let added = self
            .redis
            .connected()
            .and_then(|connection| call.invoke::<i64>(connection));
        if let Err(e) = added
            && !self.lease.refused(&e)
        {
            self.redis.failed("publishing stats", &e);
        }
    }

    /// Stopping with Redis away: every outcome of the run not yet published
    /// is counted, not lost silently.
    fn give_up(&self, progress: &Progress) {
        let unpublished = self.log.newest_seq().saturating_sub(progress.last_seq);
        self.link
            .missed
            .fetch_add(unpublished, std::sync::atomic::Ordering::Relaxed);
        log::warn!("stopping with Redis unreachable: {unpublished} outcomes were not published");
    }
}

/// Why a standby holds the outcomes it has (none, unless a caller of the
/// library entered some): they wait until it is active.
fn not_active() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "a standby processor publishes nothing",
    ))
}

/// This run's id: the clock in ms, past every entry already in the stream
/// (so ids keep increasing even if the clock stepped back, or another writer
/// added an entry).
fn new_run(
    connection: &mut redis::Connection,
    keys: &Keys,
    clock: &WallClock,
) -> redis::RedisResult<u64> {
    let now = clock.epoch_ms(Instant::now()) as u64;
    let top = newest_id(connection, &keys.outcomes)?;
    let run = top.map_or(now, |(ms, _)| now.max(ms.saturating_add(1)));
    if run == u64::MAX {
        // No id an edge reads fits after it: said (rate-limited) at each
        // try until someone removes the entry.
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "the outcome stream's newest entry has the largest id there is: remove it",
        )));
    }
    Ok(run)
}

/// The last seq of run `run` the stream holds (0 when none).
fn last_seq_of(
    connection: &mut redis::Connection,
    keys: &Keys,
    run: u64,
) -> redis::RedisResult<u64> {
    Ok(newest_id(connection, &keys.outcomes)?
        .filter(|&(ms, _)| ms == run)
        .map_or(0, |(_, seq)| seq))
}

/// The two numbers of the newest entry's id of `key`, if any.
fn newest_id(
    connection: &mut redis::Connection,
    key: &str,
) -> redis::RedisResult<Option<(u64, u64)>> {
    Ok(reply::newest_id(&newest_entry(connection, key)?))
}
