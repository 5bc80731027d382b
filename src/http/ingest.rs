//! Ingest: turning what producers send into events — a `POST /api/events`
//! body (JSON, NDJSON, or an HTML form's fields), or any JSON a webhook sends
//! to `POST /api/webhook/<producer>`.
//!
//! Owns the validation of posted events. Pure functions: the HTTP front reads
//! the body, calls [`parse_batch`] or [`parse_webhook`], and only when the
//! whole batch is valid submits each event through the intake — a batch with
//! one bad item is refused whole, nothing half-ingested.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::pipeline::event::{
    Event, MAX_BATCH, MAX_ENVELOPE_BYTES, MAX_FUTURE_MS, MAX_ID_CHARS, MAX_MS, Source,
    check_producer,
};
use crate::time::WallClock;

/// Largest serialised payload of an event posted to `POST /api/events`.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024;
/// Deepest nesting of arrays and objects a payload may have. Every client
/// parses each outcome, and many parsers recurse (Python's `json` fails
/// near 1,000 levels, serde_json at 128): no producer may send what a
/// dashboard cannot read.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// A refused request: the HTTP status and a message naming what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 413 or 415.
    pub status: u16,
    /// What was wrong, naming the item index and field.
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// One posted event, as sent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Posted {
    id: Option<String>,
    deadline_ms: Option<f64>,
    created_at: Option<f64>,
    work_ms: Option<f64>,
    producer: Option<String>,
    payload: Option<Box<RawValue>>,
}

/// The body formats a producer may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object or an array of them.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// An HTML form's fields (`application/x-www-form-urlencoded`, what
    /// `curl -d` sends): one event, its known fields taken, the rest its payload.
    Form,
}

/// The body format named by a `Content-Type`, or a 415 refusal.
pub fn format_of(content_type: Option<&str>) -> Result<Format, Refusal> {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson" | "application/ndjson" => Ok(Format::Ndjson),
        "application/x-www-form-urlencoded" => Ok(Format::Form),
        other => Err(refuse(
            415,
            format!(
                "unsupported Content-Type {other:?}: send application/json, application/x-ndjson \
                 or application/x-www-form-urlencoded"
            ),
        )),
    }
}

/// What a webhook's `Content-Type` says its body is: JSON (`application/json`
/// or any `…+json` type, such as CloudEvents') or a form. Anything else is
/// refused 415, a missing type included: a page of any site can post
/// `text/plain` without a CORS preflight, so that type must not forge an event.
pub fn webhook_format(content_type: Option<&str>) -> Result<Format, Refusal> {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = media == "application/json"
        || media
            .split_once('/')
            .is_some_and(|(_, subtype)| subtype.ends_with("+json"));
    match media.as_str() {
        _ if is_json => Ok(Format::Json),
        "application/x-www-form-urlencoded" => Ok(Format::Form),
        other => Err(refuse(
            415,
            format!(
                "unsupported Content-Type {other:?} for a webhook: send application/json \
                 (or a +json type) or application/x-www-form-urlencoded"
            ),
        )),
    }
}

/// Parses and validates a whole batch; `now` and `clock` give the moment of
/// receipt, `default_deadline` applies to items without `deadlineMs`.
pub fn parse_batch(
    format: Format,
    body: &[u8],
    now: Instant,
    clock: &WallClock,
    default_deadline: Duration,
) -> Result<Vec<Event>, Refusal> {
    if format == Format::Form {
        let posted = posted_form(body).map_err(|e| refuse(400, e))?;
        return to_event(posted, now, clock, default_deadline, MAX_PAYLOAD_BYTES)
            .map(|event| vec![event])
            .map_err(|e| refuse(400, e));
    }
    let items = split_items(format, body)?;
    if items.len() > MAX_BATCH {
        return Err(refuse(
            413,
            format!(
                "batch of {} items: at most {MAX_BATCH} per request",
                items.len()
            ),
        ));
    }
    if items.is_empty() {
        return Err(refuse(400, "no events in the body"));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            let posted: Posted = super::request::parse_json(raw.get().as_bytes())
                .map_err(|e| refuse(400, format!("item {index}: {e}")))?;
            to_event(posted, now, clock, default_deadline, MAX_PAYLOAD_BYTES)
                .map_err(|e| refuse(400, format!("item {index}: {e}")))
        })
        .collect()
}

/// The raw JSON of each item, before field validation.
fn split_items(format: Format, body: &[u8]) -> Result<Vec<Box<RawValue>>, Refusal> {
    match format {
        Format::Json => {
            let trimmed = body.trim_ascii_start();
            if trimmed.starts_with(b"[") {
                serde_json::from_slice(body)
                    .map_err(|e| refuse(400, format!("malformed JSON array: {e}")))
            } else {
                let one: Box<RawValue> = serde_json::from_slice(body)
                    .map_err(|e| refuse(400, format!("malformed JSON: {e}")))?;
                Ok(vec![one])
            }
        }
        // Handled whole by `posted_form`.
        Format::Form => Ok(Vec::new()),
        Format::Ndjson => body
            .split(|b| *b == b'\n')
            .filter(|line| !line.trim_ascii().is_empty())
            .enumerate()
            .map(|(index, line)| {
                serde_json::from_slice(line)
                    .map_err(|e| refuse(400, format!("item {index}: malformed JSON line: {e}")))
            })
            .collect(),
    }
}

/// A form's fields as a posted event: `id`, `deadlineMs`, `workMs`,
/// `createdAt` and `producer` are taken as those fields; every other field
/// goes into the payload object, as a string (a repeated name as an array of
/// them, in order).
fn posted_form(body: &[u8]) -> Result<Posted, String> {
    let mut posted = Posted {
        id: None,
        deadline_ms: None,
        created_at: None,
        work_ms: None,
        producer: None,
        payload: None,
    };
    let mut fields = serde_json::Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let number = |field: &str| {
            value
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("{field}: expected a number, got {value:?}"))
        };
        match name.as_ref() {
            "id" => posted.id = Some(value.into_owned()),
            "producer" => posted.producer = Some(value.into_owned()),
            "deadlineMs" => posted.deadline_ms = Some(number("deadlineMs")?),
            "workMs" => posted.work_ms = Some(number("workMs")?),
            "createdAt" => posted.created_at = Some(number("createdAt")?),
            _ => add_field(&mut fields, name.into_owned(), value.into_owned()),
        }
    }
    if !fields.is_empty() {
        let json = serde_json::Value::Object(fields).to_string();
        posted.payload = Some(RawValue::from_string(json).map_err(|e| format!("payload: {e}"))?);
    }
    Ok(posted)
}

fn add_field(fields: &mut serde_json::Map<String, serde_json::Value>, name: String, value: String) {
    use serde_json::Value;
    match fields.get_mut(&name) {
        None => {
            fields.insert(name, Value::String(value));
        }
        Some(Value::Array(values)) => values.push(Value::String(value)),
        Some(first) => *first = Value::Array(vec![first.take(), Value::String(value)]),
    }
}

/// A webhook's body as one event from `producer` (the path's last segment):
/// the whole JSON body is its payload — or, for a form-encoded hook that
/// sends its JSON in a `payload` field (GitHub's "form" setting), that field.
/// `deadline_ms` and `work_ms` come from the query string.
///
/// A CI or alerting hook's body is often far over 4 KiB (a push with many
/// commits), so the payload may take all of `max_body` but the outcome's own
/// fields: the outcome every client receives is then never larger than
/// `--max-body` ([`webhook_payload_limit`]).
#[allow(clippy::too_many_arguments)]
pub fn parse_webhook(
    producer: &str,
    format: Format,
    body: &[u8],
    query: (Option<f64>, Option<f64>),
    now: Instant,
    clock: &WallClock,
    default_deadline: Duration,
    max_body: u64,
) -> Result<Event, Refusal> {
    let json: Box<RawValue> = match format {
        Format::Form => {
            let payload = form_urlencoded::parse(body)
                .find(|(name, _)| name == "payload")
                .map(|(_, value)| value.into_owned())
                .ok_or_else(|| {
                    refuse(
                        400,
                        "a form-encoded webhook must send its JSON in a payload field",
                    )
                })?;
            RawValue::from_string(payload)
                .map_err(|e| refuse(400, format!("payload field: malformed JSON: {e}")))?
        }
        _ => {
            serde_json::from_slice(body).map_err(|e| refuse(400, format!("malformed JSON: {e}")))?
        }
    };
    let posted = Posted {
        id: None,
        deadline_ms: query.0,
        created_at: None,
        work_ms: query.1,
        producer: Some(producer.to_owned()),
        payload: Some(json),
    };
    to_event(
        posted,
        now,
        clock,
        default_deadline,
        webhook_payload_limit(max_body),
    )
    .map_err(|e| refuse(if is_too_large(&e) { 413 } else { 400 }, e))
}

/// Largest serialised webhook payload under `--max-body`: the body less the
/// room an outcome's other fields may take, so that the outcome is never
/// larger than `--max-body` (at the default 1 MiB it then fits the 1 MiB
/// message limit common WebSocket clients have by default).
pub fn webhook_payload_limit(max_body: u64) -> usize {
    usize::try_from(max_body)
        .unwrap_or(usize::MAX)
        .saturating_sub(MAX_ENVELOPE_BYTES)
}

fn milliseconds(field: &str, value: f64, min_exclusive_zero: bool) -> Result<Duration, String> {
    let in_range = value.is_finite()
        && value <= MAX_MS
        && if min_exclusive_zero {
            value > 0.0
        } else {
            value >= 0.0
        };
    if !in_range {
        let low = if min_exclusive_zero {
            "greater than 0"
        } else {
            "at least 0"
        };
        return Err(format!(
            "{field}: must be {low} and at most {MAX_MS}, got {value}"
        ));
    }
    Ok(Duration::from_secs_f64(value / 1000.0))
}

/// A deadline: whole milliseconds, as the generator's and as the wire carries
/// it (`"deadlineMs":100`). A fraction is refused rather than rounded, so the
/// deadline judged is exactly the one the producer asked for.
fn whole_milliseconds(field: &str, value: f64) -> Result<Duration, String> {
    milliseconds(field, value, true)?;
    if value.fract() != 0.0 {
        return Err(format!(
            "{field}: must be a whole number of milliseconds, got {value}"
        ));
    }
    // Checked to lie in 1..=MAX_MS and to be whole, so the cast is exact.
    Ok(Duration::from_millis(value as u64))
}

fn to_event(
    posted: Posted,
    now: Instant,
    clock: &WallClock,
    default_deadline: Duration,
    max_payload: usize,
) -> Result<Event, String> {
    let id = match posted.id {
        Some(id) if id.is_empty() || id.chars().count() > MAX_ID_CHARS => {
            return Err(format!("id: must be 1 to {MAX_ID_CHARS} characters"));
        }
        Some(id) => id,
        None => crate::pipeline::event::fresh_id(),
    };
    let deadline = match posted.deadline_ms {
        Some(ms) => whole_milliseconds("deadlineMs", ms)?,
        None => default_deadline,
    };
    let work = posted
        .work_ms
        .map(|ms| milliseconds("workMs", ms, false))
        .transpose()?;
    let created = match posted.created_at {
        None => now,
        Some(epoch_ms) => created_instant(epoch_ms, now, clock)?,
    };
    let payload = posted
        .payload
        .as_deref()
        .map(|raw| compact_payload(raw, max_payload))
        .transpose()?;
    if let Some(producer) = &posted.producer {
        check_producer(producer)?;
    }
    Ok(Event {
        id,
        source: Source::Ingest,
        created,
        arrived: now,
        deadline,
        work,
        payload,
        producer: posted.producer.map(String::into_boxed_str),
    })
}

/// Names a payload over its size limit in the refusal (`413`, not `400`).
const TOO_LARGE: &str = "bytes serialised";

fn is_too_large(error: &str) -> bool {
    error.starts_with("payload:") && error.contains(TOO_LARGE)
}

/// The payload without insignificant whitespace, so that every outcome's JSON
/// stays on one line (an SSE `data:` line, an NDJSON record) however the
/// producer formatted it. Only whitespace between tokens goes: key order,
/// number spelling and string contents are kept exactly as posted. The size
/// limit applies to this form.
fn compact_payload(raw: &RawValue, max: usize) -> Result<Box<RawValue>, String> {
    let (compact, depth) = strip_insignificant_whitespace(raw.get());
    if depth > MAX_PAYLOAD_DEPTH {
        return Err(format!(
            "payload: nested {depth} levels deep, at most {MAX_PAYLOAD_DEPTH}"
        ));
    }
    if compact.len() > max {
        return Err(format!(
            "payload: {} {TOO_LARGE}, at most {max}",
            compact.len()
        ));
    }
    RawValue::from_string(compact).map_err(|e| format!("payload: {e}"))
}

/// `json` (already valid) with the whitespace between its tokens removed,
/// and how deep its arrays and objects nest. A JSON string cannot hold a raw
/// control character, so every newline, tab or carriage return found is
/// outside strings; spaces are kept inside them.
fn strip_insignificant_whitespace(json: &str) -> (String, usize) {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            match c {
                '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            out.push(c);
        }
    }
    (out, deepest)
}

fn created_instant(epoch_ms: f64, now: Instant, clock: &WallClock) -> Result<Instant, String> {
    let now_ms = clock.epoch_ms(now);
    if !epoch_ms.is_finite() || epoch_ms < 0.0 {
        return Err(format!(
            "createdAt: must be milliseconds since the Unix epoch, got {epoch_ms}"
        ));
    }
    if epoch_ms > now_ms + MAX_FUTURE_MS {
        return Err(format!(
            "createdAt: {:.0} ms in the future; at most {MAX_FUTURE_MS} ms of clock skew is accepted",
            epoch_ms - now_ms
        ));
    }
    clock
        .instant_at(epoch_ms)
        .ok_or_else(|| format!("createdAt: {epoch_ms} is too far in the past"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(100);

    fn parse(format: Format, body: &str) -> Result<Vec<Event>, Refusal> {
        let now = Instant::now();
        let clock = WallClock::anchored(now, 1_000_000_000.0);
        parse_batch(format, body.as_bytes(), now, &clock, DEADLINE)
    }

    #[test]
    fn one_object_an_array_and_ndjson_are_all_accepted() {
        assert_eq!(
            parse(Format::Json, r#"{"id":"a"}"#).expect("object").len(),
            1
        );
        assert_eq!(
            parse(Format::Json, r#"[{"id":"a"},{}]"#)
                .expect("array")
                .len(),
            2
        );
        assert_eq!(
            parse(Format::Ndjson, "{\"id\":\"a\"}\n\n{\"workMs\":5}\n")
                .expect("ndjson")
                .len(),
            2
        );
    }

    #[test]
    fn absent_fields_get_defaults() {
        let events = parse(Format::Json, "{}").expect("valid");
        assert_eq!(events[0].deadline, DEADLINE);
        assert_eq!(events[0].source, Source::Ingest);
        assert!(uuid::Uuid::parse_str(&events[0].id).is_ok());
        assert!(events[0].work.is_none());
    }

    #[test]
    fn a_bad_field_is_named_with_its_item_index() {
        let err =
            parse(Format::Json, r#"[{}, {"deadlineMs": -5}]"#).expect_err("negative deadline");
        assert_eq!(err.status, 400);
        assert!(
            err.message.contains("item 1") && err.message.contains("deadlineMs"),
            "{}",
            err.message
        );
        let err = parse(Format::Json, r#"[{"deadlinMs": 5}]"#).expect_err("typo");
        assert!(
            err.message.contains("item 0") && err.message.contains("deadlinMs"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_deadline_is_whole_milliseconds() {
        let err = parse(Format::Json, r#"{"deadlineMs": 30.5}"#).expect_err("fraction");
        assert_eq!(err.status, 400);
        assert!(
            err.message.contains("deadlineMs") && err.message.contains("whole"),
            "{}",
            err.message
        );
        let events = parse(
            Format::Json,
            r#"[{"deadlineMs": 30}, {"deadlineMs": 30.0}]"#,
        )
        .expect("whole numbers");
        assert!(
            events
                .iter()
                .all(|e| e.deadline == Duration::from_millis(30))
        );
    }

    #[test]
    fn created_at_far_in_the_future_is_refused() {
        let err = parse(Format::Json, r#"{"createdAt": 1000070000}"#).expect_err("70 s ahead");
        assert!(err.message.contains("createdAt"), "{}", err.message);
        assert!(parse(Format::Json, r#"{"createdAt": 1000030000}"#).is_ok());
    }

    #[test]
    fn a_large_payload_or_long_id_is_refused() {
        let big = format!(r#"{{"payload":"{}"}}"#, "x".repeat(5000));
        assert!(
            parse(Format::Json, &big)
                .expect_err("too big")
                .message
                .contains("payload")
        );
        let long = format!(r#"{{"id":"{}"}}"#, "i".repeat(129));
        assert!(
            parse(Format::Json, &long)
                .expect_err("too long")
                .message
                .contains("id")
        );
    }

    #[test]
    fn a_pretty_printed_payload_is_stored_on_one_line_exactly_as_posted() {
        let body = "{\"payload\": {\n  \"b\": [1,\n 2.50],\r\n\t\"a\": \"x y\\n\\\" z\"\n}}";
        let events = parse(Format::Json, body).expect("valid");
        let payload = events[0].payload.as_deref().expect("payload kept").get();
        assert_eq!(payload, r#"{"b":[1,2.50],"a":"x y\n\" z"}"#);
    }

    #[test]
    fn the_payload_limit_applies_to_the_compact_form() {
        let padded = format!(r#"{{"payload":{}"{}"}}"#, " ".repeat(5000), "x".repeat(100));
        assert!(parse(Format::Json, &padded).is_ok());
    }

    #[test]
    fn the_content_type_decides_the_format() {
        assert_eq!(
            format_of(Some("application/json; charset=utf-8")),
            Ok(Format::Json)
        );
        assert_eq!(format_of(Some("application/x-ndjson")), Ok(Format::Ndjson));
        assert_eq!(
            format_of(Some("text/plain"))
                .expect_err("wrong type")
                .status,
            415
        );
        assert_eq!(format_of(None).expect_err("missing").status, 415);
    }
}
