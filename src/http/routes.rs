//! Routing: which handler answers which method and path, and the handlers
//! themselves — stats, settings, ingest, history, and the two streaming
//! transports' handshakes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sha1::Digest;
use tiny_http::{Method, Request, Response, StatusCode};

use super::assets::{static_file, static_name};
use super::page::{MAX_PAGE_BYTES, MAX_PAGE_OUTCOMES, Page};
use super::reply::{Reply, body, error, header, json, method_not_allowed, respond, status_json};
use super::request::{has_token, header_value, parse_json, read_body};
use super::{App, Entrance};
use crate::cluster::ingest::{MAX_WAITING_BATCHES, Refused, SettingsAnswer};
use crate::config::{Knobs, KnobsUpdate, NodeRole, Settings};
use crate::delivery::{self, Client, Sink, Slot, Transport, sse, ws};
use crate::epoch::{Epoch, Position};
use crate::http::origin::{Admitted, Rules};
use crate::ops::logging::RateLimit;
use crate::pipeline::intake::Entry;
use crate::{http::ingest, http::query, ops::metrics, work};

/// A socket the inbound thread could not watch (the kernel's epoll limit):
/// said at most once a minute.
static UNWATCHED_WARNINGS: RateLimit = RateLimit::new(std::time::Duration::from_secs(60));

/// Paths any `Host` may reach: probes and scrapers know the daemon by
/// whatever name their network gives it, and these carry no payload.
const OPEN_TO_ANY_HOST: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub(super) fn route(app: &App, request: Request) {
    let path = request.url().split('?').next().unwrap_or("/").to_owned();
    let admitted = if OPEN_TO_ANY_HOST.contains(&path.as_str()) {
        Admitted::NoOrigin
    } else {
        match app.admit_read(&request) {
            Ok(admitted) => admitted,
            Err(refusal) => return respond(request, refusal),
        }
    };
    let cors = match &admitted {
        Admitted::Allowed(origin) => Some(origin.clone()),
        Admitted::NoOrigin | Admitted::SameOrigin => None,
    };
    let streams = matches!(path.as_str(), "/ws" | "/events" | "/api/events");
    if streams && *request.method() == Method::Get && !app.health.is_fed() {
        // A client resuming here now would be told of a run that is not the
        // processor's, then replayed the whole run again once it arrives.
        let reply = error(
            503,
            "this edge has not read from Redis yet; retry in a second",
        )
        .with_header(header("Retry-After", "1"));
        return respond(request, reply);
    }
    match (path.as_str(), request.method()) {
        ("/ws", Method::Get) => upgrade_websocket(app, request),
        ("/events", Method::Get) => open_event_stream(app, request, cors),
        ("/api/work", Method::Get) => connect_worker(app, request),
        ("/api/events", Method::Get) => recent_events(app, request, cors.as_deref()),
        _ => answer(app, request, &path, cors.as_deref()),
    }
}

/// Routes answered with one whole reply; a page of another site admitted
/// by `--allowed-origin` is told so (`Access-Control-Allow-Origin`), or its
/// browser withholds the answer.
fn answer(app: &App, mut request: Request, path: &str, cors: Option<&str>) {
    let method = request.method().clone();
    let reply = match (path, &method) {
        ("/healthz", Method::Get) => match app.health.live() {
            Ok(()) => json(200, br#"{"status":"ok"}"#.to_vec()),
            Err(reason) => status_json(503, "stalled", &reason),
        },
        ("/readyz", Method::Get) => match (app.health.ready(), app.health.degraded()) {
            // Degraded (Redis unreachable) is still ready: every node shares
            // one Redis, and taking all of them out of a balancer would make
            // its outage an outage of every dashboard (ARCHITECTURE.md).
            (Ok(()), Some(reason)) => status_json(200, "degraded", &reason),
            (Ok(()), None) => json(200, br#"{"status":"ready"}"#.to_vec()),
            (Err(reason), _) => status_json(503, "not ready", &reason),
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
        ("/api/config", Method::Get) => match app.settings() {
            Some(settings) => json(200, settings.to_json().into_bytes()),
            None => error(503, "no stats from the processor yet; retry in a second"),
        },
        ("/api/config", Method::Put) => change_settings(app, &mut request),
        ("/api/events", Method::Post) => ingest(app, &mut request),
        (p, Method::Post) if p.starts_with(WEBHOOK_PREFIX) => {
            webhook(app, &mut request, &p[WEBHOOK_PREFIX.len()..])
        }
        (p, _) if p.starts_with(WEBHOOK_PREFIX) => method_not_allowed(p, "POST"),
        (_, Method::Get) => match static_file(app, path) {
            Some(reply) => reply,
            None => error(404, &format!("no such resource: {path}")),
        },
        ("/api/config", _) => method_not_allowed(path, "GET, PUT"),
        ("/api/events", _) => method_not_allowed(path, "GET, POST"),
        (
            "/ws" | "/api/work" | "/events" | "/healthz" | "/readyz" | "/metrics" | "/api/stats",
            _,
        ) => method_not_allowed(path, "GET"),
        (_, _) if static_name(path).is_some() => method_not_allowed(path, "GET"),
        (_, _) => error(404, &format!("no such resource: {path}")),
    };
    respond(request, with_cors(reply, cors));
}

fn with_cors<R: std::io::Read>(reply: Response<R>, cors: Option<&str>) -> Response<R> {
    match cors {
        Some(origin) => reply
            .with_header(header("Access-Control-Allow-Origin", origin))
            .with_header(header("Vary", "Origin")),
        None => reply,
    }
}

impl App {
    /// The settings in force: this node's, or on an edge the processor's as
    /// last published (`None` before the first).
    fn settings(&self) -> Option<Settings> {
        match self.config.role {
            NodeRole::Edge => self
                .latest
                .get()
                .map(|(snapshot, _)| snapshot.config.clone()),
            _ => Some(self.config.effective(&self.knobs, self.caps)),
        }
    }

    /// The deadline of a posted event that names none: the live setting of
    /// the node that will judge it (on an edge, the processor's as last
    /// published, or this node's own before the first).
    fn default_deadline(&self) -> std::time::Duration {
        match (&self.entrance, self.settings()) {
            (Entrance::Stream(_), Some(settings)) => {
                std::time::Duration::from_millis(settings.deadline_ms)
            }
            _ => self.knobs.deadline(),
        }
    }

    fn origin_rules(&self) -> Rules<'_> {
        Rules {
            listen: self.config.listen,
            origins: &self.config.allowed_origins,
            hosts: &self.config.allowed_hosts,
        }
    }

    /// Every request that returns data must name this daemon in `Host` (a
    /// DNS-rebinding page would read every payload) and, coming from a page,
    /// be from this daemon's site or an `--allowed-origin` (`*` included).
    fn admit_read(&self, request: &Request) -> Result<Admitted, Reply> {
        let rules = self.origin_rules();
        let host = header_value(request, "Host");
        let origin = header_value(request, "Origin");
        rules
            .check_host(host)
            .and_then(|()| rules.check_origin(origin, host))
            .map_err(|e| self.refuse(&e))
    }

    /// A mutating request must also come, if from a page, from this
    /// daemon's site or an origin named exactly: `*` opens reads only (a
    /// cross-site form needs no CORS to post).
    fn admit_change(&self, request: &Request) -> Result<(), Reply> {
        let rules = self.origin_rules();
        let host = header_value(request, "Host");
        let origin = header_value(request, "Origin");
        rules
            .check_host(host)
            .and_then(|()| rules.check_change_origin(origin, host))
            .map(|_| ())
            .map_err(|e| self.refuse(&e))
    }

    /// A 403 naming what was refused and the flag that admits it, logged
    /// once per refusal so the operator learns it too.
    fn refuse(&self, why: &str) -> Reply {
        self.refusals.note(why);
        error(403, why)
    }

    /// A request that changes state must pass [`App::admit_change`] and
    /// carry the token (401 otherwise).
    fn admit_mutation(&self, request: &Request) -> Result<(), Reply> {
        self.admit_change(request)?;
        if !self.authorized(request) {
            let message = "missing or wrong token: send Authorization: Bearer <token>";
            return Err(error(401, message));
        }
        Ok(())
    }

    /// Whether `request` may change state: always when no `--token` is set,
    /// otherwise only with `Authorization: Bearer <token>` (the scheme in any
    /// case, as RFC 9110 has it). The digests are compared, in constant time:
    /// comparing the tokens themselves would stop early on a length mismatch
    /// and so tell the token's length.
    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.config.token else {
            return true;
        };
        let presented = header_value(request, "Authorization")
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, credentials)| credentials.trim());
        let digest = |text: &str| sha1::Sha1::digest(text.as_bytes());
        constant_time_eq::constant_time_eq(&digest(presented), &digest(token))
    }
}

/// Largest body `PUT /api/config` reads.
const MAX_CONFIG_BODY: u64 = 16 * 1024;

/// `PUT /api/config`: validates the whole change before applying any of it.
fn change_settings(app: &App, request: &mut Request) -> Reply {
    if let Err(refusal) = app.admit_mutation(request) {
        return refusal;
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
    if let Err(e) = update.validate() {
        return error(400, &e);
    }
    if let Some(refusal) = standby_refusal(app) {
        return refusal;
    }
    match &app.entrance {
        Entrance::Intake(_) => match apply_settings(&app.knobs, &update) {
            Ok(()) => json(
                200,
                app.config
                    .effective(&app.knobs, app.caps)
                    .to_json()
                    .into_bytes(),
            ),
            Err(e) => error(400, &e),
        },
        // Answered once the processor applied it, with its settings.
        Entrance::Stream(forwarder) => match forwarder.change_settings(&body) {
            Ok(SettingsAnswer::Applied(settings)) => json(200, settings),
            Ok(SettingsAnswer::Refused(e)) => error(400, &e),
            Err(Refused::NoAnswer) => error(
                504,
                "the processor did not apply the change within 3 s (is one running?); it will not be applied later",
            ),
            Err(Refused::Unanswered) => error(
                504,
                "the processor took the change but did not answer: it may have been applied; read GET /api/config",
            ),
            Err(refused) => not_taken(&refused),
        },
    }
}

/// Applies a validated change to the live knobs and says what changed.
pub(crate) fn apply_settings(knobs: &Knobs, update: &KnobsUpdate) -> Result<(), String> {
    let changes = knobs.apply(update)?;
    if !changes.is_empty() {
        log::info!("settings changed: {}", changes.join(", "));
    }
    Ok(())
}

/// The `101` answer to a well-formed WebSocket upgrade of `path`, or the
/// refusal that says what is missing.
fn websocket_handshake(request: &Request, path: &str) -> Result<Response<std::io::Empty>, Reply> {
    let upgrade = header_value(request, "Upgrade");
    let connection = header_value(request, "Connection");
    let version = header_value(request, "Sec-WebSocket-Version");
    let key = header_value(request, "Sec-WebSocket-Key");
    let is_upgrade = has_token(upgrade, "websocket") && has_token(connection, "upgrade");
    let Some(key) = key.filter(|_| is_upgrade) else {
        let message = format!(
            "{path} is a WebSocket endpoint: send Upgrade: websocket, Connection: Upgrade and Sec-WebSocket-Key"
        );
        return Err(error(400, &message));
    };
    if version.map(str::trim) != Some("13") {
        let reply = error(
            426,
            "unsupported WebSocket version: send Sec-WebSocket-Version: 13",
        )
        .with_header(header("Sec-WebSocket-Version", "13"));
        return Err(reply);
    }
    Ok(Response::empty(StatusCode(101))
        .with_header(header("Sec-WebSocket-Accept", &ws::accept_key(key))))
}

/// Answers a WebSocket upgrade and hands the connection to a writer thread.
fn upgrade_websocket(app: &App, request: Request) {
    let handshake = match websocket_handshake(&request, "/ws") {
        Ok(handshake) => handshake,
        Err(refusal) => return respond(request, refusal),
    };
    let (slot, client) = match join(app, &request, Transport::WebSocket, None) {
        Ok(joined) => joined,
        Err(reply) => return respond(request, reply),
    };
    match request.upgrade_into_socket("websocket", handshake) {
        Ok((socket, held)) => {
            let watched = app
                .inbound
                .watch(&socket, &client)
                .inspect_err(|e| {
                    if UNWATCHED_WARNINGS.allow() {
                        log::warn!("a WebSocket client's pings will go unanswered: {e}");
                    }
                })
                .ok();
            set_client_nodelay(app, &socket);
            let sink = ws::WsSink::new(socket, held, watched);
            start_client(app, client, Box::new(sink), slot, "ws");
        }
        Err(e) => {
            client.close();
            log::debug!("WebSocket closed before it opened: {e}");
        }
    }
}

/// `GET /api/work?credit=N`: a worker of `--work pull` connects over
/// WebSocket to be handed tasks, at most N at once (default 1). It changes
/// what happens to events, so the rules of the mutating endpoints apply:
/// the daemon's own `Host`, an admitted `Origin`, and the token.
fn connect_worker(app: &App, request: Request) {
    let Some(remote_workers) = app.work.clone() else {
        let message = format!(
            "/api/work serves --work pull; this daemon runs --work {}",
            app.config.work.name()
        );
        return respond(request, error(404, &message));
    };
    if let Err(refusal) = app.admit_mutation(&request) {
        return respond(request, refusal);
    }
    let credit = match query::credit(request.url(), work::pull::MAX_CREDIT) {
        Ok(credit) => credit,
        Err(e) => return respond(request, error(400, &e)),
    };
    let handshake = match websocket_handshake(&request, "/api/work") {
        Ok(handshake) => handshake,
        Err(refusal) => return respond(request, refusal),
    };
    let write_timeout = std::time::Duration::from_secs(app.config.write_timeout);
    let connected = request
        .upgrade_into_socket("websocket", handshake)
        .and_then(|(socket, held)| remote_workers.connect(socket, held, credit, write_timeout));
    if let Err(e) = connected {
        log::debug!("worker connection closed before it opened: {e}");
    }
}

/// A dashboard's socket leaves Nagle on unless `--client-nodelay` (the
/// listener's TCP_NODELAY, which every accepted socket inherits, suits
/// request and answer, not a stream of small messages): at 1,000 clients
/// × 50 messages/s it halves the segments, ACKs and server CPU per message
/// (BENCHMARKS.md, "Against nginx + nchan").
fn set_client_nodelay(app: &App, socket: &std::net::TcpStream) {
    if let Err(e) = socket.set_nodelay(app.config.client_nodelay) {
        log::debug!("could not set a client's TCP_NODELAY: {e}");
    }
}

/// `GET /events`: a Server-Sent Events stream on the same terms as `/ws`;
/// `cors_origin` is what a page admitted by `--allowed-origin` is told.
fn open_event_stream(app: &App, request: Request, cors_origin: Option<String>) {
    let last_event_id = header_value(&request, "Last-Event-ID").map(str::to_owned);
    let (slot, client) = match join(app, &request, Transport::Sse, last_event_id.as_deref()) {
        Ok(joined) => joined,
        Err(reply) => return respond(request, reply),
    };
    let epoch = app.log.epoch();
    let opened = request.into_socket().and_then(|(socket, held)| {
        set_client_nodelay(app, &socket);
        sse::SseSink::open(socket, held, epoch, cors_origin.as_deref())
    });
    match opened {
        Ok(sink) => start_client(app, client, Box::new(sink), slot, "sse"),
        Err(e) => {
            client.close();
            log::debug!("event stream closed before it opened: {e}");
        }
    }
}

/// Gives a subscribed client its socket and starts its thread (`ws-1`, `sse-2`, …).
fn start_client(app: &App, client: Arc<Client>, sink: Box<dyn Sink>, slot: Slot, kind: &str) {
    let name = format!(
        "{kind}-{}",
        app.next_client.fetch_add(1, Ordering::Relaxed) + 1
    );
    log::debug!("{name} connected");
    client.attach(sink);
    if let Err(e) = delivery::spawn_client(client, Arc::clone(&app.log), slot, name) {
        log::warn!("could not start a client thread: {e}");
    }
}

/// Takes a client slot and subscribes the client to the fan-out with what its
/// query asks for (`stats`, `epoch` + `since`, `replay`, `status`);
/// `resume_from` is an SSE `Last-Event-ID`, which wins over `since`.
fn join(
    app: &App,
    request: &Request,
    transport: Transport,
    resume_from: Option<&str>,
) -> Result<(Slot, Arc<Client>), Reply> {
    let interest = query::interest(request.url(), resume_from, app.history_capacity)
        .map_err(|e| error(400, &e))?;
    let Some(slot) = app.slots.try_take(transport) else {
        let message = format!(
            "client limit reached ({} connected); try again later",
            app.slots.max()
        );
        return Err(error(503, &message));
    };
    let client = Arc::new(Client::new(interest, Arc::clone(&app.client_counts)));
    if !app.subscriptions.subscribe(Arc::clone(&client)) {
        return Err(error(503, "shutting down"));
    }
    Ok((slot, client))
}

/// `GET /api/events?since=SEQ&epoch=E&limit=N`: retained outcomes after SEQ,
/// oldest first, at most [`MAX_PAGE_OUTCOMES`] and [`MAX_PAGE_BYTES`] of
/// them (a client pages on with `since=` the last `seq` it got).
/// `X-Punctual-Epoch` names this run; a position from another run is
/// answered from this run's start with `X-Punctual-Reset: <the epoch given,
/// or none>`. Outcomes no longer retained are named in
/// `X-Punctual-Gap: FROM-TO`. The page is written from the log's own
/// buffers as the client reads it, never built whole first.
fn recent_events(app: &App, request: Request, cors: Option<&str>) {
    let (since, limit, epoch) = match query::events_page(request.url()) {
        Ok(page) => page,
        Err(e) => return respond(request, with_cors(error(400, &e), cors)),
    };
    let Some(slot) = app.pages.take() else {
        let busy = error(
            503,
            "too many pages of /api/events being written; retry in a second",
        )
        .with_header(header("Retry-After", "1"));
        return respond(request, busy);
    };
    let position = Position { epoch, seq: since };
    let replay = app
        .log
        .after(&position, limit.min(MAX_PAGE_OUTCOMES), MAX_PAGE_BYTES);
    let mut headers = vec![
        header("Content-Type", "application/json"),
        header("Cache-Control", "no-store"),
        header("X-Punctual-Epoch", app.log.epoch().as_str()),
    ];
    if let Some(reset) = &replay.reset {
        let previous = reset.previous.as_ref().map_or("none", Epoch::as_str);
        headers.push(header("X-Punctual-Reset", previous));
    }
    if let Some((from, to)) = replay.gap {
        headers.push(header("X-Punctual-Gap", &format!("{from}-{to}")));
    }
    let page = Page::new(replay.messages, slot);
    let length = page.len();
    let reply = Response::new(StatusCode(200), headers, page, Some(length), None);
    if let Err(e) = request.respond(with_cors(reply, cors)) {
        log::debug!("could not send a page of /api/events: {e}");
    }
}

/// Where webhooks are posted: `/api/webhook/<producer>`.
const WEBHOOK_PREFIX: &str = "/api/webhook/";

/// `POST /api/webhook/<producer>?deadlineMs=&workMs=`: any JSON body is one
/// event from `producer`, its payload. The rules of `POST /api/events` apply
/// (`Host`, `Origin`, token, `--max-body`); the payload may take all of
/// `--max-body` but the room of the outcome's other fields.
fn webhook(app: &App, request: &mut Request, producer: &str) -> Reply {
    if let Err(refusal) = app.admit_mutation(request) {
        return refusal;
    }
    if let Err(e) = webhook_producer(producer) {
        return error(400, &e);
    }
    let query = match query::webhook(request.url()) {
        Ok(query) => query,
        Err(e) => return error(400, &e),
    };
    let format = match ingest::webhook_format(header_value(request, "Content-Type")) {
        Ok(format) => format,
        Err(refusal) => return error(refusal.status, &refusal.message),
    };
    let body = match read_body(request, app.config.max_body) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let parsed = ingest::parse_webhook(
        producer,
        format,
        &body,
        query,
        Instant::now(),
        &app.clock,
        app.default_deadline(),
        app.config.max_body,
    );
    match parsed {
        Ok(event) => enter(app, vec![event]),
        Err(refusal) => error(refusal.status, &refusal.message),
    }
}

/// A producer named in a URL path: letters, digits and `.`, `_`, `~`, `-`
/// (nothing that needs escaping), 1 to 64 of them.
fn webhook_producer(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
    if name.is_empty()
        || name.len() > crate::pipeline::event::MAX_PRODUCER_CHARS
        || !name.chars().all(allowed)
    {
        return Err(format!(
            "producer in {WEBHOOK_PREFIX}<producer>: 1 to {} letters, digits, '.', '_', '~' or '-', got {name:?}",
            crate::pipeline::event::MAX_PRODUCER_CHARS
        ));
    }
    Ok(())
}

/// `POST /api/events`: validates the whole batch, then enters every event
/// with the same capacity rule as the generator.
fn ingest(app: &App, request: &mut Request) -> Reply {
    if let Err(refusal) = app.admit_mutation(request) {
        return refusal;
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
        match ingest::parse_batch(format, &body, received, &app.clock, app.default_deadline()) {
            Ok(events) => events,
            Err(refusal) => return error(refusal.status, &refusal.message),
        };
    enter(app, events)
}

/// Submits validated events and answers what became of them.
fn enter(app: &App, events: Vec<crate::pipeline::event::Event>) -> Reply {
    if let Some(refusal) = standby_refusal(app) {
        return refusal;
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let dropped = match &app.entrance {
        Entrance::Intake(intake) => events
            .into_iter()
            .map(|event| intake.submit(event))
            .filter(|entry| *entry == Entry::QueueFull)
            .count(),
        // In the stream: the processor decides queue-full, and says so in
        // each event's outcome.
        Entrance::Stream(forwarder) => match forwarder.forward(&events) {
            Ok(()) => 0,
            Err(refused) => return not_taken(&refused),
        },
    };
    let answer =
        serde_json::json!({ "accepted": ids.len() - dropped, "dropped": dropped, "ids": ids });
    json(202, answer.to_string().into_bytes())
}

/// A standby processor takes neither events nor settings: they would be
/// judged or applied where no edge sees them.
fn standby_refusal(app: &App) -> Option<Reply> {
    let reason = app.health.standby()?;
    let message = format!("{reason}: post to an edge, or to the active processor; retry");
    Some(error(503, &message).with_header(header("Retry-After", "1")))
}

/// An edge that could not put a batch in the stream: nothing was taken, and
/// the producer is told when to try again.
fn not_taken(refused: &Refused) -> Reply {
    let message = match refused {
        Refused::Unreachable(reason) => {
            format!("this edge cannot reach Redis ({reason}): nothing was taken; retry")
        }
        Refused::Backlog => format!(
            "{MAX_WAITING_BATCHES} batches already wait for the processor: nothing was taken; retry"
        ),
        Refused::NoAnswer | Refused::Unanswered => "the processor did not answer; retry".to_owned(),
    };
    error(503, &message).with_header(header("Retry-After", "1"))
}
