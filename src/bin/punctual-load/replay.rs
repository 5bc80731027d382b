//! Replaying clients: WebSocket clients that read this run from its first
//! outcome while the window is measured, loading the daemon without being
//! timed themselves; what they report is whether the replay was whole.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tungstenite::{Message, WebSocket};

use crate::clients::{READER_STACK, Socket, connect_websocket, number, string};
use crate::report::ReplayReport;

/// What a replaying client got: this run from seq 1 up to the newest outcome
/// when it joined (`target`), in order, or how far it came.
#[derive(Default)]
struct Replayed {
    target: u64,
    last_seq: u64,
    holes: u64,
    gap_notices: u64,
}

impl Replayed {
    fn complete(&self) -> bool {
        self.target > 0 && self.last_seq >= self.target && self.holes == 0 && self.gap_notices == 0
    }

    fn message(&mut self, json: &[u8]) {
        match string(json, b"\"type\":\"") {
            Some(b"hello") => self.target = number(json, b"\"seq\":").unwrap_or(0),
            Some(b"gap") => {
                self.gap_notices += 1;
                self.last_seq = number(json, b"\"to\":").unwrap_or(self.last_seq);
            }
            Some(b"event") => {
                let seq = number(json, b"\"seq\":").unwrap_or(0);
                if seq != self.last_seq + 1 {
                    self.holes += 1;
                }
                self.last_seq = seq;
            }
            _ => {}
        }
    }
}

/// The replaying clients that connected, each reading on its own thread.
pub struct Replays {
    requested: u32,
    pause: f64,
    sockets: Vec<Socket>,
    readers: Vec<JoinHandle<Replayed>>,
}

/// Replaying clients of this run (`epoch`), each reading on its own thread:
/// continuously, or for a moment every `pause` seconds.
pub fn start_replays(count: u32, pause: f64, addr: SocketAddr, epoch: &str) -> Replays {
    let url = format!("ws://{addr}/ws?epoch={epoch}&since=0");
    let mut replays = Replays {
        requested: count,
        pause,
        sockets: Vec::new(),
        readers: Vec::new(),
    };
    for i in 0..count {
        let Ok((socket, mut ws)) = connect_websocket(addr, &url) else {
            continue;
        };
        if pause > 0.0 {
            let _ = socket.0.set_read_timeout(Some(Duration::from_millis(100)));
        }
        let reader = thread::Builder::new()
            .name(format!("replay-{i}"))
            .stack_size(READER_STACK)
            .spawn(move || read_replay(&mut ws, pause));
        if let Ok(reader) = reader {
            replays.sockets.push(socket);
            replays.readers.push(reader);
        }
    }
    replays
}

fn read_replay(ws: &mut WebSocket<Socket>, pause: f64) -> Replayed {
    let mut replayed = Replayed::default();
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => replayed.message(text.as_bytes()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                thread::sleep(Duration::from_secs_f64(pause));
            }
            Err(_) => return replayed,
        }
    }
}

/// Ends every replay from this side; what they got, `None` if none were
/// asked for.
pub fn close_replays(replays: Replays) -> Option<ReplayReport> {
    for socket in &replays.sockets {
        let _ = socket.0.shutdown(Shutdown::Both);
    }
    let replayed: Vec<Replayed> = replays
        .readers
        .into_iter()
        .filter_map(|r| r.join().ok())
        .collect();
    (replays.requested > 0).then(|| ReplayReport {
        requested: replays.requested,
        connected: replayed.len(),
        pause_seconds: replays.pause,
        complete: replayed.iter().filter(|r| r.complete()).count(),
        holes: replayed.iter().map(|r| r.holes).sum(),
        gap_notices: replayed.iter().map(|r| r.gap_notices).sum(),
    })
}
