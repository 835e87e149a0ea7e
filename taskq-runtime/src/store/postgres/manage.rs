//! The management calls: queues and their settings, listing and reading tasks, run now,
//! delete, retry, purge, and iteration runs (read, list, cancel); and [`BURY`], the
//! tombstones every deletion of task rows leaves in its statement. Delete, retry, purge and
//! cancel lock the rows of the runs they touch before any task row (the lock order of the
//! [module docs](super)).

use std::collections::BTreeMap;

use super::counts::counted;
use super::pool::PooledConn;
use super::rows::{
    iteration_from_row, task_from_row, ITERATION_COLUMNS, TASK_COLUMNS, TASK_COLUMNS_NO_PAYLOAD,
};
use super::{is_unique_violation, Param, PostgresStore};
use crate::store::{
    AttemptInfo, CancelOutcome, FinishedMinute, IterationInfo, QueueConfig, QueueInfo, StoreError,
    TaskDetail, TaskId, TaskInfo, TaskQuery, TaskState,
};
use crate::time::Timestamp;

/// The columns a deleting CTE `d` returns for [`BURY`].
pub(super) const DELETED: &str = "id, run_id, state, unique_name, tombstone_ms, finished_at";

/// Leaves the tombstones of the named rows a CTE `d` deleted (columns [`DELETED`]), at
/// the time `$2`, in the same statement: the rule of [`tombstone`] in
/// SQL. A live row holds its name for its window from now, a finished one for what is
/// left of its window, a step of a run that holds the name keeps the run; one record per
/// name, keeping the later hold. Sums are `numeric`, so a huge window saturates instead
/// of failing the delete.
pub(super) const BURY: &str = "\
INSERT INTO {S}.taskq_tombstones AS o (name, taken_until, run_id, tombstone_ms)
SELECT DISTINCT ON (y.name) y.name, y.taken_until, y.run_id, y.tombstone_ms FROM (
    SELECT x.name, LEAST(x.ended::numeric + GREATEST(x.tombstone_ms, 0),
                         9223372036854775807)::int8 AS taken_until,
           x.run_id, x.tombstone_ms
    FROM (
        SELECT d.unique_name AS name, d.tombstone_ms,
               CASE WHEN d.state IN ('pending', 'running') THEN $2::int8
                    ELSE COALESCE(d.finished_at, $2::int8) END AS ended,
               CASE WHEN i.state = 'running'
                         OR i.finished_at::numeric + d.tombstone_ms > $2::int8
                    THEN d.run_id END AS run_id
        FROM d LEFT JOIN {S}.taskq_iterations i ON i.run_id = d.run_id
        WHERE d.unique_name IS NOT NULL
    ) x
) y
WHERE y.taken_until > $2::int8 OR y.run_id IS NOT NULL
ORDER BY y.name, y.taken_until DESC
ON CONFLICT (name) DO UPDATE SET
    taken_until = GREATEST(o.taken_until, EXCLUDED.taken_until,
        CASE WHEN EXCLUDED.run_id IS NOT NULL AND EXCLUDED.run_id IS DISTINCT FROM o.run_id
             THEN (SELECT LEAST(p.finished_at::numeric + o.tombstone_ms,
                                9223372036854775807)::int8
                   FROM {S}.taskq_iterations p WHERE p.run_id = o.run_id) END),
    run_id = COALESCE(EXCLUDED.run_id, o.run_id),
    tombstone_ms = CASE WHEN EXCLUDED.run_id IS NOT NULL THEN EXCLUDED.tombstone_ms
                        ELSE o.tombstone_ms END";

/// Every queue that has tasks or settings, with counts by state: pending and running
/// tasks counted through their partial indexes (live rows, never the history),
/// finished ones from the counts kept with the rows (`taskq_queue_counts`, summed over
/// its slots; see `counts.rs`), in one statement (one snapshot).
pub(super) async fn queues(s: &PostgresStore) -> Result<Vec<QueueInfo>, StoreError> {
    let cfg_sql = s.sql(
        "SELECT name, paused, rate, burst, max_concurrent, keep_done_ms, keep_failed_ms \
         FROM {S}.taskq_queues",
    );
    let count_sql = s.sql(
        "SELECT t.queue, 'pending', count(*)::int8 FROM {S}.taskq_tasks t \
         WHERE t.state = 'pending' GROUP BY t.queue \
         UNION ALL \
         SELECT t.queue, 'running', count(*)::int8 FROM {S}.taskq_tasks t \
         WHERE t.state = 'running' GROUP BY t.queue \
         UNION ALL \
         SELECT c.queue, c.state, sum(c.n)::int8 FROM {S}.taskq_queue_counts c \
         GROUP BY c.queue, c.state HAVING sum(c.n) <> 0",
    );
    let mut c = s.pool.get().await?;
    let st_cfg = c.prep(&cfg_sql).await?;
    let st_count = c.prep(&count_sql).await?;
    let client = c.client()?;
    let (cfg, counts) = futures::join!(client.query(&st_cfg, &[]), client.query(&st_count, &[]));
    let cfg = c.check(cfg)?;
    let counts = c.check(counts)?;
    let mut map: BTreeMap<String, QueueInfo> = BTreeMap::new();
    for r in &cfg {
        let name: String = r.get(0);
        let burst: Option<i64> = r.get(3);
        let max: Option<i64> = r.get(4);
        map.insert(
            name.clone(),
            QueueInfo {
                name,
                counts: Vec::new(),
                paused: r.get(1),
                config: QueueConfig {
                    rate: r.get(2),
                    burst: burst.map(|b| b.clamp(0, u32::MAX as i64) as u32),
                    max_concurrent: max.map(|m| m.clamp(0, u32::MAX as i64) as u32),
                    retention: crate::retention::from_columns(r.get(5), r.get(6)),
                },
            },
        );
    }
    for r in &counts {
        let queue: String = r.get(0);
        let state: String = r.get(1);
        let n: i64 = r.get(2);
        let state: TaskState = state.parse().map_err(StoreError::Backend)?;
        let q = map.entry(queue.clone()).or_insert_with(|| QueueInfo {
            name: queue,
            ..QueueInfo::default()
        });
        q.counts.push((state, n.max(0) as u64));
    }
    Ok(map
        .into_values()
        .map(|mut q| {
            q.counts.sort();
            q
        })
        .collect())
}

/// Saves a queue's settings; its token bucket starts afresh.
pub(super) async fn configure_queue(
    s: &PostgresStore,
    queue: &str,
    config: QueueConfig,
) -> Result<(), StoreError> {
    let sql = s.sql(
        "INSERT INTO {S}.taskq_queues (name, rate, burst, max_concurrent, keep_done_ms, \
             keep_failed_ms) \
         VALUES ($1::text, $2::float8, $3::int8, $4::int8, $5::int8, $6::int8) \
         ON CONFLICT (name) DO UPDATE SET rate = EXCLUDED.rate, burst = EXCLUDED.burst, \
             max_concurrent = EXCLUDED.max_concurrent, tokens = NULL, refilled_at = NULL, \
             keep_done_ms = EXCLUDED.keep_done_ms, keep_failed_ms = EXCLUDED.keep_failed_ms",
    );
    let burst = config.burst.map(i64::from);
    let max = config.max_concurrent.map(i64::from);
    let (keep_done, keep_failed) = crate::retention::to_columns(config.retention.as_ref());
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client
        .execute(
            &st,
            &[&queue, &config.rate, &burst, &max, &keep_done, &keep_failed],
        )
        .await;
    c.check(r)?;
    Ok(())
}

/// Pauses or resumes a queue (creating it if needed).
pub(super) async fn set_paused(
    s: &PostgresStore,
    queue: &str,
    paused: bool,
) -> Result<(), StoreError> {
    let sql = s.sql(
        "WITH u AS ( \
             INSERT INTO {S}.taskq_queues (name, paused) VALUES ($1::text, $2::bool) \
             ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused RETURNING name) \
         SELECT 1 FROM (SELECT pg_notify('taskq_new', u.name) FROM u WHERE NOT $2::bool) n",
    );
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query(&st, &[&queue, &paused]).await;
    c.check(r)?;
    Ok(())
}

/// Deletes the pending tasks of a queue, ending their runs and burying their names.
pub(super) async fn purge(
    s: &PostgresStore,
    queue: &str,
    now: Timestamp,
) -> Result<u64, StoreError> {
    // The runs of the queue's pending steps are locked first (the lock order); a step
    // stored after that, under a run not locked here, is left: purging it would lock its
    // row before its run's.
    let lock_sql = s.sql(
        "SELECT i.run_id FROM {S}.taskq_iterations i \
         WHERE i.run_id IN (SELECT t.run_id FROM {S}.taskq_tasks t \
                            WHERE t.queue = $1::text AND t.state = 'pending') \
         ORDER BY i.run_id FOR UPDATE OF i",
    );
    let sql = s.sql(
        "WITH d AS (DELETE FROM {S}.taskq_tasks WHERE queue = $1::text AND state = 'pending' \
                      AND (run_id IS NULL OR run_id = ANY($3::int8[])) \
                    RETURNING {DELETED}), \
              a AS (DELETE FROM {S}.taskq_attempts WHERE task_id IN (SELECT id FROM d)), \
              n AS ({BURY}), \
              r AS (UPDATE {S}.taskq_iterations i SET state = 'cancelled', \
                        finished_at = $2::int8, updated_at = $2::int8, \
                        error = 'its pending step ' || d.id || ' was purged from queue `' \
                                || $1::text || '`' \
                    FROM d WHERE i.run_id = d.run_id AND i.state = 'running') \
         SELECT count(*) FROM d",
    );
    let mut c = s.pool.get().await?;
    let lock = c.prep(&lock_sql).await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let lock_params: [Param<'_>; 1] = [&queue];
    let (begin, locked) = futures::join!(
        client.batch_execute("BEGIN"),
        client.query(&lock, &lock_params)
    );
    let locked = match (c.check(begin), c.check(locked)) {
        (Ok(()), Ok(rows)) => rows.iter().map(|r| r.get(0)).collect::<Vec<i64>>(),
        (Err(e), _) | (_, Err(e)) => {
            // The transaction is open (or the connection broken): not reused.
            c.discard();
            return Err(e);
        }
    };
    let client = c.client()?;
    let params: [Param<'_>; 3] = [&queue, &now.0, &locked];
    let (r, commit) = futures::join!(
        client.query_one(&st, &params),
        client.batch_execute("COMMIT")
    );
    let n: i64 = c.check(r)?.get(0);
    c.check(commit)?;
    Ok(n.max(0) as u64)
}

/// Lists tasks, newest first: a page of at most `limit` below `before`, payloads left out
/// unless asked. Without a filter, the primary key backwards; with any, one read per
/// state (the one given, or all six), each at most `limit` rows newest first, merged, in
/// one statement (see [`list_sql`]).
pub(super) async fn list_tasks(
    s: &PostgresStore,
    q: &TaskQuery,
) -> Result<Vec<TaskInfo>, StoreError> {
    if q.args_contains.as_deref().is_some_and(|a| a.contains('\0')) {
        // JSON text never holds a raw NUL (it escapes it), and PostgreSQL text cannot
        // hold one: the same answer as every store.
        return Ok(Vec::new());
    }
    let sql = s.sql(&list_sql(q));
    let limit = if q.limit == 0 { 100 } else { q.limit };
    let limit = limit.min(i64::MAX as usize) as i64;
    let before = q.before.map(|b| b.0).unwrap_or(i64::MAX);
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let mut params: Vec<Param<'_>> = vec![&before, &limit];
    if let Some(queue) = &q.queue {
        params.push(queue);
    }
    if let Some(task) = &q.task {
        params.push(task);
    }
    if let Some(args) = &q.args_contains {
        params.push(args);
    }
    let r = client.query(&st, &params).await;
    c.check(r)?.iter().map(task_from_row).collect()
}

/// The statement of [`list_tasks`] (with `{S}`): `$1` is `before`, `$2` the limit, then
/// the queue, the task name and the arguments' substring, those given. Only the filters given are in the SQL, and
/// each state is written as a literal, so that the planner can use the partial index
/// made for it: finished states through `(state, id)`, `(state, queue, id)` and
/// `(state, task, id)` of finished rows, pending tasks through the pending indexes and
/// running ones through the lease index (live rows only, however long the history).
pub(super) fn list_sql(q: &TaskQuery) -> String {
    let columns = match q.with_payload {
        true => TASK_COLUMNS,
        false => TASK_COLUMNS_NO_PAYLOAD,
    };
    // The arguments' filter is the last parameter: `strpos`, not `LIKE`, a literal,
    // case-sensitive match of the stored JSON text (the `json` type keeps it as written),
    // where `%` and `_` are plain characters.
    let args_param = 3 + usize::from(q.queue.is_some()) + usize::from(q.task.is_some());
    let args = match q.args_contains {
        Some(_) => format!(" AND strpos(payload::text, ${args_param}::text) > 0"),
        None => String::new(),
    };
    if q.state.is_none() && q.queue.is_none() && q.task.is_none() {
        return format!(
            "SELECT {columns} FROM {{S}}.taskq_tasks WHERE id < $1::int8{args} \
             ORDER BY id DESC LIMIT $2::int8"
        );
    }
    let states: Vec<TaskState> = match q.state {
        Some(st) => vec![st],
        None => TaskState::ALL.to_vec(),
    };
    let mut n = 2;
    let mut filters = String::new();
    if q.queue.is_some() {
        n += 1;
        filters.push_str(&format!(" AND queue = ${n}::text"));
    }
    if q.task.is_some() {
        n += 1;
        filters.push_str(&format!(" AND task = ${n}::text"));
    }
    filters.push_str(&args);
    let reads: Vec<String> = states
        .iter()
        .map(|st| {
            format!(
                "(SELECT {columns} FROM {{S}}.taskq_tasks \
                  WHERE state = '{}'{filters} AND id < $1::int8 \
                  ORDER BY id DESC LIMIT $2::int8)",
                st.as_str()
            )
        })
        .collect();
    format!(
        "SELECT x.* FROM ({}) x ORDER BY x.id DESC LIMIT $2::int8",
        reads.join(" UNION ALL ")
    )
}

/// One task with every attempt.
pub(super) async fn task(s: &PostgresStore, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
    let task_sql = s.sql(&format!(
        "SELECT {TASK_COLUMNS} FROM {{S}}.taskq_tasks WHERE id = $1::int8"
    ));
    let att_sql = s.sql(
        "SELECT attempt, worker, started_at, finished_at, outcome, error \
         FROM {S}.taskq_attempts WHERE task_id = $1::int8 ORDER BY id",
    );
    let mut c = s.pool.get().await?;
    let st_task = c.prep(&task_sql).await?;
    let st_att = c.prep(&att_sql).await?;
    let client = c.client()?;
    let idp: [Param<'_>; 1] = [&id.0];
    let (task, atts) = futures::join!(
        client.query_opt(&st_task, &idp),
        client.query(&st_att, &idp)
    );
    let Some(task) = c.check(task)? else {
        return Ok(None);
    };
    let atts = c.check(atts)?;
    Ok(Some(TaskDetail {
        info: task_from_row(&task)?,
        attempts: atts
            .iter()
            .map(|r| AttemptInfo {
                attempt: r.get::<_, i32>(0).max(0) as u32,
                worker: r.get(1),
                started_at: Timestamp(r.get(2)),
                finished_at: Timestamp(r.get(3)),
                outcome: r.get(4),
                error: r.get(5),
            })
            .collect(),
    }))
}

/// Makes a pending task due now.
pub(super) async fn run_now(
    s: &PostgresStore,
    id: TaskId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let sql = s.sql(
        "WITH t AS (UPDATE {S}.taskq_tasks SET run_at = $2::int8 \
                    WHERE id = $1::int8 AND state = 'pending' RETURNING queue) \
         SELECT 1 FROM (SELECT pg_notify('taskq_new', t.queue) FROM t) n",
    );
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query(&st, &[&id.0, &now.0]).await;
    if !c.check(r)?.is_empty() {
        return Ok(());
    }
    match s.state_of(&mut c, id).await? {
        None => Err(StoreError::NotFound(format!("task {id}"))),
        Some(state) => Err(StoreError::Conflict(format!(
            "task {id} is {state}, only a pending task can be run now"
        ))),
    }
}

/// Deletes a task in any state, ending its run if it was the live step.
pub(super) async fn delete(
    s: &PostgresStore,
    id: TaskId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let sql = s.sql(
        "WITH d AS (DELETE FROM {S}.taskq_tasks WHERE id = $1::int8 RETURNING {DELETED}), \
              a AS (DELETE FROM {S}.taskq_attempts WHERE task_id IN (SELECT id FROM d)), \
              n AS ({BURY}), \
              r AS (UPDATE {S}.taskq_iterations i SET state = 'cancelled', \
                        finished_at = $2::int8, updated_at = $2::int8, \
                        error = 'its step ' || d.id || ' was deleted' \
                    FROM d WHERE i.run_id = d.run_id AND i.state = 'running' \
                      AND d.state IN ('pending', 'running')) \
         SELECT count(*) FROM d",
    );
    let mut c = s.pool.get().await?;
    let lock = c.prep(&s.lock_runs_of_tasks_sql()).await?;
    let st = c.prep(&sql).await?;
    let ids = vec![id.0];
    let r = PostgresStore::after_locks(&mut c, (&lock, &[&ids]), (&st, &[&id.0, &now.0])).await?;
    let n: i64 = c.check(r)?.first().map_or(0, |row| row.get(0));
    if n == 0 {
        return Err(StoreError::NotFound(format!("task {id}")));
    }
    Ok(())
}

/// Puts a dead or failed task back to pending, its run running again.
pub(super) async fn retry(s: &PostgresStore, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
    let mut c = s.pool.get().await?;
    match retry_rows(s, &mut c, &[id.0], now).await? {
        Ok(0) => {}
        Ok(_) => return Ok(()),
        Err(e) if is_unique_violation(&e) => {
            return Err(StoreError::Conflict(format!(
                "task {id} cannot be retried: another live task has its unique name"
            )))
        }
        Err(e) => {
            c.check::<()>(Err(e))?;
        }
    }
    match s.state_of(&mut c, id).await? {
        None => Err(StoreError::NotFound(format!("task {id}"))),
        Some(state) => Err(StoreError::Conflict(format!(
            "task {id} is {state}, only a dead or failed task can be retried"
        ))),
    }
}

/// Retries those of `ids` that are dead or failed, in one statement; when one of them
/// cannot be (another live task has its unique name, which fails the whole statement),
/// one by one instead, skipping that one.
pub(super) async fn retry_many(
    s: &PostgresStore,
    ids: &[TaskId],
    now: Timestamp,
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let raw: Vec<i64> = ids.iter().map(|id| id.0).collect();
    let mut c = s.pool.get().await?;
    match retry_rows(s, &mut c, &raw, now).await? {
        Ok(n) => return Ok(n),
        Err(e) if is_unique_violation(&e) => {}
        Err(e) => {
            c.check::<()>(Err(e))?;
        }
    }
    let mut retried = 0;
    for id in &raw {
        match retry_rows(s, &mut c, std::slice::from_ref(id), now).await? {
            Ok(n) => retried += n,
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => {
                c.check::<()>(Err(e))?;
            }
        }
    }
    Ok(retried)
}

/// The one statement of a retry: the dead or failed rows among `ids` back to pending (their
/// runs' rows locked first, the lock order; then their own rows in id order, so that two
/// retries of overlapping batches never wait on each other in a cycle), their runs
/// running again, the counts moved and their queues notified. Returns how many it
/// retried, or the statement's SQL error (the transaction rolled back: a unique-name
/// violation when another live task has the name of one of them).
async fn retry_rows(
    s: &PostgresStore,
    c: &mut PooledConn<'_>,
    ids: &[i64],
    now: Timestamp,
) -> Result<Result<u64, tokio_postgres::Error>, StoreError> {
    // The old state for the counts (an update returns the new one only): `o` reads it
    // under the row lock, which a retry or a deletion (the only ways out of dead and
    // failed) also takes, so it is the state the update replaces.
    let sql = s.sql(&format!(
        "WITH o AS (SELECT id, state FROM {{S}}.taskq_tasks \
                    WHERE id = ANY($1::int8[]) AND state IN ('dead', 'failed') \
                    ORDER BY id FOR UPDATE), \
              t AS (UPDATE {{S}}.taskq_tasks x SET state = 'pending', attempts = 0, \
                        enqueued_at = $2::int8, run_at = $2::int8, finished_at = NULL \
                    FROM o WHERE x.id = o.id AND x.state IN ('dead', 'failed') \
                    RETURNING x.run_id, x.queue, o.state AS old_state), \
              r AS (UPDATE {{S}}.taskq_iterations i SET state = 'running', finished_at = NULL, \
                        error = NULL, updated_at = $2::int8 \
                    FROM t WHERE i.run_id = t.run_id), \
              {counted} \
         SELECT 1 FROM (SELECT pg_notify('taskq_new', t.queue) FROM t) n",
        counted = counted("counted", "t", "queue", "old_state", '-'),
    ));
    let lock = c.prep(&s.lock_runs_of_tasks_sql()).await?;
    let st = c.prep(&sql).await?;
    let ids = ids.to_vec();
    Ok(
        PostgresStore::after_locks(c, (&lock, &[&ids]), (&st, &[&ids, &now.0]))
            .await?
            .map(|rows| rows.len() as u64),
    )
}

/// One iteration run.
pub(super) async fn iteration(
    s: &PostgresStore,
    run: TaskId,
) -> Result<Option<IterationInfo>, StoreError> {
    let sql = s.sql(&format!(
        "SELECT {ITERATION_COLUMNS} FROM {{S}}.taskq_iterations WHERE run_id = $1::int8"
    ));
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query_opt(&st, &[&run.0]).await;
    c.check(r)?.as_ref().map(iteration_from_row).transpose()
}

/// Iteration runs, newest first.
pub(super) async fn iterations(
    s: &PostgresStore,
    limit: usize,
) -> Result<Vec<IterationInfo>, StoreError> {
    let sql = s.sql(&format!(
        "SELECT {ITERATION_COLUMNS} FROM {{S}}.taskq_iterations ORDER BY run_id DESC LIMIT $1::int8"
    ));
    let limit = limit.min(i64::MAX as usize) as i64;
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query(&st, &[&limit]).await;
    c.check(r)?.iter().map(iteration_from_row).collect()
}

/// Cancels a running iteration run and every live step of it. The run's row is locked
/// first, in a statement of its own: a step handing over holds it until it commits, so the
/// cancel's statement, started after, sees (and cancels) the continuation it stored.
pub(super) async fn cancel_iteration(
    s: &PostgresStore,
    run: TaskId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let lock_sql = s.sql("SELECT 1 FROM {S}.taskq_iterations WHERE run_id = $1::int8 FOR UPDATE");
    let sql = s.sql(&format!(
        "WITH it AS (UPDATE {{S}}.taskq_iterations SET state = 'cancelled', \
                         finished_at = $2::int8, updated_at = $2::int8 \
                     WHERE run_id = $1::int8 AND state = 'running' RETURNING run_id), \
              t AS (UPDATE {{S}}.taskq_tasks SET state = 'cancelled', finished_at = $2::int8, \
                         worker = NULL, lease_until = NULL \
                    WHERE run_id IN (SELECT run_id FROM it) \
                      AND state IN ('pending', 'running') \
                    RETURNING queue, state), \
              {counted} \
         SELECT count(*) FROM it",
        counted = counted("counted", "t", "queue", "state", '+'),
    ));
    let mut c = s.pool.get().await?;
    let lock = c.prep(&lock_sql).await?;
    let st = c.prep(&sql).await?;
    let r =
        PostgresStore::after_locks(&mut c, (&lock, &[&run.0]), (&st, &[&run.0, &now.0])).await?;
    let n: i64 = c.check(r)?.first().map_or(0, |row| row.get(0));
    if n > 0 {
        return Ok(());
    }
    let state_sql = s.sql("SELECT state FROM {S}.taskq_iterations WHERE run_id = $1::int8");
    let st = c.prep(&state_sql).await?;
    let client = c.client()?;
    let r = client.query_opt(&st, &[&run.0]).await;
    match c.check(r)? {
        None => Err(StoreError::NotFound(format!("iteration run {run}"))),
        Some(row) => {
            let state: String = row.get(0);
            Err(StoreError::Conflict(format!(
                "run {run} is {state}, only a running run can be cancelled"
            )))
        }
    }
}

/// Cancels a task that is not a step (see [`Store::cancel`](crate::store::Store::cancel)),
/// in one statement: a pending task, or a running one whose lease lapsed, ends cancelled;
/// a running one is marked and [`CANCEL_CHANNEL`](super::CANCEL_CHANNEL) is notified at
/// its commit (not again for a second cancel). The row is read locked, so a finish or
/// claim committed meanwhile is seen (a task pending again for a retry is cancelled as
/// pending).
pub(super) async fn cancel(
    s: &PostgresStore,
    id: TaskId,
    now: Timestamp,
) -> Result<CancelOutcome, StoreError> {
    // `o` locks the row and reads it as it is now (a finish or claim committed meanwhile is
    // seen): whether it was marked before (a second cancel changes nothing) and whether
    // its lease has lapsed (its worker is gone: ended now, the lapse recorded in `att`, as
    // a claim would).
    let sql = s.sql(&format!(
        "WITH o AS (SELECT t.id, t.state, t.cancel_requested AS was, t.attempts, t.worker, \
                     t.started_at, \
                     t.state = 'running' AND COALESCE(t.lease_until <= $2::int8, true) AS lapsed \
                 FROM {{S}}.taskq_tasks t \
                 WHERE t.id = $1::int8 AND t.state IN ('pending', 'running') \
                   AND t.run_id IS NULL \
                 FOR UPDATE), \
              t AS (UPDATE {{S}}.taskq_tasks t SET \
                 state = CASE WHEN o.state = 'pending' OR o.lapsed THEN 'cancelled' \
                              ELSE t.state END, \
                 finished_at = CASE WHEN o.state = 'pending' OR o.lapsed THEN $2::int8 \
                                    ELSE t.finished_at END, \
                 last_error = CASE WHEN o.state = 'pending' THEN $3::text \
                                   WHEN o.lapsed THEN $4::text ELSE t.last_error END, \
                 worker = CASE WHEN o.lapsed THEN NULL ELSE t.worker END, \
                 lease_until = CASE WHEN o.lapsed THEN NULL ELSE t.lease_until END, \
                 cancel_requested = t.cancel_requested OR o.state = 'running' \
             FROM o WHERE t.id = o.id \
             RETURNING t.id, t.queue, t.state, o.was), \
              att AS (INSERT INTO {{S}}.taskq_attempts \
                 (task_id, attempt, worker, started_at, finished_at, outcome, error) \
                 SELECT o.id, o.attempts, COALESCE(o.worker, ''), \
                        COALESCE(o.started_at, $2::int8), $2::int8, $5::text, $4::text \
                 FROM o WHERE o.lapsed), \
              {counted} \
         SELECT t.state, t.was, n.n FROM t \
         LEFT JOIN LATERAL (SELECT pg_notify('{channel}', t.id::text) AS n \
                            WHERE t.state = 'running' AND NOT t.was) n ON true",
        counted = counted("counted", "t", "queue", "state", '+'),
        channel = super::CANCEL_CHANNEL,
    ));
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let (label, error) = crate::policy::CANCEL_LAPSED;
    let r = client
        .query_opt(
            &st,
            &[
                &id.0,
                &now.0,
                &crate::policy::CANCELLED_PENDING,
                &error,
                &label,
            ],
        )
        .await;
    if let Some(row) = c.check(r)? {
        let state: String = row.get(0);
        let was: bool = row.get(1);
        return Ok(match (state.as_str(), was) {
            ("running", false) => CancelOutcome::Requested,
            ("running", true) => CancelOutcome::AlreadyRequested,
            _ => CancelOutcome::Cancelled,
        });
    }
    let why_sql = s.sql("SELECT state, run_id FROM {S}.taskq_tasks WHERE id = $1::int8");
    let st = c.prep(&why_sql).await?;
    let client = c.client()?;
    let r = client.query_opt(&st, &[&id.0]).await;
    match c.check(r)? {
        None => Err(StoreError::NotFound(format!("task {id}"))),
        Some(row) => {
            let state: String = row.get(0);
            let run: Option<i64> = row.get(1);
            Err(StoreError::Conflict(match run {
                Some(run) => format!("task {id} is a step of iteration run {run}: cancel the run"),
                None => {
                    format!("task {id} is {state}, only a pending or running task can be cancelled")
                }
            }))
        }
    }
}

impl PostgresStore {
    /// The state of task `id`, if it exists.
    async fn state_of(
        &self,
        c: &mut PooledConn<'_>,
        id: TaskId,
    ) -> Result<Option<String>, StoreError> {
        let sql = self.sql("SELECT state FROM {S}.taskq_tasks WHERE id = $1::int8");
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query_opt(&st, &[&id.0]).await;
        Ok(c.check(r)?.map(|row| row.get(0)))
    }
}

/// Tasks that ended done, failed or dead in `[since, until)`, by minute of their end, read
/// through the (state, finished_at) index retention uses.
pub(super) async fn finished_per_minute(
    s: &PostgresStore,
    since: Timestamp,
    until: Timestamp,
) -> Result<Vec<FinishedMinute>, StoreError> {
    // A floored minute (also right before 1970, where `%` is negative), grouped by state.
    let sql = s.sql(
        "SELECT finished_at - (((finished_at % 60000) + 60000) % 60000) AS minute, state, \
                COUNT(*) \
         FROM {S}.taskq_tasks \
         WHERE state IN ('done', 'failed', 'dead') \
           AND finished_at >= $1::int8 AND finished_at < $2::int8 \
         GROUP BY 1, 2",
    );
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query(&st, &[&since.0, &until.0]).await;
    let mut out = Vec::new();
    for row in c.check(r)? {
        let minute: i64 = row.try_get(0).map_err(StoreError::backend)?;
        let state: String = row.try_get(1).map_err(StoreError::backend)?;
        let n: i64 = row.try_get(2).map_err(StoreError::backend)?;
        let state: TaskState = state.parse().map_err(StoreError::Backend)?;
        out.push((Timestamp(minute), state, n.max(0) as u64));
    }
    Ok(FinishedMinute::tally(out))
}
