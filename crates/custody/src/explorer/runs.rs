//! CI runs as `/api/v1/runs` lists them: from the index's per-run summary when the filter
//! names only the run's own columns, else by grouping the matching entries.

use super::index::{Cell, Index};
use super::query::{Filter, MAX_LIMIT, QueryError, Scope, Where};

/// One CI run, as `/runs` lists it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    pub issuer: Option<String>,
    pub repository: Option<String>,
    pub workflow: Option<String>,
    pub run_id: Option<String>,
    pub attempt: Option<String>,
    pub principal: Option<String>,
    pub entries: u64,
    pub calls: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub denials: u64,
    pub approvals: u64,
    pub errors: u64,
}

impl Run {
    /// A run from a row of the runs query (the summary's columns, or their aggregates).
    fn of(r: &[Cell]) -> Self {
        let text = |i: usize| r.get(i).and_then(Cell::text);
        let n = |i: usize| r.get(i).and_then(Cell::uint).unwrap_or(0);
        Self {
            id: text(0).unwrap_or_default(),
            issuer: text(1),
            repository: text(2),
            workflow: text(3),
            run_id: text(4),
            attempt: text(5),
            principal: text(6),
            entries: n(7),
            calls: n(8),
            first_ns: n(9),
            last_ns: n(10),
            denials: n(11),
            approvals: n(12),
            errors: n(13),
        }
    }
}

/// The runs `scope` may see whose entries pass `filter`, the latest first.
///
/// # Errors
/// As [`entries`].
pub fn runs(
    index: &Index,
    scope: &Scope,
    filter: &Filter,
    limit: u32,
) -> Result<Vec<Run>, QueryError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(QueryError::Bad(format!(
            "limit={limit} is out of range: give 1 to {MAX_LIMIT}"
        )));
    }
    if let Some(found) = summarised(index, scope, filter, limit)? {
        return Ok(found);
    }
    let mut w = Where::default();
    w.clauses.push("run IS NOT NULL".into());
    // Reads of the log are not what a run did.
    w.clauses.push("kind != 'log_read'".into());
    w.scope(scope);
    w.filter(filter)?;
    let sql = format!(
        "SELECT run, max(issuer), max(coalesce(repository, project)), max(workflow), \
         max(coalesce(run_id, pipeline)), max(run_attempt), max(principal), count(*), \
         sum(CASE WHEN kind = 'request' THEN 1 ELSE 0 END), min(time_ns), max(time_ns), \
         sum(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END), \
         sum(CASE WHEN kind = 'approval_requested' THEN 1 ELSE 0 END), sum(error) \
         FROM rows {} GROUP BY run \
         ORDER BY max(idx) DESC LIMIT {limit}",
        w.sql()
    );
    Ok(index
        .rows(&sql, &w.params, "run the runs query")?
        .iter()
        .map(|r| Run::of(r))
        .collect())
}

/// The runs from the index's per-run summary, kept as entries are indexed: for filters on
/// the run's own columns only (repository or project, workflow, run) and scopes of every run
/// or one run. `None`: the query needs the entries themselves.
fn summarised(
    index: &Index,
    scope: &Scope,
    f: &Filter,
    limit: u32,
) -> Result<Option<Vec<Run>>, QueryError> {
    let only_run_columns = Filter {
        repository: None,
        project: None,
        workflow: None,
        run: None,
        ..f.clone()
    };
    if pairs_set(&only_run_columns) || f.repository.is_some() && f.project.is_some() {
        return Ok(None);
    }
    let mut w = Where::default();
    match scope {
        Scope::All => {}
        Scope::Run {
            issuer,
            repository: r,
            run_id: id,
        }
        | Scope::Pipeline {
            issuer,
            project: r,
            pipeline: id,
        } => {
            w.is("issuer", issuer.as_ref());
            w.eq("repository", Some(r));
            w.eq("run_id", Some(id));
        }
        Scope::Subject { .. } | Scope::Endpoints(_) => return Ok(None),
    }
    w.eq("repository", f.repository.as_ref().or(f.project.as_ref()));
    w.eq("workflow", f.workflow.as_ref());
    if let Some(r) = &f.run {
        w.params.push(Cell::Text(r.clone()));
        let n = w.params.len();
        w.clauses.push(format!("(run = ?{n} OR run_id = ?{n})"));
    }
    let sql = format!(
        "SELECT run, issuer, repository, workflow, run_id, attempt, principal, entries, calls, \
         first_ns, last_ns, denials, approvals, errors FROM runs {} ORDER BY last_idx DESC LIMIT {limit}",
        w.sql()
    );
    let runs = index
        .rows(&sql, &w.params, "run the runs query")?
        .iter()
        .map(|r| Run::of(r))
        .collect();
    Ok(Some(runs))
}

/// Whether any field of `f` is set.
fn pairs_set(f: &Filter) -> bool {
    let Filter {
        since,
        until,
        principal,
        repository,
        workflow,
        run,
        actor,
        git_ref,
        environment,
        project,
        pipeline,
        endpoint,
        session,
        method,
        tool,
        kind,
        decision,
        approval,
        masked,
        errors,
    } = f;
    [
        since,
        until,
        principal,
        repository,
        workflow,
        run,
        actor,
        git_ref,
        environment,
        project,
        pipeline,
        endpoint,
        session,
        method,
        tool,
        kind,
        decision,
        approval,
    ]
    .iter()
    .any(|v| v.is_some())
        || masked.is_some()
        || errors.is_some()
}
