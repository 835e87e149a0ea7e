//! Retention's statements: the deletes [`crate::retention`] decides, one statement per
//! batch of at most `batch` rows (its own transaction), so no lock is held for long.
//!
//! One process prunes a store at a time: every statement first takes
//! `pg_try_advisory_xact_lock(hashtext('taskq.prune.<schema>'))` and does nothing when
//! another transaction holds it; the prune then stops and reports
//! [`PruneReport::busy`]. Any number of workers may run: the others skip, and the lock goes
//! with the statement's transaction (no session lock is left on a pooled connection). The
//! rows a statement deletes are picked with `FOR UPDATE SKIP LOCKED`, so a prune never
//! waits on a row a claim, a retry or a delete holds, and never deletes a row that one of
//! those changed meanwhile (the pick re-checks its conditions on the locked row).
//!
//! - Tasks: `state IN (class) AND finished_at <= cutoff` over the partial index
//!   `taskq_tasks_finished_idx (state, finished_at) WHERE finished_at IS NOT NULL`; their
//!   attempts in the same statement, and the tombstones of named ones through
//!   [`BURY`](super::manage::BURY), so a concurrent enqueue sees the row or its tombstone.
//! - Run records: over `taskq_iterations_finished_idx`, for runs no step row points at;
//!   the tombstones that pointed at a pruned run keep its hold (the SQL of
//!   [`tombstone::without_run`](crate::store::tombstone::without_run)).
//! - Tombstones whose hold has passed, over `taskq_tombstones_until_idx`.
//!
//! Times are the `now` the caller gives, as in every statement of this store.

use super::{Param, PostgresStore};
use crate::retention::{self as policy, Queues, Retention, Rule, PRUNE_BATCH};
use crate::store::{PruneReport, StoreError, TaskState};
use crate::time::Timestamp;

/// The advisory lock every prune statement tries first: `$1` is its key's text.
const LOCK: &str =
    "l AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(hashtext($1::text)) AS got)";

/// A rule's condition on `alias`'s queue, with `$n` the array of names.
fn queues_sql(rule: &Rule, alias: &str, n: usize) -> String {
    match rule.queues {
        Queues::Only(_) => format!("{alias}.queue = ANY(${n}::text[])"),
        Queues::Except(_) => format!("NOT ({alias}.queue = ANY(${n}::text[]))"),
    }
}

impl PostgresStore {
    /// The key of the advisory lock prunes of this store take, as text (hashed by
    /// `hashtext`).
    pub(super) fn prune_lock_key(&self) -> String {
        format!("taskq.prune.{}", self.schema_name)
    }

    /// The statement that deletes up to `$5` tasks a rule covers (`$3` cutoff, `$4`
    /// queues) at `$2`, with their attempts and tombstones; it answers whether it held the
    /// lock, and the counts by state.
    pub(super) fn prune_tasks_sql(&self, rule: &Rule) -> String {
        let [a, b] = rule.class.states().map(TaskState::as_str);
        self.sql(&format!(
            "WITH {LOCK},
             v AS (SELECT t.id FROM {{S}}.taskq_tasks t
                   WHERE (SELECT got FROM l) AND t.state IN ('{a}', '{b}')
                     AND t.finished_at <= $3::int8 AND {queues}
                   LIMIT $5::int8 FOR UPDATE SKIP LOCKED),
             d AS (DELETE FROM {{S}}.taskq_tasks WHERE id IN (SELECT id FROM v)
                   RETURNING {{DELETED}}),
             a AS (DELETE FROM {{S}}.taskq_attempts WHERE task_id IN (SELECT id FROM d)),
             n AS ({{BURY}})
             SELECT l.got, c.state, c.n FROM l
             LEFT JOIN (SELECT d.state, count(*)::int8 AS n FROM d GROUP BY d.state) c ON true",
            queues = queues_sql(rule, "t", 4),
        ))
    }

    /// The statement that deletes up to `$4` run records a rule covers (`$2` cutoff, `$3`
    /// queues) that no step row points at, folding their holds into the tombstones that
    /// point at them; it answers whether it held the lock, and how many.
    pub(super) fn prune_runs_sql(&self, rule: &Rule) -> String {
        let [a, b] = rule.class.run_states().map(|s| s.as_str());
        self.sql(&format!(
            "WITH {LOCK},
             v AS (SELECT r.run_id FROM {{S}}.taskq_iterations r
                   WHERE (SELECT got FROM l) AND r.state IN ('{a}', '{b}')
                     AND r.finished_at <= $2::int8 AND {queues}
                     AND NOT EXISTS (SELECT 1 FROM {{S}}.taskq_tasks t WHERE t.run_id = r.run_id)
                   LIMIT $4::int8 FOR UPDATE SKIP LOCKED),
             d AS (DELETE FROM {{S}}.taskq_iterations WHERE run_id IN (SELECT run_id FROM v)
                   RETURNING run_id, finished_at),
             f AS (UPDATE {{S}}.taskq_tombstones o
                   SET taken_until = GREATEST(o.taken_until,
                           LEAST(d.finished_at::numeric + GREATEST(o.tombstone_ms, 0),
                                 9223372036854775807)::int8),
                       run_id = NULL
                   FROM d WHERE o.run_id = d.run_id)
             SELECT l.got, (SELECT count(*) FROM d)::int8 FROM l",
            queues = queues_sql(rule, "r", 3),
        ))
    }

    /// The statement that deletes up to `$3` tombstones that no longer hold their name at
    /// `$2` (the rule of [`tombstone::holds`](crate::store::tombstone::holds)); it answers
    /// whether it held the lock, and how many.
    pub(super) fn prune_tombstones_sql(&self) -> String {
        self.sql(&format!(
            "WITH {LOCK},
             v AS (SELECT o.name FROM {{S}}.taskq_tombstones o
                   LEFT JOIN {{S}}.taskq_iterations i ON i.run_id = o.run_id
                   WHERE (SELECT got FROM l) AND o.taken_until <= $2::int8
                     AND (i.run_id IS NULL OR (i.state <> 'running'
                          AND (i.finished_at IS NULL
                               OR i.finished_at::numeric + o.tombstone_ms <= $2::int8)))
                   LIMIT $3::int8 FOR UPDATE OF o SKIP LOCKED),
             d AS (DELETE FROM {{S}}.taskq_tombstones WHERE name IN (SELECT name FROM v)
                   RETURNING 1)
             SELECT l.got, (SELECT count(*) FROM d)::int8 FROM l"
        ))
    }

    /// [`Store::prune`](crate::store::Store::prune): tasks, then run records, then
    /// tombstones, `batch` rows per statement; stops at the first statement that finds
    /// another prune holding the lock.
    pub(super) async fn prune_all(
        &self,
        now: Timestamp,
        batch: usize,
    ) -> Result<PruneReport, StoreError> {
        let batch = if batch == 0 { PRUNE_BATCH } else { batch };
        let limit = batch.min(i64::MAX as usize) as i64;
        let key = self.prune_lock_key();
        let rules = policy::plan(&self.retention_overrides().await?, now);
        let mut report = PruneReport::default();
        let mut c = self.pool.get().await?;
        for rule in &rules {
            let st = c.prep(&self.prune_tasks_sql(rule)).await?;
            let names = rule.queues.names();
            loop {
                let p: [Param<'_>; 5] = [&key, &now.0, &rule.finished_by.0, &names, &limit];
                let client = c.client()?;
                let r = client.query(&st, &p).await;
                let rows = c.check(r)?;
                let mut n = 0u64;
                for row in &rows {
                    if !row.get::<_, bool>(0) {
                        report.busy = true;
                        return Ok(report);
                    }
                    if let Some(state) = row.get::<_, Option<String>>(1) {
                        let k = row.get::<_, Option<i64>>(2).unwrap_or(0).max(0) as u64;
                        report.add(state.parse().map_err(StoreError::Backend)?, k);
                        n += k;
                    }
                }
                if n < batch as u64 {
                    break;
                }
            }
        }
        for rule in &rules {
            let st = c.prep(&self.prune_runs_sql(rule)).await?;
            let names = rule.queues.names();
            loop {
                let p: [Param<'_>; 4] = [&key, &rule.finished_by.0, &names, &limit];
                let client = c.client()?;
                let r = client.query_one(&st, &p).await;
                let row = c.check(r)?;
                if !row.get::<_, bool>(0) {
                    report.busy = true;
                    return Ok(report);
                }
                let n = row.get::<_, i64>(1).max(0) as u64;
                report.runs += n;
                if n < batch as u64 {
                    break;
                }
            }
        }
        let st = c.prep(&self.prune_tombstones_sql()).await?;
        loop {
            let p: [Param<'_>; 3] = [&key, &now.0, &limit];
            let client = c.client()?;
            let r = client.query_one(&st, &p).await;
            let row = c.check(r)?;
            if !row.get::<_, bool>(0) {
                report.busy = true;
                return Ok(report);
            }
            let n = row.get::<_, i64>(1).max(0) as u64;
            report.tombstones += n;
            if n < batch as u64 {
                break;
            }
        }
        Ok(report)
    }

    /// The queues whose settings override the default retention.
    async fn retention_overrides(&self) -> Result<Vec<(String, Retention)>, StoreError> {
        let sql = self.sql(
            "SELECT name, keep_done_ms, keep_failed_ms FROM {S}.taskq_queues \
             WHERE keep_done_ms IS NOT NULL OR keep_failed_ms IS NOT NULL",
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query(&st, &[]).await;
        Ok(c.check(r)?
            .iter()
            .filter_map(|row| policy::from_columns(row.get(1), row.get(2)).map(|r| (row.get(0), r)))
            .collect())
    }
}
