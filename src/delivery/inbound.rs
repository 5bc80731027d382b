//! The inbound thread: notices when a WebSocket client's peer sends anything
//! (a ping, a close, stray data, or the end of the connection) and wakes that
//! client's own thread to read and answer it.
//!
//! Owns: one epoll set over every WebSocket client's socket, and the map from
//! a registration to its client. Reads nothing from any socket itself and
//! writes to no channel: it only wakes client threads ([`Client::peer_spoke`]).
//!
//! Must not know: frames, cursors, or what a client is sent.
//!
//! Why a thread of its own, and only one: RFC 6455 wants every ping answered
//! and every close echoed, so a dashboard's socket must be read — but a
//! client's thread sleeps on its cursor's condition variable (the fan-out
//! wakes it), and a reader thread per client would double the per-client
//! cost. One edge-triggered epoll set costs a kernel registration per client
//! and one wake-up of the client's thread per thing its peer says (a ping
//! every 20 s for most client libraries).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::Duration;

use rustix::event::epoll;

use super::client::Client;
use crate::ops::faults::{Faults, Role};

/// Events taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 256;

/// The epoll set and who each registration belongs to.
pub struct Inbound {
    epoll: OwnedFd,
    clients: Mutex<HashMap<u64, Weak<Client>>>,
    next_key: AtomicU64,
}

/// A client's socket under watch; dropping it forgets the client. (The
/// kernel removes the socket from the set itself when it closes.)
pub struct Watched {
    inbound: Arc<Inbound>,
    key: u64,
}

impl Inbound {
    /// Starts the `ws-inbound` thread. It ends within a second of the last
    /// reference going (the server and every watched client gone); a panic
    /// in it is the delivery stage's death, like the fan-out's (a client
    /// whose pings go unanswered is dropped by its own library).
    pub fn spawn(faults: Arc<Faults>) -> io::Result<Arc<Inbound>> {
        let inbound = Arc::new(Inbound {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            clients: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
        });
        let watcher = Arc::downgrade(&inbound);
        thread::Builder::new()
            .name("ws-inbound".into())
            .spawn(move || faults.run_essential(Role::Fanout, || run(&watcher)))?;
        Ok(inbound)
    }

    /// Watches `socket` for what `client`'s peer sends. Edge-triggered: the
    /// client's thread reads until the socket would block, so one wake-up
    /// per burst is enough.
    pub fn watch(self: &Arc<Self>, socket: impl AsFd, client: &Arc<Client>) -> io::Result<Watched> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, Arc::downgrade(client));
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ET;
        if let Err(e) = epoll::add(&self.epoll, socket, epoll::EventData::new_u64(key), flags) {
            self.lock().remove(&key);
            return Err(e.into());
        }
        Ok(Watched {
            inbound: Arc::clone(self),
            key,
        })
    }

    /// Waits (at most [`LOOK_AGAIN`]) for peers that spoke, and wakes their
    /// clients' threads.
    fn wake_who_spoke(&self, events: &mut Vec<epoll::Event>) {
        events.clear();
        let timeout = rustix::event::Timespec {
            tv_sec: LOOK_AGAIN.as_secs() as i64,
            tv_nsec: 0,
        };
        let waited = epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(events),
            Some(&timeout),
        );
        match waited {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                // Nothing a peer does makes epoll_wait fail; if the kernel
                // does, say so and go on rather than spin.
                ::log::error!("waiting for WebSocket peers failed: {e}");
                thread::sleep(Duration::from_millis(100));
                return;
            }
        }
        // Collected first and woken after the map is unlocked: dropping the
        // last reference to a client forgets it, which takes the lock.
        let woken: Vec<Arc<Client>> = {
            let clients = self.lock();
            events
                .iter()
                .filter_map(|event| clients.get(&event.data.u64())?.upgrade())
                .collect()
        };
        for client in woken {
            client.peer_spoke();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Weak<Client>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How often the thread looks whether it is still wanted.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// The thread holds the set only while it waits, so it ends once the set is
/// no longer wanted.
fn run(inbound: &Weak<Inbound>) {
    let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
    while let Some(inbound) = inbound.upgrade() {
        inbound.wake_who_spoke(&mut events);
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.inbound.lock().remove(&self.key);
    }
}
