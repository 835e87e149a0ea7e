//! Enqueue: one statement stores a batch, all or nothing, after the unique-name check
//! (live tasks, finished ones inside their window, runs, tombstones), for
//! [`Store::enqueue`](crate::store::Store::enqueue) and [`PostgresStore::enqueue_in`].

use std::collections::HashSet;

use tokio_postgres::Row;

use super::rows::to_json_text;
use super::{is_unique_violation, pg_err, violated_name, Param, PostgresStore};
use crate::store::{check_new_tasks, NewTask, StoreError, TaskId};
use crate::time::Timestamp;

/// The arrays of an enqueue statement.
struct EnqueueArgs {
    task: Vec<String>,
    queue: Vec<String>,
    payload: Vec<String>,
    priority: Vec<i32>,
    unique_name: Vec<Option<String>>,
    tombstone_ms: Vec<i64>,
    run_at: Vec<i64>,
    filter: Vec<Option<String>>,
    trace: Vec<Option<String>>,
    queues: Vec<String>,
}

impl EnqueueArgs {
    /// The arrays of `tasks`, after the shared check of every store's enqueue
    /// ([`check_new_tasks`]); used by [`Store::enqueue`] and [`PostgresStore::enqueue_in`].
    fn new(tasks: Vec<NewTask>) -> Result<EnqueueArgs, StoreError> {
        check_new_tasks(&tasks)?;
        // A name repeated in the call is found by the statement's conflict check, in call
        // order with the names taken in the store (the error names the first).
        let mut a = EnqueueArgs {
            task: Vec::with_capacity(tasks.len()),
            queue: Vec::with_capacity(tasks.len()),
            payload: Vec::with_capacity(tasks.len()),
            priority: Vec::with_capacity(tasks.len()),
            unique_name: Vec::with_capacity(tasks.len()),
            tombstone_ms: Vec::with_capacity(tasks.len()),
            run_at: Vec::with_capacity(tasks.len()),
            filter: Vec::with_capacity(tasks.len()),
            trace: Vec::with_capacity(tasks.len()),
            queues: Vec::new(),
        };
        let mut queues = HashSet::new();
        for t in tasks {
            if queues.insert(t.queue.clone()) {
                a.queues.push(t.queue.clone());
            }
            a.payload.push(to_json_text(&t.payload)?);
            a.filter.push(
                t.iteration
                    .as_ref()
                    .map(|it| to_json_text(&it.filter))
                    .transpose()?,
            );
            a.task.push(t.task);
            a.queue.push(t.queue);
            a.priority.push(t.priority);
            a.unique_name.push(t.unique_name);
            a.tombstone_ms
                .push(t.tombstone.as_millis().min(i64::MAX as u128) as i64);
            a.run_at.push(t.run_at.0);
            a.trace.push(t.trace);
        }
        Ok(a)
    }

    fn params<'a>(&'a self, now: &'a i64) -> [Param<'a>; 10] {
        [
            now,
            &self.task,
            &self.queue,
            &self.payload,
            &self.priority,
            &self.unique_name,
            &self.tombstone_ms,
            &self.run_at,
            &self.filter,
            &self.trace,
        ]
    }

    fn has_names(&self) -> bool {
        self.unique_name.iter().any(Option::is_some)
    }

    fn first_name(&self) -> String {
        self.unique_name
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default()
    }
}

/// Reads the enqueue statement's rows: ids in input order, or the conflicting name.
fn enqueue_result(rows: &[Row], n: usize) -> Result<Vec<TaskId>, StoreError> {
    let mut ids = vec![TaskId(0); n];
    for r in rows {
        let conflict: Option<String> = r.try_get(2).map_err(|e| pg_err(&e))?;
        if let Some(name) = conflict {
            return Err(StoreError::AlreadyExists(name));
        }
        let id: Option<i64> = r.try_get(0).map_err(|e| pg_err(&e))?;
        let ord: Option<i64> = r.try_get(1).map_err(|e| pg_err(&e))?;
        if let (Some(id), Some(ord)) = (id, ord) {
            if let Some(slot) = ids.get_mut((ord - 1).max(0) as usize) {
                *slot = TaskId(id);
            }
        }
    }
    if rows.len() != n {
        return Err(StoreError::Backend(format!(
            "enqueue stored {} of {n} tasks",
            rows.len()
        )));
    }
    Ok(ids)
}

impl PostgresStore {
    fn enqueue_sql(&self, with_names: bool) -> String {
        let conflict = if with_names {
            // The named first step of an iterative run ends when it hands over: the name
            // stays taken while the run is live, and the tombstone window counts from the
            // end of the run.
            //
            // Sums are `numeric`: a window of `Duration::MAX` (saturated to `i64::MAX` ms)
            // holds the name instead of failing the check with an int8 overflow.
            //
            // A deleted task's hold is its tombstone: the delete commits the row's removal
            // and the tombstone together, and this check shares the insert's snapshot, so
            // an enqueue racing a delete sees the task or its tombstone, never neither.
            //
            // The error names the first task of the call (by `ord`) whose name is taken or
            // repeats an earlier one's in the call, as on every store.
            "SELECT c.unique_name FROM (
        SELECT i.ord, t.unique_name FROM input i JOIN {S}.taskq_tasks t ON t.unique_name = i.unique_name
        LEFT JOIN {S}.taskq_iterations r ON r.run_id = t.run_id
        WHERE i.unique_name IS NOT NULL
          AND (t.state IN ('pending', 'running') OR r.state = 'running'
               OR t.finished_at::numeric + t.tombstone_ms > $1::int8
               OR r.finished_at::numeric + t.tombstone_ms > $1::int8)
        UNION ALL
        SELECT i.ord, n.name FROM input i JOIN {S}.taskq_tombstones n ON n.name = i.unique_name
        LEFT JOIN {S}.taskq_iterations r ON r.run_id = n.run_id
        WHERE n.taken_until > $1::int8 OR r.state = 'running'
              OR r.finished_at::numeric + n.tombstone_ms > $1::int8
        UNION ALL
        SELECT i.ord, i.unique_name FROM input i
        WHERE EXISTS (SELECT 1 FROM input e WHERE e.unique_name = i.unique_name AND e.ord < i.ord)
    ) c
    ORDER BY c.ord
    LIMIT 1"
        } else {
            "SELECT NULL::text AS unique_name WHERE false"
        };
        self.sql(&format!(
            r#"
WITH input AS MATERIALIZED (
    SELECT nextval('{{S}}.taskq_tasks_id_seq'::regclass) AS id, u.*
    FROM unnest($2::text[], $3::text[], $4::text[], $5::int4[], $6::text[], $7::int8[],
                $8::int8[], $9::text[], $10::text[])
         WITH ORDINALITY AS u(task, queue, payload, priority, unique_name, tombstone_ms,
                              run_at, filter, trace, ord)
),
conflict AS (
    {conflict}
),
ins AS (
    INSERT INTO {{S}}.taskq_tasks (id, task, queue, state, payload, priority, unique_name,
                                 tombstone_ms, created_at, enqueued_at, run_at, run_id, trace)
    SELECT i.id, i.task, i.queue, 'pending', i.payload::json, i.priority, i.unique_name,
           i.tombstone_ms, $1::int8, $1::int8, i.run_at,
           CASE WHEN i.filter IS NOT NULL THEN i.id END, i.trace
    FROM input i WHERE NOT EXISTS (SELECT 1 FROM conflict)
    ORDER BY i.ord
),
its AS (
    INSERT INTO {{S}}.taskq_iterations (run_id, task, queue, filter, state, started_at, updated_at)
    SELECT i.id, i.task, i.queue, i.filter::json, 'running', $1::int8, $1::int8
    FROM input i WHERE i.filter IS NOT NULL AND NOT EXISTS (SELECT 1 FROM conflict)
)
SELECT i.id, i.ord, NULL::text AS conflict FROM input i WHERE NOT EXISTS (SELECT 1 FROM conflict)
UNION ALL
SELECT NULL, NULL, c.unique_name FROM conflict c
"#
        ))
    }

    /// Stores tasks inside the application's own transaction: they exist if and only if
    /// `tx` commits, and workers are woken (by `NOTIFY`) at that commit. Same rules as
    /// [`Store::enqueue`](crate::store::Store::enqueue): all or nothing; a unique name that is taken returns
    /// [`StoreError::AlreadyExists`] and stores nothing (the transaction stays usable).
    /// Two transactions starting one unique name at the same moment: the second waits
    /// for the first and then fails with a unique violation that aborts its transaction,
    /// reported as [`StoreError::AlreadyExists`]. The name check reads tombstones and
    /// finished tasks with the statement's snapshot: under `READ COMMITTED` (PostgreSQL's
    /// default) it sees every delete committed before it; under `REPEATABLE READ` it sees
    /// the names as of your transaction's first statement.
    ///
    /// `now` and the tasks' `run_at` are in the database's time: take `now` from
    /// [`PostgresStore::now`], not from this host's wall clock, which may be off.
    ///
    /// See the [module docs](super) for an example.
    pub async fn enqueue_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let n = tasks.len();
        let args = EnqueueArgs::new(tasks)?;
        let now_ms = now.0;
        let rows = match tx
            .query(&self.enqueue_sql(args.has_names()), &args.params(&now_ms))
            .await
        {
            Ok(rows) => rows,
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists(
                    violated_name(&e).unwrap_or_else(|| args.first_name()),
                ))
            }
            Err(e) => return Err(pg_err(&e)),
        };
        let ids = enqueue_result(&rows, n)?;
        tx.query(Self::NOTIFY_SQL, &[&args.queues])
            .await
            .map_err(|e| pg_err(&e))?;
        Ok(ids)
    }
}

/// Stores `tasks` and wakes their queues' workers, in one round trip.
pub(super) async fn enqueue(
    s: &PostgresStore,
    tasks: Vec<NewTask>,
    now: Timestamp,
) -> Result<Vec<TaskId>, StoreError> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let n = tasks.len();
    let args = EnqueueArgs::new(tasks)?;
    let now_ms = now.0;
    let mut c = s.pool.get().await?;
    let st = c.prep(&s.enqueue_sql(args.has_names())).await?;
    let st_notify = c.prep(PostgresStore::NOTIFY_SQL).await?;
    let params = args.params(&now_ms);
    let notify_params: [Param<'_>; 1] = [&args.queues];
    match PostgresStore::pipelined_tx(&mut c, (&st, &params), Some((&st_notify, &notify_params)))
        .await?
    {
        Ok(rows) => enqueue_result(&rows, n),
        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists(
            violated_name(&e).unwrap_or_else(|| args.first_name()),
        )),
        Err(e) => Err(pg_err(&e)),
    }
}
