//! Ingest and settings at any edge: an edge validates a posted batch as a
//! single node does and appends it to `<prefix>:ingest`; the processor reads
//! the stream with a consumer group and enters each batch into its intake.
//! A settings change goes the same way through `<prefix>:config`, and the
//! edge waits for the processor's answer on a list of its own
//! (`<prefix>:config:reply:<uuid>`, `BLPOP`), so it answers only once the
//! change is applied — or says it was not.
//!
//! Owns: the carried form of an event (`Carried`: the fields a producer may
//! set, with `createdAt` in epoch ms), the edge's [`Forwarder`] (a few idle
//! connections, no lock held across a call), the processor's [`Consumer`]
//! thread, and the deployment's two counters in Redis:
//! `<prefix>:ingest:accepted` (events edges put in the stream) and
//! `<prefix>:ingest:entered` (events processors took out of it). Each moves
//! in the same Lua call as the stream, so `accepted = entered + waiting`
//! holds at every moment (`cluster.ingest` in the stats).
//!
//! Reads and writes Redis; the consumer writes the processor's intake.
//!
//! A batch is one stream entry: entered whole, acknowledged (`XACK`) and
//! deleted in one call once every event of it is in the intake, so the
//! stream holds only what no processor has entered. An entry entered but not
//! acknowledged (Redis went away between the two) is remembered and only
//! acknowledged when read again, never entered twice by one processor.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::lease::{FENCE, Lease};
use super::reply::{self, Entry};
use super::{COMMAND_TIMEOUT, Keys, Link, Redis};
use crate::ops::health::Heartbeats;
use crate::ops::logging::RateLimit;
use crate::pipeline::event::{Event, MAX_BATCH, MAX_ID_CHARS, MAX_MS, Source, check_producer};
use crate::pipeline::intake::Intake;
use crate::pipeline::stats::IngestState;
use crate::time::WallClock;

/// The consumer group every processor reads the ingest stream in.
const GROUP: &str = "processors";
/// Most batches waiting in the stream; past it an edge answers 503: the
/// processor is away or behind, and Redis must not grow without bound.
pub(crate) const MAX_WAITING_BATCHES: u64 = 10_000;
/// Most idle connections an edge keeps for forwarding.
const MAX_IDLE: usize = 16;
/// Longest one `XREADGROUP` blocks.
const BLOCK: Duration = Duration::from_millis(500);
/// Batches one read takes.
const READ_COUNT: usize = 64;
/// How often the processor reads the deployment's counters for its stats,
/// and claims what another consumer read but left (see [`Consumer::claim`]).
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// Appends a batch unless too many wait: KEYS stream, accepted counter;
/// ARGV limit, events JSON, count. Returns -1 when refused.
const APPEND: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
redis.call('XADD', KEYS[1], '*', 'events', ARGV[2], 'count', ARGV[3])
return redis.call('INCRBY', KEYS[2], ARGV[3])";

/// Acknowledges, deletes and counts entered batches while the lease is this
/// processor's (after `lease::FENCE`): KEYS[3] stream, KEYS[4] entered
/// counter; ARGV[4] group, then each entry's id and event count. Only what
/// this call acknowledged is counted, so a retry after a lost reply counts
/// nothing twice. A counter another client broke stops it before any
/// write (a script keeps what it wrote before failing); and the writes
/// Redis never refuses for want of memory (`XACK`, `XDEL`) come before the
/// one it may (`INCRBY`), which it then lets through.
const ACKNOWLEDGE: &str = r"
local counted = redis.call('GET', KEYS[4])
if counted and not tonumber(counted) then
  return redis.error_reply('BADCOUNTER ' .. KEYS[4] .. ' holds no number')
end
local entered = 0
for i = 5, #ARGV, 2 do
  if redis.call('XACK', KEYS[3], ARGV[4], ARGV[i]) == 1 then
    entered = entered + tonumber(ARGV[i + 1])
  end
  redis.call('XDEL', KEYS[3], ARGV[i])
end
return redis.call('INCRBY', KEYS[4], entered)";

/// Takes a settings change off the config stream while the lease is this
/// processor's (after `lease::FENCE`): KEYS[3] config stream; ARGV[4]
/// group, ARGV[5] entry id, ARGV[6] how long its edge waits, ms. Returns 0
/// when its edge had withdrawn it already, 1 when this call removed it in
/// time, 2 when it did but too late (its edge has given up). Both times are
/// Redis's own (the id's and `TIME`): no two hosts' clocks are compared.
const TAKE_CHANGE: &str = r"
redis.call('XACK', KEYS[3], ARGV[4], ARGV[5])
if redis.call('XDEL', KEYS[3], ARGV[5]) == 0 then return 0 end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local added_ms = tonumber(string.match(ARGV[5], '^(%d+)')) or 0
if now_ms > added_ms + tonumber(ARGV[6]) then return 2 end
return 1";

/// Removes consumers of a group but one while they hold nothing — checked
/// and removed at once, so a batch handed to one in between (a paused
/// processor's blocked read) is never dropped with it: KEYS[1] stream;
/// ARGV[1] group, ARGV[2] the consumer kept, ARGV[3] `1` to remove them
/// whatever they hold, then the names.
const FORGET: &str = r"
local gone = 0
for i = 4, #ARGV do
  local name = ARGV[i]
  if name ~= ARGV[2] and (ARGV[3] == '1'
      or #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, name) == 0) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    gone = gone + 1
  end
end
return gone";

/// The consumer's fenced scripts.
struct Scripts {
    acknowledge: redis::Script,
    take_change: redis::Script,
}

/// One event as the ingest stream carries it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Carried<'a> {
    id: &'a str,
    created_at: f64,
    deadline_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    work_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

/// The same, read back.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Received {
    id: String,
    created_at: f64,
    deadline_ms: u64,
    work_ms: Option<f64>,
    producer: Option<String>,
    payload: Option<Box<RawValue>>,
}

fn encode(events: &[Event], clock: &WallClock) -> Vec<u8> {
    let carried: Vec<Carried<'_>> = events
        .iter()
        .map(|event| Carried {
            id: &event.id,
            created_at: clock.epoch_ms(event.created),
            deadline_ms: u64::try_from(event.deadline.as_millis()).unwrap_or(u64::MAX),
            work_ms: event.work.map(|w| w.as_secs_f64() * 1000.0),
            producer: event.producer.as_deref(),
            payload: event.payload.as_deref(),
        })
        .collect();
    // Strings, numbers and already-valid JSON: serialising cannot fail.
    serde_json::to_vec(&carried).unwrap_or_default()
}

/// The events of a batch, as the edge validated them — checked again, for
/// any client of Redis may have written the entry: a field out of range
/// makes the whole entry malformed (an hour of work, say, would hold a
/// worker; a work of 1e300 ms cannot even be a `Duration`).
fn decode(json: &[u8], clock: &WallClock) -> Result<Vec<Event>, String> {
    let received: Vec<Received> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if received.len() > MAX_BATCH {
        return Err(format!("{} events, at most {MAX_BATCH}", received.len()));
    }
    let now = Instant::now();
    received
        .into_iter()
        .map(|r| r.into_event(now, clock))
        .collect()
}

impl Received {
    /// The event, if each field lies where an edge would have let it. A
    /// `createdAt` this process cannot place (before its clock's range) is
    /// long expired: it is taken as created one deadline ago, so it is
    /// judged `expired` at once.
    fn into_event(self, now: Instant, clock: &WallClock) -> Result<Event, String> {
        let within = |ms: f64| (0.0..=MAX_MS).contains(&ms);
        if self.deadline_ms == 0 || !within(self.deadline_ms as f64) {
            return Err(format!("deadlineMs {} out of range", self.deadline_ms));
        }
        if let Some(ms) = self.work_ms.filter(|ms| !within(*ms)) {
            return Err(format!("workMs {ms} out of range"));
        }
        if self.id.is_empty() || self.id.chars().count() > MAX_ID_CHARS {
            return Err("id out of range".into());
        }
        if let Some(producer) = &self.producer {
            check_producer(producer)?;
        }
        // The edge allowed a minute ahead by its clock; this one may be
        // behind it, so only what no clock explains is refused.
        if self.created_at.is_nan() || self.created_at < 0.0 {
            return Err(format!("createdAt {} before the epoch", self.created_at));
        }
        if self.created_at > clock.epoch_ms(now) + MAX_MS {
            return Err(format!("createdAt {} in the future", self.created_at));
        }
        let deadline = Duration::from_millis(self.deadline_ms);
        let created = clock
            .instant_at(self.created_at)
            .or_else(|| now.checked_sub(deadline))
            .unwrap_or(now);
        Ok(Event {
            id: self.id,
            source: Source::Ingest,
            created,
            arrived: now,
            deadline,
            work: self.work_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0)),
            payload: self.payload,
            producer: self.producer.map(String::into_boxed_str),
        })
    }
}

/// Why an edge could not take a batch: the answer is 503 with `Retry-After`.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Redis cannot be reached (or did not answer): nothing was taken.
    Unreachable(String),
    /// [`MAX_WAITING_BATCHES`] wait already: the processor is away or behind.
    Backlog,
    /// A settings change had no answer within [`SETTINGS_WAIT`]; it was
    /// withdrawn and will not be applied later.
    NoAnswer,
    /// The change went into Redis, then the edge lost sight of it (no
    /// answer from a processor that took it, or Redis failing the edge's
    /// wait): it may have been applied.
    Unanswered,
}

/// What the processor said to a settings change.
#[derive(Debug)]
pub(crate) enum SettingsAnswer {
    /// Applied: the processor's settings now, as JSON.
    Applied(Vec<u8>),
    /// Refused, and why.
    Refused(String),
}

/// The processor's answer to a change, as pushed to its reply list.
#[derive(Serialize, Deserialize)]
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Taken too late: not applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    expired: bool,
}

/// How long an edge waits for the processor to apply a change; a change
/// the processor takes after this (by Redis's clock) is not applied.
const SETTINGS_WAIT: Duration = Duration::from_secs(3);
/// How long an edge waits more for the answer to a change the processor
/// took just as the edge gave up on it.
const TAKEN_WAIT: Duration = Duration::from_secs(1);
/// Changes the config stream keeps (each is removed once answered).
const CONFIG_KEPT: u64 = 1000;
/// How long an answer nobody took stays in Redis.
const REPLY_TTL_MS: u64 = 10_000;

/// An edge's side: appends validated batches to the ingest stream.
pub(crate) struct Forwarder {
    client: redis::Client,
    idle: Mutex<Vec<redis::Connection>>,
    keys: Keys,
    /// The feed's link: while it is down, a batch is refused at once
    /// instead of each request waiting for a connection to fail.
    link: Arc<Link>,
    append: redis::Script,
    clock: WallClock,
    /// Events this edge put in the stream, and batches it refused.
    forwarded: AtomicU64,
    refused: AtomicU64,
}

impl Forwarder {
    pub fn new(
        url: &str,
        keys: Keys,
        link: Arc<Link>,
        clock: WallClock,
    ) -> redis::RedisResult<Self> {
        Ok(Forwarder {
            client: redis::Client::open(url)?,
            idle: Mutex::new(Vec::new()),
            keys,
            link,
            append: redis::Script::new(APPEND),
            clock,
            forwarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Appends `events` as one batch, or says why not. Called on a
    /// connection's thread; no lock is held while Redis is asked.
    pub fn forward(&self, events: &[Event]) -> Result<(), Refused> {
        let result = self.append_batch(events);
        match &result {
            Ok(()) => self
                .forwarded
                .fetch_add(events.len() as u64, Ordering::Relaxed),
            Err(_) => self.refused.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), Refused> {
        if !self.link.is_connected() {
            return Err(Refused::Unreachable(
                self.link
                    .last_error()
                    .unwrap_or_else(|| "not connected yet".into()),
            ));
        }
        let mut connection = self
            .take()
            .map_err(|e| Refused::Unreachable(e.to_string()))?;
        let appended: i64 = self
            .append
            .key(&self.keys.ingest)
            .key(&self.keys.accepted)
            .arg(MAX_WAITING_BATCHES)
            .arg(encode(events, &self.clock))
            .arg(events.len())
            .invoke(&mut connection)
            .map_err(|e| Refused::Unreachable(e.to_string()))?;
        self.give_back(connection);
        if appended < 0 {
            return Err(Refused::Backlog);
        }
        Ok(())
    }

    fn take(&self) -> redis::RedisResult<redis::Connection> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(connection) => Ok(connection),
            None => super::connect(&self.client, COMMAND_TIMEOUT),
        }
    }

    fn give_back(&self, connection: redis::Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    /// Forwards a validated settings change and waits for the processor's
    /// answer. The connection is this call's alone for the wait.
    pub fn change_settings(&self, change: &[u8]) -> Result<SettingsAnswer, Refused> {
        if !self.link.is_connected() {
            return Err(Refused::Unreachable(
                self.link
                    .last_error()
                    .unwrap_or_else(|| "not connected yet".into()),
            ));
        }
        let unreachable = |e: redis::RedisError| Refused::Unreachable(e.to_string());
        let mut connection = self.take().map_err(unreachable)?;
        let reply = format!("{}:{}", self.keys.config_replies, uuid::Uuid::new_v4());
        let id: String = redis::cmd("XADD")
            .arg(&self.keys.config)
            .arg("MAXLEN")
            .arg("~")
            .arg(CONFIG_KEPT)
            .arg("*")
            .arg("change")
            .arg(change)
            .arg("reply")
            .arg(&reply)
            .query(&mut connection)
            .map_err(unreachable)?;
        // From here the change is in Redis: a failure may hide an answer.
        let lost = |_| Refused::Unanswered;
        let wait = |connection: &mut redis::Connection, for_: Duration| {
            redis::cmd("BLPOP")
                .arg(&reply)
                .arg(for_.as_secs_f64())
                .query::<Option<(String, Vec<u8>)>>(connection)
                .map_err(lost)
        };
        let mut answer = wait(&mut connection, SETTINGS_WAIT)?;
        if answer.is_none() {
            // Withdrawn if this deletes it; if not, the processor took it
            // first and its answer follows at once.
            let withdrawn: u64 = redis::cmd("XDEL")
                .arg(&self.keys.config)
                .arg(&id)
                .query(&mut connection)
                .map_err(lost)?;
            if withdrawn == 1 {
                self.give_back(connection);
                return Err(Refused::NoAnswer);
            }
            answer = wait(&mut connection, TAKEN_WAIT)?;
        }
        self.give_back(connection);
        let Some((_, answer)) = answer else {
            return Err(Refused::Unanswered);
        };
        match serde_json::from_slice::<Answer>(&answer) {
            Ok(Answer { expired: true, .. }) => Err(Refused::NoAnswer),
            Ok(Answer {
                settings: Some(settings),
                ..
            }) => Ok(SettingsAnswer::Applied(settings.get().as_bytes().to_vec())),
            Ok(Answer { error, .. }) => {
                Ok(SettingsAnswer::Refused(error.unwrap_or_else(|| {
                    "the processor refused the change".into()
                })))
            }
            Err(_) => Err(Refused::Unanswered),
        }
    }

    /// `cluster.ingest` on an edge.
    pub fn state(&self) -> IngestState {
        IngestState {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            ..IngestState::default()
        }
    }
}

/// The processor's counts of the ingest link, shared with its stats.
#[derive(Debug, Default)]
pub(crate) struct IngestCounts {
    entered: AtomicU64,
    malformed: AtomicU64,
    accepted_by_edges: AtomicU64,
    entered_by_processors: AtomicU64,
}

impl IngestCounts {
    /// `cluster.ingest` on a processor.
    pub fn state(&self) -> IngestState {
        let accepted = self.accepted_by_edges.load(Ordering::Relaxed);
        let entered_all = self.entered_by_processors.load(Ordering::Relaxed);
        IngestState {
            entered: self.entered.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            accepted,
            entered_all,
            waiting: accepted.saturating_sub(entered_all),
            ..IngestState::default()
        }
    }
}

/// Applies a settings change (JSON) on the processor and returns the
/// settings then in force (JSON), or why the change was refused.
pub(crate) type ApplySettings = Box<dyn Fn(&[u8]) -> Result<String, String> + Send>;

/// The processor's `ingest-stream` thread.
pub(crate) struct Consumer {
    pub intake: Intake,
    pub redis: Redis,
    pub keys: Keys,
    /// This processor's name in the group: its run's epoch.
    pub name: String,
    /// Failed should the thread panic: posted events would go nowhere.
    pub health: Arc<Heartbeats>,
    pub counts: Arc<IngestCounts>,
    pub clock: WallClock,
    /// Closed when the processor stops.
    pub stop: Receiver<()>,
    /// What the journal hears of odd entries, at most every 10 s.
    pub notes: RateLimit,
    /// Applies a settings change (JSON) and returns the settings then in
    /// force (JSON), or why it was refused.
    pub settings: ApplySettings,
    /// The processor lease, which fences every acknowledgement.
    pub lease: Arc<Lease>,
}

/// Where the consumer is.
#[derive(Default)]
struct Progress {
    /// The group exists and what other (dead) consumers held is claimed.
    joined: bool,
    /// Entries entered but not yet acknowledged, with their event counts.
    unacknowledged: Vec<(String, u64)>,
    /// The same ids, to recognise one read again.
    entered: HashSet<String>,
    next_counters: Option<Instant>,
}

impl Consumer {
    /// Starts the thread; it ends when the stop channel closes. Should it
    /// panic, the processor is marked not live: events posted at edges
    /// would wait for it in vain.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        let health = Arc::clone(&self.health);
        thread::Builder::new()
            .name("ingest-stream".into())
            .spawn(move || {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run())).is_err() {
                    log::error!("the ingest-stream thread panicked: events posted at edges wait");
                    health.fail("ingest-stream thread panicked".into());
                }
            })
    }

    fn run(mut self) {
        let mut progress = Progress::default();
        let scripts = Scripts {
            acknowledge: redis::Script::new(&format!("{FENCE}{ACKNOWLEDGE}")),
            take_change: redis::Script::new(&format!("{FENCE}{TAKE_CHANGE}")),
        };
        while self.stop.try_recv() != Err(TryRecvError::Disconnected) {
            match self.turn(&mut progress, &scripts) {
                Ok(()) => self.redis.succeeded(),
                // Entered but not counted: the active processor claims
                // the batches and enters them; this one stops.
                Err(e) if self.lease.refused(&e) => break,
                Err(e) => {
                    self.redis.failed("reading the ingest stream", &e);
                    progress.joined = false;
                    if self.stop.recv_timeout(self.redis.pause()) != Err(RecvTimeoutError::Timeout)
                    {
                        break;
                    }
                }
            }
        }
    }

    fn turn(&mut self, progress: &mut Progress, scripts: &Scripts) -> redis::RedisResult<()> {
        if !progress.joined {
            self.join(progress)?;
        }
        // What an earlier turn entered is acknowledged before anything new
        // is read: while acknowledging fails, the batches held here do not
        // grow.
        self.acknowledge(progress, &scripts.acknowledge)?;
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.ingest)
            .arg(&self.keys.config)
            .arg(">")
            .arg(">")
            .query(self.redis.connected()?)?;
        let read = reply::read(&reply, &self.keys.ingest);
        self.note_unreadable(read.unreadable);
        for entry in &read.entries {
            self.enter(progress, entry);
        }
        for change in &reply::read(&reply, &self.keys.config).entries {
            self.answer_change(change, &scripts.take_change)?;
        }
        self.acknowledge(progress, &scripts.acknowledge)?;
        self.once_a_second(progress)
    }

    /// Makes the group if it is new (from the stream's start, so batches
    /// accepted before any processor ran are entered), then takes over
    /// what any consumer read but did not acknowledge, this one's included.
    fn join(&mut self, progress: &mut Progress) -> redis::RedisResult<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.ingest)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query(self.redis.connected()?);
        // Out of memory, Redis refuses even a group that exists; the reads
        // that follow say whether it does.
        if let Err(e) = created
            && !matches!(e.code(), Some("BUSYGROUP" | "OOM"))
        {
            return Err(e);
        }
        // Changes made before this processor ran are not applied: the
        // edge that sent one has answered it already.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.config)
            .arg(GROUP)
            .arg("$")
            .arg("MKSTREAM")
            .query(self.redis.connected()?);
        if let Err(e) = created
            && !matches!(e.code(), Some("BUSYGROUP" | "OOM"))
        {
            return Err(e);
        }
        self.claim(progress)?;
        // What the config group's old consumers held was answered 504 long
        // ago: they go with it. The ingest group's hold nothing now.
        let (ingest, config) = (self.keys.ingest.clone(), self.keys.config.clone());
        let forget = redis::Script::new(FORGET);
        self.forget_other_consumers(&ingest, false, &forget)?;
        self.forget_other_consumers(&config, true, &forget)?;
        progress.joined = true;
        Ok(())
    }

    /// Removes the group's consumers but this one: every processor run
    /// joins under its own name, and a deployment restarted for years would
    /// otherwise list each. One still holding entries stays, unless
    /// `with_pending` (its entries are then forgotten by the group); the
    /// check and the removal are one script ([`FORGET`]).
    fn forget_other_consumers(
        &mut self,
        stream: &str,
        with_pending: bool,
        forget: &redis::Script,
    ) -> redis::RedisResult<()> {
        let connection = self.redis.connected()?;
        let consumers: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(GROUP)
            .query(connection)?;
        // As bytes: a name another client gave is passed back as it is.
        let names: Vec<Vec<u8>> = consumers
            .iter()
            .filter_map(|c| redis::from_redis_value(c.get("name")?.clone()).ok())
            .collect();
        let mut call = forget.key(stream);
        call.arg(GROUP)
            .arg(&self.name)
            .arg(if with_pending { "1" } else { "0" });
        for name in &names {
            call.arg(name.as_slice());
        }
        let _: u64 = call.invoke(connection)?;
        Ok(())
    }

    /// Takes over what any consumer read but did not acknowledge, this
    /// one's included: at joining, what a dead processor left; then once a
    /// second, what a paused one read after it lost the lease (its blocked
    /// `XREADGROUP` may be answered while it sleeps), which no other read
    /// would ever deliver again. Only the lease holder consumes, so nothing
    /// pending belongs to a live processor.
    fn claim(&mut self, progress: &mut Progress) -> redis::RedisResult<()> {
        let mut cursor = "0-0".to_owned();
        loop {
            let claimed: redis::Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.keys.ingest)
                .arg(GROUP)
                .arg(&self.name)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(READ_COUNT)
                .query(self.redis.connected()?)?;
            let (next, claimed) = reply::claimed(&claimed);
            self.note_unreadable(claimed.unreadable);
            for entry in &claimed.entries {
                self.enter(progress, entry);
            }
            if next == "0-0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Enters one batch into the intake, unless this process already did.
    fn enter(&self, progress: &mut Progress, entry: &Entry) {
        if progress.entered.contains(&entry.id) {
            return;
        }
        let events = match entry.field("events") {
            Some(json) => decode(json, &self.clock),
            None => Err("no events field".into()),
        };
        let count = match events {
            Ok(events) => {
                let count = events.len() as u64;
                for event in events {
                    self.intake.submit(event);
                }
                self.counts.entered.fetch_add(count, Ordering::Relaxed);
                count
            }
            Err(why) => {
                // Not a batch an edge of this version wrote: taken out of
                // the stream and counted, so it cannot block the ones
                // behind it. The events it says it holds are counted out
                // as an edge counted them in, but never more than a batch
                // may hold: whoever wrote it chose that number.
                self.counts.malformed.fetch_add(1, Ordering::Relaxed);
                if self.notes.allow() {
                    log::warn!(
                        "ingest stream entry {} is not a batch of events ({why}); removed (counted in cluster.ingest.malformed)",
                        entry.id
                    );
                }
                entry
                    .field("count")
                    .and_then(|c| String::from_utf8_lossy(c).parse::<u64>().ok())
                    .map_or(0, |declared| declared.min(MAX_BATCH as u64))
            }
        };
        progress.entered.insert(entry.id.clone());
        progress.unacknowledged.push((entry.id.clone(), count));
    }

    fn acknowledge(
        &mut self,
        progress: &mut Progress,
        script: &redis::Script,
    ) -> redis::RedisResult<()> {
        if progress.unacknowledged.is_empty() {
            return Ok(());
        }
        let mut call = self.lease.fenced(script, &self.keys);
        call.key(&self.keys.ingest)
            .key(&self.keys.entered)
            .arg(GROUP);
        for (id, events) in &progress.unacknowledged {
            call.arg(id).arg(*events);
        }
        let _: i64 = call.invoke(self.redis.connected()?)?;
        for (id, _) in progress.unacknowledged.drain(..) {
            progress.entered.remove(&id);
        }
        Ok(())
    }

    /// Takes one settings change made at an edge off the stream and, if
    /// its edge still waits, applies it and pushes the answer where that
    /// edge waits. Taking it is fenced, and is a race with the edge giving
    /// up: whichever deletes the entry first decides, so a change is never
    /// applied after its edge answered 504.
    fn answer_change(&mut self, change: &Entry, take: &redis::Script) -> redis::RedisResult<()> {
        let mut call = self.lease.fenced(take, &self.keys);
        call.key(&self.keys.config)
            .arg(GROUP)
            .arg(&change.id)
            .arg(SETTINGS_WAIT.as_millis() as u64);
        let taken: i64 = call.invoke(self.redis.connected()?)?;
        // Only a list an edge named: a reply key is never another key.
        let reply = change
            .field("reply")
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .filter(|r| r.starts_with(&format!("{}:", self.keys.config_replies)));
        let (Some(reply), Some(json)) = (reply, change.field("change")) else {
            return Ok(());
        };
        let answer = match taken {
            0 => return Ok(()),
            // Its edge gave up (or died): told it was not applied, in case
            // it still listens.
            2 => Answer {
                settings: None,
                error: None,
                expired: true,
            },
            _ => match (self.settings)(json) {
                Ok(settings) => Answer {
                    settings: RawValue::from_string(settings).ok(),
                    error: None,
                    expired: false,
                },
                Err(error) => Answer {
                    settings: None,
                    error: Some(error),
                    expired: false,
                },
            },
        };
        let answer = serde_json::to_vec(&answer).unwrap_or_default();
        redis::pipe()
            .cmd("RPUSH")
            .arg(&reply)
            .arg(answer)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&reply)
            .arg(REPLY_TTL_MS)
            .ignore()
            .query::<()>(self.redis.connected()?)
    }

    /// Entries whose very shape this version cannot read cannot be
    /// acknowledged by id either: they stay, counted and warned of.
    fn note_unreadable(&self, count: usize) {
        if count == 0 {
            return;
        }
        self.counts
            .malformed
            .fetch_add(count as u64, Ordering::Relaxed);
        if self.notes.allow() {
            log::warn!("skipped {count} ingest stream entries this version cannot read");
        }
    }

    /// The deployment's counters, for this processor's stats, and what
    /// other consumers left, once a second.
    fn once_a_second(&mut self, progress: &mut Progress) -> redis::RedisResult<()> {
        if progress
            .next_counters
            .is_some_and(|next| Instant::now() < next)
        {
            return Ok(());
        }
        self.claim(progress)?;
        let (accepted, entered): (Option<u64>, Option<u64>) = redis::cmd("MGET")
            .arg(&self.keys.accepted)
            .arg(&self.keys.entered)
            .query(self.redis.connected()?)?;
        self.counts
            .accepted_by_edges
            .store(accepted.unwrap_or(0), Ordering::Relaxed);
        self.counts
            .entered_by_processors
            .store(entered.unwrap_or(0), Ordering::Relaxed);
        progress.next_counters = Some(Instant::now() + COUNTERS_EVERY);
        Ok(())
    }
}
