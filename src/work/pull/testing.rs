//! Helpers the unit tests of the `pull` modules share: a loopback socket
//! pair whose daemon end fills after a few KiB, a `RemoteWorkers` with one
//! remote connected over it, and small looks and waits.
//!
//! Test code only: nothing here runs in the daemon.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::credit::Handover;
use super::remote::Remote;
use super::{Offer, RemoteWorkers};
use crate::ops::health::Heartbeats;

pub(super) const MS: Duration = Duration::from_millis(1);

/// A loopback connection whose daemon end (first) takes only a few KiB
/// before it is full while the worker's end (second) does not read.
pub(super) fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let peer =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    peer.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    peer.connect(&addr.into()).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    socket2::SockRef::from(&ours)
        .set_send_buffer_size(4096)
        .expect("SO_SNDBUF");
    (ours, peer.into())
}

pub(super) fn remote_workers() -> Arc<RemoteWorkers> {
    RemoteWorkers::new(Arc::new(Heartbeats::new())).expect("remote_workers")
}

/// A `RemoteWorkers` with one remote of `credit` connected over a [`pair`],
/// and the worker's end.
pub(super) fn connected(credit: usize, write_timeout: Duration) -> (Arc<RemoteWorkers>, TcpStream) {
    let (ours, peer) = pair();
    let remote_workers = remote_workers();
    remote_workers
        .connect(ours, None, credit, write_timeout)
        .expect("connects");
    (remote_workers, peer)
}

pub(super) fn taken(offer: Offer) -> Handover {
    match offer {
        Offer::Taken(handover) => handover,
        Offer::Elsewhere => panic!("the remote did not take the task"),
    }
}

pub(super) fn the_remote(remote_workers: &RemoteWorkers) -> Arc<Remote> {
    Arc::clone(&remote_workers.lock_pool().seats[0].remote)
}

pub(super) fn is_behind(remote: &Remote) -> bool {
    remote.behind.load(Ordering::Relaxed)
}

/// Whether `done` comes true within `within`, looking every 10 ms.
pub(super) fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while !done() {
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(10 * MS);
    }
    true
}

/// The text of a task message for `id` padded with `pad` bytes.
pub(super) fn task_text(id: &str, pad: usize) -> String {
    format!(
        r#"{{"type":"task","id":"{id}","pad":"{}"}}"#,
        "x".repeat(pad)
    )
}
