//! Operator logs: `RUST_LOG` filtering (default `info`), journald-friendly
//! lines under systemd, and rate limiting for warnings that could repeat.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The syslog priority prefix journald reads from the start of a line.
fn priority(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "<3>",
        log::Level::Warn => "<4>",
        log::Level::Info => "<6>",
        log::Level::Debug | log::Level::Trace => "<7>",
    }
}

/// Installs the logger. Under journald (`JOURNAL_STREAM` set) lines carry no
/// timestamp — the journal adds its own — and start with their syslog
/// priority, so `journalctl -p warning` filters correctly. Elsewhere lines
/// start with an RFC 3339 timestamp. Either way a message is one line: the
/// control characters in it are escaped ([`one_line`]).
pub fn init() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|out, record| {
            writeln!(
                out,
                "{}{}: {}",
                priority(record.level()),
                record.target(),
                one_line(&record.args().to_string())
            )
        });
    } else {
        builder.format(|out, record| {
            writeln!(
                out,
                "[{} {:<5} {}] {}",
                out.timestamp_millis(),
                record.level(),
                record.target(),
                one_line(&record.args().to_string())
            )
        });
    }
    // A second init (tests) keeps the first logger.
    let _ = builder.try_init();
}

/// `message` with its control characters escaped (`\n`, `\u{1b}`, …).
/// Log lines quote what peers sent (a remote worker's error, a header): a
/// line break in it would start a line of the peer's choosing, such as a
/// forged `<3>` priority that journald would read as an error.
pub fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Lets a repeated message through at most once per period.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    last: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// At most once per `period`.
    pub const fn new(period: Duration) -> Self {
        RateLimit {
            period,
            last: Mutex::new(None),
        }
    }

    /// Whether a message may be logged now; if so, the period starts again.
    pub fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < self.period => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line_whatever_a_peer_put_in_it() {
        assert_eq!(one_line("plain é"), "plain é");
        assert_eq!(
            one_line("worker said: ok\n<3>forged\r\u{1b}[31m"),
            "worker said: ok\\n<3>forged\\r\\u{1b}[31m"
        );
    }

    #[test]
    fn a_rate_limit_lets_one_message_through_per_period() {
        let limit = RateLimit::new(Duration::from_secs(60));
        assert!(limit.allow());
        assert!(!limit.allow());
    }

    #[test]
    fn priorities_follow_syslog_levels() {
        assert_eq!(priority(log::Level::Error), "<3>");
        assert_eq!(priority(log::Level::Warn), "<4>");
        assert_eq!(priority(log::Level::Info), "<6>");
        assert_eq!(priority(log::Level::Debug), "<7>");
    }
}
