//! History and resume: `GET /api/events`, clients reconnecting with `since`
//! or `Last-Event-ID`, gaps beyond the history ring, `replay`, status filters,
//! the SSE transport's own contract, and resuming across a restart (epochs).

use crate::common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Client, EventStream, connect, events, eventually, get_json, http, next_message,
    open_event_stream, post_events, sse_id_seq, start,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn seq(event: &Value) -> u64 {
    event["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {event}"))
}

fn assert_consecutive(events: &[Value], what: &str) {
    for pair in events.windows(2) {
        assert_eq!(
            seq(&pair[1]),
            seq(&pair[0]) + 1,
            "{what}: gap or duplicate between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

/// Retained outcomes after `since` from `GET /api/events`, with the gap header.
fn recent(addr: SocketAddr, since: u64, limit: Option<usize>) -> (Vec<Value>, Option<String>) {
    let path = match limit {
        Some(limit) => format!("/api/events?since={since}&limit={limit}"),
        None => format!("/api/events?since={since}"),
    };
    let response = http(addr, "GET", &path, &[], b"");
    assert_eq!(
        response.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&response.body)
    );
    let events = response
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("{path} answers a JSON array"))
        .clone();
    (events, response.header("x-punctual-gap").map(str::to_owned))
}

/// The newest `seq` handed out so far, as `GET /api/events` sees it.
fn newest_seq(addr: SocketAddr, since: u64) -> u64 {
    let (events, _) = recent(addr, since, Some(1_000_000));
    events.last().map_or(since, seq)
}

/// Posts `n` events that finish at once, with ids `{prefix}-0…`, and waits
/// until their outcomes are all retained.
fn ingest_quick(addr: SocketAddr, prefix: &str, n: usize) {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "deadlineMs": 10_000, "workMs": 1}))
        .collect();
    let response = post_events(
        addr,
        "application/json",
        Value::from(items).to_string().as_bytes(),
    );
    assert_eq!(
        response.status,
        202,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()["dropped"], 0, "the queue has room for {n}");
    let prefix = format!("{prefix}-");
    assert!(
        eventually(WAIT, || {
            recent(addr, 0, Some(1_000_000))
                .0
                .iter()
                .filter(|e| e["id"].as_str().is_some_and(|id| id.starts_with(&prefix)))
                .count()
                == n
        }),
        "the {n} outcomes of {prefix}* should be retained"
    );
}

/// Reads the next `n` outcomes over SSE.
fn sse_events(stream: &mut EventStream, n: usize) -> Vec<Value> {
    stream.events(n, WAIT)
}

/// Opens an event stream and reads its retry hint and its `hello`.
fn open_sse_with_hello(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (EventStream, Value) {
    let mut stream = open_event_stream(addr, path, headers);
    assert_eq!(stream.status, 200, "GET {path}");
    let first = stream
        .next_message(WAIT)
        .expect("the stream opens with a retry hint");
    assert_eq!(first.retry, Some(2000), "{first:?}");
    let hello = stream.next_message(WAIT).expect("a hello follows");
    assert_eq!(hello.event.as_deref(), Some("hello"), "{hello:?}");
    assert_eq!(hello.id, None, "a notice carries no id: {hello:?}");
    let hello = hello.json();
    assert_eq!(hello["type"], "hello");
    (stream, hello)
}

fn open_sse(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
    open_sse_with_hello(addr, path, headers).0
}

/// Connects a WebSocket client and reads the `hello` every stream opens with.
fn connect_with_hello(addr: SocketAddr, path: &str) -> (Client, Value) {
    let mut client = connect(addr, path);
    let hello = next_message(&mut client, WAIT).expect("a first message");
    assert_eq!(
        hello["type"], "hello",
        "the stream opens with hello: {hello}"
    );
    (client, hello)
}

#[test]
fn the_event_stream_has_its_head_a_retry_hint_and_stats_on_request() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let mut stream = open_event_stream(addr, "/events?stats=1", &[]);
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "{:?}",
        stream.headers
    );
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    let first = stream.next_message(WAIT).expect("a first message");
    assert_eq!(
        first.retry,
        Some(2000),
        "the stream starts with retry: 2000"
    );
    let mut stats = Vec::new();
    let until = Instant::now() + WAIT;
    while stats.len() < 2 && Instant::now() < until {
        if let Some(message) = stream.next_message(Duration::from_secs(1))
            && message.event.as_deref() == Some("stats")
        {
            stats.push(message.json());
        }
    }
    assert_eq!(stats.len(), 2, "stats come once a second with ?stats=1");
    assert_eq!(stats[0]["type"], "stats");
    assert!(stats[1]["totals"].is_object(), "{}", stats[1]);
    assert!(
        eventually(
            WAIT,
            || get_json(addr, "/api/stats").1["clients"]["connected"] == 1
        ),
        "an event stream counts as a connected client"
    );
    drop(stream);
    // The writer notices a closed stream at its next write: a stats message.
    assert!(
        eventually(
            WAIT,
            || get_json(addr, "/api/stats").1["clients"]["connected"] == 0
        ),
        "a closed event stream frees its slot"
    );
}

#[test]
fn an_event_stream_without_stats_carries_outcomes_only() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let mut stream = open_sse(addr, "/events?control=1", &[]);
    ingest_quick(addr, "plain", 3);
    let got = sse_events(&mut stream, 3);
    assert_consecutive(&got, "/events");
    let quiet = stream.next_message(Duration::from_millis(2_500));
    assert!(quiet.is_none(), "no stats without ?stats=1, got {quiet:?}");
}

#[test]
fn a_websocket_resuming_since_its_last_seq_gets_every_missed_outcome_once() {
    let server = start(|c| {
        c.rate = 200;
        c.work_ms = 1;
    });
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws");
    let before = events(&mut client, 50, WAIT);
    assert_consecutive(&before, "first connection");
    let last = seq(before.last().expect("events"));
    drop(client);
    thread::sleep(Duration::from_secs(1));
    let missed_until = newest_seq(addr, last);
    assert!(missed_until > last, "events flowed while disconnected");
    let (mut client, _) = connect_with_hello(addr, &format!("/ws?since={last}"));
    let first = next_message(&mut client, WAIT).expect("a first message");
    assert_eq!(first["type"], "event", "no gap expected: {first}");
    assert_eq!(
        seq(&first),
        last + 1,
        "the replay starts right after {last}"
    );
    // Through the replay, across the seam and well into the live stream.
    let target = missed_until + 200;
    let mut got = vec![first];
    while seq(got.last().expect("events")) < target {
        got.extend(events(&mut client, 1, WAIT));
    }
    assert_consecutive(&got, "resumed connection");
}

/// Reads outcomes, drops the stream, and resumes as `resume(last seq, last id)` says.
fn resume_over_sse(resume: impl FnOnce(u64, String) -> (String, Vec<(&'static str, String)>)) {
    let server = start(|c| {
        c.rate = 200;
        c.work_ms = 1;
    });
    let addr = server.local_addr();
    let (mut stream, hello) = open_sse_with_hello(addr, "/events?control=1", &[]);
    let before = sse_events(&mut stream, 50);
    assert_consecutive(&before, "first stream");
    let last = seq(before.last().expect("events"));
    let last_id = format!("{}:{last}", hello["epoch"].as_str().expect("epoch"));
    drop(stream);
    thread::sleep(Duration::from_secs(1));
    let missed_until = newest_seq(addr, last);
    assert!(missed_until > last, "events flowed while disconnected");
    let (path, headers) = resume(last, last_id);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut stream = open_sse(addr, &path, &headers);
    let first = stream.next_message(WAIT).expect("a first message");
    assert_eq!(first.event.as_deref(), None, "no gap expected: {first:?}");
    assert_eq!(
        first.id.as_deref().and_then(sse_id_seq),
        Some(last + 1),
        "the replay starts right after {last}: {first:?}"
    );
    let mut got = vec![first.json()];
    let target = missed_until + 200;
    while seq(got.last().expect("events")) < target {
        got.extend(sse_events(&mut stream, 1));
    }
    assert_eq!(seq(&got[0]), last + 1);
    assert_consecutive(&got, "resumed stream");
}

#[test]
fn an_event_stream_resuming_with_last_event_id_gets_every_missed_outcome_once() {
    resume_over_sse(|_, id| ("/events".into(), vec![("Last-Event-ID", id)]));
}

#[test]
fn an_event_stream_resuming_with_a_bare_seq_as_last_event_id_is_read_as_this_run() {
    resume_over_sse(|last, _| ("/events".into(), vec![("Last-Event-ID", last.to_string())]));
}

#[test]
fn an_event_stream_resuming_with_since_gets_every_missed_outcome_once() {
    resume_over_sse(|last, _| (format!("/events?since={last}"), vec![]));
}

/// Connects, reads a few outcomes, disconnects and waits until more than the
/// history holds have passed. Returns the last seq read.
fn fall_behind_the_ring(addr: SocketAddr, history: u64) -> u64 {
    let mut client = connect(addr, "/ws");
    let last = seq(events(&mut client, 5, WAIT).last().expect("events"));
    drop(client);
    assert!(
        eventually(WAIT, || newest_seq(addr, 0) > last + 2 * history),
        "more than {history} outcomes should pass"
    );
    last
}

#[test]
fn a_websocket_resuming_from_beyond_the_history_is_told_the_gap_first() {
    let history = 50;
    let server = start(|c| {
        c.rate = 200;
        c.work_ms = 1;
        c.history = history as u32;
    });
    let addr = server.local_addr();
    let last = fall_behind_the_ring(addr, history);
    let (mut client, _) = connect_with_hello(addr, &format!("/ws?since={last}"));
    let gap = next_message(&mut client, WAIT).expect("a first message");
    assert_eq!(gap["type"], "gap", "the first message names the gap: {gap}");
    assert_eq!(gap["from"].as_u64(), Some(last + 1), "{gap}");
    let to = gap["to"].as_u64().expect("gap.to");
    assert!(to > last + history, "{gap}");
    let got = events(&mut client, 2 * history as usize, WAIT);
    assert_eq!(
        seq(&got[0]),
        to + 1,
        "the replay starts with the oldest retained outcome, right after the gap"
    );
    assert_consecutive(&got, "after the gap");
}

#[test]
fn an_event_stream_resuming_from_beyond_the_history_is_told_the_gap_first() {
    let history = 50;
    let server = start(|c| {
        c.rate = 200;
        c.work_ms = 1;
        c.history = history as u32;
    });
    let addr = server.local_addr();
    let last = fall_behind_the_ring(addr, history);
    let id = last.to_string();
    let mut stream = open_sse(addr, "/events", &[("Last-Event-ID", id.as_str())]);
    let gap = stream.next_message(WAIT).expect("a first message");
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
    let gap = gap.json();
    assert_eq!(gap["type"], "gap");
    assert_eq!(gap["from"].as_u64(), Some(last + 1), "{gap}");
    let to = gap["to"].as_u64().expect("gap.to");
    assert!(to > last + history, "{gap}");
    let got = sse_events(&mut stream, 2 * history as usize);
    assert_eq!(seq(&got[0]), to + 1);
    assert_consecutive(&got, "after the gap");
}

#[test]
fn replay_n_sends_the_last_n_retained_outcomes_before_live_ones() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    ingest_quick(addr, "old", 20);
    let (retained, _) = recent(addr, 0, None);
    assert_eq!(retained.len(), 20);
    let expected: Vec<u64> = retained[15..].iter().map(seq).collect();
    let mut ws = connect(addr, "/ws?replay=5");
    let mut sse = open_sse(addr, "/events?replay=5", &[]);
    let replayed_ws = events(&mut ws, 5, WAIT);
    let replayed_sse = sse_events(&mut sse, 5);
    assert_eq!(replayed_ws.iter().map(seq).collect::<Vec<_>>(), expected);
    assert_eq!(replayed_ws, replayed_sse);
    assert_eq!(replayed_ws[..], retained[15..], "the same outcome JSON");
    ingest_quick(addr, "new", 1);
    let live_ws = events(&mut ws, 1, WAIT);
    let live_sse = sse_events(&mut sse, 1);
    assert_eq!(live_ws[0]["id"], "new-0");
    assert_eq!(seq(&live_ws[0]), expected[4] + 1, "live follows the replay");
    assert_eq!(live_ws, live_sse);
}

#[test]
fn a_status_filter_sends_only_the_outcomes_asked_for_on_both_transports() {
    let server = start(|c| {
        c.rate = 0;
        c.admission = punctual::Admission::Off;
    });
    let addr = server.local_addr();
    let mut all = connect(addr, "/ws");
    let mut ws = connect(addr, "/ws?status=late,dropped");
    let mut sse = open_sse(addr, "/events?status=late,dropped&control=1", &[]);
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        * 1000.0
        - 10_000.0;
    let batch = json!([
        {"id": "on-time-0", "deadlineMs": 5000, "workMs": 1},
        {"id": "late-0", "deadlineMs": 50, "workMs": 2000},
        {"id": "on-time-1", "deadlineMs": 5000, "workMs": 1},
        {"id": "expired-0", "deadlineMs": 50, "createdAt": past},
        {"id": "late-1", "deadlineMs": 50, "workMs": 2000},
        {"id": "on-time-2", "deadlineMs": 5000, "workMs": 1},
        {"id": "expired-1", "deadlineMs": 50, "createdAt": past},
    ]);
    let response = post_events(addr, "application/json", batch.to_string().as_bytes());
    assert_eq!(response.status, 202);
    // Once the unfiltered client has all seven, the filtered ones have had theirs offered.
    let everything = events(&mut all, 7, WAIT);
    let status_of = |id: &str| {
        everything
            .iter()
            .find(|e| e["id"] == id)
            .map(|e| e["status"].as_str().unwrap_or("?").to_owned())
    };
    assert_eq!(status_of("late-0").as_deref(), Some("late"));
    assert_eq!(status_of("expired-0").as_deref(), Some("dropped"));
    assert_eq!(status_of("on-time-0").as_deref(), Some("on-time"));
    let expected: Vec<Value> = everything
        .iter()
        .filter(|e| e["status"] != "on-time")
        .cloned()
        .collect();
    assert_eq!(expected.len(), 4);
    let filtered_ws = events(&mut ws, 4, WAIT);
    let filtered_sse = sse_events(&mut sse, 4);
    assert_eq!(filtered_ws, expected, "/ws?status=late,dropped");
    assert_eq!(filtered_sse, expected, "/events?status=late,dropped");
    let quiet = Duration::from_millis(1_000);
    let extra = next_message(&mut ws, quiet);
    assert!(extra.is_none(), "/ws sent an unwanted outcome: {extra:?}");
    let extra = sse.next_message(quiet);
    assert!(
        extra.is_none(),
        "/events sent an unwanted outcome: {extra:?}"
    );

    // A replay is filtered the same way.
    let dropped: Vec<Value> = everything
        .iter()
        .filter(|e| e["status"] == "dropped")
        .cloned()
        .collect();
    let mut ws = connect(addr, "/ws?since=0&status=dropped");
    assert_eq!(
        events(&mut ws, 2, WAIT),
        dropped,
        "/ws?since=0&status=dropped"
    );
    let mut sse = open_sse(addr, "/events?replay=7&status=dropped", &[]);
    assert_eq!(
        sse_events(&mut sse, 2),
        dropped,
        "/events?replay=7&status=dropped"
    );
    let extra = next_message(&mut ws, quiet);
    assert!(
        extra.is_none(),
        "/ws replayed an unwanted outcome: {extra:?}"
    );
    let extra = sse.next_message(quiet);
    assert!(
        extra.is_none(),
        "/events replayed an unwanted outcome: {extra:?}"
    );
}

#[test]
fn an_unknown_status_in_a_filter_is_refused_with_400() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let sse = http(addr, "GET", "/events?status=late,sideways", &[], b"");
    assert_eq!(sse.status, 400);
    let error = sse.json()["error"].as_str().expect("error text").to_owned();
    assert!(error.contains("sideways"), "{error}");
    match tungstenite::connect(format!("ws://{addr}/ws?status=bogus")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!(
            "/ws?status=bogus should get 400, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // A refused subscription takes no client slot.
    assert!(eventually(WAIT, || {
        get_json(addr, "/api/stats").1["clients"]["connected"] == 0
    }));
}

#[test]
fn get_api_events_returns_retained_outcomes_after_since_oldest_first() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    ingest_quick(addr, "kept", 30);
    let (all, gap) = recent(addr, 0, None);
    assert_eq!(gap, None, "nothing is missing");
    assert_eq!(
        all.iter().map(seq).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    for event in &all {
        assert_eq!(event["type"], "event");
        assert_eq!(event["source"], "ingest");
    }
    let (page, gap) = recent(addr, 10, Some(5));
    assert_eq!(gap, None);
    assert_eq!(
        page.iter().map(seq).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    assert_eq!(
        page[..],
        all[10..15],
        "the same outcome JSON as the full list"
    );
    let (tail, _) = recent(addr, 28, None);
    assert_eq!(tail.iter().map(seq).collect::<Vec<_>>(), [29, 30]);
    let (none, gap) = recent(addr, 30, None);
    assert!(none.is_empty() && gap.is_none());
    let bad = http(addr, "GET", "/api/events?since=soon", &[], b"");
    assert_eq!(bad.status, 400);
}

#[test]
fn get_api_events_names_outcomes_no_longer_retained_in_the_gap_header() {
    let server = start(|c| {
        c.rate = 0;
        c.history = 10;
    });
    let addr = server.local_addr();
    // Sent one at a time so seqs follow the ids and the ring is easy to predict.
    for n in 0..3 {
        ingest_quick(addr, &format!("batch{n}"), 10);
    }
    let (retained, gap) = recent(addr, 5, None);
    assert_eq!(
        retained.iter().map(seq).collect::<Vec<_>>(),
        (21..=30).collect::<Vec<_>>()
    );
    assert_eq!(gap.as_deref(), Some("6-20"));
    let (_, gap) = recent(addr, 0, None);
    assert_eq!(gap.as_deref(), Some("1-20"));
    let (page, gap) = recent(addr, 19, Some(3));
    assert_eq!(gap.as_deref(), Some("20-20"));
    assert_eq!(page.iter().map(seq).collect::<Vec<_>>(), [21, 22, 23]);
    let (recent_only, gap) = recent(addr, 25, None);
    assert_eq!(gap, None, "nothing after 25 is missing");
    assert_eq!(
        recent_only.iter().map(seq).collect::<Vec<_>>(),
        [26, 27, 28, 29, 30]
    );
}

/// Stops `server` and starts a new run on the same port, as a restart would.
fn restart(
    server: punctual::Server,
    adjust: impl FnOnce(&mut punctual::Config),
) -> punctual::Server {
    let addr = server.local_addr();
    server.stop();
    start(|c| {
        adjust(c);
        c.listen = addr;
    })
}

fn generating(c: &mut punctual::Config) {
    c.rate = 200;
    c.work_ms = 1;
}

/// A position in a first run: its epoch and a seq some way into it.
fn position_in_first_run(addr: SocketAddr) -> (String, u64) {
    let (mut client, hello) = connect_with_hello(addr, "/ws?control=1");
    let epoch = hello["epoch"].as_str().expect("hello.epoch").to_owned();
    let last = seq(events(&mut client, 60, WAIT).last().expect("events"));
    (epoch, last)
}

/// Waits until the run at `addr` has handed out more than `seq` outcomes.
fn pass(addr: SocketAddr, seq: u64) {
    assert!(
        eventually(WAIT, || newest_seq(addr, 0) > seq),
        "the new run should pass seq {seq}"
    );
}

/// Checks a resume into a new run: a hello naming the new epoch, a reset
/// naming both, then the new run's outcomes from seq 1 on, none skipped.
fn assert_reset_then_from_the_start(
    notices: &[Value],
    outcomes: &[Value],
    old_epoch: &str,
    old_seq: u64,
) {
    let hello = &notices[0];
    assert_eq!(hello["type"], "hello", "{hello}");
    let new_epoch = hello["epoch"].as_str().expect("hello.epoch");
    assert_ne!(new_epoch, old_epoch, "a new run has a new epoch");
    assert!(
        hello["seq"].as_u64().expect("hello.seq") > old_seq,
        "{hello}"
    );
    let reset = &notices[1];
    assert_eq!(
        reset["type"], "reset",
        "a reset notice comes first: {reset}"
    );
    assert_eq!(reset["epoch"], new_epoch, "{reset}");
    assert_eq!(reset["previousEpoch"], old_epoch, "{reset}");
    assert_eq!(
        seq(&outcomes[0]),
        1,
        "the new run is replayed from its start, not from {old_seq} + 1"
    );
    assert_consecutive(outcomes, "replay of the new run");
    assert!(seq(outcomes.last().expect("outcomes")) > old_seq);
}

#[test]
fn a_websocket_resuming_into_a_new_run_is_told_of_the_reset_and_gets_it_from_the_start() {
    let server = start(generating);
    let (old_epoch, old_seq) = position_in_first_run(server.local_addr());
    let server = restart(server, generating);
    let addr = server.local_addr();
    pass(addr, old_seq + 50);
    let (mut client, hello) =
        connect_with_hello(addr, &format!("/ws?epoch={old_epoch}&since={old_seq}"));
    let reset = next_message(&mut client, WAIT).expect("a second message");
    let outcomes = events(&mut client, old_seq as usize + 50, WAIT);
    assert_reset_then_from_the_start(&[hello, reset], &outcomes, &old_epoch, old_seq);
}

/// The run's epoch as `GET /api/events` names it.
fn outcomes_epoch_of(addr: SocketAddr) -> String {
    http(addr, "GET", "/api/events?limit=0", &[], b"")
        .header("x-punctual-epoch")
        .expect("X-Punctual-Epoch")
        .to_owned()
}

/// Reads a reset notice and `n` outcomes from an event stream resuming into a new run.
fn resume_sse_into_new_run(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> (Vec<Value>, Vec<Value>) {
    let (mut stream, hello) = open_sse_with_hello(addr, path, headers);
    let reset = stream.next_message(WAIT).expect("a second message");
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    assert_eq!(reset.id, None, "a notice carries no id: {reset:?}");
    let reset = reset.json();
    let epoch = hello["epoch"].as_str().expect("epoch").to_owned();
    let first = stream.next_message(WAIT).expect("an outcome");
    assert_eq!(
        first.id.as_deref(),
        Some(format!("{epoch}:1").as_str()),
        "ids name the new run: {first:?}"
    );
    let mut outcomes = vec![first.json()];
    outcomes.extend(sse_events(&mut stream, n - 1));
    (vec![hello, reset], outcomes)
}

#[test]
fn an_event_stream_resuming_into_a_new_run_is_told_of_the_reset_and_gets_it_from_the_start() {
    let server = start(generating);
    let first_run = server.local_addr();
    let (mut stream, hello) = open_sse_with_hello(first_run, "/events?control=1", &[]);
    let old_epoch = hello["epoch"].as_str().expect("epoch").to_owned();
    let last = sse_events(&mut stream, 60);
    let old_seq = seq(last.last().expect("events"));
    drop(stream);
    let server = restart(server, generating);
    let addr = server.local_addr();
    pass(addr, old_seq + 50);
    let n = old_seq as usize + 50;
    let last_event_id = format!("{old_epoch}:{old_seq}");
    for (path, headers) in [
        (
            "/events".to_owned(),
            vec![("Last-Event-ID", last_event_id.as_str())],
        ),
        (format!("/events?epoch={old_epoch}&since={old_seq}"), vec![]),
    ] {
        let (notices, outcomes) = resume_sse_into_new_run(addr, &path, &headers, n);
        assert_reset_then_from_the_start(&notices, &outcomes, &old_epoch, old_seq);
    }
}

#[test]
fn a_bare_seq_beyond_the_new_run_is_reset_without_a_previous_epoch() {
    let server = start(|c| c.rate = 0);
    ingest_quick(server.local_addr(), "old", 20);
    let server = restart(server, |c| c.rate = 0);
    let addr = server.local_addr();
    ingest_quick(addr, "new", 5);
    let (mut client, _) = connect_with_hello(addr, "/ws?since=20");
    let reset = next_message(&mut client, WAIT).expect("a reset");
    assert_eq!(reset["type"], "reset", "{reset}");
    assert_eq!(reset["previousEpoch"], Value::Null, "{reset}");
    let got = events(&mut client, 5, WAIT);
    assert_eq!(got.iter().map(seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let answer = http(addr, "GET", "/api/events?since=20", &[], b"");
    assert_eq!(answer.header("x-punctual-reset"), Some("none"));
    assert_eq!(answer.json().as_array().map(Vec::len), Some(5));
}

#[test]
fn a_reset_into_a_new_run_that_no_longer_holds_its_start_names_the_gap() {
    let history = 50;
    let small = |c: &mut punctual::Config| {
        generating(c);
        c.history = history as u32;
    };
    let server = start(small);
    let (old_epoch, old_seq) = position_in_first_run(server.local_addr());
    let server = restart(server, small);
    let addr = server.local_addr();
    pass(addr, old_seq + 3 * history);
    let (mut client, hello) =
        connect_with_hello(addr, &format!("/ws?epoch={old_epoch}&since={old_seq}"));
    assert_ne!(hello["epoch"], old_epoch.as_str());
    let reset = next_message(&mut client, WAIT).expect("a reset");
    assert_eq!(reset["type"], "reset", "{reset}");
    let gap = next_message(&mut client, WAIT).expect("a gap");
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(
        gap["from"], 1,
        "the gap starts at the new run's start: {gap}"
    );
    let to = gap["to"].as_u64().expect("gap.to");
    let got = events(&mut client, history as usize, WAIT);
    assert_eq!(
        seq(&got[0]),
        to + 1,
        "the oldest retained outcome follows the gap"
    );
    assert_consecutive(&got, "after the gap");

    let path = format!("/api/events?epoch={old_epoch}&since={old_seq}&limit=5");
    let answer = http(addr, "GET", &path, &[], b"");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-punctual-reset"), Some(old_epoch.as_str()));
    assert_eq!(answer.header("x-punctual-epoch"), hello["epoch"].as_str());
    let gap = answer.header("x-punctual-gap").expect("X-Punctual-Gap");
    assert!(gap.starts_with("1-"), "{gap}");
}

#[test]
fn every_stream_opens_with_a_hello_naming_the_run_that_api_stats_names() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    ingest_quick(addr, "before", 3);
    let (_ws, ws_hello) = connect_with_hello(addr, "/ws?control=1");
    let (_sse, sse_hello) = open_sse_with_hello(addr, "/events?control=1", &[]);
    assert_eq!(ws_hello, sse_hello);
    assert_eq!(
        ws_hello["seq"], 3,
        "the newest seq at connection: {ws_hello}"
    );
    let epoch = ws_hello["epoch"].as_str().expect("epoch");
    assert_eq!(epoch.len(), 16, "{epoch}");
    assert_eq!(get_json(addr, "/api/stats").1["epoch"], epoch);
    assert_eq!(outcomes_epoch_of(addr), epoch);
    // Resuming in the same run needs no reset.
    let (mut client, _) = connect_with_hello(addr, &format!("/ws?epoch={epoch}&since=1"));
    let first = next_message(&mut client, WAIT).expect("an outcome");
    assert_eq!(first["type"], "event", "{first}");
    assert_eq!(seq(&first), 2);
}

#[test]
fn malformed_epochs_and_positions_are_refused_with_400_naming_the_parameter() {
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let refused = |path: &str, headers: &[(&str, &str)], parameter: &str| {
        let answer = http(addr, "GET", path, headers, b"");
        assert_eq!(answer.status, 400, "{path} {headers:?}");
        let error = answer.json()["error"].as_str().expect("error").to_owned();
        assert!(error.starts_with(parameter), "{path}: {error}");
    };
    refused("/events?epoch=no!such&since=1", &[], "epoch:");
    refused("/events?epoch=abc", &[], "epoch:");
    refused("/events?epoch=abc&since=-1", &[], "since:");
    refused(
        "/events",
        &[("Last-Event-ID", "abc:later")],
        "Last-Event-ID:",
    );
    refused("/events", &[("Last-Event-ID", "a.b:3")], "Last-Event-ID:");
    refused("/api/events?epoch=no!such", &[], "epoch:");
    refused("/api/events?epoch=abc&since=x", &[], "since:");
    match tungstenite::connect(format!("ws://{addr}/ws?epoch=no!such&since=1")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!(
            "/ws with a bad epoch should get 400, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
}
