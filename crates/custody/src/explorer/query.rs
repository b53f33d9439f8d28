//! Filters, scopes and pages over the search index. What they find are entry indices; the
//! entries themselves are read from the log.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::index::{Cell, Index, IndexError};
pub use super::runs::{Run, runs};

/// What to look for; every field narrows. Query strings and CLI flags both fill it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// RFC 3339 time, or a duration back from now (`1h`, `30m`, `7d`).
    pub since: Option<String>,
    pub until: Option<String>,
    pub principal: Option<String>,
    pub repository: Option<String>,
    pub workflow: Option<String>,
    /// A run's id as `/runs` gives it, or a GitHub run id or GitLab pipeline id.
    pub run: Option<String>,
    pub actor: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub environment: Option<String>,
    pub project: Option<String>,
    pub pipeline: Option<String>,
    pub endpoint: Option<String>,
    pub session: Option<String>,
    pub method: Option<String>,
    /// The tool, resource or prompt.
    pub tool: Option<String>,
    pub kind: Option<String>,
    /// `allow`, `deny` or `approval`.
    pub decision: Option<String>,
    pub approval: Option<String>,
    pub masked: Option<bool>,
    pub errors: Option<bool>,
}

/// Who is looking decides what they may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every entry (auditors).
    All,
    /// Every entry of these endpoints (auditors by a Cedar `Action::"audit"` permit).
    Endpoints(Vec<String>),
    /// The entries of one CI run: issuer, repository and run id (every attempt).
    Run {
        issuer: Option<String>,
        repository: String,
        run_id: String,
    },
    /// The entries of one GitLab pipeline.
    Pipeline {
        issuer: Option<String>,
        project: String,
        pipeline: String,
    },
    /// The entries the principal itself caused.
    Subject {
        issuer: Option<String>,
        subject: String,
    },
}

/// Newest or oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Newest,
    Oldest,
}

/// At most this many entries a page.
pub const MAX_LIMIT: u32 = 500;

/// Why a query was refused: the caller's mistake, said so it can be fixed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Bad(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Nanoseconds since the epoch now.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `since`/`until` as nanoseconds: RFC 3339 or a duration back from now.
pub fn parse_time(name: &str, v: &str) -> Result<u64, QueryError> {
    if let Ok(d) = humantime::parse_duration(v) {
        return Ok(now_ns().saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
    }
    match humantime::parse_rfc3339_weak(v) {
        Ok(t) => Ok(t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX)),
        Err(_) => Err(QueryError::Bad(format!(
            "{name}={v:?} is neither an RFC 3339 time (2026-11-26T10:00:00Z) nor a duration back from now (15m, 1h, 7d)"
        ))),
    }
}

/// The decision column's value for a `decision` filter.
fn decision(v: &str) -> Result<&'static str, QueryError> {
    match v {
        "allow" => Ok("allow"),
        "deny" => Ok("deny"),
        "approval" | "needs_approval" => Ok("needs_approval"),
        other => Err(QueryError::Bad(format!(
            "decision={other:?} is not a policy decision; use allow, deny or approval"
        ))),
    }
}

fn kind(v: &str) -> Result<(), QueryError> {
    if (0..=u8::MAX)
        .filter_map(tlog::entry::Kind::from_u8)
        .any(|k| k.name() == v)
    {
        Ok(())
    } else {
        Err(QueryError::Bad(format!(
            "kind={v:?} is not an entry kind (request, response, error, notification, rejected, auth_failure, approval_requested, approval_granted, ...)"
        )))
    }
}

/// A `WHERE` clause being built, with its parameters.
#[derive(Default)]
pub(crate) struct Where {
    pub clauses: Vec<String>,
    pub params: Vec<Cell>,
}

impl Where {
    pub(crate) fn eq(&mut self, column: &str, v: Option<&String>) {
        if let Some(v) = v {
            self.params.push(Cell::Text(v.clone()));
            self.clauses
                .push(format!("{column} = ?{}", self.params.len()));
        }
    }

    pub(crate) fn is(&mut self, column: &str, v: Option<&String>) {
        match v {
            Some(v) => self.eq(column, Some(v)),
            None => self.clauses.push(format!("{column} IS NULL")),
        }
    }

    fn int(&mut self, clause: &str, v: u64) {
        self.params.push(Cell::int(v));
        self.clauses
            .push(clause.replace('?', &format!("?{}", self.params.len())));
    }

    pub fn scope(&mut self, scope: &Scope) {
        match scope {
            Scope::All => {}
            Scope::Endpoints(names) => {
                let start = self.params.len();
                self.params
                    .extend(names.iter().map(|n| Cell::Text(n.clone())));
                let marks: Vec<String> = (start + 1..=self.params.len())
                    .map(|i| format!("?{i}"))
                    .collect();
                self.clauses
                    .push(format!("endpoint IN ({})", marks.join(", ")));
            }
            Scope::Run {
                issuer,
                repository,
                run_id,
            } => {
                self.is("issuer", issuer.as_ref());
                self.eq("repository", Some(repository));
                self.eq("run_id", Some(run_id));
            }
            Scope::Pipeline {
                issuer,
                project,
                pipeline,
            } => {
                self.is("issuer", issuer.as_ref());
                self.eq("project", Some(project));
                self.eq("pipeline", Some(pipeline));
            }
            Scope::Subject { issuer, subject } => {
                self.is("issuer", issuer.as_ref());
                self.eq("subject", Some(subject));
            }
        }
    }

    /// The filter's clauses.
    pub fn filter(&mut self, f: &Filter) -> Result<(), QueryError> {
        if let Some(s) = &f.since {
            self.int("time_ns >= ?", parse_time("since", s)?);
        }
        if let Some(u) = &f.until {
            self.int("time_ns < ?", parse_time("until", u)?);
        }
        if let Some(k) = &f.kind {
            kind(k)?;
        }
        self.eq("principal", f.principal.as_ref());
        self.eq("repository", f.repository.as_ref());
        self.eq("workflow", f.workflow.as_ref());
        if let Some(r) = &f.run {
            self.params.push(Cell::Text(r.clone()));
            let n = self.params.len();
            // A run's own id is 16 hex digits; anything else is a CI system's run number.
            let clause = if r.len() == 16 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
                format!("(run = ?{n} OR run_id = ?{n} OR pipeline = ?{n})")
            } else {
                format!("(run_id = ?{n} OR pipeline = ?{n})")
            };
            self.clauses.push(clause);
        }
        self.eq("actor", f.actor.as_ref());
        self.eq("git_ref", f.git_ref.as_ref());
        self.eq("environment", f.environment.as_ref());
        self.eq("project", f.project.as_ref());
        self.eq("pipeline", f.pipeline.as_ref());
        self.eq("endpoint", f.endpoint.as_ref());
        self.eq("session", f.session.as_ref());
        self.eq("method", f.method.as_ref());
        self.eq("target", f.tool.as_ref());
        self.eq("kind", f.kind.as_ref());
        if let Some(d) = &f.decision {
            self.eq("decision", Some(&decision(d)?.to_string()));
        }
        self.eq("approval", f.approval.as_ref());
        if f.masked == Some(true) {
            self.clauses.push("masked = 1".into());
        }
        if f.errors == Some(true) {
            self.clauses.push("error = 1".into());
        }
        Ok(())
    }

    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// One page of entry indices and the cursor of the next, if there may be more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub indices: Vec<u64>,
    pub next: Option<String>,
}

/// The opaque cursor after entry `idx`.
pub fn cursor_after(idx: u64, order: Order) -> String {
    use base64::Engine as _;
    let o = if order == Order::Newest { 'n' } else { 'o' };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{o}{idx}"))
}

fn parse_cursor(c: &str, order: Order) -> Result<u64, QueryError> {
    use base64::Engine as _;
    let bad = || {
        QueryError::Bad(format!(
            "cursor={c:?} is not a cursor this gateway gave for this order; start again without it"
        ))
    };
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let want = if order == Order::Newest { "n" } else { "o" };
    text.strip_prefix(want)
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
}

/// The first column of each row `sql` selects, as indices or counts.
fn ints(
    index: &Index,
    sql: &str,
    params: &[Cell],
    what: &'static str,
) -> Result<Vec<u64>, QueryError> {
    Ok(index
        .rows(sql, params, what)?
        .iter()
        .map(|r| r.first().and_then(Cell::uint).unwrap_or(0))
        .collect())
}

/// The entries `scope` may see that pass `filter`, one page.
///
/// # Errors
/// A bad filter or cursor ([`QueryError::Bad`]), or an index that cannot be read.
pub fn entries(
    index: &Index,
    scope: &Scope,
    filter: &Filter,
    order: Order,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page, QueryError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(QueryError::Bad(format!(
            "limit={limit} is out of range: give 1 to {MAX_LIMIT}"
        )));
    }
    let mut w = Where::default();
    w.scope(scope);
    w.filter(filter)?;
    if let Some(c) = cursor {
        let after = parse_cursor(c, order)?;
        w.int(
            if order == Order::Newest {
                "idx < ?"
            } else {
                "idx > ?"
            },
            after,
        );
    }
    let dir = if order == Order::Newest {
        "DESC"
    } else {
        "ASC"
    };
    let sql = format!(
        "SELECT idx FROM rows {} ORDER BY idx {dir} LIMIT {}",
        w.sql(),
        limit + 1
    );
    let mut indices = ints(index, &sql, &w.params, "run a query")?;
    let more = indices.len() > limit as usize;
    indices.truncate(limit as usize);
    let next = more
        .then(|| indices.last().map(|&i| cursor_after(i, order)))
        .flatten();
    Ok(Page { indices, next })
}

/// Every entry of run `run` (its id, or its run or pipeline id) that `scope` may see, in
/// log order, at most `cap` of them.
///
/// # Errors
/// As [`entries`].
pub fn run_entries(
    index: &Index,
    scope: &Scope,
    run: &str,
    cap: u32,
) -> Result<Vec<u64>, QueryError> {
    let filter = Filter {
        run: Some(run.to_string()),
        ..Filter::default()
    };
    let mut w = Where::default();
    w.scope(scope);
    w.filter(&filter)?;
    // Reads of the log are not what a run did.
    w.clauses.push("kind != 'log_read'".into());
    let sql = format!("SELECT idx FROM rows {} ORDER BY idx LIMIT {cap}", w.sql());
    ints(index, &sql, &w.params, "run the timeline query")
}

/// Does any entry of `run` exist at all (whoever may see it)?
///
/// # Errors
/// The index cannot be read.
pub fn run_exists(index: &Index, run: &str) -> Result<bool, QueryError> {
    Ok(!run_entries(index, &Scope::All, run, 1)?.is_empty())
}

/// May `scope` see entry `idx`? `None` when the index does not hold it.
///
/// # Errors
/// The index cannot be read.
pub fn visible(index: &Index, scope: &Scope, idx: u64) -> Result<Option<bool>, QueryError> {
    let mut w = Where::default();
    w.int("idx = ?", idx);
    let sql = format!("SELECT idx FROM rows {}", w.sql());
    if ints(index, &sql, &w.params, "look an entry up")?.is_empty() {
        return Ok(None);
    }
    w.scope(scope);
    let sql = format!("SELECT count(*) FROM rows {}", w.sql());
    let n = ints(index, &sql, &w.params, "look an entry up")?
        .first()
        .copied()
        .unwrap_or(0);
    Ok(Some(n > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_their_order() {
        let c = cursor_after(42, Order::Newest);
        assert_eq!(parse_cursor(&c, Order::Newest).unwrap(), 42);
        let e = parse_cursor(&c, Order::Oldest).unwrap_err().to_string();
        assert!(
            e.contains("not a cursor this gateway gave for this order"),
            "{e}"
        );
        assert!(parse_cursor("!!", Order::Newest).is_err());
    }

    #[test]
    fn times_are_rfc3339_or_durations_back_from_now() {
        assert_eq!(
            parse_time("since", "2026-01-01T00:00:00Z").unwrap(),
            1_767_225_600_000_000_000
        );
        let hour_ago = parse_time("since", "1h").unwrap();
        let now = now_ns();
        assert!(now - hour_ago >= 3_600_000_000_000 && now - hour_ago < 3_700_000_000_000);
        let e = parse_time("until", "tomorrow").unwrap_err().to_string();
        assert!(e.starts_with("until=\"tomorrow\" is neither"), "{e}");
    }

    #[test]
    fn a_ci_scope_never_widens_with_filters() {
        let mut w = Where::default();
        w.scope(&Scope::Run {
            issuer: Some("https://ci".into()),
            repository: "acme/api".into(),
            run_id: "1".into(),
        });
        w.filter(&Filter {
            repository: Some("acme/web".into()),
            ..Filter::default()
        })
        .unwrap();
        // Both conditions hold at once: the filter narrows within the scope.
        assert_eq!(
            w.sql(),
            "WHERE issuer = ?1 AND repository = ?2 AND run_id = ?3 AND repository = ?4"
        );
    }
}
