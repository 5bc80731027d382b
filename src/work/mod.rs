//! Real work: what a worker thread does with an admitted event when the work
//! is not simulated (`--work http` or `--work pull`).
//!
//! Owns: the task message every real worker receives ([`task_json`]), the
//! answer a worker thread waits for ([`Answer`]), and the two ways of getting
//! it — [`http::Caller`] (one kept-alive HTTP client per worker thread) and
//! [`pull::RemoteWorkers`] (workers connected over WebSocket, with credit).
//!
//! Channels: in pull mode each task has a one-slot answer channel, written by
//! the remote worker's reader thread (or by `pull-flush`, which drops a
//! remote too slow to take its task) and read by the worker thread that sent
//! the task; the `RemoteWorkers`' credit pool says which remote worker may take
//! a task. The verdict itself is still given by the worker thread
//! (`workers`): this module only reports what came back, and when.
//!
//! Must not know: admission, the ledger, or how outcomes are delivered.

pub mod http;
pub mod pull;

use std::time::Instant;

use crate::pipeline::event::{Event, to_microsecond, whole_millis};
use crate::time::WallClock;

/// What came back from a real worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The worker reports the work done (a 2xx answer, or `done`).
    Done,
    /// The worker reports an error, or could not be reached; the text says
    /// which (`HTTP 503`, `connection refused`, `worker gone`, the worker's words).
    Failed(Box<str>),
    /// No answer by the deadline: the call was abandoned then.
    TimedOut,
}

/// How a task looks on the wire for `deadline_at`, seen at `now`: the event
/// (`id`, `createdAt`, `deadlineMs`, `producer`, `payload`), its absolute
/// deadline in epoch ms (`deadlineAt`) and the time left (`timeLeftMs`).
/// Pull tasks carry `"type":"task"` first; HTTP bodies do not need it.
pub fn task_json(
    event: &Event,
    clock: &WallClock,
    now: Instant,
    kind: Option<&str>,
) -> serde_json::Result<String> {
    let time_left = event.deadline_at().saturating_duration_since(now);
    let task = Task {
        kind,
        id: &event.id,
        created_at: to_microsecond(clock.epoch_ms(event.created)),
        deadline_ms: whole_millis(event.deadline),
        producer: event.producer(),
        deadline_at: to_microsecond(clock.epoch_ms(event.deadline_at())),
        time_left_ms: whole_millis(time_left),
        payload: event.payload.as_deref(),
    };
    serde_json::to_string(&task)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Task<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    id: &'a str,
    created_at: f64,
    deadline_ms: u64,
    producer: &'a str,
    deadline_at: f64,
    time_left_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a serde_json::value::RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_task_names_the_event_its_deadline_and_the_time_left() {
        let t0 = Instant::now();
        let clock = WallClock::anchored(t0, 1_000_000.0);
        let mut event = Event::generated(t0, Duration::from_millis(100));
        event.payload =
            Some(serde_json::value::RawValue::from_string(r#"{"order":7}"#.into()).expect("JSON"));
        let text = task_json(&event, &clock, t0 + Duration::from_millis(30), Some("task"))
            .expect("serialisable");
        let task: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(task["type"], "task");
        assert_eq!(task["id"], event.id.as_str());
        assert_eq!(task["createdAt"], 1_000_000.0);
        assert_eq!(task["deadlineMs"], 100);
        assert_eq!(task["deadlineAt"], 1_000_100.0);
        assert_eq!(task["timeLeftMs"], 70);
        assert_eq!(task["producer"], "generator");
        assert_eq!(task["payload"]["order"], 7);
        let body = task_json(&event, &clock, t0, None).expect("serialisable");
        assert!(!body.contains(r#""type""#), "{body}");
    }
}
