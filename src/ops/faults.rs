//! Faults inside the daemon: what a panicking thread costs, and who hears of it.
//!
//! Owns: the per-role panic counters ([`Faults`]), the catch around each
//! worker's event and each client writer ([`Faults::catch`]), the guard that
//! runs the stages the daemon cannot live without ([`Faults::run_essential`]),
//! and the process-wide choice of what an essential stage's death does
//! ([`exit_when_an_essential_stage_dies`]). Reads and writes no channel.
//!
//! The rule is *never a silently dead stage*:
//! - a worker's panic costs the event it was judging, which gets the verdict
//!   `dropped/panicked`; the worker carries on with the next event;
//! - a writer's panic costs that one client, which is disconnected;
//! - the generator, the hub and the fan-out have no stand-in (the hub owns
//!   `seq`, the fan-out the subscriber list): their panic marks the daemon not
//!   live and, in the binary, ends the process with [`EXIT_STAGE_DIED`] so
//!   systemd starts a fresh one.
//!
//! Must not know: what the stages do.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::thread;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::ops::health::Heartbeats;

/// Exit status of the binary when an essential stage died (`EX_SOFTWARE`).
pub const EXIT_STAGE_DIED: i32 = 70;

/// Exit status asked for by the binary; 0 means "do not exit" (library use).
static EXIT_ON_ESSENTIAL_DEATH: AtomicI32 = AtomicI32::new(0);

/// Makes the death of an essential stage end the process with
/// [`EXIT_STAGE_DIED`]. The binary calls this; a program embedding a
/// [`Server`](crate::Server) does not, and instead sees the server report
/// itself not live (`/healthz` answers 503 naming the stage).
pub fn exit_when_an_essential_stage_dies() {
    EXIT_ON_ESSENTIAL_DEATH.store(EXIT_STAGE_DIED, Ordering::Relaxed);
}

/// The kinds of thread whose panics are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// A worker judging events (`worker-N`).
    Worker,
    /// A client's writer thread (`ws-N`, `sse-N`).
    Writer,
    /// The event generator.
    Generator,
    /// The hub (seq, serialisation, stats).
    Hub,
    /// The fan-out to client queues.
    Fanout,
}

impl Role {
    const ALL: [Role; 5] = [
        Role::Worker,
        Role::Writer,
        Role::Generator,
        Role::Hub,
        Role::Fanout,
    ];

    /// The role's name in logs, stats and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Writer => "writer",
            Role::Generator => "generator",
            Role::Hub => "hub",
            Role::Fanout => "fanout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Panics caught since start, by role: `threads.panics` in the stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicCounts {
    /// In workers (each cost one event, judged `dropped/panicked`).
    pub worker: u64,
    /// In client writers (each cost one client).
    pub writer: u64,
    /// In the generator.
    pub generator: u64,
    /// In the hub.
    pub hub: u64,
    /// In the fan-out.
    pub fanout: u64,
}

impl PanicCounts {
    /// `(role, count)` for every role, in a fixed order.
    pub fn by_role(&self) -> [(Role, u64); 5] {
        Role::ALL.map(|role| (role, self.of(role)))
    }

    /// The count for `role`.
    pub fn of(&self, role: Role) -> u64 {
        match role {
            Role::Worker => self.worker,
            Role::Writer => self.writer,
            Role::Generator => self.generator,
            Role::Hub => self.hub,
            Role::Fanout => self.fanout,
        }
    }
}

/// The daemon's fault accounting, shared by every thread that can panic.
#[derive(Debug)]
pub struct Faults {
    panics: [AtomicU64; 5],
    health: Arc<Heartbeats>,
    /// The role told to panic once (`--test-panic`), and whether it still will.
    injected: Option<Role>,
    armed: AtomicBool,
}

impl Faults {
    /// No panics yet; `inject` names a role that will panic once, for tests.
    pub fn new(health: Arc<Heartbeats>, inject: Option<Role>) -> Self {
        Faults {
            panics: Default::default(),
            health,
            injected: inject,
            armed: AtomicBool::new(inject.is_some()),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> PanicCounts {
        let n = |role: Role| self.panics[role.index()].load(Ordering::Relaxed);
        PanicCounts {
            worker: n(Role::Worker),
            writer: n(Role::Writer),
            generator: n(Role::Generator),
            hub: n(Role::Hub),
            fanout: n(Role::Fanout),
        }
    }

    /// Panics here, once, when `--test-panic` named `role`: the way tests
    /// reach the fault paths of a real daemon.
    pub fn injection_point(&self, role: Role) {
        if self.injected == Some(role) && self.armed.swap(false, Ordering::Relaxed) {
            panic!("injected panic (--test-panic {})", role.name());
        }
    }

    /// Runs `body`; if it panics, logs and counts the panic under `role` and
    /// returns `None`. The caller decides what the loss costs.
    pub fn catch<T>(&self, role: Role, body: impl FnOnce() -> T) -> Option<T> {
        match panic::catch_unwind(AssertUnwindSafe(body)) {
            Ok(value) => Some(value),
            Err(payload) => {
                self.record(role, payload.as_ref());
                None
            }
        }
    }

    /// Runs the body of a stage nothing can stand in for. If it panics, the
    /// panic is logged and counted, the daemon is marked not live (`/healthz`
    /// and the watchdog say so), and the binary exits with [`EXIT_STAGE_DIED`].
    pub fn run_essential(&self, role: Role, body: impl FnOnce()) {
        if self.catch(role, body).is_some() {
            return;
        }
        self.health.fail(format!("{} thread panicked", role.name()));
        let code = EXIT_ON_ESSENTIAL_DEATH.load(Ordering::Relaxed);
        if code != 0 {
            log::error!(
                "the {} stage is gone and nothing can stand in for it: exiting with status {code} so the service manager restarts the daemon",
                role.name()
            );
            std::process::exit(code);
        }
        log::error!(
            "the {} stage is gone: the server no longer reports itself live",
            role.name()
        );
    }

    fn record(&self, role: Role, payload: &(dyn Any + Send)) {
        self.panics[role.index()].fetch_add(1, Ordering::Relaxed);
        let name = thread::current().name().unwrap_or("unnamed").to_owned();
        log::error!(
            "{} thread {name} panicked: {}",
            role.name(),
            panic_message(payload)
        );
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(inject: Option<Role>) -> Faults {
        Faults::new(Arc::new(Heartbeats::new()), inject)
    }

    #[test]
    fn a_caught_panic_is_counted_under_its_role() {
        let faults = faults(None);
        assert_eq!(faults.catch(Role::Worker, || 7), Some(7));
        assert_eq!(faults.catch(Role::Worker, || panic!("boom")), None::<()>);
        assert_eq!(
            faults.counts(),
            PanicCounts {
                worker: 1,
                ..PanicCounts::default()
            }
        );
    }

    #[test]
    fn an_injected_panic_fires_once_and_only_for_its_role() {
        let faults = faults(Some(Role::Writer));
        faults.injection_point(Role::Worker);
        assert_eq!(
            faults.catch(Role::Writer, || faults.injection_point(Role::Writer)),
            None
        );
        faults.injection_point(Role::Writer);
        assert_eq!(faults.counts().writer, 1);
    }

    #[test]
    fn a_dead_essential_stage_makes_the_daemon_not_live_without_exiting_a_library() {
        let faults = faults(None);
        faults.run_essential(Role::Hub, || panic!("boom"));
        let reason = faults.health.live().expect_err("not live");
        assert!(reason.contains("hub"), "{reason}");
        assert_eq!(faults.counts().hub, 1);
    }

    #[test]
    fn every_role_has_a_distinct_counter() {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["worker", "writer", "generator", "hub", "fanout"]);
        assert!(Role::ALL.iter().enumerate().all(|(i, r)| r.index() == i));
    }
}
