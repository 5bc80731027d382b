//! `--work http`: the worker thread POSTs each admitted event to the user's
//! endpoint and waits for the answer, never past the deadline.
//!
//! Owns: one [`Caller`] per worker thread, a kept-alive synchronous HTTP
//! client (`ureq`) whose whole-call timeout is the event's time left. Reads
//! and writes no channel: the call runs on the worker thread itself, so the
//! pool size bounds the calls in flight.

use std::io::{self, Read};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Instant;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::{Answer, task_json};
use crate::pipeline::event::{Event, error_text, whole_millis};
use crate::time::WallClock;

/// Most bytes of an answer's body read (and thrown away) so that its
/// connection can be kept alive; a longer body closes the connection instead.
const MAX_ANSWER_BODY: u64 = 64 * 1024;

/// Headers that tell the endpoint its deadline without parsing the body.
pub const DEADLINE_HEADER: &str = "X-Punctual-Deadline-At";
/// The time left when the call was made, in whole milliseconds.
pub const TIME_LEFT_HEADER: &str = "X-Punctual-Time-Left-Ms";

/// A worker thread's HTTP client for the endpoint at `url`.
pub struct Caller {
    agent: ureq::Agent,
    url: Arc<str>,
    clock: WallClock,
}

impl Caller {
    /// A client for `url` that keeps one connection alive between calls.
    pub fn new(url: Arc<str>, clock: WallClock) -> Self {
        let config = ureq::Agent::config_builder()
            // A status is an answer to judge, not an error to propagate.
            .http_status_as_error(false)
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .user_agent(concat!("punctual/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = match Resolved::at(&url) {
            Some(resolved) => {
                ureq::Agent::with_parts(config, DefaultConnector::default(), resolved)
            }
            None => config.new_agent(),
        };
        Caller { agent, url, clock }
    }

    /// POSTs `event` and returns what came back: [`Answer::Done`] for a 2xx,
    /// [`Answer::Failed`] for another status or a connection error, and
    /// [`Answer::TimedOut`] once the deadline passed without an answer —
    /// the call is abandoned at the deadline, not waited for.
    pub fn call(&mut self, event: &Event) -> Answer {
        let now = Instant::now();
        let Some(time_left) = event
            .deadline_at()
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            return Answer::TimedOut;
        };
        let body = match task_json(event, &self.clock, now, None) {
            Ok(body) => body,
            Err(e) => return Answer::Failed(error_text(&format!("unserialisable event: {e}"))),
        };
        let deadline_at = self.clock.epoch_ms(event.deadline_at()).round() as u64;
        let sent = self
            .agent
            .post(&*self.url)
            .config()
            .timeout_global(Some(time_left))
            .build()
            .header(DEADLINE_HEADER, deadline_at.to_string())
            .header(TIME_LEFT_HEADER, whole_millis(time_left).to_string())
            .content_type("application/json")
            .send(body.as_bytes());
        match sent {
            Ok(mut response) => {
                let status = response.status().as_u16();
                drain(response.body_mut().as_reader());
                if (200..300).contains(&status) {
                    Answer::Done
                } else {
                    Answer::Failed(format!("HTTP {status}").into())
                }
            }
            Err(e) => failure(e),
        }
    }
}

/// The worker's address, looked up once when the worker thread starts.
///
/// With a timeout set, ureq's own resolver looks the host up on a new
/// thread for every call, even for an IP address on a kept-alive connection:
/// at thousands of calls a second that thread was the largest cost of a
/// call. A name that does not resolve at start is looked up on every call
/// instead (ureq's default), so a worker whose name appears later is still
/// reached; one that moves to another address needs a restart.
#[derive(Debug)]
struct Resolved(ResolvedSocketAddrs);

impl Resolved {
    fn at(url: &str) -> Option<Self> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let port = uri.port_u16().unwrap_or(80);
        let found = (uri.host()?, port).to_socket_addrs().ok()?;
        let mut addrs = DefaultResolver::default().empty();
        // ureq keeps at most 16 addresses of a name.
        for addr in found.take(16) {
            addrs.push(addr);
        }
        (!addrs.is_empty()).then_some(Resolved(addrs))
    }
}

impl Resolver for Resolved {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        Ok(self.0.clone())
    }
}

/// Reads what is left of an answer's body, up to [`MAX_ANSWER_BODY`], so that
/// the connection can carry the next call. The body's content is not used.
fn drain(reader: impl Read) {
    let _ = io::copy(&mut reader.take(MAX_ANSWER_BODY), &mut io::sink());
}

/// A failed call as an answer: the timeout means the deadline came first.
fn failure(error: ureq::Error) -> Answer {
    match error {
        ureq::Error::Timeout(_) => Answer::TimedOut,
        ureq::Error::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Answer::TimedOut
        }
        ureq::Error::Io(e) => Answer::Failed(e.kind().to_string().into()),
        other => Answer::Failed(error_text(&other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// With a timeout set, ureq looks a host up on a new thread for every
    /// call; a worker thread's client answers every lookup with the address
    /// found when the thread started instead, whatever host it is asked for.
    #[test]
    fn the_address_found_at_start_answers_every_later_lookup() {
        let resolved = Resolved::at("http://127.0.0.1:8080/work").expect("an address resolves");
        let elsewhere: ureq::http::Uri = "http://nowhere.invalid:1/".parse().expect("a URI");
        let answered = resolved
            .resolve(
                &elsewhere,
                &ureq::config::Config::default(),
                NextTimeout::default(),
            )
            .expect("answered without a lookup");
        let expected: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
        assert_eq!(answered.iter().copied().collect::<Vec<_>>(), [expected]);
    }
}
