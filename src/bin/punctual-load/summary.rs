//! The human form of the report: one line per part, read from the typed
//! report.

use serde::Serialize;
use serde_json::Value;

use crate::options::TargetKind;
use crate::report::{Connections, Percentiles, Report, Work};

/// A value as its JSON reads (`1.0`, `[303,902]`, `{"a":1}`), a string
/// without quotes, and `-` for nothing: how the summary has always shown them.
fn show<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::Null) | Err(_) => "-".to_string(),
        Ok(Value::String(text)) => text,
        Ok(other) => other.to_string(),
    }
}

pub fn print(r: &Report) {
    print_setting(r);
    print_clients(r);
    print_delays(r);
    print_server(r);
    if r.target.kind == TargetKind::Punctual {
        print_counts(r);
        print_daemon(r);
    }
}

/// The daemon, the machine and the clients.
fn print_setting(r: &Report) {
    println!("punctual-load against {}", r.target.addr);
    if let Some(args) = &r.target.daemon_args {
        println!(
            "  daemon      punctual {} (pid {})",
            args.join(" "),
            show(&r.target.pid)
        );
    }
    let host = &r.host;
    println!(
        "  host        {} CPUs; {} % busy in the second before (load average {}), {} % during the window (of one core)",
        host.cpus,
        show(&host.busy_before_pct),
        host.load_average_before,
        show(&host.busy_during_pct)
    );
    for (kind, c) in [("ws", &r.clients.ws), ("sse", &r.clients.sse)] {
        if c.requested != 0 {
            println!("  {kind:<11} {}", connected(c, "connected"));
        }
    }
    if let Some(d) = &r.drained {
        let mut line = format!(
            "{}/{} connected and read in bulk, {} bytes in all, {} closed by the server",
            d.connected, d.requested, d.bytes, d.closed_by_server
        );
        if d.connect_failures != 0 {
            line += &format!(
                "; {} failed: {}",
                d.connect_failures,
                show(&d.failure_reasons)
            );
        }
        println!("  drained     {line}");
    }
    if let Some(p) = &r.published {
        println!(
            "  published   {} messages to the peer in {} s at {}/s; {} failed, {} late",
            p.sent,
            show(&p.seconds),
            show(&p.rate),
            p.failed,
            p.late
        );
    }
}

/// `C/R connected`, and why some did not or ended early.
fn connected(c: &Connections, what: &str) -> String {
    let mut line = format!("{}/{} {what}", c.connected, c.requested);
    if c.connect_failures != 0 {
        line += &format!(
            "; {} failed: {}",
            c.connect_failures,
            show(&c.failure_reasons)
        );
    }
    if c.ended_early != 0 {
        line += &format!(
            "; {} ended early, e.g. {}",
            c.ended_early,
            show(&c.ended_example)
        );
    }
    line
}

/// The window, the messages and how late they came.
fn print_clients(r: &Report) {
    let clients = &r.clients;
    println!(
        "  window      {} s after {} s warm-up (connecting took {} s); {} clients caught up {} s after it",
        show(&r.window.seconds),
        show(&r.window.warmup_seconds),
        show(&clients.connect_seconds),
        clients.caught_up,
        show(&clients.grace_seconds)
    );
    let m = &r.tallied.messages;
    println!(
        "  messages    {} decided in the window = {}/s; per client min {}/s, median {}/s; delivered {} % of seq {} × clients",
        m.received,
        show(&m.per_second),
        show(&m.per_client_per_second.min),
        show(&m.per_client_per_second.median),
        show(&m.delivered_pct),
        show(&m.seq_range)
    );
}

fn print_delays(r: &Report) {
    let t = &r.tallied;
    for (label, p, what) in [
        (
            "delivery",
            &t.delivery_ms.percentiles,
            "receive − processedAt",
        ),
        ("end-to-end", &t.end_to_end_ms, "receive − createdAt"),
        (
            "verdict",
            &t.verdict_ms,
            "processedAt − createdAt of events worked on: pipeline + work",
        ),
        (
            "  queue",
            &t.queue_ms,
            "queueMs of the same: waiting for a worker",
        ),
        ("  work", &t.work_ms, "workMs of the same"),
    ] {
        print_percentiles(label, p, what);
    }
    let means: Vec<String> = t.delivery_ms.mean_per_second.iter().map(show).collect();
    println!("  mean/s      {} ms", means.join(" "));
    let g = &t.gaps;
    println!(
        "  gaps        {} seqs missing in {} clients; {} gap notices in {} clients (most {} per client); {} resets; {} out of order",
        g.missing_seqs,
        g.clients_with_missing,
        g.gap_notices,
        g.clients_with_gap_notices,
        g.max_gap_notices_per_client,
        g.resets,
        g.out_of_order
    );
}

fn print_percentiles(label: &str, p: &Percentiles, what: &str) {
    println!(
        "  {label:<11} p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  ({what})",
        show(&p.p50),
        show(&p.p90),
        show(&p.p99),
        show(&p.p999),
        show(&p.max)
    );
}

/// What was posted, what the daemon decided, and the work.
fn print_counts(r: &Report) {
    if let Some(i) = &r.ingest {
        println!(
            "  ingest      {} posts of {} in {} s: {} accepted, {} dropped, {} refused; {} posts failed, {} late",
            i.posts,
            i.batch,
            show(&i.seconds),
            i.accepted,
            i.dropped,
            i.refused,
            i.failed_posts,
            i.late_posts
        );
    }
    let v = &r.verdicts_per_second;
    println!(
        "  verdicts/s  {} on time, {} late, {} failed, dropped {} (the daemon's counts over {} s from the window's start; {} entered/s)",
        show(&v.on_time),
        show(&v.late),
        show(&v.failed),
        show(&v.dropped),
        show(&v.seconds),
        show(&v.entered)
    );
    if !v.misses.is_empty() {
        let causes: Vec<String> = (v.misses.iter())
            .map(|(cause, rate)| format!("{cause} {}", show(rate)))
            .collect();
        println!(
            "  misses/s    by cause: {} (late and dropped, the daemon's split)",
            causes.join(", ")
        );
    }
    print_work(&r.work);
}

/// The work line, when the tool's own workers served the daemon.
fn print_work(work: &Work) {
    let answered = match (work.http_calls, &work.pull_workers) {
        (Some(calls), _) => format!("{calls} HTTP calls answered"),
        (None, Some(pull)) => {
            let what = format!(
                "pull workers connected, {} tasks answered",
                pull.tasks_answered
            );
            connected(&pull.connections, &what)
        }
        (None, None) => return,
    };
    println!(
        "  work        {} → {}: {answered}; the daemon judged {} failed during the run (error rate {})",
        show(&work.mode),
        show(&work.target),
        work.failed_during_run,
        show(&work.error_rate)
    );
}

/// The server's processes: CPU, memory, threads, cost per message.
fn print_server(r: &Report) {
    let s = &r.server;
    println!(
        "  server      CPU {} % of one core (busiest second {} %); RSS {} MiB (max {} MiB); {} threads; this tool {} %",
        show(&s.cpu_pct),
        show(&s.busiest_second_pct),
        show(&s.rss_mib),
        show(&s.max_rss_mib),
        show(&s.threads),
        show(&r.load_cpu_pct)
    );
    if !s.processes.is_empty() {
        let each: Vec<String> = (s.processes.iter())
            .map(|p| format!("{} {} %", p.pid, show(&p.cpu_pct)))
            .collect();
        println!("  processes   CPU by pid: {}", each.join(", "));
    }
    println!(
        "  cost        {} µs of server CPU per message delivered",
        show(&s.cpu_us_per_message)
    );
}

/// The daemon's clock, the replays and its own counts.
fn print_daemon(r: &Report) {
    let s = &r.server;
    let jitter = s.tick_jitter_ms_p99.as_ref();
    println!(
        "  clock       generator tick jitter p99 per second: median {} ms, max {} ms",
        show(&jitter.map(|j| j.median)),
        show(&jitter.map(|j| j.max))
    );
    if let Some(p) = &r.replay {
        println!(
            "  replay      {}/{} replaying clients (reading every {} s): {} got the whole run to their start, {} holes, {} gap notices",
            p.connected,
            p.requested,
            show(&p.pause_seconds),
            p.complete,
            p.holes,
            p.gap_notices
        );
    }
    let d = &r.daemon_stats;
    let conservation = if d.conservation {
        "holds"
    } else {
        "DOES NOT HOLD"
    };
    println!(
        "  daemon      droppedMessages {} during the run ({} in all); backlog {}; {} generated during the run; conservation {conservation}",
        d.dropped_messages_during_run,
        d.dropped_messages,
        show(&d.backlog),
        d.generated_during_run
    );
    println!("  totals      {}", show(&d.totals));
}
