//! Building answers: JSON replies and errors, headers, health answers, and
//! sending them. Reading requests lives in `request`.

use std::io::Cursor;

use tiny_http::{Header, Request, Response, StatusCode};

pub(super) type Reply = Response<Cursor<Vec<u8>>>;

pub(super) fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values here are ASCII")
}

pub(super) fn body(status: u16, content_type: &str, bytes: Vec<u8>) -> Reply {
    Response::from_data(bytes)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
}

pub(super) fn json(status: u16, bytes: Vec<u8>) -> Reply {
    body(status, "application/json", bytes)
}

/// A 405 answer with the `Allow` header listing what `path` answers.
pub(super) fn method_not_allowed(path: &str, allowed: &str) -> Reply {
    error(405, &format!("{path} answers {allowed} only")).with_header(header("Allow", allowed))
}

/// A health answer: `{"status": status, "reason": reason}`.
pub(super) fn status_json(code: u16, status: &str, reason: &str) -> Reply {
    json(
        code,
        serde_json::json!({ "status": status, "reason": reason })
            .to_string()
            .into_bytes(),
    )
}

/// A JSON error answer: `{"error": message}`.
pub fn error(status: u16, message: &str) -> Reply {
    json(
        status,
        serde_json::json!({ "error": message })
            .to_string()
            .into_bytes(),
    )
}

pub(super) fn respond(request: Request, reply: Reply) {
    if let Err(e) = request.respond(reply) {
        log::debug!("could not send a response: {e}");
    }
}
