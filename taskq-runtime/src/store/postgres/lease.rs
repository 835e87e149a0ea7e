//! The lease-bound calls: heartbeat, finish, checkpoint and confirm. Each one touches a
//! task only where `id`, `lease_token` and `state = 'running'` all match, and changes
//! nothing for a lease that was lost. Finish and checkpoint lock the steps' runs first
//! (the lock order of the [module docs](super)), so what they do to a step follows the
//! run's state as it stands until they commit.

use std::collections::HashSet;

use super::counts::counted;
use super::rows::to_json_text;
use super::{Param, PostgresStore};
use crate::store::{
    check_checkpoint, Checkpoint, Finish, Lease, Outcome, Renewal, StoreError, TaskId, MAX_COUNT,
};
use crate::time::Timestamp;

/// The columns of a batch of finished attempts, one array each, for the `unnest` of the
/// finish statement: each attempt's [`Transition`](crate::policy::Transition) as data.
#[derive(Default)]
struct FinishColumns {
    ids: Vec<i64>,
    tokens: Vec<i64>,
    states: Vec<String>,
    labels: Vec<String>,
    errors: Vec<Option<String>>,
    run_ats: Vec<Option<i64>>,
    counts: Vec<bool>,
    finished: Vec<bool>,
    run_ends: Vec<Option<String>>,
    continue_ats: Vec<Option<i64>>,
    started: Vec<i64>,
    /// The error each attempt records if its task was cancelled while it ran
    /// ([`Outcome::transition_cancelled`]; the rest of that transition is constant).
    cancel_errors: Vec<Option<String>>,
}

impl FinishColumns {
    fn push(&mut self, f: &Finish, now: Timestamp) {
        let tr = f.outcome.transition(now);
        self.ids.push(f.lease.id.0);
        self.tokens.push(f.lease.token);
        self.states.push(tr.state.as_str().to_string());
        self.labels.push(tr.label.to_string());
        self.errors.push(tr.error);
        self.run_ats.push(tr.run_at.map(|t| t.0));
        self.counts.push(tr.counts);
        self.finished.push(tr.finished);
        self.run_ends
            .push(tr.run_ends.map(|s| s.as_str().to_string()));
        self.continue_ats.push(tr.continue_at.map(|t| t.0));
        self.started.push(f.started_at.0);
        self.cancel_errors
            .push(f.outcome.transition_cancelled(now).error);
    }

    /// `$1` is the time of the call, `$2` the worker, `$3..$13` the columns, `$14..$16`
    /// the state, label and error of [`Outcome::Stopped`], `$17..$18` the state and label
    /// of a cancelled attempt ([`Outcome::transition_cancelled`]), `$19` its errors.
    fn params<'a>(
        &'a self,
        now: &'a i64,
        worker: &'a &'a str,
        stopped: &'a (String, String, Option<String>),
        cancelled: &'a (String, String),
    ) -> [Param<'a>; 19] {
        [
            now,
            worker,
            &self.ids,
            &self.tokens,
            &self.states,
            &self.labels,
            &self.errors,
            &self.run_ats,
            &self.counts,
            &self.finished,
            &self.run_ends,
            &self.continue_ats,
            &self.started,
            &stopped.0,
            &stopped.1,
            &stopped.2,
            &cancelled.0,
            &cancelled.1,
            &self.cancel_errors,
        ]
    }
}

/// Extends the leases still held to `until`; returns the ids whose lease was lost and
/// those of the renewed tasks that have a cancel requested.
pub(super) async fn renew(
    s: &PostgresStore,
    leases: &[Lease],
    until: Timestamp,
) -> Result<Renewal, StoreError> {
    if leases.is_empty() {
        return Ok(Renewal::default());
    }
    let ids: Vec<i64> = leases.iter().map(|l| l.id.0).collect();
    let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
    let sql = s.sql(
        // The state is tested inside a CASE so that it does not match the lease index's
        // condition: each row is found by primary key (see `finish`).
        "UPDATE {S}.taskq_tasks t SET lease_until = $1::int8 \
         FROM unnest($2::int8[], $3::int8[]) AS l(id, token) \
         WHERE t.id = l.id AND t.lease_token = l.token \
           AND CASE WHEN t.state = 'running' THEN true END \
         RETURNING t.id, t.lease_token, t.cancel_requested",
    );
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query(&st, &[&until.0, &ids, &tokens]).await;
    // Told apart by lease, not by task: a stale lease of a task listed beside its
    // current one is lost though the task's row was extended.
    let rows = c.check(r)?;
    let kept: HashSet<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let cancel_requested = rows
        .iter()
        .filter(|r| r.get::<_, bool>(2))
        .map(|r| TaskId(r.get(0)))
        .collect();
    Ok(Renewal {
        lost: leases
            .iter()
            .filter(|l| !kept.contains(&(l.id.0, l.token)))
            .map(|l| l.id)
            .collect(),
        cancel_requested,
    })
}

/// Records finished attempts: one result per input, `LeaseLost` for a lease no longer
/// held.
pub(super) async fn finish(
    s: &PostgresStore,
    finished: Vec<Finish>,
    worker: &str,
    now: Timestamp,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    if finished.is_empty() {
        return Ok(Vec::new());
    }
    // A lease listed twice applies once (its first entry). A task listed under two
    // leases (a stale one and the current one) keeps both: only the current token
    // matches its row, wherever that entry stands.
    let mut seen = HashSet::new();
    let mut first = Vec::with_capacity(finished.len());
    let mut cols = FinishColumns::default();
    for f in &finished {
        let fresh = seen.insert((f.lease.id.0, f.lease.token));
        first.push(fresh);
        if fresh {
            cols.push(f, now);
        }
    }
    // A held step whose run is no longer running is recorded as `Outcome::Stopped`
    // whatever its outcome (`Outcome::transition_for_step`): its state, label and error are
    // `$14..$16`; it counts, ends the step, and has no run_at, run end or continuation (the
    // policy's tests pin that). The first statement locked the runs, so the state read
    // here holds until the commit.
    let sql = s.sql(&format!(
        r#"
WITH f0 AS (
SELECT * FROM unnest($3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::int8[],
                     $9::bool[], $10::bool[], $11::text[], $12::int8[], $13::int8[],
                     $19::text[])
    WITH ORDINALITY
    AS f0(id, token, state, label, error, run_at, counts, finished, run_ends, continue_at,
          started_at, cancel_error, ord)
),
f AS (
SELECT f0.id, f0.token, f0.ord, f0.started_at, f0.cancel_error,
       CASE WHEN e.ended THEN $14::text ELSE f0.state END AS state,
       CASE WHEN e.ended THEN $15::text ELSE f0.label END AS label,
       CASE WHEN e.ended THEN $16::text ELSE f0.error END AS error,
       CASE WHEN e.ended THEN NULL ELSE f0.run_at END AS run_at,
       f0.counts OR e.ended AS counts,
       f0.finished OR e.ended AS finished,
       CASE WHEN e.ended THEN NULL ELSE f0.run_ends END AS run_ends,
       CASE WHEN e.ended THEN NULL ELSE f0.continue_at END AS continue_at
FROM f0 CROSS JOIN LATERAL (
    SELECT EXISTS (SELECT 1 FROM {{S}}.taskq_tasks t
                   JOIN {{S}}.taskq_iterations i ON i.run_id = t.run_id
                   WHERE t.id = f0.id AND i.state <> 'running') AS ended
    -- OFFSET 0 keeps this subquery whole: pulled up, its EXISTS was copied into each
    -- of the ten uses of `e.ended` above and run ten times per row (auto_explain).
    OFFSET 0
) e
),
upd AS (
-- A task cancelled while it ran (`t.cancel_requested`, read from the row as this update
-- finds it, so a cancel committed meanwhile is seen) is recorded as cancelled whatever
-- its outcome (`Outcome::transition_cancelled`: `$17`, `$18`, the errors of `$19`).
UPDATE {{S}}.taskq_tasks t SET
    state = CASE WHEN t.cancel_requested THEN $17::text ELSE f.state END,
    worker = NULL,
    lease_until = NULL,
    last_error = COALESCE(CASE WHEN t.cancel_requested THEN f.cancel_error ELSE f.error END,
                          t.last_error),
    run_at = CASE WHEN t.cancel_requested THEN t.run_at ELSE COALESCE(f.run_at, t.run_at) END,
    attempts = CASE WHEN f.counts OR t.cancel_requested THEN t.attempts
                    ELSE GREATEST(t.attempts - 1, 0) END,
    finished_at = CASE WHEN f.finished OR t.cancel_requested THEN $1::int8
                       ELSE t.finished_at END
FROM f
-- The state is tested inside a CASE (NULL, so no row, unless running) so that it does
-- not match the condition of the partial lease index: with `t.state = 'running'` the
-- planner, whenever the statistics said few rows run, joined the batch to a scan of
-- that index, which reads every running row and, until vacuum, the dead entries of
-- every row that ran (auto_explain: 15-25 ms finishes; 30,100 rows read for 100).
-- Each row is now found by primary key.
WHERE t.id = f.id AND t.lease_token = f.token AND CASE WHEN t.state = 'running' THEN true END
RETURNING t.id, f.token, t.queue, t.run_id,
          CASE WHEN t.cancel_requested THEN $18::text ELSE f.label END AS label,
          CASE WHEN t.cancel_requested THEN f.cancel_error ELSE f.error END AS error,
          f.started_at,
          CASE WHEN t.cancel_requested THEN NULL ELSE f.run_ends END AS run_ends,
          CASE WHEN t.cancel_requested THEN NULL ELSE f.continue_at END AS continue_at,
          t.state, f.ord,
          CASE WHEN f.counts OR t.cancel_requested THEN t.attempts ELSE t.attempts + 1 END
              AS attempt
),
att AS (
INSERT INTO {{S}}.taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
SELECT u.id, u.attempt, $2::text, u.started_at, $1::int8, u.label, u.error FROM upd u
),
runs AS (
UPDATE {{S}}.taskq_iterations i SET
    state = CASE WHEN i.state = 'running' AND u.run_ends IS NOT NULL
                 THEN u.run_ends ELSE i.state END,
    error = CASE WHEN i.state = 'running' AND u.run_ends IS NOT NULL
                 THEN u.error ELSE i.error END,
    finished_at = CASE WHEN i.state = 'running' AND u.run_ends IS NOT NULL
                       THEN $1::int8 ELSE i.finished_at END,
    updated_at = CASE WHEN (i.state = 'running' AND u.run_ends IS NOT NULL)
                           OR u.continue_at IS NOT NULL THEN $1::int8 ELSE i.updated_at END,
    steps = i.steps + CASE WHEN u.continue_at IS NOT NULL THEN 1 ELSE 0 END
FROM upd u
WHERE i.run_id = u.run_id AND (u.run_ends IS NOT NULL OR u.continue_at IS NOT NULL)
),
cont AS (
INSERT INTO {{S}}.taskq_tasks (task, queue, state, payload, priority, attempts, unique_name,
                             tombstone_ms, created_at, enqueued_at, run_at, run_id, trace)
SELECT t.task, t.queue, 'pending', t.payload, t.priority, 0, NULL, t.tombstone_ms,
       $1::int8, $1::int8, u.continue_at, t.run_id, t.trace
FROM upd u JOIN {{S}}.taskq_tasks t ON t.id = u.id
WHERE u.continue_at IS NOT NULL
ORDER BY u.ord -- continuation ids follow the batch's order, as on every store
),
{counted}
SELECT u.id, u.token FROM upd u
LEFT JOIN LATERAL (
SELECT pg_notify('taskq_new', u.queue) AS n
WHERE u.state = 'pending' OR u.continue_at IS NOT NULL
) n ON true
"#,
        counted = counted("counted", "upd", "queue", "state", '+'),
    ));
    let stopped = Outcome::Stopped.transition(now);
    let stopped = (
        stopped.state.as_str().to_string(),
        stopped.label.to_string(),
        stopped.error,
    );
    let cancelled = Outcome::Done.transition_cancelled(now);
    let cancelled = (
        cancelled.state.as_str().to_string(),
        cancelled.label.to_string(),
    );
    let mut c = s.pool.get().await?;
    let lock = c.prep(&s.lock_runs_of_tasks_sql()).await?;
    let st = c.prep(&sql).await?;
    let r = PostgresStore::after_locks(
        &mut c,
        (&lock, &[&cols.ids]),
        (&st, &cols.params(&now.0, &worker, &stopped, &cancelled)),
    )
    .await?;
    let applied: HashSet<(i64, i64)> = c.check(r)?.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(finished
        .iter()
        .zip(first)
        .map(|(f, fresh)| {
            if fresh && applied.contains(&(f.lease.id.0, f.lease.token)) {
                Ok(())
            } else {
                Err(StoreError::LeaseLost(f.lease.id))
            }
        })
        .collect())
}

/// Records an iterative step's progress, atomically with the lease check.
pub(super) async fn checkpoint(
    s: &PostgresStore,
    lease: Lease,
    cp: Checkpoint,
    now: Timestamp,
) -> Result<(), StoreError> {
    check_checkpoint(lease, &cp)?;
    // Attempts count tries at the current cursor: progress starts a new count.
    let sql = s.sql(
        "WITH t AS ( \
             SELECT run_id FROM {S}.taskq_tasks \
             WHERE id = $1::int8 AND lease_token = $2::int8 AND state = 'running' \
             FOR UPDATE), \
         it AS ( \
             UPDATE {S}.taskq_iterations i SET cursor = $3::text::json, \
                 processed = LEAST(i.processed::numeric + $4::int8, \
                     9223372036854775807)::int8, batches = i.batches + 1, \
                 total = COALESCE($5::int8, i.total), updated_at = $6::int8 \
             FROM t WHERE i.run_id = t.run_id AND i.state = 'running' \
             RETURNING i.run_id), \
         a AS ( \
             UPDATE {S}.taskq_tasks SET attempts = 1 \
             WHERE id = $1::int8 AND EXISTS (SELECT 1 FROM it) RETURNING 1) \
         SELECT it.run_id FROM it",
    );
    let cursor = to_json_text(&cp.cursor)?;
    // Counts saturate at `MAX_COUNT` (`i64::MAX`) on every store.
    let processed = cp.processed.min(MAX_COUNT) as i64;
    let total = cp.total.map(|t| t.min(MAX_COUNT) as i64);
    let mut c = s.pool.get().await?;
    let lock = c.prep(&s.lock_runs_of_tasks_sql()).await?;
    let st = c.prep(&sql).await?;
    let ids = vec![lease.id.0];
    let r = PostgresStore::after_locks(
        &mut c,
        (&lock, &[&ids]),
        (
            &st,
            &[
                &lease.id.0,
                &lease.token,
                &cursor,
                &processed,
                &total,
                &now.0,
            ],
        ),
    )
    .await?;
    if !c.check(r)?.is_empty() {
        return Ok(());
    }
    // Nothing written: say why.
    let why = s.sql(
        "SELECT (t.lease_token = $2::int8 AND t.state = 'running') AS held, t.run_id, \
                i.state AS run_state \
         FROM {S}.taskq_tasks t LEFT JOIN {S}.taskq_iterations i ON i.run_id = t.run_id \
         WHERE t.id = $1::int8",
    );
    let st = c.prep(&why).await?;
    let client = c.client()?;
    let r = client.query_opt(&st, &[&lease.id.0, &lease.token]).await;
    let Some(row) = c.check(r)? else {
        return Err(StoreError::LeaseLost(lease.id));
    };
    let held: bool = row.get(0);
    let run: Option<i64> = row.get(1);
    let run_state: Option<String> = row.get(2);
    if !held {
        return Err(StoreError::LeaseLost(lease.id));
    }
    let Some(run) = run else {
        return Err(StoreError::Conflict(format!(
            "task {} is not a step of an iterative run",
            lease.id
        )));
    };
    if run_state.is_none() {
        return Err(StoreError::NotFound(format!("iteration run {run}")));
    }
    Err(StoreError::LeaseLost(lease.id))
}

/// `Ok(())` while `lease` holds its task and, for a step, its run is running; `LeaseLost`
/// otherwise. One read.
pub(super) async fn confirm(s: &PostgresStore, lease: Lease) -> Result<(), StoreError> {
    let sql = s.sql(
        "SELECT 1 FROM {S}.taskq_tasks t \
         LEFT JOIN {S}.taskq_iterations i ON i.run_id = t.run_id \
         WHERE t.id = $1::int8 AND t.lease_token = $2::int8 AND t.state = 'running' \
           AND (i.run_id IS NULL OR i.state = 'running')",
    );
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query_opt(&st, &[&lease.id.0, &lease.token]).await;
    match c.check(r)? {
        Some(_) => Ok(()),
        None => Err(StoreError::LeaseLost(lease.id)),
    }
}
