//! The HTTP front: one listening socket for plain HTTP and WebSocket.
//!
//! Owns: the listening socket (built with socket2 so accepted connections
//! inherit the send timeout, TCP_USER_TIMEOUT and keep-alive), the tiny_http
//! server reading it, the request threads, and the front's supervisor, which probes `/healthz` over loopback every
//! second and replaces a tiny_http server that stopped answering.
//!
//! Channels: enters posted events through the intake; subscribes WebSocket and
//! SSE clients to the fan-out; reads the latest stats snapshot and the history.
//!
//! Submodules: `routes` (which handler answers what), `reply` (answers and
//! request parsing), `assets` (static files).
//!
//! Must not know: how verdicts are reached.

mod assets;
mod reply;
mod routes;

pub use reply::{error, parse_json, query_param};

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tiny_http::Request;

use crate::config::{Config, Knobs};
use crate::fanout::{History, Subscriptions};
use crate::health::{Heartbeats, Stage};
use crate::hub::LatestStats;
use crate::logging::RateLimit;
use crate::time::WallClock;
use crate::transport::ClientSlots;
use crate::workers::Intake;

/// Threads answering requests. Requests are short (WebSocket clients are
/// handed to their own writer thread), so a few suffice.
const REQUEST_THREADS: usize = 4;

/// How long a request thread waits for a request before checking for shutdown.
const RECV_POLL: Duration = Duration::from_millis(200);

/// Pause between self-probes of `/healthz`.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A probe gets this long to be answered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Consecutive failed probes before the front is declared deaf and replaced.
const PROBES_BEFORE_RESTART: u32 = 3;

/// Idle time before TCP keep-alive probes start on a connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// Listen backlog: connections the kernel holds for us before `accept`.
const LISTEN_BACKLOG: i32 = 1024;

/// Builds the listening socket. Accepted connections inherit its options on
/// Linux: a bounded send time (`SO_SNDTIMEO`) is what turns a stalled client
/// into a write error. `SO_RCVTIMEO` is deliberately left unset — `accept()`
/// honours it and tiny_http's accept thread ends on the first timeout.
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(config.listen),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_write_timeout(Some(Duration::from_secs(config.write_timeout)))?;
    socket.set_tcp_user_timeout(Some(Duration::from_secs(config.tcp_user_timeout)))?;
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(Duration::from_secs(10))
            .with_retries(3),
    )?;
    socket.bind(&config.listen.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// What request handlers share.
pub struct App {
    /// Adds WebSocket clients to the fan-out.
    pub subscriptions: Subscriptions,
    /// The cap on connected clients.
    pub slots: ClientSlots,
    /// The latest stats snapshot.
    pub latest: Arc<LatestStats>,
    /// Serve static files from here instead of the embedded copies.
    pub static_dir: Option<PathBuf>,
    /// Numbers writer threads (`ws-1`, `ws-2`, …).
    pub next_client: AtomicU64,
    /// The live settings, changed by `PUT /api/config`.
    pub knobs: Arc<Knobs>,
    /// The settings the daemon started with.
    pub config: Config,
    /// The way into the pipeline for posted events.
    pub intake: Intake,
    /// Epoch conversion for posted `createdAt`.
    pub clock: WallClock,
    /// Retained outcomes for `GET /api/events`.
    pub history: Arc<History>,
    /// Size of the history ring (the most a `replay` can ask for).
    pub history_capacity: usize,
    /// Heartbeats for `/healthz`, `/readyz`, and the probe's own beat.
    pub health: Arc<Heartbeats>,
}

/// The tiny_http server currently reading the listening socket, and what is
/// needed to replace it.
struct Front {
    listener: TcpListener,
    current: RwLock<(u64, Arc<tiny_http::Server>)>,
    /// Replaced servers. Their accept thread is gone, but connections they
    /// accepted (browsers keep them alive) still deliver requests into them,
    /// so they are drained too. The oldest is let go past [`RETIRED_KEPT`].
    retired: RwLock<VecDeque<Arc<tiny_http::Server>>>,
}

/// Replaced tiny_http servers still drained for their open connections.
const RETIRED_KEPT: usize = 4;

impl Front {
    fn new(listener: TcpListener) -> io::Result<Self> {
        let server = serve_on(&listener)?;
        Ok(Front {
            listener,
            current: RwLock::new((0, server)),
            retired: RwLock::new(VecDeque::new()),
        })
    }

    fn current(&self) -> (u64, Arc<tiny_http::Server>) {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        (guard.0, Arc::clone(&guard.1))
    }

    /// Requests waiting in replaced servers, from connections they accepted.
    fn retired_requests(&self) -> Vec<Request> {
        let retired = self.retired.read().unwrap_or_else(|e| e.into_inner());
        retired
            .iter()
            .flat_map(|server| std::iter::from_fn(|| server.try_recv().ok().flatten()))
            .collect()
    }

    /// Replaces server generation `seen` with a fresh one on the same socket;
    /// a no-op if another thread already replaced it. Connected WebSocket
    /// clients and the pipeline are not touched.
    fn replace(&self, seen: u64, why: &str) {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        if guard.0 != seen {
            return;
        }
        match serve_on(&self.listener) {
            Ok(server) => {
                log::error!(
                    "HTTP front stopped answering ({why}); started a fresh one on the same socket"
                );
                let old = std::mem::replace(&mut *guard, (seen + 1, server));
                let mut retired = self.retired.write().unwrap_or_else(|e| e.into_inner());
                retired.push_back(old.1);
                if retired.len() > RETIRED_KEPT {
                    retired.pop_front();
                }
            }
            Err(e) => {
                log::error!("HTTP front stopped answering ({why}) and could not be restarted: {e}")
            }
        }
    }
}

fn serve_on(listener: &TcpListener) -> io::Result<Arc<tiny_http::Server>> {
    let server =
        tiny_http::Server::from_listener(listener.try_clone()?, None).map_err(io::Error::other)?;
    Ok(Arc::new(server))
}

/// Starts the front on `listener`: the request threads and the supervisor.
/// They end when `stop` is disconnected.
pub fn spawn(
    listener: TcpListener,
    app: Arc<App>,
    stop: Receiver<()>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let probe_addr = loopback_of(listener.local_addr()?);
    let front = Arc::new(Front::new(listener)?);
    let mut threads = Vec::with_capacity(REQUEST_THREADS + 1);
    for n in 0..REQUEST_THREADS {
        let (front, app, stop) = (Arc::clone(&front), Arc::clone(&app), stop.clone());
        threads.push(
            thread::Builder::new()
                .name(format!("http-{n}"))
                .spawn(move || serve_requests(&front, &app, &stop))?,
        );
    }
    threads.push(
        thread::Builder::new()
            .name("http-probe".into())
            .spawn(move || supervise(&front, probe_addr, &app.health, &stop))?,
    );
    Ok(threads)
}

fn stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

fn serve_requests(front: &Front, app: &App, stop: &Receiver<()>) {
    while !stopped(stop) {
        let (generation, server) = front.current();
        match server.recv_timeout(RECV_POLL) {
            Ok(Some(request)) => routes::route(app, request),
            Ok(None) => {}
            Err(e) => {
                front.replace(generation, &format!("accept failed: {e}"));
                thread::sleep(RECV_POLL);
            }
        }
        for request in front.retired_requests() {
            routes::route(app, request);
        }
    }
}

/// Probes `/healthz` every second and replaces the front after
/// [`PROBES_BEFORE_RESTART`] failures in a row. Any HTTP answer counts: the
/// probe asks whether the front answers, not whether the pipeline is healthy.
fn supervise(front: &Front, probe_addr: SocketAddr, health: &Heartbeats, stop: &Receiver<()>) {
    let mut failures = 0;
    loop {
        match stop.recv_timeout(PROBE_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let (generation, _) = front.current();
        match probe(probe_addr) {
            Ok(()) => {
                failures = 0;
                health.beat(Stage::Front);
            }
            Err(e) => {
                failures += 1;
                if PROBE_WARNINGS.allow() {
                    log::warn!("self-probe of /healthz failed ({failures} in a row): {e}");
                }
                if failures >= PROBES_BEFORE_RESTART {
                    front.replace(generation, &format!("{failures} self-probes failed"));
                    failures = 0;
                }
            }
        }
    }
}

/// Self-probe failures are warned about at most every 10 s.
static PROBE_WARNINGS: RateLimit = RateLimit::new(Duration::from_secs(10));

/// The address to reach our own listener on: loopback when bound to all interfaces.
fn loopback_of(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// One `GET /healthz` over a fresh connection; `Ok` on any HTTP answer.
pub fn probe(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 9];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        let answer = String::from_utf8_lossy(&head).into_owned();
        Err(io::Error::other(format!("answered {answer:?}, not HTTP")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_address_is_probed_on_loopback() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().expect("valid");
        assert_eq!(loopback_of(addr).to_string(), "127.0.0.1:8080");
    }
}
