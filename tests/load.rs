//! The load tool against a daemon it starts itself: every client connects,
//! events arrive without gaps, and the daemon's totals balance.

use std::process::Command;

use serde_json::Value;

#[test]
fn load_tool_spawns_the_daemon_connects_every_client_and_reports_json() {
    let output = Command::new(env!("CARGO_BIN_EXE_punctual-load"))
        .args([
            "--spawn",
            "--ws",
            "5",
            "--sse",
            "3",
            "--seconds",
            "2",
            "--warmup",
            "1",
        ])
        .args(["--json", "--", "--rate", "50"])
        .output()
        .expect("run punctual-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    let at = |path: &str| report.pointer(path).cloned().unwrap_or(Value::Null);

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
}
