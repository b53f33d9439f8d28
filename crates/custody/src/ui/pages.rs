//! The pages, rendered from what the explorer and approvals APIs return. maud escapes every
//! value it interpolates: nothing a client, an upstream or an approver wrote can become markup.

mod admin;
mod call;

use std::time::{Duration, UNIX_EPOCH};

use maud::{DOCTYPE, Markup, html};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

pub use admin::{approvals, health};
pub use call::{RawPayload, entry, timeline};

/// Which section of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Runs,
    Entries,
    Approvals,
    Health,
    None,
}

/// Who is signed in, as the page header shows them, and the form token.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub csrf: &'a str,
}

/// A path segment or query value, percent-encoded.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A time in nanoseconds as RFC 3339 UTC with milliseconds.
pub fn time(ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// A JSON value as text: strings bare, `null` empty, anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON value, pretty-printed.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The frame of every page.
pub fn layout(title: &str, viewer: Option<&Viewer<'_>>, at: Section, body: Markup) -> Markup {
    let nav = [
        (Section::Runs, "/ui/runs", "Runs"),
        (Section::Entries, "/ui/entries", "Entries"),
        (Section::Approvals, "/ui/approvals", "Approvals"),
        (Section::Health, "/ui/health", "Log health"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · custody" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml";
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/runs" { "custody" }
                    @if let Some(v) = viewer {
                        nav aria-label="Sections" {
                            ul {
                                @for (s, href, label) in nav {
                                    li {
                                        @if s == at {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form.signout method="post" action="/ui/logout" {
                            span.who { "Signed in as " strong { (v.name) } }
                            input type="hidden" name="csrf" value=(v.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The sign-in page.
pub fn login(oidc: Option<&str>, error: Option<&str>, next: &str) -> Markup {
    let body = html! {
        @if let Some(e) = error {
            p.error role="alert" { (e) }
        }
        @if let Some(issuer) = oidc {
            section {
                h2 { "With your organisation's account" }
                p { a.button href={ "/ui/auth/oidc?next=" (enc(next)) } { "Sign in with " (issuer) } }
            }
        }
        section {
            h2 { "With a bearer token" }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token (an approver's or auditor's token, or an OIDC token)" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
            p.hint { "The token stays on the gateway for this sign-in only; it is never shown again or written to the log." }
        }
    };
    layout("Sign in", None, Section::None, body)
}

/// A page saying what went wrong.
pub fn error(viewer: Option<&Viewer<'_>>, status: u16, message: &str) -> Markup {
    let title = match status {
        400 => "That request is not valid",
        403 => "Not yours to see",
        404 => "Not found",
        503 => "The log cannot serve this now",
        _ => "Something went wrong",
    };
    layout(
        title,
        viewer,
        Section::None,
        html! { p.error role="alert" { (message) } p { a href="/ui/runs" { "Back to the runs" } } },
    )
}

/// One filter field of a search form.
fn field(name: &str, label: &str, hint: &str, filters: &[(String, String)]) -> Markup {
    let value = filters
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str());
    html! {
        div.field {
            label for=(name) { (label) }
            input id=(name) name=(name) value=(value) placeholder=(hint);
        }
    }
}

fn checked(name: &str, filters: &[(String, String)]) -> bool {
    filters.iter().any(|(k, v)| k == name && v == "true")
}

/// The filters of the runs and entries pages.
fn filters_form(action: &str, filters: &[(String, String)], entries: bool) -> Markup {
    let decision = filters
        .iter()
        .find(|(k, _)| k == "decision")
        .map_or("", |(_, v)| v.as_str());
    html! {
        form.filters method="get" action=(action) role="search" {
            (field("repository", "Repository", "acme/api", filters))
            (field("workflow", "Workflow", "deploy", filters))
            (field("actor", "Actor", "octocat", filters))
            (field("principal", "Principal", "acme/api@refs/heads/main", filters))
            (field("endpoint", "Endpoint", "prod", filters))
            (field("tool", "Tool, resource or prompt", "deploy", filters))
            (field("since", "Since", "24h or 2026-11-26T10:00:00Z", filters))
            @if entries {
                (field("run", "Run", "run id", filters))
                (field("kind", "Kind", "request", filters))
                (field("method", "Method", "tools/call", filters))
            }
            div.field {
                label for="decision" { "Decision" }
                select #decision name="decision" {
                    option value="" selected[decision.is_empty()] { "any" }
                    @for d in ["allow", "deny", "approval"] {
                        option value=(d) selected[decision == d] { (d) }
                    }
                }
            }
            div.field.check {
                input #errors type="checkbox" name="errors" value="true" checked[checked("errors", filters)];
                label for="errors" { "Errors only" }
            }
            @if entries {
                div.field.check {
                    input #masked type="checkbox" name="masked" value="true" checked[checked("masked", filters)];
                    label for="masked" { "Masked only" }
                }
            }
            button type="submit" { "Search" }
        }
    }
}

/// The runs page.
pub fn runs(viewer: &Viewer<'_>, filters: &[(String, String)], runs: &[Value]) -> Markup {
    let body = html! {
        (filters_form("/ui/runs", filters, false))
        @if runs.is_empty() {
            p { "No runs match." }
        } @else {
            table {
                caption { (runs.len()) " runs, the latest first" }
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Repository" } th scope="col" { "Workflow" }
                    th scope="col" { "Principal" } th scope="col" { "Calls" } th scope="col" { "Denied" }
                    th scope="col" { "Approvals" } th scope="col" { "Errors" } th scope="col" { "First" } th scope="col" { "Last" }
                } }
                tbody {
                    @for r in runs {
                        tr {
                            td { a href={ "/ui/runs/" (enc(&text(&r["id"]))) } {
                                (text(&r["run_id"]))
                                @if let Some(a) = r["attempt"].as_str() { " (attempt " (a) ")" }
                            } }
                            td { (text(&r["repository"])) }
                            td { (text(&r["workflow"])) }
                            td { (text(&r["principal"])) }
                            td.num { (text(&r["calls"])) }
                            td.num { (text(&r["denials"])) }
                            td.num { (text(&r["approvals"])) }
                            td.num { (text(&r["errors"])) }
                            td { (time(r["first_ns"].as_u64().unwrap_or(0))) }
                            td { (time(r["last_ns"].as_u64().unwrap_or(0))) }
                        }
                    }
                }
            }
        }
    };
    layout("Runs", Some(viewer), Section::Runs, body)
}

/// The entries search page.
pub fn entries(
    viewer: &Viewer<'_>,
    filters: &[(String, String)],
    entries: &[Value],
    next: Option<&str>,
) -> Markup {
    let more = next.map(|cursor| {
        let mut q: Vec<String> = filters
            .iter()
            .filter(|(k, _)| k != "cursor")
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        q.push(format!("cursor={}", enc(cursor)));
        format!("/ui/entries?{}", q.join("&"))
    });
    let body = html! {
        (filters_form("/ui/entries", filters, true))
        @if entries.is_empty() {
            p { "No entries match." }
        } @else {
            table {
                caption { (entries.len()) " entries, the newest first" }
                thead { tr {
                    th scope="col" { "Index" } th scope="col" { "Time" } th scope="col" { "Kind" }
                    th scope="col" { "Endpoint" } th scope="col" { "Method" } th scope="col" { "Target" }
                    th scope="col" { "Caller" } th scope="col" { "Decision" }
                } }
                tbody {
                    @for e in entries {
                        tr {
                            td { a href={ "/ui/entries/" (text(&e["index"])) } { (text(&e["index"])) } }
                            td { (time(e["time_ns"].as_u64().unwrap_or(0))) }
                            td { (text(&e["kind"])) }
                            td { (text(&e["endpoint"])) }
                            td { (text(&e["method"])) }
                            td { (text(&e["target"])) }
                            td { (text(&e["caller"]["name"])) }
                            td { (text(&e["detail"]["policy"]["decision"])) }
                        }
                    }
                }
            }
            @if let Some(href) = more {
                p { a href=(href) rel="next" { "Older entries" } }
            }
        }
    };
    layout("Entries", Some(viewer), Section::Entries, body)
}
