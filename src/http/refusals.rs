//! Telling the operator why a browser's request was refused.
//!
//! Owns: the set of refused `Host` and `Origin` values already logged. A
//! refusal is a 403 for the page, but the operator reading the journal must
//! learn which flag admits it: each distinct refusal is logged once at warn,
//! naming the flag; past [`MAX_REMEMBERED`] distinct ones (a scan, or an
//! attacker cycling names), one summary line at most every minute.
//!
//! Must not know: routes, the rules themselves.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::ops::logging::RateLimit;

/// Distinct refusals remembered, so each is logged once.
pub const MAX_REMEMBERED: usize = 64;

/// The refusals already logged.
#[derive(Debug)]
pub struct Refusals {
    logged: Mutex<HashSet<String>>,
    beyond: RateLimit,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            logged: Mutex::new(HashSet::new()),
            beyond: RateLimit::new(Duration::from_secs(60)),
        }
    }
}

impl Refusals {
    /// Logs `why` (which names the value and the flag) unless it was logged
    /// already; true when it was logged now.
    pub fn note(&self, why: &str) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.contains(why) {
            return false;
        }
        if logged.len() < MAX_REMEMBERED {
            logged.insert(why.to_owned());
            drop(logged);
            log::warn!("refused a browser's request: {why}");
            return true;
        }
        drop(logged);
        if self.beyond.allow() {
            log::warn!(
                "refused a browser's request: {why} (more than {MAX_REMEMBERED} different \
                 refusals: only one a minute is logged now)"
            );
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_is_logged_once_and_a_flood_of_new_ones_rarely() {
        let refusals = Refusals::default();
        assert!(refusals.note("Host a"));
        assert!(!refusals.note("Host a"));
        for n in 1..MAX_REMEMBERED {
            assert!(refusals.note(&format!("Host {n}")));
        }
        assert!(refusals.note("Host beyond"), "the first past the set");
        assert!(!refusals.note("Host beyond 2"), "then once a minute");
    }
}
