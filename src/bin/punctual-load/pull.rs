//! The tool's own workers, so the work costs nothing and the verdicts show
//! the daemon's cost of handing work out: the HTTP worker (`--http-worker`,
//! the spawned daemon's `--work-url`) and the pull workers (`--pull-workers`,
//! WebSocket clients of `/api/work`).

use std::collections::BTreeMap;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use serde_json::value::RawValue;
use tungstenite::{Message, WebSocket};

use crate::clients::{READER_STACK, Socket, connect_websocket};
use crate::report::{Connections, PullReport};

/// The daemon's `--work-url` endpoint, served while the tool runs.
pub struct HttpWorker {
    /// Dropping it closes the listener; it lives until the daemon is stopped.
    _server: tiny_http::Server,
    pub url: String,
    pub answered: Arc<AtomicU64>,
}

/// Serves an empty 200 to every request on a free loopback port.
///
/// Each daemon worker thread keeps one connection alive and waits for its
/// answer before the next call, so the requests are answered on their
/// connection's own thread (the patched tiny_http's `handler`): tiny_http
/// starts one such thread per open connection (four idle to begin with), so
/// every worker thread's call is answered at once, none waits behind another's
/// in a shared queue. No limits are set: the only client is the daemon.
pub fn start_http_worker() -> Result<HttpWorker, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot start the HTTP worker: {e}");
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| fail(&e))?;
    let addr = listener.local_addr().map_err(|e| fail(&e))?;
    let answered = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&answered);
    let handler: tiny_http::Handler = Arc::new(move |request: tiny_http::Request| {
        // Counted once the answer is written: a call the daemon got back.
        if request.respond(tiny_http::Response::empty(200)).is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let options = tiny_http::ServerOptions {
        handler: Some(handler),
        ..Default::default()
    };
    let server =
        tiny_http::Server::from_listener_with(listener, None, options).map_err(|e| fail(&e))?;
    Ok(HttpWorker {
        _server: server,
        url: format!("http://{addr}/work"),
        answered,
    })
}

/// The connected pull workers, and why the others are not.
pub struct PullWorkers {
    requested: u32,
    sockets: Vec<Socket>,
    threads: Vec<JoinHandle<Option<String>>>,
    failures: BTreeMap<String, u64>,
    /// Tasks answered `done`, by all of them.
    answered: Arc<AtomicU64>,
    /// Set just before the tool closes the connections.
    stopping: Arc<AtomicBool>,
}

/// What is read of a task: its id, as the JSON text it came as, so that the
/// answer names it exactly (escapes and all) without decoding it.
#[derive(serde::Deserialize)]
struct TaskId<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    id: &'a RawValue,
}

/// Connects `count` workers one after another, each then answered on its
/// own thread; a worker that cannot connect is counted with its reason.
pub fn connect_pull_workers(count: u32, credit: u32, addr: SocketAddr) -> PullWorkers {
    let mut workers = PullWorkers {
        requested: count,
        sockets: Vec::with_capacity(count as usize),
        threads: Vec::with_capacity(count as usize),
        failures: BTreeMap::new(),
        answered: Arc::new(AtomicU64::new(0)),
        stopping: Arc::new(AtomicBool::new(false)),
    };
    for i in 0..count {
        let url = format!("ws://{addr}/api/work?credit={credit}");
        let result = connect_websocket(addr, &url).and_then(|(socket, ws)| {
            let (answered, stopping) =
                (Arc::clone(&workers.answered), Arc::clone(&workers.stopping));
            let thread = thread::Builder::new()
                .name(format!("pull-{i}"))
                .stack_size(READER_STACK)
                .spawn(move || answer_tasks(ws, &answered, &stopping))
                .map_err(|e| format!("cannot start a pull worker thread: {e}"))?;
            Ok((socket, thread))
        });
        match result {
            Ok((socket, thread)) => {
                workers.sockets.push(socket);
                workers.threads.push(thread);
            }
            Err(why) => *workers.failures.entry(why).or_default() += 1,
        }
    }
    workers
}

/// Answers `done` to every task as soon as it is read, until the connection
/// ends; returns why it did, unless the tool ended it.
fn answer_tasks(
    mut ws: Box<WebSocket<Socket>>,
    answered: &AtomicU64,
    stopping: &AtomicBool,
) -> Option<String> {
    let why = loop {
        let text = match ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                break frame.map_or("the daemon sent Close".into(), |f| {
                    format!("the daemon sent Close {}: {}", f.code, f.reason)
                });
            }
            Ok(_) => continue, // Ping (answered by tungstenite), Pong, Binary: not tasks.
            Err(e) => break e.to_string(),
        };
        let Ok(task) = serde_json::from_str::<TaskId>(text.as_str()) else {
            let start: String = text.as_str().chars().take(200).collect();
            break format!("unreadable task: {start}");
        };
        if task.kind != "task" {
            continue;
        }
        let done = format!(r#"{{"type":"done","id":{}}}"#, task.id.get());
        if let Err(e) = ws.send(Message::text(done)) {
            break format!("answer: {e}");
        }
        answered.fetch_add(1, Ordering::Relaxed);
    };
    (!stopping.load(Ordering::Relaxed)).then_some(why)
}

/// Ends every worker's connection from this side; reports how many had
/// connected, why the others had not or had ended early, and the tasks they
/// answered; `None` if none were asked for.
pub fn close_pull_workers(workers: PullWorkers) -> Option<PullReport> {
    workers.stopping.store(true, Ordering::Relaxed);
    for socket in &workers.sockets {
        let _ = socket.0.shutdown(Shutdown::Both);
    }
    let ended: Vec<String> = workers
        .threads
        .into_iter()
        .filter_map(|t| {
            t.join()
                .unwrap_or_else(|_| Some("the worker thread panicked".into()))
        })
        .collect();
    let ended: Vec<&str> = ended.iter().map(String::as_str).collect();
    (workers.requested > 0).then(|| PullReport {
        connections: Connections::new(
            workers.requested,
            workers.sockets.len(),
            &workers.failures,
            &ended,
        ),
        tasks_answered: workers.answered.load(Ordering::Relaxed),
    })
}
