//! Who may reach the daemon from a browser: the `Origin` and `Host` rules.
//!
//! Owns: parsing and matching of `Origin` and `Host` header values and of the
//! `--allowed-origin` / `--allowed-host` settings. A page of another site may
//! not open `/ws` or `/events` (browsers apply no CORS to WebSocket, so the
//! server must refuse it), and every request but the health and metrics
//! probes must name this daemon in its `Host` — a DNS-rebinding page reaches
//! the port under its own name, and could read every payload. `*` opens
//! reads to every site's pages, never changes.
//!
//! Pure functions of header values and settings: reads and writes no channel.
//! Must not know: routes, sockets, tokens.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A host as a header names it: an IP literal (compared as an address, so
/// `[::1]` and `[0:0:0:0:0:0:0:1]` are the same) or a lower-cased name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostName {
    Ip(IpAddr),
    Name(String),
}

/// `host[:port]`, as in a `Host` header or after `scheme://` in an origin.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    host: HostName,
    /// `None` when the value names no port.
    port: Option<u16>,
}

impl Authority {
    /// Parses `name`, `name:port`, `1.2.3.4:port`, `[v6]` or `[v6]:port`,
    /// ignoring ASCII case. A bare IPv6 address (no brackets) is refused.
    fn parse(value: &str) -> Option<Authority> {
        let value = value.trim().to_ascii_lowercase();
        let (host, port) = match value.strip_prefix('[') {
            Some(rest) => {
                let (v6, after) = rest.split_once(']')?;
                let host = HostName::Ip(IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?));
                (
                    host,
                    after.strip_prefix(':').or(after.is_empty().then_some(""))?,
                )
            }
            None => {
                let (name, port) = value.split_once(':').unwrap_or((&value, ""));
                (host_name(name)?, port)
            }
        };
        let port = match port {
            "" => None,
            digits if digits.bytes().all(|b| b.is_ascii_digit()) => Some(digits.parse().ok()?),
            _ => return None,
        };
        Some(Authority { host, port })
    }
}

/// A name or IPv4 literal: letters, digits, `-`, `.`, `_`, nothing else.
fn host_name(name: &str) -> Option<HostName> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Some(HostName::Ip(IpAddr::V4(ip)));
    }
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    (!name.is_empty() && name.bytes().all(plain)).then(|| HostName::Name(name.to_owned()))
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostName::Ip(ip) => write!(f, "{ip}")?,
            HostName::Name(name) => f.write_str(name)?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// A web origin: `scheme://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    authority: Authority,
}

impl Origin {
    /// Parses an `Origin` header value. `null` (sandboxed pages, files) and
    /// anything with a path, user or query is not an origin.
    fn parse(value: &str) -> Option<Origin> {
        let value = value.trim();
        let (scheme, rest) = value.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let scheme_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.');
        if scheme.is_empty() || !scheme.bytes().all(scheme_char) {
            return None;
        }
        Some(Origin {
            scheme,
            authority: Authority::parse(rest)?,
        })
    }

    /// The port the origin means: its own, or its scheme's default.
    fn port(&self) -> Option<u16> {
        self.authority.port.or(match self.scheme.as_str() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        })
    }

    /// Same scheme, host and (defaulted) port.
    fn same_as(&self, other: &Origin) -> bool {
        self.scheme == other.scheme
            && self.authority.host == other.authority.host
            && self.port() == other.port()
    }

    /// Whether this origin is the site that `host` (a request's `Host`) names.
    /// The scheme cannot be compared — a TLS proxy in front turns `https`
    /// into plain HTTP — and a `Host` without a port (a proxy passing on only
    /// the name, as nginx's `$host` does) matches the origin on any port.
    fn is_served_as(&self, host: &Authority) -> bool {
        self.authority.host == host.host && self.port() == host.port.or(self.port())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// One `--allowed-origin`: an origin, or `*` for every origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// `*`: pages of any site may open the streams.
    Any,
    /// Pages of exactly this origin (scheme, host and port).
    Exactly(Origin),
}

impl AllowedOrigin {
    /// The `--allowed-origin` value parser: `*` or `scheme://host[:port]`
    /// (one trailing `/` is tolerated, as copied from an address bar).
    pub fn parse(value: &str) -> Result<AllowedOrigin, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(AllowedOrigin::Any);
        }
        let origin = value.strip_suffix('/').unwrap_or(value);
        Origin::parse(origin).map(AllowedOrigin::Exactly).ok_or_else(|| {
            format!("{value:?} is not an origin: give scheme://host[:port] such as http://localhost:5173, or *")
        })
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedOrigin::Any => f.write_str("*"),
            AllowedOrigin::Exactly(origin) => origin.fmt(f),
        }
    }
}

/// One `--allowed-host`: a name (or address) a request's `Host` may carry,
/// on any port unless one is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost(Authority);

impl AllowedHost {
    /// The `--allowed-host` value parser: `name`, `name:port`, `ip`, `[v6]:port`.
    pub fn parse(value: &str) -> Result<AllowedHost, String> {
        Authority::parse(value).map(AllowedHost).ok_or_else(|| {
            format!("{:?} is not a host: give a name such as monitor.example.com, optionally with :port", value.trim())
        })
    }

    fn admits(&self, host: &Authority) -> bool {
        self.0.host == host.host && self.0.port.is_none_or(|port| port == port_of(host))
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! text_serde {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <$t>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
text_serde!(AllowedOrigin, AllowedHost);

/// The port a `Host` value names; HTTP's 80 when it names none.
fn port_of(host: &Authority) -> u16 {
    host.port.unwrap_or(80)
}

/// Why a browser's request was let in: the streams' CORS answer depends on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// No `Origin`: not a browser page (curl, a script, a proxy's health check).
    NoOrigin,
    /// A page this daemon served itself.
    SameOrigin,
    /// A page of another site admitted by `--allowed-origin`; the value is
    /// what `Access-Control-Allow-Origin` must say for it (`*`, or the origin).
    Allowed(String),
}

/// The rules in force: where the daemon listens and what the operator allowed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules<'a> {
    /// The bound address (with the real port when 0 was asked for).
    pub(crate) listen: SocketAddr,
    pub(crate) origins: &'a [AllowedOrigin],
    pub(crate) hosts: &'a [AllowedHost],
}

impl Rules<'_> {
    /// Whether a `Host` value names this daemon: `localhost` or the listening
    /// IP on the listening port — any IP literal when listening on all
    /// interfaces, whose addresses cannot be listed cheaply — or an
    /// `--allowed-host`. Another DNS name may be a rebinding attacker's.
    fn is_our_host(&self, host: &Authority) -> bool {
        let ours = port_of(host) == self.listen.port()
            && match &host.host {
                HostName::Name(name) => name == "localhost",
                HostName::Ip(ip) => self.listen.ip().is_unspecified() || *ip == self.listen.ip(),
            };
        ours || self.hosts.iter().any(|allowed| allowed.admits(host))
    }

    /// A request's `Host` (absent: not a browser, which always sends one).
    pub(crate) fn check_host(&self, host: Option<&str>) -> Result<(), String> {
        let Some(raw) = host else { return Ok(()) };
        match Authority::parse(raw) {
            Some(host) if self.is_our_host(&host) => Ok(()),
            parsed => {
                let name = parsed.map_or_else(|| raw.trim().to_owned(), |h| h.to_string());
                Err(format!(
                    "Host {name} is not this daemon's address ({}); a page reaching it under \
                     another name may be a DNS-rebinding attack; to accept the name, start with \
                     --allowed-host {name}",
                    self.own_addresses()
                ))
            }
        }
    }

    /// A reading request's `Origin`, judged against its `Host`: none, the
    /// page's own site (which must also be our host), or one of
    /// `--allowed-origin`, `*` included.
    pub(crate) fn check_origin(
        &self,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> Result<Admitted, String> {
        if origin.is_some() && self.origins.contains(&AllowedOrigin::Any) {
            return Ok(Admitted::Allowed("*".into()));
        }
        self.check_exact_origin(origin, host)
    }

    /// A changing request's `Origin`: as for a read, but `*` admits no page.
    /// Any site's page may post a form (no CORS preflight stops it), so
    /// opening changes to every site would let any page post events.
    pub(crate) fn check_change_origin(
        &self,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> Result<Admitted, String> {
        self.check_exact_origin(origin, host).map_err(|e| {
            if self.origins.contains(&AllowedOrigin::Any) {
                format!(
                    "{e} (--allowed-origin * lets other sites read, never change: name the site \
                     itself to let it change state)"
                )
            } else {
                e
            }
        })
    }

    fn check_exact_origin(
        &self,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> Result<Admitted, String> {
        let Some(raw) = origin else {
            return Ok(Admitted::NoOrigin);
        };
        let parsed = Origin::parse(raw);
        let allowed = |o: &Origin| {
            self.origins.iter().any(|allowed| match allowed {
                AllowedOrigin::Any => false,
                AllowedOrigin::Exactly(allowed) => allowed.same_as(o),
            })
        };
        if let Some(o) = parsed.as_ref().filter(|o| allowed(o)) {
            return Ok(Admitted::Allowed(o.to_string()));
        }
        let host = host.and_then(Authority::parse);
        match (&parsed, &host) {
            (Some(o), Some(h)) if o.is_served_as(h) && self.is_our_host(h) => {
                Ok(Admitted::SameOrigin)
            }
            (Some(o), Some(h)) if o.is_served_as(h) => Err(format!(
                "Origin {o} is a page served under Host {h}, which is not this daemon's address \
                 ({}); it may be a DNS-rebinding attack; to accept the name, start with \
                 --allowed-host {h}",
                self.own_addresses()
            )),
            _ => {
                let name = parsed.map_or_else(|| raw.trim().to_owned(), |o| o.to_string());
                Err(format!(
                    "Origin {name} is another site's page; only pages served by this daemon \
                     may use it; to admit that site, start with --allowed-origin {name}"
                ))
            }
        }
    }

    /// What `Host` may say, for error messages.
    fn own_addresses(&self) -> String {
        let port = self.listen.port();
        let ip = match self.listen.ip() {
            ip if ip.is_unspecified() => "any IP address".to_owned(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let mut names = format!("{ip}:{port}, localhost:{port}");
        for allowed in self.hosts {
            names.push_str(&format!(", {allowed}"));
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules<'a>(
        listen: &str,
        origins: &'a [AllowedOrigin],
        hosts: &'a [AllowedHost],
    ) -> Rules<'a> {
        Rules {
            listen: listen.parse().expect("socket address"),
            origins,
            hosts,
        }
    }

    fn origin(value: &str) -> AllowedOrigin {
        AllowedOrigin::parse(value).expect("valid origin")
    }

    fn host(value: &str) -> AllowedHost {
        AllowedHost::parse(value).expect("valid host")
    }

    #[test]
    fn no_origin_is_not_a_browser_page_and_passes() {
        let r = rules("127.0.0.1:8080", &[], &[]);
        assert_eq!(
            r.check_origin(None, Some("evil.example")),
            Ok(Admitted::NoOrigin)
        );
    }

    #[test]
    fn a_page_of_our_own_address_is_same_origin() {
        let r = rules("127.0.0.1:8080", &[], &[]);
        let same = |o: &str, h: &str| r.check_origin(Some(o), Some(h));
        assert_eq!(
            same("http://127.0.0.1:8080", "127.0.0.1:8080"),
            Ok(Admitted::SameOrigin)
        );
        assert_eq!(
            same("http://localhost:8080", "localhost:8080"),
            Ok(Admitted::SameOrigin)
        );
        assert_eq!(
            same("HTTP://LocalHost:8080", "LOCALHOST:8080"),
            Ok(Admitted::SameOrigin)
        );
    }

    #[test]
    fn another_site_is_refused_and_the_error_names_the_origin_and_the_flag() {
        let r = rules("127.0.0.1:8080", &[], &[]);
        let err = r
            .check_origin(Some("https://evil.example"), Some("127.0.0.1:8080"))
            .expect_err("cross-site");
        assert!(err.contains("https://evil.example"), "{err}");
        assert!(err.contains("--allowed-origin"), "{err}");
        for other in [
            "http://127.0.0.1:5173",
            "http://localhost:8080",
            "null",
            "file://",
        ] {
            assert!(
                r.check_origin(Some(other), Some("127.0.0.1:8080")).is_err(),
                "{other}"
            );
        }
    }

    #[test]
    fn a_rebinding_page_is_same_origin_with_its_host_but_the_host_is_refused() {
        let r = rules("127.0.0.1:8080", &[], &[]);
        let err = r
            .check_origin(Some("http://evil.example:8080"), Some("evil.example:8080"))
            .expect_err("rebinding");
        assert!(err.contains("--allowed-host evil.example:8080"), "{err}");
        let allowed = [host("evil.example")];
        let r = rules("127.0.0.1:8080", &[], &allowed);
        assert_eq!(
            r.check_origin(Some("http://evil.example:8080"), Some("evil.example:8080")),
            Ok(Admitted::SameOrigin)
        );
    }

    #[test]
    fn allowed_origins_match_scheme_host_and_port_ignoring_case() {
        let allowed = [origin("http://localhost:5173/")];
        let r = rules("127.0.0.1:8080", &allowed, &[]);
        let check = |o: &str| r.check_origin(Some(o), Some("127.0.0.1:8080"));
        let admitted = Ok(Admitted::Allowed("http://localhost:5173".into()));
        assert_eq!(check("http://localhost:5173"), admitted);
        assert_eq!(check("HTTP://LOCALHOST:5173"), admitted);
        assert!(check("https://localhost:5173").is_err(), "scheme differs");
        assert!(check("http://localhost:5174").is_err(), "port differs");
        assert!(check("http://127.0.0.1:5173").is_err(), "host differs");
    }

    #[test]
    fn default_ports_are_implied_by_the_scheme() {
        let allowed = [
            origin("https://monitor.example"),
            origin("http://dev.example:80"),
        ];
        let r = rules("127.0.0.1:8080", &allowed, &[]);
        let check = |o: &str| r.check_origin(Some(o), None);
        assert!(matches!(
            check("https://monitor.example:443"),
            Ok(Admitted::Allowed(_))
        ));
        assert!(matches!(
            check("http://dev.example"),
            Ok(Admitted::Allowed(_))
        ));
        assert!(check("http://monitor.example:443").is_err());
        // Behind a TLS proxy the Host names no port: the origin's default applies.
        let hosts = [host("monitor.example")];
        let r = rules("127.0.0.1:8080", &[], &hosts);
        assert_eq!(
            r.check_origin(Some("https://monitor.example"), Some("monitor.example")),
            Ok(Admitted::SameOrigin)
        );
        assert!(
            r.check_origin(
                Some("https://monitor.example:8443"),
                Some("monitor.example:443")
            )
            .is_err()
        );
    }

    #[test]
    fn a_star_admits_every_origin() {
        let allowed = [origin("*")];
        let r = rules("127.0.0.1:8080", &allowed, &[]);
        for o in ["https://evil.example", "null", "http://[::1]:9"] {
            let admitted = r.check_origin(Some(o), Some("x"));
            assert_eq!(admitted, Ok(Admitted::Allowed("*".into())), "{o}");
        }
    }

    #[test]
    fn a_star_opens_reads_but_no_change_to_other_sites() {
        let allowed = [origin("*"), origin("https://ci.example")];
        let r = rules("127.0.0.1:8080", &allowed, &[]);
        let refused = r
            .check_change_origin(Some("https://evil.example"), Some("127.0.0.1:8080"))
            .expect_err("a star admits no change");
        assert!(refused.contains("--allowed-origin"), "{refused}");
        assert_eq!(
            r.check_change_origin(Some("https://ci.example"), Some("127.0.0.1:8080")),
            Ok(Admitted::Allowed("https://ci.example".into()))
        );
        assert_eq!(
            r.check_change_origin(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")),
            Ok(Admitted::SameOrigin)
        );
        assert_eq!(r.check_change_origin(None, None), Ok(Admitted::NoOrigin));
    }

    #[test]
    fn ipv6_literals_are_compared_as_addresses() {
        let r = rules("[::1]:8080", &[], &[]);
        assert_eq!(
            r.check_origin(Some("http://[0:0:0:0:0:0:0:1]:8080"), Some("[::1]:8080")),
            Ok(Admitted::SameOrigin)
        );
        assert_eq!(r.check_host(Some("[::1]:8080")), Ok(()));
        assert!(r.check_host(Some("[::2]:8080")).is_err());
        assert!(
            r.check_host(Some("::1:8080")).is_err(),
            "bare IPv6 is no Host"
        );
        assert!(r.check_host(Some("[::1]8080")).is_err());
    }

    #[test]
    fn host_must_be_the_listen_address_or_localhost_on_its_port() {
        let r = rules("127.0.0.1:8080", &[], &[]);
        assert_eq!(r.check_host(Some("127.0.0.1:8080")), Ok(()));
        assert_eq!(r.check_host(Some("LocalHost:8080")), Ok(()));
        assert_eq!(r.check_host(None), Ok(()));
        for bad in [
            "127.0.0.1:9090",
            "localhost",
            "10.0.0.1:8080",
            "evil.example:8080",
            "a b",
        ] {
            let err = r.check_host(Some(bad)).expect_err(bad);
            assert!(err.contains("--allowed-host"), "{err}");
        }
    }

    #[test]
    fn on_all_interfaces_any_ip_literal_on_the_port_is_ours_but_names_are_not() {
        let r = rules("0.0.0.0:8080", &[], &[]);
        for good in [
            "192.168.1.5:8080",
            "127.0.0.1:8080",
            "[fe80::1]:8080",
            "localhost:8080",
        ] {
            assert_eq!(r.check_host(Some(good)), Ok(()), "{good}");
        }
        for bad in ["192.168.1.5:80", "monitor.lan:8080", "192.168.1.5"] {
            assert!(r.check_host(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowed_hosts_match_any_port_unless_they_name_one() {
        let hosts = [host("Monitor.Example"), host("other.example:9000")];
        let r = rules("127.0.0.1:8080", &[], &hosts);
        assert_eq!(r.check_host(Some("monitor.example")), Ok(()));
        assert_eq!(r.check_host(Some("monitor.example:8443")), Ok(()));
        assert_eq!(r.check_host(Some("other.example:9000")), Ok(()));
        assert!(r.check_host(Some("other.example:9001")).is_err());
        assert!(r.check_host(Some("other.example")).is_err());
    }

    #[test]
    fn settings_that_are_no_origin_or_host_are_refused_with_a_hint() {
        for bad in ["localhost:5173", "http://", "http://a/b", "http://u@a", ""] {
            let err = AllowedOrigin::parse(bad).expect_err(bad);
            assert!(err.contains("scheme://host"), "{err}");
        }
        for bad in ["", "http://a", "a/b", "[::1", "a:port"] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            origin("HTTP://LocalHost:5173").to_string(),
            "http://localhost:5173"
        );
        assert_eq!(host("[::1]:80").to_string(), "[::1]:80");
    }
}
