//! Claiming: the one claim order (priority, `run_at`, id) over every queue a claim covers,
//! the plain statement for queues without limits, the capped path for queues with a rate
//! or `max_concurrent` ([`admission`]), lapsed leases recorded as attempts; and
//! [`next_due`], which says when the next claim can find work.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Row;

use super::pool::PooledConn;
use super::rows::claimed_from_row;
use super::{Param, PostgresStore};
use crate::store::admission::{self, Bucket};
use crate::store::{ClaimRequest, ClaimedTask, QueueConfig, StoreError};
use crate::time::Timestamp;

/// The error a lapsed lease records (see [`crate::policy::LEASE_LAPSED`]).
const LAPSED: &str = crate::policy::LEASE_LAPSED.1;

/// Which queues a statement is about.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum QueueFilter {
    All,
    One,
    Many,
}

impl QueueFilter {
    pub(super) fn of(queues: &[String]) -> QueueFilter {
        match queues.len() {
            0 => QueueFilter::All,
            1 => QueueFilter::One,
            _ => QueueFilter::Many,
        }
    }

    /// The condition on `t.queue` with the parameter `$n`, leaving out queues whose
    /// `taskq_queues` row `q` matches `excluded`. Written so that the planner keeps its row
    /// estimate (and so walks the claim index in order) whatever the queue statistics.
    fn sql_excluding(self, n: usize, excluded: &str) -> String {
        match self {
            QueueFilter::All => format!(
                "AND NOT COALESCE((SELECT {excluded} FROM {{S}}.taskq_queues q \
                 WHERE q.name = t.queue), false)"
            ),
            QueueFilter::One => format!(
                "AND t.queue = ${n}::text AND NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q \
                 WHERE q.name = ${n}::text AND ({excluded}))"
            ),
            QueueFilter::Many => format!(
                "AND t.queue = ANY(ARRAY(SELECT x FROM unnest(${n}::text[]) AS x \
                 WHERE NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q \
                 WHERE q.name = x AND ({excluded}))))"
            ),
        }
    }

    /// The condition on `t.queue` with the parameter `$n`.
    fn sql(self, n: usize) -> String {
        match self {
            QueueFilter::All => String::new(),
            QueueFilter::One => format!("AND t.queue = ${n}::text"),
            QueueFilter::Many => format!("AND t.queue = ANY(${n}::text[])"),
        }
    }

    /// The queues a statement walks, as the FROM item `w(name)`: the one of `$n`, the
    /// distinct ones of `$n`, or every queue that has pending tasks (one seek per queue of
    /// the pending index, a loose index scan); those whose `taskq_queues` row `q` matches
    /// `excluded` are left out.
    fn queues_sql(self, n: usize, excluded: &str) -> String {
        let keep = format!(
            "NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q WHERE q.name = w0.name AND ({excluded}))"
        );
        match self {
            QueueFilter::One => {
                format!("(SELECT w0.name FROM (SELECT ${n}::text AS name) w0 WHERE {keep}) w")
            }
            QueueFilter::Many => format!(
                "(SELECT w0.name FROM (SELECT DISTINCT x AS name FROM unnest(${n}::text[]) AS x) w0 \
                 WHERE {keep}) w"
            ),
            QueueFilter::All => format!(
                r#"(WITH RECURSIVE w0(name) AS (
        (SELECT t.queue FROM {{S}}.taskq_tasks t WHERE t.state = 'pending'
         ORDER BY t.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT t.queue FROM {{S}}.taskq_tasks t
                WHERE t.state = 'pending' AND t.queue > w0.name ORDER BY t.queue LIMIT 1)
        FROM w0 WHERE w0.name IS NOT NULL)
     SELECT w0.name FROM w0 WHERE w0.name IS NOT NULL AND {keep}) w"#
            ),
        }
    }
}

/// The priorities of the pending tasks of the queue `w.name`, highest first, as the
/// recursive CTE `levels(priority)` (ending with one NULL row): one seek of the pending
/// index `(queue, priority DESC, run_at, id)` per priority, read only as far as the
/// statement needs them.
const LEVELS: &str = r#"WITH RECURSIVE levels(priority) AS (
        SELECT (SELECT t.priority FROM {S}.taskq_tasks t
                WHERE t.state = 'pending' AND t.queue = w.name
                ORDER BY t.priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT t.priority FROM {S}.taskq_tasks t
                WHERE t.state = 'pending' AND t.queue = w.name AND t.priority < l.priority
                ORDER BY t.priority DESC LIMIT 1)
        FROM levels l WHERE l.priority IS NOT NULL)"#;

/// The best `cap` due pending tasks of the queue `w.name` (a lateral subquery), in claim
/// order, locked with `SKIP LOCKED`: one priority at a time, highest first, each read
/// with a range seek of the pending index (`queue`, `priority` equal, `run_at <= $1`),
/// so the rows due later (an hour ahead at a higher priority, say) are never read, and
/// the statement stops at `cap` rows. Without this, one index walk in claim order steps
/// over every future row of a higher priority on each claim.
fn due_of_queue(columns: &str, cap: &str) -> String {
    format!(
        r#"(
    {LEVELS}
    SELECT z.* FROM levels l CROSS JOIN LATERAL (
        SELECT {columns} FROM {{S}}.taskq_tasks t
        WHERE t.state = 'pending' AND t.queue = w.name AND t.priority = l.priority
          AND t.run_at <= $1::int8
        ORDER BY t.run_at, t.id
        LIMIT {cap}
        FOR UPDATE OF t SKIP LOCKED) z
    WHERE l.priority IS NOT NULL
    LIMIT {cap})"#
    )
}

/// Which queues a claim statement covers (see `PostgresStore::claim_sql`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ClaimShape {
    /// Queues without limits; nothing at all when a wanted queue has limits.
    Plain,
    /// Queues without limits, and the limited queues of `$5`, each up to its cap in `$6`.
    Capped,
}

impl PostgresStore {
    /// Whether the last claim of `queues` met a queue with limits.
    fn covers_limited(&self, queues: &[String]) -> bool {
        let hint = self.limited_hint.lock().unwrap_or_else(|p| p.into_inner());
        hint.contains(queues)
    }

    /// Remembers whether a claim of `queues` met a queue with limits.
    fn note_limited(&self, queues: &[String], limited: bool) {
        let mut hint = self.limited_hint.lock().unwrap_or_else(|p| p.into_inner());
        if !limited {
            hint.remove(queues);
            return;
        }
        // Workers claim with one list each; many lists mean callers that vary them, whose
        // hints are cheap to lose.
        if hint.len() >= 64 {
            hint.clear();
        }
        hint.insert(queues.to_vec());
    }

    /// The claim statement. Parameters: `$1` now, `$2` lease end, `$3` worker, `$4` limit;
    /// then for [`ClaimShape::Plain`] the queue filter (`$5`, unless every queue), and for
    /// [`ClaimShape::Capped`] `$5` queue names and `$6` their caps.
    ///
    /// Every shape picks in the one claim order (priority, `run_at`, id) over every queue
    /// it covers, due pending tasks and lapsed leases alike; its rows come back in that
    /// order.
    pub(super) fn claim_sql(&self, filter: QueueFilter, shape: ClaimShape) -> String {
        const LIMITED: &str = "q.rate IS NOT NULL OR q.max_concurrent IS NOT NULL";
        const COLUMNS: &str = "t.id, t.queue, t.priority, t.run_at, t.state AS old_state, \
             t.worker AS old_worker, t.started_at AS old_started, t.attempts AS old_attempts";
        // The best due pending tasks and lapsed leases of queues without limits (all, or
        // those of the filter), each walking its index in claim order.
        let unlimited = |guard: &str| {
            format!(
                r#"
due AS (
    SELECT x.*
    FROM {queues} CROSS JOIN LATERAL {per_queue} x
    WHERE true {guard}
    ORDER BY x.priority DESC, x.run_at, x.id
    LIMIT $4::int8
),
expired AS (
    SELECT {COLUMNS}
    FROM {{S}}.taskq_tasks t
    WHERE t.state = 'running' AND t.lease_until <= $1::int8 AND NOT t.cancel_requested
      {qf} {guard}
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT $4::int8
    FOR UPDATE OF t SKIP LOCKED
),"#,
                // Queues with limits are never claimed here: only through their caps,
                // under their row locks.
                qf = filter.sql_excluding(5, &format!("q.paused OR {LIMITED}")),
                queues = filter.queues_sql(5, &format!("q.paused OR {LIMITED}")),
                per_queue = due_of_queue(COLUMNS, "$4::int8"),
            )
        };
        let (ctes, candidates) = match shape {
            ClaimShape::Plain => (
                // A claim that covers a queue with limits must order it among the others:
                // this statement then claims nothing and the capped path runs instead.
                unlimited(&format!(
                    "AND NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q \
                     WHERE NOT q.paused AND ({LIMITED}) {})",
                    filter.sql(5).replace("t.queue", "q.name")
                )),
                "SELECT * FROM due UNION ALL SELECT * FROM expired",
            ),
            ClaimShape::Capped => {
                // `$5`/`$6`: the locked limited queues with their allowances, and (unless
                // the claim covers every queue) the other wanted queues with cap -1: up to
                // the limit, if they are neither paused nor limited by now. Each queue's
                // best due and lapsed tasks are read through its index (at most its cap of
                // each), then at most its cap of both are kept.
                let capped = format!(
                    r#"
caps AS (
    SELECT c.name, CASE WHEN c.cap < 0 THEN $4::int8 ELSE c.cap END AS cap
    FROM unnest($5::text[], $6::int8[]) AS c(name, cap)
    WHERE c.cap > 0 OR (c.cap < 0 AND NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q
                                                 WHERE q.name = c.name
                                                   AND (q.paused OR {LIMITED})))
),
capped_due AS (
    SELECT x.* FROM (SELECT c.name, c.cap FROM caps c) w CROSS JOIN LATERAL {capped_per_queue} x
),
capped_expired AS (
    SELECT x.* FROM caps c CROSS JOIN LATERAL (
        SELECT {COLUMNS} FROM {{S}}.taskq_tasks t
        WHERE t.state = 'running' AND t.queue = c.name AND t.lease_until <= $1::int8
          AND NOT t.cancel_requested
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT LEAST(c.cap, $4::int8)
        FOR UPDATE OF t SKIP LOCKED) x
),
capped AS (
    SELECT y.id, y.queue, y.priority, y.run_at, y.old_state, y.old_worker, y.old_started,
           y.old_attempts
    FROM (
        SELECT z.*, row_number() OVER (PARTITION BY z.queue
                                       ORDER BY z.priority DESC, z.run_at, z.id) AS rn
        FROM (SELECT * FROM capped_due UNION ALL SELECT * FROM capped_expired) z
    ) y JOIN caps c ON c.name = y.queue
    WHERE y.rn <= c.cap
),"#,
                    capped_per_queue = due_of_queue(COLUMNS, "LEAST(w.cap, $4::int8)"),
                );
                if filter == QueueFilter::All {
                    (
                        capped + &unlimited(""),
                        "SELECT * FROM due UNION ALL SELECT * FROM expired \
                         UNION ALL SELECT * FROM capped",
                    )
                } else {
                    (capped, "SELECT * FROM capped")
                }
            }
        };
        self.sql(&format!(
            r#"
WITH {ctes}
picked AS (
    SELECT * FROM ({candidates}) x
    ORDER BY x.priority DESC, x.run_at, x.id
    LIMIT $4::int8
),
-- Lapsed leases of tasks a person cancelled while they ran (of any queue; few, through
-- the lease index): ended cancelled here, never taken (the policy's `CANCEL_LAPSED`).
cancel_lapsed AS (
    SELECT t.id, t.attempts, t.worker, t.started_at FROM {{S}}.taskq_tasks t
    WHERE t.state = 'running' AND t.lease_until <= $1::int8 AND t.cancel_requested
    FOR UPDATE OF t SKIP LOCKED
),
cancel_attempts AS (
    INSERT INTO {{S}}.taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
    SELECT k.id, k.attempts, COALESCE(k.worker, ''), COALESCE(k.started_at, $1::int8),
           $1::int8, '{cancel_label}', '{cancel_error}'
    FROM cancel_lapsed k
),
cancel_ended AS (
    UPDATE {{S}}.taskq_tasks t
    SET state = 'cancelled', finished_at = $1::int8, worker = NULL, lease_until = NULL,
        last_error = '{cancel_error}'
    FROM cancel_lapsed k WHERE t.id = k.id
    RETURNING t.queue, t.state
),
{cancel_counted},
lapsed AS (
    INSERT INTO {{S}}.taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
    SELECT p.id, p.old_attempts, COALESCE(p.old_worker, ''), COALESCE(p.old_started, $1::int8),
           $1::int8, 'lease lapsed', '{lapsed}'
    FROM picked p WHERE p.old_state = 'running'
),
claimed AS (
    UPDATE {{S}}.taskq_tasks t
    SET state = 'running', attempts = t.attempts + 1, worker = $3::text,
        lease_until = $2::int8, lease_token = t.lease_token + 1, started_at = $1::int8,
        last_error = CASE WHEN p.old_state = 'running' THEN '{lapsed}' ELSE t.last_error END
    FROM picked p WHERE t.id = p.id
    RETURNING t.id, t.lease_token, t.task, t.queue, t.payload, t.attempts, t.enqueued_at,
              t.run_id, t.priority, t.run_at, t.trace
)
SELECT c.id, c.lease_token, c.task, c.queue, c.payload::text AS payload, c.attempts,
       c.enqueued_at, c.run_id, i.cursor::text AS cursor, i.processed, i.batches, i.total,
       c.run_at, c.trace
FROM claimed c LEFT JOIN {{S}}.taskq_iterations i ON i.run_id = c.run_id
ORDER BY c.priority DESC, c.run_at, c.id
"#,
            lapsed = LAPSED.replace('\'', "''"),
            cancel_label = crate::policy::CANCEL_LAPSED.0.replace('\'', "''"),
            cancel_error = crate::policy::CANCEL_LAPSED.1.replace('\'', "''"),
            cancel_counted = super::counts::counted(
                "cancel_counted",
                "cancel_ended",
                "queue",
                "state",
                '+'
            ),
        ))
    }

    fn limited_sql(&self, filter: QueueFilter) -> String {
        self.sql(&format!(
            "SELECT t.name FROM {{S}}.taskq_queues t \
             WHERE NOT t.paused AND (t.rate IS NOT NULL OR t.max_concurrent IS NOT NULL) {}",
            filter.sql(1).replace("t.queue", "t.name")
        ))
    }

    /// A claim that covers queues with a rate or a concurrency limit: one transaction
    /// locks their `taskq_queues` rows (so limits hold across every worker), reads how
    /// many of their tasks run, computes each one's allowance ([`admission`]), claims
    /// with one statement in the one claim order over the limited and unlimited queues
    /// alike (each limited queue up to its allowance), and stores the buckets. It locks
    /// every queue the claim covers that is limited when it runs, so it is right whatever
    /// changed since the caller looked. Two round trips (lock and count; claim and
    /// commit), three when a bucket is to be stored. Also says whether it met a limited
    /// queue.
    async fn claim_capped(
        &self,
        c: &mut PooledConn<'_>,
        req: &ClaimRequest,
    ) -> Result<(Vec<ClaimedTask>, bool), StoreError> {
        let now = req.now.0;
        let filter = QueueFilter::of(&req.queues);
        // `$1`: the wanted queues, NULL for every queue.
        let lock_sql = self.sql(
            "SELECT name, rate, burst, max_concurrent, tokens, refilled_at FROM {S}.taskq_queues \
             WHERE ($1::text[] IS NULL OR name = ANY($1::text[])) AND NOT paused \
               AND (rate IS NOT NULL OR max_concurrent IS NOT NULL) \
             ORDER BY name FOR UPDATE",
        );
        // A statement of its own, after the lock: its snapshot sees the tasks that the
        // previous holder of the lock claimed.
        // Only queues with a `max_concurrent` need the count. It walks the lease index, so
        // it costs as many running tasks as the store holds (few, while workers finish
        // what they claim).
        let running_sql = self.sql(
            "SELECT t.queue, count(*) FROM {S}.taskq_tasks t \
             WHERE t.state = 'running' AND t.lease_until > $2::int8 \
               AND t.queue IN (SELECT q.name FROM {S}.taskq_queues q \
                               WHERE ($1::text[] IS NULL OR q.name = ANY($1::text[])) \
                                 AND NOT q.paused AND q.max_concurrent IS NOT NULL) \
             GROUP BY t.queue",
        );
        let claim_sql = self.claim_sql(filter, ClaimShape::Capped);
        let bucket_sql = self.sql(
            "UPDATE {S}.taskq_queues q SET tokens = b.tokens, refilled_at = b.refilled_at \
             FROM unnest($1::text[], $2::float8[], $3::int8[]) AS b(name, tokens, refilled_at) \
             WHERE q.name = b.name",
        );
        let st_lock = c.prep(&lock_sql).await?;
        let st_running = c.prep(&running_sql).await?;
        let st_claim = c.prep(&claim_sql).await?;
        let st_bucket = c.prep(&bucket_sql).await?;
        let lease_until = req.now.add(req.lease).0;
        let limit = req.limit.min(i64::MAX as usize) as i64;

        // Lock every limited queue the claim covers, as of now, so that none is claimed
        // from without its lock.
        let wanted: Option<&Vec<String>> = match filter {
            QueueFilter::All => None,
            _ => Some(&req.queues),
        };
        let client = c.client()?;
        let limited_p: [Param<'_>; 1] = [&wanted];
        let running_p: [Param<'_>; 2] = [&wanted, &now];
        let result: Result<(Vec<Row>, bool), tokio_postgres::Error> = async {
            // One round trip: the lock, then the count under it.
            let (begin, locked, running) = futures::join!(
                client.batch_execute("BEGIN"),
                client.query(&st_lock, &limited_p),
                client.query(&st_running, &running_p),
            );
            begin?;
            let (locked, running) = (locked?, running?);
            let running: HashMap<String, i64> = running
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect();
            let mut names = Vec::with_capacity(locked.len());
            let mut caps = Vec::with_capacity(locked.len());
            let mut admissions = Vec::with_capacity(locked.len());
            for q in &locked {
                let name: String = q.get(0);
                let config = QueueConfig {
                    rate: q.get(1),
                    burst: q
                        .get::<_, Option<i64>>(2)
                        .map(|b| b.clamp(0, i64::from(u32::MAX)) as u32),
                    max_concurrent: q
                        .get::<_, Option<i64>>(3)
                        .map(|m| m.clamp(0, i64::from(u32::MAX)) as u32),
                    // Admission does not read the retention.
                    retention: None,
                };
                let bucket = match (q.get::<_, Option<f64>>(4), q.get::<_, Option<i64>>(5)) {
                    (Some(tokens), Some(at)) => Some(Bucket {
                        tokens,
                        refilled_at: Timestamp(at),
                    }),
                    _ => None,
                };
                let n = running.get(&name).copied().unwrap_or(0).max(0) as u64;
                let adm = admission::admit(&config, n, bucket, req.now);
                caps.push(adm.allowance.min(i64::MAX as u64) as i64);
                names.push(name);
                admissions.push(adm);
            }
            // The other wanted queues, up to the limit (-1), unless paused or limited by
            // the time the claim runs.
            let mut seen: HashSet<&str> = names.iter().map(String::as_str).collect();
            let mut all_names: Vec<&str> = names.iter().map(String::as_str).collect();
            if filter != QueueFilter::All {
                for q in &req.queues {
                    if seen.insert(q.as_str()) {
                        all_names.push(q.as_str());
                        caps.push(-1);
                    }
                }
            }
            let params: [Param<'_>; 6] =
                [&now, &lease_until, &req.worker, &limit, &all_names, &caps];
            let any_limited = !locked.is_empty();
            if admissions.iter().all(|a| a.bucket.is_none()) {
                // No bucket to store: the claim and the commit in one round trip (a failed
                // claim aborts the transaction, and the COMMIT then rolls it back).
                let (rows, committed) = futures::join!(
                    client.query(&st_claim, &params),
                    client.batch_execute("COMMIT"),
                );
                let rows = rows?;
                committed?;
                return Ok((rows, any_limited));
            }
            let rows = client.query(&st_claim, &params).await?;
            // The buckets of rate-limited queues taken from, then the commit: one trip.
            let mut taken: HashMap<&str, u64> = HashMap::new();
            for r in &rows {
                if let Ok(queue) = r.try_get::<_, &str>("queue") {
                    *taken.entry(queue).or_default() += 1;
                }
            }
            let (mut b_names, mut b_tokens, mut b_at) = (Vec::new(), Vec::new(), Vec::new());
            for (name, adm) in names.iter().zip(&admissions) {
                let n = taken.get(name.as_str()).copied().unwrap_or(0);
                if let (true, Some(b)) = (n > 0, adm.after(n)) {
                    b_names.push(name.as_str());
                    b_tokens.push(b.tokens);
                    b_at.push(b.refilled_at.0);
                }
            }
            let bucket_p: [Param<'_>; 3] = [&b_names, &b_tokens, &b_at];
            let (updated, committed) = futures::join!(
                async {
                    match b_names.is_empty() {
                        true => Ok(0),
                        false => client.execute(&st_bucket, &bucket_p).await,
                    }
                },
                client.batch_execute("COMMIT"),
            );
            // A failed update aborts the transaction: the COMMIT then rolls it back.
            updated?;
            committed?;
            Ok((rows, any_limited))
        }
        .await;
        if result.is_err() {
            // Leave no transaction open on a connection that goes back to the pool.
            let client = c.client()?;
            if client.batch_execute("ROLLBACK").await.is_err() {
                c.discard();
            }
        }
        let (rows, any_limited) = c.check(result)?;
        let claimed = rows
            .iter()
            .map(claimed_from_row)
            .collect::<Result<_, _>>()?;
        Ok((claimed, any_limited))
    }
}

/// Claims up to `req.limit` due tasks (see [`Store::claim`](crate::store::Store::claim)).
pub(super) async fn claim(
    s: &PostgresStore,
    req: &ClaimRequest,
) -> Result<Vec<ClaimedTask>, StoreError> {
    if req.limit == 0 {
        return Ok(Vec::new());
    }
    let filter = QueueFilter::of(&req.queues);
    let mut c = s.pool.get().await?;
    if s.covers_limited(&req.queues) {
        // The last claim of these queues met limits: straight to the capped path (it is
        // right whatever the settings are now), and plain again once it finds none.
        let (claimed, any_limited) = s.claim_capped(&mut c, req).await?;
        if !any_limited {
            s.note_limited(&req.queues, false);
        }
        return Ok(claimed);
    }
    let st_claim = c.prep(&s.claim_sql(filter, ClaimShape::Plain)).await?;
    let st_limited = c.prep(&s.limited_sql(filter)).await?;
    let now = req.now.0;
    let lease_until = req.now.add(req.lease).0;
    let limit = req.limit.min(i64::MAX as usize) as i64;
    let one = req.queues.first().cloned().unwrap_or_default();
    let queue_param: Param<'_> = match filter {
        QueueFilter::One => &one,
        _ => &req.queues,
    };
    let mut claim_params: Vec<Param<'_>> = vec![&now, &lease_until, &req.worker, &limit];
    let mut limited_params: Vec<Param<'_>> = Vec::new();
    if filter != QueueFilter::All {
        claim_params.push(queue_param);
        limited_params.push(queue_param);
    }
    // One round trip: the plain claim (one statement, which claims nothing when a
    // wanted queue has limits) and which of the wanted queues have limits.
    let client = c.client()?;
    let (claimed, limited) = futures::join!(
        client.query(&st_claim, &claim_params),
        client.query(&st_limited, &limited_params),
    );
    let claimed = c.check(claimed)?;
    let limited = match c.check(limited) {
        Ok(rows) => rows,
        // Tasks are claimed (committed): an error must not lose them.
        Err(e) if !claimed.is_empty() => {
            tracing::warn!(error = %e, "listing rate- or concurrency-limited queues failed after a claim");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    // A queue whose limits were set between the two statements: what the plain claim
    // took is handed over, and the next claim orders every queue together.
    if limited.is_empty() || !claimed.is_empty() {
        return claimed.iter().map(claimed_from_row).collect();
    }
    s.note_limited(&req.queues, true);
    Ok(s.claim_capped(&mut c, req).await?.0)
}

/// The earliest `run_at` of pending tasks or lease end of running ones, in `queues`
/// (all if empty), paused queues left out. Queue by queue, one seek per priority for the
/// pending tasks (the first of each), so future rows of other queues or priorities are
/// never walked; lease ends through the lease index (running tasks are few).
pub(super) async fn next_due(
    s: &PostgresStore,
    queues: &[String],
) -> Result<Option<Timestamp>, StoreError> {
    let filter = QueueFilter::of(queues);
    let sql = s.sql(&format!(
        r#"SELECT LEAST(
    (SELECT min(f.run_at) FROM {queues} CROSS JOIN LATERAL (
        {LEVELS}
        SELECT (SELECT t.run_at FROM {{S}}.taskq_tasks t
                WHERE t.state = 'pending' AND t.queue = w.name AND t.priority = l.priority
                ORDER BY t.run_at LIMIT 1) AS run_at
        FROM levels l WHERE l.priority IS NOT NULL) f),
    (SELECT min(t.lease_until) FROM {{S}}.taskq_tasks t
     WHERE t.state = 'running' {running}))"#,
        queues = filter.queues_sql(1, "q.paused"),
        running = filter.sql_excluding(1, "q.paused"),
    ));
    let one = queues.first().cloned().unwrap_or_default();
    let mut params: Vec<Param<'_>> = Vec::new();
    match filter {
        QueueFilter::All => {}
        QueueFilter::One => params.push(&one),
        QueueFilter::Many => params.push(&queues),
    }
    let mut c = s.pool.get().await?;
    let st = c.prep(&sql).await?;
    let client = c.client()?;
    let r = client.query_one(&st, &params).await;
    let v: Option<i64> = c.check(r)?.get(0);
    Ok(v.map(Timestamp))
}
