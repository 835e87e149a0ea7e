//! The counts by queue and state that [`Store::queues`](crate::store::Store::queues) reads
//! (`taskq_queue_counts`, one row per queue and state), kept by the calls that change
//! them: every call that inserts, deletes or moves tasks between states tallies its
//! changes in a [`Tally`] and writes it once, in its own transaction, before it returns.
//!
//! One upsert per queue and state a call changed, not one per row: a claim of 100 tasks
//! of one queue writes two counter rows once each (pending down, running up), where
//! per-row triggers wrote them 100 times. SQLite has one writer at a time, so the counter
//! rows cost no contention.
//! The tally is exact only if every statement that changes `taskq_tasks` rows' `state` or
//! `queue`, inserts or deletes them, feeds it: the conformance case
//! `queue_counts_equal_a_full_count` and `stores_proptest` compare the counts with a
//! full count after every kind of call.

use std::collections::BTreeMap;

use rusqlite::params;

use super::R;
use crate::store::TaskState;

/// Changes to the counts, by queue and state, not yet written.
#[derive(Debug, Default)]
pub(super) struct Tally(BTreeMap<(String, TaskState), i64>);

impl Tally {
    /// `n` tasks more (or fewer, when negative) of `queue` in `state`.
    pub(super) fn add(&mut self, queue: &str, state: TaskState, n: i64) {
        if n != 0 {
            *self.0.entry((queue.to_string(), state)).or_default() += n;
        }
    }

    /// One task of `queue` moved from `from` to `to` (nothing when they are the same).
    pub(super) fn moved(&mut self, queue: &str, from: TaskState, to: TaskState) {
        if from != to {
            self.add(queue, from, -1);
            self.add(queue, to, 1);
        }
    }

    /// Writes the changes: one upsert per queue and state whose count changed, and the
    /// row removed once its count is back to zero (so the table holds one row per queue
    /// and state that has tasks).
    pub(super) fn write(self, tx: &rusqlite::Transaction<'_>) -> R<()> {
        if self.0.values().all(|n| *n == 0) {
            return Ok(());
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO taskq_queue_counts (queue, state, n) VALUES (?1, ?2, ?3)
             ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
        )?;
        let mut drop_zero = tx.prepare_cached(
            "DELETE FROM taskq_queue_counts WHERE queue = ?1 AND state = ?2 AND n <= 0",
        )?;
        for ((queue, state), n) in self.0 {
            if n == 0 {
                continue;
            }
            upsert.execute(params![queue, state.as_str(), n])?;
            if n < 0 {
                drop_zero.execute(params![queue, state.as_str()])?;
            }
        }
        Ok(())
    }
}
