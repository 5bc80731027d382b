//! Replays every input kept under `fuzz/regressions/<target>/` through the
//! same function its fuzz target calls, on stable and without libFuzzer.
//! Each directory holds what a fuzzer once found plus hand-made nasty
//! inputs (deep nesting, huge numbers, invalid UTF-8, NUL bytes, 10k items),
//! so the test has work to do even when no crash was ever found.

use std::fs;
use std::path::{Path, PathBuf};

use punctual::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    for path in inputs(target) {
        let data = fs::read(&path).expect("read input");
        eprintln!("{target}: {} ({} bytes)", path.display(), data.len());
        run(&data);
    }
}

#[test]
fn ingest_bodies_that_once_broke_or_might_are_refused_cleanly() {
    replay("ingest", fuzzing::ingest_body);
}

#[test]
fn config_changes_that_once_broke_or_might_are_refused_cleanly() {
    replay("config_change", fuzzing::config_change);
}

#[test]
fn stream_queries_that_once_broke_or_might_are_read_cleanly() {
    replay("stream_query", fuzzing::stream_query);
}

/// Each raw input is sent more times than the front has request threads, so
/// one that kills the thread serving it leaves nothing to answer `/healthz`.
const RAW_REPEATS: usize = 8;

#[test]
fn raw_requests_that_once_broke_or_might_leave_the_daemon_answering() {
    for path in inputs("raw_request") {
        let data = fs::read(&path).expect("read input");
        eprintln!("raw_request: {} ({} bytes)", path.display(), data.len());
        for _ in 0..RAW_REPEATS {
            fuzzing::raw_request(&data);
        }
        assert!(
            fuzzing::raw_request_daemon_healthy(),
            "/healthz stopped answering after {}",
            path.display()
        );
    }
}
