//! One configured endpoint: its upstream, its sessions, and what the gateway learned about the
//! upstream's tools.

use super::*;

/// One configured endpoint: its upstream and its sessions.
pub struct Endpoint {
    pub name: Arc<str>,
    /// Bounds on each message, in either direction.
    pub messages: MessageLimits,
    pub(super) upstream: Upstream,
    pub(super) sessions: Sessions,
    /// `x-mcp-header` parameters of the upstream's tools, learned from `tools/list` answers.
    pub(super) tool_headers: RwLock<HashMap<String, Vec<ParamHeader>>>,
    /// What the client and the log get masked.
    pub mask: Arc<Masker>,
    /// The upstream credentials only the gateway holds.
    pub credentials: Arc<Credentials>,
    /// Sessions open, with the endpoint's cap.
    pub(super) session_cap: Arc<Gauge>,
    /// The protocol versions the upstream announced (`server/discover`'s `supportedVersions`,
    /// or the versions `initialize` answers negotiated), and when the gateway last asked.
    pub(super) versions: RwLock<Versions>,
    /// Calls of the stdio pool waiting for their clients' input (multi round-trip requests).
    pub(super) parking: super::mrtr::Parking,
    /// What `/metrics` shows of this endpoint.
    pub metrics: Arc<crate::metrics::EndpointMetrics>,
}

/// What the gateway knows of an upstream's protocol versions.
#[derive(Debug, Default)]
pub(super) struct Versions {
    pub announced: Option<Vec<String>>,
    pub asked: Option<std::time::Instant>,
}

impl Endpoint {
    /// The versions that work through this endpoint: those the upstream announced that the
    /// gateway relays, newest first; `None` while the upstream's are unknown.
    pub(super) fn supported_versions(&self) -> Option<Vec<String>> {
        let v = self
            .versions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let announced = v.announced.as_ref()?;
        Some(
            version::supported()
                .into_iter()
                .filter(|g| announced.iter().any(|a| a == g))
                .map(str::to_string)
                .collect(),
        )
    }

    /// Learns the versions an upstream announced (`server/discover`).
    pub(super) fn learn_versions(&self, announced: &Value) {
        let Some(list) = announced.as_array() else {
            return;
        };
        let list: Vec<String> = list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .take(64)
            .collect();
        self.versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .announced = Some(list);
    }

    /// Learns one version an upstream speaks (what an `initialize` answer negotiated).
    pub(super) fn learn_version(&self, v: &str) {
        let mut versions = self
            .versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = versions.announced.get_or_insert_with(Vec::new);
        if !list.iter().any(|x| x == v) && list.len() < 64 {
            list.push(v.to_string());
        }
    }

    pub(super) fn learn_tools(&self, tools: &Value) {
        let Some(tools) = tools.as_array() else {
            return;
        };
        self.metrics.learn_tools(
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str)),
        );
        let mut map = self
            .tool_headers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tool in tools {
            if let (Some(name), Some(schema)) = (
                tool.get("name").and_then(Value::as_str),
                tool.get("inputSchema"),
            ) {
                let params = headers::param_headers(schema);
                if params.is_empty() {
                    map.remove(name);
                } else {
                    map.insert(name.to_string(), params);
                }
            }
        }
    }

    pub(super) fn param_headers(&self, msg: &Message) -> Vec<ParamHeader> {
        if msg.method() != Some("tools/call") {
            return Vec::new();
        }
        let Some(tool) = msg.target_name() else {
            return Vec::new();
        };
        self.tool_headers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tool)
            .cloned()
            .unwrap_or_default()
    }

    /// Sessions currently open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the upstream is a process (stdio) rather than an HTTP server.
    pub fn is_stdio(&self) -> bool {
        matches!(self.upstream, Upstream::Stdio(_))
    }

    /// Upstream processes running (stdio endpoints).
    pub fn process_count(&self) -> u64 {
        match &self.upstream {
            Upstream::Stdio(up) => up.processes(),
            Upstream::Http(_) => 0,
        }
    }

    /// Ends an upstream session the gateway will not use (bounded: the upstream may not
    /// answer).
    pub(super) async fn end_upstream_session(
        &self,
        upstream_sid: Option<&HeaderValue>,
        version: &str,
    ) {
        if let (Upstream::Http(up), Some(sid)) = (&self.upstream, upstream_sid) {
            let empty = HeaderMap::new();
            let out = Outbound {
                session: Some(sid),
                version: Some(version),
                headers: &empty,
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), up.delete(out)).await;
        }
    }

    pub(super) async fn close_session(&self, session: &Session) {
        match (&session.upstream, &self.upstream) {
            (SessionUpstream::Stdio(child), _) => child.stop().await,
            (
                SessionUpstream::Http {
                    session: upstream_sid,
                },
                _,
            ) => {
                self.end_upstream_session(upstream_sid.as_ref(), &session.version())
                    .await;
            }
        }
    }
}
