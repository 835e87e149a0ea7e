//! Rows in and out: the columns the management calls read, the encoding of values written
//! (times, JSON text) and the decoding of rows read back. JSON text is decoded row by row,
//! so one row that does not decode never fails a call about others (see the
//! [store module docs](crate::store#values)).

use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlResult, ValueRef};

use super::Fail;
use crate::store::{
    decode_failure, decode_stored, stored_or_raw, IterationInfo, RunState, StoreError, TaskId,
    TaskInfo, TaskState,
};
use crate::time::Timestamp;

/// A stored JSON column (payload, filter, cursor) as the row holds it. SQLite checks
/// neither that text is UTF-8 nor that a `TEXT` column holds text, so a hand-edited row may
/// hold either: such a value reads as [`StoredText::NotText`] instead of failing the call
/// (a claim of many tasks, a listing) that met it.
pub(super) enum StoredText {
    /// Text, to be decoded as JSON.
    Text(String),
    /// Not UTF-8 text: shown lossily, with why.
    NotText {
        /// The bytes as text, invalid sequences replaced.
        shown: String,
        /// What the stored value is instead.
        why: String,
    },
}

impl FromSql for StoredText {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(match v {
            ValueRef::Text(b) => match std::str::from_utf8(b) {
                Ok(s) => StoredText::Text(s.to_string()),
                Err(e) => StoredText::NotText {
                    shown: String::from_utf8_lossy(b).into_owned(),
                    why: format!("it is not UTF-8 text: {e}"),
                },
            },
            ValueRef::Blob(b) => StoredText::NotText {
                shown: String::from_utf8_lossy(b).into_owned(),
                why: format!("it is a BLOB of {} bytes, not text", b.len()),
            },
            // A `TEXT` column turns numbers into text when they are written; read one the
            // same way should it be there anyway.
            ValueRef::Integer(i) => StoredText::Text(i.to_string()),
            ValueRef::Real(f) => StoredText::Text(f.to_string()),
            ValueRef::Null => StoredText::NotText {
                shown: String::new(),
                why: "it is NULL".into(),
            },
        })
    }
}

impl StoredText {
    /// The stored `what` of task `id` decoded, or, when it does not decode, its raw text as
    /// a JSON string and why (for [`ClaimedTask::decode_error`](crate::store::ClaimedTask)).
    pub(super) fn decode(self, what: &str, id: i64) -> (serde_json::Value, Option<String>) {
        match self {
            StoredText::Text(t) => match decode_stored(&t) {
                Ok(v) => (v, None),
                Err(e) => (
                    serde_json::Value::String(t),
                    Some(decode_failure(what, id, &e)),
                ),
            },
            StoredText::NotText { shown, why } => (
                serde_json::Value::String(shown),
                Some(decode_failure(what, id, &why)),
            ),
        }
    }

    /// The value as the management calls show it: decoded, or its raw text as a JSON
    /// string.
    pub(super) fn shown(self) -> serde_json::Value {
        match self {
            StoredText::Text(t) => stored_or_raw(&t),
            StoredText::NotText { shown, .. } => serde_json::Value::String(shown),
        }
    }
}

/// The `taskq_tasks` columns [`RawTask::read`] reads, in its order.
pub(super) const TASK_COLUMNS: &str =
    "id, task, queue, state, payload, priority, attempts, unique_name, \
     created_at, enqueued_at, run_at, finished_at, last_error, run_id, worker, lease_until, \
     cancel_requested";

/// [`TASK_COLUMNS`], or the same with `NULL` for the payload: a listing reads payloads
/// only when asked for them.
pub(super) fn task_columns(with_payload: bool) -> &'static str {
    match with_payload {
        true => TASK_COLUMNS,
        false => {
            "id, task, queue, state, NULL AS payload, priority, attempts, unique_name, \
             created_at, enqueued_at, run_at, finished_at, last_error, run_id, worker, lease_until, \
             cancel_requested"
        }
    }
}

/// The `taskq_iterations` columns [`RawIteration::read`] reads, in its order.
pub(super) const ITERATION_COLUMNS: &str =
    "run, task, queue, filter, cursor, processed, batches, steps, \
     total, state, started_at, updated_at, finished_at, error";

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub(super) fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// The exact JSON text stored for a value.
pub(super) fn to_json(v: &serde_json::Value) -> String {
    // Serialising a `Value` cannot fail: its map keys are strings.
    v.to_string()
}

/// A stored task state, or a backend error naming the corrupt table.
pub(super) fn task_state(s: &str) -> Result<TaskState, Fail> {
    s.parse::<TaskState>()
        .map_err(|e| Fail::Store(StoreError::Backend(format!("corrupt taskq_tasks row: {e}"))))
}

/// A stored run state, or a backend error naming the corrupt table.
pub(super) fn run_state(s: &str) -> Result<RunState, Fail> {
    s.parse::<RunState>().map_err(|e| {
        Fail::Store(StoreError::Backend(format!(
            "corrupt taskq_iterations row: {e}"
        )))
    })
}

/// A stored count (never negative when taskq wrote it) as a `u64`.
pub(super) fn u64_of(v: i64) -> u64 {
    v.max(0) as u64
}

/// A stored count as a `u32`, clamped.
pub(super) fn u32_of(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

/// A `taskq_tasks` row as read by [`TASK_COLUMNS`], before its text is decoded.
pub(super) struct RawTask {
    id: i64,
    task: String,
    queue: String,
    state: String,
    /// `None` when the payload was not read (a listing that did not ask for it).
    payload: Option<StoredText>,
    priority: i64,
    attempts: i64,
    unique_name: Option<String>,
    created_at: i64,
    enqueued_at: i64,
    run_at: i64,
    finished_at: Option<i64>,
    last_error: Option<String>,
    run_id: Option<i64>,
    worker: Option<String>,
    lease_until: Option<i64>,
    cancel_requested: bool,
}

impl RawTask {
    /// Reads a row selected with [`TASK_COLUMNS`].
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawTask> {
        Ok(RawTask {
            id: r.get(0)?,
            task: r.get(1)?,
            queue: r.get(2)?,
            state: r.get(3)?,
            payload: r.get(4)?,
            priority: r.get(5)?,
            attempts: r.get(6)?,
            unique_name: r.get(7)?,
            created_at: r.get(8)?,
            enqueued_at: r.get(9)?,
            run_at: r.get(10)?,
            finished_at: r.get(11)?,
            last_error: r.get(12)?,
            run_id: r.get(13)?,
            worker: r.get(14)?,
            lease_until: r.get(15)?,
            cancel_requested: r.get(16)?,
        })
    }

    /// The task's id.
    pub(super) fn id(&self) -> i64 {
        self.id
    }

    /// The task as the management calls show it; an undecodable payload shows as its
    /// raw text, one not read as `null`.
    pub(super) fn decode(self) -> Result<TaskInfo, Fail> {
        Ok(TaskInfo {
            id: TaskId(self.id),
            payload: self
                .payload
                .map(StoredText::shown)
                .unwrap_or(serde_json::Value::Null),
            state: task_state(&self.state)?,
            task: self.task,
            queue: self.queue,
            priority: self.priority.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
            attempts: u32_of(self.attempts),
            unique_name: self.unique_name,
            created_at: Timestamp(self.created_at),
            enqueued_at: Timestamp(self.enqueued_at),
            run_at: Timestamp(self.run_at),
            finished_at: self.finished_at.map(Timestamp),
            last_error: self.last_error,
            run: self.run_id.map(TaskId),
            worker: self.worker,
            lease_until: self.lease_until.map(Timestamp),
            cancel_requested: self.cancel_requested,
        })
    }
}

/// A `taskq_iterations` row as read by [`ITERATION_COLUMNS`].
pub(super) struct RawIteration {
    run: i64,
    task: String,
    queue: String,
    filter: StoredText,
    cursor: Option<StoredText>,
    processed: i64,
    batches: i64,
    steps: i64,
    total: Option<i64>,
    state: String,
    started_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    error: Option<String>,
}

impl RawIteration {
    /// Reads a row selected with [`ITERATION_COLUMNS`].
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawIteration> {
        Ok(RawIteration {
            run: r.get(0)?,
            task: r.get(1)?,
            queue: r.get(2)?,
            filter: r.get(3)?,
            cursor: r.get(4)?,
            processed: r.get(5)?,
            batches: r.get(6)?,
            steps: r.get(7)?,
            total: r.get(8)?,
            state: r.get(9)?,
            started_at: r.get(10)?,
            updated_at: r.get(11)?,
            finished_at: r.get(12)?,
            error: r.get(13)?,
        })
    }

    /// The run as the management calls show it; an undecodable filter or cursor shows
    /// as its raw text.
    pub(super) fn decode(self) -> Result<IterationInfo, Fail> {
        Ok(IterationInfo {
            run: TaskId(self.run),
            filter: self.filter.shown(),
            cursor: self.cursor.map(StoredText::shown),
            state: run_state(&self.state)?,
            task: self.task,
            queue: self.queue,
            processed: u64_of(self.processed),
            batches: u64_of(self.batches),
            steps: u64_of(self.steps),
            total: self.total.map(u64_of),
            started_at: Timestamp(self.started_at),
            updated_at: Timestamp(self.updated_at),
            finished_at: self.finished_at.map(Timestamp),
            error: self.error,
        })
    }
}
