//! Process limits: how many connections and clients the descriptor limit,
//! and the memory maps their threads need (`vm.max_map_count`), allow.
//!
//! Owns no thread and no channel. Every connection — a plain HTTP one, or a
//! WebSocket or SSE client after its upgrade — holds one descriptor. The soft
//! limit is raised to the hard limit at start; the default caps follow from
//! it, keeping a reserve for the listener, logs, probes and static files that
//! scales with the limit (an eighth of it, 32 to 256). A limit that leaves
//! fewer than [`MIN_CONNECTIONS`] is refused: the daemon could only answer
//! 503. One that lowers the default caps is warned about once. An
//! operator's explicit cap is kept even when the limit cannot honour it (the
//! front survives running out: it backs off and keeps accepting), but it is
//! warned about once at start.

/// Descriptors held by one open connection, upgraded or not.
pub const FDS_PER_CONNECTION: u64 = 1;

/// Threads held by one open connection: its connection thread while it
/// speaks HTTP, its writer thread once it is a WebSocket or SSE client.
pub const THREADS_PER_CONNECTION: u64 = 1;

/// Most descriptors kept back for the listener, logs, probes, the work
/// endpoint's connections and static files.
pub const FD_RESERVE: u64 = 256;

/// Fewest descriptors kept back, however low the limit: the listener, the
/// standard streams, the journal, the self-probe and a few files.
pub const MIN_FD_RESERVE: u64 = 32;

/// Fewest connections worth starting for: a dashboard, the self-probe, a
/// producer and a few requests besides.
pub const MIN_CONNECTIONS: u64 = 16;

/// Default cap on open connections when the descriptor limit allows more:
/// the default client cap and room for plain HTTP beside it.
pub const DEFAULT_MAX_CONNECTIONS: u64 = DEFAULT_MAX_CLIENTS + 1024;

/// Default cap on WebSocket and SSE clients (when connections allow it).
pub const DEFAULT_MAX_CLIENTS: u64 = 10_000;

/// The caps in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Most open connections at once, clients included.
    pub connections: usize,
    /// Most WebSocket and SSE clients at once.
    pub clients: usize,
}

/// Raises the soft descriptor limit as far as allowed and derives the caps
/// from it, with the operator's explicit values where given. `Err` names a
/// limit too low to serve and how to raise it.
pub fn caps(connections: Option<u32>, clients: Option<u32>) -> Result<Caps, String> {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("cannot read or raise the open-file limit ({e}); assuming 1024");
            1024
        }
    };
    let (caps, mut warnings) = caps_for(limit, connections, clients)?;
    let caps = match max_map_count() {
        Some(maps) => {
            let (caps, warning) = cap_by_memory_maps(caps, maps);
            warnings.extend(warning);
            caps
        }
        None => caps,
    };
    for warning in warnings {
        log::warn!("{warning}");
    }
    Ok(caps)
}

/// Memory maps one thread holds: its stack and guard page, and the
/// alternate signal stack and guard page Rust gives every thread.
pub const MAPS_PER_THREAD: u64 = 4;

/// Memory maps kept back for the binary, its libraries, the heap and the
/// daemon's own threads.
pub const MAP_RESERVE: u64 = 8192;

/// `vm.max_map_count`, if it can be read.
fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Lowers the caps to the threads `max_maps` memory maps allow. Unlike
/// descriptors, which the front survives running out of, a thread that
/// cannot map its signal stack aborts the whole process (Rust's runtime
/// does), so a cap beyond this is never kept, even an explicit one: one
/// client too many would take every other down with it.
pub fn cap_by_memory_maps(caps: Caps, max_maps: u64) -> (Caps, Option<String>) {
    let threads = max_maps.saturating_sub(MAP_RESERVE) / MAPS_PER_THREAD;
    let allowed = usize::try_from(threads / THREADS_PER_CONNECTION).unwrap_or(usize::MAX);
    if caps.connections <= allowed {
        return (caps, None);
    }
    let warning = format!(
        "{} connections need a thread each, and vm.max_map_count {max_maps} allows {allowed} \
         ({MAPS_PER_THREAD} memory maps per thread, {MAP_RESERVE} kept back): serving at most \
         {allowed}; raise vm.max_map_count (sysctl) for more",
        caps.connections
    );
    let capped = Caps {
        connections: allowed,
        clients: caps.clients.min(allowed),
    };
    (capped, Some(warning))
}

/// The caps for descriptor limit `fd_limit`, and what to warn about; `Err`
/// when the limit leaves too few connections to serve.
pub fn caps_for(
    fd_limit: u64,
    connections: Option<u32>,
    clients: Option<u32>,
) -> Result<(Caps, Vec<String>), String> {
    let allowed = allowed_connections(fd_limit);
    let reserve = fd_reserve(fd_limit);
    if allowed < MIN_CONNECTIONS {
        return Err(format!(
            "the open-file limit {fd_limit} leaves {allowed} connections after {reserve} \
             descriptors kept back; at least {MIN_CONNECTIONS} are needed to serve: raise \
             `ulimit -n` (or LimitNOFILE= in the unit) to {} or more",
            MIN_CONNECTIONS + MIN_FD_RESERVE * 2
        ));
    }
    let mut warnings = Vec::new();
    let connections = match connections.map(u64::from) {
        Some(asked) => {
            if asked > allowed {
                warnings.push(format!(
                    "--max-connections {asked} is more than the open-file limit {fd_limit} allows \
                     ({allowed} after {reserve} kept back): when descriptors run out, new \
                     connections wait; raise LimitNOFILE / ulimit -n"
                ));
            }
            asked
        }
        None => {
            if allowed < DEFAULT_MAX_CONNECTIONS {
                warnings.push(format!(
                    "the open-file limit {fd_limit} allows {allowed} connections ({reserve} \
                     descriptors kept back), fewer than the default {DEFAULT_MAX_CONNECTIONS}: \
                     serving at most {allowed}; raise LimitNOFILE / ulimit -n for more"
                ));
            }
            allowed.min(DEFAULT_MAX_CONNECTIONS)
        }
    };
    let clients = match clients.map(u64::from) {
        Some(asked) if asked > connections => {
            warnings.push(format!(
                "--max-clients {asked} lowered to {connections}: every client is a connection \
                 and at most {connections} are allowed (--max-connections)"
            ));
            connections
        }
        Some(asked) => asked,
        None => DEFAULT_MAX_CLIENTS.min(connections),
    };
    let caps = Caps {
        connections: usize::try_from(connections).unwrap_or(usize::MAX),
        clients: usize::try_from(clients).unwrap_or(usize::MAX),
    };
    Ok((caps, warnings))
}

/// Descriptors kept back under `fd_limit`: an eighth of it, from
/// [`MIN_FD_RESERVE`] to [`FD_RESERVE`], so a fixed reserve never takes
/// the whole of a low limit.
pub fn fd_reserve(fd_limit: u64) -> u64 {
    (fd_limit / 8).clamp(MIN_FD_RESERVE, FD_RESERVE)
}

/// Connections that fit in `fd_limit` descriptors after the reserve.
pub fn allowed_connections(fd_limit: u64) -> u64 {
    fd_limit.saturating_sub(fd_reserve(fd_limit)) / FDS_PER_CONNECTION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_scales_with_the_limit() {
        assert_eq!(allowed_connections(65_536), 65_280);
        assert_eq!(allowed_connections(1024), 896);
        assert_eq!(allowed_connections(256), 224);
        assert_eq!(allowed_connections(100), 68);
        assert_eq!(allowed_connections(40), 8);
    }

    #[test]
    fn default_caps_follow_the_descriptor_limit_and_a_low_one_is_warned_about() {
        let (caps, warnings) = caps_for(65_536, None, None).expect("serves");
        assert_eq!((caps.connections, caps.clients), (11_024, 10_000));
        assert!(warnings.is_empty(), "{warnings:?}");
        let (caps, warnings) = caps_for(300, None, None).expect("serves");
        assert_eq!(
            caps,
            Caps {
                connections: 263,
                clients: 263
            }
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("LimitNOFILE"), "{warnings:?}");
    }

    #[test]
    fn a_limit_too_low_to_serve_is_refused_naming_the_fix() {
        let refusal = caps_for(40, None, None).expect_err("too low");
        assert!(refusal.contains("ulimit -n"), "{refusal}");
        assert!(refusal.contains("LimitNOFILE"), "{refusal}");
        assert!(caps_for(48, None, None).is_ok());
    }

    #[test]
    fn an_explicit_cap_beyond_the_limit_is_kept_and_warned_about() {
        let (caps, warnings) = caps_for(300, Some(1000), None).expect("serves");
        assert_eq!(caps.connections, 1000);
        assert_eq!(caps.clients, 1000);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("--max-connections 1000"),
            "{warnings:?}"
        );
    }

    #[test]
    fn caps_beyond_what_the_memory_maps_allow_are_lowered_even_explicit_ones() {
        let asked = Caps {
            connections: 19_600,
            clients: 19_300,
        };
        // Linux's default vm.max_map_count.
        let (caps, warning) = cap_by_memory_maps(asked, 65_530);
        assert_eq!((caps.connections, caps.clients), (14_334, 14_334));
        assert!(
            warning.is_some_and(|w| w.contains("vm.max_map_count 65530")),
            "warned, naming the setting"
        );
        // The defaults fit.
        let (defaults, _) = caps_for(65_536, None, None).expect("serves");
        assert_eq!(cap_by_memory_maps(defaults, 65_530), (defaults, None));
    }

    #[test]
    fn clients_cannot_outnumber_connections() {
        let (caps, warnings) = caps_for(65_536, Some(100), Some(500)).expect("serves");
        assert_eq!(caps.clients, 100);
        assert!(warnings[0].contains("--max-clients 500"), "{warnings:?}");
    }
}
