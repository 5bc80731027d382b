//! The load tool against a daemon it starts itself: every client connects,
//! events arrive without gaps, the daemon's totals balance, and the tool's
//! own workers (HTTP and pull) do the daemon's work.

use std::process::Command;

use serde_json::Value;

/// Runs the built tool with `args` and returns its JSON report.
fn load_report(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_punctual-load"))
        .args(args)
        .output()
        .expect("run punctual-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object on stdout")
}

fn at(report: &Value, path: &str) -> Value {
    report.pointer(path).cloned().unwrap_or(Value::Null)
}

#[test]
fn load_tool_spawns_the_daemon_connects_every_client_and_reports_json() {
    let report = load_report(&[
        "--spawn",
        "--ws",
        "5",
        "--sse",
        "3",
        "--seconds",
        "2",
        "--warmup",
        "1",
        "--json",
        "--",
        "--rate",
        "50",
    ]);
    let at = |path: &str| at(&report, path);

    assert_eq!(at("/clients/ws/connected"), 5, "{report}");
    assert_eq!(at("/clients/sse/connected"), 3, "{report}");
    assert_eq!(at("/clients/ws/connectFailures"), 0, "{report}");
    assert_eq!(at("/clients/sse/connectFailures"), 0, "{report}");
    assert!(at("/messages/received").as_u64() > Some(0), "{report}");
    // Both transports delivered: the slowest client got events too.
    assert!(
        at("/messages/perClientPerSecond/min").as_f64() > Some(0.0),
        "{report}"
    );
    assert_eq!(at("/gaps/missingSeqs"), 0, "{report}");
    assert_eq!(at("/gaps/gapNotices"), 0, "{report}");
    assert_eq!(at("/messages/badSseIds"), 0, "{report}");
    assert_eq!(at("/messages/unparsed"), 0, "{report}");
    assert_eq!(at("/daemonStats/conservation"), true, "{report}");
    assert!(
        at("/server/cpuPct").is_number(),
        "the spawned daemon's CPU is read: {report}"
    );
    assert!(at("/server/threads").as_u64() > Some(0), "{report}");
    assert_eq!(at("/work/mode"), "simulate", "{report}");
}

/// Every verdict came from the tool's workers, on time: `answered` (what the
/// tool's workers answered, counted after the daemon's last stats reading)
/// covers every on-time verdict, and nothing failed, ended late or was lost.
fn assert_worked_on_time_by_the_tool(report: &Value, answered: &str, mode: &str) {
    let at = |path: &str| at(report, path);
    assert_eq!(at("/work/mode"), mode, "{report}");
    let on_time = at("/daemonStats/totals/onTime").as_u64().unwrap_or(0);
    assert!(on_time > 0, "{report}");
    assert!(at(answered).as_u64() >= Some(on_time), "{report}");
    assert!(at("/messages/received").as_u64() > Some(0), "{report}");
    assert!(at("/verdictMs/p50").as_f64() > Some(0.0), "{report}");
    // The daemon's split of those verdicts, read from each outcome: the work
    // is the tool's round trip (the tool's histograms floor a value at 1 µs,
    // so only the queue's presence is checked).
    assert!(at("/queueMs/p50").as_f64().is_some(), "{report}");
    assert!(at("/workMs/p50").as_f64() >= Some(0.01), "{report}");
    assert_eq!(at("/verdictsPerSecond/misses/work"), 0.0, "{report}");
    assert_eq!(at("/daemonStats/totals/failed"), 0, "{report}");
    assert_eq!(at("/daemonStats/totals/late"), 0, "{report}");
    assert_eq!(at("/work/failedDuringRun"), 0, "{report}");
    assert_eq!(at("/daemonStats/conservation"), true, "{report}");
}

#[test]
fn pull_workers_of_the_load_tool_take_every_task_and_answer_it_on_time() {
    let report = load_report(&[
        "--spawn",
        "--ws",
        "1",
        "--seconds",
        "2",
        "--warmup",
        "1",
        "--pull-workers",
        "1",
        "--json",
        "--",
        "--rate",
        "200",
        "--deadline-ms",
        "1000",
    ]);
    assert_eq!(at(&report, "/work/pullWorkers/connected"), 1, "{report}");
    assert_eq!(at(&report, "/work/pullWorkers/endedEarly"), 0, "{report}");
    assert!(
        at(&report, "/target/daemonArgs")
            .to_string()
            .contains(r#""--work","pull""#),
        "{report}"
    );
    assert_worked_on_time_by_the_tool(&report, "/work/pullTasks", "pull");
}

#[test]
fn the_load_tool_http_worker_answers_every_call_on_time() {
    let report = load_report(&[
        "--spawn",
        "--ws",
        "1",
        "--seconds",
        "2",
        "--warmup",
        "1",
        "--http-worker",
        "--json",
        "--",
        "--rate",
        "200",
        "--deadline-ms",
        "1000",
    ]);
    assert!(
        at(&report, "/work/target")
            .as_str()
            .is_some_and(|url| url.starts_with("http://127.0.0.1:")),
        "{report}"
    );
    assert_worked_on_time_by_the_tool(&report, "/work/httpCalls", "http");
}

#[test]
fn the_load_tools_producer_posts_the_classes_of_its_mix_with_their_deadlines() {
    let report = load_report(&[
        "--spawn",
        "--ws",
        "1",
        "--seconds",
        "2",
        "--warmup",
        "1",
        "--json",
        "--ingest-rate",
        "100",
        "--batch",
        "5",
        "--ingest-mix",
        "tight:300:1,loose:5000:3",
        "--ingest-work",
        "1-2",
        "--",
        "--rate",
        "0",
        "--schedule",
        "edf",
    ]);
    let producers = at(&report, "/daemonStats/producers");
    let count = |name: &str| {
        producers
            .as_array()
            .and_then(|rows| rows.iter().find(|p| p["name"] == name))
            .and_then(|p| p["onTime"].as_u64())
            .unwrap_or(0)
    };
    let (tight, loose) = (count("tight"), count("loose"));
    assert!(tight > 0 && loose > tight, "weights 1:3: {producers}");
    assert_eq!(
        count("ingest"),
        0,
        "every posted event named its class: {producers}"
    );
    assert_eq!(at(&report, "/daemonStats/conservation"), true, "{report}");
    assert_eq!(at(&report, "/latenessMs/late"), 0, "{report}");
}

#[test]
fn probes_are_timed_and_the_other_clients_are_drained_in_bulk() {
    let report = load_report(&[
        "--spawn",
        "--ws",
        "12",
        "--probes",
        "3",
        "--drain-ms",
        "50",
        "--seconds",
        "2",
        "--warmup",
        "1",
        "--json",
        "--",
        "--rate",
        "50",
    ]);
    let at = |path: &str| at(&report, path);
    assert_eq!(at("/clients/ws/connected"), 3, "the probes: {report}");
    assert_eq!(at("/drained/connected"), 9, "{report}");
    assert_eq!(at("/drained/closedByServer"), 0, "{report}");
    // Nine clients each read at least the outcomes of the window, in bulk.
    let bytes = at("/drained/bytes").as_u64().unwrap_or(0);
    let received = at("/messages/received").as_u64().unwrap_or(0);
    assert!(received > 0, "{report}");
    assert!(bytes > 9 * (received / 3) * 100, "{report}");
    assert_eq!(at("/gaps/missingSeqs"), 0, "{report}");
    assert!(
        at("/server/cpuUsPerMessage").as_f64() > Some(0.0),
        "{report}"
    );
}
