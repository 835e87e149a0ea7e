//! What an attempt's result does to a task: decided here, once, for every store.
//!
//! The worker and the test harness ask this module what an attempt's result means; every
//! store turns the resulting [`Outcome`] into the same
//! [`Transition`] ([`Outcome::transition`]) and only persists it. No store decides a state,
//! a retry time, an attempt count or an error text by itself, so the three backends cannot
//! drift apart.
//!
//! The rules, in one list:
//! - `Ok` → done; an iterative step that used its time slice → done, and a continuation
//!   step of the same run is stored (due at once).
//! - A fatal error → failed, never retried; the run of an iterative step ends failed.
//! - Any other error, a panic, the hard deadline → the attempt is recorded with its error and
//!   the task is pending again after a backoff ([`TaskOptions::backoff_with_jitter`]), until
//!   `max_attempts` *and* the age limit are spent ([`TaskOptions::may_retry`]) → dead.
//! - A task name this worker does not register (a rolling deploy) → retried like any
//!   failure with the default options ([`TaskOptions::DEFAULT`]), the error naming the task
//!   and the worker; dead only when those are spent.
//! - An attempt still running past its hard deadline plus one lease (it never returns to
//!   the runtime: it blocks its thread) → given up by the worker, recorded like a hard
//!   deadline with that reason (`blocked`): retried, then dead.
//! - A row whose payload cannot be decoded → dead at once, with the reason: trying again
//!   cannot change stored bytes.
//! - A lapsed lease (the worker died or stalled) counts as an attempt ([`LEASE_LAPSED`]);
//!   when lapses alone have spent the retry policy the next claim sends the task dead
//!   without running it.
//! - A checkpoint of an iterative step resets the step's attempt count to
//!   [`ATTEMPTS_AFTER_CHECKPOINT`]: attempts count the tries at the current cursor.
//! - Graceful shutdown → released: pending again at once, the attempt not counted.
//! - An iterative step whose run has ended (cancelled, or finished by another step), or
//!   whose lease was lost, stops before it calls the task's function again → stopped
//!   ([`STOPPED`]): the step ends cancelled, no continuation is stored, nothing is retried.
//!   A store records any outcome of a step whose run has ended this way, so no step of an
//!   ended run is retried or continued whatever its worker reports.
//! - A person's cancel ([`Store::cancel`](crate::store::Store::cancel)): a pending task ends
//!   cancelled at once ([`CANCELLED_PENDING`]). A running one is marked: whatever its
//!   attempt then ends with (`Ok`, any error, a panic, the hard deadline, being stopped
//!   after the cancel grace, a release at shutdown), the store records the attempt as
//!   cancelled ([`Outcome::transition_cancelled`], [`CANCELLED`]), never a retry; and if its
//!   worker dies, any claim that finds its lease lapsed ends it cancelled instead of running
//!   it again, whatever its queue (paused, or not the claim's: nothing runs), and a cancel
//!   that finds the lease lapsed already does the same at once ([`CANCEL_LAPSED`]). The cancel decides once it is stored: an attempt recorded
//!   before it (done, or pending again for a retry) is not touched by it; a retry's pending
//!   task is then cancelled as a pending one.
//! - Every error text is made storable by [`storable_text`] before any store sees it.

use crate::error::TaskError;
use crate::store::{ClaimedTask, Outcome, RunState, TaskState};
use crate::task::{Completion, TaskOptions};
use crate::time::Timestamp;

/// The attempt label and error text a store records when it takes back a task whose lease
/// lapsed (the worker died or stalled), in the attempt history and as the task's last error.
pub const LEASE_LAPSED: (&str, &str) = (
    "lease lapsed",
    "the worker's lease lapsed (it died or stalled)",
);

/// The attempt label and error text of an iterative step that stopped because its run had
/// ended ([`Outcome::Stopped`]); every store records it for any outcome of such a step.
pub const STOPPED: (&str, &str) = (
    "stopped",
    "stopped: its iteration run had ended (cancelled, or finished by another step), so the step did not call the task's function again and is not retried",
);

/// The attempt label and error text of an attempt that ended after a person cancelled its
/// task ([`Outcome::transition_cancelled`]): the task ends cancelled, never retried. The
/// error goes on with what the attempt itself returned.
pub const CANCELLED: (&str, &str) = (
    "cancelled",
    "cancelled on request while it ran; not retried",
);

/// The `last_error` a pending task gets when a person cancels it before it ran.
pub const CANCELLED_PENDING: &str = "cancelled on request before it ran";

/// The attempt label and error text a claim records when it finds the lapsed lease of a
/// task a person cancelled while it ran (its worker died or stalled before it stopped): the
/// task ends cancelled with this error instead of being claimed again.
pub const CANCEL_LAPSED: (&str, &str) = (
    "lease lapsed",
    "cancelled on request while it ran; its worker's lease then lapsed (it died or stalled), so it was not run again",
);

/// The attempt count a checkpoint leaves on an iterative step: attempts count the tries at
/// the current cursor, so a long run that keeps moving is never sent to dead by failures
/// spread over many batches.
pub const ATTEMPTS_AFTER_CHECKPOINT: u32 = 1;

/// The longest error text a store records, in bytes; a longer one is cut at a character
/// boundary and marked, so that one huge message cannot bloat a row or a batch.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// What a store does to a task when it records an attempt's [`Outcome`]: plain data, the
/// same for every backend. Computed by [`Outcome::transition`].
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The task's new state.
    pub state: TaskState,
    /// The label of the attempt record: `done`, `failed`, `retry`, `dead`, `released`,
    /// `continued` or `stopped`.
    pub label: &'static str,
    /// The attempt's error, already made storable; when set it also becomes the task's
    /// `last_error` (which is otherwise kept).
    pub error: Option<String>,
    /// The task's new `run_at` when it is pending again; `None` keeps the old one.
    pub run_at: Option<Timestamp>,
    /// Whether the attempt counts: `false` (a release) takes the claim's increment back.
    pub counts: bool,
    /// Whether the task has ended: its `finished_at` becomes the time of the call.
    pub finished: bool,
    /// For a step of an iterative run: the state the run ends in, if it is still running.
    /// The run's error is [`Transition::error`].
    pub run_ends: Option<RunState>,
    /// For a step that used its time slice: when the continuation step (same task, queue,
    /// payload, priority and run; no unique name) is due. The run's `steps` goes up by one.
    pub continue_at: Option<Timestamp>,
}

impl Transition {
    /// Whether the transition makes work due that a waiting worker may claim (a retry, a
    /// release, a continuation): stores wake their waiters for it.
    pub fn wakes(&self) -> bool {
        self.state == TaskState::Pending || self.continue_at.is_some()
    }
}

impl Outcome {
    /// What recording this outcome at `now` does to the task: the one mapping every store
    /// persists.
    pub fn transition(&self, now: Timestamp) -> Transition {
        let base = Transition {
            state: TaskState::Done,
            label: self.label(),
            error: None,
            run_at: None,
            counts: true,
            finished: true,
            run_ends: None,
            continue_at: None,
        };
        match self {
            Outcome::Done => Transition {
                run_ends: Some(RunState::Done),
                ..base
            },
            Outcome::Continue { run_at } => Transition {
                continue_at: Some(*run_at),
                ..base
            },
            Outcome::Failed { error } => Transition {
                state: TaskState::Failed,
                error: Some(storable_text(error)),
                run_ends: Some(RunState::Failed),
                ..base
            },
            Outcome::Dead { error } => Transition {
                state: TaskState::Dead,
                error: Some(storable_text(error)),
                run_ends: Some(RunState::Dead),
                ..base
            },
            Outcome::Retry { error, run_at } => Transition {
                state: TaskState::Pending,
                error: Some(storable_text(error)),
                run_at: Some(*run_at),
                finished: false,
                ..base
            },
            Outcome::Release => Transition {
                state: TaskState::Pending,
                run_at: Some(now),
                counts: false,
                finished: false,
                ..base
            },
            // The run has ended already (or the lease is gone and nothing is written): the
            // run is left as it is.
            Outcome::Stopped => Transition {
                state: TaskState::Cancelled,
                error: Some(STOPPED.1.to_string()),
                ..base
            },
        }
    }

    /// What a store records for this outcome of an attempt whose task a person cancelled
    /// while it ran ([`Store::cancel`](crate::store::Store::cancel)): whatever the attempt
    /// returned, the task ends cancelled (never retried, released or continued), the
    /// attempt counts and is labelled [`CANCELLED`]`.0`, and its error is
    /// [`CANCELLED`]`.1` followed by what the attempt returned. Only the error depends on
    /// the outcome (the PostgreSQL store writes the rest as constants).
    pub fn transition_cancelled(&self, now: Timestamp) -> Transition {
        let _ = now;
        let returned = match self {
            Outcome::Done | Outcome::Continue { .. } => "the attempt returned Ok".to_string(),
            Outcome::Release => "the worker released it at shutdown".to_string(),
            Outcome::Stopped => "the attempt stopped".to_string(),
            Outcome::Failed { error } | Outcome::Retry { error, .. } | Outcome::Dead { error } => {
                format!("the attempt returned: {error}")
            }
        };
        Transition {
            state: TaskState::Cancelled,
            label: CANCELLED.0,
            error: Some(storable_text(&format!("{} ({returned})", CANCELLED.1))),
            run_at: None,
            counts: true,
            finished: true,
            run_ends: None,
            continue_at: None,
        }
    }

    /// What a store records for this outcome of a held attempt: [`Outcome::Stopped`]'s
    /// transition for a step whose run has ended (`run_ended`, see
    /// [`Outcome::transition_for_step`]), else [`Outcome::transition_cancelled`] when a
    /// person cancelled the task while it ran (`cancel_requested`), else this outcome's own
    /// [`Outcome::transition`].
    pub fn transition_held(
        &self,
        run_ended: bool,
        cancel_requested: bool,
        now: Timestamp,
    ) -> Transition {
        if run_ended {
            Outcome::Stopped.transition(now)
        } else if cancel_requested {
            self.transition_cancelled(now)
        } else {
            self.transition(now)
        }
    }

    /// The label of the attempt record: `done`, `failed`, `retry`, `dead`, `released`,
    /// `continued` or `stopped`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed { .. } => "failed",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Release => "released",
            Outcome::Continue { .. } => "continued",
            Outcome::Stopped => STOPPED.0,
        }
    }

    /// What a store records for this outcome of an iterative step whose run is no longer
    /// running (`run_ended`): [`Outcome::Stopped`]'s transition whatever the outcome, so
    /// that no step of an ended run is retried, released or continued. Otherwise this
    /// outcome's own [`Outcome::transition`].
    pub fn transition_for_step(&self, run_ended: bool, now: Timestamp) -> Transition {
        if run_ended {
            Outcome::Stopped.transition(now)
        } else {
            self.transition(now)
        }
    }

    /// The error this outcome records, if any (as given, before [`storable_text`]).
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Failed { error } | Outcome::Dead { error } | Outcome::Retry { error, .. } => {
                Some(error)
            }
            Outcome::Done | Outcome::Continue { .. } | Outcome::Release | Outcome::Stopped => None,
        }
    }
}

/// Makes a text storable the same way on every store: a NUL byte (which PostgreSQL's text
/// cannot hold) becomes U+FFFD, and a text over [`MAX_ERROR_BYTES`] is cut at a character
/// boundary with a note of how long it was.
pub fn storable_text(text: &str) -> String {
    let cut = if text.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Some(end)
    } else {
        None
    };
    let kept = &text[..cut.unwrap_or(text.len())];
    let mut out = if kept.contains('\0') {
        kept.replace('\0', "\u{FFFD}")
    } else {
        kept.to_string()
    };
    if cut.is_some() {
        out.push_str(&format!(
            " … (cut; the whole text was {} bytes)",
            text.len()
        ));
    }
    out
}

/// The outcome for a claimed task whose name no registered task has (a rolling deploy: a
/// newer version started it and an older worker claimed it): retried with backoff under
/// the default options, the error naming the task and the `worker`; dead once spent.
pub(crate) fn unknown_task(claimed: &ClaimedTask, worker: &str, now: Timestamp) -> Outcome {
    let error = TaskError::retry(format!(
        "no task named `{}` is registered in worker `{worker}` (renamed or removed, or a newer deploy started it and an older worker claimed it); retrying until a worker that knows it runs it",
        claimed.task
    ));
    decide(&TaskOptions::DEFAULT, claimed, Err(error), now)
}

/// Decides, before running a claimed task, whether it must not run: `Some(outcome)` when
/// its lapsed leases alone (the worker died or stalled each time) spent its retry policy.
pub(crate) fn before_run(
    options: &TaskOptions,
    claimed: &ClaimedTask,
    now: Timestamp,
) -> Option<Outcome> {
    if claimed.attempt > options.max_attempts
        && !options.may_retry(claimed.attempt - 1, claimed.enqueued_at, now)
    {
        return Some(Outcome::Dead {
            error: format!(
                "gave up after {} attempts: the last one's worker died or stalled (its lease lapsed)",
                claimed.attempt - 1
            ),
        });
    }
    None
}

/// The outcome the worker records for an attempt it stopped because its task was cancelled
/// ([`Store::cancel`](crate::store::Store::cancel)) and it did not return within the cancel
/// `grace`. The store records it, like any outcome of a cancelled task, as cancelled
/// ([`Outcome::transition_cancelled`]); fatal all the same, so it is never retried.
pub(crate) fn stopped_after_cancel(grace: std::time::Duration) -> Outcome {
    Outcome::Failed {
        error: format!(
            "stopped: it did not return within the worker's cancel grace of {grace:?} after it was told (ctx.is_cancelled())"
        ),
    }
}

/// The outcome of an attempt whose stored row (payload, filter or cursor) could not be
/// decoded: dead at once, since trying again cannot change stored bytes.
pub(crate) fn undecodable(reason: impl std::fmt::Display) -> Outcome {
    Outcome::Dead {
        error: reason.to_string(),
    }
}

/// The outcome of an attempt the worker gave up because it still ran past its hard deadline
/// (`options.timeout` plus `grace`) and one `lease`: it never returned to the runtime, so
/// it blocks its thread and the deadline's timer could not stop it. Recorded like a hard
/// deadline (retried, then dead), with a reason that says so.
pub(crate) fn blocked(
    options: &TaskOptions,
    claimed: &ClaimedTask,
    progressed: bool,
    grace: std::time::Duration,
    lease: std::time::Duration,
    now: Timestamp,
) -> Outcome {
    let error = TaskError::retry(format!(
        "hard deadline exceeded and the attempt did not stop: it ran past its {:?} timeout, {:?} of grace and a {:?} lease without returning to the runtime, so it blocks its thread (std::thread::sleep, blocking I/O or a long computation in async code; move that into tokio::task::spawn_blocking); the worker gave it up, though its thread may still be busy",
        options.timeout, grace, lease
    ));
    decide_attempt(options, claimed, Err(error), progressed, now)
}

/// Decides what an attempt's result means for the task, as the worker and the test harness
/// do: the retry policy. `claimed` is the task as its claim handed it out (its `attempt`
/// and `enqueued_at` count); `result` is what its code returned (a panic or the hard
/// deadline are retryable errors); `now` is when it ended. The [`Outcome`] is what the
/// worker hands to [`Store::finish`](crate::store::Store::finish): `Done`, `Continue`,
/// `Failed` for a fatal error, else `Retry` after the backoff while
/// [`TaskOptions::may_retry`] allows, and `Dead` naming the attempts made.
///
/// `progressed` is true when an iterative step checkpointed during the attempt: the store
/// reset its attempt count then, so the retry policy counts from
/// [`ATTEMPTS_AFTER_CHECKPOINT`].
pub fn decide_attempt(
    options: &TaskOptions,
    claimed: &ClaimedTask,
    result: Result<Completion, TaskError>,
    progressed: bool,
    now: Timestamp,
) -> Outcome {
    if result.is_err() && progressed {
        let at_cursor = ClaimedTask {
            attempt: ATTEMPTS_AFTER_CHECKPOINT,
            ..claimed.clone()
        };
        return decide(options, &at_cursor, result, now);
    }
    decide(options, claimed, result, now)
}

/// The retry policy for one attempt's result, at the claim's attempt number.
fn decide(
    options: &TaskOptions,
    claimed: &ClaimedTask,
    result: Result<Completion, TaskError>,
    now: Timestamp,
) -> Outcome {
    match result {
        Ok(Completion::Done) => Outcome::Done,
        Ok(Completion::Continue) => Outcome::Continue { run_at: now },
        Ok(Completion::Stopped) => Outcome::Stopped,
        Err(e) if e.is_fatal() => Outcome::Failed {
            error: e.message().to_string(),
        },
        Err(e) if options.may_retry(claimed.attempt, claimed.enqueued_at, now) => Outcome::Retry {
            error: e.message().to_string(),
            run_at: now.add(options.backoff_with_jitter(claimed.attempt)),
        },
        Err(e) => Outcome::Dead {
            error: format!(
                "gave up after {} attempts{}: {}",
                claimed.attempt,
                match options.age_limit {
                    Some(a) => format!(" and an age limit of {}s", a.as_secs()),
                    None => String::new(),
                },
                e.message()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Lease, TaskId};
    use std::time::Duration;

    fn claimed(attempt: u32) -> ClaimedTask {
        ClaimedTask {
            lease: Lease {
                id: TaskId(1),
                token: 1,
            },
            task: "app::gone".into(),
            queue: "default".into(),
            payload: serde_json::json!({}),
            attempt,
            enqueued_at: Timestamp(0),
            iteration: None,
            decode_error: None,
            run_at: Timestamp(0),
            trace: None,
        }
    }

    #[test]
    fn storable_text_replaces_nul_and_caps_length() {
        assert_eq!(storable_text("bin\0ary"), "bin\u{FFFD}ary");
        assert_eq!(storable_text("plain"), "plain");
        let long = "é".repeat(MAX_ERROR_BYTES); // 2 bytes each
        let s = storable_text(&long);
        assert!(s.len() < MAX_ERROR_BYTES + 100, "{}", s.len());
        assert!(s.ends_with(&format!("the whole text was {} bytes)", long.len())));
    }

    #[test]
    fn every_outcome_maps_to_one_transition() {
        let now = Timestamp(1_000);
        let t = Outcome::Retry {
            error: "x\0".into(),
            run_at: Timestamp(5_000),
        }
        .transition(now);
        assert_eq!(t.state, TaskState::Pending);
        assert_eq!(t.error.as_deref(), Some("x\u{FFFD}"));
        assert_eq!(t.run_at, Some(Timestamp(5_000)));
        assert!(t.counts && !t.finished && t.run_ends.is_none() && t.wakes());

        let t = Outcome::Release.transition(now);
        assert_eq!(
            (t.state, t.label, t.run_at, t.counts),
            (TaskState::Pending, "released", Some(now), false)
        );

        let t = Outcome::Continue { run_at: now }.transition(now);
        assert_eq!(
            (t.state, t.finished, t.continue_at, t.run_ends),
            (TaskState::Done, true, Some(now), None)
        );
        assert!(t.wakes());

        for (o, s, r) in [
            (Outcome::Done, TaskState::Done, RunState::Done),
            (
                Outcome::Failed { error: "f".into() },
                TaskState::Failed,
                RunState::Failed,
            ),
            (
                Outcome::Dead { error: "d".into() },
                TaskState::Dead,
                RunState::Dead,
            ),
        ] {
            let t = o.transition(now);
            assert_eq!(
                (t.state, t.run_ends, t.finished, t.wakes()),
                (s, Some(r), true, false)
            );
        }
    }

    #[test]
    fn a_step_of_an_ended_run_is_stopped_whatever_its_outcome() {
        let now = Timestamp(1_000);
        let stopped = Outcome::Stopped.transition(now);
        assert_eq!(
            (stopped.state, stopped.label, stopped.error.as_deref()),
            (TaskState::Cancelled, STOPPED.0, Some(STOPPED.1))
        );
        // What the PostgreSQL store writes for such a step as scalars rests on these.
        assert!(stopped.counts && stopped.finished && !stopped.wakes());
        assert_eq!(
            (stopped.run_at, stopped.run_ends, stopped.continue_at),
            (None, None, None)
        );
        for o in [
            Outcome::Continue { run_at: now },
            Outcome::Retry {
                error: "e".into(),
                run_at: now,
            },
            Outcome::Release,
            Outcome::Done,
            Outcome::Failed { error: "f".into() },
        ] {
            assert_eq!(o.transition_for_step(true, now), stopped, "{o:?}");
            assert_eq!(o.transition_for_step(false, now), o.transition(now));
        }
    }

    #[test]
    fn a_cancelled_attempt_ends_cancelled_whatever_it_returned() {
        let now = Timestamp(1_000);
        let outcomes = [
            Outcome::Done,
            Outcome::Retry {
                error: "flaky".into(),
                run_at: Timestamp(9_000),
            },
            Outcome::Failed { error: "f".into() },
            Outcome::Dead { error: "d".into() },
            Outcome::Release,
        ];
        for o in outcomes {
            let t = o.transition_held(false, true, now);
            assert_eq!(
                (t.state, t.label, t.counts, t.finished, t.wakes()),
                (TaskState::Cancelled, CANCELLED.0, true, true, false),
                "{o:?}"
            );
            assert_eq!((t.run_at, t.run_ends, t.continue_at), (None, None, None));
            assert!(t
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(CANCELLED.1)));
            // A step of an ended run stays stopped; without a cancel, the outcome decides.
            assert_eq!(
                o.transition_held(true, true, now),
                Outcome::Stopped.transition(now)
            );
            assert_eq!(o.transition_held(false, false, now), o.transition(now));
        }
        let t = Outcome::Retry {
            error: "flaky".into(),
            run_at: now,
        }
        .transition_cancelled(now);
        assert!(t.error.as_deref().is_some_and(|e| e.contains("flaky")));
    }

    #[test]
    fn an_unknown_task_is_retried_with_backoff_then_dead() {
        let now = Timestamp(10_000);
        match unknown_task(&claimed(1), "w-1", now) {
            Outcome::Retry { error, run_at } => {
                assert!(
                    error.contains("`app::gone`") && error.contains("`w-1`"),
                    "{error}"
                );
                assert!(run_at > now);
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        let last = TaskOptions::DEFAULT.max_attempts;
        assert!(matches!(
            unknown_task(&claimed(last), "w-1", now),
            Outcome::Dead { .. }
        ));
    }

    #[test]
    fn lapsed_leases_alone_can_spend_the_policy() {
        let o = TaskOptions {
            max_attempts: 3,
            ..TaskOptions::DEFAULT
        };
        let now = Timestamp(0);
        assert!(before_run(&o, &claimed(3), now).is_none());
        assert!(matches!(
            before_run(&o, &claimed(4), now),
            Some(Outcome::Dead { .. })
        ));
    }

    #[test]
    fn progress_counts_attempts_from_the_checkpoint() {
        let o = TaskOptions {
            max_attempts: 3,
            min_backoff: Duration::from_millis(1),
            ..TaskOptions::DEFAULT
        };
        let err = || Err(TaskError::retry("boom"));
        let now = Timestamp(0);
        assert!(matches!(
            decide_attempt(&o, &claimed(3), err(), false, now),
            Outcome::Dead { .. }
        ));
        assert!(matches!(
            decide_attempt(&o, &claimed(3), err(), true, now),
            Outcome::Retry { .. }
        ));
    }
}
