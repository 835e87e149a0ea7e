//! Claiming: the one claim order over every queue a claim covers, each queue's admission
//! (pause, `max_concurrent`, token bucket; the arithmetic is [`admission`]'s), lapsed
//! leases recorded as attempts, fencing tokens; and [`next_due`], which says when the
//! next claim can find work.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension};

use super::counts::Tally;
use super::rows::{u32_of, u64_of, StoredText};
use super::R;
use crate::store::admission::{self, Admission, Bucket};
use crate::store::{
    ClaimRequest, ClaimedTask, IterationCursor, Lease, QueueConfig, TaskId, TaskState,
};
use crate::time::Timestamp;

/// The attempt label and error of a lapsed lease.
const LAPSED: (&str, &str) = crate::policy::LEASE_LAPSED;

/// Settings and bucket of one queue, as read inside a claim.
#[derive(Default)]
struct QueueRow {
    paused: bool,
    config: QueueConfig,
    tokens: Option<f64>,
    refilled_at: Option<i64>,
    /// Running tasks with a live lease (only counted when `max_concurrent` is set).
    running: u32,
}

/// One claim candidate.
struct Candidate {
    id: i64,
    queue: String,
    priority: i64,
    run_at: i64,
    running: bool,
}

/// Every queue's settings and bucket, by name.
fn load_queues(tx: &rusqlite::Transaction<'_>) -> R<HashMap<String, QueueRow>> {
    let mut st = tx.prepare_cached(
        "SELECT name, paused, rate, burst, max_concurrent, bucket_tokens, bucket_refilled_at
         FROM taskq_queues",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            QueueRow {
                paused: r.get::<_, i64>(1)? != 0,
                config: QueueConfig {
                    rate: r.get(2)?,
                    burst: r.get::<_, Option<i64>>(3)?.map(u32_of),
                    max_concurrent: r.get::<_, Option<i64>>(4)?.map(u32_of),
                    // Admission does not read the retention.
                    retention: None,
                },
                tokens: r.get(5)?,
                refilled_at: r.get(6)?,
                running: 0,
            },
        ))
    })?;
    let mut map = HashMap::new();
    for row in rows {
        let (name, q) = row?;
        map.insert(name, q);
    }
    Ok(map)
}

/// The queues to look at: those asked for, or every queue that has live tasks.
fn claim_queues(tx: &rusqlite::Transaction<'_>, asked: &[String]) -> R<Vec<String>> {
    if !asked.is_empty() {
        let mut seen = HashSet::new();
        return Ok(asked
            .iter()
            .filter(|q| seen.insert(q.as_str()))
            .cloned()
            .collect());
    }
    queues_of(tx, &["pending", "running"])
}

/// The distinct queues of the tasks in `states`, walking the claim index one queue at a
/// time.
fn queues_of(tx: &rusqlite::Transaction<'_>, states: &[&str]) -> R<Vec<String>> {
    let mut out = Vec::new();
    for state in states {
        let mut st = tx.prepare_cached(
            "SELECT queue FROM taskq_tasks WHERE state = ?1 AND queue > ?2 ORDER BY queue LIMIT 1",
        )?;
        let mut last = String::new();
        let mut first = true;
        loop {
            let next: Option<String> = if first {
                tx.prepare_cached(
                    "SELECT queue FROM taskq_tasks WHERE state = ?1 ORDER BY queue LIMIT 1",
                )?
                .query_row([*state], |r| r.get(0))
                .optional()?
            } else {
                st.query_row(params![*state, last], |r| r.get(0))
                    .optional()?
            };
            first = false;
            match next {
                Some(q) => {
                    if !out.contains(&q) {
                        out.push(q.clone());
                    }
                    last = q;
                }
                None => break,
            }
        }
    }
    Ok(out)
}

/// The priorities of `queue`'s pending tasks, highest first, each found with one seek of
/// the claim index `(state, queue, priority DESC, run_at, id)`: `None` after the lowest.
fn next_level(tx: &rusqlite::Transaction<'_>, queue: &str, below: Option<i64>) -> R<Option<i64>> {
    let row = match below {
        None => tx
            .prepare_cached(
                "SELECT priority FROM taskq_tasks WHERE state = 'pending' AND queue = ?1
                 ORDER BY priority DESC LIMIT 1",
            )?
            .query_row([queue], |r| r.get(0))
            .optional()?,
        Some(p) => tx
            .prepare_cached(
                "SELECT priority FROM taskq_tasks
                 WHERE state = 'pending' AND queue = ?1 AND priority < ?2
                 ORDER BY priority DESC LIMIT 1",
            )?
            .query_row(params![queue, p], |r| r.get(0))
            .optional()?,
    };
    Ok(row)
}

/// Adds `queue`'s best `limit` due pending tasks to `out`, in claim order. One priority at
/// a time, highest first: within a priority the claim index holds rows by `run_at`, so a
/// range seek (`run_at <= now`) reads the due rows only. The rows due later (an hour
/// ahead at a higher priority, say) are never read; the cost is one seek per priority
/// that has pending tasks, until `limit` rows are found.
fn due_pending(
    tx: &rusqlite::Transaction<'_>,
    queue: &str,
    now: i64,
    limit: usize,
    out: &mut Vec<Candidate>,
) -> R<()> {
    let mut rows_of = tx.prepare_cached(
        "SELECT id, priority, run_at FROM taskq_tasks
         WHERE state = 'pending' AND queue = ?1 AND priority = ?2 AND run_at <= ?3
         ORDER BY run_at, id LIMIT ?4",
    )?;
    let mut found = 0;
    let mut level = next_level(tx, queue, None)?;
    while let Some(p) = level {
        if found >= limit {
            break;
        }
        let rows = rows_of.query_map(params![queue, p, now, (limit - found) as i64], |r| {
            Ok(Candidate {
                id: r.get(0)?,
                queue: queue.to_string(),
                priority: r.get(1)?,
                run_at: r.get(2)?,
                running: false,
            })
        })?;
        for c in rows {
            out.push(c?);
            found += 1;
        }
        if found >= limit {
            // Full: the next level would not be read.
            break;
        }
        level = next_level(tx, queue, Some(p))?;
    }
    Ok(())
}

/// Claims up to `req.limit` due tasks in one write transaction (see [`Store::claim`](crate::store::Store::claim)).
pub(super) fn claim(tx: &rusqlite::Transaction<'_>, req: &ClaimRequest) -> R<Vec<ClaimedTask>> {
    let now = req.now.0;
    let limit = req.limit;
    if limit == 0 {
        return Ok(Vec::new());
    }
    end_cancel_lapsed(tx, now)?;
    let mut queues = load_queues(tx)?;
    let names = claim_queues(tx, &req.queues)?;

    // Candidates of every unpaused queue: its best `limit` due pending tasks and its best
    // `limit` lapsed running ones. A queue's rows are only ever skipped once the queue is
    // out of capacity for the rest of this claim, so `limit` per queue is enough.
    let mut cands: Vec<Candidate> = Vec::new();
    {
        // Through the lease index (version 5: running rows by `(queue, lease_until)`), so
        // only the lapsed rows are read, not every running row of the queue (the claim
        // index would satisfy the order but read them all: 50,000 rows per claim when
        // 50,000 leases are held). `INDEXED BY` because without statistics the planner
        // prefers the index that gives the order; the `IS NULL` half is a seek of its own
        // (a claim always sets the lease, but a row without one still counts as lapsed).
        let mut lapsed = tx.prepare_cached(
            "SELECT id, priority, run_at FROM (
                 SELECT id, priority, run_at FROM taskq_tasks INDEXED BY taskq_tasks_lease
                 WHERE state = 'running' AND queue = ?1 AND lease_until IS NULL
                 UNION ALL
                 SELECT id, priority, run_at FROM taskq_tasks INDEXED BY taskq_tasks_lease
                 WHERE state = 'running' AND queue = ?1 AND lease_until <= ?2)
             ORDER BY priority DESC, run_at, id LIMIT ?3",
        )?;
        let mut running = tx.prepare_cached(
            "SELECT COUNT(*) FROM taskq_tasks
             WHERE state = 'running' AND queue = ?1 AND lease_until > ?2",
        )?;
        for name in &names {
            let q = queues.entry(name.clone()).or_default();
            if q.paused {
                continue;
            }
            if q.config.max_concurrent.is_some() {
                let n: i64 = running.query_row(params![name, now], |r| r.get(0))?;
                q.running = u32_of(n);
            }
            due_pending(tx, name, now, limit, &mut cands)?;
            let rows = lapsed.query_map(params![name, now, limit as i64], |r| {
                Ok(Candidate {
                    id: r.get(0)?,
                    queue: name.clone(),
                    priority: r.get(1)?,
                    run_at: r.get(2)?,
                    running: true,
                })
            })?;
            for c in rows {
                cands.push(c?);
            }
        }
    }
    cands.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });

    // Each queue's admission (concurrency and token bucket), then the candidates in the
    // one claim order, each queue up to its allowance.
    let mut admissions: HashMap<&str, (Admission, u64)> = HashMap::new();
    for name in &names {
        if let Some(q) = queues.get(name) {
            if !q.paused {
                let bucket = match (q.tokens, q.refilled_at) {
                    (Some(tokens), Some(at)) => Some(Bucket {
                        tokens,
                        refilled_at: Timestamp(at),
                    }),
                    _ => None,
                };
                let adm = admission::admit(&q.config, u64::from(q.running), bucket, req.now);
                admissions.insert(name.as_str(), (adm, 0));
            }
        }
    }
    let mut chosen: Vec<&Candidate> = Vec::new();
    for c in &cands {
        if chosen.len() >= limit {
            break;
        }
        let Some((adm, taken)) = admissions.get_mut(c.queue.as_str()) else {
            continue;
        };
        if *taken >= adm.allowance {
            continue;
        }
        *taken += 1;
        chosen.push(c);
    }

    // Refilling alone needs no write: a later claim computes the same refill from the
    // stored state.
    for (name, (adm, taken)) in admissions.iter().filter(|(_, (_, n))| *n > 0) {
        if let Some(b) = adm.after(*taken) {
            tx.prepare_cached(
                "UPDATE taskq_queues SET bucket_tokens = ?2, bucket_refilled_at = ?3 WHERE name = ?1",
            )?
            .execute(params![name, b.tokens, b.refilled_at.0])?;
        }
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }

    // No `RETURNING` here or below: SQLite runs a `RETURNING` statement into an ephemeral
    // table with a page cache of its own, set up and torn down at each execution (half
    // of a claim's time when it ran once per claimed row); a plain update and a read by
    // key cost a fraction of that.
    tx.prepare_cached("UPDATE taskq_counters SET value = value + ?1 WHERE name = 'lease_token'")?
        .execute([chosen.len() as i64])?;
    let first_token: i64 = tx
        .prepare_cached("SELECT value FROM taskq_counters WHERE name = 'lease_token'")?
        .query_row([], |r| r.get::<_, i64>(0))?
        - chosen.len() as i64
        + 1;

    let lease_until = Timestamp(now).add(req.lease).0;
    let mut lapse = tx.prepare_cached(
        "INSERT INTO taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
         SELECT id, attempts, COALESCE(worker, ''), COALESCE(started_at, ?2), ?2, ?3, ?4
         FROM taskq_tasks WHERE id = ?1",
    )?;
    let mut take = tx.prepare_cached(
        "UPDATE taskq_tasks
         SET state = 'running', attempts = attempts + 1, worker = ?2, lease_until = ?3,
             token = ?4, started_at = ?5,
             last_error = CASE WHEN ?6 THEN ?7 ELSE last_error END
         WHERE id = ?1",
    )?;
    let mut taken = tx.prepare_cached(
        "SELECT task, queue, payload, attempts, enqueued_at, run_id, run_at, trace FROM taskq_tasks WHERE id = ?1",
    )?;
    let mut iteration = tx.prepare_cached(
        "SELECT cursor, processed, batches, total FROM taskq_iterations WHERE run = ?1",
    )?;
    let mut out = Vec::with_capacity(chosen.len());
    let mut tally = Tally::default();
    for (i, c) in chosen.into_iter().enumerate() {
        let token = first_token + i as i64;
        if c.running {
            lapse.execute(params![c.id, now, LAPSED.0, LAPSED.1])?;
        } else {
            tally.moved(&c.queue, TaskState::Pending, TaskState::Running);
        }
        #[allow(clippy::type_complexity)]
        let (task, queue, payload, attempts, enqueued_at, run_id, run_at, trace): (
            String,
            String,
            StoredText,
            i64,
            i64,
            Option<i64>,
            i64,
            Option<String>,
        ) = {
            take.execute(params![
                c.id,
                req.worker,
                lease_until,
                token,
                now,
                c.running,
                LAPSED.1
            ])?;
            taken.query_row([c.id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?
        };
        // Decoded row by row: a row that does not decode is handed out with the reason
        // (the worker sends it dead) instead of failing the claim of the others.
        let (payload, mut decode_error) = payload.decode("payload", c.id);
        let iteration = match run_id {
            None => None,
            Some(run) => {
                let row: Option<(Option<StoredText>, i64, i64, Option<i64>)> = iteration
                    .query_row([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                row.map(|(cursor, processed, batches, total)| IterationCursor {
                    run: TaskId(run),
                    cursor: cursor.and_then(|stored| match stored.decode("cursor", c.id) {
                        (v, None) => Some(v),
                        (_, Some(why)) => {
                            decode_error.get_or_insert(why);
                            None
                        }
                    }),
                    processed: u64_of(processed),
                    batches: u64_of(batches),
                    total: total.map(u64_of),
                })
            }
        };
        out.push(ClaimedTask {
            lease: Lease {
                id: TaskId(c.id),
                token,
            },
            payload,
            task,
            queue,
            attempt: u32_of(attempts),
            enqueued_at: Timestamp(enqueued_at),
            iteration,
            decode_error,
            run_at: Timestamp(run_at),
            trace,
        });
    }
    tally.write(tx)?;
    Ok(out)
}

/// The earliest `run_at` of pending tasks or lease end of running ones, in `queues` (all
/// if empty), paused queues left out. Queue by queue, and within a queue one seek per
/// priority (its earliest row), so tasks of other queues are never read.
pub(super) fn next_due(tx: &rusqlite::Transaction<'_>, queues: &[String]) -> R<Option<Timestamp>> {
    let names = claim_queues(tx, queues)?;
    let mut paused = tx.prepare_cached("SELECT paused FROM taskq_queues WHERE name = ?1")?;
    let mut first = tx.prepare_cached(
        "SELECT run_at FROM taskq_tasks WHERE state = 'pending' AND queue = ?1 AND priority = ?2
         ORDER BY run_at LIMIT 1",
    )?;
    let mut lease = tx.prepare_cached(
        "SELECT MIN(lease_until) FROM taskq_tasks WHERE state = 'running' AND queue = ?1",
    )?;
    let mut best: Option<i64> = None;
    for name in &names {
        let p: Option<i64> = paused.query_row([name], |r| r.get(0)).optional()?;
        if p.unwrap_or(0) != 0 {
            continue;
        }
        let mut level = next_level(tx, name, None)?;
        while let Some(p) = level {
            let t: Option<i64> = first.query_row(params![name, p], |r| r.get(0)).optional()?;
            best = best.into_iter().chain(t).min();
            level = next_level(tx, name, Some(p))?;
        }
        let l: Option<i64> = lease.query_row([name], |r| r.get(0))?;
        best = best.into_iter().chain(l).min();
    }
    Ok(best.map(Timestamp))
}

/// Ends the running tasks a person cancelled whose lease lapsed (their worker died or
/// stalled), in every queue, paused or not, whether this claim covers it or not: the
/// cancel decided their end and nothing runs (the policy's `CANCEL_LAPSED`). One seek of
/// the lease index per queue with running tasks, reading only lapsed rows.
fn end_cancel_lapsed(tx: &rusqlite::Transaction<'_>, now: i64) -> R<()> {
    let mut lapsed = tx.prepare_cached(
        "SELECT id FROM taskq_tasks INDEXED BY taskq_tasks_lease
         WHERE state = 'running' AND queue = ?1 AND lease_until IS NULL AND cancel_requested
         UNION ALL
         SELECT id FROM taskq_tasks INDEXED BY taskq_tasks_lease
         WHERE state = 'running' AND queue = ?1 AND lease_until <= ?2 AND cancel_requested",
    )?;
    let mut tally = Tally::default();
    for queue in queues_of(tx, &["running"])? {
        let ids: Vec<i64> = lapsed
            .query_map(params![queue, now], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            end_cancelled_running(tx, id, &queue, now, &mut tally)?;
        }
    }
    tally.write(tx)
}

/// Ends running task `id` of `queue`, cancelled by a person, whose lease lapsed:
/// cancelled, the lapse recorded as its attempt ([`CANCEL_LAPSED`](crate::policy::CANCEL_LAPSED)).
/// The caller writes `tally`.
pub(super) fn end_cancelled_running(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    queue: &str,
    now: i64,
    tally: &mut Tally,
) -> R<()> {
    let (label, error) = crate::policy::CANCEL_LAPSED;
    tx.prepare_cached(
        "INSERT INTO taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
         SELECT id, attempts, COALESCE(worker, ''), COALESCE(started_at, ?2), ?2, ?3, ?4
         FROM taskq_tasks WHERE id = ?1",
    )?
    .execute(params![id, now, label, error])?;
    tx.prepare_cached(
        "UPDATE taskq_tasks SET state = 'cancelled', finished_at = ?2, worker = NULL,
             lease_until = NULL, last_error = ?3, cancel_requested = 1
         WHERE id = ?1",
    )?
    .execute(params![id, now, error])?;
    tally.moved(queue, TaskState::Running, TaskState::Cancelled);
    Ok(())
}
