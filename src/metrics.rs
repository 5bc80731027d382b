//! `GET /metrics`: the latest stats snapshot in the Prometheus text format
//! (version 0.0.4). Every label takes values from a fixed, small set.

use std::fmt::Write;

use crate::stats::Snapshot;

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes one metric family header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders `snapshot` as Prometheus text.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let t = &snapshot.totals;

    family(
        &mut out,
        "punctual_events_total",
        "counter",
        "Events that entered the pipeline, by source.",
    );
    let _ = writeln!(
        out,
        "punctual_events_total{{source=\"generator\"}} {}",
        t.generated
    );
    let _ = writeln!(
        out,
        "punctual_events_total{{source=\"ingest\"}} {}",
        t.ingested
    );

    family(
        &mut out,
        "punctual_outcomes_total",
        "counter",
        "Verdicts given, by status and drop reason.",
    );
    let outcomes = [
        ("on-time", "", t.on_time),
        ("late", "", t.late),
        ("dropped", "queue-full", t.dropped.queue_full),
        ("dropped", "expired", t.dropped.expired),
        ("dropped", "infeasible", t.dropped.infeasible),
        ("dropped", "failed", t.dropped.failed),
    ];
    for (status, reason, count) in outcomes {
        let _ = writeln!(
            out,
            "punctual_outcomes_total{{status=\"{status}\",reason=\"{reason}\"}} {count}"
        );
    }

    family(
        &mut out,
        "punctual_in_flight",
        "gauge",
        "Events entered and not yet judged.",
    );
    let _ = writeln!(out, "punctual_in_flight {}", t.in_flight);

    let latency = &snapshot.cumulative_latency;
    family(
        &mut out,
        "punctual_latency_seconds",
        "histogram",
        "Time from creation to verdict of events worked on (on-time and late).",
    );
    for (le, count) in latency.buckets() {
        let _ = writeln!(
            out,
            "punctual_latency_seconds_bucket{{le=\"{le}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "punctual_latency_seconds_bucket{{le=\"+Inf\"}} {}",
        latency.count()
    );
    let _ = writeln!(
        out,
        "punctual_latency_seconds_sum {}",
        latency.sum_seconds()
    );
    let _ = writeln!(out, "punctual_latency_seconds_count {}", latency.count());

    let gauges = [
        (
            "punctual_queue_depth",
            "Events waiting in the work queue.",
            snapshot.queue.depth as u64,
        ),
        (
            "punctual_queue_capacity",
            "Capacity of the work queue.",
            snapshot.queue.capacity as u64,
        ),
        (
            "punctual_workers_busy",
            "Workers running work now.",
            snapshot.workers.busy as u64,
        ),
        (
            "punctual_workers_total",
            "Workers in the pool.",
            snapshot.workers.total as u64,
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }

    family(
        &mut out,
        "punctual_clients",
        "gauge",
        "Connected dashboard clients, by transport.",
    );
    let _ = writeln!(
        out,
        "punctual_clients{{transport=\"websocket\"}} {}",
        snapshot.clients.websocket
    );
    let _ = writeln!(
        out,
        "punctual_clients{{transport=\"sse\"}} {}",
        snapshot.clients.sse
    );

    family(
        &mut out,
        "punctual_client_dropped_messages_total",
        "counter",
        "Messages a client missed because its queue was full.",
    );
    let _ = writeln!(
        out,
        "punctual_client_dropped_messages_total {}",
        snapshot.clients.dropped_messages
    );

    family(
        &mut out,
        "punctual_fanout_backlog",
        "gauge",
        "Messages waiting for the fan-out to hand them to clients.",
    );
    let _ = writeln!(out, "punctual_fanout_backlog {}", snapshot.clients.backlog);

    family(
        &mut out,
        "punctual_generator_lag_ticks_total",
        "counter",
        "Generator ticks skipped because it fell behind.",
    );
    let _ = writeln!(
        out,
        "punctual_generator_lag_ticks_total {}",
        snapshot.generator.lag_ticks
    );

    render_thread_panics(&mut out, snapshot);

    family(
        &mut out,
        "punctual_build_info",
        "gauge",
        "Always 1; the version is in the label.",
    );
    let _ = writeln!(
        out,
        "punctual_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// Panics caught in the daemon's threads, by role (see `faults`).
fn render_thread_panics(out: &mut String, snapshot: &Snapshot) {
    family(
        out,
        "punctual_thread_panics_total",
        "counter",
        "Panics caught in the daemon's threads, by role.",
    );
    for (role, count) in snapshot.threads.panics.by_role() {
        let _ = writeln!(
            out,
            "punctual_thread_panics_total{{role=\"{}\"}} {count}",
            role.name()
        );
    }
}
