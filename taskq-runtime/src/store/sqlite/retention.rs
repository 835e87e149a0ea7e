//! Retention's statements: the deletes [`crate::retention`] decides, at most a batch of
//! rows per write transaction, each transaction its own call on the connection so that
//! claims and heartbeats go between batches.
//!
//! - Tasks: `state IN (class) AND finished_at <= cutoff` over the partial index
//!   `taskq_tasks_finished (state, finished_at) WHERE finished_at IS NOT NULL`, so live
//!   rows are never read; named rows leave their tombstones first (`manage::bury`), and
//!   attempts go by the foreign key's `ON DELETE CASCADE`.
//! - Run records: the same over `taskq_iterations_finished`, for runs no step row points
//!   at any more; the tombstones that pointed at a pruned run keep its hold
//!   ([`tombstone::without_run`]).
//! - Tombstones whose hold has passed, over `taskq_tombstones_until (taken_until)`.
//!
//! The file stops growing once retention keeps up: SQLite puts the pages of deleted rows
//! on its freelist and the next inserts reuse them. taskq does not shrink the file
//! (`auto_vacuum` is left off): it can only be chosen when a file is created, it adds
//! pointer-map upkeep to every write, and a file shrunk after a quiet night grows back
//! in the next busy hour. After a one-off backlog, `VACUUM` (with no worker running)
//! gives the space back. The WAL is bounded by the store's `journal_size_limit` (see
//! `mod.rs`).

use rusqlite::params;

use super::counts::Tally;
use super::manage::bury;
use super::rows::task_state;
use super::{SqliteStore, R};
use crate::retention::{self as policy, Queues, Retention, Rule, PRUNE_BATCH};
use crate::store::tombstone::{self, Tombstone};
use crate::store::{PruneReport, StoreError, TaskId, TaskState};
use crate::time::Timestamp;

impl SqliteStore {
    /// [`Store::prune`](crate::store::Store::prune): tasks, then run records, then
    /// tombstones, `batch` rows per transaction.
    pub(super) async fn prune_all(
        &self,
        now: Timestamp,
        batch: usize,
    ) -> Result<PruneReport, StoreError> {
        let batch = if batch == 0 { PRUNE_BATCH } else { batch };
        let overrides = self
            .call("reading retention settings", |db| db.read(overrides))
            .await?;
        let rules = policy::plan(&overrides, now);
        let mut report = PruneReport::default();
        for rule in &rules {
            loop {
                let r = rule.clone();
                let (removed, n) = self
                    .call("pruning tasks", move |db| {
                        db.write(false, |tx| tasks(tx, &r, now, batch))
                    })
                    .await?;
                for (state, k) in removed {
                    report.add(state, k);
                }
                if n < batch {
                    break;
                }
            }
        }
        for rule in &rules {
            loop {
                let r = rule.clone();
                let n = self
                    .call("pruning iteration runs", move |db| {
                        db.write(false, |tx| runs(tx, &r, batch))
                    })
                    .await?;
                report.runs += n as u64;
                if n < batch {
                    break;
                }
            }
        }
        loop {
            let n = self
                .call("pruning tombstones", move |db| {
                    db.write(false, |tx| tombstones(tx, now, batch))
                })
                .await?;
            report.tombstones += n as u64;
            if n < batch {
                break;
            }
        }
        Ok(report)
    }
}

/// The queues whose settings override the default retention.
fn overrides(tx: &rusqlite::Transaction<'_>) -> R<Vec<(String, Retention)>> {
    let mut st = tx.prepare_cached(
        "SELECT name, keep_done_ms, keep_failed_ms FROM taskq_queues
         WHERE keep_done_ms IS NOT NULL OR keep_failed_ms IS NOT NULL",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, done, failed) = row?;
        if let Some(r) = policy::from_columns(done, failed) {
            out.push((name, r));
        }
    }
    Ok(out)
}

/// The SQL of a rule's conditions on `alias` (`t` or `r`): its states, `finished_at <= ?1`
/// and its queues (`?2`, a JSON array of names).
fn condition(rule: &Rule, alias: &str, states: [&str; 2]) -> String {
    let queues = match rule.queues {
        Queues::Only(_) => "IN",
        Queues::Except(_) => "NOT IN",
    };
    format!(
        "{alias}.state IN ('{}', '{}') AND {alias}.finished_at <= ?1
         AND {alias}.queue {queues} (SELECT value FROM json_each(?2))",
        states[0], states[1]
    )
}

fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    // A list of integers or strings always serialises.
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// The query for up to `?3` tasks a rule covers (`?1` its cutoff, `?2` its queues).
pub(super) fn tasks_sql(rule: &Rule) -> String {
    let states = rule.class.states().map(TaskState::as_str);
    format!(
        "SELECT t.id, t.state FROM taskq_tasks t WHERE {} LIMIT ?3",
        condition(rule, "t", states)
    )
}

/// The query for up to `?3` run records a rule covers that no step row points at.
pub(super) fn runs_sql(rule: &Rule) -> String {
    let states = rule.class.run_states().map(|s| s.as_str());
    format!(
        "SELECT r.run, r.finished_at FROM taskq_iterations r WHERE {}
           AND NOT EXISTS (SELECT 1 FROM taskq_tasks t WHERE t.run_id = r.run)
         LIMIT ?3",
        condition(rule, "r", states)
    )
}

/// The query for up to `?2` tombstones that no longer hold their name at `?1` (the rule
/// of [`tombstone::holds`]).
pub(super) const EXPIRED_TOMBSTONES: &str = "SELECT n.name FROM taskq_tombstones n
     LEFT JOIN taskq_iterations i ON i.run = n.run_id
     WHERE n.taken_until <= ?1
       AND (i.run IS NULL OR (i.state <> 'running'
            AND (i.finished_at IS NULL OR i.finished_at + n.tombstone_ms <= ?1)))
     LIMIT ?2";

/// Deletes up to `batch` tasks the rule covers, leaving their names' tombstones; returns
/// the counts by state and how many.
fn tasks(
    tx: &rusqlite::Transaction<'_>,
    rule: &Rule,
    now: Timestamp,
    batch: usize,
) -> R<(Vec<(TaskState, u64)>, usize)> {
    let sql = tasks_sql(rule);
    let found: Vec<(i64, String)> = tx
        .prepare_cached(&sql)?
        .query_map(
            params![
                rule.finished_by.0,
                json_list(rule.queues.names()),
                batch.min(i64::MAX as usize) as i64
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    if found.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let mut counts = PruneReport::default();
    for (_, state) in &found {
        counts.add(task_state(state)?, 1);
    }
    let ids = json_list(&found.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    bury(
        tx,
        "t.id IN (SELECT value FROM json_each(?1))",
        params![ids],
        now,
    )?;
    let mut tally = Tally::default();
    let mut gone = tx.prepare_cached(
        "DELETE FROM taskq_tasks WHERE id IN (SELECT value FROM json_each(?1))
         RETURNING queue, state",
    )?;
    let rows = gone.query_map([&ids], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (queue, state) = row?;
        tally.add(&queue, task_state(&state)?, -1);
    }
    drop(gone);
    tally.write(tx)?;
    Ok((counts.tasks, found.len()))
}

/// Deletes up to `batch` run records the rule covers that no step row points at; returns
/// how many.
fn runs(tx: &rusqlite::Transaction<'_>, rule: &Rule, batch: usize) -> R<usize> {
    let sql = runs_sql(rule);
    let found: Vec<(i64, Option<i64>)> = tx
        .prepare_cached(&sql)?
        .query_map(
            params![
                rule.finished_by.0,
                json_list(rule.queues.names()),
                batch.min(i64::MAX as usize) as i64
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    if found.is_empty() {
        return Ok(0);
    }
    let ids = json_list(&found.iter().map(|(run, _)| *run).collect::<Vec<_>>());
    // The tombstones that point at these runs keep the hold each run gave its name.
    let pointing: Vec<(String, i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT name, taken_until, run_id, tombstone_ms FROM taskq_tombstones
             WHERE run_id IN (SELECT value FROM json_each(?1))",
        )?
        .query_map([&ids], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, taken_until, run, window_ms) in pointing {
        let end = found
            .iter()
            .find(|(r, _)| *r == run)
            .and_then(|(_, end)| end.map(Timestamp));
        let t = Tombstone {
            taken_until: Timestamp(taken_until),
            run: Some(TaskId(run)),
            window_ms,
        };
        let t = tombstone::without_run(t, end);
        tx.prepare_cached(
            "UPDATE taskq_tombstones SET taken_until = ?2, run_id = NULL WHERE name = ?1",
        )?
        .execute(params![name, t.taken_until.0])?;
    }
    tx.prepare_cached(
        "DELETE FROM taskq_iterations WHERE run IN (SELECT value FROM json_each(?1))",
    )?
    .execute([&ids])?;
    Ok(found.len())
}

/// Deletes up to `batch` tombstones that no longer hold their name at `now` (the rule of
/// [`tombstone::holds`]); returns how many.
fn tombstones(tx: &rusqlite::Transaction<'_>, now: Timestamp, batch: usize) -> R<usize> {
    let names: Vec<String> = tx
        .prepare_cached(EXPIRED_TOMBSTONES)?
        .query_map(params![now.0, batch.min(i64::MAX as usize) as i64], |r| {
            r.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    if names.is_empty() {
        return Ok(0);
    }
    tx.prepare_cached(
        "DELETE FROM taskq_tombstones WHERE name IN (SELECT value FROM json_each(?1))",
    )?
    .execute([json_list(&names)])?;
    Ok(names.len())
}
