//! The approvals a person may see, as the API and the page list them: the ones this replica
//! holds and, beside a log replicas share, the ones the others hold ([`super::elsewhere`]).

use serde_json::Value;

use super::{Approvals, elsewhere, same_person};
use crate::identity::{Principal, PrincipalKind};
use crate::policy::Held;

impl Approvals {
    /// The approvals `who` may see (those they may decide, or asked for themselves), as JSON,
    /// oldest first: pending only unless `all` (recently finished ones are this replica's).
    pub async fn list_json(&self, who: &Principal, all: bool) -> Vec<Value> {
        let mut out: Vec<Value> = self.list(who, all).iter().map(|p| p.to_json()).collect();
        out.extend(self.held_elsewhere(who, None).await);
        out.sort_by(|a, b| {
            a["requested_at"]
                .as_str()
                .unwrap_or("")
                .cmp(b["requested_at"].as_str().unwrap_or(""))
        });
        out
    }

    /// Approval `id` as JSON, if `who` may see it: held here, or by another replica.
    pub async fn show_json(&self, who: &Principal, id: &str) -> Option<Value> {
        if let Some(p) = self.show(who, id) {
            return Some(p.to_json());
        }
        self.held_elsewhere(who, Some(id)).await.into_iter().next()
    }

    /// The pending approvals other replicas hold that `who` may see (only `id`, when given).
    /// A database that cannot be read leaves them out, with a warning.
    async fn held_elsewhere(&self, who: &Principal, id: Option<&str>) -> Vec<Value> {
        let Some(remote) = self.remote() else {
            return Vec::new();
        };
        if who.kind == PrincipalKind::Anonymous {
            return Vec::new();
        }
        let (remote, location) = (remote.clone(), self.audit.location().clone());
        let id = id.map(str::to_string);
        let read = tokio::task::spawn_blocking(move || {
            let found = remote.pending_elsewhere(id.as_deref())?;
            elsewhere::read(&location, found)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match read {
            Ok(held) => held
                .iter()
                .filter(|h| {
                    same_person(who, &h.requester)
                        || self.may_approve(
                            who,
                            &Held {
                                requester: &h.requester,
                                endpoint: &h.endpoint,
                                method: &h.method,
                                target: h.target.as_deref(),
                                arguments: Some(&h.arguments),
                            },
                        )
                })
                .map(elsewhere::Held::to_json)
                .collect(),
            Err(e) => {
                tracing::warn!("the approvals other replicas hold could not be read: {e}");
                Vec::new()
            }
        }
    }
}
