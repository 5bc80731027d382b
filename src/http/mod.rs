//! The HTTP front: one listening socket for plain HTTP, WebSocket and SSE.
//!
//! Owns: the listening socket (built with socket2 so accepted connections
//! inherit TCP_USER_TIMEOUT and keep-alive), the tiny_http server reading it
//! (patched in-tree, see ARCHITECTURE.md), and the self-probe, which asks
//! `/healthz` over loopback every second and feeds the front's heartbeat.
//!
//! Each connection is read and answered on its own thread, one request at a
//! time, under the limits of [`front_limits`]: a slow or silent peer costs
//! its own thread until its deadline, never another connection's. An
//! upgraded connection is handed to its writer thread and its connection
//! thread ends.
//!
//! Channels: enters posted events through the intake; subscribes WebSocket and
//! SSE clients to the fan-out; reads the latest stats snapshot and the log.
//!
//! Submodules: `routes` (which handler answers what), `reply` (answers),
//! `request` (reading headers, query parameters and bodies), `assets` (static files), `ingest` (validation of posted
//! events), `query` (query strings), `origin` (the `Origin` and `Host` rules).
//!
//! Must not know: how verdicts are reached.

mod assets;
pub(crate) mod ingest;
pub(crate) mod origin;
mod page;
pub(crate) mod query;
mod refusals;
mod reply;
mod request;
mod routes;

pub use page::{MAX_PAGE_BYTES, MAX_PAGES_IN_FLIGHT};

pub use reply::error;
pub use request::{parse_json, query_param};
pub(crate) use routes::apply_settings;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tiny_http::{Limits, Request, ServerOptions};

use crate::cluster::ingest::Forwarder;
use crate::config::{Config, Knobs};
use crate::delivery::{ClientCounts, ClientSlots, Inbound, Log, Subscriptions};
use crate::ops::health::{Heartbeats, Stage};
use crate::ops::limits::Caps;
use crate::ops::logging::RateLimit;
use crate::pipeline::hub::LatestStats;
use crate::pipeline::intake::Intake;
use crate::pipeline::meters::Meters;
use crate::time::WallClock;

/// Pause between self-probes of `/healthz`.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A probe gets this long to be answered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle time before the kernel's TCP keep-alive probes start on a
/// connection (not the dashboards' WebSocket pings: `delivery::CLIENT_PING_IDLE`).
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// Listen backlog: connections the kernel holds for us before `accept`.
const LISTEN_BACKLOG: i32 = 1024;

/// Longest request line: a URL longer than this is answered 414.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Largest request head, request line and headers: a larger one is answered 431.
pub const MAX_HEAD: usize = 32 * 1024;

/// After an early answer that closes a connection (a refusal, or an error
/// while a body is unread), what the peer still sends is read and thrown
/// away for at most this long, within the request's deadline: closing on
/// unread data would reset the connection, and a client still sending its
/// body would never read the answer.
pub const LINGER: Duration = Duration::from_secs(2);

/// Most bytes read and thrown away while lingering, beyond `--max-body`: a
/// body just over the limit is read to its end, so its client gets the 413.
pub const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Builds the listening socket. Accepted connections inherit TCP_USER_TIMEOUT
/// and keep-alive on Linux; their read and write timeouts are set per
/// connection by the front, from the deadlines in [`front_limits`].
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(config.listen),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_user_timeout(Some(Duration::from_secs(config.tcp_user_timeout)))?;
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(Duration::from_secs(10))
            .with_retries(3),
    )?;
    socket.bind(&config.listen.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The limits every connection is served under.
pub fn front_limits(config: &Config, caps: Caps) -> Limits {
    Limits {
        max_connections: Some(caps.connections),
        request_timeout: Some(Duration::from_secs(config.request_timeout)),
        idle_timeout: Some(Duration::from_secs(config.idle_timeout)),
        write_timeout: Some(Duration::from_secs(config.write_timeout)),
        max_request_line: MAX_REQUEST_LINE,
        max_head: MAX_HEAD,
        linger: Some(LINGER),
        linger_bytes: usize::try_from(config.max_body)
            .unwrap_or(usize::MAX)
            .saturating_add(LINGER_BYTES),
    }
}

/// What request handlers share.
pub struct App {
    /// Adds WebSocket clients to the fan-out.
    pub subscriptions: Subscriptions,
    /// Notices what WebSocket peers send, so their threads answer it.
    pub inbound: Arc<Inbound>,
    /// The cap on connected clients.
    pub slots: ClientSlots,
    /// The caps on connections and clients.
    pub caps: Caps,
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
    /// Where posted events go: this node's intake, or on an edge the
    /// processor's, through Redis.
    pub entrance: Entrance,
    /// Epoch conversion for posted `createdAt`.
    pub clock: WallClock,
    /// Retained outcomes for `GET /api/events`.
    pub log: Arc<Log>,
    /// Outcomes kept for replay (the most a `replay` can ask for).
    pub history_capacity: usize,
    /// Heartbeats for `/healthz`, `/readyz`, and the probe's own beat.
    pub health: Arc<Heartbeats>,
    /// Where the front reports its open connections and failed accepts.
    pub meters: Arc<Meters>,
    /// Delivery's client counts, which every new client joins.
    pub client_counts: Arc<ClientCounts>,
    /// The pull-mode `RemoteWorkers` that `/api/work` connects workers to (`--work pull` only).
    pub work: Option<Arc<crate::work::pull::RemoteWorkers>>,
    /// Pages of `GET /api/events` being written.
    pub pages: page::PageSlots,
    /// Refused `Host` and `Origin` values already logged.
    pub refusals: refusals::Refusals,
}

/// Where posted events go.
pub enum Entrance {
    /// This node's intake (a node with the pipeline).
    Intake(Intake),
    /// The ingest stream, for the processor to enter (an edge).
    Stream(Arc<Forwarder>),
}

/// Starts the front on `listener`: tiny_http's accept thread, which starts a
/// thread per connection, and the self-probe, which owns the server and the
/// handlers' [`App`]. Both end when `stop` is disconnected; connections
/// still open then are answered 503 until they close.
pub fn spawn(
    listener: TcpListener,
    app: Arc<App>,
    stop: Receiver<()>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let probe_addr = loopback_of(listener.local_addr()?);
    let options = ServerOptions {
        limits: front_limits(&app.config, app.caps),
        handler: Some(handler(Arc::downgrade(&app))),
        on_accept_error: Some(accept_error_hook(&app)),
    };
    let server =
        tiny_http::Server::from_listener_with(listener, None, options).map_err(io::Error::other)?;
    let probe = thread::Builder::new()
        .name("http-probe".into())
        .spawn(move || supervise(&server, &app, probe_addr, &stop))?;
    Ok(vec![probe])
}

/// Routes each request while the front runs. Connection threads hold only a
/// weak reference, so a connection left open after a stop keeps nothing of
/// the pipeline alive (the intake above all).
fn handler(app: Weak<App>) -> tiny_http::Handler {
    Arc::new(move |request: Request| match app.upgrade() {
        Some(app) => routes::route(&app, request),
        None => reply::respond(
            request,
            error(503, "shutting down").with_header(reply::header("Connection", "close")),
        ),
    })
}

/// Counts failed accepts and warns about them at most every 10 s; tiny_http
/// backs off and keeps accepting.
fn accept_error_hook(app: &App) -> tiny_http::AcceptErrorHook {
    let (health, meters) = (Arc::clone(&app.health), Arc::clone(&app.meters));
    Arc::new(move |e: &io::Error| {
        let failures = meters.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if is_out_of_descriptors(e) {
            health.out_of_descriptors();
        }
        if ACCEPT_WARNINGS.allow() {
            log::warn!(
                "cannot accept connections: {e} ({failures} failed accepts so far); retrying — \
                 open connections and the pipeline are not affected; raise LimitNOFILE / \
                 ulimit -n or lower --max-connections"
            );
        }
    })
}

/// Failed accepts are warned about at most every 10 s.
static ACCEPT_WARNINGS: RateLimit = RateLimit::new(Duration::from_secs(10));

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (process limit) and ENFILE (system limit).
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// Probes `/healthz` every second: an answer beats the front's heart, which
/// the watchdog and `/readyz` read. A probe that cannot even open its socket
/// for want of descriptors says nothing about the front, which is waiting
/// for descriptors too: that counts as alive, and as not ready.
fn supervise(server: &tiny_http::Server, app: &App, probe_addr: SocketAddr, stop: &Receiver<()>) {
    loop {
        app.meters
            .connections
            .store(server.num_connections(), Ordering::Relaxed);
        match probe(probe_addr) {
            Ok(()) => app.health.beat(Stage::Front),
            Err(e) if is_out_of_descriptors(&e) => {
                app.health.out_of_descriptors();
                app.health.beat(Stage::Front);
            }
            Err(e) => {
                if PROBE_WARNINGS.allow() {
                    log::warn!("self-probe of /healthz failed: {e}");
                }
            }
        }
        match stop.recv_timeout(PROBE_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
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
