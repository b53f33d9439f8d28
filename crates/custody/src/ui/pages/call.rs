//! A run's timeline and one entry with its receipt.

use maud::{Markup, html};
use serde_json::Value;

use super::{Section, Viewer, enc, layout, pretty, text, time};

/// One entry's headers and payload, as a block of the timeline.
fn entry_block(label: &str, e: &Value) -> Markup {
    html! {
        section.entry {
            h3 {
                (label) " · entry "
                a href={ "/ui/entries/" (text(&e["index"])) } { (text(&e["index"])) }
                " · " (text(&e["kind"])) " · " time { (time(e["time_ns"].as_u64().unwrap_or(0))) }
            }
            dl {
                dt { "Caller" } dd { (text(&e["caller"]["name"])) }
                @if !e["session"].is_null() { dt { "Session" } dd { code { (text(&e["session"])) } } }
                @if !e["id"].is_null() { dt { "JSON-RPC id" } dd { code { (text(&e["id"])) } } }
                dt { "Leaf hash" } dd { code { (text(&e["leaf"])) } }
            }
            (payload(e))
            details {
                summary { "Detail" }
                pre { (pretty(&e["detail"])) }
            }
        }
    }
}

/// The message an entry records, or why it is not shown.
fn payload(e: &Value) -> Markup {
    let erased = e["commitments"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["erased"] == true && c["slot"] == 1));
    html! {
        @if e["message_withheld"] == true || e["commitments"].as_array().is_some_and(|c| c.iter().any(|c| c["withheld"] == true)) {
            p.note { "The message is withheld: only auditors see payloads. Its commitment is in the entry." }
        } @else if erased {
            p.note { "The message was erased (see the log's payload_erased entry); its commitment stays in the tree." }
        } @else if !e["message"].is_null() {
            details open {
                summary { "Message (the masked copy the log keeps)" }
                pre.payload { (pretty(&e["message"])) }
            }
        }
    }
}

/// The masking report of a message, if any value was masked.
fn masking(label: &str, m: &Value) -> Markup {
    html! {
        @if !m.is_null() {
            div.mask {
                h4 { "Masked in the " (label) }
                pre { (pretty(m)) }
            }
        }
    }
}

/// A run's timeline: each call expandable to its request, answer, decision, approval and
/// masking.
pub fn timeline(viewer: &Viewer<'_>, run: &str, calls: &[Value]) -> Markup {
    let body = html! {
        p {
            (calls.len()) " calls and events in log order. "
            a href={ "/ui/entries?run=" (enc(run)) } { "The run's entries" }
        }
        ol.timeline {
            @for (i, c) in calls.iter().enumerate() {
                li {
                    details id={ "call-" (i) } {
                        summary {
                            span.t { (time(c["time_ns"].as_u64().unwrap_or(0))) }
                            " "
                            @if c["method"].is_null() { strong { (text(&c["kind"])) } } @else { strong { (text(&c["method"])) } }
                            @if !c["target"].is_null() { " " code { (text(&c["target"])) } }
                            @if !c["decision"].is_null() {
                                " " span class={ "badge d-" (text(&c["decision"])) } { (text(&c["decision"])) }
                            }
                            @if !c["status"].is_null() {
                                " " span class={ "badge s-" (text(&c["status"])) } { (text(&c["status"])) }
                            }
                            @if let Some(ms) = c["duration_ms"].as_f64() { " " span.dur { (ms) " ms" } }
                            @if !c["approval"].is_null() { " " span.badge.approval { "approval" } }
                            @if !c["request_mask"].is_null() || !c["answer_mask"].is_null() { " " span.badge.masked { "masked" } }
                        }
                        div.call {
                            @if !c["policies"].is_null() {
                                p { "Decided by policies: " code { (text(&c["policies"])) } }
                            }
                            @if let Some(a) = c.get("approval") {
                                div.approval {
                                    h4 { "Approval " code { (text(&a["id"])) } }
                                    ul {
                                        @for ev in a["events"].as_array().map_or(&[][..], Vec::as_slice) {
                                            li {
                                                (text(&ev["kind"])) " · " (time(ev["time_ns"].as_u64().unwrap_or(0)))
                                                @if !ev["who"].is_null() { " · by " strong { (text(&ev["who"])) } }
                                                @if !ev["reason"].is_null() { " · “" (text(&ev["reason"])) "”" }
                                                " · entry " a href={ "/ui/entries/" (text(&ev["index"])) } { (text(&ev["index"])) }
                                            }
                                        }
                                    }
                                }
                            }
                            (masking("request", &c["request_mask"]))
                            (masking("answer", &c["answer_mask"]))
                            (entry_block("Request", &c["request"]))
                            @if let Some(a) = c.get("answer") { (entry_block("Answer", a)) }
                            @for r in c["related"].as_array().map_or(&[][..], Vec::as_slice) {
                                (entry_block("Related", r))
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&format!("Run {run}"), Some(viewer), Section::Runs, body)
}

/// A stored payload as the page carries it for the browser's check.
pub struct RawPayload {
    pub slot: u8,
    /// Hex of the commitment's opening.
    pub opening: String,
    /// Base64 of the payload's bytes.
    pub data: String,
}

/// One entry, its receipt, and the in-browser check of both (and of its payloads, for those
/// who see them). `bytes_b64` is `None` for a version-1 entry shown without its message.
pub fn entry(
    viewer: &Viewer<'_>,
    e: &Value,
    bytes_b64: Option<&str>,
    payloads: &[RawPayload],
    receipt: Option<&str>,
    origin: &str,
) -> Markup {
    let index = text(&e["index"]);
    let body = html! {
        (entry_block("Entry", e))
        section.verify aria-labelledby="verify-h" {
            h2 #verify-h { "Verify in your browser" }
            @if bytes_b64.is_none() {
                p.note { "This entry (log version 1) holds its message in its bytes: only auditors may check it here. `custody verify` checks it offline." }
            } @else if let Some(r) = receipt {
                p {
                    "Your browser hashes the entry's bytes, checks the inclusion proof up to the checkpoint's root, and checks "
                    "the checkpoint's signature with the verifier key you pin here (WebCrypto, Ed25519), then each payload you may see "
                    "against its commitment in the entry. What the server says is not trusted: what is shown after the check is decoded "
                    "from the verified bytes. (The script itself comes from this gateway: `custody verify` trusts nothing it serves.)"
                }
                div.field {
                    label for="verifier-key" { "Verifier key of log " code { (origin) } }
                    input #verifier-key name="verifier-key" autocomplete="off" spellcheck="false"
                        placeholder="custody.example/log+1a2b3c4d+AQ…";
                }
                div.field.check {
                    input #pin-key type="checkbox" checked;
                    label for="pin-key" { "Remember this key in this browser" }
                }
                button #verify type="button" data-index=(index) { "Verify entry " (index) }
                div #verify-result role="status" aria-live="polite" {}
                details {
                    summary { "Receipt (C2SP tlog-proof)" }
                    pre #receipt { (r) }
                }
                details {
                    summary { "Entry bytes (base64)" }
                    pre #entry-bytes.wrap { (bytes_b64.unwrap_or("")) }
                }
                @for p in payloads {
                    pre.payload-bytes hidden data-slot=(p.slot) data-opening=(p.opening) { (p.data) }
                }
            } @else {
                p.note { "No signed checkpoint covers this entry yet; reload in a few seconds." }
            }
        }
    };
    layout(
        &format!("Entry {index}"),
        Some(viewer),
        Section::Entries,
        body,
    )
}
