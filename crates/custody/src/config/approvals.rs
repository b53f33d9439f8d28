//! `[approvals]`: who approves held calls, how long they wait, who is told.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use super::raw::{RawApprovals, RawWebhook};
use super::*;

/// `[approvals]`, validated.
#[derive(Debug, Clone)]
pub struct ApprovalsConfig {
    pub timeout: Duration,
    pub keepalive: Duration,
    /// Principal names that may approve any held call.
    pub approvers: Vec<String>,
    pub webhooks: Vec<WebhookConfig>,
    pub show: ShowArguments,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            keepalive: Duration::from_secs(15),
            approvers: Vec::new(),
            webhooks: Vec::new(),
            show: ShowArguments::AsSent,
        }
    }
}

/// `approvals.show`: what approvers see of a held call's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowArguments {
    /// As the upstream will receive them, only the credentials the gateway holds scrubbed.
    AsSent,
    /// The log's masked copy, saying how many values are hidden.
    Masked,
}

/// The payload a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Json,
    Slack,
}

/// One `[[approvals.webhooks]]`.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: Uri,
    pub format: WebhookFormat,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub attempts: u32,
}

impl WebhookConfig {
    /// How the webhook is named in logs: its host, never its path (which can be a secret).
    pub fn label(&self) -> String {
        format!(
            "{}://{}",
            self.url.scheme_str().unwrap_or("https"),
            self.url.authority().map_or("?", |a| a.host())
        )
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.label())
            .field("format", &self.format)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Resolver<'_> {
    pub(super) fn approvals(&self, raw: RawApprovals) -> Result<ApprovalsConfig, ConfigError> {
        let defaults = ApprovalsConfig::default();
        let timeout = raw.timeout.unwrap_or(defaults.timeout);
        if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(7 * 24 * 3600) {
            return Err(self.err(
                "approvals.timeout",
                "must be between 1s and 7 days (a held call keeps its connection open that long)",
            ));
        }
        let keepalive = raw.keepalive.unwrap_or(defaults.keepalive);
        if keepalive < Duration::from_millis(100) || keepalive > Duration::from_secs(300) {
            return Err(self.err(
                "approvals.keepalive",
                "must be between 100ms and 5m (proxies close connections that stay silent longer)",
            ));
        }
        for (i, a) in raw.approvers.iter().enumerate() {
            if a.trim().is_empty() {
                return Err(self.err(
                    &format!("approvals.approvers.{i}"),
                    "an approver's name must not be empty",
                ));
            }
        }
        let webhooks = raw
            .webhooks
            .into_iter()
            .enumerate()
            .map(|(i, w)| self.webhook(i, w))
            .collect::<Result<Vec<_>, _>>()?;
        let show = match raw.show.as_deref() {
            None | Some("arguments") => ShowArguments::AsSent,
            Some("masked") => ShowArguments::Masked,
            Some(other) => {
                return Err(self.err(
                    "approvals.show",
                    format!(
                        "{other:?} is not a view of a held call; use \"arguments\" (as the upstream will receive them) or \"masked\" (the log's masked copy)"
                    ),
                ));
            }
        };
        Ok(ApprovalsConfig {
            timeout,
            keepalive,
            approvers: raw.approvers,
            webhooks,
            show,
        })
    }

    pub(super) fn webhook(&self, i: usize, raw: RawWebhook) -> Result<WebhookConfig, ConfigError> {
        let key = format!("approvals.webhooks.{i}");
        // The URL is a secret: errors name the key, never the value. It and the header values
        // may be references, resolved now.
        let (_, url_text) = self.secret(&format!("{key}.url"), None, &raw.url)?;
        if !auth::is_fetchable(&url_text) {
            return Err(self.err(
                &format!("{key}.url"),
                "must be an https:// URL (http:// only to this machine): approval details must not cross the network in the clear",
            ));
        }
        let url: Uri = url_text
            .parse()
            .map_err(|_| self.err(&format!("{key}.url"), "is not a URL"))?;
        let format = match raw.format.as_deref() {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(other) => {
                return Err(self.err(
                    &format!("{key}.format"),
                    format!("{other:?} is not a webhook format; use \"json\" or \"slack\""),
                ));
            }
        };
        let attempts = raw.attempts.unwrap_or(5);
        if !(1..=20).contains(&attempts) {
            return Err(self.err(&format!("{key}.attempts"), "must be between 1 and 20"));
        }
        let headers = raw
            .headers
            .into_iter()
            .map(|(k, v)| {
                let hkey = format!("{key}.headers.{k}");
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| self.err(&hkey, format!("{k:?} is not a header name")))?;
                let (_, v) = self.secret(&hkey, None, &v)?;
                let value = HeaderValue::from_str(&v).map_err(|_| {
                    self.err(&hkey, "the value has characters not allowed in a header")
                })?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WebhookConfig {
            url,
            format,
            headers,
            attempts,
        })
    }
}
