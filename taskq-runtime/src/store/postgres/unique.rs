//! Unique keys ([`crate::unique`]): the holder of a key, and replacing the payload and due
//! time of the pending task that holds one. The check itself is the unique-name check of
//! [`enqueue`](super::enqueue) (with the unique index on live names for two concurrent
//! starts).

use super::rows::to_json_text;
use super::PostgresStore;
use crate::store::{StoreError, TaskId, TaskState};
use crate::time::Timestamp;

/// The newest task named `name` that holds the name at `now` by itself, with its state.
pub(super) async fn holder(
    s: &PostgresStore,
    name: &str,
    now: Timestamp,
) -> Result<Option<(TaskId, TaskState)>, StoreError> {
    // `numeric`: a window of `Duration::MAX` does not overflow (as in enqueue's check).
    let sql = s.sql(
        "SELECT id, state FROM {S}.taskq_tasks WHERE unique_name = $1::text \
           AND (state IN ('pending', 'running') \
                OR finished_at::numeric + tombstone_ms > $2::int8) \
         ORDER BY id DESC LIMIT 1",
    );
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query_opt(&st, &[&name, &now.0]).await;
    match c.check(r)? {
        None => Ok(None),
        Some(row) => {
            let id: i64 = row.get(0);
            let state: String = row.get(1);
            Ok(Some((
                TaskId(id),
                state.parse().map_err(StoreError::Backend)?,
            )))
        }
    }
}

/// Sets the payload and `run_at` of the pending task named `name` (not a step of a run),
/// and wakes its queue's workers, in one statement.
pub(super) async fn replace_pending(
    s: &PostgresStore,
    name: &str,
    payload: &serde_json::Value,
    run_at: Timestamp,
) -> Result<Option<TaskId>, StoreError> {
    crate::store::check_replacement(name, payload)?;
    // The UPDATE locks the row and checks `state = 'pending'` again on the version it
    // locked (READ COMMITTED's recheck): a claim that committed first leaves it alone.
    let sql = s.sql(
        "WITH t AS (UPDATE {S}.taskq_tasks SET payload = $2::text::json, run_at = $3::int8 \
                    WHERE id = (SELECT id FROM {S}.taskq_tasks \
                                WHERE unique_name = $1::text AND state = 'pending' \
                                  AND run_id IS NULL ORDER BY id LIMIT 1) \
                      AND state = 'pending' \
                    RETURNING id, queue) \
         SELECT t.id, pg_notify('taskq_new', t.queue) FROM t",
    );
    let text = to_json_text(payload)?;
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query_opt(&st, &[&name, &text, &run_at.0]).await;
    Ok(c.check(r)?.map(|row| TaskId(row.get(0))))
}
