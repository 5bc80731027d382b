//! Faults inside the daemon, made on purpose with the hidden `--test-panic`
//! hook: a worker or a client writer that panics costs one event or one
//! client, counted, and the daemon keeps serving; a generator, hub or fan-out
//! that panics ends the `punctual` process with a non-zero status (so systemd
//! restarts it), while an embedded `Server` only stops reporting itself live.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, eventually, get_json, http, start};
use punctual::Server;
use punctual::Snapshot;
use punctual::{EXIT_STAGE_DIED, Role};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(20);

fn latest(server: &Server) -> Snapshot {
    server
        .stats()
        .map(|s| (*s).clone())
        .expect("a snapshot is taken at start")
}

fn metric_line(addr: SocketAddr, prefix: &str) -> String {
    let metrics = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("/metrics has no {prefix}"))
        .to_owned()
}

#[test]
fn a_worker_panic_costs_one_panicked_verdict_and_the_worker_goes_on_judging() {
    // One worker: if its panic were not caught, nothing would be judged again.
    let server = start(|c| {
        c.workers = 1;
        c.test_panic = Some(Role::Worker);
    });
    let addr = server.local_addr();
    assert!(
        eventually(PATIENCE, || {
            server
                .stats()
                .is_some_and(|s| s.threads.panics.worker == 1 && s.totals.dropped.panicked == 1)
        }),
        "the panic and its verdict are counted: {:?}",
        latest(&server).totals
    );

    // The verdict went out like any other and is in the history.
    let (status, history) = get_json(addr, "/api/events?since=0&limit=1000");
    assert_eq!(status, 200);
    let panicked: Vec<&Value> = history
        .as_array()
        .expect("events array")
        .iter()
        .filter(|e| e["dropReason"] == "panicked")
        .collect();
    assert_eq!(panicked.len(), 1, "{history}");
    assert_eq!(panicked[0]["status"], "dropped");

    // The worker carries on: a client connecting now gets fresh verdicts.
    let mut client = connect(addr, "/ws");
    let got = common::events(&mut client, 5, PATIENCE);
    assert!(
        got.iter().any(|e| e["status"] == "on-time"),
        "the worker judges again: {got:?}"
    );

    let s = latest(&server);
    assert!(s.totals.balances(), "conservation holds: {:?}", s.totals);
    assert!(
        s.totals.in_flight <= 64 + 1,
        "nothing stuck in flight: {:?}",
        s.totals
    );
    assert_eq!(s.threads.panics.worker, 1);
    assert_eq!(
        metric_line(addr, "punctual_thread_panics_total{role=\"worker\"}"),
        "punctual_thread_panics_total{role=\"worker\"} 1"
    );
    assert_eq!(
        metric_line(
            addr,
            "punctual_outcomes_total{status=\"dropped\",reason=\"panicked\"}"
        ),
        "punctual_outcomes_total{status=\"dropped\",reason=\"panicked\"} 1"
    );
    let (_, stats) = get_json(addr, "/api/stats");
    assert_eq!(stats["threads"]["panics"]["worker"], 1, "{stats}");
    assert_eq!(stats["totals"]["dropped"]["panicked"], 1, "{stats}");
    server.stop();
}

/// Reads `client` until the server closes it; whether it did within `timeout`.
fn closed_by_server(client: &mut common::Client, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        match client.read() {
            Ok(_) => {}
            Err(e) if common::is_timeout(&e) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_writer_panic_disconnects_that_client_only_and_frees_its_slot() {
    let server = start(|c| c.test_panic = Some(Role::Writer));
    let addr = server.local_addr();

    // The first client's writer panics on its first batch.
    let mut doomed = connect(addr, "/ws");
    assert!(
        closed_by_server(&mut doomed, PATIENCE),
        "the client whose writer panicked is disconnected"
    );
    assert!(
        eventually(PATIENCE, || {
            server
                .stats()
                .is_some_and(|s| s.threads.panics.writer == 1 && s.clients.connected == 0)
        }),
        "the panic is counted and the slot freed: {:?} {:?}",
        latest(&server).threads,
        latest(&server).clients
    );

    // Everyone else, and everyone after, is served as before.
    let mut next = connect(addr, "/ws");
    common::events(&mut next, 5, PATIENCE);
    let s = latest(&server);
    assert_eq!(s.threads.panics.writer, 1);
    assert!(s.totals.balances(), "{:?}", s.totals);
    assert_eq!(
        metric_line(addr, "punctual_thread_panics_total{role=\"writer\"}"),
        "punctual_thread_panics_total{role=\"writer\"} 1"
    );
    assert_eq!(
        server.ready(),
        Ok(()),
        "a lost client is no reason to restart"
    );
    server.stop();
}

#[test]
fn an_embedded_server_whose_hub_dies_reports_itself_not_live_instead_of_exiting() {
    // This test runs inside the test process: reaching its end proves the
    // hub's death did not exit the process.
    let server = start(|c| c.test_panic = Some(Role::Hub));
    let addr = server.local_addr();
    let mut answer = (0, Value::Null);
    assert!(
        eventually(PATIENCE, || {
            answer = get_json(addr, "/healthz");
            answer.0 == 503
        }),
        "/healthz reports the dead hub: {answer:?}"
    );
    assert!(
        answer.1["reason"]
            .as_str()
            .is_some_and(|r| r.contains("hub thread panicked")),
        "{answer:?}"
    );
    assert!(server.ready().is_err());
    server.stop();
}

/// Starts the built daemon with `--test-panic role` and returns it with its log.
fn spawn_doomed(role: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_punctual"))
        .args(["--listen", "127.0.0.1:0", "--test-panic", role])
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start punctual");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().expect("poll child") {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_dead_generator_hub_or_fanout_ends_the_daemon_with_a_failure_status_naming_it() {
    for role in ["generator", "hub", "fanout"] {
        let (mut child, log) = spawn_doomed(role);
        let status = exit_within(&mut child, Duration::from_secs(10));
        let lines: Vec<String> = log.try_iter().collect();
        let status = status.unwrap_or_else(|| {
            panic!(
                "punctual went on running with a dead {role}:\n{}",
                lines.join("\n")
            )
        });
        assert_eq!(
            status.code(),
            Some(EXIT_STAGE_DIED),
            "{role}: {status}\n{}",
            lines.join("\n")
        );
        let named = format!("{role} thread {role} panicked");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ERROR") && l.contains(&named)),
            "the log names the {role} at error level:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn the_panic_hook_is_hidden_from_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_punctual"))
        .arg("--help")
        .output()
        .expect("run punctual --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--workers"), "{help}");
    assert!(!help.contains("test-panic"), "{help}");
}
