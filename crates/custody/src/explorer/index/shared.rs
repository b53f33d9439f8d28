//! The index beside a log replicas share: in the same PostgreSQL database (schema
//! `custody_explorer`, created by the log's migrations), one index for every replica. Any
//! replica may index: a step locks the cursor row, so two replicas never index the same
//! entries, and a replica whose own view of the log is behind the index's simply finds nothing
//! to do. The steward follows the log; the others catch up on demand before they answer.

use std::cell::{RefCell, RefMut};
use std::time::Duration;

use postgres::types::ToSql;

use super::{Cell, Db, INHERIT, Index, IndexError, Row, Sink, cell};
use crate::store::Reader;

/// The database's connection, dropped where that is allowed.
pub(super) struct Conn(Option<Box<RefCell<postgres::Client>>>);

impl Conn {
    pub(super) fn get(&self) -> RefMut<'_, postgres::Client> {
        match &self.0 {
            Some(c) => c.borrow_mut(),
            None => unreachable!("taken only when dropped"),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            crate::store::postgres::drop_off_runtime(c);
        }
    }
}

fn err(what: &'static str) -> impl FnOnce(postgres::Error) -> IndexError {
    move |e| IndexError::Shared {
        what,
        error: e.to_string(),
    }
}

pub(super) fn open(url: &str) -> Result<Index, IndexError> {
    let mut config: postgres::Config = url.parse().map_err(err("read the database URL"))?;
    config.application_name("custody explorer");
    config.connect_timeout(Duration::from_secs(5));
    crate::store::postgres::keepalive(&mut config);
    let mut client = config.connect(postgres::NoTls).map_err(err("connect"))?;
    client
        .batch_execute(
            "SET search_path = custody_explorer; SET statement_timeout = 30000; \
             SET lock_timeout = 10000; SET client_min_messages = warning",
        )
        .map_err(err("set up its connection"))?;
    Ok(Index {
        db: Db::Shared(Conn(Some(Box::new(RefCell::new(client))))),
        place: "the shared log's database".into(),
    })
}

/// `sql` with `?N` parameters as PostgreSQL writes them (`$N`).
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn params(cells: &[Cell]) -> Vec<&(dyn ToSql + Sync)> {
    cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect()
}

fn read(rows: &[postgres::Row], what: &'static str) -> Result<Vec<Vec<Cell>>, IndexError> {
    rows.iter()
        .map(|r| cell::of_pg(r).map_err(|error| IndexError::Shared { what, error }))
        .collect()
}

pub(super) fn rows(
    c: &mut impl postgres::GenericClient,
    sql: &str,
    cells: &[Cell],
    what: &'static str,
) -> Result<Vec<Vec<Cell>>, IndexError> {
    let found = c.query(&dollars(sql), &params(cells)).map_err(err(what))?;
    read(&found, what)
}

pub(super) fn clear(c: &mut postgres::Client) -> Result<(), IndexError> {
    c.batch_execute(
        "BEGIN; LOCK TABLE index_cursor; DELETE FROM rows; DELETE FROM runs; \
         UPDATE index_cursor SET next_idx = 0; COMMIT;",
    )
    .map_err(err("empty it"))
}

struct Tx<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
    insert: postgres::Statement,
    summary: postgres::Statement,
    inherit: postgres::Statement,
}

impl Sink for Tx<'_, '_> {
    fn request_row(&mut self, idx: u64) -> Result<Option<Vec<Cell>>, IndexError> {
        let found = self
            .tx
            .query(&self.inherit, &[&Cell::int(idx)])
            .map_err(err("read a request's row"))?;
        Ok(read(&found, "read a request's row")?.into_iter().next())
    }

    fn insert(&mut self, row: &Row) -> Result<(), IndexError> {
        self.tx
            .execute(&self.insert, &params(&row.cells()))
            .map(drop)
            .map_err(err("insert a row"))
    }

    fn summarise(&mut self, run: &str, row: &Row) -> Result<(), IndexError> {
        self.tx
            .execute(&self.summary, &params(&row.summary(run)))
            .map(drop)
            .map_err(err("update a run's summary"))
    }
}

pub(super) fn step(
    c: &mut postgres::Client,
    log: &Reader,
    size: u64,
    max: u64,
) -> Result<u64, IndexError> {
    let mut tx = c.transaction().map_err(err("begin a transaction"))?;
    // One indexer at a time: the others wait here, then start where it stopped.
    let next: i64 = tx
        .query_one("SELECT next_idx FROM index_cursor FOR UPDATE", &[])
        .map_err(err("read its cursor"))?
        .get(0);
    let from = u64::try_from(next).unwrap_or(0);
    let to = size.min(from.saturating_add(max));
    if to <= from {
        return Ok(0);
    }
    let insert = tx
        .prepare(
            "INSERT INTO rows VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)",
        )
        .map_err(err("prepare the insert"))?;
    let summary = tx
        .prepare(
            "INSERT INTO runs VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $9, $10, $11, $12, $13) \
             ON CONFLICT (run) DO UPDATE SET entries = runs.entries + 1, calls = runs.calls + $8, \
             first_ns = LEAST(runs.first_ns, $9), last_ns = GREATEST(runs.last_ns, $9), \
             denials = runs.denials + $10, approvals = runs.approvals + $11, \
             errors = runs.errors + $12, last_idx = GREATEST(runs.last_idx, $13)",
        )
        .map_err(err("prepare the run summary"))?;
    let inherit = tx
        .prepare(&dollars(INHERIT))
        .map_err(err("prepare the request lookup"))?;
    super::fill(
        log,
        from,
        to,
        &mut Tx {
            tx: &mut tx,
            insert,
            summary,
            inherit,
        },
    )?;
    tx.execute("UPDATE index_cursor SET next_idx = $1", &[&Cell::int(to)])
        .map_err(err("move its cursor"))?;
    tx.commit().map_err(err("commit"))?;
    Ok(to - from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_renumbered_for_postgresql() {
        assert_eq!(
            super::dollars("a = ?1 AND (b = ?12 OR c = ?12) AND d != '?'"),
            "a = $1 AND (b = $12 OR c = $12) AND d != '?'"
        );
    }
}
