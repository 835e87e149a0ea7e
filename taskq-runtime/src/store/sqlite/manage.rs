//! The management calls: queues and their settings, listing and reading tasks, run now,
//! delete, retry, purge, and iteration runs (read, list, cancel); and [`bury`], the
//! tombstones every deletion of task rows leaves first.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::counts::Tally;
use super::rows::{
    run_state, task_columns, task_state, u32_of, u64_of, RawIteration, RawTask, ITERATION_COLUMNS,
    TASK_COLUMNS,
};
use super::{Fail, R};
use crate::retention;
use crate::store::tombstone::{self, Deleted, Tombstone};
use crate::store::{
    AttemptInfo, CancelOutcome, FinishedMinute, IterationInfo, QueueConfig, QueueInfo, RunState,
    StoreError, TaskDetail, TaskId, TaskInfo, TaskQuery, TaskState,
};
use crate::time::Timestamp;

/// Every queue that has tasks or settings, with counts by state: the counts kept with
/// the rows (`taskq_queue_counts`, one row per queue and state), never the tasks.
pub(super) fn queues(tx: &rusqlite::Transaction<'_>) -> R<Vec<QueueInfo>> {
    let mut map: BTreeMap<String, QueueInfo> = BTreeMap::new();
    let mut st = tx.prepare_cached(
        "SELECT name, paused, rate, burst, max_concurrent, keep_done_ms, keep_failed_ms
         FROM taskq_queues",
    )?;
    let rows = st.query_map([], |r| {
        Ok(QueueInfo {
            name: r.get(0)?,
            counts: Vec::new(),
            paused: r.get::<_, i64>(1)? != 0,
            config: QueueConfig {
                rate: r.get(2)?,
                burst: r.get::<_, Option<i64>>(3)?.map(u32_of),
                max_concurrent: r.get::<_, Option<i64>>(4)?.map(u32_of),
                retention: retention::from_columns(r.get(5)?, r.get(6)?),
            },
        })
    })?;
    for q in rows {
        let q = q?;
        map.insert(q.name.clone(), q);
    }
    let mut st = tx.prepare_cached("SELECT queue, state, n FROM taskq_queue_counts WHERE n > 0")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (queue, state, n) = row?;
        let state = task_state(&state)?;
        map.entry(queue.clone())
            .or_insert_with(|| QueueInfo {
                name: queue,
                ..QueueInfo::default()
            })
            .counts
            .push((state, u64_of(n)));
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
pub(super) fn configure_queue(
    tx: &rusqlite::Transaction<'_>,
    queue: &str,
    config: &QueueConfig,
) -> R<()> {
    let (keep_done, keep_failed) = retention::to_columns(config.retention.as_ref());
    tx.prepare_cached(
        "INSERT INTO taskq_queues (name, rate, burst, max_concurrent, keep_done_ms,
             keep_failed_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (name) DO UPDATE SET rate = ?2, burst = ?3,
             max_concurrent = ?4, bucket_tokens = NULL, bucket_refilled_at = NULL,
             keep_done_ms = ?5, keep_failed_ms = ?6",
    )?
    .execute(params![
        queue,
        config.rate,
        config.burst,
        config.max_concurrent,
        keep_done,
        keep_failed
    ])?;
    Ok(())
}

/// Pauses or resumes a queue (creating it if needed).
pub(super) fn set_paused(tx: &rusqlite::Transaction<'_>, queue: &str, paused: bool) -> R<()> {
    tx.prepare_cached(
        "INSERT INTO taskq_queues (name, paused) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET paused = ?2",
    )?
    .execute(params![queue, paused])?;
    Ok(())
}

/// Deletes the pending tasks of a queue, ending their runs and burying their names.
pub(super) fn purge(tx: &rusqlite::Transaction<'_>, queue: &str, now: Timestamp) -> R<u64> {
    tx.prepare_cached(
        "UPDATE taskq_iterations
         SET state = 'cancelled', finished_at = ?2, updated_at = ?2,
             error = 'its pending step ' || (SELECT t.id FROM taskq_tasks t
                 WHERE t.run_id = taskq_iterations.run AND t.state = 'pending'
                 LIMIT 1) || ' was purged from queue `' || ?1 || '`'
         WHERE state = 'running' AND run IN (
             SELECT run_id FROM taskq_tasks
             WHERE queue = ?1 AND state = 'pending' AND run_id IS NOT NULL)",
    )?
    .execute(params![queue, now.0])?;
    bury(
        tx,
        "t.queue = ?1 AND t.state = 'pending'",
        params![queue],
        now,
    )?;
    let n = tx
        .prepare_cached("DELETE FROM taskq_tasks WHERE queue = ?1 AND state = 'pending'")?
        .execute([queue])?;
    let mut tally = Tally::default();
    tally.add(queue, TaskState::Pending, -(n as i64));
    tally.write(tx)?;
    Ok(n as u64)
}

/// Lists tasks, newest first: a page of at most `limit` below `before`, each read
/// through an index (see [`list_sql`]), payloads left out unless asked.
pub(super) fn list_tasks(tx: &rusqlite::Transaction<'_>, q: &TaskQuery) -> R<Vec<TaskInfo>> {
    let limit = if q.limit == 0 { 100 } else { q.limit };
    let limit = limit.min(i64::MAX as usize) as i64;
    if q.args_contains.as_deref().is_some_and(|a| a.contains('\0')) {
        // JSON text never holds a raw NUL (it escapes it): the same answer as every store.
        return Ok(Vec::new());
    }
    // Without a state but with a queue or task name, one indexed read per state (each
    // at most `limit` rows, newest first), merged.
    let states: Vec<Option<TaskState>> = match (q.state, q.queue.is_some() || q.task.is_some()) {
        (Some(s), _) => vec![Some(s)],
        (None, true) => TaskState::ALL.into_iter().map(Some).collect(),
        (None, false) => vec![None],
    };
    let mut raw: Vec<RawTask> = Vec::new();
    for state in states {
        let (sql, args) = list_sql(q, state, limit);
        let mut st = tx.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), RawTask::read)?;
        for r in rows {
            raw.push(r?);
        }
    }
    raw.sort_by_key(|r| std::cmp::Reverse(r.id()));
    raw.truncate(limit as usize);
    raw.into_iter().map(RawTask::decode).collect()
}

/// The condition of the partial listing indexes of finished tasks, as written in them
/// (schema version 5: two live states excluded rather than four finished ones listed,
/// see `schema.rs`).
const FINISHED: &str = "state NOT IN ('pending', 'running')";

/// The statement of one indexed read of [`list_tasks`] and its arguments: only the
/// filters given are written into the SQL, so that SQLite picks the index made for
/// them (the primary key backwards, `(state, id)`, and for finished tasks
/// `(state, queue, id)` or `(state, task, id)`; live tasks by queue through the claim
/// index, whose rows are the live ones); the payload column is returned only when asked
/// (and read only then, or for [`TaskQuery::args_contains`], checked on each row the
/// index gives).
pub(super) fn list_sql(
    q: &TaskQuery,
    state: Option<TaskState>,
    limit: i64,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = format!(
        "SELECT {} FROM taskq_tasks WHERE 1",
        task_columns(q.with_payload)
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    // The state as a literal, and for a finished state read by queue or task name the
    // partial indexes' own condition, so that SQLite may use them (it does not look
    // into parameters); by state alone, `(state, id)`.
    if let Some(s) = state {
        sql.push_str(&format!(" AND state = '{}'", s.as_str()));
        if !s.is_live() && (q.queue.is_some() || q.task.is_some()) {
            sql.push_str(&format!(" AND {FINISHED}"));
        }
    }
    if let Some(queue) = &q.queue {
        args.push(queue.clone().into());
        sql.push_str(&format!(" AND queue = ?{}", args.len()));
    }
    if let Some(t) = &q.task {
        args.push(t.clone().into());
        sql.push_str(&format!(" AND task = ?{}", args.len()));
    }
    if let Some(a) = &q.args_contains {
        // `instr`, not `LIKE`: a literal, case-sensitive match of the stored JSON text,
        // where `%` and `_` are plain characters.
        args.push(a.clone().into());
        sql.push_str(&format!(" AND instr(payload, ?{}) > 0", args.len()));
    }
    if let Some(b) = q.before {
        args.push(b.0.into());
        sql.push_str(&format!(" AND id < ?{}", args.len()));
    }
    args.push(limit.into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    (sql, args)
}

/// One task with every attempt.
pub(super) fn task(tx: &rusqlite::Transaction<'_>, id: TaskId) -> R<Option<TaskDetail>> {
    let raw = tx
        .prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM taskq_tasks WHERE id = ?1"
        ))?
        .query_row([id.0], RawTask::read)
        .optional()?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let info = raw.decode()?;
    let mut st = tx.prepare_cached(
        "SELECT attempt, worker, started_at, finished_at, outcome, error
         FROM taskq_attempts WHERE task_id = ?1 ORDER BY seq",
    )?;
    let rows = st.query_map([id.0], |r| {
        Ok(AttemptInfo {
            attempt: u32_of(r.get(0)?),
            worker: r.get(1)?,
            started_at: Timestamp(r.get(2)?),
            finished_at: Timestamp(r.get(3)?),
            outcome: r.get(4)?,
            error: r.get(5)?,
        })
    })?;
    let mut attempts = Vec::new();
    for a in rows {
        attempts.push(a?);
    }
    Ok(Some(TaskDetail { info, attempts }))
}

/// Makes a pending task due now.
pub(super) fn run_now(tx: &rusqlite::Transaction<'_>, id: TaskId, now: Timestamp) -> R<()> {
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM taskq_tasks WHERE id = ?1")?
        .query_row([id.0], |r| r.get(0))
        .optional()?;
    let state = task_state(&state.ok_or_else(|| StoreError::NotFound(format!("task {id}")))?)?;
    if state != TaskState::Pending {
        return Err(StoreError::Conflict(format!(
            "task {id} is {state}, only a pending task can be run now"
        ))
        .into());
    }
    tx.prepare_cached("UPDATE taskq_tasks SET run_at = ?2 WHERE id = ?1")?
        .execute(params![id.0, now.0])?;
    Ok(())
}

/// Deletes a task in any state, ending its run if it was the live step.
pub(super) fn delete(tx: &rusqlite::Transaction<'_>, id: TaskId, now: Timestamp) -> R<()> {
    tx.prepare_cached(
        "UPDATE taskq_iterations
         SET state = 'cancelled', finished_at = ?2, updated_at = ?2,
             error = 'its step ' || ?1 || ' was deleted'
         WHERE state = 'running' AND run = (
             SELECT run_id FROM taskq_tasks
             WHERE id = ?1 AND state IN ('pending', 'running'))",
    )?
    .execute(params![id.0, now.0])?;
    bury(tx, "t.id = ?1", params![id.0], now)?;
    let gone: Option<(String, String)> = tx
        .prepare_cached("DELETE FROM taskq_tasks WHERE id = ?1 RETURNING queue, state")?
        .query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (queue, state) = gone.ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
    let mut tally = Tally::default();
    tally.add(&queue, task_state(&state)?, -1);
    tally.write(tx)?;
    Ok(())
}

/// Puts a dead or failed task back to pending, its run running again.
pub(super) fn retry(tx: &rusqlite::Transaction<'_>, id: TaskId, now: Timestamp) -> R<()> {
    let row: Option<(String, Option<i64>, Option<String>, String)> = tx
        .prepare_cached("SELECT state, run_id, unique_name, queue FROM taskq_tasks WHERE id = ?1")?
        .query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let (state, run, name, queue) =
        row.ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
    let state = task_state(&state)?;
    if !matches!(state, TaskState::Dead | TaskState::Failed) {
        return Err(StoreError::Conflict(format!(
            "task {id} is {state}, only a dead or failed task can be retried"
        ))
        .into());
    }
    if let Some(name) = name {
        let taken: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM taskq_tasks WHERE unique_name = ?1 AND id != ?2
                   AND state IN ('pending', 'running') LIMIT 1",
            )?
            .query_row(params![name, id.0], |r| r.get(0))
            .optional()?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "task {id} cannot be retried: another live task has its unique name"
            ))
            .into());
        }
    }
    tx.prepare_cached(
        "UPDATE taskq_tasks SET state = 'pending', attempts = 0, enqueued_at = ?2,
             run_at = ?2, finished_at = NULL
         WHERE id = ?1",
    )?
    .execute(params![id.0, now.0])?;
    let mut tally = Tally::default();
    tally.moved(&queue, state, TaskState::Pending);
    tally.write(tx)?;
    if let Some(run) = run {
        tx.prepare_cached(
            "UPDATE taskq_iterations SET state = 'running', finished_at = NULL,
                 error = NULL, updated_at = ?2
             WHERE run = ?1",
        )?
        .execute(params![run, now.0])?;
    }
    Ok(())
}

/// Retries those of `ids` that [`retry`] accepts, in the caller's one transaction; the
/// others are skipped ([`retry`] refuses them before it writes anything).
pub(super) fn retry_many(tx: &rusqlite::Transaction<'_>, ids: &[TaskId], now: Timestamp) -> R<u64> {
    let mut retried = 0;
    for id in ids {
        match retry(tx, *id, now) {
            Ok(()) => retried += 1,
            Err(Fail::Store(StoreError::NotFound(_) | StoreError::Conflict(_))) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(retried)
}

/// One iteration run.
pub(super) fn iteration(tx: &rusqlite::Transaction<'_>, run: i64) -> R<Option<IterationInfo>> {
    let raw = tx
        .prepare_cached(&format!(
            "SELECT {ITERATION_COLUMNS} FROM taskq_iterations WHERE run = ?1"
        ))?
        .query_row([run], RawIteration::read)
        .optional()?;
    raw.map(RawIteration::decode).transpose()
}

/// Iteration runs, newest first.
pub(super) fn iterations(tx: &rusqlite::Transaction<'_>, limit: usize) -> R<Vec<IterationInfo>> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT {ITERATION_COLUMNS} FROM taskq_iterations ORDER BY run DESC LIMIT ?1"
    ))?;
    let rows = st.query_map([limit.min(i64::MAX as usize) as i64], RawIteration::read)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r?.decode()?);
    }
    Ok(out)
}

/// Cancels a running iteration run and its live step.
pub(super) fn cancel_iteration(
    tx: &rusqlite::Transaction<'_>,
    run: TaskId,
    now: Timestamp,
) -> R<()> {
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM taskq_iterations WHERE run = ?1")?
        .query_row([run.0], |r| r.get(0))
        .optional()?;
    let state = state.ok_or_else(|| StoreError::NotFound(format!("iteration run {run}")))?;
    let state = run_state(&state)?;
    if state != RunState::Running {
        return Err(StoreError::Conflict(format!(
            "run {run} is {}, only a running run can be cancelled",
            state.as_str()
        ))
        .into());
    }
    tx.prepare_cached(
        "UPDATE taskq_iterations SET state = 'cancelled', finished_at = ?2,
             updated_at = ?2
         WHERE run = ?1",
    )?
    .execute(params![run.0, now.0])?;
    // The live steps (a run has one, two while a hand-over is in flight), read first for
    // the counts: an update returns the new state only.
    let mut tally = Tally::default();
    let live: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT queue, state FROM taskq_tasks
             WHERE run_id = ?1 AND state IN ('pending', 'running')",
        )?
        .query_map([run.0], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (queue, state) in &live {
        tally.moved(queue, task_state(state)?, TaskState::Cancelled);
    }
    tx.prepare_cached(
        "UPDATE taskq_tasks SET state = 'cancelled', finished_at = ?2, worker = NULL,
             lease_until = NULL
         WHERE run_id = ?1 AND state IN ('pending', 'running')",
    )?
    .execute(params![run.0, now.0])?;
    tally.write(tx)?;
    Ok(())
}

/// Leaves the tombstones of the named tasks matching `which` (a condition on `t`), which
/// the caller deletes next in the same transaction (see [`tombstone`]). Every deletion of
/// task rows (delete, purge, prune) goes through here first.
pub(super) fn bury(
    tx: &rusqlite::Transaction<'_>,
    which: &str,
    p: impl rusqlite::Params,
    now: Timestamp,
) -> R<()> {
    type Named = (
        String,
        String,
        Option<i64>,
        i64,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let named: Vec<Named> = tx
        .prepare_cached(&format!(
            "SELECT t.unique_name, t.state, t.finished_at, t.tombstone_ms, t.run_id,
                    i.state, i.finished_at
             FROM taskq_tasks t LEFT JOIN taskq_iterations i ON i.run = t.run_id
             WHERE t.unique_name IS NOT NULL AND {which}"
        ))?
        .query_map(p, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (name, state, finished_at, window_ms, run, run_st, run_end) in named {
        let run = match (run, run_st) {
            (Some(run), Some(st)) => Some((
                TaskId(run),
                tombstone::run_holds(run_state(&st)?, run_end.map(Timestamp), window_ms, now),
            )),
            _ => None,
        };
        let deleted = Deleted {
            name: Some(&name),
            state: task_state(&state)?,
            finished_at: finished_at.map(Timestamp),
            window_ms,
            run,
        };
        let Some((name, new)) = tombstone::of_deleted(deleted, now) else {
            continue;
        };
        let old: Option<(i64, Option<i64>, i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT n.taken_until, n.run_id, n.tombstone_ms, i.finished_at
                 FROM taskq_tombstones n LEFT JOIN taskq_iterations i ON i.run = n.run_id
                 WHERE n.name = ?1",
            )?
            .query_row([&name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let old_run_end = old.and_then(|o| o.3).map(Timestamp);
        let old = old.map(|(until, run, window_ms, _)| Tombstone {
            taken_until: Timestamp(until),
            run: run.map(TaskId),
            window_ms,
        });
        let t = tombstone::merge(old, old_run_end, new);
        tx.prepare_cached(
            "INSERT INTO taskq_tombstones (name, taken_until, run_id, tombstone_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET taken_until = excluded.taken_until,
                 run_id = excluded.run_id, tombstone_ms = excluded.tombstone_ms",
        )?
        .execute(params![
            name,
            t.taken_until.0,
            t.run.map(|r| r.0),
            t.window_ms
        ])?;
    }
    Ok(())
}

/// Tasks that ended done, failed or dead in `[since, until)`, by minute of their end, read
/// through the (state, finished_at) index (one range per state).
pub(super) fn finished_per_minute(
    tx: &rusqlite::Transaction<'_>,
    since: Timestamp,
    until: Timestamp,
) -> R<Vec<FinishedMinute>> {
    let mut st = tx.prepare_cached(FINISHED_PER_MINUTE)?;
    let rows = st.query_map(params![since.0, until.0], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (minute, state, n) = r?;
        out.push((Timestamp(minute), task_state(&state)?, u64_of(n)));
    }
    Ok(FinishedMinute::tally(out))
}

/// The query of [`finished_per_minute`]: a floored minute (also right before 1970, where
/// `%` is negative), grouped by state.
const FINISHED_PER_MINUTE: &str = "\
SELECT finished_at - (((finished_at % 60000) + 60000) % 60000) AS minute, state, COUNT(*)
FROM taskq_tasks
WHERE state IN ('done', 'failed', 'dead') AND finished_at >= ?1 AND finished_at < ?2
GROUP BY minute, state";

/// Cancels a task that is not a step (see [`Store::cancel`](crate::store::Store::cancel)):
/// a pending one ends cancelled, a running one is marked; in one write transaction.
pub(super) fn cancel(
    tx: &rusqlite::Transaction<'_>,
    id: TaskId,
    now: Timestamp,
) -> R<CancelOutcome> {
    type Row = (String, String, Option<i64>, bool, Option<i64>);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT state, queue, run_id, cancel_requested, lease_until FROM taskq_tasks
             WHERE id = ?1",
        )?
        .query_row([id.0], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let (state, queue, run, requested, lease_until) =
        row.ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
    if let Some(run) = run {
        return Err(StoreError::Conflict(format!(
            "task {id} is a step of iteration run {run}: cancel the run"
        ))
        .into());
    }
    match task_state(&state)? {
        TaskState::Pending => {
            tx.prepare_cached(
                "UPDATE taskq_tasks SET state = 'cancelled', finished_at = ?2, last_error = ?3
                 WHERE id = ?1",
            )?
            .execute(params![id.0, now.0, crate::policy::CANCELLED_PENDING])?;
            let mut tally = Tally::default();
            tally.moved(&queue, TaskState::Pending, TaskState::Cancelled);
            tally.write(tx)?;
            Ok(CancelOutcome::Cancelled)
        }
        // Its worker is gone (the lease lapsed): nothing is left to tell.
        TaskState::Running if lease_until.is_none_or(|t| t <= now.0) => {
            let mut tally = Tally::default();
            super::claim::end_cancelled_running(tx, id.0, &queue, now.0, &mut tally)?;
            tally.write(tx)?;
            Ok(CancelOutcome::Cancelled)
        }
        TaskState::Running if requested => Ok(CancelOutcome::AlreadyRequested),
        TaskState::Running => {
            tx.prepare_cached("UPDATE taskq_tasks SET cancel_requested = 1 WHERE id = ?1")?
                .execute([id.0])?;
            Ok(CancelOutcome::Requested)
        }
        state => Err(StoreError::Conflict(format!(
            "task {id} is {state}, only a pending or running task can be cancelled"
        ))
        .into()),
    }
}
