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

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use redis::streams::StreamRangeReply;

use super::{EntryId, Keys, Link, Redis};
use crate::delivery::{Broadcast, Kind, Log, Read};
use crate::epoch::Epoch;
use crate::ops::health::Heartbeats;
use crate::pipeline::hub::LatestStats;
use crate::time::WallClock;

/// Most messages published in one round trip.
const MAX_BATCH: usize = 512;
/// Stats entries the stats stream keeps (a minute of them).
const STATS_KEPT: u64 = 60;
/// How long the publisher sleeps on an idle log before looking again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

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
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("publish".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let mut progress = Progress::default();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            if batch.is_empty() && !self.read(&mut progress, &mut batch) {
                break;
            }
            if batch.is_empty() {
                continue;
            }
            match self.publish(&mut progress, &batch) {
                Ok(()) => {
                    batch.clear();
                    self.health.set_degraded(None);
                }
                Err(e) => {
                    self.redis.broken(&e);
                    progress.check_stream = true;
                    self.health
                        .set_degraded(Some(format!("cannot publish to Redis: {e}")));
                    if self.log.is_closed() {
                        self.give_up(&mut progress, &batch);
                        break;
                    }
                    thread::sleep(self.redis.pause());
                }
            }
        }
    }

    /// Copies the next batch out of the log; `false` once the log is closed
    /// and fully read.
    fn read(&self, progress: &mut Progress, batch: &mut Vec<Broadcast>) -> bool {
        match self.log.read(progress.next, MAX_BATCH, usize::MAX, batch) {
            Read::Messages(next) => progress.next = next,
            Read::Behind { oldest, oldest_seq } => {
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

    /// Writes `batch` in one round trip.
    fn publish(&mut self, progress: &mut Progress, batch: &[Broadcast]) -> redis::RedisResult<()> {
        let (run, published) = self.position_in_stream(progress)?;
        let mut pipe = redis::pipe();
        let mut outcomes = 0;
        let mut stats = false;
        for message in batch {
            match message.kind {
                Kind::Event if message.seq > published => {
                    self.add_outcome(
                        &mut pipe,
                        EntryId {
                            run,
                            seq: message.seq,
                        },
                        message,
                    );
                    outcomes += 1;
                }
                Kind::Stats => stats = true,
                _ => {}
            }
        }
        if stats {
            self.add_stats(&mut pipe);
        }
        pipe.query::<()>(self.redis.connected()?)?;
        progress.check_stream = false;
        if let Some(last) = batch.iter().rev().find(|m| m.kind == Kind::Event) {
            progress.last_seq = progress.last_seq.max(last.seq);
        }
        self.link
            .outcomes
            .fetch_add(outcomes, std::sync::atomic::Ordering::Relaxed);
        Ok(())
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

    fn add_outcome(&self, pipe: &mut redis::Pipeline, id: EntryId, message: &Broadcast) {
        pipe.cmd("XADD")
            .arg(&self.keys.outcomes)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.history)
            .arg(id.to_string())
            .arg("epoch")
            .arg(self.epoch.as_str())
            .arg("status")
            .arg(message.status)
            .arg("json")
            .arg(&message.json[..])
            .ignore();
    }

    /// The latest snapshot, with the latency histogram `/metrics` needs
    /// (which the wire snapshot leaves out).
    fn add_stats(&self, pipe: &mut redis::Pipeline) {
        let Some((snapshot, json)) = self.latest.get() else {
            return;
        };
        let latency = serde_json::to_vec(&snapshot.cumulative_latency).unwrap_or_default();
        pipe.cmd("XADD")
            .arg(&self.keys.stats)
            .arg("MAXLEN")
            .arg("~")
            .arg(STATS_KEPT)
            .arg("*")
            .arg("epoch")
            .arg(self.epoch.as_str())
            .arg("json")
            .arg(&json[..])
            .arg("latency")
            .arg(latency)
            .ignore();
    }

    /// Shutting down with Redis away: what is left is counted, not lost silently.
    fn give_up(&self, progress: &mut Progress, batch: &[Broadcast]) {
        let mut left: Vec<Broadcast> = batch.to_vec();
        while let Read::Messages(next) =
            self.log
                .read(progress.next, usize::MAX, usize::MAX, &mut left)
        {
            progress.next = next;
        }
        let unpublished = left
            .iter()
            .filter(|m| m.kind == Kind::Event && m.seq > progress.last_seq)
            .count() as u64;
        self.link
            .missed
            .fetch_add(unpublished, std::sync::atomic::Ordering::Relaxed);
        log::warn!("stopping with Redis unreachable: {unpublished} outcomes were not published");
    }
}

/// This run's id: the clock in ms, past every run already in the stream (so
/// ids keep increasing even if the clock stepped back).
fn new_run(
    connection: &mut redis::Connection,
    keys: &Keys,
    clock: &WallClock,
) -> redis::RedisResult<u64> {
    let now = clock.epoch_ms(std::time::Instant::now()) as u64;
    let run = match last_entry(connection, &keys.outcomes)? {
        Some(last) => now.max(last.run + 1),
        None => now,
    };
    Ok(run)
}

/// The last seq of run `run` the stream holds (0 when none).
fn last_seq_of(
    connection: &mut redis::Connection,
    keys: &Keys,
    run: u64,
) -> redis::RedisResult<u64> {
    Ok(last_entry(connection, &keys.outcomes)?
        .filter(|last| last.run == run)
        .map_or(0, |last| last.seq))
}

/// The id of the newest entry of `key`, if any.
pub(super) fn last_entry(
    connection: &mut redis::Connection,
    key: &str,
) -> redis::RedisResult<Option<EntryId>> {
    let reply: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(connection)?;
    Ok(reply
        .ids
        .first()
        .and_then(|entry| EntryId::parse(&entry.id)))
}
