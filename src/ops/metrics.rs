//! `GET /metrics`: the latest stats snapshot in the OpenMetrics text format,
//! encoded by `prometheus-client`. Every label takes values from a fixed,
//! small set.
//!
//! The numbers are counted elsewhere (ledger, meters, hub), so nothing here is
//! a live metric object: each scrape encodes one [`Snapshot`] through a
//! [`Collector`]. Counter families are named without `_total`, as OpenMetrics
//! wants; their samples carry it (`punctual_events_total{source=…}`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::pipeline::ledger::Dropped;
use crate::pipeline::stats::{Quantiles, Snapshot, Spent};

/// Content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `snapshot` as OpenMetrics text, ending with `# EOF`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotMetrics(snapshot.clone())));
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail, and every name and label here is fixed.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        log::warn!("could not encode metrics: {e}");
    }
    out
}

/// One snapshot, encoded as the daemon's metric families.
#[derive(Debug)]
struct SnapshotMetrics(Snapshot);

type Result = std::result::Result<(), std::fmt::Error>;

impl Collector for SnapshotMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        let s = &self.0;
        encode_outcomes(&mut encoder, s)?;
        encode_pipeline(&mut encoder, s)?;
        encode_clients(&mut encoder, s)?;
        encode_process(&mut encoder, s)
    }
}

/// Events in, verdicts out (overall and by producer), in flight, latency.
fn encode_outcomes(encoder: &mut DescriptorEncoder, s: &Snapshot) -> Result {
    let t = &s.totals;
    labelled_counters(
        encoder,
        "punctual_events",
        "Events that entered the pipeline, by source.",
        &[
            ([("source", "generator")], t.generated),
            ([("source", "ingest")], t.ingested),
        ],
    )?;
    labelled_counters(
        encoder,
        "punctual_outcomes",
        "Verdicts given, by status and drop reason.",
        &by_status(t.on_time, t.late, t.failed, &t.dropped)
            .map(|(status, reason, n)| ([("status", status), ("reason", reason)], n)),
    )?;
    let by_producer: Vec<([(&str, &str); 3], u64)> = s
        .producers
        .iter()
        .flat_map(|p| {
            by_status(p.on_time, p.late, p.failed, &p.dropped).map(|(status, reason, n)| {
                (
                    [
                        ("producer", p.name.as_str()),
                        ("status", status),
                        ("reason", reason),
                    ],
                    n,
                )
            })
        })
        .collect();
    labelled_counters(
        encoder,
        "punctual_producer_outcomes",
        "Verdicts given, by producer (at most 32, the rest as other), status and drop reason.",
        &by_producer,
    )?;
    let mut p99 = encoder.encode_descriptor(
        "punctual_producer_latency_p99_seconds",
        "99th percentile latency of each producer's events worked on, last window.",
        None,
        MetricType::Gauge,
    )?;
    for p in &s.producers {
        ConstGauge::new(p.latency_p99_ms / 1000.0)
            .encode(p99.encode_family(&[("producer", p.name.as_str())])?)?;
    }
    encode_spent(encoder, s)?;
    gauge(
        encoder,
        "punctual_in_flight",
        "Events entered and not yet judged.",
        t.in_flight,
    )?;
    latency_histogram(encoder, s)?;
    Ok(())
}

/// Where the time went (queue wait, credit wait, work: p50 and p99 of the
/// last window) and misses by cause since start, overall and by producer.
fn encode_spent(encoder: &mut DescriptorEncoder, s: &Snapshot) -> Result {
    let misses = |spent: &Spent| spent.misses_total.named();
    labelled_counters(
        encoder,
        "punctual_misses",
        "Late and dropped verdicts by cause (queue, work, capacity, admission, credit).",
        &misses(&s.spent).map(|(cause, n)| ([("cause", cause)], n)),
    )?;
    let by_producer: Vec<([(&str, &str); 2], u64)> = s
        .producers
        .iter()
        .flat_map(|p| {
            misses(&p.spent)
                .map(|(cause, n)| ([("producer", p.name.as_str()), ("cause", cause)], n))
        })
        .collect();
    labelled_counters(
        encoder,
        "punctual_producer_misses",
        "Late and dropped verdicts by producer (at most 32, the rest as other) and cause.",
        &by_producer,
    )?;
    let quantiles: [(&str, &str, Pick); 2] = [
        (
            "punctual_spent_p50_seconds",
            "punctual_producer_spent_p50_seconds",
            |q| q.p50,
        ),
        (
            "punctual_spent_p99_seconds",
            "punctual_producer_spent_p99_seconds",
            |q| q.p99,
        ),
    ];
    for (overall, by_producer, pick) in quantiles {
        let mut family = encoder.encode_descriptor(
            overall,
            "Each part of the outcomes' time (queue, wait, work) at this quantile, last window.",
            None,
            MetricType::Gauge,
        )?;
        for (part, ms) in parts(&s.spent, pick) {
            ConstGauge::new(ms / 1000.0).encode(family.encode_family(&[("part", part)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            by_producer,
            "Each part of each producer's outcomes' time at this quantile, last window.",
            None,
            MetricType::Gauge,
        )?;
        for p in &s.producers {
            for (part, ms) in parts(&p.spent, pick) {
                let labels = [("producer", p.name.as_str()), ("part", part)];
                ConstGauge::new(ms / 1000.0).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

/// Which quantile of a part to export.
type Pick = fn(&Quantiles) -> f64;

/// `(part, ms)` of queue wait, credit wait and work, at one quantile.
fn parts(spent: &Spent, pick: Pick) -> [(&'static str, f64); 3] {
    [
        ("queue", pick(&spent.queue_ms)),
        ("wait", pick(&spent.wait_ms)),
        ("work", pick(&spent.work_ms)),
    ]
}

/// The work queue, the worker threads, real work and the utilisation.
fn encode_pipeline(encoder: &mut DescriptorEncoder, s: &Snapshot) -> Result {
    gauge(
        encoder,
        "punctual_queue_depth",
        "Events waiting in the work queue.",
        s.queue.depth as u64,
    )?;
    gauge(
        encoder,
        "punctual_queue_capacity",
        "Capacity of the work queue.",
        s.queue.capacity as u64,
    )?;
    gauge(
        encoder,
        "punctual_workers_busy",
        "Workers running work now.",
        s.workers.busy as u64,
    )?;
    gauge(
        encoder,
        "punctual_workers_total",
        "Workers in the pool.",
        s.workers.total as u64,
    )?;
    gauge(
        encoder,
        "punctual_work_workers_connected",
        "Workers connected to /api/work (--work pull).",
        s.work.connected as u64,
    )?;
    gauge(
        encoder,
        "punctual_work_in_flight",
        "Tasks handed to a real worker and not answered yet.",
        s.work.in_flight as u64,
    )?;
    ratio_gauge(
        encoder,
        "punctual_utilisation",
        "Offered utilisation of the workers, arrival rate x mean work / workers, last seconds (>= 1: overloaded by design).",
        s.schedulability.utilisation,
    )?;
    ratio_gauge(
        encoder,
        "punctual_utilisation_headroom",
        "1 - utilisation: the share of the workers left for more load (negative when overloaded).",
        s.schedulability.headroom,
    )?;
    Ok(())
}

/// Dashboards and connections.
fn encode_clients(encoder: &mut DescriptorEncoder, s: &Snapshot) -> Result {
    let mut clients = encoder.encode_descriptor(
        "punctual_clients",
        "Connected dashboard clients, by transport.",
        None,
        MetricType::Gauge,
    )?;
    for (transport, count) in [("websocket", s.clients.websocket), ("sse", s.clients.sse)] {
        ConstGauge::new(count as u64)
            .encode(clients.encode_family(&[("transport", transport)])?)?;
    }
    counter(
        encoder,
        "punctual_client_dropped_messages",
        "Messages a client missed because it fell off the log's tail.",
        s.clients.dropped_messages,
    )?;
    gauge(
        encoder,
        "punctual_clients_slow",
        "Clients served by their own thread: behind, replaying, or blocked.",
        s.clients.slow as u64,
    )?;
    counter(
        encoder,
        "punctual_client_slow_turns",
        "Times a client was left to its own thread (joined, fell behind, or blocked).",
        s.clients.slow_turns,
    )?;
    gauge(
        encoder,
        "punctual_fanout_backlog",
        "Messages waiting for the fan-out to hand them to clients.",
        s.clients.backlog as u64,
    )?;
    gauge(
        encoder,
        "punctual_connections",
        "Open HTTP connections, clients included.",
        s.clients.connections as u64,
    )?;
    gauge(
        encoder,
        "punctual_connections_max",
        "Most open connections at once (--max-connections).",
        s.clients.max_connections as u64,
    )?;
    counter(
        encoder,
        "punctual_accept_errors",
        "Connections that could not be accepted (descriptors exhausted, say).",
        s.clients.accept_errors,
    )?;
    Ok(())
}

/// The daemon's own threads and clock, and its build.
fn encode_process(encoder: &mut DescriptorEncoder, s: &Snapshot) -> Result {
    let panics: Vec<_> = s
        .threads
        .panics
        .by_role()
        .into_iter()
        .map(|(role, count)| ([("role", role.name())], count))
        .collect();
    labelled_counters(
        encoder,
        "punctual_thread_panics",
        "Panics caught in the daemon's threads, by role.",
        &panics,
    )?;
    counter(
        encoder,
        "punctual_generator_lag_ticks",
        "Generator ticks skipped because it fell behind.",
        s.generator.lag_ticks,
    )?;
    seconds_gauge(
        encoder,
        "punctual_generator_tick_jitter_p99_seconds",
        "99th percentile of how late the generator woke for a tick, last window.",
        s.generator.tick_jitter_ms_p99,
    )?;
    seconds_gauge(
        encoder,
        "punctual_late_after_deadline_p99_seconds",
        "99th percentile of how long after its deadline a late verdict was given, last window.",
        s.latency_ms.late_after_deadline_p99,
    )?;
    let mut build = encoder.encode_descriptor(
        "punctual_build_info",
        "Always 1; the version is in the label.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(1u64).encode(build.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A gauge of a plain ratio (no unit).
fn ratio_gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A gauge in seconds from a figure the snapshot holds in milliseconds.
fn seconds_gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, ms: f64) -> Result {
    ConstGauge::new(ms / 1000.0).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Gauge,
    )?)
}

/// `(status, drop reason, count)` of every verdict kind, in a fixed order.
fn by_status(
    on_time: u64,
    late: u64,
    failed: u64,
    dropped: &Dropped,
) -> [(&'static str, &'static str, u64); 7] {
    [
        ("on-time", "", on_time),
        ("late", "", late),
        ("failed", "", failed),
        ("dropped", "queue-full", dropped.queue_full),
        ("dropped", "expired", dropped.expired),
        ("dropped", "infeasible", dropped.infeasible),
        ("dropped", "panicked", dropped.panicked),
    ]
}

fn labelled_counters<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[([(&str, &str); N], u64)],
) -> Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// The cumulative latency histogram. The snapshot holds running totals per
/// bound; the encoder wants each bucket's own count and adds them up itself,
/// with what lies above the last bound in `+Inf`.
fn latency_histogram(encoder: &mut DescriptorEncoder, snapshot: &Snapshot) -> Result {
    let latency = &snapshot.cumulative_latency;
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = latency
        .buckets()
        .map(|(le, cumulative)| {
            let own = cumulative.saturating_sub(below);
            below = cumulative;
            (le, own)
        })
        .collect();
    buckets.push((f64::INFINITY, latency.count().saturating_sub(below)));
    encoder
        .encode_descriptor(
            "punctual_latency_seconds",
            "Time from creation to verdict of events worked on (on-time and late).",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(latency.sum_seconds(), latency.count(), &buckets, None)
}
