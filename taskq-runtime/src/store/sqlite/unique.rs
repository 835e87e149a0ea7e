//! Unique keys ([`crate::unique`]): the holder of a key, and replacing the payload and due
//! time of the pending task that holds one. The check itself is the unique-name check of
//! [`enqueue`](super::enqueue), inside the insert's transaction.

use rusqlite::{params, OptionalExtension};

use super::rows::{task_state, to_json};
use super::R;
use crate::store::{TaskId, TaskState};
use crate::time::Timestamp;

/// The newest task named `name` that holds the name at `now` by itself, with its state.
pub(super) fn holder(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    now: Timestamp,
) -> R<Option<(TaskId, TaskState)>> {
    let row: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT id, state FROM taskq_tasks WHERE unique_name = ?1
               AND (state IN ('pending', 'running')
                    OR (finished_at IS NOT NULL AND finished_at + tombstone_ms > ?2))
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![name, now.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(id, state)| Ok((TaskId(id), task_state(&state)?)))
        .transpose()
}

/// Sets the payload and `run_at` of the pending task named `name` (not a step of a run).
pub(super) fn replace_pending(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    payload: &serde_json::Value,
    run_at: Timestamp,
) -> R<Option<TaskId>> {
    // One statement in the write transaction: a claim (also a write) runs before or after
    // it, never between its read and its write.
    let id: Option<i64> = tx
        .prepare_cached(
            "UPDATE taskq_tasks SET payload = ?2, run_at = ?3
             WHERE id = (SELECT id FROM taskq_tasks
                         WHERE unique_name = ?1 AND state = 'pending' AND run_id IS NULL
                         ORDER BY id LIMIT 1)
             RETURNING id",
        )?
        .query_row(params![name, to_json(payload), run_at.0], |r| r.get(0))
        .optional()?;
    Ok(id.map(TaskId))
}
