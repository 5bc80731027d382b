//! The processor lease: of the processors sharing a stream prefix, the one
//! holding `<prefix>:leader` is active; the others wait as standbys.
//!
//! Owns: the lease's standing in this process ([`Lease`]) and the `lease`
//! thread ([`LeaseKeeper`]) that takes it (`SET NX PX`), renews it every
//! quarter of its TTL, and gives it back once the publisher wrote its last
//! outcome. A standby takes the lease within a TTL of the active one's
//! death (plus a poll of an eighth of it), then starts the producers that
//! were waiting (generator, ingest consumer).
//!
//! Fencing is in Redis, not before the call: every outcome and stats entry
//! is appended, and every ingest batch acknowledged, by a Lua script that
//! first checks the lease is still this process's ([`FENCE`]). A processor
//! paused past its TTL (a stop signal, a stalled VM) therefore writes
//! nothing once it wakes: its first write is refused with `NOTLEADER`, the
//! lease counts as lost, and the daemon stops and exits non-zero, so the
//! service manager starts it again as a standby.
//!
//! Reads and writes Redis; writes the health (standby, lost) and nothing
//! else. Must not know: outcomes, clients.

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Deserialize;

use super::reply;
use super::{Keys, Redis, newest_entry};
use crate::config::Settings;
use crate::ops::health::Heartbeats;
use crate::pipeline::stats::LeaseState;

/// The check every fenced script starts with: KEYS[1] the lease, KEYS[2]
/// its term (how many times a processor took it); ARGV[1] this process's
/// id, ARGV[2] the TTL in ms, ARGV[3] the term it took the lease in (the
/// script's own keys and arguments follow). A lease nobody holds is taken
/// again on the spot only if nobody took it since this process did (the
/// term is still its own, or gone with Redis's data): a processor paused
/// through another's whole tenure must not come back. Redis runs a script
/// alone, so nothing can take the lease between this check and the writes
/// after it.
pub(crate) const FENCE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then
  local term = redis.call('GET', KEYS[2])
  if holder or (term and term ~= ARGV[3]) then
    return redis.error_reply('NOTLEADER this processor no longer holds the lease')
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3])
end
";

/// The error code a fenced script answers once the lease is another's.
pub(crate) const NOT_LEADER: &str = "NOTLEADER";

/// Takes a free lease in a new term: KEYS[1] the lease, KEYS[2] its term;
/// ARGV[1] this process's id, ARGV[2] the TTL in ms. Returns the new term,
/// or the holder when it is not free.
const TAKE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return redis.call('GET', KEYS[1]) or ''";

/// Renews the lease (after [`FENCE`], which refuses a lease another took).
const RENEW: &str = r"
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1";

/// Gives the lease back if it is still this process's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Where this processor stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Waiting: another processor holds the lease (`None`: not known yet).
    Standby(Option<String>),
    Active,
    /// Another processor took it: this one stops.
    Lost(Option<String>),
}

/// This process's standing, shared by the lease thread, the publisher and
/// the ingest consumer, which report a write refused for want of it.
pub(crate) struct Lease {
    /// This process's id in the lease: its run's epoch.
    pub id: String,
    pub ttl: Duration,
    /// The term this process took the lease in (0: not yet).
    term: std::sync::atomic::AtomicU64,
    standing: Mutex<Standing>,
    health: Arc<Heartbeats>,
    /// Stops the daemon once the lease is lost.
    on_lost: Box<dyn Fn() + Send + Sync>,
}

impl Lease {
    /// A standby's standing; the daemon is not ready until it takes the lease.
    pub fn new(
        id: String,
        ttl: Duration,
        health: Arc<Heartbeats>,
        on_lost: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        health.set_standby(Some("a standby processor: waiting for the lease".into()));
        Lease {
            id,
            ttl,
            term: Default::default(),
            standing: Mutex::new(Standing::Standby(None)),
            health,
            on_lost,
        }
    }

    pub fn standing(&self) -> Standing {
        self.standing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_active(&self) -> bool {
        self.standing() == Standing::Active
    }

    fn set(&self, standing: Standing) {
        *self.standing.lock().unwrap_or_else(|e| e.into_inner()) = standing;
    }

    fn waiting_behind(&self, holder: Option<String>) {
        let reason = match &holder {
            Some(holder) => format!("a standby processor: {holder} holds the lease"),
            None => "a standby processor: waiting for the lease".into(),
        };
        self.health.set_standby(Some(reason));
        self.set(Standing::Standby(holder));
    }

    fn activate(&self, term: u64) {
        self.term.store(term, std::sync::atomic::Ordering::Relaxed);
        self.set(Standing::Active);
        self.health.set_standby(None);
    }

    /// Another processor holds the lease: this one is no longer live and
    /// stops. Called by whichever thread finds out first; acts once.
    pub fn lose(&self, holder: Option<String>) {
        {
            let mut standing = self.standing.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*standing, Standing::Lost(_)) {
                return;
            }
            *standing = Standing::Lost(holder.clone());
        }
        let by = holder.map_or_else(|| "another processor".into(), |h| format!("processor {h}"));
        log::error!("{by} took the processor lease: this processor stops and writes nothing more");
        self.health
            .fail(format!("lost the processor lease to {by}"));
        (self.on_lost)();
    }

    /// Whether `error` is a fenced write refused because the lease is
    /// another's; if so, the lease counts as lost.
    pub fn refused(&self, error: &redis::RedisError) -> bool {
        let refused = error.code() == Some(NOT_LEADER);
        if refused {
            self.lose(None);
        }
        refused
    }

    /// Starts a fenced call of `script`: the lease key and this process's
    /// id and TTL; the script's own keys and arguments follow.
    pub fn fenced<'a>(
        &self,
        script: &'a redis::Script,
        keys: &Keys,
    ) -> redis::ScriptInvocation<'a> {
        let mut call = script.key(&keys.leader);
        call.key(&keys.leader_term)
            .arg(&self.id)
            .arg(self.ttl.as_millis() as u64)
            .arg(self.term.load(std::sync::atomic::Ordering::Relaxed));
        call
    }

    /// `cluster.lease` in the stats.
    pub fn state(&self) -> LeaseState {
        let (state, holder) = match self.standing() {
            Standing::Active => ("active", Some(self.id.clone())),
            Standing::Standby(holder) => ("standby", holder),
            Standing::Lost(holder) => ("lost", holder),
        };
        LeaseState {
            state: state.into(),
            holder,
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }
}

/// What a standby starts once it holds the lease, given the live settings
/// the last active processor published: the threads that end when the
/// daemon stops, which the lease thread joins.
pub(crate) type TakeOver =
    Box<dyn FnOnce(Option<Settings>) -> io::Result<Vec<JoinHandle<()>>> + Send>;

/// What an attempt to take the lease found.
enum Taken {
    /// Taken, in this term.
    Term(u64),
    /// Another processor holds it.
    HeldBy(String),
}

/// The `lease` thread.
pub(crate) struct LeaseKeeper {
    pub lease: Arc<Lease>,
    pub redis: Redis,
    pub keys: Keys,
    /// Closed when the daemon stops: a standby stops waiting.
    pub stop: Receiver<()>,
    /// Disconnected when the publisher ended: the lease is given back.
    pub published: Receiver<()>,
    pub take_over: TakeOver,
}

impl LeaseKeeper {
    /// Starts the thread; it ends when the daemon stops and, once active,
    /// the publisher has ended.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("lease".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        // A renewal that waits longer than half the lease comes too late:
        // better to fail it, back off and try again within the TTL.
        self.redis.hurry(self.lease.ttl / 2);
        let Some(term) = self.wait_for_the_lease() else {
            return;
        };
        // Carried over only from a processor this one stood by for: one
        // restarted with new flags after a clean stop keeps its flags.
        let settings = match self.lease.standing() {
            Standing::Standby(Some(holder)) => self.last_settings(&holder),
            _ => None,
        };
        let carried = if settings.is_some() {
            ", carrying on with the live settings the last processor published"
        } else {
            ""
        };
        log::info!("took the processor lease (term {term}){carried}");
        self.lease.activate(term);
        let take_over = std::mem::replace(&mut self.take_over, Box::new(|_| Ok(Vec::new())));
        let producers = match take_over(settings) {
            Ok(producers) => producers,
            Err(e) => {
                log::error!("cannot start the producers after taking the lease: {e}");
                self.lease
                    .health
                    .fail(format!("cannot start the producers: {e}"));
                Vec::new()
            }
        };
        self.keep();
        for thread in producers {
            let _ = thread.join();
        }
    }

    /// Polls for the lease; its term, or `None` when the daemon stopped first.
    fn wait_for_the_lease(&mut self) -> Option<u64> {
        let poll = self.lease.ttl / 8;
        let take = redis::Script::new(TAKE);
        loop {
            match self.try_take(&take) {
                Ok(Taken::Term(term)) => return Some(term),
                Ok(Taken::HeldBy(holder)) => {
                    if self.lease.standing() != Standing::Standby(Some(holder.clone())) {
                        log::info!("standing by: processor {holder} holds the lease");
                    }
                    self.lease.waiting_behind(Some(holder));
                    self.redis.succeeded();
                }
                Err(e) => self.redis.failed("taking the processor lease", &e),
            }
            let wait = if self.redis.is_connected() {
                poll
            } else {
                self.redis.pause()
            };
            if self.stop.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                return None;
            }
        }
    }

    /// Takes the lease if it is free.
    fn try_take(&mut self, take: &redis::Script) -> redis::RedisResult<Taken> {
        let connection = self.redis.connected()?;
        let taken: redis::Value = take
            .key(&self.keys.leader)
            .key(&self.keys.leader_term)
            .arg(&self.lease.id)
            .arg(self.lease.ttl.as_millis() as u64)
            .invoke(connection)?;
        Ok(match taken {
            redis::Value::Int(term) => Taken::Term(term.max(1) as u64),
            other => Taken::HeldBy(redis::from_redis_value(other).unwrap_or_default()),
        })
    }

    /// Renews the lease every quarter TTL until the publisher ended, then
    /// gives it back, so a standby takes over at once rather than a TTL
    /// later.
    fn keep(&mut self) {
        let renew = redis::Script::new(&format!("{FENCE}{RENEW}"));
        let every = self.lease.ttl / 4;
        while self.published.recv_timeout(every) == Err(RecvTimeoutError::Timeout) {
            if !self.lease.is_active() {
                continue;
            }
            let renewed: redis::RedisResult<i64> = self
                .redis
                .connected()
                .and_then(|c| self.lease.fenced(&renew, &self.keys).invoke(c));
            match renewed {
                Ok(_) => self.redis.succeeded(),
                Err(e) if self.lease.refused(&e) => {}
                // The fence holds while the lease cannot be renewed.
                Err(e) => self.redis.failed("renewing the processor lease", &e),
            }
        }
        if self.lease.is_active() {
            let released: redis::RedisResult<i64> = self.redis.connected().and_then(|c| {
                redis::Script::new(RELEASE)
                    .key(&self.keys.leader)
                    .arg(&self.lease.id)
                    .invoke(c)
            });
            match released {
                Ok(_) => log::info!("gave the processor lease back"),
                Err(e) => log::warn!(
                    "could not give the processor lease back ({e}): a standby takes over when it expires"
                ),
            }
        }
    }

    /// The live settings `holder` published last: a standby carries on
    /// where the active one was, not from its own flags.
    fn last_settings(&mut self, holder: &str) -> Option<Settings> {
        let newest = (self.redis.connected()).and_then(|c| newest_entry(c, &self.keys.stats));
        let newest = match newest {
            Ok(newest) => newest,
            Err(e) => {
                log::warn!(
                    "cannot read the last processor's settings ({e}): starting from this one's flags"
                );
                return None;
            }
        };
        let entry = reply::range(&newest).entries.into_iter().next()?;
        if entry.field("epoch") != Some(holder.as_bytes()) {
            return None;
        }
        #[derive(Deserialize)]
        struct Published {
            config: Settings,
        }
        match serde_json::from_slice::<Published>(entry.field("json")?) {
            Ok(published) => Some(published.config),
            Err(e) => {
                log::warn!(
                    "the last processor's settings are unreadable ({e}): starting from this one's flags"
                );
                None
            }
        }
    }
}
