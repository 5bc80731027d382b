//! The measured clients: WebSocket (`/ws`) and SSE (`/events`) connections,
//! one small-stack reader thread each, and the `Tally` each reader keeps of
//! what it saw; also the socket and WebSocket handshake the tool's other
//! WebSocket clients (replays, pull workers) share.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{HandshakeError, Message, WebSocket};

/// Stack of a reader thread: its buffers and histograms live on the heap.
pub const READER_STACK: usize = 64 * 1024;
/// Socket read buffer of a client: a few dozen ~250-byte events per read.
const READ_BUFFER: usize = 8 * 1024;
/// Largest delay the histograms resolve, in microseconds (60 s).
const MAX_DELAY_US: u64 = 60_000_000;
/// How long one connection attempt, handshake included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Wall-clock time in epoch milliseconds, the scale of `processedAt`.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// What every reader shares with `main`.
pub struct Shared {
    /// The window in epoch ms, as f64 bits; infinite (nothing counts) until set.
    start: AtomicU64,
    end: AtomicU64,
    seconds: usize,
    /// Readers that have seen an event decided after the window: they have
    /// everything from inside it they are going to get.
    caught_up: AtomicUsize,
    /// Readers whose stream ended before the run did.
    ended: AtomicUsize,
    /// Set just before the tool closes the connections: errors after it are
    /// its own doing.
    stopping: AtomicBool,
}

impl Shared {
    /// Nothing counts until the window is set.
    pub fn new(seconds: f64) -> Self {
        Shared {
            start: AtomicU64::new(f64::INFINITY.to_bits()),
            end: AtomicU64::new(f64::INFINITY.to_bits()),
            seconds: seconds.ceil() as usize,
            caught_up: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// Fixes the window: `warmup` seconds from now, `seconds` long.
    pub fn set_window(&self, warmup: f64, seconds: f64) {
        let start = now_ms() + warmup * 1000.0;
        self.start.store(start.to_bits(), Ordering::Relaxed);
        let end = start + seconds * 1000.0;
        self.end.store(end.to_bits(), Ordering::Relaxed);
    }

    /// Readers that have everything from the window they will get, or
    /// whose stream ended.
    pub fn settled(&self) -> usize {
        self.caught_up.load(Ordering::Relaxed) + self.ended.load(Ordering::Relaxed)
    }

    pub fn caught_up(&self) -> usize {
        self.caught_up.load(Ordering::Relaxed)
    }

    fn window(&self) -> (f64, f64) {
        (
            f64::from_bits(self.start.load(Ordering::Relaxed)),
            f64::from_bits(self.end.load(Ordering::Relaxed)),
        )
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// A client's socket, shared between its reader (which owns the stream on
/// top of it) and `main` (which shuts it down at the end): one descriptor
/// per client, not two.
#[derive(Clone)]
pub struct Socket(pub Arc<TcpStream>);

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

fn open_socket(addr: SocketAddr) -> Result<Socket, String> {
    let stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    // Bounds the handshake; lifted once the stream is open.
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(Socket(Arc::new(stream)))
}

/// What one client saw.
pub struct Tally {
    /// Events decided inside the window.
    pub received: u64,
    /// Sequence numbers missing between consecutive events (from the hello on).
    pub missing: u64,
    pub out_of_order: u64,
    pub gap_notices: u64,
    pub resets: u64,
    /// Newest `seq` seen (the hello's at first).
    newest: Option<u64>,
    /// Oldest and newest `seq` decided inside the window.
    pub first_in_window: u64,
    pub last_in_window: u64,
    /// The run's epoch from the hello; SSE ids must name it.
    epoch: Vec<u8>,
    /// SSE ids that were not `EPOCH:SEQ` of this run and event.
    pub bad_ids: u64,
    pub delay_us: Histogram<u32>,
    pub end_to_end_us: Histogram<u32>,
    /// `processedAt − createdAt` of events worked on: the pipeline and the
    /// work, delivery left out.
    pub verdict_us: Histogram<u32>,
    /// The `queueMs` and `workMs` of the same events: where the verdict's
    /// time went (the daemon's own split; `waitMs` is the rest).
    pub queue_us: Histogram<u32>,
    pub work_us: Histogram<u32>,
    /// How long after its deadline each late verdict came (latency − deadline).
    pub lateness_us: Histogram<u32>,
    pub max_delay_us: u64,
    /// Per second of the window (by `processedAt`): delay sum (µs) and count.
    pub by_second: Vec<(u64, u64)>,
    past_end: bool,
    pub unparsed: u64,
    pub ended: Option<String>,
}

/// A histogram of microseconds to two significant figures (< 1 % error);
/// `u32` counts keep it at ~10 KiB a client.
pub fn delay_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_DELAY_US, 2).expect("constant bounds are valid")
}

impl Tally {
    fn new(seconds: usize) -> Self {
        Tally {
            received: 0,
            missing: 0,
            out_of_order: 0,
            gap_notices: 0,
            resets: 0,
            newest: None,
            first_in_window: u64::MAX,
            last_in_window: 0,
            epoch: Vec::new(),
            bad_ids: 0,
            delay_us: delay_histogram(),
            end_to_end_us: delay_histogram(),
            verdict_us: delay_histogram(),
            queue_us: delay_histogram(),
            work_us: delay_histogram(),
            lateness_us: delay_histogram(),
            max_delay_us: 0,
            by_second: vec![(0, 0); seconds],
            past_end: false,
            unparsed: 0,
            ended: None,
        }
    }

    /// One JSON message of either transport. Only the prefix and the few
    /// numbers needed are looked at; nothing is allocated.
    fn message(&mut self, json: &[u8], received_at: f64, shared: &Shared) -> Option<u64> {
        if json.starts_with(br#"{"type":"event""#) {
            return self.event(json, received_at, shared);
        }
        if json.starts_with(br#"{"type":"hello""#) {
            self.newest = number(json, br#""seq":"#);
            self.epoch = string(json, br#""epoch":""#).unwrap_or_default().to_vec();
        } else if json.starts_with(br#"{"type":"gap""#) {
            self.gap_notices += 1;
        } else if json.starts_with(br#"{"type":"reset""#) {
            self.resets += 1;
            self.epoch = string(json, br#""epoch":""#).unwrap_or_default().to_vec();
        } else if !json.starts_with(br#"{"type":"stats""#) {
            self.unparsed += 1;
        }
        None
    }

    /// Counts an event; answers its `seq`.
    fn event(&mut self, json: &[u8], received_at: f64, shared: &Shared) -> Option<u64> {
        let seq = number(json, br#""seq":"#);
        let created_at = number(json, br#""createdAt":"#);
        let processed_at = number(json, br#""processedAt":"#);
        let (Some(seq), Some(created_at), Some(processed_at)) = (seq, created_at, processed_at)
        else {
            self.unparsed += 1;
            return None;
        };
        self.follow(seq);
        let (start, end) = shared.window();
        if processed_at >= end && !self.past_end {
            self.past_end = true;
            shared.caught_up.fetch_add(1, Ordering::Relaxed);
        }
        if processed_at >= start && processed_at < end {
            self.in_window(seq, received_at, created_at, processed_at, start);
            self.judged(json, created_at, processed_at);
        }
        Some(seq)
    }

    /// Sequence continuity: every `seq` after the hello's, once, in order.
    fn follow(&mut self, seq: u64) {
        match self.newest {
            Some(newest) if seq > newest + 1 => self.missing += seq - newest - 1,
            Some(newest) if seq <= newest => self.out_of_order += 1,
            _ => {}
        }
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
    }

    fn in_window(&mut self, seq: u64, received_at: f64, created: f64, processed: f64, start: f64) {
        self.received += 1;
        self.first_in_window = self.first_in_window.min(seq);
        self.last_in_window = self.last_in_window.max(seq);
        let micros = |ms: f64| (ms.max(0.0) * 1000.0) as u64;
        let delay_us = micros(received_at - processed);
        self.max_delay_us = self.max_delay_us.max(delay_us);
        self.delay_us
            .saturating_record(delay_us.clamp(1, MAX_DELAY_US));
        self.end_to_end_us
            .saturating_record(micros(received_at - created).clamp(1, MAX_DELAY_US));
        let second = ((processed - start) / 1000.0) as usize;
        if let Some((sum, n)) = self.by_second.get_mut(second) {
            *sum += delay_us;
            *n += 1;
        }
    }

    /// How long an event worked on (on time, late or failed) took to its
    /// verdict. Drops are left out: they are decided at once, without work,
    /// and under overload they would hide what the work costs.
    fn judged(&mut self, json: &[u8], created: f64, processed: f64) {
        if after(json, br#""status":"dropped""#).is_none() {
            let us = |ms: f64| ((ms.max(0.0) * 1000.0) as u64).clamp(1, MAX_DELAY_US);
            self.verdict_us.saturating_record(us(processed - created));
            if let Some(queue) = number::<f64>(json, br#""queueMs":"#) {
                self.queue_us.saturating_record(us(queue));
            }
            if let Some(work) = number::<f64>(json, br#""workMs":"#) {
                self.work_us.saturating_record(us(work));
            }
        }
        if after(json, br#""status":"late""#).is_some() {
            let deadline: f64 = number(json, br#""deadlineMs":"#).unwrap_or(0.0);
            let us = ((processed - created - deadline).max(0.0) * 1000.0) as u64;
            self.lateness_us
                .saturating_record(us.clamp(1, MAX_DELAY_US));
        }
    }

    /// Why the stream ended, unless the tool ended it.
    fn end(&mut self, why: String, shared: &Shared) {
        if !shared.stopping() {
            self.ended = Some(why);
            shared.ended.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The number after the first `key` (up to `,` or `}`).
pub fn number<T: std::str::FromStr>(json: &[u8], key: &[u8]) -> Option<T> {
    let rest = after(json, key)?;
    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The string after the first `key` (which ends with the opening quote);
/// only for values that hold no escapes (an epoch).
pub fn string<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let rest = after(json, key)?;
    Some(&rest[..rest.iter().position(|&b| b == b'"')?])
}

fn after<'a>(bytes: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = bytes.windows(key.len()).position(|w| w == key)? + key.len();
    Some(&bytes[at..])
}

/// A client that has finished its handshake, ready for its reader thread.
pub enum Stream {
    WebSocket(Box<WebSocket<Socket>>),
    Sse(BufReader<Socket>),
}

/// A WebSocket client of `path` on `addr` (nchan's subscriber location, say).
pub fn connect_ws_at(addr: SocketAddr, path: &str) -> Result<(Socket, Stream), String> {
    let (socket, ws) = connect_websocket(addr, &format!("ws://{addr}{path}"))?;
    Ok((socket, Stream::WebSocket(ws)))
}

/// A WebSocket client of `url` (on the daemon at `addr`), handshake done.
pub fn connect_websocket(
    addr: SocketAddr,
    url: &str,
) -> Result<(Socket, Box<WebSocket<Socket>>), String> {
    let socket = open_socket(addr)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let (ws, _) = tungstenite::client::client_with_config(url, socket.clone(), Some(config))
        .map_err(|e| match e {
            HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                format!("handshake refused: {}", response.status())
            }
            other => format!("handshake: {other}"),
        })?;
    socket.0.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((socket, Box::new(ws)))
}

/// `GET /events`; the answer is a close-delimited `text/event-stream`.
pub fn connect_sse(addr: SocketAddr) -> Result<(Socket, Stream), String> {
    let socket = open_socket(addr)?;
    let request = format!(
        "GET /events?control=1 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    (&*socket.0)
        .write_all(request.as_bytes())
        .map_err(|e| format!("request: {e}"))?;
    let mut reader = BufReader::with_capacity(READ_BUFFER, socket.clone());
    let mut line = String::new();
    let mut status = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("response head: {e}"))?;
        if n == 0 {
            return Err("response head: connection closed".into());
        }
        if status.is_empty() {
            status = line.trim_end().to_string();
        } else if line.trim_end().is_empty() {
            break;
        } else if line.to_ascii_lowercase().starts_with("transfer-encoding:") {
            return Err(format!("unexpected {}", line.trim_end()));
        }
    }
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("refused: {status}"));
    }
    socket.0.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((socket, Stream::Sse(reader)))
}

fn read_ws(ws: &mut WebSocket<Socket>, tally: &mut Tally, shared: &Shared) {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                tally.message(text.as_bytes(), now_ms(), shared);
            }
            Ok(Message::Close(frame)) => {
                let why = frame.map_or("Close".into(), |f| format!("Close {}", f.code));
                return tally.end(format!("the daemon sent {why}"), shared);
            }
            Ok(_) => {} // Ping (answered by tungstenite), Pong, Binary: nothing to measure.
            Err(e) => return tally.end(e.to_string(), shared),
        }
    }
}

/// Reads SSE messages (`id:`, `event:`, `data:` lines up to a blank line).
/// The JSON is in `data:`; an outcome's id must be `EPOCH:SEQ` of this run.
fn read_sse(reader: &mut BufReader<Socket>, tally: &mut Tally, shared: &Shared) {
    let mut line = Vec::with_capacity(1024);
    let mut data = Vec::with_capacity(1024);
    let mut id = Vec::with_capacity(64);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return tally.end("the daemon closed the stream".into(), shared),
            Ok(_) => {}
            Err(e) => return tally.end(e.to_string(), shared),
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if let Some(value) = text.strip_prefix(b"data: ") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
        } else if let Some(value) = text.strip_prefix(b"id: ") {
            id.clear();
            id.extend_from_slice(value);
        } else if text.is_empty() && !data.is_empty() {
            let seq = tally.message(&data, now_ms(), shared);
            if let Some(seq) = seq {
                check_id(&id, seq, tally);
            }
            data.clear();
            id.clear();
        }
        // `event:` repeats the JSON's type, `retry:` and `:` comments carry nothing.
    }
}

/// An outcome's SSE id is `EPOCH:SEQ`, naming this run and this outcome.
fn check_id(id: &[u8], seq: u64, tally: &mut Tally) {
    let ok = id.strip_prefix(tally.epoch.as_slice()).is_some_and(|rest| {
        rest.strip_prefix(b":")
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok())
            == Some(seq)
    });
    if !ok || tally.epoch.is_empty() {
        tally.bad_ids += 1;
    }
}

fn spawn_reader(
    name: String,
    stream: Stream,
    shared: &Arc<Shared>,
) -> io::Result<JoinHandle<Tally>> {
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name(name)
        .stack_size(READER_STACK)
        .spawn(move || {
            let mut tally = Tally::new(shared.seconds);
            match stream {
                Stream::WebSocket(mut ws) => read_ws(&mut ws, &mut tally, &shared),
                Stream::Sse(mut reader) => read_sse(&mut reader, &mut tally, &shared),
            }
            tally
        })
}

/// The clients of one transport that are connected, and why the others are not.
pub struct Connected {
    pub sockets: Vec<Socket>,
    pub readers: Vec<JoinHandle<Tally>>,
    pub failures: BTreeMap<String, u64>,
}

/// Connects the clients one after another from this thread, so no burst
/// overflows the listen backlog, each to the next of `addrs` in turn; each
/// then reads on its own thread.
pub fn connect_all(
    count: u32,
    kind: &str,
    connect: &Connect<'_>,
    addrs: &[SocketAddr],
    shared: &Arc<Shared>,
) -> Connected {
    let mut connected = Connected::with_capacity(count);
    for i in 0..count {
        let addr = addrs[i as usize % addrs.len()];
        connected.connect_one(format!("{kind}-{i}"), connect, addr, shared);
    }
    connected
}

/// How a client of one kind connects to an address.
pub type Connect<'a> = dyn Fn(SocketAddr) -> Result<(Socket, Stream), String> + 'a;

impl Connected {
    pub fn with_capacity(count: u32) -> Self {
        Connected {
            sockets: Vec::with_capacity(count as usize),
            readers: Vec::with_capacity(count as usize),
            failures: BTreeMap::new(),
        }
    }

    /// Connects one client to `addr`; its reader thread is called `name`.
    pub fn connect_one(
        &mut self,
        name: String,
        connect: &Connect<'_>,
        addr: SocketAddr,
        shared: &Arc<Shared>,
    ) {
        let result = connect(addr).and_then(|(socket, stream)| {
            let reader = spawn_reader(name, stream, shared)
                .map_err(|e| format!("cannot start a reader thread: {e}"))?;
            Ok((socket, reader))
        });
        match result {
            Ok((socket, reader)) => {
                self.sockets.push(socket);
                self.readers.push(reader);
            }
            Err(why) => *self.failures.entry(why).or_default() += 1,
        }
    }
}

/// Ends every stream from this side and collects the readers' tallies.
pub fn close_all(clients: Connected, shared: &Shared) -> Vec<Tally> {
    shared.stopping.store(true, Ordering::Relaxed);
    for socket in &clients.sockets {
        let _ = socket.0.shutdown(Shutdown::Both);
    }
    // A reader that panicked has no tally; it shows as a client short.
    clients
        .readers
        .into_iter()
        .filter_map(|r| r.join().ok())
        .collect()
}
