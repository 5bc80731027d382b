//! Real work (`--work http` and `--work pull`): a test worker that answers as
//! told, and the verdicts punctual gives on what came back — on time, late at
//! the deadline while the worker is still busy, failed on an error status, a
//! refused connection or a worker gone, admission that learns the worker's
//! real duration, credit, the token, the conservation count, a worker that
//! stops reading (it holds up no other), and workers that come and go (they
//! leave no descriptor behind).

use crate::common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Client, assert_balances, eventually, get_json, http, next_message, outcome_of, post_events,
    start, totals,
};
use punctual::Config;
use punctual::WorkMode;
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(20);

/// The last call the endpoint took: its JSON body and its (lower-cased) headers.
type Call = (Value, Vec<(String, String)>);

/// What the test endpoint does with each call.
#[derive(Clone, Copy)]
struct Behaviour {
    delay: Duration,
    status: u16,
}

/// An HTTP endpoint standing in for the user's worker; each call is
/// answered on its own thread after `delay` with `status`.
struct TestEndpoint {
    url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    calls: Arc<AtomicU64>,
    last: Arc<Mutex<Option<Call>>>,
}

impl TestEndpoint {
    fn start() -> TestEndpoint {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind"));
        let url = format!("http://{}/work", server.server_addr().to_ip().expect("ip"));
        let behaviour = Arc::new(Mutex::new(Behaviour {
            delay: Duration::ZERO,
            status: 200,
        }));
        let calls = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(None));
        let (b, c, l) = (behaviour.clone(), calls.clone(), last.clone());
        thread::spawn(move || {
            for mut request in server.incoming_requests() {
                c.fetch_add(1, Ordering::SeqCst);
                let behaviour = *b.lock().expect("lock");
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let headers = request
                    .headers()
                    .iter()
                    .map(|h| (h.field.to_string().to_lowercase(), h.value.to_string()))
                    .collect();
                *l.lock().expect("lock") = serde_json::from_str(&body).ok().map(|v| (v, headers));
                thread::spawn(move || {
                    thread::sleep(behaviour.delay);
                    let _ = request.respond(
                        tiny_http::Response::from_string("ok").with_status_code(behaviour.status),
                    );
                });
            }
        });
        TestEndpoint {
            url,
            behaviour,
            calls,
            last,
        }
    }

    fn set(&self, delay_ms: u64, status: u16) {
        *self.behaviour.lock().expect("lock") = Behaviour {
            delay: Duration::from_millis(delay_ms),
            status,
        };
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

fn work_http(url: &str) -> impl FnOnce(&mut Config) + '_ {
    move |c| {
        c.rate = 0;
        c.work = WorkMode::Http;
        c.work_url = Some(url.to_owned());
    }
}

/// Posts one event and returns its id.
fn post(addr: SocketAddr, deadline_ms: u64) -> String {
    let response = post_events(
        addr,
        "application/json",
        json!({ "deadlineMs": deadline_ms, "payload": {"n": 1} })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(response.status, 202, "{response:?}");
    response.json()["ids"][0]
        .as_str()
        .expect("an id")
        .to_owned()
}

#[test]
fn http_work_is_on_time_late_at_the_deadline_or_failed_with_the_status() {
    let endpoint = TestEndpoint::start();
    let server = start(work_http(&endpoint.url));
    let addr = server.local_addr();

    let id = post(addr, 1000);
    let on_time = outcome_of(addr, &id, WAIT);
    assert_eq!(on_time["status"], "on-time", "{on_time}");
    let (task, headers) = endpoint.last.lock().expect("lock").clone().expect("a call");
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["deadlineMs"], 1000);
    assert_eq!(task["payload"]["n"], 1);
    assert_eq!(task["producer"], "ingest");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let deadline_at: f64 = header("x-punctual-deadline-at")
        .expect("deadline header")
        .parse()
        .expect("ms");
    assert!((deadline_at - task["deadlineAt"].as_f64().expect("deadlineAt")).abs() <= 1.0);
    assert!(header("x-punctual-time-left-ms").is_some());

    // The worker takes 5 s; the verdict comes at the 200 ms deadline, not then.
    endpoint.set(5_000, 200);
    let posted = Instant::now();
    let id = post(addr, 200);
    let late = outcome_of(addr, &id, Duration::from_secs(4));
    assert!(
        posted.elapsed() < Duration::from_millis(4_500),
        "waited for the worker"
    );
    assert_eq!(late["status"], "late", "{late}");
    assert!(
        late["latencyMs"].as_f64().expect("latency") >= 200.0,
        "{late}"
    );

    endpoint.set(0, 500);
    let id = post(addr, 1000);
    let failed = outcome_of(addr, &id, WAIT);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"], "HTTP 500", "{failed}");
    assert!(failed.get("dropReason").is_none());

    // Stats are a snapshot a second: wait for one taken after the failure.
    assert!(eventually(WAIT, || totals(&server)["failed"].as_u64() >= Some(1)));
    assert_balances(&totals(&server));
    server.stop();
}

#[test]
fn a_refused_connection_is_a_failed_verdict_naming_it() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/work", closed.local_addr().expect("addr"));
    drop(closed);
    let server = start(work_http(&url));
    let addr = server.local_addr();
    let id = post(addr, 2000);
    let failed = outcome_of(addr, &id, WAIT);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{failed}"
    );
    let (_, stats) = get_json(addr, "/api/stats");
    assert_eq!(stats["work"]["mode"], "http");
    assert_eq!(stats["work"]["target"], url.as_str());
    assert_eq!(stats["config"]["work"], "http");
    server.stop();
}

#[test]
fn admission_learns_the_workers_real_duration_and_stops_calling_it_for_doomed_events() {
    let endpoint = TestEndpoint::start();
    endpoint.set(80, 200);
    let server = start(|c| {
        work_http(&endpoint.url)(c);
        // A seed far below the real 80 ms: only measurement can refuse.
        c.work_ms = 1;
    });
    let addr = server.local_addr();
    let learning: Vec<String> = (0..30).map(|_| post(addr, 2000)).collect();
    for id in &learning {
        assert_eq!(outcome_of(addr, id, WAIT)["status"], "on-time");
    }
    let calls = endpoint.calls();
    let doomed: Vec<String> = (0..5).map(|_| post(addr, 40)).collect();
    for id in &doomed {
        let o = outcome_of(addr, id, WAIT);
        assert_eq!(o["status"], "dropped", "{o}");
        assert_eq!(o["dropReason"], "infeasible", "{o}");
    }
    assert_eq!(
        endpoint.calls(),
        calls,
        "a doomed event was sent to the worker"
    );
    server.stop();
}

type Worker = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connects a pull worker with `credit`, presenting `token` when given.
fn pull_worker(
    addr: SocketAddr,
    credit: usize,
    token: Option<&str>,
) -> Result<Worker, tungstenite::Error> {
    let mut request = format!("ws://{addr}/api/work?credit={credit}")
        .into_client_request()
        .expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let (worker, _) = tungstenite::connect(request)?;
    if let MaybeTlsStream::Plain(stream) = worker.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    Ok(worker)
}

/// The next task the worker is handed within `timeout`.
fn next_task(worker: &mut Client, timeout: Duration) -> Option<Value> {
    let task = next_message(worker, timeout)?;
    assert_eq!(task["type"], "task", "{task}");
    Some(task)
}

fn answer(worker: &mut Worker, reply: Value) {
    worker
        .send(Message::text(reply.to_string()))
        .expect("answer");
}

fn work_pull(c: &mut Config) {
    c.rate = 0;
    c.work = WorkMode::Pull;
}

fn work_stats(addr: SocketAddr) -> Value {
    get_json(addr, "/api/stats").1["work"].clone()
}

#[test]
fn pull_without_workers_is_not_ready_and_events_expire_in_the_queue() {
    let server = start(work_pull);
    let addr = server.local_addr();
    let readyz = http(addr, "GET", "/readyz", &[], b"");
    assert_eq!(readyz.status, 503);
    let reason = String::from_utf8_lossy(&readyz.body).into_owned();
    assert!(reason.contains("no workers"), "{reason}");
    let id = post(addr, 300);
    let expired = outcome_of(addr, &id, WAIT);
    assert_eq!(expired["dropReason"], "expired", "{expired}");
    let work = work_stats(addr);
    assert_eq!(
        (work["mode"].as_str(), work["connected"].as_u64()),
        (Some("pull"), Some(0))
    );

    let mut worker = pull_worker(addr, 1, None).expect("connects");
    assert!(eventually(WAIT, || http(addr, "GET", "/readyz", &[], b"")
        .status
        == 200));
    let id = post(addr, 5000);
    let task = next_task(&mut worker, WAIT).expect("a task");
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["deadlineMs"], 5000);
    assert!(
        task["timeLeftMs"].as_u64().is_some_and(|t| t <= 5000),
        "{task}"
    );
    assert!(task["deadlineAt"].as_f64().is_some(), "{task}");
    answer(&mut worker, json!({"type": "done", "id": id}));
    assert_eq!(outcome_of(addr, &id, WAIT)["status"], "on-time");
    assert_balances(&totals(&server));
    server.stop();
}

#[test]
fn credit_bounds_the_tasks_in_flight_and_answers_free_it() {
    let server = start(work_pull);
    let addr = server.local_addr();
    let mut worker = pull_worker(addr, 3, None).expect("connects");
    assert!(eventually(WAIT, || work_stats(addr)["credit"] == 3));
    let ids: Vec<String> = (0..5).map(|_| post(addr, 10_000)).collect();
    let mut held: Vec<Value> = (0..3)
        .map(|_| next_task(&mut worker, WAIT).expect("task"))
        .collect();
    assert!(
        next_task(&mut worker, Duration::from_millis(800)).is_none(),
        "a 4th task beyond credit 3"
    );
    assert!(eventually(WAIT, || work_stats(addr)["inFlight"] == 3));
    // Answered out of order: a failure with the worker's words, then the rest.
    let first = held.remove(1);
    answer(
        &mut worker,
        json!({"type": "failed", "id": first["id"], "error": "disk full"}),
    );
    for task in held {
        answer(&mut worker, json!({"type": "done", "id": task["id"]}));
    }
    for _ in 0..2 {
        let task = next_task(&mut worker, WAIT).expect("the rest once credit is back");
        answer(&mut worker, json!({"type": "done", "id": task["id"]}));
    }
    let failed = outcome_of(addr, first["id"].as_str().expect("id"), WAIT);
    assert_eq!(
        (failed["status"].as_str(), failed["error"].as_str()),
        (Some("failed"), Some("disk full"))
    );
    for id in &ids {
        let status = outcome_of(addr, id, WAIT)["status"].clone();
        assert!(status == "on-time" || status == "failed", "{status}");
    }
    assert_balances(&totals(&server));
    server.stop();
}

#[test]
fn a_task_held_past_its_deadline_is_late_and_a_worker_gone_fails_its_tasks_at_once() {
    let server = start(work_pull);
    let addr = server.local_addr();
    let mut worker = pull_worker(addr, 2, None).expect("connects");
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 1));

    let late_id = post(addr, 200);
    let task = next_task(&mut worker, WAIT).expect("task");
    let late = outcome_of(addr, &late_id, Duration::from_secs(5));
    assert_eq!(late["status"], "late", "{late}");
    // Answered long after: ignored for the verdict, but the credit comes back.
    answer(&mut worker, json!({"type": "done", "id": task["id"]}));

    let gone_id = post(addr, 60_000);
    next_task(&mut worker, WAIT).expect("task");
    let posted = Instant::now();
    drop(worker);
    let gone = outcome_of(addr, &gone_id, Duration::from_secs(10));
    assert!(posted.elapsed() < Duration::from_secs(10));
    assert_eq!(
        (gone["status"].as_str(), gone["error"].as_str()),
        (Some("failed"), Some("worker gone"))
    );
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 0));
    assert_eq!(http(addr, "GET", "/readyz", &[], b"").status, 503);
    assert_balances(&totals(&server));
    server.stop();
}

#[test]
fn an_unreadable_answer_closes_the_worker_with_the_reason() {
    let server = start(work_pull);
    let addr = server.local_addr();
    let mut worker = pull_worker(addr, 1, None).expect("connects");
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 1));
    let id = post(addr, 30_000);
    next_task(&mut worker, WAIT).expect("task");
    worker
        .send(Message::text("{\"type\":\"finished\"}"))
        .expect("send");
    let until = Instant::now() + WAIT;
    let reason = loop {
        assert!(Instant::now() < until, "not closed");
        match worker.read() {
            Ok(Message::Close(Some(frame))) => break frame.reason.to_string(),
            Ok(_) => {}
            Err(e) if common::is_timeout(&e) => {}
            Err(e) => panic!("closed without a reason: {e}"),
        }
    };
    assert!(reason.contains("unreadable answer"), "{reason}");
    let gone = outcome_of(addr, &id, WAIT);
    assert_eq!(gone["error"], "worker gone", "{gone}");
    server.stop();
}

#[test]
fn api_work_takes_the_token_and_exists_only_in_pull_mode() {
    let server = start(|c| {
        work_pull(c);
        c.token = Some("s3cret-s3cret-s3cret".into());
    });
    let addr = server.local_addr();
    match pull_worker(addr, 1, None) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("connected without the token: {:?}", other.map(|_| ())),
    }
    match pull_worker(addr, 1, Some("wrong")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("connected with a wrong token: {:?}", other.map(|_| ())),
    }
    let bad_credit = http(
        addr,
        "GET",
        "/api/work?credit=0",
        &[("Authorization", "Bearer s3cret-s3cret-s3cret")],
        b"",
    );
    assert_eq!(bad_credit.status, 400);
    assert!(
        bad_credit.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("credit"))
    );
    let _worker =
        pull_worker(addr, 1, Some("s3cret-s3cret-s3cret")).expect("connects with the token");
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 1));
    server.stop();

    let simulating = start(|c| c.rate = 0);
    let refused = http(simulating.local_addr(), "GET", "/api/work", &[], b"");
    assert_eq!(refused.status, 404);
    assert!(
        refused.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("--work pull"))
    );
    simulating.stop();
}

#[test]
fn a_silent_worker_is_pinged_then_dropped_and_its_task_fails() {
    let server = start(work_pull);
    let addr = server.local_addr();
    // Connects and then never reads or writes again: no answer, no pong.
    let silent = pull_worker(addr, 1, None).expect("connects");
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 1));
    let id = post(addr, 120_000);
    assert!(eventually(WAIT, || work_stats(addr)["inFlight"] == 1));
    // Pinged after 15 s of silence, taken for gone after another 15 s.
    let gone = outcome_of(addr, &id, Duration::from_secs(45));
    assert_eq!(
        (gone["status"].as_str(), gone["error"].as_str()),
        (Some("failed"), Some("worker gone")),
        "{gone}"
    );
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 0));
    drop(silent);
    server.stop();
}

/// A pull worker whose receive buffer is as small as the kernel allows, so
/// that a few large tasks fill its socket once it stops reading.
fn pull_worker_small_buffer(addr: SocketAddr, credit: usize) -> WebSocket<TcpStream> {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let (worker, _) = tungstenite::client(
        format!("ws://{addr}/api/work?credit={credit}"),
        TcpStream::from(socket),
    )
    .expect("handshake");
    worker
}

/// A pull worker on its own thread that answers `done` to every task at
/// once, until `stop`; returns the ids of the tasks it was handed.
fn answering_worker(
    addr: SocketAddr,
    credit: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (thread::JoinHandle<()>, Arc<Mutex<Vec<String>>>) {
    let handed = Arc::new(Mutex::new(Vec::new()));
    let mut worker = pull_worker(addr, credit, None).expect("connects");
    let ids = Arc::clone(&handed);
    let thread = thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let text = match worker.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(e) if common::is_timeout(&e) => continue,
                Err(_) => return,
            };
            let task: Value = serde_json::from_str(&text).expect("a task is JSON");
            let id = task["id"].as_str().expect("an id").to_owned();
            ids.lock().expect("lock").push(id.clone());
            answer(&mut worker, json!({"type": "done", "id": id}));
        }
    });
    (thread, handed)
}

/// Posts one event through a webhook with a payload of about `bytes` bytes;
/// returns its id.
fn post_large(addr: SocketAddr, deadline_ms: u64, bytes: usize) -> String {
    let body = json!({ "blob": "x".repeat(bytes) }).to_string();
    let response = http(
        addr,
        "POST",
        &format!("/api/webhook/bulk?deadlineMs={deadline_ms}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(response.status, 202, "{response:?}");
    response.json()["ids"][0]
        .as_str()
        .expect("an id")
        .to_owned()
}

/// Every retained outcome, page after page (large ones fill a page quickly).
fn all_outcomes(addr: SocketAddr) -> Vec<Value> {
    let mut outcomes: Vec<Value> = Vec::new();
    loop {
        let since = outcomes
            .last()
            .map_or(0, |o| o["seq"].as_u64().expect("seq"));
        let (_, page) = get_json(addr, &format!("/api/events?since={since}"));
        let page = page.as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return outcomes;
        }
        outcomes.extend(page);
    }
}

#[test]
fn a_worker_that_stops_reading_loses_its_tasks_and_holds_up_no_other() {
    // Every task written whole into the stalled worker's socket waits for its
    // answer, holding a worker thread as any task in flight does; 16 threads
    // leave room for those few, so an event that waits here waited on a
    // write to the stalled worker. A write timeout of 1 s, far below the
    // 15 s + 15 s it takes to find a worker silent, so that only a stall can
    // drop it in time.
    let server = start(|c| {
        work_pull(c);
        c.workers = 16;
        c.write_timeout = 1;
    });
    let addr = server.local_addr();
    // Connected first and with the most credit: it is offered tasks at once.
    let stalled = pull_worker_small_buffer(addr, 64);
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (healthy, handed) = answering_worker(addr, 4, Arc::clone(&stop));
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 2));

    // Tasks of nearly a megabyte, about half of them offered to the stalled
    // worker in turn: 7 MB, more than its socket holds (a loopback send
    // buffer grows to 4 MB by default), so one is under way when it stalls,
    // and it is behind before the small events come. Due in 10 s: the
    // stalled worker is dropped long before.
    let posted = Instant::now();
    let mut ids: Vec<String> = (0..16)
        .map(|_| post_large(addr, 10_000, 896 * 1024))
        .collect();
    let mut small = Vec::new();
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(100));
        small.push(post(addr, 2_000));
    }
    ids.extend(small.iter().cloned());
    // Dropped for a socket that took nothing for --write-timeout: before a
    // silence of 15 s could even have been noticed.
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 1));
    let dropped_after = posted.elapsed();
    assert!(
        dropped_after < Duration::from_secs(10),
        "the stalled worker went after {dropped_after:?}: taken for silent, not too slow"
    );

    let judged = eventually(Duration::from_secs(30), || {
        let totals = get_json(addr, "/api/stats").1["totals"].clone();
        totals["ingested"].as_u64() == Some(ids.len() as u64) && totals["inFlight"] == 0
    });
    assert!(judged, "not every event judged within 30 s");
    let outcomes = all_outcomes(addr);
    let handed = handed.lock().expect("lock").clone();
    let mut stalled_errors = Vec::new();
    for id in &ids {
        let outcome = outcomes
            .iter()
            .find(|o| o["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no outcome for {id}"));
        let brief = json!({"status": outcome["status"], "error": outcome["error"],
            "dropReason": outcome["dropReason"], "latencyMs": outcome["latencyMs"]});
        if handed.contains(id) {
            assert_eq!(
                outcome["status"], "on-time",
                "healthy worker's task: {brief}"
            );
        } else {
            assert_eq!(
                outcome["status"], "failed",
                "stalled worker's task: {brief}"
            );
            stalled_errors.push(outcome["error"].as_str().unwrap_or_default().to_owned());
        }
    }
    // The task under way when it stalled is the one too slow; the rest, in
    // its socket whole, went with it.
    stalled_errors.sort();
    let too_slow = stalled_errors
        .iter()
        .filter(|e| *e == "worker too slow")
        .count();
    let gone = stalled_errors
        .iter()
        .filter(|e| *e == "worker gone")
        .count();
    assert_eq!(
        (too_slow, gone + too_slow),
        (1, stalled_errors.len()),
        "stalled worker's tasks: {stalled_errors:?}"
    );
    for id in &small {
        assert!(
            handed.contains(id),
            "a small event posted after the stall did not reach the healthy worker"
        );
    }
    assert_eq!(
        work_stats(addr)["connected"],
        1,
        "the healthy worker went too"
    );
    assert_balances(&totals(&server));
    stop.store(true, Ordering::SeqCst);
    let _ = healthy.join();
    drop(stalled);
    server.stop();
}

fn descriptors_of(daemon: &common::daemon::Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn two_thousand_workers_that_come_and_go_leave_no_descriptor_behind() {
    let daemon = common::daemon::Daemon::spawn(&["--rate", "0", "--work", "pull"], &[]);
    let addr = daemon.addr;
    // Whatever the first worker opens once for good is in the baseline.
    drop(pull_worker(addr, 16, None).expect("connects"));
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 0));
    let baseline = descriptors_of(&daemon);
    assert_eq!(common::daemon::healthz_status(addr), Some(200));

    for cycle in 0..2_000 {
        let worker = pull_worker(addr, 16, None).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        drop(worker);
    }
    // The last workers' readers may still be ending: give them a few seconds
    // to get back to the baseline, and allow a little slack (the front's own
    // probe and the requests of this test hold a descriptor while they last).
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 0));
    let mut now = descriptors_of(&daemon);
    eventually(Duration::from_secs(5), || {
        now = descriptors_of(&daemon);
        now <= baseline + 1
    });
    assert!(
        now <= baseline + 8,
        "{baseline} descriptors before 2,000 workers came and went, {now} after"
    );
    assert_eq!(work_stats(addr)["credit"], 0);
    assert_eq!(common::daemon::healthz_status(addr), Some(200));
    eprintln!("descriptors: {baseline} before 2,000 workers came and went, {now} after");
}

#[test]
fn a_worker_gone_with_a_task_frame_under_way_leaves_no_descriptor_behind() {
    // A write timeout far longer than the test: only the worker's going can
    // free its descriptor in time, not a stall.
    let daemon = common::daemon::Daemon::spawn(
        &[
            "--rate",
            "0",
            "--work",
            "pull",
            "--workers",
            "16",
            "--write-timeout",
            "60",
        ],
        &[],
    );
    let addr = daemon.addr;
    // Whatever the first worker opens once for good is in the baseline.
    drop(pull_worker(addr, 16, None).expect("connects"));
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 0));
    let baseline = descriptors_of(&daemon);

    // Tasks of nearly a megabyte to a worker that reads none: more than its
    // socket holds (a loopback send buffer grows to 4 MB), so that one is
    // under way, left to `pull-flush`, when the worker goes. Fewer in flight
    // than posted, with credit and worker threads to spare, shows it: the
    // pool offers a remote behind nothing.
    let worker = pull_worker_small_buffer(addr, 8);
    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 1));
    for _ in 0..8 {
        post_large(addr, 60_000, 896 * 1024);
    }
    let mut in_flight = None;
    while {
        thread::sleep(Duration::from_millis(500));
        let then = std::mem::replace(&mut in_flight, work_stats(addr)["inFlight"].as_u64());
        then != in_flight
    } {}
    assert!(
        in_flight.is_some_and(|n| (1..8).contains(&n)),
        "{in_flight:?} tasks in flight: none under way"
    );
    drop(worker);

    assert!(eventually(WAIT, || work_stats(addr)["connected"] == 0));
    let mut now = descriptors_of(&daemon);
    eventually(Duration::from_secs(5), || {
        now = descriptors_of(&daemon);
        now <= baseline
    });
    assert!(
        now <= baseline + 1,
        "{baseline} descriptors before the worker came, {now} after it went"
    );
}
