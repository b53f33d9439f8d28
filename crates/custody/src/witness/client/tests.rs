use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::outcome::{Answer, Step, classify, excerpt};
use super::*;

fn answer(status: u16, content_type: Option<&str>, body: &str) -> Answer {
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        content_type: content_type.map(str::to_string),
        retry_after: None,
        body: Ok(Bytes::from(body.to_string())),
    }
}

fn outcome(step: Step) -> Outcome {
    match step {
        Step::Done { outcome, .. } => outcome,
        other => panic!("expected a final outcome, got {other:?}"),
    }
}

#[test]
fn every_status_of_the_spec() {
    assert_eq!(
        classify(answer(200, Some("text/plain"), "x\n"), "o"),
        Step::Lines(Bytes::from("x\n"))
    );
    assert_eq!(
        classify(answer(409, Some("text/x.tlog.size"), "42\n"), "o"),
        Step::Resync(42)
    );
    // A size with another media type is still a size.
    assert_eq!(
        classify(answer(409, Some("text/plain"), "42\n"), "o"),
        Step::Resync(42)
    );
    // tlog-witness v1.0.0 answered 409 for the same size with another root, without a size.
    assert!(matches!(
        outcome(classify(answer(409, None, "conflict"), "o")),
        Outcome::Fork { .. }
    ));
    let fork = outcome(classify(
        answer(422, None, "the proof does not verify"),
        "o",
    ));
    assert!(fork.is_alarm());
    assert!(
        fork.to_string().contains("the proof does not verify"),
        "{fork}"
    );
    for s in [403, 404, 400, 413, 405] {
        assert!(
            matches!(
                outcome(classify(answer(s, None, ""), "log.example")),
                Outcome::Misconfigured { .. }
            ),
            "{s}"
        );
    }
    assert!(
        outcome(classify(answer(404, None, ""), "log.example"))
            .to_string()
            .contains("\"log.example\"")
    );
    let mut busy = answer(429, None, "slow down");
    busy.retry_after = Some(Duration::from_secs(7));
    match classify(busy, "o") {
        Step::Done {
            outcome: Outcome::Unavailable { retry_in, .. },
            backoff: true,
        } => assert_eq!(retry_in, Duration::from_secs(7)),
        other => panic!("{other:?}"),
    }
    for s in [500, 502, 503, 408] {
        assert!(
            matches!(
                classify(answer(s, None, ""), "o"),
                Step::Done {
                    outcome: Outcome::Unavailable { .. },
                    backoff: true
                }
            ),
            "{s}"
        );
    }
    assert!(matches!(
        outcome(classify(answer(302, None, ""), "o")),
        Outcome::Misconfigured { .. }
    ));
    let unreadable = Answer {
        status: StatusCode::OK,
        content_type: None,
        retry_after: None,
        body: Err("length limit exceeded".into()),
    };
    assert!(matches!(
        outcome(classify(unreadable, "o")),
        Outcome::Invalid { .. }
    ));
}

#[test]
fn excerpts_are_short_and_without_control_characters() {
    let long = format!("a\u{1b}[31mred\n{}", "x".repeat(1000));
    let e = excerpt(&Ok(Bytes::from(long)));
    assert!(!e.contains('\u{1b}'));
    assert!(e.len() < 260, "{}", e.len());
    assert_eq!(excerpt(&Ok(Bytes::new())), "(empty body)");
}

#[test]
fn alarms_are_forks_and_rollbacks_only() {
    assert!(
        Outcome::Rollback {
            witness_size: 9,
            size: 5
        }
        .is_alarm()
    );
    for o in [
        Outcome::Misconfigured {
            detail: String::new(),
        },
        Outcome::Invalid {
            detail: String::new(),
        },
        Outcome::Skipped {
            detail: String::new(),
        },
        Outcome::Unavailable {
            detail: String::new(),
            retry_in: Duration::ZERO,
        },
    ] {
        assert!(!o.is_alarm(), "{o}");
    }
}

/// The gateway spawns submissions on its runtime: the future must be `Send`.
#[allow(dead_code)]
fn submit_is_send(w: &Witnesses, p: Arc<dyn ConsistencyProofs>) -> impl Send + '_ {
    w.submit("", p)
}
