//! What the stores keep of periodic tasks ([`crate::schedule`]): the schedule rows, and
//! the one write that fires a tick. The policy (next ticks, catch-up) is
//! `crate::schedule`'s; the stores only persist.

use serde::{Deserialize, Serialize};

use super::{check_name_pub as check_name, NewTask, StoreError, TaskId};
use crate::schedule::CatchUp;
use crate::time::Timestamp;

/// A schedule to create or update ([`Store::upsert_schedules`](super::Store::upsert_schedules)).
#[derive(Clone, Debug, PartialEq)]
pub struct NewSchedule {
    /// Its name, unique in the store (a declared task's schedule is named after the task).
    pub name: String,
    /// The registered name of the task each tick starts.
    pub task: String,
    /// The queue of those tasks.
    pub queue: String,
    /// Their priority.
    pub priority: i32,
    /// Their arguments: a JSON object keyed by parameter name.
    pub payload: serde_json::Value,
    /// The cron expression.
    pub cron: String,
    /// Its IANA time zone.
    pub timezone: String,
    /// What becomes of missed ticks.
    pub catch_up: CatchUp,
    /// Whether it comes from `#[task(cron = ..)]` (else from a [`crate::schedule::Schedule`]).
    pub declared: bool,
    /// The first tick, used when the schedule is new or its expression or time zone
    /// changed; otherwise the stored next tick stays.
    pub next_tick: Timestamp,
}

/// A stored schedule, as [`Store::schedules`](super::Store::schedules) lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// Its name.
    pub name: String,
    /// The registered name of the task each tick starts.
    pub task: String,
    /// The queue of those tasks.
    pub queue: String,
    /// Their priority.
    pub priority: i32,
    /// Their arguments (a JSON object keyed by parameter name).
    pub payload: serde_json::Value,
    /// The cron expression.
    pub cron: String,
    /// Its IANA time zone.
    pub timezone: String,
    /// What becomes of missed ticks.
    pub catch_up: CatchUp,
    /// Paused: no tick fires; resuming moves the next tick to the first after the resume.
    pub paused: bool,
    /// From `#[task(cron = ..)]` rather than registered at run time.
    pub declared: bool,
    /// The last worker that started did not know the task (it was renamed or removed):
    /// no worker of that binary fires it. The schedule is kept until removed.
    pub task_missing: bool,
    /// The next tick to fire (in the store's time, milliseconds since the epoch).
    pub next_tick: Timestamp,
    /// The last tick fired, if any.
    pub last_tick: Option<Timestamp>,
    /// The task the last fire started (the newest when it started several).
    pub last_task: Option<TaskId>,
}

/// One fire of a schedule ([`Store::fire_schedule`](super::Store::fire_schedule)): move
/// its next tick from `expected` to `next_tick` and store `tasks`, atomically, only if the
/// schedule is not paused and its next tick is still `expected`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fire {
    /// The schedule.
    pub name: String,
    /// The next tick the firing worker read: the compare of the compare-and-set.
    pub expected: Timestamp,
    /// The new next tick.
    pub next_tick: Timestamp,
    /// The tick fired last (stored as the schedule's last tick), `None` when every due
    /// tick was dropped.
    pub last_tick: Option<Timestamp>,
    /// The tasks to store (possibly none).
    pub tasks: Vec<NewTask>,
}

/// Checks a schedule's names as every store's do their task and queue names (and that
/// its own name is not empty), and its
/// arguments as [`check_new_tasks`](super::check_new_tasks) does a payload (nested at most
/// [`MAX_DEPTH`](crate::value::MAX_DEPTH) levels, at most
/// [`MAX_PAYLOAD_BYTES`](crate::value::MAX_PAYLOAD_BYTES) of JSON).
pub(crate) fn check_new_schedule(s: &NewSchedule) -> Result<(), StoreError> {
    check_name("schedule name", &s.name)?;
    if s.name.is_empty() {
        // The CLI and the console name a schedule to act on it; "" names none.
        return Err(StoreError::InvalidValue(
            "a schedule name must not be empty".into(),
        ));
    }
    check_name("task name", &s.task)?;
    check_name("queue name", &s.queue)?;
    check_name("cron expression", &s.cron)?;
    check_name("time zone", &s.timezone)?;
    if !s.payload.is_object() {
        return Err(StoreError::InvalidValue(format!(
            "the arguments of schedule `{}` must be a JSON object keyed by parameter name, not `{}`",
            s.name, s.payload
        )));
    }
    // As a task's payload at enqueue: else every tick's enqueue would refuse them, and a
    // database store could not read the row back (serde_json's nesting limit).
    let what = || format!("the arguments of schedule `{}`", s.name);
    super::check_depth(what, &s.payload)?;
    super::check_size(what, &s.payload, false)
}
