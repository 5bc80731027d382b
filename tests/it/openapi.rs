//! Keeps `docs/openapi.yaml` true: every route the README names is in it with
//! its methods, every documented path and method is answered (not 404/405),
//! every other method gets 405 with an `Allow` naming exactly the documented
//! ones, and each answer the test can provoke has a documented status and,
//! for JSON, the fields its schema requires.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

const METHODS: [&str; 6] = ["get", "put", "post", "delete", "patch", "options"];

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("read docs/openapi.yaml");
    serde_norway::from_str(&text).expect("docs/openapi.yaml is valid YAML")
}

/// `(path, method)` for every documented operation, method lower-case.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut ops = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.push((path.clone(), method.to_owned()));
            }
        }
    }
    ops
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').expect("local $ref");
        node = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"));
    }
    node
}

/// A small schema check: `type`, `required`, `properties`, `items`, `enum`,
/// `oneOf` and `additionalProperties: false` — what the document uses.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
        let passing = choices
            .iter()
            .filter(|choice| conforms(doc, choice, value, at).is_ok())
            .count();
        return match passing {
            1 => Ok(()),
            n => Err(format!("{at}: matches {n} of the oneOf choices: {value}")),
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    // OpenAPI 3.0 spells "or null" as `nullable: true` beside the type.
    let nullable = schema.get("nullable") == Some(&Value::Bool(true));
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some(_) if nullable && value.is_null() => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => return Err(format!("{at}: schema type {other} unknown to this check")),
    };
    if !type_ok {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("required names are strings");
            if !object.contains_key(name) {
                return Err(format!("{at}: required field {name:?} missing in {value}"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let declared = properties.and_then(|p| p.get(name));
            match (declared, schema.get("additionalProperties")) {
                (Some(field_schema), _) => {
                    conforms(doc, field_schema, field, &format!("{at}.{name}"))?
                }
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{at}: field {name:?} is not documented"));
                }
                (None, Some(extra)) if extra.is_object() => {
                    conforms(doc, extra, field, &format!("{at}.{name}"))?
                }
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            conforms(doc, schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Checks that `status` is documented for the operation and, when the
/// documented answer is JSON, that `body` fits its schema.
fn check_answer(doc: &Value, path: &str, method: &str, status: u16, body: &[u8]) {
    let operation = &doc["paths"][path][method];
    let responses = &operation["responses"];
    let Some(response) = responses.get(status.to_string()) else {
        panic!("{method} {path} answered {status}, which the document does not list");
    };
    let response = resolve(doc, response);
    if let Some(schema) = response.pointer("/content/application~1json/schema") {
        let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} {status}: not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        });
        if let Err(e) = conforms(doc, schema, &value, "body") {
            panic!("{method} {path} {status}: {e}");
        }
    }
}

/// A request that a documented operation should answer with success: its
/// status, its `Content-Type` (none for the streams) and its body.
fn exercise(addr: SocketAddr, path: &str, method: &str) -> (u16, Option<String>, Vec<u8>) {
    // A templated path is exercised with a valid value for its parameter.
    let concrete = path.replace("{producer}", "docs");
    let path = concrete.as_str();
    let json = [("Content-Type", "application/json")];
    let response = match (method, path) {
        ("get", "/ws") => {
            let mut client = common::connect(addr, "/ws?stats=1");
            let stats = common::next_stats(&mut client, Duration::from_secs(10));
            return (101, None, serde_json::to_vec(&stats).expect("json"));
        }
        ("get", "/api/work") => {
            // Served by a daemon in pull mode only: a worker connects to one.
            let pulling = common::start(|c| c.work = punctual::WorkMode::Pull);
            let url = format!("ws://{}/api/work?credit=2", pulling.local_addr());
            let (_worker, response) = tungstenite::connect(url).expect("a worker connects");
            let status = response.status().as_u16();
            pulling.stop();
            return (status, None, Vec::new());
        }
        ("get", "/events") => {
            let stream = common::open_event_stream(addr, "/events", &[]);
            return (stream.status, None, Vec::new());
        }
        ("post", _) => common::http(addr, "POST", path, &json, br#"[{"id":"doc"},{}]"#),
        ("put", _) => common::http(addr, "PUT", path, &json, br#"{"admission":"on"}"#),
        (other, _) => common::http(addr, &other.to_ascii_uppercase(), path, &[], b""),
    };
    let content_type = response
        .header("content-type")
        .unwrap_or_else(|| panic!("{method} {path} answered without a Content-Type"))
        .to_owned();
    (response.status, Some(content_type), response.body)
}

/// Checks that the answer's media type is one the document lists for it.
fn check_content_type(doc: &Value, path: &str, method: &str, status: u16, content_type: &str) {
    let response = resolve(
        doc,
        &doc["paths"][path][method]["responses"][status.to_string()],
    );
    let media = |t: &str| t.split(';').next().unwrap_or(t).trim().to_ascii_lowercase();
    let documented: Vec<String> = response["content"]
        .as_object()
        .map(|c| c.keys().map(|k| media(k)).collect())
        .unwrap_or_default();
    assert!(
        documented.contains(&media(content_type)),
        "{method} {path} {status} answered {content_type}; the document lists {documented:?}"
    );
}

fn wait_for_first_snapshot(addr: SocketAddr) {
    assert!(
        common::eventually(Duration::from_secs(10), || {
            common::http(addr, "GET", "/api/stats", &[], b"").status == 200
        }),
        "no stats snapshot within 10 s"
    );
}

#[test]
fn every_route_in_the_readme_is_documented_with_its_methods() {
    let doc = document();
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().collect();
    let mut named = 0;
    for cell in readme.split('`') {
        let mut words = cell.split_whitespace();
        let (Some(method), Some(target), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if !["GET", "POST", "PUT"].contains(&method) || !target.starts_with('/') {
            continue;
        }
        // The README writes a path parameter as `<name>`, the document as `{name}`.
        let path = target
            .split('?')
            .next()
            .unwrap_or(target)
            .replace('<', "{")
            .replace('>', "}");
        let key = (path, method.to_ascii_lowercase());
        assert!(
            documented.contains(&key),
            "README names {cell:?}; docs/openapi.yaml does not"
        );
        named += 1;
    }
    assert!(named >= 10, "only {named} routes found in the README");
}

#[test]
fn every_documented_operation_is_answered_as_documented() {
    let doc = document();
    let server = common::start(|c| c.rate = 50);
    let addr = server.local_addr();
    wait_for_first_snapshot(addr);
    let ops = operations(&doc);
    assert!(ops.len() >= 16, "only {} operations documented", ops.len());
    for (path, method) in &ops {
        let (status, content_type, body) = exercise(addr, path, method);
        assert!(
            status != 404 && status != 405,
            "{method} {path} is documented but answered {status}"
        );
        assert!(status < 300, "{method} {path} answered {status}");
        check_answer(&doc, path, method, status, &body);
        if let Some(content_type) = content_type {
            check_content_type(&doc, path, method, status, &content_type);
        }
        if path == "/ws" {
            // A stream's messages are documented as schemas of their own.
            let message: Value = serde_json::from_slice(&body).expect("stats message");
            let stats = &doc["components"]["schemas"]["Stats"];
            conforms(&doc, stats, &message, "stats message").unwrap_or_else(|e| panic!("{e}"));
        }
    }
    server.stop();
}

#[test]
fn an_undocumented_method_gets_405_naming_the_documented_ones() {
    let doc = document();
    let server = common::start(|_| {});
    let addr = server.local_addr();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let documented: Vec<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in METHODS.map(str::to_ascii_uppercase) {
            if documented.contains(&method) {
                continue;
            }
            let r = common::http(addr, &method, path, &[], b"");
            assert_eq!(r.status, 405, "{method} {path}");
            let allow: BTreeSet<&str> = r
                .header("allow")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .collect();
            let expected: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
            assert_eq!(allow, expected, "Allow of {path}");
            let error = r.json();
            assert!(error["error"].is_string(), "{method} {path}: {error}");
        }
    }
    let r = common::http(addr, "GET", "/no/such/route", &[], b"");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    server.stop();
}

/// A request and the status it must get: method, target, headers, body, status.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8], u16);

#[test]
fn refusals_have_documented_statuses_and_error_bodies() {
    let doc = document();
    let server = common::start(|c| {
        c.max_body = 64;
        c.token = Some("sesame-sesame-sesame".into());
    });
    let addr = server.local_addr();
    let bearer = ("Authorization", "Bearer sesame-sesame-sesame");
    let json = ("Content-Type", "application/json");
    let cases: Vec<Case> = vec![
        ("get", "/api/events?since=x", vec![], b"", 400),
        ("get", "/api/events?limit=-1", vec![], b"", 400),
        ("get", "/events?status=bogus", vec![], b"", 400),
        ("get", "/events", vec![("Last-Event-ID", "x")], b"", 400),
        ("get", "/ws", vec![], b"", 400),
        ("post", "/api/events", vec![json], b"{}", 401),
        (
            "post",
            "/api/events",
            vec![bearer, json],
            b"{\"deadlineMs\":-1}",
            400,
        ),
        (
            "post",
            "/api/events",
            vec![bearer, ("Content-Type", "text/plain")],
            b"{}",
            415,
        ),
        ("post", "/api/events", vec![bearer, json], &[b' '; 100], 413),
        ("put", "/api/config", vec![json], b"{}", 401),
        (
            "put",
            "/api/config",
            vec![bearer, json],
            b"{\"rate\":-1}",
            400,
        ),
        (
            "put",
            "/api/config",
            vec![bearer, json],
            b"{\"rat\":1}",
            400,
        ),
        ("put", "/api/config", vec![bearer], b"{}", 415),
    ];
    for (method, target, headers, body, expected) in cases {
        let path = target.split('?').next().unwrap_or(target);
        let r = common::http(addr, &method.to_ascii_uppercase(), target, &headers, body);
        assert_eq!(r.status, expected, "{method} {target}: {:?}", r.json());
        check_answer(&doc, path, method, r.status, &r.body);
    }
    server.stop();
}

#[test]
fn the_schema_check_catches_a_missing_field_and_a_wrong_type() {
    let doc = document();
    let error = &doc["components"]["schemas"]["Error"];
    assert!(conforms(&doc, error, &serde_json::json!({"error": "x"}), "b").is_ok());
    assert!(conforms(&doc, error, &serde_json::json!({"message": "x"}), "b").is_err());
    let stats = &doc["components"]["schemas"]["Stats"];
    let mut sample = serde_json::json!({"type": "stats"});
    assert!(conforms(&doc, stats, &sample, "b").is_err());
    sample = serde_json::json!([1]);
    assert!(conforms(&doc, stats, &sample, "b").is_err());
}
