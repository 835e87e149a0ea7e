//! Tombstones: the hold a deleted task leaves on its de-duplication name.
//!
//! A task's unique name is taken while the task is live, and for its tombstone window
//! after it ends (for the named first step of an iterative run: while the run is live,
//! and for the window after the run ends). Deleting the row must not free the name early
//! (App Engine and Cloud Tasks keep a deleted task's name too). So whenever a named task's
//! row is deleted — [`Store::delete`](super::Store::delete), [`Store::purge`](super::Store::purge)
//! and [`Store::prune`](super::Store::prune) (retention) — the store writes, in the same transaction, a
//! tombstone record: the name, the time until which the deleted row would have held it,
//! and for a step of an iterative run the run (whose own end then counts).
//! [`Store::enqueue`](super::Store::enqueue) checks these records atomically with its
//! insert, beside the task rows.
//!
//! The rule ([`of_deleted`]):
//! - a live task (pending or running) is ended by its deletion: its name is held until
//!   `now + window`;
//! - a finished task keeps what is left of its window: until `finished_at + window`
//!   (a delete neither shortens nor lengthens it, so a prune of rows whose window passed
//!   writes nothing);
//! - a step of an iterative run also keeps the name while its run is live, and for the
//!   window after the run ends;
//! - an unnamed task, or one whose hold has passed, writes nothing.
//!
//! One record per name: a second delete of a name keeps the later of the two holds
//! ([`merge`]). A record whose time has passed (and whose run, if any, no longer holds
//! the name) is dead weight that a prune deletes ([`crate::retention`]); when a prune
//! deletes a run's record, the records that pointed at the run keep its hold
//! ([`without_run`]).
//!
//! Memory and SQLite apply these functions; PostgreSQL does the same in the SQL of its
//! delete, purge and prune statements (one statement each, so that a concurrent enqueue's
//! snapshot sees either the task row or its tombstone, never neither).

use super::{RunState, TaskId, TaskState};
use crate::time::Timestamp;

/// The hold a deleted named task left on its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The name is taken until this time (exclusive: free again at it).
    pub taken_until: Timestamp,
    /// For a step of an iterative run: the run, which holds the name while it is live
    /// and for `window_ms` after it ends.
    pub run: Option<TaskId>,
    /// The task's tombstone window, in milliseconds (counted from the run's end).
    pub window_ms: i64,
}

/// What a deleted row looked like, for [`of_deleted`].
#[derive(Clone, Copy, Debug)]
pub struct Deleted<'a> {
    /// Its unique name, if it had one.
    pub name: Option<&'a str>,
    /// Its state when deleted.
    pub state: TaskState,
    /// When it ended, for a finished task.
    pub finished_at: Option<Timestamp>,
    /// Its tombstone window in milliseconds.
    pub window_ms: i64,
    /// The run it is a step of, with whether that run holds the name at `now` (live, or
    /// ended within the window), counting the deletion's own effect on the run.
    pub run: Option<(TaskId, bool)>,
}

/// The tombstone a deleted row leaves at `now`, or `None` when it leaves no hold (no
/// name, or a hold that has passed).
pub fn of_deleted(row: Deleted<'_>, now: Timestamp) -> Option<(String, Tombstone)> {
    let name = row.name?;
    let end = if row.state.is_live() {
        now
    } else {
        row.finished_at.unwrap_or(now)
    };
    let taken_until = Timestamp(end.0.saturating_add(row.window_ms.max(0)));
    let run = row.run.filter(|(_, holds)| *holds).map(|(run, _)| run);
    if taken_until <= now && run.is_none() {
        return None;
    }
    Some((
        name.to_string(),
        Tombstone {
            taken_until,
            run,
            window_ms: row.window_ms,
        },
    ))
}

/// The record kept when `new` is written for a name that already has `old`.
/// `old_run_end` is when `old`'s run ended, if it did: a run that the new record does not
/// keep leaves its hold in `taken_until`.
pub fn merge(old: Option<Tombstone>, old_run_end: Option<Timestamp>, new: Tombstone) -> Tombstone {
    let Some(old) = old else { return new };
    let mut taken_until = old.taken_until.max(new.taken_until);
    let (run, window_ms) = match (new.run, old.run) {
        (Some(run), Some(prev)) if run != prev => {
            if let Some(end) = old_run_end {
                taken_until = taken_until.max(Timestamp(end.0.saturating_add(old.window_ms)));
            }
            (Some(run), new.window_ms)
        }
        (Some(run), _) => (Some(run), new.window_ms),
        (None, prev) => (prev, old.window_ms),
    };
    Tombstone {
        taken_until,
        run,
        window_ms,
    }
}

/// The record kept when the run `t` points at is pruned (see [`crate::retention`]): the
/// hold the run gave the name (its end plus the window) is folded into `taken_until`, and
/// the record no longer points at a run. `run_end` is when the run ended.
pub fn without_run(t: Tombstone, run_end: Option<Timestamp>) -> Tombstone {
    let from_run = run_end.map(|end| Timestamp(end.0.saturating_add(t.window_ms.max(0))));
    Tombstone {
        taken_until: from_run.map_or(t.taken_until, |r| r.max(t.taken_until)),
        run: None,
        window_ms: t.window_ms,
    }
}

/// Whether `t` holds its name at `now`; `run` is the state and end of `t.run`, if it
/// still exists. A record that no longer holds its name is dead weight: a prune deletes it.
pub fn holds(t: &Tombstone, run: Option<(RunState, Option<Timestamp>)>, now: Timestamp) -> bool {
    t.taken_until > now
        || match run {
            Some((RunState::Running, _)) => true,
            Some((_, Some(end))) => end.0.saturating_add(t.window_ms) > now.0,
            _ => false,
        }
}

/// Whether a run in `state`, ended at `finished_at`, holds a name with a `window_ms`
/// tombstone at `now`.
pub fn run_holds(
    state: RunState,
    finished_at: Option<Timestamp>,
    window_ms: i64,
    now: Timestamp,
) -> bool {
    state == RunState::Running
        || finished_at.is_some_and(|end| end.0.saturating_add(window_ms) > now.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: TaskState, finished_at: Option<i64>) -> Deleted<'static> {
        Deleted {
            name: Some("n"),
            state,
            finished_at: finished_at.map(Timestamp),
            window_ms: 60_000,
            run: None,
        }
    }

    #[test]
    fn a_live_task_holds_its_name_for_the_window_from_the_delete() {
        for state in [TaskState::Pending, TaskState::Running] {
            let (name, t) = of_deleted(row(state, None), Timestamp(1_000)).expect("a hold");
            assert_eq!(name, "n");
            assert_eq!(t.taken_until, Timestamp(61_000));
            assert!(holds(&t, None, Timestamp(60_999)));
            assert!(!holds(&t, None, Timestamp(61_000)));
        }
    }

    #[test]
    fn a_finished_task_keeps_what_is_left_of_its_window() {
        let t = of_deleted(row(TaskState::Done, Some(20)), Timestamp(30_000));
        assert_eq!(t.map(|(_, t)| t.taken_until), Some(Timestamp(60_020)));
        assert_eq!(
            of_deleted(row(TaskState::Dead, Some(20)), Timestamp(60_020)),
            None
        );
    }

    #[test]
    fn unnamed_writes_nothing() {
        let mut r = row(TaskState::Pending, None);
        r.name = None;
        assert_eq!(of_deleted(r, Timestamp(0)), None);
    }

    #[test]
    fn a_step_of_a_live_run_keeps_the_run() {
        let mut r = row(TaskState::Done, Some(0));
        r.run = Some((TaskId(7), true));
        let (_, t) = of_deleted(r, Timestamp(500_000)).expect("held by the run");
        assert_eq!(t.run, Some(TaskId(7)));
        assert!(holds(
            &t,
            Some((RunState::Running, None)),
            Timestamp(900_000)
        ));
        let ended = Some((RunState::Done, Some(Timestamp(900_000))));
        assert!(holds(&t, ended, Timestamp(959_999)));
        assert!(!holds(&t, ended, Timestamp(960_000)));
        r.run = Some((TaskId(7), false));
        assert_eq!(of_deleted(r, Timestamp(500_000)), None);
    }

    #[test]
    fn a_pruned_run_leaves_its_hold_in_the_record() {
        let t = Tombstone {
            taken_until: Timestamp(100),
            run: Some(TaskId(7)),
            window_ms: 1_000,
        };
        let folded = without_run(t, Some(Timestamp(5_000)));
        assert_eq!(folded.taken_until, Timestamp(6_000));
        assert_eq!(folded.run, None);
        assert!(holds(&folded, None, Timestamp(5_999)));
        assert!(!holds(&folded, None, Timestamp(6_000)));
        // A record already holding longer keeps its time.
        let long = Tombstone {
            taken_until: Timestamp(9_000),
            ..t
        };
        assert_eq!(
            without_run(long, Some(Timestamp(5_000))).taken_until,
            Timestamp(9_000)
        );
    }

    #[test]
    fn merging_keeps_the_later_hold() {
        let t = |until: i64, run: Option<i64>| Tombstone {
            taken_until: Timestamp(until),
            run: run.map(TaskId),
            window_ms: 10,
        };
        assert_eq!(merge(None, None, t(5, None)), t(5, None));
        assert_eq!(merge(Some(t(9, None)), None, t(5, None)), t(9, None));
        assert_eq!(merge(Some(t(5, Some(1))), None, t(9, None)), t(9, Some(1)));
        // Another run replaces the old one, whose end-based hold is folded in.
        let m = merge(Some(t(5, Some(1))), Some(Timestamp(100)), t(9, Some(2)));
        assert_eq!(m, t(110, Some(2)));
    }
}
