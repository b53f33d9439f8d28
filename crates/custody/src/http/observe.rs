//! Counting each MCP request for `/metrics`: its method and outcome labels and its duration, in
//! the endpoint's lock-free table (`metrics::EndpointMetrics`). A JSON answer is counted when it
//! is ready; a stream when its body ends (or the client goes away).
//!
//! A traced request's server span ends here too: [`Observed`] carries its context and is
//! dropped when the answer has gone out.

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;

use crate::mcp::message::{Body, Kind};
use crate::metrics::labels::{self, method};
use crate::relay::{Endpoint, Outcome, Relay};

/// The method label of a POSTed body, and for a `tools/call` its tool's slot.
pub fn labels(ep: &Endpoint, body: &Body) -> (usize, Option<usize>) {
    match body {
        Body::Batch(..) => (method::BATCH, None),
        Body::Single(m) => match m.kind() {
            Kind::Response | Kind::Error => (method::RESPONSE, None),
            Kind::Request | Kind::Notification => {
                let index = labels::method_index(m.method().unwrap_or(""));
                let tool = (index == method::TOOLS_CALL)
                    .then(|| ep.metrics.tool_slot(m.target_name().unwrap_or("")));
                (index, tool)
            }
        },
    }
}

/// A request refused before its endpoint's handling began (unknown endpoint, address budget,
/// `Host`, credentials, the principal's limits): counted now.
pub fn refused(
    relay: &Relay,
    endpoint: &str,
    method: usize,
    outcome: usize,
    started: Instant,
    resp: Response,
) -> Response {
    relay
        .metrics
        .endpoint(endpoint)
        .request(method, outcome, started.elapsed());
    resp
}

/// One request of a known endpoint, counted when dropped.
pub struct Observed {
    ep: Arc<Endpoint>,
    method: usize,
    tool: Option<usize>,
    outcome: usize,
    started: Instant,
    /// The answer is a stream: counted when its body ends.
    pub streaming: bool,
    /// The request's trace context: its server span ends with this.
    pub trace: Option<opentelemetry::Context>,
}

impl Observed {
    pub fn new(
        ep: Arc<Endpoint>,
        (method, tool): (usize, Option<usize>),
        started: Instant,
        outcome: &Outcome,
    ) -> Self {
        Self {
            ep,
            method,
            tool,
            outcome: labels::outcome_index(outcome),
            started,
            streaming: matches!(outcome, Outcome::Stream { .. }),
            trace: None,
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let m = &self.ep.metrics;
        m.request(self.method, self.outcome, self.started.elapsed());
        if let Some(slot) = self.tool {
            m.tool_call(slot, self.outcome);
        }
        if let Some(cx) = &self.trace {
            use opentelemetry::trace::TraceContextExt as _;
            let span = cx.span();
            span.set_attribute(opentelemetry::KeyValue::new(
                "custody.outcome",
                crate::metrics::labels::OUTCOMES[self.outcome],
            ));
            span.end();
        }
    }
}
