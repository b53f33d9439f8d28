//! What the explorer shows: entries read from the log (never from the index), and a run's
//! timeline with each request paired with its answer.

use serde_json::{Map, Value, json};
use tlog::Entry;

use super::QueryError;
use super::index::IndexError;
use crate::store::{LogReader, Reader};

/// Entry `idx` as JSON (as `custody log` prints it) with its leaf hash; with its payloads
/// when `payloads`, else only its commitments, the payloads marked withheld.
///
/// # Errors
/// The log cannot be read or the entry decoded.
pub fn entry(log: &Reader, idx: u64, payloads: bool) -> Result<Value, QueryError> {
    let (leaf, bytes) = log.entry(idx).map_err(IndexError::from)?;
    let e = Entry::decode(&bytes).map_err(|err| IndexError::Decode(idx, err))?;
    let mut json = crate::export::entries::to_json(&e, &leaf.to_hex());
    if payloads {
        let stored = log.payloads(idx).map_err(IndexError::from)?;
        crate::export::entries::with_payloads(&mut json, &e, &stored);
    } else if e.version != tlog::entry::V1 {
        let commitments: Vec<Value> = e
            .commitments
            .iter()
            .map(|c| {
                json!({ "slot": c.slot, "length": c.length, "hash": c.hash.to_hex(), "withheld": true })
            })
            .collect();
        json["version"] = json!(e.version);
        json["commitments"] = Value::Array(commitments);
    } else {
        // A version-1 entry holds its message in the hashed entry: withheld all the same.
        json["message"] = Value::Null;
        json["message_withheld"] = json!(true);
    }
    Ok(json)
}

fn ms(from: u64, to: u64) -> Value {
    #[allow(clippy::cast_precision_loss)]
    let ms = to.saturating_sub(from) as f64 / 1e6;
    json!((ms * 1000.0).round() / 1000.0)
}

/// The timeline of the entries `indices` (a run's, in log order): every call as one item,
/// its request paired with its answer (and duration), the policy decision and its policies,
/// its approval (who, when, why) and the masking of request and answer. Entries that answer
/// nothing in the list are items of their own.
///
/// # Errors
/// As [`entry`].
pub fn timeline(log: &Reader, indices: &[u64], payloads: bool) -> Result<Vec<Value>, QueryError> {
    let mut items: Vec<Map<String, Value>> = Vec::new();
    let mut by_request: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for &idx in indices {
        let e = entry(log, idx, payloads)?;
        let kind = e["kind"].as_str().unwrap_or("").to_string();
        let time = e["time_ns"].as_u64().unwrap_or(0);
        let request = e["request"].as_u64();
        if let Some(&at) = request.and_then(|r| by_request.get(&r)) {
            let item = &mut items[at];
            let start = item["time_ns"].as_u64().unwrap_or(0);
            if kind == "response" || kind == "error" {
                item.insert("duration_ms".into(), ms(start, time));
                item.insert(
                    "status".into(),
                    json!(if kind == "response" { "ok" } else { "error" }),
                );
                if let Some(m) = e["detail"].get("mask") {
                    item.insert("answer_mask".into(), m.clone());
                }
                item.insert("answer".into(), e);
            } else if kind.starts_with("approval_") {
                let d = &e["detail"];
                let approval = item
                    .entry("approval")
                    .or_insert_with(|| json!({ "id": d["approval"], "events": [] }));
                if let Some(events) = approval["events"].as_array_mut() {
                    events.push(json!({
                        "kind": kind,
                        "index": e["index"],
                        "leaf": e["leaf"],
                        "time_ns": time,
                        "who": d.get("approver").cloned().unwrap_or(Value::Null),
                        "reason": d.get("reason").cloned().unwrap_or(Value::Null),
                    }));
                }
            } else {
                if let Some(a) = item
                    .entry("related")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    a.push(e);
                }
            }
            continue;
        }
        let mut item = Map::new();
        item.insert("time_ns".into(), json!(time));
        item.insert("kind".into(), json!(kind));
        item.insert("method".into(), e["method"].clone());
        item.insert("target".into(), e["target"].clone());
        let policy = e["detail"].get("policy").cloned().unwrap_or(Value::Null);
        item.insert("decision".into(), policy["decision"].clone());
        item.insert("policies".into(), policy["policies"].clone());
        if let Some(m) = e["detail"].get("mask") {
            item.insert("request_mask".into(), m.clone());
        }
        if kind == "rejected" {
            item.insert("status".into(), json!("refused"));
        }
        by_request.insert(idx, items.len());
        item.insert("request".into(), e);
        items.push(item);
    }
    Ok(items.into_iter().map(Value::Object).collect())
}

/// The answer to request `idx` as the index knows it: its index and time.
///
/// # Errors
/// The index cannot be read.
pub fn answer_of(index: &super::Index, idx: u64) -> Result<Option<(u64, u64, String)>, QueryError> {
    use super::index::Cell;
    let rows = index.rows(
        "SELECT idx, time_ns, kind FROM rows WHERE request = ?1 \
         AND kind IN ('response', 'error') ORDER BY idx LIMIT 1",
        &[Cell::int(idx)],
        "look an answer up",
    )?;
    Ok(rows.first().map(|r| {
        let n = |i: usize| r.get(i).and_then(Cell::uint).unwrap_or(0);
        (
            n(0),
            n(1),
            r.get(2).and_then(Cell::text).unwrap_or_default(),
        )
    }))
}

/// A page of entries as JSON, each request with `answered_by` (the answer's index, kind and
/// the call's duration) when the index knows its answer.
///
/// # Errors
/// As [`entry`].
pub fn page(open: &super::Open, indices: &[u64], payloads: bool) -> Result<Vec<Value>, QueryError> {
    let mut out = Vec::with_capacity(indices.len());
    for &idx in indices {
        let mut e = entry(&open.log, idx, payloads)?;
        if e["kind"] == "request"
            && let Some((a, t, kind)) = answer_of(&open.index, idx)?
        {
            let start = e["time_ns"].as_u64().unwrap_or(0);
            e["answered_by"] = json!({ "index": a, "kind": kind, "duration_ms": ms(start, t) });
        }
        out.push(e);
    }
    Ok(out)
}
