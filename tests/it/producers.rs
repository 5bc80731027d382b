//! Producers as they are: an HTML form's fields (`curl -d`), any webhook's
//! JSON at `POST /api/webhook/<producer>`, named producers, and the
//! per-producer view in stats and metrics with its bound of 32 names.

use crate::common;

use std::time::Duration;

use common::{eventually, get_json, http, outcome_of, post_events, start};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const FORM: &str = "application/x-www-form-urlencoded";

fn only_ingest(c: &mut punctual::Config) {
    c.rate = 0;
}

fn first_id(answer: &common::Response) -> String {
    assert_eq!(answer.status, 202, "{answer:?}");
    answer.json()["ids"][0].as_str().expect("an id").to_owned()
}

#[test]
fn a_curl_form_is_one_event_whose_fields_are_its_payload() {
    let server = start(only_ingest);
    let addr = server.local_addr();
    // What `curl -d 'name=Florian&message=hi' …/api/events` sends.
    let id = first_id(&post_events(addr, FORM, b"name=Florian&message=hi"));
    let o = outcome_of(addr, &id, WAIT);
    assert_eq!(
        o["payload"],
        json!({"name": "Florian", "message": "hi"}),
        "{o}"
    );
    assert_eq!(o["producer"], "ingest");

    let body = b"id=form-1&deadlineMs=750&producer=signup&tag=a&tag=b%20c&empty=";
    let id = first_id(&post_events(addr, FORM, body));
    assert_eq!(id, "form-1");
    let o = outcome_of(addr, &id, WAIT);
    assert_eq!(o["deadlineMs"], 750);
    assert_eq!(o["producer"], "signup");
    assert_eq!(
        o["payload"],
        json!({"tag": ["a", "b c"], "empty": ""}),
        "{o}"
    );

    for (bad, field) in [
        (&b"deadlineMs=soon"[..], "deadlineMs"),
        (b"deadlineMs=0", "deadlineMs"),
        (b"producer=", "producer"),
    ] {
        let refused = post_events(addr, FORM, bad);
        assert_eq!(refused.status, 400, "{refused:?}");
        assert!(
            refused.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains(field)),
            "{refused:?}"
        );
    }
    server.stop();
}

#[test]
fn a_webhook_takes_any_json_as_one_event_of_the_producer_in_its_path() {
    let server = start(only_ingest);
    let addr = server.local_addr();
    // A GitLab-style hook: fields punctual knows nothing of.
    let hook = json!({"object_kind": "pipeline", "object_attributes": {"status": "failed", "id": 31}, "commits": []});
    let answer = http(
        addr,
        "POST",
        "/api/webhook/gitlab?deadlineMs=800",
        &[
            ("Content-Type", "application/json"),
            ("X-Gitlab-Event", "Pipeline Hook"),
        ],
        hook.to_string().as_bytes(),
    );
    let o = outcome_of(addr, &first_id(&answer), WAIT);
    assert_eq!(
        (o["producer"].as_str(), o["deadlineMs"].as_u64()),
        (Some("gitlab"), Some(800))
    );
    assert_eq!(o["payload"], hook);

    // GitHub's "form" setting: the JSON in a payload field.
    let form = format!(
        "payload={}",
        urlencode(r#"{"zen":"Keep it logically awesome."}"#)
    );
    let answer = http(
        addr,
        "POST",
        "/api/webhook/github",
        &[("Content-Type", FORM)],
        form.as_bytes(),
    );
    let o = outcome_of(addr, &first_id(&answer), WAIT);
    assert_eq!(o["payload"]["zen"], "Keep it logically awesome.");

    // Bigger than an ingested payload may be: a webhook may take --max-body.
    let big = json!({"alerts": vec!["firing"; 1_000]});
    let answer = http(
        addr,
        "POST",
        "/api/webhook/alertmanager",
        &[("Content-Type", "application/json")],
        big.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    let huge = json!({"blob": "x".repeat(70_000)});
    let answer = http(
        addr,
        "POST",
        "/api/webhook/alertmanager",
        &[("Content-Type", "application/json")],
        huge.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    // Within --max-body, but no room left for the outcome's own fields.
    let huge = json!({"blob": "x".repeat(1024 * 1024 - 100)});
    let answer = http(
        addr,
        "POST",
        "/api/webhook/alertmanager",
        &[("Content-Type", "application/json")],
        huge.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 413, "{answer:?}");

    let cases: [(&str, &str, &[u8], u16); 5] = [
        ("POST", "/api/webhook/bad%20name", b"{}", 400),
        ("POST", "/api/webhook/", b"{}", 400),
        ("POST", "/api/webhook/ci?deadlineMs=soon", b"{}", 400),
        ("POST", "/api/webhook/ci", b"{not json", 400),
        ("GET", "/api/webhook/ci", b"", 405),
    ];
    for (method, path, body, status) in cases {
        let answer = http(
            addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body,
        );
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{answer:?}");
    }
    server.stop();
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn webhooks_need_the_token_when_one_is_set() {
    let server = start(|c| {
        c.rate = 0;
        c.token = Some("s3cret-s3cret-s3cret".into());
    });
    let addr = server.local_addr();
    let json_type = ("Content-Type", "application/json");
    let refused = http(addr, "POST", "/api/webhook/ci", &[json_type], b"{}");
    assert_eq!(refused.status, 401);
    let accepted = http(
        addr,
        "POST",
        "/api/webhook/ci",
        &[json_type, ("Authorization", "Bearer s3cret-s3cret-s3cret")],
        b"{}",
    );
    let id = first_id(&accepted);
    outcome_of(addr, &id, WAIT);
    // The refused hook changed nothing: one event entered, the accepted one.
    assert!(eventually(
        WAIT,
        || get_json(addr, "/api/stats").1["totals"]["ingested"] == 1
    ));
    server.stop();
}

#[test]
fn stats_and_metrics_break_outcomes_down_by_at_most_32_producers_and_other() {
    let server = start(only_ingest);
    let addr = server.local_addr();
    let batch: Vec<Value> = (0..40)
        .map(|n| json!({"producer": format!("team-{n:02}"), "deadlineMs": 1000, "workMs": 1}))
        .collect();
    let answer = post_events(
        addr,
        "application/json",
        Value::Array(batch).to_string().as_bytes(),
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    let mut producers = Vec::new();
    assert!(
        eventually(WAIT, || {
            producers = get_json(addr, "/api/stats").1["producers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let judged: u64 = producers
                .iter()
                .map(|p| p["onTime"].as_u64().unwrap_or(0))
                .sum();
            judged == 40
        }),
        "{producers:?}"
    );
    assert_eq!(producers.len(), 33, "32 named and other: {producers:?}");
    let other = producers
        .iter()
        .find(|p| p["name"] == "other")
        .expect("other");
    assert_eq!(other["onTime"], 8);
    let first = producers
        .iter()
        .find(|p| p["name"] == "team-00")
        .expect("team-00");
    assert_eq!(first["onTimePct"], 100.0);

    let metrics = http(addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let labels: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("punctual_producer_outcomes_total{"))
        .filter_map(|l| l.split("producer=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(labels.len(), 33, "{labels:?}");
    assert!(
        text.contains(
            r#"punctual_producer_outcomes_total{producer="team-00",status="on-time",reason=""} 1"#
        ),
        "{text}"
    );

    let refused = post_events(
        addr,
        "application/json",
        json!({"producer": "x".repeat(65)}).to_string().as_bytes(),
    );
    assert_eq!(refused.status, 400);
    server.stop();
}
