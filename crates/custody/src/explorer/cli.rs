//! `custody log` with filters, `custody log timeline RUN` and `custody log reindex`: the
//! explorer from a terminal, reading a local data directory (through its search index, built
//! if missing) or a running gateway's API (`--gateway`).

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;

use anyhow::Context as _;

use super::query::{self, Filter, Order, Scope};
use super::{Open, view};
use crate::store::Location;

/// How entries are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object a line.
    Jsonl,
    /// A table for people: times, calls paired with their answers and durations.
    Table,
    /// Comma-separated values with a header row, for spreadsheets (cells that a spreadsheet
    /// would run as a formula are quoted with a leading `'`).
    Csv,
    /// OCSF 1.5.0 API Activity events, one a line (calls and their answers; a local data
    /// directory only).
    Ocsf,
}

/// The explorer's filters and sources, as `custody log` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryArgs {
    /// Entries at or after this time: RFC 3339, or a duration back from now (15m, 1h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Entries before this time (as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// The principal's name.
    #[arg(long)]
    pub principal: Option<String>,
    /// The CI repository (GitHub `repository` claim).
    #[arg(long = "repo")]
    pub repository: Option<String>,
    #[arg(long)]
    pub workflow: Option<String>,
    /// A run: its id as `custody log runs`/the API gives it, a GitHub run id or a GitLab
    /// pipeline id.
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    #[arg(long)]
    pub environment: Option<String>,
    /// The GitLab project path.
    #[arg(long)]
    pub project: Option<String>,
    /// The GitLab pipeline id.
    #[arg(long)]
    pub pipeline: Option<String>,
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    /// The JSON-RPC method (tools/call, ...).
    #[arg(long)]
    pub method: Option<String>,
    /// The tool, resource or prompt.
    #[arg(long)]
    pub tool: Option<String>,
    /// The policy decision: allow, deny or approval.
    #[arg(long)]
    pub decision: Option<String>,
    /// The approval id.
    #[arg(long)]
    pub approval: Option<String>,
    /// Only entries whose message had values masked.
    #[arg(long)]
    pub masked: bool,
    /// Only errors and refusals.
    #[arg(long)]
    pub errors: bool,
    /// Oldest first (default: newest first).
    #[arg(long)]
    pub oldest: bool,
    /// How to print: a table on a terminal, JSON lines otherwise.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    #[command(flatten)]
    pub remote: Remote,
}

/// A running gateway to read through instead of a data directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Remote {
    /// Read through this gateway's explorer API (http://HOST:PORT) instead of a data
    /// directory.
    #[arg(long, env = "CUSTODY_GATEWAY")]
    pub gateway: Option<String>,
    /// The environment variable holding the bearer token for --gateway.
    #[arg(long, default_value = "CUSTODY_TOKEN")]
    pub token_env: String,
}

impl QueryArgs {
    /// Whether any explorer flag was given (else `custody log` prints as before).
    pub fn any(&self) -> bool {
        !pairs(&self.filter(None)).is_empty()
            || self.oldest
            || self.format.is_some()
            || self.remote.gateway.is_some()
    }

    /// The filter, with `custody log --kind`.
    pub fn filter(&self, kind: Option<String>) -> Filter {
        Filter {
            since: self.since.clone(),
            until: self.until.clone(),
            principal: self.principal.clone(),
            repository: self.repository.clone(),
            workflow: self.workflow.clone(),
            run: self.run.clone(),
            actor: self.actor.clone(),
            git_ref: self.git_ref.clone(),
            environment: self.environment.clone(),
            project: self.project.clone(),
            pipeline: self.pipeline.clone(),
            endpoint: self.endpoint.clone(),
            session: self.session.clone(),
            method: self.method.clone(),
            tool: self.tool.clone(),
            kind,
            decision: self.decision.clone(),
            approval: self.approval.clone(),
            masked: self.masked.then_some(true),
            errors: self.errors.then_some(true),
        }
    }
}

/// The filter's set fields as query parameters.
pub fn pairs(f: &Filter) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut put = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            out.push((k, v.clone()));
        }
    };
    put("since", &f.since);
    put("until", &f.until);
    put("principal", &f.principal);
    put("repository", &f.repository);
    put("workflow", &f.workflow);
    put("run", &f.run);
    put("actor", &f.actor);
    put("ref", &f.git_ref);
    put("environment", &f.environment);
    put("project", &f.project);
    put("pipeline", &f.pipeline);
    put("endpoint", &f.endpoint);
    put("session", &f.session);
    put("method", &f.method);
    put("tool", &f.tool);
    put("kind", &f.kind);
    put("decision", &f.decision);
    put("approval", &f.approval);
    if f.masked == Some(true) {
        out.push(("masked", "true".into()));
    }
    if f.errors == Some(true) {
        out.push(("errors", "true".into()));
    }
    out
}

fn query_string(pairs: &[(&str, String)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Opens the local index, built or brought up to date from the log first.
fn open_local(data: &Path) -> anyhow::Result<Open> {
    let mut open = Open::new(data, &Location::dir(data)).with_context(|| {
        format!(
            "opening the log and its search index in {} (is it a gateway's data directory?)",
            data.display()
        )
    })?;
    open.index.catch_up(&open.log)?;
    Ok(open)
}

/// `custody log reindex`: rebuilds the search index from the log.
///
/// # Errors
/// The log or index cannot be read or written.
pub fn reindex(data: &Path) -> anyhow::Result<u64> {
    let mut open = Open::new(data, &Location::dir(data))
        .with_context(|| format!("opening the log in {}", data.display()))?;
    Ok(open.index.rebuild(&open.log)?)
}

fn format_of(f: Option<Format>) -> Format {
    f.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Jsonl
    })
}

fn token(env: &str) -> anyhow::Result<String> {
    std::env::var(env)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| {
            format!("--gateway needs a bearer token in ${env} (--token-env names the variable)")
        })
}

/// `custody log` with explorer flags: at most `limit` entries (all when `None`).
///
/// # Errors
/// A bad filter, an unreadable log or index, or a gateway that refuses.
pub fn entries(
    data: &Path,
    args: &QueryArgs,
    kind: Option<String>,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let filter = args.filter(kind);
    let order = if args.oldest {
        Order::Oldest
    } else {
        Order::Newest
    };
    let format = format_of(args.format);
    let mut left = limit.unwrap_or(u64::MAX);
    let mut cursor: Option<String> = None;
    if format == Format::Ocsf && args.remote.gateway.is_some() {
        anyhow::bail!(
            "--format ocsf reads a local data directory (--data); from a gateway, stream OCSF with an [[export]] sink instead"
        );
    }
    let mut out = super::print::Printer::new(format);
    let rt = args
        .remote
        .gateway
        .as_ref()
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        })
        .transpose()?;
    let local = match &args.remote.gateway {
        None => Some(open_local(data)?),
        Some(_) => None,
    };
    while left > 0 {
        let n = u32::try_from(left.min(u64::from(query::MAX_LIMIT))).unwrap_or(query::MAX_LIMIT);
        let (items, next) = if let (Some(open), None) = (&local, &args.remote.gateway) {
            let page = query::entries(
                &open.index,
                &Scope::All,
                &filter,
                order,
                cursor.as_deref(),
                n,
            )?;
            (view::page(open, &page.indices, true)?, page.next)
        } else {
            let gateway = args.remote.gateway.clone().unwrap_or_default();
            let target = crate::cli::approvals::Target {
                gateway,
                token: token(&args.remote.token_env)?,
            };
            let mut q = pairs(&filter);
            q.push(("limit", n.to_string()));
            q.push((
                "order",
                if args.oldest { "oldest" } else { "newest" }.into(),
            ));
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let path = format!("/api/v1/entries?{}", query_string(&q));
            let v = rt
                .as_ref()
                .map(|rt| {
                    rt.block_on(crate::cli::approvals::call(
                        &target,
                        http::Method::GET,
                        &path,
                        None,
                    ))
                })
                .transpose()?
                .unwrap_or_default();
            let items = v["entries"].as_array().cloned().unwrap_or_default();
            (items, v["next"].as_str().map(str::to_string))
        };
        for e in &items {
            if !out.entry(e, local.as_ref().map(|o| &o.log))? {
                return Ok(());
            }
        }
        left = left.saturating_sub(items.len() as u64);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.done()
}

/// `custody log timeline RUN`.
///
/// # Errors
/// As [`entries`]; a run with no entries.
pub fn timeline(
    data: &Path,
    run: &str,
    format: Option<Format>,
    remote: &Remote,
) -> anyhow::Result<()> {
    let format = format_of(format);
    if format == Format::Ocsf && remote.gateway.is_some() {
        anyhow::bail!(
            "--format ocsf reads a local data directory (--data); from a gateway, stream OCSF with an [[export]] sink instead"
        );
    }
    let local = match &remote.gateway {
        None => Some(open_local(data)?),
        Some(_) => None,
    };
    let items = match (&remote.gateway, &local) {
        (None, Some(open)) => {
            let indices = query::run_entries(&open.index, &Scope::All, run, super::TIMELINE_CAP)?;
            view::timeline(&open.log, &indices, true)?
        }
        (None, None) => unreachable!("a local directory is open without --gateway"),
        (Some(gateway), _) => {
            let target = crate::cli::approvals::Target {
                gateway: gateway.clone(),
                token: token(&remote.token_env)?,
            };
            let path = format!(
                "/api/v1/runs/{}/timeline",
                percent_encoding::utf8_percent_encode(run, percent_encoding::NON_ALPHANUMERIC)
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let v = rt.block_on(crate::cli::approvals::call(
                &target,
                http::Method::GET,
                &path,
                None,
            ))?;
            v["calls"].as_array().cloned().unwrap_or_default()
        }
    };
    if items.is_empty() {
        anyhow::bail!(
            "no entries of run {run:?} in the log (give the run id as `custody log --format jsonl` shows it, or the GitHub run id / GitLab pipeline id)"
        );
    }
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Csv | Format::Ocsf => {
            drop(stdout);
            let mut out = super::print::Printer::new(format);
            let log = local.as_ref().map(|o| &o.log);
            for i in &items {
                let related = i["related"].as_array().map_or(&[][..], Vec::as_slice);
                for e in std::iter::once(&i["request"])
                    .chain(i.get("answer"))
                    .chain(related)
                {
                    if !out.entry(e, log)? {
                        return Ok(());
                    }
                }
            }
            out.done()?;
        }
        Format::Jsonl => {
            for i in &items {
                writeln!(stdout, "{i}")?;
            }
        }
        Format::Table => {
            writeln!(
                stdout,
                "{:<23}  {:>8}  {:<8}  {:<14}  {:<24}  {:<14}  {:>10}  APPROVAL",
                "TIME (UTC)", "INDEX", "STATUS", "METHOD", "TARGET", "DECISION", "DURATION"
            )?;
            for i in &items {
                let s = |k: &str| i[k].as_str().unwrap_or("").to_string();
                let approval = i["approval"]["events"]
                    .as_array()
                    .map(|ev| {
                        ev.iter()
                            .map(|e| {
                                format!(
                                    "{} by {}",
                                    e["kind"]
                                        .as_str()
                                        .unwrap_or("")
                                        .trim_start_matches("approval_"),
                                    e["who"].as_str().unwrap_or("-")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                writeln!(
                    stdout,
                    "{:<23}  {:>8}  {:<8}  {:<14}  {:<24}  {:<14}  {:>10}  {approval}",
                    time(i["time_ns"].as_u64().unwrap_or(0)),
                    i["request"]["index"],
                    s("status"),
                    clip(&s("method"), 14),
                    clip(&s("target"), 24),
                    s("decision"),
                    i["duration_ms"]
                        .as_f64()
                        .map(|d| format!("{d:.1} ms"))
                        .unwrap_or_default()
                )?;
            }
        }
    }
    Ok(())
}

/// A time for people: UTC to the millisecond.
pub(super) fn time(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.trim_end_matches('Z').replace('T', " ")
}

pub(super) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
