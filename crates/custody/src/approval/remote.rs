//! Decisions on approvals across replicas of a shared log: a person may approve or deny on any
//! replica, while the held call waits on the replica that holds it.
//!
//! The replica that receives a decision for an approval it does not hold finds the holder (the
//! replica that wrote the `approval_requested` entry still pending in the shared log) and hands
//! it the decision through the database: a row sealed with a key derived from the log's
//! signing key (every replica has it, the database alone does not), naming the approval, the
//! decision and the person as this replica authenticated them. The holder polls for rows
//! addressed to it (every [`POLL_HOLDER`]), claims each one once, checks its seal and age, and
//! takes the decision exactly as if it had been made on it (the same policy, the same
//! self-approval, digest and vote rules, the same entries), then writes back its answer, which
//! the receiving replica returns to the person. A row is claimed or withdrawn once: a decision
//! the holder did not claim within [`WAIT`] is withdrawn, and the person is told so; one it
//! claimed is always answered.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::Approvals;
use super::decide::Verb;
use crate::audit::now_ns;
use crate::identity::{Principal, PrincipalKind};
use crate::store::postgres::Link;

/// How long a decision waits for the holder to claim it.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often the holder looks for decisions addressed to it.
pub const POLL_HOLDER: Duration = Duration::from_millis(200);
/// How often the receiving replica looks for the holder's answer.
const POLL_ANSWER: Duration = Duration::from_millis(50);
/// A sealed decision older than this is refused (it was not taken now).
const MAX_AGE: Duration = Duration::from_secs(60);
/// Decisions a holder claims per look.
const CLAIM: i64 = 16;
/// Rows older than this are deleted by their holder (their forwarder stopped waiting long
/// ago, or died): the table stays small.
const KEEP_SECS: f64 = 300.0;

/// A decision as one replica hands it to another.
#[derive(Serialize, Deserialize)]
struct Ask {
    approval: String,
    approve: bool,
    reason: Option<String>,
    digest: Option<String>,
    asked_ns: u64,
    /// Names this decision once: a holder takes no decision twice, and seals its answer to it.
    nonce: String,
    /// The replica that took it.
    by: String,
    who: Who,
}

/// The person, as the receiving replica authenticated them.
#[derive(Serialize, Deserialize)]
struct Who {
    kind: String,
    issuer: Option<String>,
    subject: String,
    name: String,
    claims: Map<String, Value>,
    audit: String,
    binding: String,
}

impl Who {
    fn of(p: &Principal) -> Self {
        Self {
            kind: match p.kind {
                PrincipalKind::Oidc => "oidc",
                PrincipalKind::Static => "static",
                PrincipalKind::Anonymous => "anonymous",
            }
            .into(),
            issuer: p.issuer.clone(),
            subject: p.subject.clone(),
            name: p.name.clone(),
            claims: p.claims.clone(),
            audit: p.audit.to_string(),
            binding: p.binding.to_string(),
        }
    }

    fn principal(self) -> Option<Principal> {
        let kind = match self.kind.as_str() {
            "oidc" => PrincipalKind::Oidc,
            "static" => PrincipalKind::Static,
            "anonymous" => PrincipalKind::Anonymous,
            _ => return None,
        };
        Some(Principal {
            kind,
            issuer: self.issuer,
            subject: self.subject,
            name: self.name,
            claims: self.claims,
            audit: self.audit.into(),
            binding: self.binding.into(),
        })
    }
}

/// The holder's answer: an HTTP status and body, as the API answers a decision.
#[derive(Debug)]
pub struct Answered {
    pub status: u16,
    pub body: Value,
}

/// This replica's side of decisions across replicas.
pub struct Remote {
    replica: String,
    key: [u8; 32],
    link: Link,
    /// The decisions this holder took, by nonce, with when they were taken (kept for
    /// [`MAX_AGE`], past which a decision is refused anyway).
    taken: Mutex<std::collections::HashMap<String, u64>>,
}

type Seal = Hmac<Sha256>;

impl Remote {
    pub fn new(url: &str, replica: &str, key: [u8; 32]) -> Arc<Self> {
        Arc::new(Self {
            replica: replica.to_string(),
            key,
            link: Link::new(url, format!("custody {replica} approvals")),
            taken: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// What the holder's answer to decision `nonce` seals.
    fn answer_text(nonce: &str, status: u16, body: &str) -> String {
        format!("custody approval answer v1\n{nonce}\n{status}\n{body}")
    }

    fn mac(&self, text: &str) -> Seal {
        let mut mac = <Seal as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(text.as_bytes());
        mac
    }

    fn seal(&self, text: &str) -> Vec<u8> {
        self.mac(text).finalize().into_bytes().to_vec()
    }

    /// Whether `seal` seals `text` (in constant time).
    fn sealed(&self, text: &str, seal: &[u8]) -> bool {
        self.mac(text).verify_slice(seal).is_ok()
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| e.to_string())?
    }

    /// The approvals still pending that other replicas hold (only `id`, when given): id, the
    /// `approval_requested` entry, the holder; oldest first, at most [`super::elsewhere::MAX`].
    /// Blocking.
    ///
    /// # Errors
    /// The database failed.
    pub fn pending_elsewhere(
        &self,
        id: Option<&str>,
    ) -> Result<Vec<(String, u64, String)>, String> {
        let rows = self.link.with(|c| {
            c.query(
                "SELECT p.id, p.entry, e.replica FROM pending_approvals p \
                 JOIN entries e ON e.idx = p.entry \
                 WHERE e.replica <> $1 AND ($2::text IS NULL OR p.id = $2) \
                 ORDER BY p.entry LIMIT $3",
                &[&self.replica, &id, &super::elsewhere::MAX],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let entry: i64 = r.get(1);
                (r.get(0), u64::try_from(entry).unwrap_or(0), r.get(2))
            })
            .collect())
    }

    /// Hands `who`'s decision on approval `id` to the replica that holds it and waits for its
    /// answer. `Ok(None)`: no other replica holds a pending approval `id`.
    ///
    /// # Errors
    /// The database failed, or the holder did not take the decision within [`WAIT`] (it is
    /// then withdrawn, and nothing was decided).
    pub async fn forward(
        self: &Arc<Self>,
        id: &str,
        who: &Principal,
        verb: Verb,
        reason: Option<String>,
        digest: Option<&str>,
    ) -> Result<Option<Answered>, String> {
        let ask = Ask {
            approval: id.to_string(),
            approve: verb == Verb::Approve,
            reason,
            digest: digest.map(str::to_string),
            asked_ns: now_ns(),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            by: self.replica.clone(),
            who: Who::of(who),
        };
        let nonce = ask.nonce.clone();
        let text = serde_json::to_string(&ask).map_err(|e| e.to_string())?;
        let seal = self.seal(&text);
        let id = id.to_string();
        let asked = self
            .blocking(move |me| {
                me.link.with(|c| {
                    let holder: Option<String> = c
                        .query_opt(
                            "SELECT e.replica FROM pending_approvals p JOIN entries e ON e.idx = p.entry \
                             WHERE p.id = $1",
                            &[&id],
                        )?
                        .map(|r| r.get(0));
                    let Some(holder) = holder.filter(|h| *h != me.replica) else {
                        return Ok(None);
                    };
                    let row: i64 = c
                        .query_one(
                            "INSERT INTO approval_asks (holder, ask, seal) VALUES ($1, $2, $3) RETURNING id",
                            &[&holder, &text, &seal],
                        )?
                        .get(0);
                    Ok(Some((row, holder)))
                })
            })
            .await?;
        let Some((row, holder)) = asked else {
            return Ok(None);
        };
        let started = Instant::now();
        loop {
            tokio::time::sleep(POLL_ANSWER).await;
            let expired = started.elapsed() > WAIT;
            let answer = self
                .blocking(move |me| {
                    me.link.with(|c| {
                        if expired {
                            // Withdrawn only if the holder has not claimed it.
                            c.execute(
                                "UPDATE approval_asks SET state = 'withdrawn' WHERE id = $1 AND state = 'asked'",
                                &[&row],
                            )?;
                        }
                        let r = c.query_one(
                            "SELECT state, status, answer, answer_seal FROM approval_asks WHERE id = $1",
                            &[&row],
                        )?;
                        let state: String = r.get(0);
                        if state == "answered" || state == "withdrawn" {
                            c.execute("DELETE FROM approval_asks WHERE id = $1", &[&row])?;
                        }
                        Ok((
                            state,
                            r.get::<_, Option<i32>>(1),
                            r.get::<_, Option<String>>(2),
                            r.get::<_, Option<Vec<u8>>>(3),
                        ))
                    })
                })
                .await?;
            match answer {
                (state, Some(status), Some(body), seal) if state == "answered" => {
                    let status = u16::try_from(status).unwrap_or(500);
                    let sealed = seal.is_some_and(|s| {
                        self.sealed(&Self::answer_text(&nonce, status, &body), &s)
                    });
                    if !sealed {
                        return Err(format!(
                            "the answer from replica {holder} is not sealed by it (the database changed it): whether the decision was taken is not known; see the approval's state"
                        ));
                    }
                    return Ok(Some(Answered {
                        status,
                        body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    }));
                }
                (state, ..) if state == "withdrawn" => {
                    return Err(format!(
                        "replica {holder}, which holds the call, did not take the decision within {}s (it may be stopped or cut off from the database; a stopped replica's held calls are abandoned); nothing was decided",
                        WAIT.as_secs()
                    ));
                }
                _ if started.elapsed() > WAIT * 3 => {
                    return Err(format!(
                        "replica {holder} claimed the decision but has not answered within {}s; see the approval's state before deciding again",
                        (WAIT * 3).as_secs()
                    ));
                }
                _ => {}
            }
        }
    }

    /// Takes the decisions other replicas hand this one, until `stop`.
    pub fn spawn(
        self: &Arc<Self>,
        approvals: Arc<Approvals>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_error: Option<String> = None;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(POLL_HOLDER) => {}
                    () = stop.cancelled() => break,
                }
                match me.take_decisions(&approvals).await {
                    Ok(()) => last_error = None,
                    Err(e) => {
                        if last_error.as_deref() != Some(e.as_str()) {
                            tracing::warn!(
                                "couldn't take the decisions other replicas hand this one: {e}"
                            );
                            last_error = Some(e);
                        }
                    }
                }
            }
        })
    }

    async fn take_decisions(self: &Arc<Self>, approvals: &Approvals) -> Result<(), String> {
        let claimed = self
            .blocking(|me| {
                me.link.with(|c| {
                    c.execute(
                        "DELETE FROM approval_asks WHERE holder = $1 AND asked < now() - make_interval(secs => $2)",
                        &[&me.replica, &KEEP_SECS],
                    )?;
                    let rows = c.query(
                        "UPDATE approval_asks SET state = 'claimed' WHERE id IN (\
                         SELECT id FROM approval_asks WHERE holder = $1 AND state = 'asked' \
                         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, ask, seal",
                        &[&me.replica, &CLAIM],
                    )?;
                    Ok(rows
                        .iter()
                        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1), r.get::<_, Vec<u8>>(2)))
                        .collect::<Vec<_>>())
                })
            })
            .await?;
        for (row, text, seal) in claimed {
            let (nonce, status, body) = self.take(approvals, &text, &seal).await;
            let body = body.to_string();
            let answer_seal = self.seal(&Self::answer_text(&nonce, status, &body));
            self.blocking(move |me| {
                me.link.with(|c| {
                    c.execute(
                        "UPDATE approval_asks SET state = 'answered', status = $2, answer = $3, answer_seal = $4 WHERE id = $1",
                        &[&row, &i32::from(status), &body, &answer_seal],
                    )
                })
            })
            .await?;
        }
        Ok(())
    }

    /// One decision another replica handed this one: checked, then taken as if made here.
    /// Returns the decision's nonce (empty when it has none) and the answer.
    async fn take(&self, approvals: &Approvals, text: &str, seal: &[u8]) -> (String, u16, Value) {
        let (status, body) = self.check_and_take(approvals, text, seal).await;
        let nonce = serde_json::from_str::<Ask>(text)
            .map(|a| a.nonce)
            .unwrap_or_default();
        (nonce, status, body)
    }

    async fn check_and_take(&self, approvals: &Approvals, text: &str, seal: &[u8]) -> (u16, Value) {
        let refuse = |why: String| {
            tracing::warn!("refused a decision handed over through the database: {why}");
            (403, json!({ "error": why }))
        };
        if !self.sealed(text, seal) {
            return refuse(
                "its seal does not check: it was not written by a replica holding the log's key"
                    .into(),
            );
        }
        let Ok(ask) = serde_json::from_str::<Ask>(text) else {
            return refuse("it does not parse".into());
        };
        let now = now_ns();
        if ask.asked_ns > now.saturating_add(5_000_000_000) {
            return refuse(format!(
                "it says it was taken on replica {} {}s from now",
                ask.by,
                (ask.asked_ns - now) / 1_000_000_000
            ));
        }
        {
            let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
            let horizon = u64::try_from(MAX_AGE.as_nanos()).unwrap_or(u64::MAX);
            taken.retain(|_, at| now.saturating_sub(*at) <= horizon);
            if ask.nonce.is_empty() || taken.insert(ask.nonce.clone(), ask.asked_ns).is_some() {
                return refuse("it was taken once already: a decision is not taken twice".into());
            }
        }
        let age = now.saturating_sub(ask.asked_ns);
        if u128::from(age) > MAX_AGE.as_nanos() {
            return refuse(format!(
                "it was taken {}s ago on replica {}, longer ago than {}s",
                age / 1_000_000_000,
                ask.by,
                MAX_AGE.as_secs()
            ));
        }
        let Some(who) = ask.who.principal() else {
            return refuse("it names no kind of principal this replica knows".into());
        };
        let verb = if ask.approve {
            Verb::Approve
        } else {
            Verb::Deny
        };
        match approvals
            .decide(&ask.approval, &who, verb, ask.reason, ask.digest.as_deref())
            .await
        {
            Ok(p) => (200, p.to_json()),
            Err(e) => (e.status().as_u16(), json!({ "error": e.to_string() })),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.link.close();
    }
}
