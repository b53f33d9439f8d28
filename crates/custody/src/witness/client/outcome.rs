//! What one witness did with one checkpoint, and how an answer is read
//! (tlog-witness §add-checkpoint, current main, and the 409 of v1.0.0 witnesses).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tlog::note::NoteSignature;
use tlog::witness::{SIZE_CONTENT_TYPE, parse_size};

/// One witness's outcome for one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A cosignature that verified with the witness's key over this exact checkpoint.
    Cosigned {
        signature: NoteSignature,
        timestamp: u64,
    },
    /// ALARM: the witness cosigned a tree this checkpoint is not consistent with (422, or a
    /// 409 without a size from an older witness). Never retried: the witness saw a different
    /// history of this log. Sticky until the gateway restarts.
    Fork { detail: String },
    /// ALARM: the witness has cosigned a larger tree of this log than this checkpoint: the log
    /// went back (a restore from an old backup, or the log key signing elsewhere).
    Rollback { witness_size: u64, size: u64 },
    /// The witness refuses this log (403 untrusted key, 404 unknown origin, 400/413 and other
    /// client errors): its operator's or this gateway's configuration must change.
    Misconfigured { detail: String },
    /// Unreachable, timed out, busy (429) or failing (5xx); asked again after `retry_in`.
    Unavailable { detail: String, retry_in: Duration },
    /// An answer that does not hold: garbage, a cosignature by another key or over another
    /// checkpoint, a timestamp far from this gateway's clock, a witness that forgot what it
    /// cosigned. Ignored for the quorum and reported.
    Invalid { detail: String },
    /// Not asked this time: its `min_interval` has not passed, or it is still answering an
    /// earlier checkpoint.
    Skipped { detail: String },
}

impl Outcome {
    /// A fork or a rollback: signing must stop and a person must look.
    pub fn is_alarm(&self) -> bool {
        matches!(self, Self::Fork { .. } | Self::Rollback { .. })
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Cosigned { .. } => "cosigned",
            Self::Fork { .. } => "fork",
            Self::Rollback { .. } => "rollback",
            Self::Misconfigured { .. } => "misconfigured",
            Self::Unavailable { .. } => "unavailable",
            Self::Invalid { .. } => "invalid",
            Self::Skipped { .. } => "skipped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cosigned { timestamp, .. } => write!(f, "cosigned at {timestamp}"),
            Self::Fork { detail } => write!(f, "FORK: {detail}"),
            Self::Rollback { witness_size, size } => write!(
                f,
                "ROLLBACK: the witness has cosigned size {witness_size} of this log, larger than this checkpoint's {size}; the log lost entries it had published (restored from an old backup?)"
            ),
            Self::Misconfigured { detail } => write!(f, "misconfigured: {detail}"),
            Self::Unavailable { detail, retry_in } => write!(
                f,
                "unavailable: {detail}; next try in {}",
                humantime::format_duration(*retry_in)
            ),
            Self::Invalid { detail } => write!(f, "invalid answer: {detail}"),
            Self::Skipped { detail } => write!(f, "not asked: {detail}"),
        }
    }
}

/// An HTTP answer of a witness, or why there is none.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub retry_after: Option<Duration>,
    /// The body, or why it could not be read (too large, cut off).
    pub body: Result<Bytes, String>,
}

/// What to do after an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// 200: the body's lines are to be checked against the witness's key.
    Lines(Bytes),
    /// 409 with a size: send again from that size.
    Resync(u64),
    /// Any other answer, final for this checkpoint. `backoff` for the transient ones.
    Done { outcome: Outcome, backoff: bool },
}

/// The first `max` characters of a body, without control characters, for a message.
pub fn excerpt(body: &Result<Bytes, String>) -> String {
    match body {
        Ok(b) if b.is_empty() => "(empty body)".into(),
        Ok(b) => {
            let s: String = String::from_utf8_lossy(b)
                .chars()
                .take(200)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            format!("{:?}", s.trim())
        }
        Err(e) => format!("(body unreadable: {e})"),
    }
}

/// Classifies an answer to `add-checkpoint` (the status codes of §add-checkpoint).
pub fn classify(answer: Answer, origin: &str) -> Step {
    let text = excerpt(&answer.body);
    let status = answer.status;
    let done = |outcome, backoff| Step::Done { outcome, backoff };
    match status {
        StatusCode::OK => match answer.body {
            Ok(b) => Step::Lines(b),
            Err(e) => done(
                Outcome::Invalid {
                    detail: format!("200 with a body that could not be read: {e}"),
                },
                false,
            ),
        },
        StatusCode::CONFLICT => {
            let size = answer.body.as_deref().ok().and_then(parse_size);
            match size {
                Some(s) => {
                    if answer.content_type.as_deref() != Some(SIZE_CONTENT_TYPE) {
                        tracing::debug!(
                            "a witness answered 409 with a size but Content-Type {:?}",
                            answer.content_type
                        );
                    }
                    Step::Resync(s)
                }
                None => done(
                    Outcome::Fork {
                        detail: format!(
                            "409 without a size ({text}): a witness of tlog-witness v1.0.0 refusing a different root at the size it cosigned"
                        ),
                    },
                    false,
                ),
            }
        }
        StatusCode::UNPROCESSABLE_ENTITY => done(
            Outcome::Fork {
                detail: format!(
                    "422: the witness refuses this checkpoint as inconsistent with what it cosigned: {text}"
                ),
            },
            false,
        ),
        StatusCode::FORBIDDEN => done(
            Outcome::Misconfigured {
                detail: format!(
                    "403: the witness does not trust this log's key; its operator must accept the log's verifier key ({text})"
                ),
            },
            false,
        ),
        StatusCode::NOT_FOUND => done(
            Outcome::Misconfigured {
                detail: format!(
                    "404: the witness does not accept the log {origin:?}, or the URL is not its submission prefix ({text})"
                ),
            },
            false,
        ),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => done(
            Outcome::Unavailable {
                detail: format!("{status} {text}"),
                retry_in: answer.retry_after.unwrap_or_default(),
            },
            true,
        ),
        s if s.is_server_error() => done(
            Outcome::Unavailable {
                detail: format!("{status} {text}"),
                retry_in: answer.retry_after.unwrap_or_default(),
            },
            true,
        ),
        s => done(
            Outcome::Misconfigured {
                detail: format!("unexpected {s}: {text}"),
            },
            false,
        ),
    }
}
