//! The HTTP front: one listening socket for plain HTTP and WebSocket.
//!
//! Owns: the listening socket (built with socket2 so accepted connections
//! inherit the send timeout, TCP_USER_TIMEOUT and keep-alive), the tiny_http
//! server reading it, the request threads, routing, the embedded static files,
//! and the front's supervisor, which probes `/healthz` over loopback every
//! second and replaces a tiny_http server that stopped answering.
//!
//! Channels: subscribes WebSocket clients to the fan-out; reads the latest
//! stats snapshot. Writes nothing into the pipeline yet.
//!
//! Must not know: how verdicts are reached.

use std::collections::VecDeque;
use std::io::{self, Cursor, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::config::{Config, Knobs, KnobsUpdate};
use crate::fanout::{ClientQueue, History, Interest, Resume, Subscriptions};
use crate::health::{Heartbeats, Stage};
use crate::hub::LatestStats;
use crate::logging::RateLimit;
use crate::time::WallClock;
use crate::transport::{self, ClientSlots, Slot, Transport, sse, ws};
use crate::workers::{Entry, Intake};
use crate::{ingest, metrics};

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
            Ok(Some(request)) => route(app, request),
            Ok(None) => {}
            Err(e) => {
                front.replace(generation, &format!("accept failed: {e}"));
                thread::sleep(RECV_POLL);
            }
        }
        for request in front.retired_requests() {
            route(app, request);
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

type Reply = Response<Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values here are ASCII")
}

fn body(status: u16, content_type: &str, bytes: Vec<u8>) -> Reply {
    Response::from_data(bytes)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
}

fn json(status: u16, bytes: Vec<u8>) -> Reply {
    body(status, "application/json", bytes)
}

/// A 405 answer with the `Allow` header listing what `path` answers.
fn method_not_allowed(path: &str, allowed: &str) -> Reply {
    error(405, &format!("{path} answers {allowed} only")).with_header(header("Allow", allowed))
}

/// A health answer: `{"status": status, "reason": reason}`.
fn status_json(code: u16, status: &str, reason: &str) -> Reply {
    json(
        code,
        serde_json::json!({ "status": status, "reason": reason })
            .to_string()
            .into_bytes(),
    )
}

/// A JSON error answer: `{"error": message}`.
pub fn error(status: u16, message: &str) -> Reply {
    json(
        status,
        serde_json::json!({ "error": message })
            .to_string()
            .into_bytes(),
    )
}

fn respond(request: Request, reply: Reply) {
    if let Err(e) = request.respond(reply) {
        log::debug!("could not send a response: {e}");
    }
}

/// The value of query parameter `name` in `url`, if present.
pub fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

fn header_value<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn route(app: &App, mut request: Request) {
    let path = request.url().split('?').next().unwrap_or("/").to_owned();
    let method = request.method().clone();
    let reply = match (path.as_str(), &method) {
        ("/ws", Method::Get) => return upgrade_websocket(app, request),
        ("/events", Method::Get) => return open_event_stream(app, request),
        ("/healthz", Method::Get) => match app.health.live() {
            Ok(()) => json(200, br#"{"status":"ok"}"#.to_vec()),
            Err(reason) => status_json(503, "stalled", &reason),
        },
        ("/readyz", Method::Get) => match app.health.ready() {
            Ok(()) => json(200, br#"{"status":"ready"}"#.to_vec()),
            Err(reason) => status_json(503, "not ready", &reason),
        },
        ("/metrics", Method::Get) => match app.latest.get() {
            Some((snapshot, _)) => body(
                200,
                metrics::CONTENT_TYPE,
                metrics::render(&snapshot).into_bytes(),
            ),
            None => error(503, "no stats snapshot yet; retry in a second"),
        },
        ("/api/stats", Method::Get) => match app.latest.get() {
            Some((_, json_bytes)) => json(200, json_bytes.to_vec()),
            None => error(503, "no stats snapshot yet; retry in a second"),
        },
        ("/api/config", Method::Get) => json(200, app.settings().to_string().into_bytes()),
        ("/api/config", Method::Put) => change_settings(app, &mut request),
        ("/api/events", Method::Get) => recent_events(app, &request),
        ("/api/events", Method::Post) => ingest(app, &mut request),
        (_, Method::Get) => match static_file(app, &path) {
            Some(reply) => reply,
            None => error(404, &format!("no such resource: {path}")),
        },
        ("/api/config", _) => method_not_allowed(&path, "GET, PUT"),
        ("/api/events", _) => method_not_allowed(&path, "GET, POST"),
        ("/ws" | "/events" | "/healthz" | "/readyz" | "/metrics" | "/api/stats", _) => {
            method_not_allowed(&path, "GET")
        }
        (_, _) if static_name(&path).is_some() => method_not_allowed(&path, "GET"),
        (_, _) => error(404, &format!("no such resource: {path}")),
    };
    respond(request, reply);
}

impl App {
    fn settings(&self) -> serde_json::Value {
        self.config.effective(&self.knobs, self.slots.max())
    }

    /// Whether `request` may change state: always when no `--token` is set,
    /// otherwise only with `Authorization: Bearer <token>` (compared in constant time).
    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.config.token else {
            return true;
        };
        let presented = header_value(request, "Authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        constant_time_eq::constant_time_eq(presented.as_bytes(), token.as_bytes())
    }
}

/// Largest body `PUT /api/config` reads.
const MAX_CONFIG_BODY: u64 = 16 * 1024;

/// `PUT /api/config`: validates the whole change before applying any of it.
fn change_settings(app: &App, request: &mut Request) -> Reply {
    if !app.authorized(request) {
        return error(
            401,
            "missing or wrong token: send Authorization: Bearer <token>",
        );
    }
    let content_type = header_value(request, "Content-Type").unwrap_or("");
    if !content_type.trim().starts_with("application/json") {
        return error(415, "send the change as Content-Type: application/json");
    }
    let body = match read_body(request, MAX_CONFIG_BODY) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let update: KnobsUpdate = match parse_json(&body) {
        Ok(update) => update,
        Err(e) => return error(400, &format!("invalid config change: {e}")),
    };
    match app.knobs.apply(&update) {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => log::info!("settings changed: {}", changes.join(", ")),
        Err(e) => return error(400, &e),
    }
    json(200, app.settings().to_string().into_bytes())
}

/// Parses JSON into `T`; the error names the field at fault (`rate: invalid value …`).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        match e.path().to_string() {
            path if path == "." => e.inner().to_string(),
            path => format!("{path}: {}", e.inner()),
        }
    })?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Reads a request body of at most `limit` bytes; a longer one is refused with 413.
fn read_body(request: &mut Request, limit: u64) -> Result<Vec<u8>, Reply> {
    if request.body_length().is_some_and(|n| n as u64 > limit) {
        return Err(error(
            413,
            &format!("body too large: at most {limit} bytes"),
        ));
    }
    let mut body = Vec::new();
    match request.as_reader().take(limit + 1).read_to_end(&mut body) {
        Ok(_) if body.len() as u64 > limit => Err(error(
            413,
            &format!("body too large: at most {limit} bytes"),
        )),
        Ok(_) => Ok(body),
        Err(e) => Err(error(400, &format!("could not read the body: {e}"))),
    }
}

/// Answers a WebSocket upgrade and hands the connection to a writer thread.
fn upgrade_websocket(app: &App, request: Request) {
    let upgrade = header_value(&request, "Upgrade");
    let connection = header_value(&request, "Connection");
    let version = header_value(&request, "Sec-WebSocket-Version");
    let key = header_value(&request, "Sec-WebSocket-Key").map(str::to_owned);
    let is_upgrade = has_token(upgrade, "websocket") && has_token(connection, "upgrade");
    let Some(key) = key.filter(|_| is_upgrade) else {
        let message = "/ws is a WebSocket endpoint: send Upgrade: websocket, Connection: Upgrade and Sec-WebSocket-Key";
        return respond(request, error(400, message));
    };
    if version.map(str::trim) != Some("13") {
        let reply = error(
            426,
            "unsupported WebSocket version: send Sec-WebSocket-Version: 13",
        )
        .with_header(header("Sec-WebSocket-Version", "13"));
        return respond(request, reply);
    }
    let (slot, queue) = match join(app, &request, Transport::WebSocket, None) {
        Ok(joined) => joined,
        Err(reply) => return respond(request, reply),
    };
    let handshake = Response::empty(StatusCode(101))
        .with_header(header("Sec-WebSocket-Accept", &ws::accept_key(&key)));
    let stream = request.upgrade("websocket", handshake);
    let name = format!("ws-{}", app.next_client.fetch_add(1, Ordering::Relaxed) + 1);
    log::debug!("{name} connected");
    if let Err(e) = transport::spawn_writer(ws::WsSink::new(stream), queue, slot, name) {
        log::warn!("could not start a WebSocket writer thread: {e}");
    }
}

/// `GET /events`: a Server-Sent Events stream on the same terms as `/ws`.
fn open_event_stream(app: &App, request: Request) {
    let last_event_id = header_value(&request, "Last-Event-ID").map(str::to_owned);
    let (slot, queue) = match join(app, &request, Transport::Sse, last_event_id.as_deref()) {
        Ok(joined) => joined,
        Err(reply) => return respond(request, reply),
    };
    let sink = match sse::SseSink::open(request.into_writer()) {
        Ok(sink) => sink,
        Err(e) => {
            queue.close();
            return log::debug!("event stream closed before it opened: {e}");
        }
    };
    let name = format!(
        "sse-{}",
        app.next_client.fetch_add(1, Ordering::Relaxed) + 1
    );
    log::debug!("{name} connected");
    if let Err(e) = transport::spawn_writer(sink, queue, slot, name) {
        log::warn!("could not start an event-stream writer thread: {e}");
    }
}

/// Takes a client slot and subscribes the client to the fan-out with what its
/// query asks for (`stats`, `since`, `replay`, `status`); `resume_from` is an
/// SSE `Last-Event-ID`, which wins over `since`.
fn join(
    app: &App,
    request: &Request,
    transport: Transport,
    resume_from: Option<&str>,
) -> Result<(Slot, Arc<ClientQueue>), Reply> {
    let interest =
        interest(request.url(), resume_from, app.history_capacity).map_err(|e| error(400, &e))?;
    let Some(slot) = app.slots.try_take(transport) else {
        let message = format!(
            "client limit reached ({} connected); try again later",
            app.slots.max()
        );
        return Err(error(503, &message));
    };
    let queue = app
        .subscriptions
        .subscribe(interest)
        .ok_or_else(|| error(503, "shutting down"))?;
    Ok((slot, queue))
}

/// The outcome statuses a filter may name.
const STATUSES: [&str; 3] = ["on-time", "late", "dropped"];

/// Reads a streaming client's wishes from its URL.
fn interest(url: &str, resume_from: Option<&str>, history: usize) -> Result<Interest, String> {
    let number = |name: &str, value: &str| {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{name}: expected a non-negative integer, got {value:?}"))
    };
    let resume = match (
        resume_from,
        query_param(url, "since"),
        query_param(url, "replay"),
    ) {
        (Some(id), _, _) => Resume::Since(number("Last-Event-ID", id)?),
        (None, Some(since), _) => Resume::Since(number("since", since)?),
        (None, None, Some(n)) => Resume::Last(
            usize::try_from(number("replay", n)?)
                .unwrap_or(usize::MAX)
                .min(history),
        ),
        (None, None, None) => Resume::Live,
    };
    let statuses = match query_param(url, "status") {
        None => None,
        Some(list) => {
            let wanted: Vec<String> = list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(bad) = wanted.iter().find(|s| !STATUSES.contains(&s.as_str())) {
                return Err(format!(
                    "status: unknown status {bad:?}; use on-time, late, dropped"
                ));
            }
            Some(wanted)
        }
    };
    Ok(Interest {
        stats: query_param(url, "stats") == Some("1"),
        resume,
        statuses,
    })
}

/// Most outcomes `GET /api/events` returns when no `limit` is given.
const DEFAULT_EVENTS_LIMIT: usize = 1000;

/// `GET /api/events?since=SEQ&limit=N`: retained outcomes after SEQ, oldest
/// first. Outcomes no longer retained are named in `X-Punctual-Gap: FROM-TO`.
fn recent_events(app: &App, request: &Request) -> Reply {
    let url = request.url();
    let parse = |name: &str, default: u64| match query_param(url, name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{name}: expected a non-negative integer, got {v:?}")),
    };
    let (since, limit) = match (
        parse("since", 0),
        parse("limit", DEFAULT_EVENTS_LIMIT as u64),
    ) {
        (Ok(since), Ok(limit)) => (since, usize::try_from(limit).unwrap_or(usize::MAX)),
        (Err(e), _) | (_, Err(e)) => return error(400, &e),
    };
    let replay = app.history.after(since, app.history.newest(), limit);
    let mut body = Vec::with_capacity(
        replay
            .messages
            .iter()
            .map(|m| m.json.len() + 1)
            .sum::<usize>()
            + 2,
    );
    body.push(b'[');
    for (i, message) in replay.messages.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&message.json);
    }
    body.push(b']');
    let reply = json(200, body);
    match replay.gap {
        Some((from, to)) => reply.with_header(header("X-Punctual-Gap", &format!("{from}-{to}"))),
        None => reply,
    }
}

/// `POST /api/events`: validates the whole batch, then enters every event
/// with the same `try_send` rule as the generator.
fn ingest(app: &App, request: &mut Request) -> Reply {
    if !app.authorized(request) {
        return error(
            401,
            "missing or wrong token: send Authorization: Bearer <token>",
        );
    }
    let format = match ingest::format_of(header_value(request, "Content-Type")) {
        Ok(format) => format,
        Err(refusal) => return error(refusal.status, &refusal.message),
    };
    let body = match read_body(request, app.config.max_body) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let received = Instant::now();
    let events =
        match ingest::parse_batch(format, &body, received, &app.clock, app.knobs.deadline()) {
            Ok(events) => events,
            Err(refusal) => return error(refusal.status, &refusal.message),
        };
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let dropped = events
        .into_iter()
        .map(|event| app.intake.submit(event))
        .filter(|entry| *entry == Entry::QueueFull)
        .count();
    let answer =
        serde_json::json!({ "accepted": ids.len() - dropped, "dropped": dropped, "ids": ids });
    json(202, answer.to_string().into_bytes())
}

/// A file of the page: its name, content type, and the copy built into the binary.
struct StaticFile {
    name: &'static str,
    content_type: &'static str,
    embedded: &'static [u8],
}

const STATIC_FILES: &[StaticFile] = &[
    StaticFile {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        embedded: include_bytes!("../static/index.html"),
    },
    StaticFile {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        embedded: include_bytes!("../static/app.js"),
    },
    StaticFile {
        name: "logic.js",
        content_type: "text/javascript; charset=utf-8",
        embedded: include_bytes!("../static/logic.js"),
    },
    StaticFile {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        embedded: include_bytes!("../static/charts.js"),
    },
    StaticFile {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        embedded: include_bytes!("../static/style.css"),
    },
];

/// The static file a path names. Only the listed files are served, so no path
/// can reach outside the static directory.
fn static_name(path: &str) -> Option<&'static StaticFile> {
    let name = match path {
        "/" => "index.html",
        other => other.strip_prefix('/')?,
    };
    STATIC_FILES.iter().find(|f| f.name == name)
}

fn static_file(app: &App, path: &str) -> Option<Reply> {
    let file = static_name(path)?;
    let bytes = match &app.static_dir {
        None => file.embedded.to_vec(),
        Some(dir) => match std::fs::read(dir.join(file.name)) {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = format!("cannot read {} from --static-dir: {e}", file.name);
                return Some(error(500, &message));
            }
        },
    };
    Some(body(200, file.content_type, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_by_name() {
        assert_eq!(query_param("/ws?stats=1&since=4", "stats"), Some("1"));
        assert_eq!(query_param("/ws?stats=1&since=4", "since"), Some("4"));
        assert_eq!(query_param("/ws?flag", "flag"), Some(""));
        assert_eq!(query_param("/ws", "stats"), None);
    }

    #[test]
    fn only_listed_files_are_static() {
        assert_eq!(static_name("/").map(|f| f.name), Some("index.html"));
        assert_eq!(static_name("/app.js").map(|f| f.name), Some("app.js"));
        assert!(static_name("/../Cargo.toml").is_none());
        assert!(static_name("/static/../src/main.rs").is_none());
    }

    #[test]
    fn header_tokens_are_matched_case_insensitively_in_lists() {
        assert!(has_token(Some("keep-alive, Upgrade"), "upgrade"));
        assert!(!has_token(Some("keep-alive"), "upgrade"));
        assert!(!has_token(None, "upgrade"));
    }

    #[test]
    fn a_wildcard_address_is_probed_on_loopback() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().expect("valid");
        assert_eq!(loopback_of(addr).to_string(), "127.0.0.1:8080");
    }
}
