//! Announcing a pending approval to the configured webhooks: custody's JSON payload or a
//! Slack message, each POSTed with retries and backoff. A delivery that fails for good is logged
//! and recorded as a `notification_failed` entry; it never releases or fails the call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::{Pending, State, rfc3339};
use crate::audit::{Audit, Kind};
use crate::config::{WebhookConfig, WebhookFormat};

/// One attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait between attempts; it doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Notifier {
    webhooks: Arc<[WebhookConfig]>,
    audit: Arc<Audit>,
    public_url: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Notifier {
    pub fn new(
        webhooks: Vec<WebhookConfig>,
        audit: Arc<Audit>,
        public_url: Option<String>,
    ) -> Self {
        Self {
            webhooks: webhooks.into(),
            audit,
            public_url,
            client: crate::net::client(Duration::from_secs(5)),
        }
    }

    /// Starts delivering `pending` to every webhook, in the background.
    pub fn announce(&self, pending: &Arc<Pending>) {
        for (index, hook) in self.webhooks.iter().enumerate() {
            let body =
                Bytes::from(payload(hook.format, pending, self.public_url.as_deref()).to_string());
            let pending = pending.clone();
            let hooks = self.webhooks.clone();
            let audit = self.audit.clone();
            let client = self.client.clone();
            tokio::spawn(async move {
                let hook = &hooks[index];
                if let Err((attempts, error)) = deliver(&client, hook, &body, &pending).await {
                    tracing::warn!(
                        approval = %pending.id,
                        webhook = %hook.label(),
                        attempts,
                        "couldn't deliver the approval notification: {error}"
                    );
                    let detail = json!({
                        "approval": pending.id,
                        "webhook": hook.label(),
                        "attempts": attempts,
                        "error": error,
                    });
                    let draft = pending.draft(
                        Kind::NotificationFailed,
                        crate::audit::GATEWAY.into(),
                        detail,
                        None,
                    );
                    if let Err(e) = audit.append(draft).await {
                        tracing::error!(approval = %pending.id, "couldn't record the failed notification: {e}");
                    }
                }
            });
        }
    }
}

/// POSTs `body` until it is accepted (2xx), the attempts run out, or the approval is no longer
/// pending (nobody needs the news then). On failure: the attempts made and the last error.
async fn deliver(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    hook: &WebhookConfig,
    body: &Bytes,
    pending: &Pending,
) -> Result<(), (u32, String)> {
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=hook.attempts {
        if attempt > 1 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if !matches!(pending.state(), State::Pending { .. }) {
                return Ok(());
            }
        }
        let mut req = Request::post(hook.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("custody/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &hook.headers {
            req = req.header(k, v);
        }
        let req = match req.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => return Err((attempt, format!("couldn't build the request: {e}"))),
        };
        let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let resp = client.request(req).await.map_err(|e| {
                format!(
                    "couldn't reach {}: {}",
                    hook.label(),
                    crate::net::error_chain(&e)
                )
            })?;
            let status = resp.status();
            // Drain a little of the body so the connection can be reused.
            let _ = tokio::time::timeout(Duration::from_secs(1), resp.into_body().collect()).await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{} answered {status}", hook.label()))
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{} did not answer within {}s",
                hook.label(),
                ATTEMPT_TIMEOUT.as_secs()
            ))
        });
        match sent {
            Ok(()) => {
                tracing::debug!(approval = %pending.id, webhook = %hook.label(), attempt, "approval notification delivered");
                return Ok(());
            }
            Err(e) => {
                tracing::info!(approval = %pending.id, webhook = %hook.label(), attempt, "approval notification not delivered: {e}");
                last = e;
            }
        }
    }
    Err((hook.attempts, last))
}

/// The commands an approver runs.
fn commands(pending: &Pending, public_url: Option<&str>) -> (String, String) {
    let gateway = public_url
        .map(|u| format!(" --gateway {u}"))
        .unwrap_or_default();
    (
        format!("custody approvals approve {}{gateway}", pending.id),
        format!(
            "custody approvals deny {}{gateway} --reason \"...\"",
            pending.id
        ),
    )
}

/// What a webhook receives.
pub fn payload(format: WebhookFormat, pending: &Pending, public_url: Option<&str>) -> Value {
    let (approve, deny) = commands(pending, public_url);
    let url = public_url.map(|u| format!("{u}/api/v1/approvals/{}", pending.id));
    match format {
        WebhookFormat::Json => json!({
            "type": "approval_requested",
            "approval": pending.to_json_masked(),
            "url": url,
            "approve_command": approve,
            "deny_command": deny,
        }),
        WebhookFormat::Slack => {
            let what = match &pending.target {
                Some(t) => format!("`{}` `{t}`", pending.method),
                None => format!("`{}`", pending.method),
            };
            let text = format!(
                "Approval needed: {} on endpoint {} by {} (approval {})",
                pending.method, pending.endpoint, pending.requester.name, pending.id
            );
            // Slack limits a text block to 3000 characters.
            let pretty =
                serde_json::to_string_pretty(&pending.masked_arguments).unwrap_or_default();
            let mut arguments: String = pretty.chars().take(2500).collect();
            if arguments.len() < pretty.len() {
                arguments.push_str("\n…");
            }
            json!({
                "text": text,
                "blocks": [
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": format!(
                                "*Approval needed* for {what} on endpoint `{}`\nRequested by *{}*; expires {}; needs {} approver(s)",
                                pending.endpoint,
                                pending.requester.name,
                                rfc3339(pending.expires_ns),
                                pending.min_approvals
                            ),
                        }
                    },
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": format!("Arguments (SHA-256 `{}`):\n```{arguments}```", pending.digest),
                        }
                    },
                    {
                        "type": "context",
                        "elements": [
                            { "type": "mrkdwn", "text": format!("`{approve}`") },
                            { "type": "mrkdwn", "text": format!("`{deny}`") },
                        ]
                    }
                ]
            })
        }
    }
}
