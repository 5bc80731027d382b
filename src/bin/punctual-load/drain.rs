//! Drained clients (`--probes`): connected like measured ones, then read by
//! one `drain` thread in bulk every `--drain-ms`, their bytes counted and
//! nothing parsed. A thousand of them cost the tool a few percent of a core
//! instead of a thread each, so it stops competing with the server it
//! measures; the few measured clients (the probes) time the delivery. A
//! drained client reads in bursts, as a busy browser tab does: the server
//! must buffer for it in between, which is part of what is measured.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustix::event::epoll;

use crate::clients::{Connect, Socket};
use crate::report::DrainReport;

/// What one bulk read takes from a socket at most.
const SCRATCH: usize = 64 * 1024;
/// Events one `epoll_wait` returns at most; the rest wait for the next.
const EVENTS: usize = 1024;

/// The drained clients and their thread.
pub struct Drained {
    requested: u32,
    failures: BTreeMap<String, u64>,
    sockets: Vec<Socket>,
    /// The set the thread waits on; it takes it when it starts.
    epoll: Option<OwnedFd>,
    every: Duration,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, usize)>>,
}

impl Drained {
    /// Nothing connected yet; clients are read every `every` once started.
    pub fn new(requested: u32, every: Duration) -> Result<Self, String> {
        Ok(Drained {
            requested,
            failures: BTreeMap::new(),
            sockets: Vec::with_capacity(requested as usize),
            epoll: Some(
                epoll::create(epoll::CreateFlags::CLOEXEC)
                    .map_err(|e| format!("epoll_create: {e}"))?,
            ),
            every,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }

    /// Connects one client to `addr`, to be read in bulk.
    pub fn add(&mut self, connect: &Connect<'_>, addr: SocketAddr) {
        let key = epoll::EventData::new_u64(self.sockets.len() as u64);
        let epoll = self.epoll.as_ref();
        let watched = connect(addr).and_then(|(socket, _stream)| {
            // The handshake is done; from here the bytes are only counted.
            socket.0.set_nonblocking(true).map_err(|e| e.to_string())?;
            let epoll = epoll.ok_or("already started")?;
            epoll::add(epoll, &*socket.0, key, epoll::EventFlags::IN)
                .map_err(|e| format!("epoll_ctl: {e}"))?;
            Ok(socket)
        });
        match watched {
            Ok(socket) => self.sockets.push(socket),
            Err(why) => *self.failures.entry(why).or_default() += 1,
        }
    }

    /// Starts the `drain` thread over every client added.
    pub fn start(&mut self) -> Result<(), String> {
        let epoll = self.epoll.take().ok_or("already started")?;
        let (sockets, stop, every) = (self.sockets.clone(), Arc::clone(&self.stop), self.every);
        let thread = thread::Builder::new()
            .name("drain".into())
            .spawn(move || drain(&epoll, &sockets, every, &stop))
            .map_err(|e| format!("cannot start the drain thread: {e}"))?;
        self.thread = Some(thread);
        Ok(())
    }

    /// Stops reading and closes every drained client.
    pub fn close(mut self) -> DrainReport {
        self.stop.store(true, Ordering::Relaxed);
        let (bytes, closed) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0));
        for socket in &self.sockets {
            let _ = socket.0.shutdown(Shutdown::Both);
        }
        DrainReport {
            requested: self.requested,
            connected: self.sockets.len(),
            connect_failures: self.failures.values().sum(),
            failure_reasons: self.failures,
            bytes,
            closed_by_server: closed,
        }
    }
}

/// Every `every`: reads what each ready socket holds, until it would block.
/// Answers the bytes read and how many sockets the server closed.
fn drain(epoll: &OwnedFd, sockets: &[Socket], every: Duration, stop: &AtomicBool) -> (u64, usize) {
    let mut scratch = vec![0u8; SCRATCH];
    let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
    let mut closed = vec![false; sockets.len()];
    let mut bytes = 0u64;
    let no_wait = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(every);
        loop {
            events.clear();
            let waited = epoll::wait(
                epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&no_wait),
            );
            if waited.is_err() || events.is_empty() {
                break;
            }
            for event in &events {
                let i = event.data.u64() as usize;
                let (Some(socket), Some(gone)) = (sockets.get(i), closed.get_mut(i)) else {
                    continue;
                };
                bytes += read_all(socket, &mut scratch, gone);
                if *gone {
                    // Ended: out of the set, or it would be ready forever.
                    let _ = epoll::delete(epoll, &*socket.0);
                }
            }
            if events.len() < EVENTS {
                break;
            }
        }
    }
    (bytes, closed.iter().filter(|&&c| c).count())
}

/// Reads `socket` until it would block; marks it `gone` at its end.
fn read_all(socket: &Socket, scratch: &mut [u8], gone: &mut bool) -> u64 {
    let mut bytes = 0u64;
    loop {
        match (&*socket.0).read(scratch) {
            Ok(0) => {
                *gone = true;
                let _ = socket.0.shutdown(Shutdown::Both);
                return bytes;
            }
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return bytes,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                *gone = true;
                let _ = socket.0.shutdown(Shutdown::Both);
                return bytes;
            }
        }
    }
}
