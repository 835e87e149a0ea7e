//! Enqueue: the unique-name check (live tasks, finished ones inside their window, runs,
//! tombstones) and the inserts, all or nothing in one transaction.

use std::collections::HashSet;

use rusqlite::params;

use super::counts::Tally;
use super::rows::{ms, to_json};
use super::R;
use crate::store::{NewTask, StoreError, TaskId, TaskState};
use crate::time::Timestamp;

/// Stores `tasks` (already checked by [`check_new_tasks`](crate::store::check_new_tasks))
/// and returns their ids in order, or fails with `AlreadyExists` storing nothing.
pub(super) fn enqueue(
    tx: &rusqlite::Transaction<'_>,
    tasks: &[NewTask],
    now: Timestamp,
) -> R<Vec<TaskId>> {
    let mut seen = HashSet::new();
    let mut live = tx.prepare_cached(
        // The named first step of an iterative run ends when it hands over: the name
        // stays taken while the run is live, and the tombstone window counts from the end
        // of the run. A deleted task's hold is its tombstone.
        "SELECT EXISTS (SELECT 1 FROM taskq_tasks t
           LEFT JOIN taskq_iterations i ON i.run = t.run_id
           WHERE t.unique_name = ?1
           AND (t.state IN ('pending', 'running') OR i.state = 'running'
                OR (t.finished_at IS NOT NULL AND t.finished_at + t.tombstone_ms > ?2)
                OR (i.finished_at IS NOT NULL AND i.finished_at + t.tombstone_ms > ?2)))
         OR EXISTS (SELECT 1 FROM taskq_tombstones n
           LEFT JOIN taskq_iterations i ON i.run = n.run_id
           WHERE n.name = ?1
           AND (n.taken_until > ?2 OR i.state = 'running'
                OR (i.finished_at IS NOT NULL AND i.finished_at + n.tombstone_ms > ?2)))",
    )?;
    for t in tasks {
        if let Some(n) = &t.unique_name {
            if !seen.insert(n.as_str())
                || live.query_row(params![n, now.0], |r| r.get::<_, bool>(0))?
            {
                return Err(StoreError::AlreadyExists(n.clone()).into());
            }
        }
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO taskq_tasks (task, queue, state, payload, priority, attempts,
             unique_name, tombstone_ms, created_at, enqueued_at, run_at, token, trace)
         VALUES (?1, ?2, 'pending', ?3, ?4, 0, ?5, ?6, ?7, ?7, ?8, 0, ?9)",
    )?;
    let mut ids = Vec::with_capacity(tasks.len());
    let mut tally = Tally::default();
    for t in tasks {
        insert.execute(params![
            t.task,
            t.queue,
            to_json(&t.payload),
            t.priority,
            t.unique_name,
            ms(t.tombstone),
            now.0,
            t.run_at.0,
            t.trace
        ])?;
        let id = tx.last_insert_rowid();
        if let Some(it) = &t.iteration {
            tx.prepare_cached(
                "INSERT INTO taskq_iterations (run, task, queue, filter, cursor,
                     processed, batches, steps, total, state, started_at,
                     updated_at, finished_at, error)
                 VALUES (?1, ?2, ?3, ?4, NULL, 0, 0, 1, NULL, 'running', ?5, ?5,
                     NULL, NULL)",
            )?
            .execute(params![id, t.task, t.queue, to_json(&it.filter), now.0])?;
            tx.prepare_cached("UPDATE taskq_tasks SET run_id = ?1 WHERE id = ?1")?
                .execute([id])?;
        }
        tally.add(&t.queue, TaskState::Pending, 1);
        ids.push(TaskId(id));
    }
    tally.write(tx)?;
    Ok(ids)
}
