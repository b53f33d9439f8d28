//! The log's tables and their versioned migrations.

use super::PgError;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 3;

/// The advisory-lock key migrations hold (any replica may start first).
const MIGRATION_LOCK: i64 = 0x6375_7374_6f64_7901;

/// Each version's statements, applied in order from the database's version up.
const MIGRATIONS: [(i32, &str); 3] = [
    (
        1,
        "CREATE TABLE log_sequence (
         id boolean PRIMARY KEY DEFAULT true CHECK (id),
         next_index bigint NOT NULL CHECK (next_index >= 0)
     );
     INSERT INTO log_sequence (next_index) VALUES (0);
     CREATE TABLE entries (
         idx     bigint PRIMARY KEY CHECK (idx >= 0),
         leaf    bytea NOT NULL CHECK (length(leaf) = 32),
         data    bytea NOT NULL,
         time_ns bigint NOT NULL,
         replica text NOT NULL
     );
     CREATE TABLE payloads (
         idx     bigint NOT NULL,
         slot    smallint NOT NULL,
         opening bytea NOT NULL,
         data    bytea NOT NULL,
         PRIMARY KEY (idx, slot)
     );
     CREATE TABLE nodes (
         level integer NOT NULL,
         idx   bigint NOT NULL,
         hash  bytea NOT NULL CHECK (length(hash) = 32),
         PRIMARY KEY (level, idx)
     );
     CREATE TABLE log_head (
         id         boolean PRIMARY KEY DEFAULT true CHECK (id),
         size       bigint NOT NULL,
         root       bytea NOT NULL,
         state      bytea NOT NULL,
         updated_by text NOT NULL
     );
     CREATE TABLE checkpoints (
         size      bigint PRIMARY KEY,
         note      text NOT NULL,
         signed_ns bigint NOT NULL
     );
     CREATE TABLE pending_approvals (
         id    text PRIMARY KEY,
         entry bigint NOT NULL
     );
     CREATE TABLE meta (
         key   text PRIMARY KEY,
         value text NOT NULL
     );",
    ),
    // Decisions on approvals taken by one replica for a call another replica holds.
    (
        2,
        "CREATE TABLE approval_asks (
             id     bigserial PRIMARY KEY,
             holder text NOT NULL,
             ask    text NOT NULL,
             seal   bytea NOT NULL,
             state  text NOT NULL DEFAULT 'asked'
                    CHECK (state IN ('asked', 'claimed', 'answered', 'withdrawn')),
             status integer,
             answer text,
             answer_seal bytea,
             asked  timestamptz NOT NULL DEFAULT now()
         );
         -- Each entry sealed by the replica that wrote it, with a key derived from the log's
         -- signing key: a row the database alone wrote is not integrated into any tree.
         ALTER TABLE entries ADD COLUMN seal bytea;
         CREATE INDEX approval_asks_waiting ON approval_asks (holder) WHERE state = 'asked';
         -- A round's beginning in one call: the sequencing row's lock, then (statements of their
         -- own, whose snapshots see what the lock's previous holder committed) the head and the
         -- leaves other replicas committed from from_idx on, with their seals. One row
         -- (next, NULL, NULL, head) when there are none.
         CREATE FUNCTION custody_begin_round(from_idx bigint)
             RETURNS TABLE (next_index bigint, leaf bytea, seal bytea, head_size bigint, head_root bytea)
             LANGUAGE plpgsql VOLATILE AS $$
         DECLARE n bigint; hs bigint; hr bytea;
         BEGIN
             SELECT s.next_index INTO n FROM log_sequence s WHERE s.id FOR UPDATE;
             SELECT h.size, h.root INTO hs, hr FROM log_head h WHERE h.id;
             RETURN QUERY SELECT n, e.leaf, e.seal, hs, hr FROM entries e
                 WHERE e.idx >= from_idx AND e.idx < n ORDER BY e.idx;
             IF NOT FOUND THEN
                 RETURN QUERY SELECT n, NULL::bytea, NULL::bytea, hs, hr;
             END IF;
         END $$;",
    ),
    // Session-based sessions of HTTP upstreams, shared by the replicas: whether each is open
    // and when any replica last used it. What a replica needs to carry a session on (the
    // upstream's session id, the owner) travels sealed in the client's Mcp-Session-Id, never
    // here.
    (
        3,
        "CREATE TABLE sessions (
             endpoint  text NOT NULL,
             id        text NOT NULL,
             opened_by text NOT NULL,
             -- When a replica last used it, and which one.
             last_used timestamptz NOT NULL DEFAULT now(),
             used_by   text NOT NULL,
             closed    timestamptz,
             reason    text,
             PRIMARY KEY (endpoint, id)
         );
         CREATE INDEX sessions_closed ON sessions (closed) WHERE closed IS NOT NULL;
         -- The explorer's search index, one for every replica: the columns and run summaries
         -- of the embedded index (explorer/index/sqlite.rs), and how far it has read the log.
         CREATE SCHEMA custody_explorer;
         CREATE TABLE custody_explorer.rows (
             idx bigint PRIMARY KEY,
             time_ns bigint NOT NULL,
             kind text NOT NULL,
             direction text NOT NULL,
             endpoint text, session text, method text, target text,
             principal text, issuer text, subject text,
             repository text, workflow text, run_id text, run_attempt text, actor text,
             git_ref text, environment text, project text, pipeline text,
             run text, decision text, approval text,
             masked integer NOT NULL,
             error integer NOT NULL,
             request bigint
         );
         CREATE TABLE custody_explorer.runs (
             run text PRIMARY KEY,
             issuer text, repository text, workflow text, run_id text, attempt text,
             principal text,
             entries bigint NOT NULL, calls bigint NOT NULL,
             first_ns bigint NOT NULL, last_ns bigint NOT NULL,
             denials bigint NOT NULL, approvals bigint NOT NULL, errors bigint NOT NULL,
             last_idx bigint NOT NULL
         );
         CREATE TABLE custody_explorer.index_cursor (
             id boolean PRIMARY KEY DEFAULT true CHECK (id),
             next_idx bigint NOT NULL CHECK (next_idx >= 0)
         );
         INSERT INTO custody_explorer.index_cursor (next_idx) VALUES (0);
         CREATE INDEX runs_latest ON custody_explorer.runs (last_idx);
         CREATE INDEX runs_repository ON custody_explorer.runs (repository, last_idx);
         CREATE INDEX rows_time ON custody_explorer.rows (time_ns);
         CREATE INDEX rows_run ON custody_explorer.rows (run, idx);
         CREATE INDEX rows_run_id ON custody_explorer.rows (run_id, idx);
         CREATE INDEX rows_pipeline ON custody_explorer.rows (pipeline, idx);
         CREATE INDEX rows_actor ON custody_explorer.rows (actor, idx);
         CREATE INDEX rows_principal ON custody_explorer.rows (principal, idx);
         CREATE INDEX rows_repository ON custody_explorer.rows (repository, idx);
         CREATE INDEX rows_project ON custody_explorer.rows (project, idx);
         CREATE INDEX rows_target ON custody_explorer.rows (target, idx);
         CREATE INDEX rows_kind ON custody_explorer.rows (kind, idx);
         CREATE INDEX rows_session ON custody_explorer.rows (session, idx);
         CREATE INDEX rows_decision ON custody_explorer.rows (decision, idx) WHERE decision IS NOT NULL;
         CREATE INDEX rows_approval ON custody_explorer.rows (approval) WHERE approval IS NOT NULL;
         CREATE INDEX rows_request ON custody_explorer.rows (request) WHERE request IS NOT NULL;
         CREATE INDEX rows_masked ON custody_explorer.rows (idx) WHERE masked = 1;
         CREATE INDEX rows_error ON custody_explorer.rows (idx) WHERE error = 1;",
    ),
];

/// Creates or upgrades the schema under the migration lock; returns its version.
pub fn migrate(client: &mut postgres::Client) -> Result<i32, PgError> {
    let mut tx = client
        .transaction()
        .map_err(PgError::sql("begin the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(PgError::sql("migration lock"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS custody_schema (version integer NOT NULL)")
        .map_err(PgError::sql("create the schema's version table"))?;
    let found: Option<i32> = tx
        .query_opt("SELECT version FROM custody_schema", &[])
        .map_err(PgError::sql("read the schema version"))?
        .map(|r| r.get(0));
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS {
        if version > found {
            tx.batch_execute(sql)
                .map_err(PgError::sql("apply a schema migration"))?;
        }
    }
    if found == 0 {
        tx.execute(
            "INSERT INTO custody_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
    } else {
        tx.execute("UPDATE custody_schema SET version = $1", &[&SCHEMA_VERSION])
    }
    .map_err(PgError::sql("record the schema version"))?;
    tx.commit().map_err(PgError::sql("commit the migration"))?;
    Ok(SCHEMA_VERSION)
}
