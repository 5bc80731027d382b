//! Process limits: how many clients the file-descriptor limit allows.
//!
//! Owns no thread and no channel. Every upgraded WebSocket connection holds
//! two descriptors (tiny_http keeps a clone of the socket for its reader), and
//! when descriptors run out mid-accept tiny_http's accept thread dies. So the
//! soft limit is raised to the hard limit at start and the client cap is kept
//! below it, leaving a reserve for plain HTTP and the daemon's own files.

/// Descriptors held by one connected WebSocket client.
pub const FDS_PER_CLIENT: u64 = 2;

/// Threads held by one connected client: its writer, and the tiny_http pool
/// thread that stays parked on the upgraded connection for its lifetime.
pub const THREADS_PER_CLIENT: u64 = 2;

/// Descriptors kept back for plain HTTP requests, the listener, logs and probes.
pub const FD_RESERVE: u64 = 256;

/// Raises the soft descriptor limit as far as allowed and returns the cap on
/// clients: `requested`, lowered (with a warning) to what the limit allows.
pub fn client_cap(requested: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("cannot read or raise the open-file limit ({e}); assuming 1024");
            1024
        }
    };
    let allowed = usize::try_from(allowed_clients(limit)).unwrap_or(usize::MAX);
    if allowed < requested {
        log::warn!(
            "--max-clients {requested} lowered to {allowed}: the open-file limit is {limit} \
             ({FDS_PER_CLIENT} per client, {FD_RESERVE} kept for HTTP); raise LimitNOFILE / ulimit -n to allow more"
        );
    }
    requested.min(allowed)
}

/// Clients that fit in `fd_limit` descriptors after the reserve.
pub fn allowed_clients(fd_limit: u64) -> u64 {
    fd_limit.saturating_sub(FD_RESERVE) / FDS_PER_CLIENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_free() {
        assert_eq!(allowed_clients(1024), 384);
        assert_eq!(allowed_clients(100), 0);
    }
}
