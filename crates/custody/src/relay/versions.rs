//! Which protocol versions work through an endpoint: what its upstream announced, learned from
//! the `server/discover` and `initialize` answers the gateway relays, or asked for by the
//! gateway itself (recorded like any request) the first time a client needs to know.

use std::time::Duration;

use super::*;
use crate::mcp::version::{
    META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_PROTOCOL_VERSION, STATELESS_VERSIONS,
};

/// How often the gateway asks an upstream that did not say.
const ASK_EVERY: Duration = Duration::from_secs(60);
/// How long it waits for the answer.
const ASK_FOR: Duration = Duration::from_secs(5);

impl Relay {
    /// The refusal of a request in version `requested`, naming the versions that work through
    /// `ep` (asking its upstream first if they are not known yet).
    pub(super) async fn unsupported(&self, ep: &Arc<Endpoint>, requested: &str) -> RelayError {
        if ep.supported_versions().is_none() {
            let _ = tokio::time::timeout(ASK_FOR, self.discover(ep)).await;
        }
        match ep.supported_versions() {
            Some(supported) => RelayError::UnsupportedVersion {
                requested: requested.to_string(),
                supported,
            },
            None => RelayError::UnsupportedVersion {
                requested: requested.to_string(),
                supported: version::supported()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            },
        }
    }

    /// Asks the upstream `server/discover` on the gateway's own behalf (at most once a minute),
    /// recording the request and the answer; the answer teaches the endpoint its versions.
    async fn discover(&self, ep: &Arc<Endpoint>) {
        {
            let mut v = ep
                .versions
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if v.announced.is_some() || v.asked.is_some_and(|t| t.elapsed() < ASK_EVERY) {
                return;
            }
            v.asked = Some(std::time::Instant::now());
        }
        let stateless = STATELESS_VERSIONS[STATELESS_VERSIONS.len() - 1];
        let body = json!({
            "jsonrpc": "2.0",
            "id": "custody-discover",
            "method": "server/discover",
            "params": { "_meta": {
                META_PROTOCOL_VERSION: stateless,
                META_CLIENT_CAPABILITIES: {},
                META_CLIENT_INFO: { "name": "custody", "version": env!("CARGO_PKG_VERSION") },
            }},
        });
        let Ok(msg) = Message::from_value(body) else {
            return;
        };
        let mut headers = HeaderMap::new();
        for (k, v) in headers::mirror(&msg, &[]) {
            headers.insert(k, v);
        }
        let gateway = Principal::gateway();
        let scope = self.scope(ep, None, &gateway);
        let Ok(recorded) = self.record_client(&scope, &msg, None).await else {
            return;
        };
        let outcome = self
            .stateless_send(
                ep,
                &gateway,
                &headers,
                Some(stateless.to_string()),
                msg,
                recorded,
                scope,
                None,
            )
            .await;
        // A streamed answer is recorded (and observed) as it is read.
        if let Outcome::Stream { mut events, .. } = outcome {
            use futures_util::StreamExt;
            while events.next().await.is_some() {}
        }
    }
}
