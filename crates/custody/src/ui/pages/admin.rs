//! Pending approvals, and the log's health.

use maud::{Markup, html};
use serde_json::Value;

use super::{Section, Viewer, layout, pretty, text, time};

/// One decision form (approve or deny) of a held call.
fn decide_form(viewer: &Viewer<'_>, a: &Value, verb: &str, label: &str) -> Markup {
    let id = text(&a["id"]);
    let field = format!("reason-{verb}-{id}");
    html! {
        form.decide method="post" action={ "/ui/approvals/" (id) "/" (verb) } {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="arguments_sha256" value=(text(&a["arguments_sha256"]));
            label for=(field) { "Reason to " (verb) }
            input id=(field) name="reason" required maxlength="1000";
            button type="submit" class=(verb) { (label) }
        }
    }
}

/// Pending approvals with approve and deny (a reason is required for either).
pub fn approvals(viewer: &Viewer<'_>, list: &[Value], flash: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(f) = flash { p.flash role="status" { (f) } }
        @if list.is_empty() {
            p { "No call is waiting for a decision you may see." }
        }
        @for a in list {
            article.approval aria-labelledby={ "a-" (text(&a["id"])) } {
                h2 id={ "a-" (text(&a["id"])) } {
                    (text(&a["method"])) " " code { (text(&a["target"])) } " on " (text(&a["endpoint"]))
                }
                dl {
                    dt { "Approval" } dd { code { (text(&a["id"])) } }
                    dt { "Requested by" } dd { (text(&a["requester"]["name"])) }
                    dt { "Requested" } dd { (text(&a["requested_at"])) }
                    dt { "Expires" } dd { (text(&a["expires_at"])) }
                    dt { "Approvals needed" } dd { (text(&a["min_approvals"])) " (so far " (a["votes"].as_array().map_or(0, Vec::len)) ")" }
                    dt { "Policies" } dd { code { (text(&a["policies"])) } }
                    dt { "Arguments digest" } dd { code { (text(&a["arguments_sha256"])) } }
                    @if !a["request_entry"].is_null() {
                        dt { "Request entry" } dd { a href={ "/ui/entries/" (text(&a["request_entry"])) } { (text(&a["request_entry"])) } }
                    }
                }
                h3 { "Arguments (" (text(&a["arguments_view"])) ")" }
                pre.payload { (pretty(&a["arguments"])) }
                div.decisions {
                    (decide_form(viewer, a, "approve", "Approve"))
                    (decide_form(viewer, a, "deny", "Deny"))
                }
            }
        }
    };
    layout("Pending approvals", Some(viewer), Section::Approvals, body)
}

/// The log's health: size, latest checkpoint and its age, witnesses, last scrub, exports.
pub fn health(viewer: &Viewer<'_>, h: &Value) -> Markup {
    let body = html! {
        @if h["ready"] == true {
            p.ok role="status" { "Ready: the log takes entries and publishes checkpoints." }
        } @else {
            div.error role="alert" {
                p { "Not ready:" }
                ul { @for r in h["reasons"].as_array().map_or(&[][..], Vec::as_slice) { li { (text(r)) } } }
            }
        }
        dl.health {
            dt { "Origin" } dd { code { (text(&h["origin"])) } }
            dt { "Verifier key" } dd { code.wrap { (text(&h["verifier_key"])) } }
            dt { "Entries" } dd { (text(&h["size"])) }
            dt { "Latest checkpoint" }
            dd {
                @if h["checkpoint"].is_null() { "none yet" } @else {
                    "size " (text(&h["checkpoint"]["size"])) ", signed " (time(h["checkpoint"]["signed_ns"].as_u64().unwrap_or(0)))
                    " (" (text(&h["checkpoint"]["age_s"])) " s ago), " (text(&h["checkpoint"]["cosignatures"])) " cosignatures"
                }
            }
            dt { "Last scrub" }
            dd {
                @if h["scrub"].is_null() { "not run yet" } @else {
                    (time(h["scrub"]["finished_ns"].as_u64().unwrap_or(0))) ": " (text(&h["scrub"]["entries"])) " entries in "
                    (text(&h["scrub"]["took_ms"])) " ms"
                    @if !h["scrub"]["problem"].is_null() { ", " strong { "found: " (text(&h["scrub"]["problem"])) } } @else { ", nothing wrong" }
                }
            }
        }
        h2 { "Witnesses" }
        @if h["witnesses"].is_null() { p { "No witnesses are configured." } } @else {
            p { "Mode " (text(&h["witnesses"]["mode"])) ", quorum " (text(&h["witnesses"]["quorum"])) ", lag " (text(&h["witnesses"]["lag_ms"])) " ms" }
            table {
                caption { "Each witness" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Cosigned size" } th scope="col" { "Last outcome" } th scope="col" { "Failures in a row" } th scope="col" { "Alarm" } } }
                tbody {
                    @for w in h["witnesses"]["witnesses"].as_array().map_or(&[][..], Vec::as_slice) {
                        tr {
                            td { (text(&w["name"])) } td.num { (text(&w["cosigned_size"])) } td { (text(&w["last_outcome"])) }
                            td.num { (text(&w["consecutive_failures"])) } td { (text(&w["alarm"])) }
                        }
                    }
                }
            }
        }
        h2 { "Export sinks" }
        @if h["exports"].as_array().is_none_or(Vec::is_empty) { p { "No [[export]] sinks are configured." } } @else {
            table {
                caption { "Where each sink is" }
                thead { tr { th scope="col" { "Sink" } th scope="col" { "Next entry to send" } th scope="col" { "Behind by" } th scope="col" { "Last error" } } }
                tbody {
                    @for x in h["exports"].as_array().map_or(&[][..], Vec::as_slice) {
                        tr {
                            td { (text(&x["name"])) } td.num { (text(&x["cursor"])) }
                            td.num { (x["head"].as_u64().unwrap_or(0).saturating_sub(x["cursor"].as_u64().unwrap_or(0))) }
                            td { (text(&x["last_error"])) }
                        }
                    }
                }
            }
        }
    };
    layout("Log health", Some(viewer), Section::Health, body)
}
