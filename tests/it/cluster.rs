//! Several nodes over Redis Streams: a processor and edges as child
//! processes, with a real `redis-server` of their own on a free loopback port.
//!
//! Without `redis-server` these tests fail under `CI` (which installs it)
//! and are skipped, with a message saying so, elsewhere.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::daemon::Daemon;
use crate::common::{connect, eventually, get_json, http, next_message, open_event_stream};

/// A `redis-server` child on `port`, with nothing persisted.
pub(crate) struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// `None` (after saying why) when `redis-server` is not installed outside CI.
    pub(crate) fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server not found, and CI is set: apt-get install redis-server"
            );
            eprintln!(
                "redis-server not found: cluster test not run (apt-get install redis-server)"
            );
            return None;
        }
        Some(Redis::on(free_port()))
    }

    fn on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis { child, port };
        assert!(
            eventually(Duration::from_secs(10), || redis.answers()),
            "redis-server did not answer on port {port}"
        );
        redis
    }

    fn answers(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (its data is gone: nothing is persisted) and, after `down`,
    /// starts a new one on the same port.
    pub(crate) fn restart_after(&mut self, down: Duration) {
        self.kill();
        thread::sleep(down);
        *self = Redis::on(self.port);
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

pub(crate) fn processor(redis: &Redis, extra: &[&str]) -> Daemon {
    let url = redis.url();
    let mut args = vec!["--role", "processor", "--redis", &url];
    for (flag, default) in [("--rate", "100"), ("--work-ms", "1")] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend_from_slice(extra);
    Daemon::spawn(&args, &[])
}

pub(crate) fn edge(redis: &Redis) -> Daemon {
    let url = redis.url();
    Daemon::spawn(&["--role", "edge", "--redis", &url], &[])
}

/// The close code a WebSocket client gets next (reading past messages).
fn close_code(client: &mut crate::common::Client) -> Option<u16> {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        match client.read() {
            Ok(tungstenite::Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) if crate::common::is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The next `n` outcomes on a WebSocket, and the control messages among them.
fn outcomes(client: &mut crate::common::Client, n: usize) -> (Vec<Value>, Vec<Value>) {
    let until = Instant::now() + Duration::from_secs(30);
    let (mut events, mut control) = (Vec::new(), Vec::new());
    while events.len() < n {
        assert!(
            Instant::now() < until,
            "only {} of {n} outcomes in 30 s",
            events.len()
        );
        match next_message(client, Duration::from_secs(1)) {
            Some(m) if m["type"] == "event" => events.push(m),
            Some(m) if m["type"] != "stats" => control.push(m),
            _ => {}
        }
    }
    (events, control)
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

fn assert_consecutive(seqs: &[u64]) {
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "seqs not consecutive: {seqs:?}");
    }
}

/// A node's stats, once it has a snapshot.
fn first_stats(node: SocketAddr) -> Value {
    let mut stats = Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            let (status, body) = get_json(node, "/api/stats");
            stats = body;
            status == 200
        }),
        "no stats: {stats}"
    );
    stats
}

/// Waits for an edge to serve the processor's run (its first stats).
pub(crate) fn wait_for_feed(edge: SocketAddr) -> Value {
    let mut stats = Value::Null;
    assert!(
        eventually(Duration::from_secs(15), || {
            let (status, body) = get_json(edge, "/api/stats");
            stats = body;
            status == 200
                && stats["cluster"]["role"] == "edge"
                && stats["totals"]["onTime"].as_u64() > Some(0)
        }),
        "the edge never served the processor's stats: {stats}"
    );
    stats
}

#[test]
fn every_client_on_every_edge_sees_the_processors_outcomes_in_one_order() {
    let Some(redis) = Redis::start() else { return };
    let processor = processor(&redis, &[]);
    let (a, b) = (edge(&redis), edge(&redis));
    let stats = wait_for_feed(a.addr);
    wait_for_feed(b.addr);
    let own = first_stats(processor.addr);
    assert_eq!(
        stats["epoch"], own["epoch"],
        "the edge serves the processor's run"
    );
    assert_eq!(own["cluster"]["role"], "processor");

    let mut on_a = connect(a.addr, "/ws");
    let mut on_b = connect(b.addr, "/ws");
    let mut sse_on_b = open_event_stream(b.addr, "/events", &[]);
    let (from_a, _) = outcomes(&mut on_a, 60);
    let (from_b, _) = outcomes(&mut on_b, 60);
    let from_sse = sse_on_b.events(60, Duration::from_secs(30));
    for got in [&from_a, &from_b, &from_sse] {
        assert_consecutive(&seqs(got));
    }
    // The same outcome under the same seq everywhere, byte for byte the processor's.
    let by_seq = |events: &[Value], seq: u64| events.iter().find(|e| e["seq"] == seq).cloned();
    let common = seqs(&from_a)
        .into_iter()
        .filter(|s| by_seq(&from_b, *s).is_some())
        .collect::<Vec<_>>();
    assert!(
        !common.is_empty(),
        "the two edges' clients saw no outcome in common"
    );
    for seq in common {
        assert_eq!(by_seq(&from_a, seq), by_seq(&from_b, seq));
    }
    let last = from_a.last().expect("outcomes")["seq"]
        .as_u64()
        .expect("seq");
    let (status, history) = get_json(processor.addr, &format!("/api/events?since={}", last - 5));
    assert_eq!(status, 200);
    assert_eq!(
        history.as_array().expect("array")[0],
        by_seq(&from_a, last - 4).expect("outcome")
    );

    let mut stats = Value::Null;
    assert!(
        eventually(Duration::from_secs(5), || {
            stats = get_json(a.addr, "/api/stats").1;
            stats["clients"]["websocket"] == 1
        }),
        "an edge counts its own clients: {stats}"
    );
    assert_eq!(stats["cluster"]["redis"], "connected");
    assert_eq!(stats["cluster"]["processor"]["role"], "processor");
    let metrics = http(a.addr, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("punctual_outcomes_total"));
}

#[test]
fn a_client_resumes_on_another_edge_with_no_gap_and_no_duplicate() {
    let Some(redis) = Redis::start() else { return };
    let _processor = processor(&redis, &[]);
    let (a, b) = (edge(&redis), edge(&redis));
    wait_for_feed(a.addr);
    wait_for_feed(b.addr);
    let mut on_a = connect(a.addr, "/ws?control=1");
    let hello = next_message(&mut on_a, Duration::from_secs(5)).expect("hello");
    assert_eq!(hello["type"], "hello");
    let epoch = hello["epoch"].as_str().expect("epoch").to_owned();
    let (before, _) = outcomes(&mut on_a, 20);
    drop(on_a);
    let last = before.last().expect("outcomes")["seq"]
        .as_u64()
        .expect("seq");
    thread::sleep(Duration::from_millis(500));

    let mut on_b = connect(b.addr, &format!("/ws?epoch={epoch}&since={last}"));
    let (after, control) = outcomes(&mut on_b, 40);
    assert_eq!(
        control.iter().filter(|m| m["type"] != "hello").count(),
        0,
        "{control:?}"
    );
    assert_eq!(
        after[0]["seq"],
        last + 1,
        "resumed right after its last outcome"
    );
    assert_consecutive(&seqs(&after));
}

#[test]
fn a_processor_restart_reaches_edge_clients_as_a_reset_and_an_edge_restart_as_a_resume() {
    let Some(redis) = Redis::start() else { return };
    let mut first = processor(&redis, &[]);
    let mut edge_node = edge(&redis);
    let old = wait_for_feed(edge_node.addr)["epoch"].clone();
    let mut client = connect(edge_node.addr, "/ws?control=1");
    let mut plain = connect(edge_node.addr, "/ws");
    let mut plain_sse = open_event_stream(edge_node.addr, "/events", &[]);
    outcomes(&mut client, 5);
    first.signal("TERM");
    first.wait_for_exit(Duration::from_secs(10));
    let second = processor(&redis, &[]);
    let own = first_stats(second.addr);

    // What the first run published before it ended, then the switch.
    let until = Instant::now() + Duration::from_secs(30);
    let reset = loop {
        assert!(Instant::now() < until, "no reset notice within 30 s");
        if let Some(m) = next_message(&mut client, Duration::from_secs(1))
            && m["type"] == "reset"
        {
            break m;
        }
    };
    let (events, _) = outcomes(&mut client, 5);
    assert_eq!(reset["previousEpoch"], old);
    assert_eq!(reset["epoch"], own["epoch"]);
    // A plain WebSocket client is closed with 1012 (its seqs would restart);
    // a plain event stream is told with a named `reset`, and its ids name the
    // new run from then on, so Last-Event-ID resumes in the right run.
    assert_eq!(close_code(&mut plain), Some(1012));
    let new_epoch = own["epoch"].as_str().expect("epoch").to_owned();
    let until = Instant::now() + Duration::from_secs(30);
    let first_new = loop {
        assert!(
            Instant::now() < until,
            "no outcome of the new run on the event stream"
        );
        if let Some(m) = plain_sse.next_message(Duration::from_secs(1))
            && m.id.as_deref().is_some_and(|id| id.starts_with(&new_epoch))
        {
            break m;
        }
    };
    assert_eq!(first_new.json()["seq"], 1);
    assert_eq!(
        seqs(&events)[..],
        [1, 2, 3, 4, 5],
        "the new run from its start"
    );

    // An entry of the run the edge left, above every id (as a Redis
    // restored from an older copy may hold): the edge does not go back.
    let _: String = redis::cmd("XADD")
        .arg("punctual:outcomes")
        .arg("99999999999998-1")
        .arg("epoch")
        .arg(old.as_str().expect("epoch"))
        .arg("status")
        .arg("on-time")
        .arg("json")
        .arg(r#"{"type":"event","seq":1}"#)
        .query(&mut redis_cli(&redis))
        .expect("XADD");
    let (more, control) = outcomes(&mut client, 20);
    assert!(control.iter().all(|m| m["type"] != "reset"), "{control:?}");
    assert_consecutive(&seqs(&[events, more].concat()));
    // Gone again before the edge restarts: a new edge's backfill of the
    // run stops at an entry of another run amid it.
    let _: u64 = redis::cmd("XDEL")
        .arg("punctual:outcomes")
        .arg("99999999999998-1")
        .query(&mut redis_cli(&redis))
        .expect("XDEL");

    // The edge itself restarts: its clients come back and resume.
    let last = 5;
    let epoch = own["epoch"].as_str().expect("epoch").to_owned();
    drop(client);
    edge_node.signal("TERM");
    edge_node.wait_for_exit(Duration::from_secs(10));
    let edge_node = edge(&redis);
    wait_for_feed(edge_node.addr);
    let mut client = connect(edge_node.addr, &format!("/ws?epoch={epoch}&since={last}"));
    let (events, _) = outcomes(&mut client, 10);
    assert_eq!(events[0]["seq"], last + 1);
    assert_consecutive(&seqs(&events));
}

#[test]
fn redis_away_degrades_every_node_then_they_recover_with_no_duplicate() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let processor = processor(&redis, &[]);
    let edge_node = edge(&redis);
    wait_for_feed(edge_node.addr);
    let mut client = connect(edge_node.addr, "/ws?control=1");
    let (mut seen, _) = outcomes(&mut client, 5);

    redis.kill();
    for node in [edge_node.addr, processor.addr] {
        let mut body = Value::Null;
        assert!(
            eventually(Duration::from_secs(10), || {
                let (status, answer) = get_json(node, "/readyz");
                body = answer;
                status == 200 && body["status"] == "degraded"
            }),
            "a node without Redis says it is degraded but ready: {body}"
        );
    }
    let mut stats = Value::Null;
    assert!(
        eventually(Duration::from_secs(5), || {
            stats = get_json(edge_node.addr, "/api/stats").1;
            stats["cluster"]["redis"] == "unreachable"
        }),
        "the edge's stats say Redis is unreachable: {stats}"
    );
    assert_eq!(stats["health"]["state"], "degraded", "{stats}");
    thread::sleep(Duration::from_secs(1));
    redis.restart_after(Duration::ZERO);
    assert!(
        eventually(Duration::from_secs(15), || get_json(
            edge_node.addr,
            "/readyz"
        )
        .1["status"]
            == "ready"),
        "the edge recovered"
    );
    // Held while Redis was away, then published: the client misses nothing
    // and sees nothing twice.
    let (more, control) = outcomes(&mut client, 200);
    seen.extend(more);
    assert_consecutive(&seqs(&seen));
    assert!(control.iter().all(|m| m["type"] != "gap"), "{control:?}");
    let (_, stats) = get_json(processor.addr, "/api/stats");
    assert_eq!(stats["cluster"]["missed"], 0);
    assert!(
        stats["cluster"]["disconnects"].as_u64() >= Some(1),
        "{stats}"
    );
}

#[test]
fn outcomes_the_log_forgot_while_redis_was_away_are_counted_and_announced_as_a_gap() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    // A log of ~1 MiB at 2,000 outcomes a second: a few seconds without
    // Redis outgrow it.
    let processor = processor(
        &redis,
        &[
            "--rate",
            "2000",
            "--work-ms",
            "0",
            "--history",
            "10",
            "--history-bytes",
            "1048576",
        ],
    );
    let edge_node = edge(&redis);
    wait_for_feed(edge_node.addr);
    let mut client = connect(edge_node.addr, "/ws?control=1");
    outcomes(&mut client, 5);
    redis.restart_after(Duration::from_secs(4));

    let until = Instant::now() + Duration::from_secs(30);
    let gap = loop {
        assert!(Instant::now() < until, "no gap notice within 30 s");
        if let Some(m) = next_message(&mut client, Duration::from_secs(1))
            && m["type"] == "gap"
        {
            break m;
        }
    };
    assert!(gap["to"].as_u64() >= gap["from"].as_u64(), "{gap}");

    // Every outcome of the run is published or counted as never published.
    let change = http(
        processor.addr,
        "PUT",
        "/api/config",
        &[("Content-Type", "application/json")],
        br#"{"rate":0}"#,
    );
    assert_eq!(change.status, 200);
    let mut stats = Value::Null;
    assert!(
        eventually(Duration::from_secs(15), || {
            stats = get_json(processor.addr, "/api/stats").1;
            let t = &stats["totals"];
            let judged = ["onTime", "late", "failed"]
                .iter()
                .map(|k| t[k].as_u64().unwrap_or(0))
                .sum::<u64>()
                + t["dropped"]
                    .as_object()
                    .map_or(0, |d| d.values().filter_map(Value::as_u64).sum());
            let c = &stats["cluster"];
            t["inFlight"] == 0
                && c["outcomes"].as_u64().unwrap_or(0) + c["missed"].as_u64().unwrap_or(0) == judged
        }),
        "published + never published = judged: {stats}"
    );
    assert!(stats["cluster"]["missed"].as_u64() > Some(0), "{stats}");
}

#[test]
fn settings_changed_on_an_edge_are_applied_by_the_processor_before_the_answer() {
    let Some(redis) = Redis::start() else { return };
    let processor = processor(&redis, &["--deadline-ms", "250"]);
    let (a, b) = (edge(&redis), edge(&redis));
    wait_for_feed(a.addr);
    wait_for_feed(b.addr);
    let (status, config) = get_json(b.addr, "/api/config");
    assert_eq!(status, 200);
    assert_eq!(
        config["deadlineMs"], 250,
        "the processor's settings: {config}"
    );

    let json = [("Content-Type", "application/json")];
    let answer = http(
        b.addr,
        "PUT",
        "/api/config",
        &json,
        br#"{"rate":7,"deadlineMs":400}"#,
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.json()["rate"],
        7,
        "answered with the processor's settings"
    );
    // Applied before the answer: the processor says so at once.
    let (_, own) = get_json(processor.addr, "/api/config");
    assert_eq!(
        (own["rate"].clone(), own["deadlineMs"].clone()),
        (7.into(), 400.into())
    );
    // The other edge's stats follow.
    assert!(eventually(Duration::from_secs(5), || get_json(
        a.addr,
        "/api/config"
    )
    .1["rate"]
        == 7));

    // Refused at the edge, as on a single node: nothing is forwarded.
    let bad = http(b.addr, "PUT", "/api/config", &json, br#"{"rate":-1}"#);
    assert_eq!(bad.status, 400);
    let unknown = http(b.addr, "PUT", "/api/config", &json, br#"{"speed":1}"#);
    assert_eq!(unknown.status, 400);

    // A processor that does not answer in time (paused here): the edge says
    // so within its wait, and the change is withdrawn, not applied later.
    processor.signal("STOP");
    let started = Instant::now();
    let orphan = http(b.addr, "PUT", "/api/config", &json, br#"{"rate":9}"#);
    assert_eq!(
        orphan.status,
        504,
        "{}",
        String::from_utf8_lossy(&orphan.body)
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    // A change whose edge died before it could withdraw it, read only
    // after the edge's wait (by Redis's clock): taken off the stream, not
    // applied, and answered as expired.
    let mut cli = redis_cli(&redis);
    let _: String = redis::cmd("XADD")
        .arg("punctual:config")
        .arg("*")
        .arg("change")
        .arg(r#"{"deadlineMs":777}"#)
        .arg("reply")
        .arg("punctual:config:reply:stale")
        .query(&mut cli)
        .expect("XADD a change nobody withdraws");
    thread::sleep(Duration::from_millis(3500));
    processor.signal("CONT");
    let after = http(b.addr, "PUT", "/api/config", &json, br#"{"rate":12}"#);
    assert_eq!(after.status, 200);
    let (_, own) = get_json(processor.addr, "/api/config");
    assert_eq!(
        (own["rate"].clone(), own["deadlineMs"].clone()),
        (12.into(), 400.into()),
        "neither the withdrawn nor the stale change was applied; the next one was"
    );
    let answer: Option<String> = redis::cmd("LPOP")
        .arg("punctual:config:reply:stale")
        .query(&mut cli)
        .expect("LPOP");
    assert_eq!(answer.as_deref(), Some(r#"{"expired":true}"#));
    let left: u64 = redis::cmd("XLEN")
        .arg("punctual:config")
        .query(&mut cli)
        .expect("XLEN");
    assert_eq!(left, 0, "every change is taken off the stream");

    // A node that needs Redis refuses to start without it.
    let status = Command::new(env!("CARGO_BIN_EXE_punctual"))
        .args(["--role", "edge", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::null())
        .status()
        .expect("run punctual");
    assert_eq!(status.code(), Some(2));
}

fn post(node: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> crate::common::Response {
    http(node, "POST", path, &[("Content-Type", content_type)], body)
}

/// The `cluster.ingest` section of a processor once every accepted event was entered.
fn ingest_settled(processor: SocketAddr, accepted: u64) -> Value {
    let mut ingest = Value::Null;
    assert!(
        eventually(Duration::from_secs(15), || {
            ingest = get_json(processor, "/api/stats").1["cluster"]["ingest"].clone();
            ingest["accepted"] == accepted
                && ingest["enteredAll"] == accepted
                && ingest["waiting"] == 0
        }),
        "accepted by edges = entered by the processor + waiting: {ingest}"
    );
    ingest
}

#[test]
fn an_event_posted_to_one_edge_arrives_whole_as_an_outcome_on_another() {
    let Some(redis) = Redis::start() else { return };
    // A deadline that no machine, however busy, misses for a 1 MiB event.
    let processor = processor(&redis, &["--rate", "0", "--deadline-ms", "30000"]);
    let (a, b) = (edge(&redis), edge(&redis));
    wait_for_feed_of_a_quiet_processor(a.addr);
    wait_for_feed_of_a_quiet_processor(b.addr);
    let mut ws_on_b = connect(b.addr, "/ws");
    let mut sse_on_b = open_event_stream(b.addr, "/events", &[]);

    // The largest payload a webhook takes, through the stream, to both transports.
    let text = "x".repeat(1024 * 1024 - 4096 - 64);
    let body = serde_json::to_vec(&serde_json::json!({ "note": text })).expect("JSON");
    let answer = post(a.addr, "/api/webhook/shop", "application/json", &body);
    assert_eq!(
        answer.status,
        202,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let id = answer.json()["ids"][0].as_str().expect("an id").to_owned();
    let small = post(
        a.addr,
        "/api/events",
        "application/json",
        br#"[{"deadlineMs":500,"producer":"edge-a"},{"deadlineMs":500}]"#,
    );
    assert_eq!(small.status, 202);
    assert_eq!(small.json()["accepted"], 2);

    let (outcomes_ws, _) = outcomes(&mut ws_on_b, 3);
    let outcomes_sse = sse_on_b.events(3, Duration::from_secs(30));
    for got in [&outcomes_ws, &outcomes_sse] {
        let big = got
            .iter()
            .find(|o| o["id"] == id.as_str())
            .expect("the webhook's outcome");
        assert_eq!(
            big["payload"]["note"].as_str().map(str::len),
            Some(text.len())
        );
        assert_eq!(big["producer"], "shop");
        assert_eq!(
            big["deadlineMs"], 30000,
            "an edge applies the processor's deadline"
        );
        assert_eq!(big["status"], "on-time", "{}", big["status"]);
        assert!(got.iter().any(|o| o["producer"] == "edge-a"));
        // Where its time went travels with it.
        assert!(big["queueMs"].as_f64().is_some(), "{big}");
        assert!(big["workMs"].as_f64().is_some(), "{big}");
    }
    let ingest = ingest_settled(processor.addr, 3);
    assert_eq!(ingest["entered"], 3);
    let (_, stats) = get_json(processor.addr, "/api/stats");
    assert_eq!(stats["totals"]["ingested"], 3);
    let mut forwarded = Value::Null;
    assert!(
        eventually(Duration::from_secs(5), || {
            forwarded = get_json(a.addr, "/api/stats").1["cluster"]["ingest"]["forwarded"].clone();
            forwarded == 3
        }),
        "the edge counts what it forwarded: {forwarded}"
    );
    // So do the stats' misses by cause, through an edge's stats: one event
    // whose work cannot fit its deadline is dropped by admission.
    let doomed = br#"{"id":"doomed","deadlineMs":50,"workMs":5000}"#;
    assert_eq!(
        post(a.addr, "/api/events", "application/json", doomed).status,
        202
    );
    let misses = |node: SocketAddr| get_json(node, "/api/stats").1["spent"]["missesTotal"].clone();
    let mut seen = (Value::Null, Value::Null);
    assert!(
        eventually(Duration::from_secs(10), || {
            seen = (misses(processor.addr), misses(a.addr));
            seen.0["admission"] == 1 && seen.1 == seen.0
        }),
        "the edge serves the processor's misses by cause: {seen:?}"
    );
}

/// [`wait_for_feed`] for a processor that generates nothing.
fn wait_for_feed_of_a_quiet_processor(edge: SocketAddr) {
    let mut stats = Value::Null;
    assert!(
        eventually(Duration::from_secs(15), || {
            let (status, body) = get_json(edge, "/api/stats");
            stats = body;
            status == 200 && stats["cluster"]["processor"]["redis"] == "connected"
        }),
        "the edge never served the processor's stats: {stats}"
    );
}

#[test]
fn events_posted_while_no_processor_runs_wait_in_the_stream_and_each_is_judged_once() {
    let Some(redis) = Redis::start() else { return };
    let mut first = processor(&redis, &["--rate", "0"]);
    let edge_node = edge(&redis);
    wait_for_feed_of_a_quiet_processor(edge_node.addr);
    let mut ids = Vec::new();
    let mut post_batch = |label: &str| {
        let body = format!(
            r#"[{{"id":"{label}-1","deadlineMs":60000}},{{"id":"{label}-2","deadlineMs":60000}}]"#
        );
        let answer = post(
            edge_node.addr,
            "/api/events",
            "application/json",
            body.as_bytes(),
        );
        assert_eq!(
            answer.status,
            202,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        ids.extend([format!("{label}-1"), format!("{label}-2")]);
    };
    post_batch("before");
    ingest_settled(first.addr, 2);
    // Killed: whatever it had entered is its run's; what comes next waits.
    first.signal("KILL");
    first.wait_for_exit(Duration::from_secs(10));
    post_batch("while-down");
    post_batch("also-while-down");

    let second = processor(&redis, &["--rate", "0"]);
    let ingest = ingest_settled(second.addr, 6);
    assert_eq!(
        ingest["entered"], 4,
        "the second run entered what waited, and only that"
    );
    // The first run's consumer is forgotten by both groups.
    let mut cli = redis_cli(&redis);
    for stream in ["punctual:ingest", "punctual:config"] {
        let consumers: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg("processors")
            .query(&mut cli)
            .expect("XINFO CONSUMERS");
        assert!(consumers.len() <= 1, "{stream}: {consumers:?}");
    }
    let mut client = connect(edge_node.addr, "/ws?since=0");
    let (got, _) = outcomes(&mut client, 4);
    let mut seen: Vec<&str> = got.iter().filter_map(|o| o["id"].as_str()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "also-while-down-1",
            "also-while-down-2",
            "while-down-1",
            "while-down-2"
        ]
    );
    assert!(next_message(&mut client, Duration::from_secs(2)).is_none_or(|m| m["type"] != "event"));
}

/// Another client of Redis writes ingest entries no edge would: each is
/// removed and counted as malformed, the events behind it are judged, and
/// the count it claims moves the books by at most one batch.
#[test]
fn ingest_entries_no_edge_would_write_are_counted_malformed_and_stop_nothing() {
    let Some(redis) = Redis::start() else { return };
    let processor = processor(&redis, &["--rate", "0"]);
    let edge_node = edge(&redis);
    wait_for_feed_of_a_quiet_processor(edge_node.addr);
    let mut cli = redis_cli(&redis);
    let hostile = [
        // Work no `Duration` can hold, and a count that would wrap the sum.
        (
            r#"[{"id":"huge","createdAt":0,"deadlineMs":100,"workMs":1e300}]"#,
            "18446744073709551615",
        ),
        // A deadline past an hour, a createdAt a year ahead, not JSON.
        (
            r#"[{"id":"long","createdAt":0,"deadlineMs":99999999999}]"#,
            "1",
        ),
        (
            r#"[{"id":"ahead","createdAt":99999999999999,"deadlineMs":100}]"#,
            "1",
        ),
        ("not json", "1"),
    ];
    for (events, count) in hostile {
        let _: String = redis::cmd("XADD")
            .arg("punctual:ingest")
            .arg("*")
            .arg("events")
            .arg(events)
            .arg("count")
            .arg(count)
            .query(&mut cli)
            .expect("XADD");
    }
    let ids = post_events(edge_node.addr, 3);

    let judged = all_judged_once(&redis, &ids);
    assert_eq!(judged.len(), 3, "the events behind them are judged");
    let mut ingest = Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            ingest = get_json(processor.addr, "/api/stats").1["cluster"]["ingest"].clone();
            ingest["malformed"] == 4 && ingest["accepted"] == 3
        }),
        "{ingest}"
    );
    assert_eq!(ingest["entered"], 3, "{ingest}");
    assert_eq!(
        ingest["enteredAll"],
        3 + 10_000 + 1 + 1 + 1,
        "a claimed count moves the books by at most one batch: {ingest}"
    );
    let (status, _) = get_json(processor.addr, "/readyz");
    assert_eq!(status, 200, "the processor is still live and ready");
    let left: u64 = redis::cmd("XLEN")
        .arg("punctual:ingest")
        .query(&mut cli)
        .expect("XLEN");
    assert_eq!(left, 0, "every entry is taken off the stream");
}

#[test]
fn an_edge_without_redis_refuses_a_post_with_503_and_retry_after_and_takes_it_back_after() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let processor = processor(&redis, &["--rate", "0"]);
    let edge_node = edge(&redis);
    wait_for_feed_of_a_quiet_processor(edge_node.addr);
    redis.kill();
    assert!(eventually(Duration::from_secs(10), || get_json(
        edge_node.addr,
        "/readyz"
    )
    .1["status"]
        == "degraded"));
    let answer = post(
        edge_node.addr,
        "/api/events",
        "application/json",
        br#"{"deadlineMs":500}"#,
    );
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("Redis"),
        "{:?}",
        answer.json()
    );
    // Bad input is still answered as bad input, before Redis is asked.
    let bad = post(
        edge_node.addr,
        "/api/events",
        "application/json",
        br#"{"deadlineMs":-1}"#,
    );
    assert_eq!(bad.status, 400);

    redis.restart_after(Duration::ZERO);
    assert!(eventually(Duration::from_secs(15), || {
        post(
            edge_node.addr,
            "/api/events",
            "application/json",
            br#"{"deadlineMs":500}"#,
        )
        .status
            == 202
    }));
    ingest_settled(processor.addr, 1);
}

/// A plain client of the test's Redis, as `redis-cli` would be.
fn redis_cli(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url())
        .and_then(|client| client.get_connection())
        .expect("connect to the test's Redis")
}

#[test]
fn entries_of_other_writers_stop_neither_the_processor_nor_the_edges() {
    let Some(redis) = Redis::start() else { return };
    let processor = processor(&redis, &[]);
    let edge_node = edge(&redis);
    wait_for_feed(edge_node.addr);
    let mut client = connect(edge_node.addr, "/ws?control=1");
    let (mut seen, _) = outcomes(&mut client, 5);

    let mut cli = redis_cli(&redis);
    // An entry far above the processor's ids, one whose field name is not
    // UTF-8, and a stats key of another type.
    let _: String = redis::cmd("XADD")
        .arg("punctual:outcomes")
        .arg("99999999999999-1")
        .arg("note")
        .arg("hello")
        .query(&mut cli)
        .expect("XADD");
    let _: String = redis::cmd("XADD")
        .arg("punctual:outcomes")
        .arg("*")
        .arg(&b"\xff\xfe"[..])
        .arg("x")
        .query(&mut cli)
        .expect("XADD");
    let _: () = redis::cmd("DEL")
        .arg("punctual:stats")
        .query(&mut cli)
        .expect("DEL");
    let _: () = redis::cmd("SET")
        .arg("punctual:stats")
        .arg("x")
        .query(&mut cli)
        .expect("SET");

    let (more, control) = outcomes(&mut client, 150);
    seen.extend(more);
    assert_consecutive(&seqs(&seen));
    assert!(
        control
            .iter()
            .all(|m| m["type"] != "gap" && m["type"] != "reset"),
        "{control:?}"
    );
    let own = first_stats(processor.addr);
    assert_eq!(own["cluster"]["missed"], 0, "{own}");
    let log = edge_node.log_so_far().join("\n");
    assert!(
        log.matches("WARN").count() < 10,
        "warnings are rate-limited:\n{log}"
    );
}

#[test]
fn a_hung_redis_degrades_an_edge_but_never_makes_it_look_dead() {
    let Some(redis) = Redis::start() else { return };
    let _processor = processor(&redis, &[]);
    let edge_node = edge(&redis);
    wait_for_feed(edge_node.addr);
    let pid = redis.child.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    let until = Instant::now() + Duration::from_secs(12);
    let mut degraded = false;
    while Instant::now() < until {
        let (health, _) = get_json(edge_node.addr, "/healthz");
        let (ready, body) = get_json(edge_node.addr, "/readyz");
        assert_eq!(
            (health, ready),
            (200, 200),
            "a hung Redis is not a dead edge: {body}"
        );
        degraded |= body["status"] == "degraded";
        thread::sleep(Duration::from_millis(500));
    }
    signal("-CONT");
    assert!(degraded, "the edge said it was degraded");
    assert!(eventually(Duration::from_secs(20), || get_json(
        edge_node.addr,
        "/readyz"
    )
    .1["status"]
        == "ready"));
}

/// Every outcome in the stream, oldest first: (its epoch, the event's id).
fn published_outcomes(redis: &Redis) -> Vec<(String, String)> {
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("punctual:outcomes")
        .arg("-")
        .arg("+")
        .query(&mut redis_cli(redis))
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| {
            let json: Value = serde_json::from_str(&fields["json"]).expect("outcome JSON");
            (
                fields["epoch"].clone(),
                json["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

/// Waits until `node` stands as `state` in the processor lease; its stats.
fn lease_is(node: SocketAddr, state: &str) -> Value {
    let mut stats = Value::Null;
    assert!(
        eventually(Duration::from_secs(20), || {
            stats = get_json(node, "/api/stats").1;
            stats["cluster"]["lease"]["state"] == state
        }),
        "never {state}: {}",
        stats["cluster"]
    );
    stats
}

/// Posts `n` events at `edge`; their ids.
fn post_events(edge: SocketAddr, n: usize) -> Vec<String> {
    let batch = vec![serde_json::json!({ "deadlineMs": 30000 }); n];
    let answer = post(
        edge,
        "/api/events",
        "application/json",
        &serde_json::to_vec(&batch).expect("JSON"),
    );
    assert_eq!(
        answer.status,
        202,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect()
}

/// Waits until the stream holds an outcome of every one of `ids`; then
/// checks no event was judged twice. Returns the outcomes.
fn all_judged_once(redis: &Redis, ids: &[String]) -> Vec<(String, String)> {
    let mut published = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            published = published_outcomes(redis);
            ids.iter()
                .all(|id| published.iter().any(|(_, judged)| judged == id))
        }),
        "not every accepted event was judged: {} of {} published",
        published.len(),
        ids.len()
    );
    let mut seen = std::collections::HashSet::new();
    for (_, id) in &published {
        assert!(seen.insert(id), "event {id} was judged twice");
    }
    published
}

#[test]
fn a_standby_takes_over_from_a_killed_processor_with_a_new_epoch_and_judges_every_event_once() {
    let Some(redis) = Redis::start() else { return };
    let mut first = processor(&redis, &["--rate", "0"]);
    let first_epoch = lease_is(first.addr, "active")["epoch"].clone();
    // Its own flags say 100 events/s and fifo: it must carry on with the
    // live settings of the processor it replaces instead.
    let standby = processor(&redis, &["--rate", "100", "--schedule", "fifo"]);
    lease_is(standby.addr, "standby");
    assert!(
        eventually(Duration::from_secs(10), || {
            get_json(standby.addr, "/api/stats").1["cluster"]["lease"]["holder"] == first_epoch
        }),
        "a standby names the active processor"
    );
    let ready = get_json(standby.addr, "/readyz");
    assert_eq!(ready.0, 503, "a standby is not ready: {}", ready.1);
    assert_eq!(http(standby.addr, "GET", "/healthz", &[], b"").status, 200);
    let refused = post(
        standby.addr,
        "/api/events",
        "application/json",
        br#"{"deadlineMs":500}"#,
    );
    assert_eq!(refused.status, 503, "a standby takes no events");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("standby")
    );

    let edge_node = edge(&redis);
    wait_for_feed_of_a_quiet_processor(edge_node.addr);
    let change = http(
        edge_node.addr,
        "PUT",
        "/api/config",
        &[("Content-Type", "application/json")],
        br#"{"schedule":"edf"}"#,
    );
    assert_eq!(change.status, 200);
    // A standby carries on from the settings in the last published stats.
    assert!(eventually(Duration::from_secs(10), || {
        get_json(edge_node.addr, "/api/stats").1["config"]["schedule"] == "edf"
    }));
    let mut sse = open_event_stream(edge_node.addr, "/events", &[]);
    let mut ids = post_events(edge_node.addr, 5);
    all_judged_once(&redis, &ids);

    first.child.kill().expect("kill -9 the active processor");
    first.child.wait().expect("reap it");
    let killed = Instant::now();
    // Accepted while no processor is active: they wait in the stream.
    ids.extend(post_events(edge_node.addr, 5));
    let taken = lease_is(standby.addr, "active");
    eprintln!(
        "the standby took over {:?} after the kill",
        killed.elapsed()
    );
    let second_epoch = taken["epoch"].clone();
    assert_ne!(second_epoch, first_epoch, "a new run is a new epoch");
    assert_eq!(taken["config"]["schedule"], "edf");
    assert_eq!(taken["config"]["rate"], 0);
    ids.extend(post_events(edge_node.addr, 5));

    let published = all_judged_once(&redis, &ids);
    let epochs: Vec<&str> = published.iter().map(|(epoch, _)| epoch.as_str()).collect();
    assert_eq!(epochs[..5], [first_epoch.as_str().expect("epoch"); 5]);
    assert_eq!(epochs[5..], [second_epoch.as_str().expect("epoch"); 10]);
    ingest_settled(standby.addr, 15);
    // Clients of the edge are told of the new run.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < until, "no reset on the event stream");
        if let Some(m) = sse.next_message(Duration::from_secs(1))
            && m.event.as_deref() == Some("reset")
        {
            assert_eq!(m.json()["epoch"], second_epoch);
            break;
        }
    }
}

#[test]
fn a_paused_processor_that_lost_the_lease_writes_nothing_when_it_wakes_and_exits() {
    let Some(redis) = Redis::start() else { return };
    let lease = ["--rate", "0", "--lease-ms", "1000"];
    let mut first = processor(&redis, &lease);
    let first_epoch = lease_is(first.addr, "active")["epoch"].clone();
    let second = processor(&redis, &lease);
    lease_is(second.addr, "standby");
    let edge_node = edge(&redis);
    wait_for_feed_of_a_quiet_processor(edge_node.addr);
    let mut ids = post_events(edge_node.addr, 3);
    all_judged_once(&redis, &ids);

    // Paused while its XREADGROUP blocks: a batch posted now is handed to
    // it, though it will never run again as the active processor.
    let mut cli = redis_cli(&redis);
    let held = (0..5).find_map(|_| {
        first.signal("STOP");
        let batch = post_events(edge_node.addr, 3);
        thread::sleep(Duration::from_millis(100));
        let (pending, ..): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg("punctual:ingest")
            .arg("processors")
            .query(&mut cli)
            .expect("XPENDING");
        ids.extend(batch);
        if pending == 1 {
            return Some(());
        }
        // It was between two reads: try again.
        first.signal("CONT");
        thread::sleep(Duration::from_millis(50));
        None
    });
    assert!(held.is_some(), "the paused processor never held a batch");

    let taken = lease_is(second.addr, "active");
    assert_ne!(taken["epoch"], first_epoch);
    ids.extend(post_events(edge_node.addr, 3));
    all_judged_once(&redis, &ids);

    // It wakes, finds the lease another's at its first write, and exits
    // non-zero having written nothing.
    let before = published_outcomes(&redis).len();
    first.signal("CONT");
    let status = first.wait_for_exit(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(1),
        "a processor that lost the lease exits 1"
    );
    assert!(
        first
            .log_so_far()
            .iter()
            .any(|line| line.contains("took the processor lease") && line.contains("ERROR")),
        "it says why it stopped"
    );
    let published = all_judged_once(&redis, &ids);
    assert_eq!(published.len(), before, "the old processor wrote nothing");
    ingest_settled(second.addr, ids.len() as u64);
}

/// Takes the lease from whoever holds it, as a paused processor's
/// successor would; the newest outcome id at that instant.
fn take_the_lease(redis: &Redis, for_ms: u64) -> String {
    let (_, newest): ((), Vec<(String, redis::Value)>) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("punctual:leader")
        .arg("another")
        .arg("PX")
        .arg(for_ms)
        .cmd("XREVRANGE")
        .arg("punctual:outcomes")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut redis_cli(redis))
        .expect("take the lease");
    newest
        .first()
        .map_or_else(|| "0-0".into(), |(id, _)| id.clone())
}

/// How many outcomes of run `epoch` the stream holds after entry `mark`.
fn written_after(redis: &Redis, mark: &str, epoch: &Value) -> usize {
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("punctual:outcomes")
        .arg(format!("({mark}"))
        .arg("+")
        .query(&mut redis_cli(redis))
        .expect("XRANGE");
    entries
        .iter()
        .filter(|(_, fields)| Some(fields["epoch"].as_str()) == epoch.as_str())
        .count()
}

#[test]
fn a_processor_whose_lease_was_taken_writes_nothing_more_and_exits() {
    let Some(redis) = Redis::start() else { return };
    let edge_node = edge(&redis);
    let mut first = processor(&redis, &["--rate", "0"]);
    let first_epoch = lease_is(first.addr, "active")["epoch"].clone();
    wait_for_feed_of_a_quiet_processor(edge_node.addr);
    let mut ids = post_events(edge_node.addr, 3);
    all_judged_once(&redis, &ids);

    // A batch read after the lease was taken: entering it is not counted
    // nor acknowledged (the acknowledgement is fenced), so the next holder
    // claims and judges it.
    let mark = take_the_lease(&redis, 1500);
    ids.extend(post_events(edge_node.addr, 3));
    let status = first.wait_for_exit(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(1),
        "a processor that lost the lease exits 1"
    );
    assert_eq!(written_after(&redis, &mark, &first_epoch), 0);
    let mut second = processor(&redis, &[]);
    let second_epoch = lease_is(second.addr, "active")["epoch"].clone();
    all_judged_once(&redis, &ids);
    ingest_settled(second.addr, 6);
    let change = http(
        edge_node.addr,
        "PUT",
        "/api/config",
        &[("Content-Type", "application/json")],
        br#"{"rate":200}"#,
    );
    assert_eq!(change.status, 200);

    // Outcomes judged after the lease was taken: not one is published (the
    // append is fenced; at 200 events/s the publisher writes long before
    // the lease is next renewed).
    assert!(eventually(Duration::from_secs(10), || written_after(
        &redis,
        "0-0",
        &second_epoch
    ) > 6));
    let mark = take_the_lease(&redis, 1500);
    let status = second.wait_for_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1));
    assert_eq!(written_after(&redis, &mark, &second_epoch), 0);
    assert!(
        second
            .log_so_far()
            .iter()
            .any(|line| line.contains("ERROR") && line.contains("took the processor lease")),
        "it says why it stopped"
    );
}

#[test]
fn a_processor_paused_through_another_ones_whole_tenure_does_not_come_back() {
    let Some(redis) = Redis::start() else { return };
    let mut first = processor(&redis, &["--lease-ms", "1000"]);
    let epoch = lease_is(first.addr, "active")["epoch"].clone();
    first.signal("STOP");
    // Another processor takes the lease in a new term, then is gone: the
    // lease expires and nobody holds it when the first one wakes.
    let mut cli = redis_cli(&redis);
    assert!(eventually(Duration::from_secs(5), || {
        redis::cmd("SET")
            .arg("punctual:leader")
            .arg("another")
            .arg("NX")
            .arg("PX")
            .arg(300)
            .query::<Option<String>>(&mut cli)
            .expect("SET")
            .is_some()
    }));
    let _: u64 = redis::cmd("INCR")
        .arg("punctual:leader:term")
        .query(&mut cli)
        .expect("INCR");
    let mark = take_the_lease(&redis, 1);
    thread::sleep(Duration::from_millis(400));
    first.signal("CONT");
    let status = first.wait_for_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1), "it must not take the lease back");
    assert_eq!(written_after(&redis, &mark, &epoch), 0);
}

/// `punctual-load` deals its clients over the edges and measures the
/// processor, the edges and Redis together.
#[test]
fn the_load_tool_spreads_its_clients_over_the_edges_and_measures_every_node() {
    let Some(redis) = Redis::start() else { return };
    let processor = processor(&redis, &["--rate", "50"]);
    let (a, b) = (edge(&redis), edge(&redis));
    wait_for_feed(a.addr);
    wait_for_feed(b.addr);
    let addrs = format!("{},{}", a.addr, b.addr);
    let pids = format!("{},{},{}", processor.child.id(), a.child.id(), b.child.id());
    let run = Command::new(env!("CARGO_BIN_EXE_punctual-load"))
        .args(["--addr", &addrs, "--pid", &pids, "--ws", "4", "--sse", "2"])
        .args(["--seconds", "3", "--warmup", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run punctual-load");
    // Three clients on each edge while it runs, by each edge's own count.
    let mut seen = Vec::new();
    let dealt = eventually(Duration::from_secs(10), || {
        seen = [a.addr, b.addr]
            .map(|edge| get_json(edge, "/api/stats").1["clients"].clone())
            .to_vec();
        seen.iter().all(|c| c["websocket"] == 2 && c["sse"] == 1)
    });
    let output = run.wait_with_output().expect("punctual-load ends");
    assert!(dealt, "clients per edge: {seen:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let at = |path: &str| report.pointer(path).cloned().unwrap_or(Value::Null);

    assert_eq!(at("/clients/ws/connected"), 4, "{report}");
    assert_eq!(at("/clients/sse/connected"), 2, "{report}");
    assert_eq!(at("/gaps/missingSeqs"), 0, "{report}");
    assert_eq!(at("/messages/deliveredPct"), 100.0, "{report}");
    let processes = at("/server/processes");
    let measured: Vec<Value> = (processes.as_array().into_iter().flatten())
        .map(|p| p["pid"].clone())
        .collect();
    let given: Vec<Value> = [&processor, &a, &b]
        .map(|node| node.child.id().into())
        .to_vec();
    assert_eq!(measured, given, "each node, in the order given: {report}");
    assert!(
        at("/server/cpuUsPerMessage").as_f64() > Some(0.0),
        "{report}"
    );
}
