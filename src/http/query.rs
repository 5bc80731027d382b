//! Query strings: what a request's URL asks for.
//!
//! Owns the reading of a streaming client's wishes (`stats`, `epoch` +
//! `since`, `replay`, `status`, and an SSE `Last-Event-ID`) into a fan-out
//! [`Interest`], and of the `GET /api/events` page (`since`, `limit`,
//! `epoch`). Pure
//! functions over the URL, so the routes and the fuzz targets call the same
//! code. Reads and writes no channel.
//!
//! Must not know: sockets, the fan-out's insides.

use super::request::query_param;
use crate::delivery::{Interest, Resume};
use crate::epoch::{Epoch, Position};

/// The outcome statuses a filter may name.
const STATUSES: [&str; 4] = ["on-time", "late", "failed", "dropped"];

/// Most outcomes `GET /api/events` returns when no `limit` is given.
pub(crate) const DEFAULT_EVENTS_LIMIT: usize = 1000;

fn non_negative(name: &str, value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{name}: expected a non-negative integer, got {value:?}"))
}

/// Reads a streaming client's wishes from its URL; `resume_from` is an SSE
/// `Last-Event-ID` (`EPOCH:SEQ`), which wins over `since`. `history` caps `replay`.
pub(crate) fn interest(
    url: &str,
    resume_from: Option<&str>,
    history: usize,
) -> Result<Interest, String> {
    let epoch = epoch_param(url)?;
    let resume = match (
        resume_from,
        query_param(url, "since"),
        query_param(url, "replay"),
    ) {
        (Some(id), _, _) => {
            Resume::Since(Position::parse_event_id(id).map_err(|e| format!("Last-Event-ID: {e}"))?)
        }
        (None, Some(since), _) => Resume::Since(Position {
            epoch,
            seq: non_negative("since", &since)?,
        }),
        (None, None, _) if epoch.is_some() => {
            return Err("epoch: goes with since=SEQ, the last seq seen in that run".into());
        }
        (None, None, Some(n)) => Resume::Last(
            usize::try_from(non_negative("replay", &n)?)
                .unwrap_or(usize::MAX)
                .min(history),
        ),
        (None, None, None) => Resume::Live,
    };
    let statuses = match query_param(url, "status") {
        None => None,
        Some(list) => Some(status_filter(&list)?),
    };
    let stats = query_param(url, "stats").as_deref() == Some("1");
    let control =
        stats || resume != Resume::Live || query_param(url, "control").as_deref() == Some("1");
    Ok(Interest {
        stats,
        control,
        resume,
        statuses,
    })
}

/// The `epoch` query parameter, checked (`None` when absent).
fn epoch_param(url: &str) -> Result<Option<Epoch>, String> {
    query_param(url, "epoch")
        .map(|e| Epoch::parse(&e).map_err(|e| format!("epoch: {e}")))
        .transpose()
}

fn status_filter(list: &str) -> Result<Vec<String>, String> {
    let wanted: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    match wanted.iter().find(|s| !STATUSES.contains(&s.as_str())) {
        Some(bad) => Err(format!(
            "status: unknown status {bad:?}; use on-time, late, failed, dropped"
        )),
        None => Ok(wanted),
    }
}

/// The `deadlineMs` and `workMs` of `POST /api/webhook/<producer>`, as
/// numbers (validated with the event).
pub(crate) fn webhook(url: &str) -> Result<(Option<f64>, Option<f64>), String> {
    let number = |name: &str| {
        query_param(url, name)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{name}: expected a number, got {v:?}"))
            })
            .transpose()
    };
    Ok((number("deadlineMs")?, number("workMs")?))
}

/// The `credit` of `GET /api/work?credit=N`: tasks a worker takes at once,
/// 1 when absent, between 1 and `max`.
pub(crate) fn credit(url: &str, max: usize) -> Result<usize, String> {
    let Some(value) = query_param(url, "credit") else {
        return Ok(1);
    };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "credit: expected a whole number from 1 to {max} (tasks at once), got {value:?}"
        )),
    }
}

/// The `since`, `limit` and `epoch` of `GET /api/events?since=SEQ&epoch=E&limit=N`.
pub(crate) fn events_page(url: &str) -> Result<(u64, usize, Option<Epoch>), String> {
    let since = match query_param(url, "since") {
        None => 0,
        Some(v) => non_negative("since", &v)?,
    };
    let limit = match query_param(url, "limit") {
        None => DEFAULT_EVENTS_LIMIT,
        Some(v) => usize::try_from(non_negative("limit", &v)?).unwrap_or(usize::MAX),
    };
    Ok((since, limit, epoch_param(url)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_defaults_to_one_and_stays_in_range() {
        assert_eq!(credit("/api/work", 8), Ok(1));
        assert_eq!(credit("/api/work?credit=8", 8), Ok(8));
        for bad in ["0", "9", "-1", "two", ""] {
            let err = credit(&format!("/api/work?credit={bad}"), 8).expect_err(bad);
            assert!(err.starts_with("credit:"), "{err}");
        }
    }

    #[test]
    fn last_event_id_wins_over_since_and_replay_is_capped_by_the_history() {
        let interest = interest("/events?since=5&stats=1", Some("9"), 10).expect("valid");
        let nine = Position {
            epoch: None,
            seq: 9,
        };
        assert_eq!(interest.resume, Resume::Since(nine));
        assert!(interest.stats);
        let interest = interest_of("/ws?replay=99999999999999999999");
        assert!(interest.is_err(), "beyond u64 is refused");
        let interest = interest_of("/ws?replay=500").expect("valid");
        assert_eq!(interest.resume, Resume::Last(10));
    }

    fn interest_of(url: &str) -> Result<Interest, String> {
        interest(url, None, 10)
    }

    #[test]
    fn an_unknown_status_is_named() {
        let err = interest_of("/ws?status=late,bogus").expect_err("unknown");
        assert!(err.contains("\"bogus\""), "{err}");
        let ok = interest_of("/ws?status=late,,dropped").expect("valid");
        assert_eq!(ok.statuses, Some(vec!["late".into(), "dropped".into()]));
    }

    #[test]
    fn the_events_page_has_defaults_and_names_a_bad_number() {
        assert_eq!(
            events_page("/api/events"),
            Ok((0, DEFAULT_EVENTS_LIMIT, None))
        );
        assert_eq!(events_page("/api/events?since=3&limit=2"), Ok((3, 2, None)));
        let err = events_page("/api/events?limit=-1").expect_err("negative");
        assert!(err.starts_with("limit:"), "{err}");
    }

    fn resume(url: &str, last_event_id: Option<&str>) -> Result<Resume, String> {
        interest(url, last_event_id, 100).map(|i| i.resume)
    }

    fn position(epoch: Option<&str>, seq: u64) -> Resume {
        Resume::Since(Position {
            epoch: epoch.map(|e| Epoch::parse(e).expect("valid epoch")),
            seq,
        })
    }

    #[test]
    fn a_resume_names_its_run_by_epoch_and_since() {
        assert_eq!(
            resume("/ws?epoch=ab12&since=7", None),
            Ok(position(Some("ab12"), 7))
        );
        assert_eq!(resume("/ws?since=7", None), Ok(position(None, 7)));
        assert_eq!(resume("/ws", None), Ok(Resume::Live));
    }

    #[test]
    fn last_event_id_wins_over_the_query_and_may_carry_the_epoch() {
        assert_eq!(
            resume("/events?epoch=old&since=3", Some("new:9")),
            Ok(position(Some("new"), 9))
        );
        assert_eq!(resume("/events", Some("12")), Ok(position(None, 12)));
    }

    #[test]
    fn bad_epochs_and_seqs_are_refused_naming_the_parameter() {
        let error = |url, id| resume(url, id).expect_err(url);
        assert!(error("/ws?epoch=a%20b&since=1", None).starts_with("epoch: "));
        assert!(error("/ws?epoch=&since=1", None).starts_with("epoch: "));
        assert!(error("/ws?epoch=ab12", None).starts_with("epoch: "));
        assert!(error("/ws?epoch=ab12&since=x", None).starts_with("since: "));
        assert!(error("/events", Some("ab12:x")).starts_with("Last-Event-ID: "));
        assert!(error("/events", Some("a b:1")).starts_with("Last-Event-ID: "));
    }
}
