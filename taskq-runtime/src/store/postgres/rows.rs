//! Rows out: the columns the management calls read and the decoding of claimed, task
//! and iteration rows. JSON text is decoded per row, so one row that does not decode
//! never fails a call about others (see the [store module docs](crate::store#values)).

use tokio_postgres::Row;

use super::pg_err;
use crate::store::{
    decode_failure, decode_stored, stored_or_raw, ClaimedTask, IterationCursor, IterationInfo,
    Lease, StoreError, TaskId, TaskInfo,
};
use crate::time::Timestamp;

/// One claimed row, decoded. The payload and cursor are decoded here, per row: one that
/// does not decode sets [`ClaimedTask::decode_error`] (the worker sends that task dead)
/// instead of failing the claim, which has already committed the whole batch.
pub(super) fn claimed_from_row(r: &Row) -> Result<ClaimedTask, StoreError> {
    let id: i64 = r.try_get("id").map_err(|e| pg_err(&e))?;
    let payload: String = r.try_get("payload").map_err(|e| pg_err(&e))?;
    let run: Option<i64> = r.try_get("run_id").map_err(|e| pg_err(&e))?;
    let cursor: Option<String> = r.try_get("cursor").map_err(|e| pg_err(&e))?;
    let mut decode_error = None;
    let payload = match decode_stored(&payload) {
        Ok(v) => v,
        Err(e) => {
            decode_error = Some(decode_failure("payload", id, &e));
            serde_json::Value::String(payload)
        }
    };
    let iteration = match run {
        Some(run) => {
            let processed: Option<i64> = r.try_get("processed").map_err(|e| pg_err(&e))?;
            let batches: Option<i64> = r.try_get("batches").map_err(|e| pg_err(&e))?;
            let total: Option<i64> = r.try_get("total").map_err(|e| pg_err(&e))?;
            processed.map(|processed| IterationCursor {
                run: TaskId(run),
                cursor: cursor.and_then(|c| match decode_stored(&c) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        decode_error.get_or_insert_with(|| decode_failure("cursor", id, &e));
                        None
                    }
                }),
                processed: processed.max(0) as u64,
                batches: batches.unwrap_or(0).max(0) as u64,
                total: total.map(|t| t.max(0) as u64),
            })
        }
        None => None,
    };
    Ok(ClaimedTask {
        lease: Lease {
            id: TaskId(id),
            token: r.try_get("lease_token").map_err(|e| pg_err(&e))?,
        },
        task: r.try_get("task").map_err(|e| pg_err(&e))?,
        queue: r.try_get("queue").map_err(|e| pg_err(&e))?,
        payload,
        attempt: r
            .try_get::<_, i32>("attempts")
            .map_err(|e| pg_err(&e))?
            .max(0) as u32,
        enqueued_at: Timestamp(r.try_get("enqueued_at").map_err(|e| pg_err(&e))?),
        iteration,
        decode_error,
        run_at: Timestamp(r.try_get("run_at").map_err(|e| pg_err(&e))?),
        trace: r.try_get("trace").map_err(|e| pg_err(&e))?,
    })
}

pub(super) fn to_json_text(v: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Backend(format!("JSON does not serialize: {e}")))
}

pub(super) const TASK_COLUMNS: &str = "id, task, queue, state, payload::text AS payload, priority, attempts, \
     unique_name, created_at, enqueued_at, run_at, finished_at, last_error, run_id, worker, lease_until, \
     cancel_requested";

/// [`TASK_COLUMNS`] with `NULL` for the payload: a listing reads payloads only when asked.
pub(super) const TASK_COLUMNS_NO_PAYLOAD: &str =
    "id, task, queue, state, NULL::text AS payload, priority, \
     attempts, unique_name, created_at, enqueued_at, run_at, finished_at, last_error, run_id, \
     worker, lease_until, cancel_requested";

pub(super) fn task_from_row(r: &Row) -> Result<TaskInfo, StoreError> {
    let e = |e: tokio_postgres::Error| pg_err(&e);
    let state: String = r.try_get("state").map_err(e)?;
    let payload: Option<String> = r.try_get("payload").map_err(e)?;
    Ok(TaskInfo {
        id: TaskId(r.try_get("id").map_err(e)?),
        task: r.try_get("task").map_err(e)?,
        queue: r.try_get("queue").map_err(e)?,
        state: state.parse().map_err(StoreError::Backend)?,
        payload: payload
            .as_deref()
            .map(stored_or_raw)
            .unwrap_or(serde_json::Value::Null),
        priority: r.try_get("priority").map_err(e)?,
        attempts: r.try_get::<_, i32>("attempts").map_err(e)?.max(0) as u32,
        unique_name: r.try_get("unique_name").map_err(e)?,
        created_at: Timestamp(r.try_get("created_at").map_err(e)?),
        enqueued_at: Timestamp(r.try_get("enqueued_at").map_err(e)?),
        run_at: Timestamp(r.try_get("run_at").map_err(e)?),
        finished_at: r
            .try_get::<_, Option<i64>>("finished_at")
            .map_err(e)?
            .map(Timestamp),
        last_error: r.try_get("last_error").map_err(e)?,
        run: r
            .try_get::<_, Option<i64>>("run_id")
            .map_err(e)?
            .map(TaskId),
        worker: r.try_get("worker").map_err(e)?,
        lease_until: r
            .try_get::<_, Option<i64>>("lease_until")
            .map_err(e)?
            .map(Timestamp),
        cancel_requested: r.try_get("cancel_requested").map_err(e)?,
    })
}

pub(super) const ITERATION_COLUMNS: &str =
    "run_id, task, queue, filter::text AS filter, cursor::text AS cursor, \
     processed, batches, steps, total, state, started_at, updated_at, finished_at, error";

pub(super) fn iteration_from_row(r: &Row) -> Result<IterationInfo, StoreError> {
    let e = |e: tokio_postgres::Error| pg_err(&e);
    let filter: String = r.try_get("filter").map_err(e)?;
    let cursor: Option<String> = r.try_get("cursor").map_err(e)?;
    let state: String = r.try_get("state").map_err(e)?;
    Ok(IterationInfo {
        run: TaskId(r.try_get("run_id").map_err(e)?),
        task: r.try_get("task").map_err(e)?,
        queue: r.try_get("queue").map_err(e)?,
        filter: stored_or_raw(&filter),
        cursor: cursor.as_deref().map(stored_or_raw),
        processed: r.try_get::<_, i64>("processed").map_err(e)?.max(0) as u64,
        batches: r.try_get::<_, i64>("batches").map_err(e)?.max(0) as u64,
        steps: r.try_get::<_, i64>("steps").map_err(e)?.max(0) as u64,
        total: r
            .try_get::<_, Option<i64>>("total")
            .map_err(e)?
            .map(|t| t.max(0) as u64),
        state: state.parse().map_err(StoreError::Backend)?,
        started_at: Timestamp(r.try_get("started_at").map_err(e)?),
        updated_at: Timestamp(r.try_get("updated_at").map_err(e)?),
        finished_at: r
            .try_get::<_, Option<i64>>("finished_at")
            .map_err(e)?
            .map(Timestamp),
        error: r.try_get("error").map_err(e)?,
    })
}
