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
/// start with an RFC 3339 timestamp.
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
                record.args()
            )
        });
    } else {
        builder.format_timestamp_millis();
    }
    // A second init (tests) keeps the first logger.
    let _ = builder.try_init();
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
