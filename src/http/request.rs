//! Reading requests: headers, query parameters, bounded bodies, and JSON
//! parsing whose errors name the field at fault. Answers live in `reply`.

use std::borrow::Cow;
use std::io::Read;

use tiny_http::Request;

use super::reply::{Reply, error};

/// The value of query parameter `name` in `url`, percent-decoded as a form
/// (`%2C` is `,`, `+` is a space), if present; the first one wins when a name
/// repeats. A malformed escape such as `%ZZ` is kept as written, so the
/// parameter's own check names it.
pub fn query_param<'a>(url: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes()).find_map(|(key, value)| (key == name).then_some(value))
}

pub(super) fn header_value<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

pub(super) fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Parses JSON into `T`; the error names the field at fault (`rate: invalid value …`).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        match e.path().to_string() {
            path if path == "." => e.inner().to_string(),
            path => format!("{path}: {}", e.inner()),
        }
    })?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Reads a request body of at most `limit` bytes; a longer one is refused with 413.
pub(super) fn read_body(request: &mut Request, limit: u64) -> Result<Vec<u8>, Reply> {
    if request.body_length().is_some_and(|n| n as u64 > limit) {
        return Err(error(
            413,
            &format!("body too large: at most {limit} bytes"),
        ));
    }
    let mut body = Vec::new();
    match request.as_reader().take(limit + 1).read_to_end(&mut body) {
        Ok(_) if body.len() as u64 > limit => Err(error(
            413,
            &format!("body too large: at most {limit} bytes"),
        )),
        Ok(_) => Ok(body),
        Err(e) => Err(error(400, &format!("could not read the body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_by_name() {
        assert_eq!(
            query_param("/ws?stats=1&since=4", "stats").as_deref(),
            Some("1")
        );
        assert_eq!(
            query_param("/ws?stats=1&since=4", "since").as_deref(),
            Some("4")
        );
        assert_eq!(query_param("/ws?flag", "flag").as_deref(), Some(""));
        assert_eq!(query_param("/ws", "stats"), None);
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        let url = "/events?status=late%2Cdropped&tag=a+b&s%74ats=1&bad=%ZZ";
        assert_eq!(query_param(url, "status").as_deref(), Some("late,dropped"));
        assert_eq!(query_param(url, "tag").as_deref(), Some("a b"));
        assert_eq!(query_param(url, "stats").as_deref(), Some("1"));
        assert_eq!(query_param(url, "bad").as_deref(), Some("%ZZ"));
    }

    #[test]
    fn header_tokens_are_matched_case_insensitively_in_lists() {
        assert!(has_token(Some("keep-alive, Upgrade"), "upgrade"));
        assert!(!has_token(Some("keep-alive"), "upgrade"));
        assert!(!has_token(None, "upgrade"));
    }
}
