//! Pipeline throughput with one WebSocket client: how many events per second
//! the daemon judges and delivers, whether the client sees every `seq`, and
//! whether the totals balance.
//!
//! Start the daemon yourself (so it can also run under a profiler), e.g.
//! `target/release/punctual --listen 127.0.0.1:8099 --work-ms 0 --rate 500000`,
//! then `cargo run --release --example pipeline_bench -- 127.0.0.1:8099 10 [PID]`.
//!
//! The client connects to `/ws`, reads for the given seconds (default 10) and
//! counts event messages and the holes in their `seq`s. `GET /api/stats` is
//! read at the start and the end of the window for the processed rate and
//! the conservation check. With the daemon's PID, its CPU time over the window
//! (`/proc/PID/stat` utime + stime, in clock ticks of 10 ms) is printed too.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let seconds: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let pid: Option<u32> = args.get(2).map(|s| s.parse()).transpose()?;

    let stream = TcpStream::connect(&addr)?;
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream)?;
    // Settle: the first second after connecting is not measured.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        ws.read()?;
    }

    let before = stats(&addr)?;
    let cpu_before = pid.map(cpu_ticks).transpose()?;
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let (mut events, mut gaps, mut last_seq) = (0u64, 0u64, None::<u64>);
    while Instant::now() < end {
        let Message::Text(text) = ws.read()? else {
            continue;
        };
        let Some(seq) = event_seq(text.as_str()) else {
            continue;
        };
        events += 1;
        if let Some(last) = last_seq
            && seq != last + 1
        {
            gaps += seq.saturating_sub(last + 1);
        }
        last_seq = Some(seq);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = stats(&addr)?;
    let cpu_after = pid.map(cpu_ticks).transpose()?;

    let judged = |s: &serde_json::Value| {
        let t = &s["totals"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        let d = &t["dropped"];
        let dn = |k: &str| d[k].as_u64().unwrap_or(0);
        n("onTime")
            + n("late")
            + dn("queueFull")
            + dn("expired")
            + dn("infeasible")
            + dn("panicked")
    };
    let stats_secs =
        after["uptimeS"].as_f64().unwrap_or(0.0) - before["uptimeS"].as_f64().unwrap_or(0.0);
    let processed = (judged(&after) - judged(&before)) as f64 / stats_secs.max(1e-9);
    println!("window            {elapsed:.1} s");
    let worked = |s: &serde_json::Value| {
        let t = &s["totals"];
        t["onTime"].as_u64().unwrap_or(0) + t["late"].as_u64().unwrap_or(0)
    };
    let worked = (worked(&after) - worked(&before)) as f64 / stats_secs.max(1e-9);
    let client_drops = after["clients"]["droppedMessages"].as_u64().unwrap_or(0)
        - before["clients"]["droppedMessages"].as_u64().unwrap_or(0);
    println!(
        "processed         {processed:.0} verdicts/s, of which worked on {worked:.0}/s (from /api/stats totals)"
    );
    println!(
        "delivered         {:.0} events/s to the client",
        events as f64 / elapsed
    );
    println!("seq gaps          {gaps} (client queue drops counted by the daemon: {client_drops})");
    println!("lag ticks         {}", after["generator"]["lagTicks"]);
    println!("dropped           {}", after["totals"]["dropped"]);
    println!("rates             {}", after["rates"]);
    println!("generator         {}", after["generator"]);
    println!("latencyMs         {}", after["latencyMs"]);
    println!("conservation      {}", balances(&after));
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        println!(
            "server CPU        {:.0} % of one core",
            (b - a) as f64 / elapsed // ticks of 10 ms per second → percent
        );
    }
    Ok(())
}

/// The `seq` of an event message, or `None` for any other message.
fn event_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(r#"{"type":"event","seq":"#)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..digits].parse().ok()
}

fn balances(s: &serde_json::Value) -> bool {
    let t = &s["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    let d = &t["dropped"];
    let dn = |k: &str| d[k].as_u64().unwrap_or(0);
    n("generated") + n("ingested")
        == n("onTime")
            + n("late")
            + dn("queueFull")
            + dn("expired")
            + dn("infeasible")
            + dn("panicked")
            + n("inFlight")
}

fn stats(addr: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET /api/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let json = body.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(serde_json::from_str(json)?)
}

fn cpu_ticks(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 12 and 13 after the name.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}
