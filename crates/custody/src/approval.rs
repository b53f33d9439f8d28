//! Just-in-time approval: a call policy marks `@approval("required")` waits in the request flow
//! until enough people approve it, someone denies it, it expires, or its client goes away.
//!
//! [`Approvals`] holds the pending approvals. Each is a small state machine
//! ([`State`]) behind its own lock; whoever moves it out of `Pending` (an approver, the expiry
//! timer, the client leaving, the gateway stopping) records the entry that says so while holding
//! the lock, so exactly one ending is logged and the log is written before anyone acts on it.
//! The held call itself waits in the relay (`relay/hold.rs`) on [`Pending::wait`].
//!
//! An approval is bound to the principal, endpoint, method, target and argument digest of the
//! call that created it, and to its expiry: the relay checks all of them again before it
//! releases the call ([`Pending::releases`]).

mod decide;
mod digest;
mod elsewhere;
mod listing;
mod notify;
mod remote;
mod state;

use decide::same_person;
pub use decide::{DecideError, Verb};
pub(crate) use digest::canonical;
pub use digest::digest;
pub use remote::{Answered, Remote};
pub use state::{Ending, Resolution, State, Vote};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::audit::{Appended, Audit, AuditError, Direction, Draft, Kind, Mark, Unfinished, now_ns};
use crate::config::{ApprovalsConfig, ShowArguments};
use crate::identity::{Principal, PrincipalKind};
use crate::policy::{Engine, Held, Verdict};

/// How many finished approvals are kept for `show`.
const RECENT: usize = 256;

/// What the relay knows about a call it holds.
pub struct Ask<'a> {
    pub requester: Arc<Principal>,
    pub endpoint: Arc<str>,
    pub session: Option<Arc<str>>,
    /// The JSON-RPC id, as JSON text.
    pub rpc_id: Option<String>,
    pub method: &'a str,
    pub target: Option<&'a str>,
    /// The arguments as sent: the digest binds them; policy on `approve` reads them.
    pub arguments: Option<&'a Value>,
    /// The arguments as sent with the credentials the gateway holds scrubbed (`None` when
    /// there were none), and how many were.
    pub scrubbed_arguments: Option<Value>,
    pub credentials_hidden: usize,
    /// The arguments as the log stores them (masked), and how many values are masked.
    pub masked_arguments: Value,
    pub masked_hidden: usize,
    pub min_approvals: u32,
    pub policies: Vec<String>,
    /// The held request's entry.
    pub request: Appended,
}

/// The arguments of a call while it waits.
struct HeldArguments {
    /// As sent (what the digest binds).
    arguments: Option<Value>,
    /// As sent with the gateway's credentials scrubbed, when that changed anything.
    scrubbed: Option<Value>,
    credentials_hidden: usize,
}

/// A call waiting for its approval.
pub struct Pending {
    pub id: String,
    pub requester: Arc<Principal>,
    pub endpoint: Arc<str>,
    pub session: Option<Arc<str>>,
    pub rpc_id: Option<String>,
    pub method: String,
    pub target: Option<String>,
    /// The arguments as the log stores them, and how many values are masked in them.
    pub masked_arguments: Value,
    pub masked_hidden: usize,
    /// What approvers see (`approvals.show`).
    show: ShowArguments,
    /// The arguments as sent, while the approval is pending: in memory only, dropped when it
    /// ends (the log keeps its masked copy).
    held: Mutex<Option<HeldArguments>>,
    pub digest: String,
    pub requested_ns: u64,
    pub expires_ns: u64,
    pub min_approvals: u32,
    pub policies: Vec<String>,
    pub request_entry: u64,
    state: tokio::sync::Mutex<State>,
    /// A snapshot of `state` for readers that must not wait.
    snapshot: Mutex<State>,
    resolved: watch::Sender<Option<Resolution>>,
}

impl Pending {
    /// Waits until the approval is over, and says how it ended.
    pub async fn wait(&self) -> Resolution {
        let mut rx = self.resolved.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or_else(|| unreachable!("waited for Some")),
            // The sender lives in `self`: it cannot be gone while we borrow it.
            Err(_) => Resolution::Ended {
                ending: Ending::Abandoned,
                reason: "the approval was dropped".into(),
            },
        }
    }

    /// Does this approval release a call by `principal` to `endpoint`, `method` on `target`
    /// with `arguments`, now? Every binding is checked again, whatever created the approval.
    pub fn releases(
        &self,
        principal: &Principal,
        endpoint: &str,
        method: &str,
        target: Option<&str>,
        arguments: Option<&Value>,
    ) -> bool {
        same_person(principal, &self.requester)
            && principal.binding == self.requester.binding
            && *self.endpoint == *endpoint
            && self.method == method
            && self.target.as_deref() == target
            && self.digest == digest(arguments)
            && now_ns() < self.expires_ns
            && matches!(self.state(), State::Granted { .. })
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How long until it expires.
    pub fn remaining(&self) -> Duration {
        Duration::from_nanos(self.expires_ns.saturating_sub(now_ns()))
    }

    /// The approval as the approvals API shows it: the arguments as `approvals.show` says
    /// while it is pending (once it has ended, the log's masked copy).
    pub fn to_json(&self) -> Value {
        self.to_json_as(self.show)
    }

    /// The approval with the log's masked copy of the arguments (webhooks: their payload
    /// leaves the gateway for chat rooms and ticket systems).
    pub fn to_json_masked(&self) -> Value {
        self.to_json_as(ShowArguments::Masked)
    }

    /// The arguments as `show` says, what the view is, and how many values it hides.
    fn arguments_view(&self, show: ShowArguments) -> (Value, &'static str, usize) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match (show, held.as_ref()) {
            (ShowArguments::AsSent, Some(h)) => (
                h.scrubbed
                    .clone()
                    .or_else(|| h.arguments.clone())
                    .unwrap_or_else(|| json!({})),
                "as_sent",
                h.credentials_hidden,
            ),
            _ => (self.masked_arguments.clone(), "masked", self.masked_hidden),
        }
    }

    fn to_json_as(&self, show: ShowArguments) -> Value {
        let (arguments, view, hidden) = self.arguments_view(show);
        let state = self.state();
        let votes = match &state {
            State::Pending { votes } | State::Granted { votes } => votes.clone(),
            State::Denied { vote } => vec![vote.clone()],
            _ => Vec::new(),
        };
        json!({
            "id": self.id,
            "state": state.name(),
            "requester": serde_json::from_str::<Value>(&self.requester.audit).unwrap_or(Value::Null),
            "endpoint": &*self.endpoint,
            "method": self.method,
            "target": self.target,
            "arguments": arguments,
            "arguments_view": view,
            "hidden_values": hidden,
            "arguments_sha256": self.digest,
            "requested_at": rfc3339(self.requested_ns),
            "expires_at": rfc3339(self.expires_ns),
            "min_approvals": self.min_approvals,
            "policies": self.policies,
            "request_entry": self.request_entry,
            "votes": votes.iter().map(|v| json!({
                "approver": v.approver,
                "reason": v.reason,
                "at": rfc3339(v.time_ns),
            })).collect::<Vec<_>>(),
            "reason": match &state {
                State::Cancelled { reason } | State::Abandoned { reason } => Some(reason.clone()),
                State::Denied { vote } => vote.reason.clone(),
                _ => None,
            },
        })
    }

    fn draft(&self, kind: Kind, caller: Arc<str>, detail: Value, mark: Option<Mark>) -> Draft {
        Draft {
            kind,
            direction: Direction::Gateway,
            time_ns: now_ns(),
            endpoint: self.endpoint.clone(),
            session: self.session.clone(),
            id: self.rpc_id.clone(),
            method: Some(self.method.clone()),
            target: self.target.clone(),
            caller,
            request: Some(self.request_entry),
            detail: detail.to_string(),
            message: Bytes::new(),
            mark,
            headers: None,
            erase: None,
        }
    }

    fn set(&self, state: &mut State, next: State) {
        *state = next.clone();
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = next;
    }
}

/// RFC 3339 UTC time of `ns` nanoseconds since the epoch.
pub fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// The pending approvals and what acts on them.
pub struct Approvals {
    config: ApprovalsConfig,
    audit: Arc<Audit>,
    policy: Option<Arc<Engine>>,
    pending: Mutex<HashMap<String, Arc<Pending>>>,
    recent: Mutex<VecDeque<Arc<Pending>>>,
    notifier: notify::Notifier,
    metrics: Arc<crate::metrics::ApprovalMetrics>,
    /// Replicas of a shared log: where decisions on calls other replicas hold go.
    remote: std::sync::OnceLock<Arc<Remote>>,
}

impl Approvals {
    pub fn new(
        config: &ApprovalsConfig,
        audit: Arc<Audit>,
        policy: Option<Arc<Engine>>,
        public_url: Option<String>,
        metrics: Arc<crate::metrics::ApprovalMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            notifier: notify::Notifier::new(config.webhooks.clone(), audit.clone(), public_url),
            config: config.clone(),
            audit,
            policy,
            pending: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
            remote: std::sync::OnceLock::new(),
        })
    }

    /// Hands decisions on approvals this replica does not hold to the replica that does.
    pub fn attach_remote(&self, remote: Arc<Remote>) {
        let _ = self.remote.set(remote);
    }

    /// Where decisions on approvals other replicas hold go, for a shared log.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.get()
    }

    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    pub fn keepalive(&self) -> Duration {
        self.config.keepalive
    }

    /// Records `approval_requested` for a held call, announces it, and returns it pending.
    ///
    /// # Errors
    /// The entry could not be recorded: the call must not wait (or proceed).
    pub async fn open(&self, ask: Ask<'_>) -> Result<Arc<Pending>, AuditError> {
        let now = now_ns();
        let timeout = u64::try_from(self.config.timeout.as_nanos()).unwrap_or(u64::MAX);
        let (resolved, _) = watch::channel(None);
        let pending = Arc::new(Pending {
            id: hex::encode(rand::random::<[u8; 8]>()),
            requester: ask.requester,
            endpoint: ask.endpoint,
            session: ask.session,
            rpc_id: ask.rpc_id,
            method: ask.method.to_string(),
            target: ask.target.map(str::to_string),
            masked_arguments: ask.masked_arguments,
            masked_hidden: ask.masked_hidden,
            show: self.config.show,
            digest: digest(ask.arguments),
            held: Mutex::new(Some(HeldArguments {
                arguments: ask.arguments.cloned(),
                scrubbed: ask.scrubbed_arguments,
                credentials_hidden: ask.credentials_hidden,
            })),
            requested_ns: now,
            expires_ns: now.saturating_add(timeout),
            min_approvals: ask.min_approvals.max(1),
            policies: ask.policies,
            request_entry: ask.request.index,
            state: tokio::sync::Mutex::new(State::Pending { votes: Vec::new() }),
            snapshot: Mutex::new(State::Pending { votes: Vec::new() }),
            resolved,
        });
        let detail = json!({
            "approval": pending.id,
            "arguments_sha256": pending.digest,
            "expires_at": rfc3339(pending.expires_ns),
            "min_approvals": pending.min_approvals,
            "policies": pending.policies,
        });
        let draft = pending.draft(
            Kind::ApprovalRequested,
            pending.requester.audit.clone(),
            detail,
            Some(Mark::Open(pending.id.clone())),
        );
        self.audit.append(draft).await?;
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pending.id.clone(), pending.clone());
        tracing::info!(
            approval = %pending.id,
            endpoint = %pending.endpoint,
            requester = %pending.requester.name,
            "call held for approval: {} {}",
            pending.method,
            pending.target.as_deref().unwrap_or("")
        );
        self.notifier.announce(&pending);
        Ok(pending)
    }

    /// Ends a pending approval without a decision, recording why, and tells its waiter.
    /// Returns how the approval ended: this ending, or the decision that won the race.
    pub async fn end(&self, pending: &Pending, ending: Ending, reason: &str) -> Resolution {
        let mut state = pending.state.lock().await;
        if !matches!(*state, State::Pending { .. }) {
            drop(state);
            return pending.wait().await;
        }
        let (kind, next) = match ending {
            Ending::Expired => (Kind::ApprovalExpired, State::Expired),
            Ending::Cancelled => (
                Kind::ApprovalCancelled,
                State::Cancelled {
                    reason: reason.to_string(),
                },
            ),
            Ending::Abandoned => (
                Kind::ApprovalAbandoned,
                State::Abandoned {
                    reason: reason.to_string(),
                },
            ),
        };
        let detail = json!({ "approval": pending.id, "reason": reason });
        let draft = pending.draft(
            kind,
            crate::audit::GATEWAY.into(),
            detail,
            Some(Mark::Close(pending.id.clone())),
        );
        if let Err(e) = self.audit.append(draft).await {
            // The call ends anyway; the pending mark stays, so the next start records it as
            // abandoned.
            tracing::error!(approval = %pending.id, "couldn't record the approval's end: {e}");
        }
        pending.set(&mut state, next);
        drop(state);
        self.retire(
            pending,
            match ending {
                Ending::Expired => "expired",
                Ending::Cancelled => "cancelled",
                Ending::Abandoned => "abandoned",
            },
        );
        tracing::info!(approval = %pending.id, "{}: {reason}", kind.name());
        let resolution = Resolution::Ended {
            ending,
            reason: reason.to_string(),
        };
        pending.resolved.send_replace(Some(resolution.clone()));
        resolution
    }

    /// Ends the pending approvals of `session` whose JSON-RPC id is `rpc_id` (the client sent
    /// `notifications/cancelled` for it). Returns how many.
    pub async fn cancel_request(&self, endpoint: &str, session: &str, rpc_id: &str) -> usize {
        let matching: Vec<Arc<Pending>> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|p| {
                *p.endpoint == *endpoint
                    && p.session.as_deref() == Some(session)
                    && p.rpc_id.as_deref() == Some(rpc_id)
            })
            .cloned()
            .collect();
        for p in &matching {
            self.end(p, Ending::Cancelled, "the client cancelled the request")
                .await;
        }
        matching.len()
    }

    /// Calls held now, waiting for an approval.
    pub fn pending_count(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// An approval ended (`outcome`: granted, denied, expired, cancelled, abandoned).
    fn retire(&self, pending: &Pending, outcome: &str) {
        let waited = Duration::from_nanos(now_ns().saturating_sub(pending.requested_ns));
        self.metrics.ended(outcome, waited);
        let removed = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pending.id);
        if let Some(p) = removed {
            // The arguments as sent leave memory with the approval.
            p.held.lock().unwrap_or_else(PoisonError::into_inner).take();
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(p);
        }
    }

    fn find(&self, id: &str) -> Option<Arc<Pending>> {
        if let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Some(p.clone());
        }
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|p| p.id == id)
            .cloned()
    }

    /// May `who` decide `pending`? Listed by name, or permitted by a policy on `approve`.
    fn authorized(&self, who: &Principal, pending: &Pending) -> bool {
        // While it waits, policy reads the arguments as sent; once it has ended (only seeing
        // it is left to decide), the log's masked copy.
        let held = pending.held.lock().unwrap_or_else(PoisonError::into_inner);
        let arguments = match held.as_ref() {
            Some(h) => h.arguments.as_ref(),
            None => Some(&pending.masked_arguments),
        };
        self.may_approve(
            who,
            &Held {
                requester: &pending.requester,
                endpoint: &pending.endpoint,
                method: &pending.method,
                target: pending.target.as_deref(),
                arguments,
            },
        )
    }

    /// May `who` decide the held call `held`?
    fn may_approve(&self, who: &Principal, held: &Held<'_>) -> bool {
        if who.kind == PrincipalKind::Anonymous {
            return false;
        }
        if self.config.approvers.contains(&who.name) {
            return true;
        }
        self.policy
            .as_ref()
            .is_some_and(|engine| engine.decide_approve(who, held).verdict == Verdict::Allow)
    }

    /// The approvals `who` may see: those they may decide, or asked for themselves; pending
    /// only unless `all`.
    pub fn list(&self, who: &Principal, all: bool) -> Vec<Arc<Pending>> {
        let mut out: Vec<Arc<Pending>> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        if all {
            out.extend(
                self.recent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .cloned(),
            );
        }
        out.retain(|p| self.visible(who, p));
        out.sort_by_key(|p| p.requested_ns);
        out
    }

    fn visible(&self, who: &Principal, p: &Pending) -> bool {
        who.kind != PrincipalKind::Anonymous
            && (same_person(who, &p.requester) || self.authorized(who, p))
    }

    /// One approval, if `who` may see it.
    pub fn show(&self, who: &Principal, id: &str) -> Option<Arc<Pending>> {
        self.find(id).filter(|p| self.visible(who, p))
    }

    /// Records that the approvals a previous run left pending were abandoned.
    ///
    /// # Errors
    /// An entry could not be recorded.
    pub async fn abandon_unfinished(audit: &Audit, left: &[Unfinished]) -> Result<(), AuditError> {
        for u in left {
            let detail = json!({
                "approval": u.id,
                "reason": "the gateway stopped while the call waited; its client got no answer",
                "requested_entry": u.entry,
            });
            let mut draft =
                Draft::gateway(Kind::ApprovalAbandoned, &u.endpoint, detail.to_string());
            draft.session = u.session.as_deref().map(Arc::from);
            draft.request = u.request.or(Some(u.entry));
            draft.mark = Some(Mark::Close(u.id.clone()));
            audit.append(draft).await?;
            tracing::warn!(approval = %u.id, endpoint = %u.endpoint, "a call that waited for approval when the gateway last stopped was abandoned");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
