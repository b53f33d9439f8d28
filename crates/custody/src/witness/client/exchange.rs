//! Asking one witness to cosign one checkpoint: the add-checkpoint exchange with its
//! re-sync, the checks on a 200 answer, and the witness's backoff and alarms.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body_util::{BodyExt as _, Full, Limited};
use tlog::note::NoteSignature;
use tlog::witness::{AddCheckpoint, MAX_COSIGNATURE_RESPONSE_BYTES, parse_cosignature_lines};

use super::outcome::{Answer, Step, classify};
use super::{
    ConsistencyProofs, Inner, Job, MAX_BACKOFF, MAX_CLOCK_SKEW, MAX_RETRY_AFTER, Member, Outcome,
};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Member {
    /// An unavailable witness: backs off exponentially (1 s, 2 s, ... up to [`MAX_BACKOFF`]),
    /// or as long as it asked (bounded by [`MAX_RETRY_AFTER`]).
    fn fail(&self, detail: String, retry_after: Duration) -> Outcome {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        let exp = Duration::from_secs(1u64 << (s.failures - 1).min(5)).min(MAX_BACKOFF);
        let retry_in = retry_after.min(MAX_RETRY_AFTER).max(exp);
        s.retry_at = Some(Instant::now() + retry_in);
        Outcome::Unavailable { detail, retry_in }
    }

    fn alarm(&self, outcome: Outcome) -> Outcome {
        self.lock().alarm = Some(outcome.to_string());
        outcome
    }
}

impl Inner {
    pub(super) async fn attempt(
        &self,
        m: &Member,
        job: &Job,
        proofs: &dyn ConsistencyProofs,
    ) -> Outcome {
        let now = Instant::now();
        let mut old = {
            let s = m.lock();
            if let Some(a) = &s.alarm {
                return Outcome::Fork {
                    detail: format!("not asked again after an earlier alarm: {a}"),
                };
            }
            if let Some(t) = s.retry_at
                && now < t
            {
                return Outcome::Unavailable {
                    detail: format!(
                        "backing off after {} failure(s): {}",
                        s.failures,
                        s.last.as_deref().unwrap_or("")
                    ),
                    retry_in: t - now,
                };
            }
            if let Some(t) = s.last_sent
                && now.duration_since(t) < m.min_interval
            {
                return Outcome::Skipped {
                    detail: format!(
                        "asked at most once every {}",
                        humantime::format_duration(m.min_interval)
                    ),
                };
            }
            s.cosigned.unwrap_or(0)
        };
        let Ok(_busy) = m.busy.try_lock() else {
            return Outcome::Skipped {
                detail: "still answering an earlier checkpoint".into(),
            };
        };
        m.lock().last_sent = Some(now);
        for round in 0..2 {
            if old > job.size {
                return m.alarm(Outcome::Rollback {
                    witness_size: old,
                    size: job.size,
                });
            }
            let proof = if old == 0 || old == job.size {
                Vec::new()
            } else {
                match proofs.consistency(old, job.size).await {
                    Ok(p) => p,
                    Err(e) => {
                        return Outcome::Unavailable {
                            detail: format!(
                                "couldn't make the consistency proof from size {old} to {}: {e}",
                                job.size
                            ),
                            retry_in: Duration::ZERO,
                        };
                    }
                }
            };
            let body = AddCheckpoint {
                old,
                proof,
                checkpoint: job.note.clone(),
            }
            .encode();
            let answer = match self.post(m, body).await {
                Ok(a) => a,
                Err(e) => return m.fail(e, Duration::ZERO),
            };
            match classify(answer, &job.origin) {
                Step::Lines(body) => return self.accept(m, job, &body),
                Step::Done { outcome, backoff } => {
                    return match outcome {
                        Outcome::Unavailable { detail, retry_in } if backoff => {
                            m.fail(detail, retry_in)
                        }
                        o if o.is_alarm() => m.alarm(o),
                        o => o,
                    };
                }
                Step::Resync(size) if size == old => {
                    // A v1.0.0 witness answers a different root at the size it holds with 409
                    // naming that size; anything else naming the size sent makes no sense.
                    return if old == job.size {
                        m.alarm(Outcome::Fork {
                            detail: format!(
                                "409 naming the size sent ({old}), the checkpoint's own: a tlog-witness v1.0.0 witness holding a different root at this size"
                            ),
                        })
                    } else {
                        Outcome::Invalid {
                            detail: format!("409 naming the old size that was sent ({old})"),
                        }
                    };
                }
                Step::Resync(size) => {
                    let max = m.lock().max_cosigned;
                    if size < max {
                        return Outcome::Invalid {
                            detail: format!(
                                "it says it last cosigned size {size}, but it cosigned size {max} of this log before: it lost or rolled back its state, and its cosignatures no longer count"
                            ),
                        };
                    }
                    if round == 1 {
                        return Outcome::Unavailable {
                            detail: format!(
                                "its size moved again during the re-sync (to {size}); is another client feeding it this log?"
                            ),
                            retry_in: Duration::ZERO,
                        };
                    }
                    m.lock().cosigned = Some(size);
                    old = size;
                }
            }
        }
        unreachable!("the loop returns in its second round")
    }

    /// Checks a 200 answer: this witness's lines must verify over this exact checkpoint, at a
    /// time near ours.
    fn accept(&self, m: &Member, job: &Job, body: &[u8]) -> Outcome {
        let lines = match parse_cosignature_lines(body) {
            Ok(l) => l,
            Err(e) => {
                return Outcome::Invalid {
                    detail: format!("200 with a body that is not signature lines: {e}"),
                };
            }
        };
        let mine: Vec<&NoteSignature> = lines.iter().filter(|l| m.verifier.is_mine(l)).collect();
        if mine.is_empty() {
            let names: Vec<String> = lines
                .iter()
                .map(|l| format!("{} ({:08x})", l.name, l.key_id))
                .collect();
            return Outcome::Invalid {
                detail: format!(
                    "no cosignature by its key {} (lines of: {})",
                    m.verifier.to_key_string(),
                    names.join(", ")
                ),
            };
        }
        let mut best = None;
        for line in mine {
            match m.verifier.verify_line(&job.text, line) {
                Ok(t) => best = Some((line.clone(), t)),
                Err(e) => {
                    return Outcome::Invalid {
                        detail: format!(
                            "{e} (a cosignature of another checkpoint, or by another key)"
                        ),
                    };
                }
            }
        }
        let Some((signature, timestamp)) = best else {
            unreachable!("mine is not empty")
        };
        let now = unix_now();
        if timestamp.abs_diff(now) > MAX_CLOCK_SKEW.as_secs() {
            return Outcome::Invalid {
                detail: format!(
                    "its cosignature is dated {timestamp}, {} s from this gateway's clock ({now}); one of the two clocks is wrong",
                    timestamp.abs_diff(now)
                ),
            };
        }
        let mut s = m.lock();
        s.cosigned = Some(job.size);
        s.max_cosigned = s.max_cosigned.max(job.size);
        s.last_timestamp = Some(timestamp);
        s.failures = 0;
        s.retry_at = None;
        Outcome::Cosigned {
            signature,
            timestamp,
        }
    }

    /// POSTs an add-checkpoint body; the whole exchange is bounded by the timeout.
    async fn post(&self, m: &Member, body: String) -> Result<Answer, String> {
        let req = http::Request::post(m.endpoint.clone())
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("couldn't build the request: {e}"))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                format!("couldn't reach {}: {}", m.url, crate::net::error_chain(&e))
            })?;
            let status = resp.status();
            let header_text = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .map(str::to_string)
            };
            let content_type = header_text(header::CONTENT_TYPE);
            let retry_after = header_text(header::RETRY_AFTER)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = Limited::new(resp.into_body(), MAX_COSIGNATURE_RESPONSE_BYTES)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .map_err(|e| e.to_string());
            Ok(Answer {
                status,
                content_type,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ))
            })
    }
}
