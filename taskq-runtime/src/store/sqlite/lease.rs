//! The lease-bound calls: heartbeat, finish and checkpoint. Each one touches a task only
//! where `id`, the fencing `token` and `state = 'running'` all match, and changes nothing
//! for a lease that was lost.

use rusqlite::{params, OptionalExtension};

use super::counts::Tally;
use super::rows::{run_state, to_json};
use super::R;
use crate::store::{
    Checkpoint, Finish, Lease, Renewal, RunState, StoreError, TaskId, TaskState, MAX_COUNT,
};
use crate::time::Timestamp;

/// Extends the leases still held to `until`; returns the ids whose lease was lost.
pub(super) fn heartbeat(
    tx: &rusqlite::Transaction<'_>,
    leases: &[Lease],
    until: Timestamp,
) -> R<Vec<TaskId>> {
    let mut st = tx.prepare_cached(
        "UPDATE taskq_tasks SET lease_until = ?3
         WHERE id = ?1 AND token = ?2 AND state = 'running'",
    )?;
    let mut lost = Vec::new();
    for l in leases {
        if st.execute(params![l.id.0, l.token, until.0])? == 0 {
            lost.push(l.id);
        }
    }
    Ok(lost)
}

/// [`heartbeat`], and which of the renewed tasks have a cancel requested.
pub(super) fn renew(
    tx: &rusqlite::Transaction<'_>,
    leases: &[Lease],
    until: Timestamp,
) -> R<Renewal> {
    let lost = heartbeat(tx, leases, until)?;
    let mut requested =
        tx.prepare_cached("SELECT cancel_requested FROM taskq_tasks WHERE id = ?1 AND token = ?2")?;
    let mut cancel_requested = Vec::new();
    for l in leases.iter().filter(|l| !lost.contains(&l.id)) {
        let flag: Option<bool> = requested
            .query_row(params![l.id.0, l.token], |r| r.get(0))
            .optional()?;
        if flag == Some(true) {
            cancel_requested.push(l.id);
        }
    }
    Ok(Renewal {
        lost,
        cancel_requested,
    })
}

/// Records finished attempts: one result per input (`LeaseLost` for a lease no longer
/// held), and whether any of them woke work.
pub(super) fn finish(
    tx: &rusqlite::Transaction<'_>,
    finished: &[Finish],
    worker: &str,
    now: Timestamp,
) -> R<(Vec<Result<(), StoreError>>, bool)> {
    let mut results = Vec::with_capacity(finished.len());
    let mut woke = false;
    let mut tally = Tally::default();
    for f in finished {
        match finish_one(tx, f, worker, now.0, &mut tally)? {
            Some(wakes) => {
                woke |= wakes;
                results.push(Ok(()));
            }
            None => results.push(Err(StoreError::LeaseLost(f.lease.id))),
        }
    }
    tally.write(tx)?;
    Ok((results, woke))
}

/// Records an iterative step's progress, atomically with the lease check.
pub(super) fn checkpoint(
    tx: &rusqlite::Transaction<'_>,
    lease: Lease,
    cp: &Checkpoint,
    now: Timestamp,
) -> R<()> {
    let Some(Held { run, .. }) = held(tx, lease)? else {
        return Err(StoreError::LeaseLost(lease.id).into());
    };
    let run = run.ok_or_else(|| {
        StoreError::Conflict(format!(
            "task {} is not a step of an iterative run",
            lease.id
        ))
    })?;
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM taskq_iterations WHERE run = ?1")?
        .query_row([run], |r| r.get(0))
        .optional()?;
    let state = state.ok_or_else(|| StoreError::NotFound(format!("iteration run {run}")))?;
    if run_state(&state)? != RunState::Running {
        return Err(StoreError::LeaseLost(lease.id).into());
    }
    tx.prepare_cached(
        "UPDATE taskq_iterations
         SET cursor = ?2, batches = batches + 1,
             processed = CASE WHEN processed > 9223372036854775807 - ?3
                              THEN 9223372036854775807 ELSE processed + ?3 END,
             total = COALESCE(?4, total), updated_at = ?5
         WHERE run = ?1",
    )?
    .execute(params![
        run,
        to_json(&cp.cursor),
        // Counts saturate at `MAX_COUNT` (`i64::MAX`): an overflowing sum would turn the
        // column into a float that no read accepts.
        cp.processed.min(MAX_COUNT) as i64,
        cp.total.map(|t| t.min(MAX_COUNT) as i64),
        now.0
    ])?;
    // Attempts count tries at the current cursor: progress starts a new count.
    tx.prepare_cached("UPDATE taskq_tasks SET attempts = ?2 WHERE id = ?1")?
        .execute(params![
            lease.id.0,
            crate::policy::ATTEMPTS_AFTER_CHECKPOINT
        ])?;
    Ok(())
}

/// `Ok(())` while `lease` holds its task and, for a step, its run is running; `LeaseLost`
/// otherwise.
pub(super) fn confirm(tx: &rusqlite::Transaction<'_>, lease: Lease) -> R<()> {
    match held(tx, lease)? {
        Some(Held { run, .. }) if !run_ended(tx, run)? => Ok(()),
        _ => Err(StoreError::LeaseLost(lease.id).into()),
    }
}

/// Whether `run` (a task's run, if it is a step) exists and is no longer running.
fn run_ended(tx: &rusqlite::Transaction<'_>, run: Option<i64>) -> R<bool> {
    let Some(run) = run else { return Ok(false) };
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM taskq_iterations WHERE run = ?1")?
        .query_row([run], |r| r.get(0))
        .optional()?;
    match state {
        Some(s) => Ok(run_state(&s)? != RunState::Running),
        None => Ok(false),
    }
}

/// A running task a lease holds.
struct Held {
    /// The run it is a step of.
    run: Option<i64>,
    /// Its attempts so far.
    attempts: i64,
    /// Its queue.
    queue: String,
    /// Whether a person cancelled it while it ran.
    cancel_requested: bool,
}

/// The task when `(id, token)` holds a running task.
fn held(tx: &rusqlite::Transaction<'_>, lease: Lease) -> R<Option<Held>> {
    Ok(tx
        .prepare_cached(
            "SELECT run_id, attempts, queue, cancel_requested FROM taskq_tasks
             WHERE id = ?1 AND token = ?2 AND state = 'running'",
        )?
        .query_row(params![lease.id.0, lease.token], |r| {
            Ok(Held {
                run: r.get(0)?,
                attempts: r.get(1)?,
                queue: r.get(2)?,
                cancel_requested: r.get(3)?,
            })
        })
        .optional()?)
}

/// Records one finished attempt as its [`Transition`](crate::policy::Transition) says;
/// `None` when the lease is no longer held (nothing changed), else whether it woke work.
fn finish_one(
    tx: &rusqlite::Transaction<'_>,
    f: &Finish,
    worker: &str,
    now: i64,
    tally: &mut Tally,
) -> R<Option<bool>> {
    let id = f.lease.id;
    let Some(Held {
        run,
        attempts: attempt,
        queue,
        cancel_requested,
    }) = held(tx, f.lease)?
    else {
        return Ok(None);
    };
    // In this write transaction (`BEGIN IMMEDIATE`), so no cancel comes in between.
    let tr = f
        .outcome
        .transition_held(run_ended(tx, run)?, cancel_requested, Timestamp(now));
    if let Some(state) = tr.run_ends {
        end_run(tx, run, state, tr.error.as_deref(), Timestamp(now))?;
    }
    tx.prepare_cached(
        "INSERT INTO taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![id.0, attempt, worker, f.started_at.0, now, tr.label, tr.error])?;
    tx.prepare_cached(
        "UPDATE taskq_tasks
         SET state = ?2, worker = NULL, lease_until = NULL,
             last_error = COALESCE(?3, last_error),
             run_at = COALESCE(?4, run_at),
             attempts = CASE WHEN ?5 THEN attempts ELSE MAX(attempts - 1, 0) END,
             finished_at = CASE WHEN ?6 THEN ?7 ELSE finished_at END
         WHERE id = ?1",
    )?
    .execute(params![
        id.0,
        tr.state.as_str(),
        tr.error,
        tr.run_at.map(|t| t.0),
        tr.counts,
        tr.finished,
        now
    ])?;
    tally.moved(&queue, TaskState::Running, tr.state);
    if let Some(run_at) = tr.continue_at {
        tx.prepare_cached(
            "INSERT INTO taskq_tasks (task, queue, state, payload, priority, attempts, unique_name,
                 tombstone_ms, created_at, enqueued_at, run_at, run_id, token, trace)
             SELECT task, queue, 'pending', payload, priority, 0, NULL,
                 tombstone_ms, ?2, ?2, ?3, run_id, 0, trace
             FROM taskq_tasks WHERE id = ?1",
        )?
        .execute(params![id.0, now, run_at.0])?;
        tally.add(&queue, TaskState::Pending, 1);
        if let Some(run) = run {
            tx.prepare_cached(
                "UPDATE taskq_iterations SET steps = steps + 1, updated_at = ?2 WHERE run = ?1",
            )?
            .execute(params![run, now])?;
        }
    }
    Ok(Some(tr.wakes()))
}

/// Sets a finished run's state, if it is still running (as `MemoryStore::end_run`).
fn end_run(
    tx: &rusqlite::Transaction<'_>,
    run: Option<i64>,
    state: RunState,
    error: Option<&str>,
    now: Timestamp,
) -> R<()> {
    if let Some(run) = run {
        tx.prepare_cached(
            "UPDATE taskq_iterations SET state = ?2, error = ?3, finished_at = ?4, updated_at = ?4
             WHERE run = ?1 AND state = 'running'",
        )?
        .execute(params![run, state.as_str(), error, now.0])?;
    }
    Ok(())
}
