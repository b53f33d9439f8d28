//! Prometheus metrics: what the gateway counts, and `/metrics` in the Prometheus text format
//! (prometheus-client's encoder).
//!
//! Each running gateway has its own [`Metrics`] (tests run several in one process). The relay's
//! hot path touches only handles resolved when the gateway starts: per endpoint, a table of
//! lock-free histograms indexed by (method, outcome) whose counts are also the request counters,
//! and plain atomics for policy decisions. Refusals (auth, limits) and masking, which cost far
//! more than a map lookup already, go through prometheus-client families. Gauges (sessions,
//! processes, the log's size and checkpoint age, witnesses, pending approvals) are read from
//! the gateway's state when scraped, never kept up to date on the path of a call.
//!
//! Every label value comes from a fixed vocabulary or the configuration (`labels.rs`); tool
//! names only for tools an upstream announced in a `tools/list` answer, at most
//! [`MAX_TOOLS`] per endpoint, and `other` for the rest.

mod histogram;
pub mod labels;
mod render;
mod render_audit;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub use histogram::{HistogramTable, Snapshot};
use labels::{Labels, METHODS, OUTCOMES, Value};
pub use render::{CONTENT_TYPE, render};

/// The most tool names one endpoint exposes as labels; calls of other tools count as `other`.
pub const MAX_TOOLS: usize = 128;
/// The longest tool name exposed as a label.
const MAX_TOOL_NAME: usize = 128;

/// The `decision` label of policy decisions.
pub const DECISIONS: [&str; 3] = ["allow", "deny", "needs_approval"];

/// The `outcome` label of an upstream call's duration.
pub const UPSTREAM_OUTCOMES: [&str; 2] = ["answered", "failed"];

/// The `outcome` label of an approval's wait.
pub const APPROVAL_OUTCOMES: [&str; 5] = ["granted", "denied", "expired", "cancelled", "abandoned"];

/// A counter family keyed by a few labels.
pub type Counters<const N: usize> = Family<Labels<N>, Counter>;

/// One gateway's metrics.
pub struct Metrics {
    /// Per configured endpoint, in name order.
    endpoints: Vec<Arc<EndpointMetrics>>,
    /// Requests for an endpoint that is not configured (the name is not a label: anyone can
    /// make one up).
    pub unknown_endpoint: Arc<EndpointMetrics>,
    /// `{endpoint, reason}`: refused credentials.
    pub auth_failures: Counters<2>,
    /// `{endpoint, limit}`: requests and connections refused by a limit.
    pub limited: Counters<2>,
    /// `{endpoint, kind, rule}`: values masked in what the log records.
    pub masks: Counters<3>,
    pub approvals: Arc<ApprovalMetrics>,
    pub audit: Arc<AuditMetrics>,
}

impl Metrics {
    /// Metrics for the endpoints `names`, and the log's (which the log keeps itself).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, audit: Arc<AuditMetrics>) -> Self {
        let masks = Counters::<3>::default();
        let mut endpoints: Vec<Arc<EndpointMetrics>> = names
            .into_iter()
            .map(|n| Arc::new(EndpointMetrics::new(n.into(), masks.clone())))
            .collect();
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            endpoints,
            unknown_endpoint: Arc::new(EndpointMetrics::new("".into(), masks.clone())),
            auth_failures: Counters::default(),
            limited: Counters::default(),
            masks,
            approvals: Arc::new(ApprovalMetrics::default()),
            audit,
        }
    }

    /// The metrics of endpoint `name`: a configured one, or the one for unknown names.
    pub fn endpoint(&self, name: &str) -> Arc<EndpointMetrics> {
        self.endpoints
            .iter()
            .find(|e| &*e.name == name)
            .unwrap_or(&self.unknown_endpoint)
            .clone()
    }

    pub fn endpoints(&self) -> &[Arc<EndpointMetrics>] {
        &self.endpoints
    }

    /// A credential refused at `endpoint` for `reason` (an `AuthError::reason`).
    pub fn auth_failure(&self, endpoint: &Arc<str>, reason: &'static str) {
        self.auth_failures
            .get_or_create(&Labels([
                ("endpoint", endpoint.into()),
                ("reason", reason.into()),
            ]))
            .inc();
    }

    /// A request or connection refused by `limit` (a `Limit::name`).
    pub fn limit(&self, endpoint: &Arc<str>, limit: &'static str) {
        self.limited
            .get_or_create(&Labels([
                ("endpoint", endpoint.into()),
                ("limit", limit.into()),
            ]))
            .inc();
    }
}

/// What one endpoint counts.
#[derive(Debug)]
pub struct EndpointMetrics {
    pub name: Arc<str>,
    /// Row `method * OUTCOMES.len() + outcome`: a request's duration, until its answer was
    /// sent (a stream: until it ended).
    requests: HistogramTable,
    /// Row per [`UPSTREAM_OUTCOMES`]: from forwarding a call to its answer (or failure).
    upstream: HistogramTable,
    /// Per [`DECISIONS`].
    decisions: [AtomicU64; 3],
    tools: RwLock<Tools>,
    /// Slot `tool * OUTCOMES.len() + outcome`; slot `MAX_TOOLS` is `other`.
    tool_calls: Box<[AtomicU64]>,
    masks: Counters<3>,
}

#[derive(Debug, Default)]
struct Tools {
    slots: HashMap<Box<str>, usize>,
    names: Vec<Arc<str>>,
}

impl EndpointMetrics {
    fn new(name: Arc<str>, masks: Counters<3>) -> Self {
        Self {
            name,
            requests: HistogramTable::seconds(
                METHODS.len() * OUTCOMES.len(),
                histogram::DURATION_BOUNDS,
            ),
            upstream: HistogramTable::seconds(UPSTREAM_OUTCOMES.len(), histogram::DURATION_BOUNDS),
            decisions: Default::default(),
            tools: RwLock::new(Tools::default()),
            tool_calls: (0..(MAX_TOOLS + 1) * OUTCOMES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            masks,
        }
    }

    /// A request answered: its method and outcome labels (indexes into `labels::METHODS` and
    /// `labels::OUTCOMES`) and how long it took.
    pub fn request(&self, method: usize, outcome: usize, took: Duration) {
        self.requests
            .observe_duration(method * OUTCOMES.len() + outcome, took);
    }

    /// How many requests of `method` ended with `outcome` (names, for tests and tools).
    pub fn requests(&self, method: &str, outcome: &str) -> u64 {
        let m = METHODS.iter().position(|x| *x == method);
        let o = OUTCOMES.iter().position(|x| *x == outcome);
        match (m, o) {
            (Some(m), Some(o)) => self.requests.count(m * OUTCOMES.len() + o),
            _ => 0,
        }
    }

    /// A call forwarded upstream was answered (`failed` false) or failed, after `took`.
    pub fn upstream(&self, failed: bool, took: Duration) {
        self.upstream.observe_duration(usize::from(failed), took);
    }

    /// A policy decision: an index into [`DECISIONS`].
    pub fn decision(&self, decision: usize) {
        if let Some(d) = self.decisions.get(decision) {
            d.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Learns tool names from a `tools/list` answer's `tools`, up to [`MAX_TOOLS`].
    pub fn learn_tools<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut tools = self
            .tools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in names {
            if tools.names.len() >= MAX_TOOLS {
                break;
            }
            if name.len() > MAX_TOOL_NAME || tools.slots.contains_key(name) {
                continue;
            }
            let slot = tools.names.len();
            tools.slots.insert(name.into(), slot);
            tools.names.push(name.into());
        }
    }

    /// The slot of tool `name`: its own if the upstream announced it, else `other`'s.
    pub fn tool_slot(&self, name: &str) -> usize {
        self.tools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .slots
            .get(name)
            .copied()
            .unwrap_or(MAX_TOOLS)
    }

    /// A `tools/call` of the tool in `slot` (from [`EndpointMetrics::tool_slot`]) ended with
    /// `outcome`.
    pub fn tool_call(&self, slot: usize, outcome: usize) {
        if let Some(c) = self.tool_calls.get(slot * OUTCOMES.len() + outcome) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the masking report of one recorded message (`Mark::by`: `rule PATH`, `header
    /// rule NAME`, `detector NAME`, `credential`).
    pub fn masked(&self, marks: &[crate::mask::Mark]) {
        for m in marks {
            let (kind, rule) = mask_labels(&m.by);
            self.masks
                .get_or_create(&Labels([
                    ("endpoint", (&self.name).into()),
                    ("kind", kind.into()),
                    ("rule", Value::Shared(rule.into())),
                ]))
                .inc();
        }
    }
}

/// `(kind, rule)` of a mark's `by`.
fn mask_labels(by: &str) -> (&'static str, &str) {
    if let Some(name) = by.strip_prefix("header rule ") {
        ("header_rule", name)
    } else if let Some(path) = by.strip_prefix("rule ") {
        ("rule", path)
    } else if let Some(name) = by.strip_prefix("detector ") {
        ("detector", name)
    } else if by == "credential" {
        ("credential", "credential")
    } else {
        ("other", "other")
    }
}

/// What the log counts (kept by the log's sequencer thread and its checkpointer).
#[derive(Debug)]
pub struct AuditMetrics {
    /// Entries committed.
    pub appended: AtomicU64,
    /// Entries in commits that failed.
    pub failed: AtomicU64,
    /// Entries refused before a commit (the log halted, a checkpoint not durable, required
    /// witnesses behind, too large).
    pub refused: AtomicU64,
    /// Bytes of the entries committed (as encoded, payloads included).
    pub bytes: AtomicU64,
    /// Entries per commit.
    pub batches: HistogramTable,
    /// Seconds per commit (the transaction and its fsync).
    pub commits: HistogramTable,
    /// `{witness, outcome}`: what each witness did with each checkpoint sent to it.
    pub witness_outcomes: Counters<2>,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self {
            appended: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            batches: HistogramTable::new(1, histogram::BATCH_BOUNDS, 1.0),
            commits: HistogramTable::seconds(1, histogram::COMMIT_BOUNDS),
            witness_outcomes: Counters::default(),
        }
    }
}

impl AuditMetrics {
    /// A witness's outcome for one checkpoint (`Outcome::kind`).
    pub fn witness_outcome(&self, witness: &str, outcome: &'static str) {
        self.witness_outcomes
            .get_or_create(&Labels([
                ("witness", Value::Shared(witness.into())),
                ("outcome", outcome.into()),
            ]))
            .inc();
    }
}

/// What approvals count.
#[derive(Debug)]
pub struct ApprovalMetrics {
    /// Row per [`APPROVAL_OUTCOMES`]: from the request to the approval's end.
    pub waits: HistogramTable,
}

impl Default for ApprovalMetrics {
    fn default() -> Self {
        Self {
            waits: HistogramTable::seconds(APPROVAL_OUTCOMES.len(), histogram::APPROVAL_BOUNDS),
        }
    }
}

impl ApprovalMetrics {
    /// An approval ended with `outcome` (one of [`APPROVAL_OUTCOMES`]) after `waited`.
    pub fn ended(&self, outcome: &str, waited: Duration) {
        if let Some(row) = APPROVAL_OUTCOMES.iter().position(|o| *o == outcome) {
            self.waits.observe_duration(row, waited);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_labelled_only_once_announced_and_only_so_many() {
        let m = EndpointMetrics::new("e".into(), Counters::default());
        assert_eq!(m.tool_slot("deploy"), MAX_TOOLS, "unannounced: other");
        m.learn_tools(["deploy", "build"].into_iter());
        assert_eq!(m.tool_slot("deploy"), 0);
        assert_eq!(m.tool_slot("build"), 1);
        let many: Vec<String> = (0..2 * MAX_TOOLS).map(|i| format!("t{i}")).collect();
        m.learn_tools(many.iter().map(String::as_str));
        assert_eq!(m.tools.read().unwrap().names.len(), MAX_TOOLS);
        assert_eq!(m.tool_slot(&format!("t{}", 2 * MAX_TOOLS - 1)), MAX_TOOLS);
        let long = "x".repeat(MAX_TOOL_NAME + 1);
        assert_eq!(m.tool_slot(&long), MAX_TOOLS);
    }

    #[test]
    fn mask_reports_split_into_kind_and_rule() {
        assert_eq!(mask_labels("rule $.params.x"), ("rule", "$.params.x"));
        assert_eq!(mask_labels("header rule x-key"), ("header_rule", "x-key"));
        assert_eq!(mask_labels("detector aws_key"), ("detector", "aws_key"));
        assert_eq!(mask_labels("credential"), ("credential", "credential"));
    }
}
