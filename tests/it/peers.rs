//! What a dashboard's WebSocket peer says is read and answered as RFC 6455
//! requires: a ping gets a pong, a close gets a close and the connection
//! ends, a peer that floods or sends oversized frames is cut off alone — and
//! a client made with Python's `websockets`, keepalive pings at its defaults,
//! stays connected and closes cleanly.

use crate::common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, connect, next_message, start};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Bytes, Message};

const WAIT: Duration = Duration::from_secs(10);

/// Reads until `wanted` matches a frame within `WAIT`; outcomes on the way
/// are skipped. `None` if the connection ended or nothing matched in time.
fn read_until(client: &mut Client, wanted: impl Fn(&Message) -> bool) -> Option<Message> {
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        match client.read() {
            Ok(message) if wanted(&message) => return Some(message),
            Ok(_) => {}
            Err(e) if common::is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
    None
}

/// How the server ended the connection: the code of its close frame, then
/// whether it closed the TCP connection after.
fn close_code_then_end(client: &mut Client) -> (Option<CloseCode>, bool) {
    let code = match read_until(client, |m| matches!(m, Message::Close(_))) {
        Some(Message::Close(frame)) => frame.map(|f| f.code),
        _ => None,
    };
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        match client.read() {
            Err(e) if common::is_timeout(&e) => {}
            Err(_) => return (code, true),
            Ok(_) => {}
        }
    }
    (code, false)
}

#[test]
fn a_ping_from_a_dashboard_is_answered_with_a_pong_carrying_its_payload() {
    let server = start(|c| c.rate = 20);
    let mut client = connect(server.local_addr(), "/ws");
    for round in 0..3 {
        let payload = Bytes::from(format!("are you there? {round}"));
        client
            .send(Message::Ping(payload.clone()))
            .expect("the ping is sent");
        let pong = read_until(&mut client, |m| matches!(m, Message::Pong(_)));
        assert_eq!(pong, Some(Message::Pong(payload)), "round {round}");
    }
    assert!(
        next_message(&mut client, WAIT).is_some(),
        "outcomes keep coming after the pings"
    );
}

#[test]
fn a_close_from_a_dashboard_is_echoed_and_the_server_ends_the_connection() {
    let server = start(|c| c.rate = 20);
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws?stats=1");
    assert!(next_message(&mut client, WAIT).is_some());
    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .expect("the close is sent");
    let (code, ended) = close_code_then_end(&mut client);
    assert_eq!(code, Some(CloseCode::Normal), "the close is echoed");
    assert!(ended, "the server closes the TCP connection after the echo");
    assert!(
        common::eventually(WAIT, || {
            common::get_json(addr, "/api/stats").1["clients"]["connected"] == 0
        }),
        "the client's thread ends and frees its slot"
    );
}

#[test]
fn a_peer_that_floods_frames_is_cut_off_and_other_clients_carry_on() {
    let server = start(|c| c.rate = 50);
    let addr = server.local_addr();
    let mut bystander = connect(addr, "/ws");
    let mut flooder = connect(addr, "/ws");
    for _ in 0..500 {
        if flooder.send(Message::Text("hello?".into())).is_err() {
            break;
        }
    }
    let (code, _) = close_code_then_end(&mut flooder);
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(next_message(&mut bystander, WAIT).is_some());
}

/// A masked client frame (RFC 6455 §5.2) of `opcode` with `fin`, payload under 126 bytes.
fn raw_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x17, 0xc3, 0x01];
    let mut frame = vec![u8::from(fin) << 7 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

fn raw_socket(client: &mut Client) -> &mut TcpStream {
    match client.get_mut() {
        MaybeTlsStream::Plain(stream) => stream,
        _ => panic!("a plain TCP test client"),
    }
}

#[test]
fn a_message_fragmented_without_end_is_cut_off_as_a_flood() {
    let server = start(|c| c.rate = 20);
    let mut client = connect(server.local_addr(), "/ws");
    // One byte of text opens a message that never finishes: only empty
    // continuation frames follow, so no message is ever complete.
    let mut flood = raw_frame(false, 0x1, b"{");
    for _ in 0..20_000 {
        flood.extend(raw_frame(false, 0x0, b""));
    }
    let _ = raw_socket(&mut client).write_all(&flood);
    let (code, ended) = close_code_then_end(&mut client);
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(ended);
}

#[test]
fn a_peer_dribbling_a_frame_a_few_bytes_at_a_time_is_cut_off() {
    let server = start(|c| c.rate = 20);
    let mut client = connect(server.local_addr(), "/ws");
    let socket = raw_socket(&mut client);
    socket.set_nodelay(true).expect("nodelay");
    // Twenty pings, well within what a peer may say, but each byte its own
    // segment: every one wakes the client's thread.
    let pings: Vec<u8> = (0..20).flat_map(|_| raw_frame(true, 0x9, b"")).collect();
    for byte in pings.chunks(1) {
        if socket.write_all(byte).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (code, _) = close_code_then_end(&mut client);
    assert_eq!(code, Some(CloseCode::Policy));
}

#[test]
fn a_dashboard_that_half_closes_is_let_go_without_waiting_for_a_write() {
    // No outcomes, so the only write would be a keep-alive after 15 s, and
    // it would succeed on a half-closed connection.
    let server = start(|c| c.rate = 0);
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws");
    let connected = || common::get_json(addr, "/api/stats").1["clients"]["connected"].clone();
    assert!(common::eventually(WAIT, || connected() == 1));
    raw_socket(&mut client)
        .shutdown(Shutdown::Write)
        .expect("half-close");
    assert!(
        common::eventually(WAIT, || connected() == 0),
        "the client is still counted after its peer left"
    );
}

#[test]
fn a_frame_larger_than_a_dashboard_may_send_is_refused_with_1009() {
    let server = start(|c| c.rate = 20);
    let mut client = connect(server.local_addr(), "/ws");
    client
        .send(Message::Binary(vec![0u8; 64 * 1024].into()))
        .expect("the frame is sent");
    let (code, _) = close_code_then_end(&mut client);
    assert_eq!(code, Some(CloseCode::Size));
}

/// Keeps a `websockets` client (pings every 20 s, 20 s to answer, as the
/// library ships) connected for `seconds`, then closes with 1000; prints
/// what it got as one JSON line.
const PYTHON_CLIENT: &str = r#"
import asyncio, json, sys, time
import websockets

async def main(url, seconds):
    received = 0
    error = None
    async with websockets.connect(url) as ws:
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                try:
                    await asyncio.wait_for(ws.recv(), timeout=1)
                    received += 1
                except asyncio.TimeoutError:
                    pass
        except websockets.ConnectionClosed as e:
            error = repr(e)
        await ws.close(code=1000, reason="done")
        print(json.dumps({"received": received, "error": error,
                          "closeCode": ws.close_code}))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"#;

/// Debian's interpreter, where `apt-get install python3-websockets` puts the library.
const PYTHON: &str = "/usr/bin/python3";

fn python_has_websockets() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import websockets"])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn a_python_websockets_client_with_default_keepalive_stays_90_s_and_closes_with_1000() {
    if !python_has_websockets() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{PYTHON} cannot import websockets: apt-get install python3-websockets"
        );
        println!("skipped: {PYTHON} cannot import websockets (apt-get install python3-websockets)");
        return;
    }
    let server = start(|c| c.rate = 20);
    let url = format!("ws://{}/ws", server.local_addr());
    let out = Command::new(PYTHON)
        .args(["-c", PYTHON_CLIENT, &url, "90"])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["error"], serde_json::Value::Null, "{report}");
    assert_eq!(report["closeCode"], 1000, "{report}");
    // 20 outcomes a second for 90 s; allow a slow machine its hiccups.
    assert!(report["received"].as_u64() > Some(900), "{report}");
}
