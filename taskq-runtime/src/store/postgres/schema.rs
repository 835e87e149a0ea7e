//! Versioned migrations and the SQL of every statement, with `{S}` standing for the
//! quoted schema name.

use super::pool::PooledConn;
use crate::store::StoreError;

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial layout.
    r#"
CREATE TABLE {S}.taskq_tasks (
    id            bigserial PRIMARY KEY,
    task          text    NOT NULL,
    queue         text    NOT NULL,
    state         text    NOT NULL,
    payload       jsonb   NOT NULL,
    priority      integer NOT NULL DEFAULT 0,
    attempts      integer NOT NULL DEFAULT 0,
    unique_name   text,
    tombstone_ms  bigint  NOT NULL DEFAULT 0,
    created_at    bigint  NOT NULL,
    enqueued_at   bigint  NOT NULL,
    run_at        bigint  NOT NULL,
    finished_at   bigint,
    last_error    text,
    run_id        bigint,
    worker        text,
    lease_until   bigint,
    lease_token   bigint  NOT NULL DEFAULT 0,
    started_at    bigint
);
CREATE INDEX taskq_tasks_pending_idx ON {S}.taskq_tasks (priority DESC, run_at, id)
    WHERE state = 'pending';
CREATE INDEX taskq_tasks_queue_pending_idx ON {S}.taskq_tasks (queue, priority DESC, run_at, id)
    WHERE state = 'pending';
CREATE INDEX taskq_tasks_lease_idx ON {S}.taskq_tasks (lease_until) WHERE state = 'running';
CREATE UNIQUE INDEX taskq_tasks_live_name_idx ON {S}.taskq_tasks (unique_name)
    WHERE unique_name IS NOT NULL AND state IN ('pending', 'running');
CREATE INDEX taskq_tasks_name_idx ON {S}.taskq_tasks (unique_name, finished_at)
    WHERE unique_name IS NOT NULL;
CREATE INDEX taskq_tasks_run_idx ON {S}.taskq_tasks (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE {S}.taskq_attempts (
    id           bigserial PRIMARY KEY,
    task_id      bigint  NOT NULL,
    attempt      integer NOT NULL,
    worker       text    NOT NULL,
    started_at   bigint  NOT NULL,
    finished_at  bigint  NOT NULL,
    outcome      text    NOT NULL,
    error        text
);
CREATE INDEX taskq_attempts_task_idx ON {S}.taskq_attempts (task_id);

CREATE TABLE {S}.taskq_queues (
    name            text PRIMARY KEY,
    paused          boolean NOT NULL DEFAULT false,
    rate            double precision,
    burst           bigint,
    max_concurrent  bigint,
    tokens          double precision,
    refilled_at     bigint
);

CREATE TABLE {S}.taskq_iterations (
    run_id       bigint PRIMARY KEY,
    task         text   NOT NULL,
    queue        text   NOT NULL,
    filter       jsonb  NOT NULL,
    cursor       jsonb,
    processed    bigint NOT NULL DEFAULT 0,
    batches      bigint NOT NULL DEFAULT 0,
    steps        bigint NOT NULL DEFAULT 1,
    total        bigint,
    state        text   NOT NULL,
    started_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    finished_at  bigint,
    error        text
);
"#,
    // 2: payloads, filters and cursors as exact JSON text. `jsonb` rewrote numbers (its
    // numeric type has no -0.0, and floats came back through a decimal that the parser
    // rounded) and refused `\u0000` in strings; `json` keeps the text as taskq wrote it
    // (the server still checks that it is JSON) and taskq decodes it row by row. Values
    // already stored keep what `jsonb` made of them.
    r#"
ALTER TABLE {S}.taskq_tasks ALTER COLUMN payload TYPE json USING payload::text::json;
ALTER TABLE {S}.taskq_iterations
    ALTER COLUMN filter TYPE json USING filter::text::json,
    ALTER COLUMN cursor TYPE json USING cursor::text::json;
"#,
    // 3: tombstones, the holds deleted named tasks leave on their names.
    r#"
CREATE TABLE {S}.taskq_tombstones (
    name          text   PRIMARY KEY,
    taken_until   bigint NOT NULL,
    run_id        bigint,
    tombstone_ms  bigint NOT NULL DEFAULT 0
);
"#,
    // 4: retention (issue 10): each queue's retention beside its other settings (both
    // NULL: the defaults; milliseconds, or -1 for "for ever"), and the indexes a prune
    // reads, so that it never walks live rows: finished tasks and runs by state and end,
    // tombstones by the end of their hold and by run. (Built inside the migration's
    // transaction, which locks the table while it builds: on a large existing table,
    // create them first with CREATE INDEX CONCURRENTLY under these names; every statement
    // here may be run again.)
    r#"
ALTER TABLE {S}.taskq_queues ADD COLUMN IF NOT EXISTS keep_done_ms bigint,
    ADD COLUMN IF NOT EXISTS keep_failed_ms bigint;
CREATE INDEX IF NOT EXISTS taskq_tasks_finished_idx ON {S}.taskq_tasks (state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS taskq_iterations_finished_idx
    ON {S}.taskq_iterations (state, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS taskq_tombstones_until_idx ON {S}.taskq_tombstones (taken_until);
CREATE INDEX IF NOT EXISTS taskq_tombstones_run_idx ON {S}.taskq_tombstones (run_id)
    WHERE run_id IS NOT NULL;
"#,
    // 5: counts of finished tasks kept with the rows, and indexes for listings of finished
    // tasks by state, queue and task name (partial: a claim, whose row is not finished,
    // adds no entry to them; every full index would take one per claimed row, since a
    // claim's update is never HOT). `queues()` counts pending and running tasks through
    // their partial indexes (live rows only, never the history) and adds the finished
    // counts kept here, in one of 16 slots chosen by the backend's pid, so that workers
    // finishing tasks of one queue at once do not queue on one counter row; `queues()`
    // sums the slots. The statements that move rows into or out of a finished state
    // count them (see `counts.rs`); deletes are counted by a statement-level trigger (one
    // counter write per queue and state per statement, whichever statement deletes).
    // Written to run again over its own result (the counts are recomputed; it drops the
    // insert and update triggers an unreleased build of it created). The lock keeps
    // writers out until the counts and the trigger exist, so no finish goes uncounted
    // between the count and this build's statements.
    r#"
LOCK TABLE {S}.taskq_tasks IN SHARE ROW EXCLUSIVE MODE;
CREATE INDEX IF NOT EXISTS taskq_tasks_finished_id_idx ON {S}.taskq_tasks (state, id)
    WHERE state IN ('done', 'failed', 'dead', 'cancelled');
CREATE INDEX IF NOT EXISTS taskq_tasks_finished_queue_idx ON {S}.taskq_tasks (state, queue, id)
    WHERE state IN ('done', 'failed', 'dead', 'cancelled');
CREATE INDEX IF NOT EXISTS taskq_tasks_finished_task_idx ON {S}.taskq_tasks (state, task, id)
    WHERE state IN ('done', 'failed', 'dead', 'cancelled');
CREATE TABLE IF NOT EXISTS {S}.taskq_queue_counts (
    queue  text    NOT NULL,
    state  text    NOT NULL,
    slot   integer NOT NULL,
    n      bigint  NOT NULL,
    PRIMARY KEY (queue, state, slot)
);
DELETE FROM {S}.taskq_queue_counts;
INSERT INTO {S}.taskq_queue_counts (queue, state, slot, n)
    SELECT queue, state, 0, count(*) FROM {S}.taskq_tasks
    WHERE state NOT IN ('pending', 'running') GROUP BY queue, state;
DROP TRIGGER IF EXISTS taskq_tasks_counted_insert ON {S}.taskq_tasks;
DROP TRIGGER IF EXISTS taskq_tasks_counted_update ON {S}.taskq_tasks;
CREATE OR REPLACE FUNCTION {S}.taskq_count_finished() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- The deleted finished rows, in (queue, state) order, so that two statements never
    -- wait on each other's counter rows in opposite orders.
    INSERT INTO {S}.taskq_queue_counts AS c (queue, state, slot, n)
    SELECT x.queue, x.state, pg_backend_pid() % 16, -count(*) FROM old_rows x
    WHERE x.state NOT IN ('pending', 'running')
    GROUP BY x.queue, x.state ORDER BY x.queue, x.state
    ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS taskq_tasks_counted_delete ON {S}.taskq_tasks;
CREATE TRIGGER taskq_tasks_counted_delete AFTER DELETE ON {S}.taskq_tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {S}.taskq_count_finished();
"#,
    // 6: the trace context a task was started in (issue 12): a W3C `traceparent`, NULL
    // when there was none; copied to continuation steps. Adding a nullable column
    // without a default rewrites no row.
    r#"
ALTER TABLE {S}.taskq_tasks ADD COLUMN IF NOT EXISTS trace text;
"#,
    // 7: cancelling a running task (issue 13): set by `Store::cancel` on a running row;
    // reported by the heartbeat, turns the attempt's outcome into a cancel, and makes a
    // claim that finds the lease lapsed end the task cancelled. A constant default
    // rewrites no row (PostgreSQL 11+).
    r#"
ALTER TABLE {S}.taskq_tasks ADD COLUMN IF NOT EXISTS cancel_requested boolean NOT NULL DEFAULT false;
"#,
    // 7: periodic tasks (issue 13): one row per schedule; `next_tick` is the
    // compare-and-set of a fire (`postgres/schedules.rs`).
    r#"
CREATE TABLE IF NOT EXISTS {S}.taskq_schedules (
    name         text    PRIMARY KEY,
    task         text    NOT NULL,
    queue        text    NOT NULL,
    priority     int4    NOT NULL DEFAULT 0,
    payload      json    NOT NULL,
    cron         text    NOT NULL,
    timezone     text    NOT NULL,
    catch_up     text    NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    declared     boolean NOT NULL DEFAULT false,
    task_missing boolean NOT NULL DEFAULT false,
    next_tick    int8    NOT NULL,
    last_tick    int8,
    last_task    int8
);
"#,
];

/// The schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Creates the schema if needed and applies missing migrations, under an advisory lock so
/// that processes starting together do not race. Refuses a schema newer than this build.
pub(crate) async fn migrate(
    c: &mut PooledConn<'_>,
    schema_name: &str,
    s: &str,
) -> Result<(), StoreError> {
    let key = format!("taskq.migrate.{schema_name}");
    let client = c.client()?;
    let r = client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
        .await;
    c.check(r)?;
    let result = migrate_locked(c, schema_name, s).await;
    let client = c.client()?;
    let unlock = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
        .await;
    if unlock.is_err() || result.is_err() {
        // The session lock goes away with the connection.
        c.discard();
    }
    result
}

async fn migrate_locked(
    c: &mut PooledConn<'_>,
    schema_name: &str,
    s: &str,
) -> Result<(), StoreError> {
    let client = c.client()?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&schema_name],
        )
        .await;
    if c.check(exists)?.is_none() {
        let client = c.client()?;
        let r = client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
            .await;
        c.check(r)?;
    }
    let client = c.client()?;
    let r = client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.taskq_schema (
                version    bigint PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await;
    c.check(r)?;
    let client = c.client()?;
    let row = client
        .query_one(
            &format!("SELECT COALESCE(max(version), 0) FROM {s}.taskq_schema"),
            &[],
        )
        .await;
    let found: i64 = c.check(row)?.get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= found {
            continue;
        }
        let sql = format!(
            "BEGIN;\n{}\nINSERT INTO {s}.taskq_schema (version) VALUES ({version});\nCOMMIT;",
            m.replace("{S}", s)
        );
        let client = c.client()?;
        let r = client.batch_execute(&sql).await;
        if let Err(e) = r {
            c.discard();
            return Err(StoreError::Backend(format!(
                "migrating the taskq schema {s} to version {version} failed: {}",
                super::pg_err(&e)
            )));
        }
        tracing::info!(schema = %schema_name, version, "taskq: PostgreSQL schema migrated");
    }
    Ok(())
}
