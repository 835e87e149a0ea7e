//! Retention: how long finished tasks are kept, decided here, once, for every store.
//!
//! No store decides by itself what may be deleted: each one reads the queues' settings,
//! asks [`plan`] for the [`Rule`]s that hold at `now`, and only runs the deletes (memory:
//! `store/memory/retention.rs`, SQLite: `store/sqlite/retention.rs`, PostgreSQL:
//! `store/postgres/retention.rs`).
//!
//! The rules, in one list:
//! - A task that is **done or cancelled** is kept for [`Retention::done`] after it finished
//!   (default [`DEFAULT_DONE`], 24 hours); one that is **failed or dead** for
//!   [`Retention::failed`] (default [`DEFAULT_FAILED`], 7 days). Both count from the task's
//!   `finished_at`: it is kept while `finished_at + keep > now` and prunable from
//!   `finished_at + keep` exactly. `None` keeps it for ever.
//! - **Pending and running tasks are never pruned**, however old (a running task whose
//!   lease lapsed is still running: the next claim takes it back). A failed or dead task
//!   put back with `retry` is pending again and kept.
//! - **Per queue**: [`QueueConfig::retention`](crate::QueueConfig::retention), saved with
//!   the queue's other settings by `configure_queue`, so every worker and every prune call
//!   of a store agrees; `None` there means the defaults, [`Retention::OFF`] keeps that
//!   queue's tasks for ever.
//! - **Attempts** go with their task, in the same transaction.
//! - **Iterative runs**: each step of a run is a task of its own, kept by its own state
//!   and end (a step that handed over to a continuation is done at the handover). The
//!   run's progress record goes with *the step that ended the run*: it is kept for the
//!   retention of the run's final state (done and cancelled, or failed and dead) from the
//!   run's end, and never while a step of the run is still stored.
//! - **Names**: a pruned named task keeps its name taken until its tombstone window ends,
//!   whatever its retention: its row goes, and a tombstone
//!   ([`tombstone`](crate::store::tombstone)) holds the name for the rest of the window
//!   (nothing is written when the window has already passed, the usual case with the
//!   default 1-hour window). A pruned run's record folds the hold it gave its name into
//!   the tombstones that pointed at it ([`tombstone::without_run`](crate::store::tombstone::without_run)).
//!   Tombstones whose hold has passed are pruned too.
//! - **Who prunes**: every [`Worker`](crate::Worker), about every [`PRUNE_INTERVAL`]
//!   (jittered; [`WorkerBuilder::prune`](crate::WorkerBuilder::prune) turns it off for a
//!   worker), and [`Queue::prune`](crate::Queue::prune). A prune deletes at most
//!   [`PRUNE_BATCH`] rows per transaction, so it never holds a long lock; on PostgreSQL
//!   one process prunes at a time and the others skip (`PruneReport::busy`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{RunState, TaskState};
use crate::time::Timestamp;

/// How long a done or cancelled task is kept after it finished, by default: 24 hours.
pub const DEFAULT_DONE: Duration = Duration::from_secs(24 * 3600);

/// How long a failed or dead task is kept after it finished, by default: 7 days.
pub const DEFAULT_FAILED: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many rows a prune deletes per transaction: 1,000.
pub const PRUNE_BATCH: usize = 1000;

/// How often a worker prunes: every minute, each wait scaled by a random factor between
/// 0.75 and 1.25 so that workers started together spread out (the first prune comes one
/// such wait after the worker starts).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// How long finished tasks are kept, by the way they ended. `None` in a field keeps those
/// tasks for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// How long a done or cancelled task is kept after it finished (default 24 hours).
    pub done: Option<Duration>,
    /// How long a failed or dead task is kept after it finished (default 7 days).
    pub failed: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::DEFAULT
    }
}

impl Retention {
    /// The defaults: done and cancelled tasks kept 24 hours, failed and dead 7 days.
    pub const DEFAULT: Retention = Retention {
        done: Some(DEFAULT_DONE),
        failed: Some(DEFAULT_FAILED),
    };

    /// Keep every finished task for ever (retention off).
    pub const OFF: Retention = Retention {
        done: None,
        failed: None,
    };

    /// How long tasks of `class` are kept (`None`: for ever).
    pub fn keep(&self, class: Class) -> Option<Duration> {
        match class {
            Class::Done => self.done,
            Class::Failed => self.failed,
        }
    }
}

/// The two kinds of ended tasks, each with its own retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Done or cancelled.
    Done,
    /// Failed or dead.
    Failed,
}

impl Class {
    /// Both classes.
    pub const ALL: [Class; 2] = [Class::Done, Class::Failed];

    /// The task states of this class.
    pub fn states(self) -> [TaskState; 2] {
        match self {
            Class::Done => [TaskState::Done, TaskState::Cancelled],
            Class::Failed => [TaskState::Failed, TaskState::Dead],
        }
    }

    /// The run states of this class.
    pub fn run_states(self) -> [RunState; 2] {
        match self {
            Class::Done => [RunState::Done, RunState::Cancelled],
            Class::Failed => [RunState::Failed, RunState::Dead],
        }
    }

    /// The class of a task state; `None` for a live one (never pruned).
    pub fn of(state: TaskState) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.states().contains(&state))
    }

    /// The class of a run state; `None` for a running run (never pruned).
    pub fn of_run(state: RunState) -> Option<Class> {
        Class::ALL
            .into_iter()
            .find(|c| c.run_states().contains(&state))
    }
}

/// Which queues a [`Rule`] covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Queues {
    /// These queues only.
    Only(Vec<String>),
    /// Every queue but these (the queues that keep the defaults).
    Except(Vec<String>),
}

impl Queues {
    /// Whether `queue` is covered.
    pub fn contains(&self, queue: &str) -> bool {
        match self {
            Queues::Only(q) => q.iter().any(|x| x == queue),
            Queues::Except(q) => !q.iter().any(|x| x == queue),
        }
    }

    /// The names listed (covered for `Only`, left out for `Except`).
    pub fn names(&self) -> &[String] {
        match self {
            Queues::Only(q) | Queues::Except(q) => q,
        }
    }
}

/// One delete a prune runs: the tasks of `class` in `queues` that finished at or before
/// `finished_by` (and the run records of that class that ended then, once no step of
/// theirs is left).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Done and cancelled, or failed and dead.
    pub class: Class,
    /// Prunable when `finished_at <= finished_by` (that is, `finished_at + keep <= now`).
    pub finished_by: Timestamp,
    /// The queues it covers.
    pub queues: Queues,
}

impl Rule {
    /// Whether a row of `queue`, in a state of `class`, ended at `finished_at`, is prunable
    /// under this rule.
    pub fn covers(&self, queue: &str, class: Class, finished_at: Timestamp) -> bool {
        self.class == class && finished_at <= self.finished_by && self.queues.contains(queue)
    }
}

/// The rules that hold at `now`, given the queues whose settings override the defaults
/// (`overrides`: queue name and its [`Retention`]). Queues that keep a class for ever get
/// no rule for it; a queue whose override equals the defaults is pruned with the others.
pub fn plan(overrides: &[(String, Retention)], now: Timestamp) -> Vec<Rule> {
    let mut rules = Vec::new();
    for class in Class::ALL {
        let default = Retention::DEFAULT.keep(class);
        // Queues whose keep for this class differs from the default, grouped by keep.
        let mut groups: Vec<(Option<Duration>, Vec<String>)> = Vec::new();
        for (queue, r) in overrides {
            let keep = r.keep(class);
            if keep == default {
                continue;
            }
            match groups.iter_mut().find(|(k, _)| *k == keep) {
                Some((_, qs)) => qs.push(queue.clone()),
                None => groups.push((keep, vec![queue.clone()])),
            }
        }
        let mut except: Vec<String> = groups.iter().flat_map(|(_, q)| q.clone()).collect();
        except.sort();
        if let Some(keep) = default {
            rules.push(Rule {
                class,
                finished_by: now.sub(keep),
                queues: Queues::Except(except),
            });
        }
        groups.sort_by(|a, b| a.1.cmp(&b.1));
        for (keep, mut queues) in groups {
            let Some(keep) = keep else { continue };
            queues.sort();
            rules.push(Rule {
                class,
                finished_by: now.sub(keep),
                queues: Queues::Only(queues),
            });
        }
    }
    rules
}

/// Whether a task row is prunable under `rules`: ended (in a state of a class) and covered
/// by a rule of that class. Pending and running tasks never are.
pub fn prunable(
    rules: &[Rule],
    queue: &str,
    state: TaskState,
    finished_at: Option<Timestamp>,
) -> bool {
    match (Class::of(state), finished_at) {
        (Some(class), Some(end)) => rules.iter().any(|r| r.covers(queue, class, end)),
        _ => false,
    }
}

/// The two database columns a queue's retention is stored in (`keep_done_ms`,
/// `keep_failed_ms`): both `NULL` for the defaults; otherwise milliseconds, with `-1` for
/// "for ever". A duration beyond `i64::MAX` ms is kept as that.
pub fn to_columns(r: Option<&Retention>) -> (Option<i64>, Option<i64>) {
    let col = |d: Option<Duration>| match d {
        Some(d) => d.as_millis().min(i64::MAX as u128) as i64,
        None => -1,
    };
    match r {
        None => (None, None),
        Some(r) => (Some(col(r.done)), Some(col(r.failed))),
    }
}

/// The retention stored in the two columns of [`to_columns`]. A column left `NULL` beside a
/// set one (never written by taskq) reads as the default of its class.
pub fn from_columns(done: Option<i64>, failed: Option<i64>) -> Option<Retention> {
    if done.is_none() && failed.is_none() {
        return None;
    }
    let field = |v: Option<i64>, default: Option<Duration>| match v {
        None => default,
        Some(ms) if ms < 0 => None,
        Some(ms) => Some(Duration::from_millis(ms as u64)),
    };
    Some(Retention {
        done: field(done, Retention::DEFAULT.done),
        failed: field(failed, Retention::DEFAULT.failed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000_000_000);
    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn the_defaults_are_a_day_and_a_week() {
        assert_eq!(Retention::default().done, Some(H * 24));
        assert_eq!(Retention::default().failed, Some(H * 24 * 7));
        let rules = plan(&[], NOW);
        assert_eq!(
            rules,
            vec![
                Rule {
                    class: Class::Done,
                    finished_by: NOW.sub(H * 24),
                    queues: Queues::Except(vec![]),
                },
                Rule {
                    class: Class::Failed,
                    finished_by: NOW.sub(H * 24 * 7),
                    queues: Queues::Except(vec![]),
                },
            ]
        );
        // Kept until `finished_at + keep`, exactly.
        let end = NOW.sub(H * 24);
        assert!(prunable(&rules, "q", TaskState::Done, Some(end)));
        assert!(!prunable(
            &rules,
            "q",
            TaskState::Done,
            Some(Timestamp(end.0 + 1))
        ));
        assert!(prunable(&rules, "q", TaskState::Cancelled, Some(end)));
        assert!(!prunable(&rules, "q", TaskState::Dead, Some(end)));
    }

    #[test]
    fn live_tasks_are_never_prunable() {
        let rules = plan(&[], NOW);
        for state in [TaskState::Pending, TaskState::Running] {
            assert!(!prunable(&rules, "q", state, Some(Timestamp(0))));
            assert!(!prunable(&rules, "q", state, None));
        }
    }

    #[test]
    fn overrides_get_their_own_rules_and_leave_the_default_one() {
        let short = Retention {
            done: Some(H),
            failed: Some(H * 24 * 7),
        };
        let overrides = vec![
            ("b".to_string(), short),
            ("off".to_string(), Retention::OFF),
            ("a".to_string(), short),
        ];
        let rules = plan(&overrides, NOW);
        assert_eq!(
            rules,
            vec![
                Rule {
                    class: Class::Done,
                    finished_by: NOW.sub(H * 24),
                    queues: Queues::Except(vec!["a".into(), "b".into(), "off".into()]),
                },
                Rule {
                    class: Class::Done,
                    finished_by: NOW.sub(H),
                    queues: Queues::Only(vec!["a".into(), "b".into()]),
                },
                // `a` and `b` keep failed tasks the default week: pruned with the others.
                Rule {
                    class: Class::Failed,
                    finished_by: NOW.sub(H * 24 * 7),
                    queues: Queues::Except(vec!["off".into()]),
                },
            ]
        );
        assert!(!prunable(
            &rules,
            "off",
            TaskState::Done,
            Some(Timestamp(0))
        ));
        assert!(prunable(&rules, "a", TaskState::Done, Some(NOW.sub(H))));
    }

    #[test]
    fn columns_round_trip() {
        for r in [
            None,
            Some(Retention::DEFAULT),
            Some(Retention::OFF),
            Some(Retention {
                done: Some(Duration::ZERO),
                failed: None,
            }),
        ] {
            let (d, f) = to_columns(r.as_ref());
            assert_eq!(from_columns(d, f), r);
        }
        let huge = Retention {
            done: Some(Duration::MAX),
            failed: None,
        };
        assert_eq!(to_columns(Some(&huge)), (Some(i64::MAX), Some(-1)));
        // A huge keep saturates instead of wrapping the cutoff.
        let rules = plan(&[("q".into(), huge)], NOW);
        assert!(!prunable(&rules, "q", TaskState::Done, Some(Timestamp(0))));
    }
}
