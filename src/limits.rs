//! Process limits: how many connections and clients the descriptor limit allows.
//!
//! Owns no thread and no channel. Every connection — a plain HTTP one, or a
//! WebSocket or SSE client after its upgrade — holds one descriptor. The soft
//! limit is raised to the hard limit at start; the default caps follow from
//! it, keeping a reserve for the listener, logs, probes and static files. An
//! operator's explicit cap is kept even when the limit cannot honour it (the
//! front survives running out: it backs off and keeps accepting), but it is
//! warned about once at start.

/// Descriptors held by one open connection, upgraded or not.
pub const FDS_PER_CONNECTION: u64 = 1;

/// Threads held by one open connection: its connection thread while it
/// speaks HTTP, its writer thread once it is a WebSocket or SSE client.
pub const THREADS_PER_CONNECTION: u64 = 1;

/// Descriptors kept back for the listener, logs, probes and static files.
pub const FD_RESERVE: u64 = 256;

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
/// from it, with the operator's explicit values where given.
pub fn caps(connections: Option<u32>, clients: Option<u32>) -> Caps {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("cannot read or raise the open-file limit ({e}); assuming 1024");
            1024
        }
    };
    let (caps, warnings) = caps_for(limit, connections, clients);
    for warning in warnings {
        log::warn!("{warning}");
    }
    caps
}

/// The caps for descriptor limit `fd_limit`, and what to warn about.
pub fn caps_for(
    fd_limit: u64,
    connections: Option<u32>,
    clients: Option<u32>,
) -> (Caps, Vec<String>) {
    let allowed = allowed_connections(fd_limit);
    let mut warnings = Vec::new();
    let connections = match connections.map(u64::from) {
        Some(asked) => {
            if asked > allowed {
                warnings.push(format!(
                    "--max-connections {asked} is more than the open-file limit {fd_limit} allows \
                     ({allowed} after {FD_RESERVE} kept back): when descriptors run out, new \
                     connections wait; raise LimitNOFILE / ulimit -n"
                ));
            }
            asked
        }
        None => allowed.min(DEFAULT_MAX_CONNECTIONS),
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
    (caps, warnings)
}

/// Connections that fit in `fd_limit` descriptors after the reserve.
pub fn allowed_connections(fd_limit: u64) -> u64 {
    fd_limit.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_free() {
        assert_eq!(allowed_connections(1024), 768);
        assert_eq!(allowed_connections(100), 0);
    }

    #[test]
    fn default_caps_follow_the_descriptor_limit_without_a_warning() {
        let (caps, warnings) = caps_for(300, None, None);
        assert_eq!(
            caps,
            Caps {
                connections: 44,
                clients: 44
            }
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let (caps, warnings) = caps_for(65_536, None, None);
        assert_eq!((caps.connections, caps.clients), (11_024, 10_000));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn an_explicit_cap_beyond_the_limit_is_kept_and_warned_about() {
        let (caps, warnings) = caps_for(300, Some(1000), None);
        assert_eq!(caps.connections, 1000);
        assert_eq!(caps.clients, 1000);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("--max-connections 1000"),
            "{warnings:?}"
        );
    }

    #[test]
    fn clients_cannot_outnumber_connections() {
        let (caps, warnings) = caps_for(65_536, Some(100), Some(500));
        assert_eq!(caps.clients, 100);
        assert!(warnings[0].contains("--max-clients 500"), "{warnings:?}");
    }
}
