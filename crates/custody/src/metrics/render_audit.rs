//! The log's and the witnesses' part of a scrape.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::labels::Borrowed;
use crate::relay::Relay;

fn one(
    d: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl FnOnce(&mut MetricEncoder<'_>) -> fmt::Result,
) -> fmt::Result {
    let mut m = d.encode_descriptor(name, help, None, kind)?;
    series(&mut m)
}

fn counter(m: &mut MetricEncoder<'_>, v: u64) -> fmt::Result {
    m.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn seconds_since(ns: u64) -> f64 {
    crate::audit::now_ns().saturating_sub(ns) as f64 / 1e9
}

/// Bytes of the log's database files in `dir` (the database and its write-ahead log).
fn store_bytes(dir: &std::path::Path) -> u64 {
    let db = dir.join(crate::store::FILE);
    let wal = dir.join(format!("{}-wal", crate::store::FILE));
    [db, wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

pub fn encode(relay: &Arc<Relay>, d: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let audit = &relay.audit;
    let am = audit.metrics();
    let head = audit.head();
    one(
        d,
        "custody_audit_appends",
        "Entries offered to the log, by outcome: committed, failed (their commit failed), refused (the log was not taking entries).",
        MetricType::Counter,
        |f| {
            for (outcome, v) in [
                ("committed", &am.appended),
                ("failed", &am.failed),
                ("refused", &am.refused),
            ] {
                counter(
                    &mut f.encode_family(&Borrowed([("outcome", outcome)]))?,
                    v.load(Ordering::Relaxed),
                )?;
            }
            Ok(())
        },
    )?;
    one(
        d,
        "custody_audit_appended_bytes",
        "Bytes of the entries committed (encoded, payloads included).",
        MetricType::Counter,
        |f| counter(f, am.bytes.load(Ordering::Relaxed)),
    )?;
    one(
        d,
        "custody_audit_batch_entries",
        "Entries per commit (one transaction, one fsync).",
        MetricType::Histogram,
        |f| am.batches.encode(0, f),
    )?;
    one(
        d,
        "custody_audit_commit_duration_seconds",
        "Time per commit: the transaction and its fsync.",
        MetricType::Histogram,
        |f| am.commits.encode(0, f),
    )?;
    one(
        d,
        "custody_audit_log_entries",
        "Entries in the log (its tree's size).",
        MetricType::Gauge,
        |f| f.encode_gauge(&head.size),
    )?;
    one(
        d,
        "custody_audit_log_bytes",
        "Bytes of the log's database files (SQLite: the database and its write-ahead log).",
        MetricType::Gauge,
        |f| f.encode_gauge(&store_bytes(audit.data_dir())),
    )?;
    let latest = audit.latest_checkpoint();
    one(
        d,
        "custody_audit_checkpoint_entries",
        "Entries covered by the latest published checkpoint.",
        MetricType::Gauge,
        |f| f.encode_gauge(&latest.as_ref().map_or(0, |c| c.size)),
    )?;
    one(
        d,
        "custody_audit_checkpoint_age_seconds",
        "Time since the latest published checkpoint was signed.",
        MetricType::Gauge,
        |f| match &latest {
            Some(c) => f.encode_gauge(&seconds_since(c.signed_ns)),
            None => Ok(()),
        },
    )?;
    one(
        d,
        "custody_audit_integrity_alarm",
        "1 while an integrity alarm stands (a changed entry, a diverged store, a witness that saw a fork or rollback): investigate, then restart.",
        MetricType::Gauge,
        |f| f.encode_gauge(&u64::from(audit.health().alarm)),
    )?;

    // --- witnesses ---------------------------------------------------------------------------
    let md = d.encode_descriptor("custody_witness_outcomes", "What each witness did with each checkpoint sent to it: cosigned, fork, rollback, misconfigured, unavailable, invalid, skipped.", None, MetricType::Counter)?;
    am.witness_outcomes.encode(md)?;
    let Some(w) = audit.witnesses() else {
        return Ok(());
    };
    one(
        d,
        "custody_witness_lag_seconds",
        "How long the newest entries have waited for a checkpoint the witnesses' quorum cosigned (0: none wait).",
        MetricType::Gauge,
        |f| f.encode_gauge(&(w.lag_ms as f64 / 1e3)),
    )?;
    one(
        d,
        "custody_witness_max_lag_seconds",
        "witness.max_lag: in required mode, calls are refused once the lag passes it.",
        MetricType::Gauge,
        |f| f.encode_gauge(&(w.max_lag_ms as f64 / 1e3)),
    )?;
    one(
        d,
        "custody_witness_entries_behind",
        "Entries of the log past the last checkpoint each witness cosigned.",
        MetricType::Gauge,
        |f| {
            for s in &w.witnesses {
                let behind = head.size.saturating_sub(s.cosigned_size.unwrap_or(0));
                f.encode_family(&Borrowed([("witness", s.name.as_str())]))?
                    .encode_gauge(&behind)?;
            }
            Ok(())
        },
    )?;
    one(
        d,
        "custody_witness_last_cosignature_timestamp_seconds",
        "When each witness last cosigned (its timestamp, Unix seconds); absent before the first.",
        MetricType::Gauge,
        |f| {
            for s in &w.witnesses {
                if let Some(t) = s.last_cosignature {
                    f.encode_family(&Borrowed([("witness", s.name.as_str())]))?
                        .encode_gauge(&t)?;
                }
            }
            Ok(())
        },
    )?;
    one(
        d,
        "custody_witness_consecutive_failures",
        "Checkpoints in a row each witness did not cosign.",
        MetricType::Gauge,
        |f| {
            for s in &w.witnesses {
                f.encode_family(&Borrowed([("witness", s.name.as_str())]))?
                    .encode_gauge(&u64::from(s.consecutive_failures))?;
            }
            Ok(())
        },
    )?;
    one(
        d,
        "custody_witness_alarm",
        "1 when a witness raised a fork or rollback alarm (signing stopped).",
        MetricType::Gauge,
        |f| {
            for s in &w.witnesses {
                f.encode_family(&Borrowed([("witness", s.name.as_str())]))?
                    .encode_gauge(&u64::from(s.alarm.is_some()))?;
            }
            Ok(())
        },
    )
}
