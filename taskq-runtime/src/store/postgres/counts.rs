//! The counts of finished tasks by queue and state that
//! [`Store::queues`](crate::store::Store::queues) adds to its counts of pending and running
//! tasks (which it reads through their partial indexes): `taskq_queue_counts`, in 16
//! slots chosen by the backend's pid so that workers finishing tasks of one queue at once
//! rarely write the same counter row.
//!
//! Rows enter and leave the finished states only in a few statements, and each counts
//! its own rows, one upsert per queue and state per statement, through the CTE
//! [`counted`] gives it: finish (running to any finished state), cancel (live steps to
//! cancelled) and retry (dead or failed to pending). No trigger runs on updates: a
//! statement-level trigger with transition tables (which cannot be limited to some
//! columns) ran on every update of the table, claims and heartbeats included, copying
//! their rows for nothing. Inserts are always pending. Deletes are counted by a
//! statement-level trigger on `DELETE` (schema version 5), so that every deletion
//! (delete, purge, retention's prune) is counted whatever statement makes it; they are
//! not on the claim path. The conformance case `queue_counts_equal_a_full_count` and
//! `stores_proptest` compare the counts with a full count after every kind of call.

/// The data-modifying CTE `name` that adds `sign` (`+` or `-`) times the number of rows of
/// `rows` (a CTE or subquery, with the columns `queue_col` and `state_col`) to the counts
/// of their queue and state, for the rows in a finished state (pending and running ones
/// are counted through indexes). With `{S}` for the schema, like every statement here.
/// One upsert per queue and state, in that order, so that two statements never wait on
/// each other's counter rows in opposite orders.
pub(super) fn counted(
    name: &str,
    rows: &str,
    queue_col: &str,
    state_col: &str,
    sign: char,
) -> String {
    format!(
        "{name} AS (
INSERT INTO {{S}}.taskq_queue_counts AS c (queue, state, slot, n)
SELECT x.{queue_col}, x.{state_col}, pg_backend_pid() % 16, {sign}count(*)
FROM {rows} x WHERE x.{state_col} NOT IN ('pending', 'running')
GROUP BY x.{queue_col}, x.{state_col} ORDER BY x.{queue_col}, x.{state_col}
ON CONFLICT (queue, state, slot) DO UPDATE SET n = c.n + EXCLUDED.n)"
    )
}
