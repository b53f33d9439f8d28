//! Deciding a held call: who may, how many, and what each decision records.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::audit::{Kind, Mark};
use crate::identity::{Principal, PrincipalKind};

pub(super) fn same_person(a: &Principal, b: &Principal) -> bool {
    a.kind == b.kind && a.issuer == b.issuer && a.subject == b.subject
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Approve,
    Deny,
}

/// Why a decision was not taken. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(
        "there is no approval {0}: check the id with `custody approvals list` (only approvals you may decide are listed)"
    )]
    NotFound(String),
    #[error("approval {id} is already {state}; nothing was changed")]
    Finished { id: String, state: &'static str },
    #[error(
        "approving needs an identity: send an approver's bearer token (anonymous callers never approve)"
    )]
    Anonymous,
    #[error(
        "{who} may not decide {method} of {target:?} on endpoint {endpoint:?}: the name is not in [approvals] approvers and no policy permits Action::\"approve\" for it"
    )]
    NotApprover {
        who: String,
        method: String,
        target: String,
        endpoint: String,
    },
    #[error("{0} asked for this call and cannot approve it; another approver must")]
    SelfApproval(String),
    #[error(
        "{who} has already approved {id}; it needs {needed} distinct approvers ({have} so far)"
    )]
    AlreadyVoted {
        who: String,
        id: String,
        needed: u32,
        have: usize,
    },
    #[error(
        "the held call's arguments have SHA-256 {actual}, not {expected}: look at it again with `custody approvals show {id}`"
    )]
    DigestMismatch {
        id: String,
        expected: String,
        actual: String,
    },
    #[error("a denial needs a reason (--reason TEXT): the pipeline's job shows it")]
    ReasonRequired,
    #[error("the decision could not be recorded, so it was not taken: {0}")]
    Audit(AuditError),
}

impl DecideError {
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            DecideError::NotFound(_) => S::NOT_FOUND,
            DecideError::Finished { .. }
            | DecideError::AlreadyVoted { .. }
            | DecideError::DigestMismatch { .. } => S::CONFLICT,
            DecideError::Anonymous => S::UNAUTHORIZED,
            DecideError::NotApprover { .. } | DecideError::SelfApproval(_) => S::FORBIDDEN,
            DecideError::ReasonRequired => S::BAD_REQUEST,
            DecideError::Audit(_) => S::SERVICE_UNAVAILABLE,
        }
    }
}

impl Approvals {
    /// Takes `who`'s decision on approval `id`. `expect_digest`, when given, must be the held
    /// call's argument digest (the approver approves what they looked at).
    ///
    /// # Errors
    /// [`DecideError`]; nothing changes.
    pub async fn decide(
        &self,
        id: &str,
        who: &Principal,
        verb: Verb,
        reason: Option<String>,
        expect_digest: Option<&str>,
    ) -> Result<Arc<Pending>, DecideError> {
        if who.kind == PrincipalKind::Anonymous {
            return Err(DecideError::Anonymous);
        }
        let not_found = || DecideError::NotFound(id.to_string());
        let pending = self.find(id).ok_or_else(not_found)?;
        // Policy is asked once: whoever may not decide it sees it only if they asked for it.
        let authorized = self.authorized(who, &pending);
        if !authorized && !same_person(who, &pending.requester) {
            return Err(not_found());
        }
        if !authorized {
            return Err(DecideError::NotApprover {
                who: who.name.clone(),
                method: pending.method.clone(),
                target: pending.target.clone().unwrap_or_default(),
                endpoint: pending.endpoint.to_string(),
            });
        }
        let reason = reason.filter(|r| !r.trim().is_empty());
        if verb == Verb::Deny && reason.is_none() {
            return Err(DecideError::ReasonRequired);
        }
        if verb == Verb::Approve && same_person(who, &pending.requester) {
            return Err(DecideError::SelfApproval(who.name.clone()));
        }
        if let Some(expected) = expect_digest
            && !expected.eq_ignore_ascii_case(&pending.digest)
        {
            return Err(DecideError::DigestMismatch {
                id: pending.id.clone(),
                expected: expected.to_string(),
                actual: pending.digest.clone(),
            });
        }
        let mut state = pending.state.lock().await;
        let State::Pending { votes } = &*state else {
            return Err(DecideError::Finished {
                id: pending.id.clone(),
                state: state.name(),
            });
        };
        if now_ns() >= pending.expires_ns {
            // The waiter's timer records the expiry.
            return Err(DecideError::Finished {
                id: pending.id.clone(),
                state: "expired",
            });
        }
        let vote = Vote {
            approver: who.name.clone(),
            reason: reason.clone(),
            time_ns: now_ns(),
            who: (who.issuer.clone(), who.subject.clone()),
        };
        let (kind, next, resolution) = match verb {
            Verb::Approve => {
                if votes.iter().any(|v| v.who == vote.who) {
                    return Err(DecideError::AlreadyVoted {
                        who: who.name.clone(),
                        id: pending.id.clone(),
                        needed: pending.min_approvals,
                        have: votes.len(),
                    });
                }
                let mut votes = votes.clone();
                votes.push(vote);
                let released = votes.len() >= pending.min_approvals as usize;
                let approvers: Vec<String> = votes.iter().map(|v| v.approver.clone()).collect();
                if released {
                    (
                        Kind::ApprovalGranted,
                        State::Granted { votes },
                        Some(Resolution::Granted { approvers }),
                    )
                } else {
                    (Kind::ApprovalGranted, State::Pending { votes }, None)
                }
            }
            Verb::Deny => (
                Kind::ApprovalDenied,
                State::Denied { vote },
                Some(Resolution::Denied {
                    approver: who.name.clone(),
                    reason: reason.clone().unwrap_or_default(),
                }),
            ),
        };
        let count = match &next {
            State::Pending { votes } | State::Granted { votes } => votes.len(),
            _ => 0,
        };
        let mut detail = json!({
            "approval": pending.id,
            "approver": who.name,
            "reason": reason,
            "arguments_sha256": pending.digest,
        });
        if verb == Verb::Approve {
            detail["approvals"] = json!(count);
            detail["min_approvals"] = json!(pending.min_approvals);
            detail["released"] = json!(resolution.is_some());
        }
        let mark = resolution
            .is_some()
            .then(|| Mark::Close(pending.id.clone()));
        let draft = pending.draft(kind, who.audit.clone(), detail, mark);
        self.audit.append(draft).await.map_err(DecideError::Audit)?;
        pending.set(&mut state, next);
        drop(state);
        tracing::info!(
            approval = %pending.id,
            approver = %who.name,
            "{}",
            kind.name()
        );
        if let Some(r) = resolution {
            self.retire(&pending.id);
            pending.resolved.send_replace(Some(r));
        }
        Ok(pending)
    }
}
