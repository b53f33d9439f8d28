//! One scrape: every metric in the Prometheus text format (version 0.0.4), counters from what
//! the gateway counted, gauges read from its state now.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::labels::{Borrowed, METHODS, OUTCOMES};
use super::{APPROVAL_OUTCOMES, Counters, DECISIONS, MAX_TOOLS, Metrics, UPSTREAM_OUTCOMES};
use crate::export::Exports;
use crate::relay::Relay;

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric of the gateway `relay` serves (and its export sinks), as Prometheus text.
pub fn render(relay: &Arc<Relay>, exports: &Arc<Exports>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(relay.clone(), exports.clone())));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String does not fail, and our collector only fails when the writer does.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

struct Scrape(Arc<Relay>, Arc<Exports>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

fn counter(m: &mut MetricEncoder<'_>, v: u64) -> fmt::Result {
    m.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    m: &mut MetricEncoder<'_>,
    v: V,
) -> fmt::Result {
    m.encode_gauge(&v)
}

/// One family: its descriptor, then `series` writes its samples.
fn family(
    d: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl FnOnce(&mut MetricEncoder<'_>) -> fmt::Result,
) -> fmt::Result {
    let mut m = d.encode_descriptor(name, help, None, kind)?;
    series(&mut m)
}

fn counters<const N: usize>(
    d: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    f: &Counters<N>,
) -> fmt::Result {
    let m = d.encode_descriptor(name, help, None, MetricType::Counter)?;
    f.encode(m)
}

impl Collector for Scrape {
    fn encode(&self, mut d: DescriptorEncoder<'_>) -> fmt::Result {
        let relay = &self.0;
        let m: &Metrics = &relay.metrics;
        let mut eps: Vec<&Arc<super::EndpointMetrics>> = m.endpoints().iter().collect();
        eps.push(&m.unknown_endpoint);

        family(
            &mut d,
            "custody_build_info",
            "The running custody's version (always 1).",
            MetricType::Gauge,
            |f| {
                gauge(
                    &mut f.encode_family(&Borrowed([("version", env!("CARGO_PKG_VERSION"))]))?,
                    1u64,
                )
            },
        )?;

        // --- requests ----------------------------------------------------------------------
        family(
            &mut d,
            "custody_requests",
            "MCP requests answered, by endpoint, JSON-RPC method and outcome (a stream counts when it ends).",
            MetricType::Counter,
            |f| {
                for ep in &eps {
                    for (mi, &method) in METHODS.iter().enumerate() {
                        for (oi, &outcome) in OUTCOMES.iter().enumerate() {
                            let n = ep.requests.count(mi * OUTCOMES.len() + oi);
                            if n > 0 {
                                let labels = Borrowed([
                                    ("endpoint", &*ep.name),
                                    ("method", method),
                                    ("outcome", outcome),
                                ]);
                                counter(&mut f.encode_family(&labels)?, n)?;
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        family(
            &mut d,
            "custody_request_duration_seconds",
            "Time from a request's arrival to the end of its answer (a stream: until it ended).",
            MetricType::Histogram,
            |f| {
                for ep in &eps {
                    for (mi, &method) in METHODS.iter().enumerate() {
                        for (oi, &outcome) in OUTCOMES.iter().enumerate() {
                            let row = mi * OUTCOMES.len() + oi;
                            if ep.requests.count(row) > 0 {
                                let labels = Borrowed([
                                    ("endpoint", &*ep.name),
                                    ("method", method),
                                    ("outcome", outcome),
                                ]);
                                ep.requests.encode(row, &mut f.encode_family(&labels)?)?;
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        family(
            &mut d,
            "custody_tool_calls",
            "tools/call requests by tool; tools an upstream did not announce in tools/list (or past the first 128) count as \"other\".",
            MetricType::Counter,
            |f| {
                for ep in m.endpoints() {
                    let names = ep
                        .tools
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .names
                        .clone();
                    for slot in 0..=MAX_TOOLS {
                        let tool = match names.get(slot) {
                            Some(n) => &**n,
                            None if slot == MAX_TOOLS => "other",
                            None => continue,
                        };
                        for (oi, &outcome) in OUTCOMES.iter().enumerate() {
                            let n =
                                ep.tool_calls[slot * OUTCOMES.len() + oi].load(Ordering::Relaxed);
                            if n > 0 {
                                let labels = Borrowed([
                                    ("endpoint", &*ep.name),
                                    ("tool", tool),
                                    ("outcome", outcome),
                                ]);
                                counter(&mut f.encode_family(&labels)?, n)?;
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        family(
            &mut d,
            "custody_upstream_duration_seconds",
            "Time from forwarding a call upstream to its answer (answered) or failure (failed).",
            MetricType::Histogram,
            |f| {
                for ep in m.endpoints() {
                    for (row, &outcome) in UPSTREAM_OUTCOMES.iter().enumerate() {
                        if ep.upstream.count(row) > 0 {
                            let labels = Borrowed([("endpoint", &*ep.name), ("outcome", outcome)]);
                            ep.upstream.encode(row, &mut f.encode_family(&labels)?)?;
                        }
                    }
                }
                Ok(())
            },
        )?;
        family(
            &mut d,
            "custody_policy_decisions",
            "Access-policy decisions on requests, by endpoint and decision.",
            MetricType::Counter,
            |f| {
                for ep in m.endpoints() {
                    for (i, &decision) in DECISIONS.iter().enumerate() {
                        let n = ep.decisions[i].load(Ordering::Relaxed);
                        if n > 0 {
                            counter(
                                &mut f.encode_family(&Borrowed([
                                    ("endpoint", &*ep.name),
                                    ("decision", decision),
                                ]))?,
                                n,
                            )?;
                        }
                    }
                }
                Ok(())
            },
        )?;
        counters(
            &mut d,
            "custody_auth_failures",
            "Refused credentials, by endpoint and reason.",
            &m.auth_failures,
        )?;
        counters(
            &mut d,
            "custody_limit_refusals",
            "Requests and connections refused by a limit, by endpoint (empty: before one was known) and limit.",
            &m.limited,
        )?;
        counters(
            &mut d,
            "custody_masks",
            "Values masked in what the log records, by endpoint, kind (rule, header_rule, detector, credential) and rule.",
            &m.masks,
        )?;

        // --- sessions and processes ----------------------------------------------------------
        family(
            &mut d,
            "custody_sessions",
            "Sessions open, by endpoint.",
            MetricType::Gauge,
            |f| {
                for ep in relay.endpoints() {
                    gauge(
                        &mut f.encode_family(&Borrowed([("endpoint", &*ep.name)]))?,
                        ep.session_count() as u64,
                    )?;
                }
                Ok(())
            },
        )?;
        family(
            &mut d,
            "custody_upstream_processes",
            "Upstream processes running, by stdio endpoint.",
            MetricType::Gauge,
            |f| {
                for ep in relay.endpoints().filter(|e| e.is_stdio()) {
                    gauge(
                        &mut f.encode_family(&Borrowed([("endpoint", &*ep.name)]))?,
                        ep.process_count(),
                    )?;
                }
                Ok(())
            },
        )?;

        // --- approvals -------------------------------------------------------------------------
        family(
            &mut d,
            "custody_approvals_pending",
            "Calls held, waiting for an approval.",
            MetricType::Gauge,
            |f| gauge(f, relay.approvals.pending_count() as u64),
        )?;
        family(
            &mut d,
            "custody_approval_wait_seconds",
            "Time from an approval's request to its end, by how it ended.",
            MetricType::Histogram,
            |f| {
                for (row, &outcome) in APPROVAL_OUTCOMES.iter().enumerate() {
                    if m.approvals.waits.count(row) > 0 {
                        m.approvals.waits.encode(
                            row,
                            &mut f.encode_family(&Borrowed([("outcome", outcome)]))?,
                        )?;
                    }
                }
                Ok(())
            },
        )?;

        super::render_audit::encode(relay, &mut d)?;

        // --- export sinks ------------------------------------------------------------------
        let sinks = self.1.status();
        let head = relay.audit.head().size;
        family(
            &mut d,
            "custody_export_lag_entries",
            "Committed entries each [[export]] sink has not delivered yet.",
            MetricType::Gauge,
            |f| {
                for s in &sinks {
                    gauge(
                        &mut f.encode_family(&Borrowed([("sink", s.name.as_str())]))?,
                        head.saturating_sub(s.cursor),
                    )?;
                }
                Ok(())
            },
        )?;
        family(
            &mut d,
            "custody_export_failing",
            "1 while an [[export]] sink's last delivery failed (it retries with backoff).",
            MetricType::Gauge,
            |f| {
                for s in &sinks {
                    gauge(
                        &mut f.encode_family(&Borrowed([("sink", s.name.as_str())]))?,
                        u64::from(s.last_error.is_some()),
                    )?;
                }
                Ok(())
            },
        )
    }
}
