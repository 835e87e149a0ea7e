//! The schema: its migrations, in order, and the check that refuses a database written by
//! a newer taskq. The tables are described in the [module docs](super#tables).

use super::R;
use crate::store::StoreError;

/// The schema version this build knows (the number of migrations).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE taskq_iterations (
    run          INTEGER PRIMARY KEY,
    task         TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    filter       TEXT    NOT NULL,
    cursor       TEXT,
    processed    INTEGER NOT NULL DEFAULT 0,
    batches      INTEGER NOT NULL DEFAULT 0,
    steps        INTEGER NOT NULL DEFAULT 1,
    total        INTEGER,
    state        TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    error        TEXT
);
CREATE TABLE taskq_tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task         TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    unique_name  TEXT,
    tombstone_ms INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    enqueued_at  INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    finished_at  INTEGER,
    last_error   TEXT,
    run_id       INTEGER REFERENCES taskq_iterations(run) DEFERRABLE INITIALLY DEFERRED,
    token        INTEGER NOT NULL DEFAULT 0,
    worker       TEXT,
    lease_until  INTEGER,
    started_at   INTEGER
);
CREATE INDEX taskq_tasks_claim ON taskq_tasks (state, queue, priority DESC, run_at, id);
CREATE INDEX taskq_tasks_due ON taskq_tasks (state, run_at);
CREATE INDEX taskq_tasks_state ON taskq_tasks (state, id);
CREATE INDEX taskq_tasks_unique ON taskq_tasks (unique_name) WHERE unique_name IS NOT NULL;
CREATE INDEX taskq_tasks_run ON taskq_tasks (run_id) WHERE run_id IS NOT NULL;
CREATE TABLE taskq_attempts (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      INTEGER NOT NULL REFERENCES taskq_tasks(id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    worker       TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    error        TEXT
);
CREATE INDEX taskq_attempts_task ON taskq_attempts (task_id, seq);
CREATE TABLE taskq_queues (
    name               TEXT PRIMARY KEY,
    paused             INTEGER NOT NULL DEFAULT 0,
    rate               REAL,
    burst              INTEGER,
    max_concurrent     INTEGER,
    bucket_tokens      REAL,
    bucket_refilled_at INTEGER
);
CREATE TABLE taskq_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO taskq_counters (name, value) VALUES ('lease_token', 0);
"#,
    // 2: tombstones, the holds deleted named tasks leave on their names (issue 7, item 7).
    r#"
CREATE TABLE taskq_tombstones (
    name          TEXT    PRIMARY KEY,
    taken_until   INTEGER NOT NULL,
    run_id        INTEGER,
    tombstone_ms  INTEGER NOT NULL DEFAULT 0
);
"#,
    // 3: retention (issue 10): each queue's retention beside its other settings (both
    // NULL: the defaults; milliseconds, or -1 for "for ever"), and the indexes a prune
    // reads, so that it never walks live rows: finished tasks and runs by state and end,
    // tombstones by the end of their hold and by run.
    r#"
ALTER TABLE taskq_queues ADD COLUMN keep_done_ms INTEGER;
ALTER TABLE taskq_queues ADD COLUMN keep_failed_ms INTEGER;
CREATE INDEX taskq_tasks_finished ON taskq_tasks (state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX taskq_iterations_finished ON taskq_iterations (state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX taskq_tombstones_until ON taskq_tombstones (taken_until);
CREATE INDEX taskq_tombstones_run ON taskq_tombstones (run_id) WHERE run_id IS NOT NULL;
"#,
    // 4: counts by state kept with the rows, so `queues()` reads one row per queue and
    // state instead of the whole history (written by the calls that change the rows, one
    // upsert per queue and state per call: see `counts.rs`; no triggers, which wrote one
    // counter row per task changed); indexes that let a listing of finished tasks
    // filtered by queue or task name read a page by key (partial, so that a claim, whose
    // row is not finished, does not write them; live tasks are listed through the claim
    // index); `(state, run_at)` is no longer read (`next_due` seeks the claim index per
    // priority) and goes. Written to run again over its own result (the counts are
    // recomputed), as a test's downgrade needs; it drops the triggers an unreleased build
    // of it created.
    r#"
CREATE TABLE IF NOT EXISTS taskq_queue_counts (
    queue  TEXT    NOT NULL,
    state  TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
DELETE FROM taskq_queue_counts;
INSERT INTO taskq_queue_counts (queue, state, n)
    SELECT queue, state, COUNT(*) FROM taskq_tasks GROUP BY queue, state;
DROP TRIGGER IF EXISTS taskq_tasks_counted_insert;
DROP TRIGGER IF EXISTS taskq_tasks_counted_delete;
DROP TRIGGER IF EXISTS taskq_tasks_counted_update;
CREATE INDEX IF NOT EXISTS taskq_tasks_finished_queue ON taskq_tasks (state, queue, id)
    WHERE state IN ('done', 'failed', 'dead', 'cancelled');
CREATE INDEX IF NOT EXISTS taskq_tasks_finished_task ON taskq_tasks (state, task, id)
    WHERE state IN ('done', 'failed', 'dead', 'cancelled');
DROP INDEX IF EXISTS taskq_tasks_due;
"#,
    // 5: running tasks by `(queue, lease_until)` (partial: only running rows, so pending
    // and finished ones never write it), so that a claim reads only the lapsed leases,
    // `max_concurrent` counts the live ones and `next_due` finds the earliest lease end
    // with one seek each, instead of reading every running row of the queue. And the
    // finished-listing indexes of version 4 again, with the same rows under a condition
    // of two states (`NOT IN ('pending', 'running')`) instead of four: SQLite evaluates
    // a partial index's condition for the old and the new row of every insert and
    // update, and an `IN` list of more than two values is built as an ephemeral table
    // each time (four per claimed or finished row, a quarter of a claim's time); two
    // values are compared in place.
    r#"
CREATE INDEX IF NOT EXISTS taskq_tasks_lease ON taskq_tasks (queue, lease_until)
    WHERE state = 'running';
DROP INDEX IF EXISTS taskq_tasks_finished_queue;
DROP INDEX IF EXISTS taskq_tasks_finished_task;
CREATE INDEX taskq_tasks_finished_queue ON taskq_tasks (state, queue, id)
    WHERE state NOT IN ('pending', 'running');
CREATE INDEX taskq_tasks_finished_task ON taskq_tasks (state, task, id)
    WHERE state NOT IN ('pending', 'running');
"#,
    // 6: the trace context a task was started in (issue 12): a W3C `traceparent`, NULL
    // when there was none; copied to continuation steps.
    r#"
ALTER TABLE taskq_tasks ADD COLUMN trace TEXT;
"#,
    // 7: cancelling a running task (issue 13): set by `Store::cancel` on a running row;
    // reported by the heartbeat, turns the attempt's outcome into a cancel, and makes a
    // claim that finds the lease lapsed end the task cancelled. 0 or 1.
    r#"
ALTER TABLE taskq_tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
"#,
    // 7: periodic tasks (issue 13): one row per schedule; `next_tick` is the
    // compare-and-set of a fire (`sqlite/schedules.rs`).
    r#"
CREATE TABLE taskq_schedules (
    name         TEXT    PRIMARY KEY,
    task         TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    payload      TEXT    NOT NULL,
    cron         TEXT    NOT NULL,
    timezone     TEXT    NOT NULL,
    catch_up     TEXT    NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    declared     INTEGER NOT NULL DEFAULT 0,
    task_missing INTEGER NOT NULL DEFAULT 0,
    next_tick    INTEGER NOT NULL,
    last_tick    INTEGER,
    last_task    INTEGER
);
"#,
];

/// Brings the schema up to date inside the opening transaction, or refuses a database
/// whose version is newer than this build knows ([`StoreError::SchemaTooNew`]).
pub(super) fn migrate(tx: &rusqlite::Transaction<'_>) -> R<()> {
    tx.execute_batch("CREATE TABLE IF NOT EXISTS taskq_schema (version INTEGER NOT NULL)")?;
    let found: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM taskq_schema",
        [],
        |r| r.get(0),
    )?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        }
        .into());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > found {
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO taskq_schema (version) VALUES (?1)", [version])?;
        }
    }
    Ok(())
}
