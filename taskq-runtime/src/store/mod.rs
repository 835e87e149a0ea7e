//! The storage contract: one small, semantic [`Store`] trait and its three backends.
//!
//! A store keeps tasks, their attempts, queue settings and iteration runs. Every method
//! that depends on the time takes `now` from the caller, so the same store runs on the
//! wall clock in a worker and on virtual time in the test harness. A store that many hosts
//! share keeps a clock of its own ([`Store::clock`]; PostgreSQL: the database server's),
//! and callers on real time read it, so every `now` and every time derived from it (due
//! times, lease ends, backoff, token-bucket refills, tombstone windows) is in that one
//! clock however far the hosts' wall clocks are off (the budget is in [`Clock`]).
//!
//! Rules every backend follows (the conformance suite in `tests/` checks them):
//! - [`Store::enqueue`] is all-or-nothing: one unique-name conflict stores nothing.
//! - [`Store::claim`] hands each due task to one caller at a time, with a fresh lease token
//!   (a fencing token); the attempt counter goes up at claim time.
//! - Every lease-bound call ([`Store::heartbeat`], [`Store::finish`], [`Store::checkpoint`])
//!   checks `(id, token, state = running)` and changes nothing when the lease was lost.
//! - A task whose lease lapsed is claimable again, and the lapse is recorded as an attempt.
//! - [`Store::claim`] takes tasks in one order, across every queue it covers, limited or
//!   not: priority (high first), then `run_at`, then id; a queue with limits gives at most
//!   its allowance ([`admission`]), and the others go on.
//! - Deleting a named task (delete, purge, prune) leaves a tombstone ([`tombstone`]) that
//!   keeps its name taken for the rest of its window.
//! - What [`Store::prune`] may delete is decided by [`crate::retention`]; the stores only
//!   run the deletes, in small batches.
//! - A step of an iterative run acts only while its run is running, checked atomically
//!   with the write (PostgreSQL: under the run's row lock): [`Store::checkpoint`] and
//!   [`Store::confirm`] answer `LeaseLost` once the run has ended, and [`Store::finish`]
//!   records any outcome of such a step as [`Outcome::Stopped`] (cancelled, no
//!   continuation, no retry). [`Store::cancel_iteration`] cancels the run and every live
//!   step of it at once, so once it returns no step of the run is live and none can be
//!   stored.
//!
//! - [`Store::cancel`] ends a pending task cancelled at once and marks a running one
//!   (`cancel_requested`); the mark is reported by [`Store::renew`], turns any outcome
//!   [`Store::finish`] records for that attempt into a cancel
//!   ([`Outcome::transition_held`]), and makes the claim that finds its lease lapsed end
//!   the task cancelled ([`policy::CANCEL_LAPSED`](crate::policy::CANCEL_LAPSED)) instead
//!   of taking it.
//!
//! # Values
//!
//! Payloads, filters and cursors are JSON values that every backend hands back
//! bit-identical (see [`crate::value`] for the rules users see). The database stores keep
//! each as exact JSON text (SQLite `TEXT`, PostgreSQL `json`, never `jsonb`, which rewrites
//! numbers and refuses `\u0000`) and decode it themselves, row by row:
//! - [`Store::enqueue`] and [`Store::checkpoint`] refuse, the same way on every store, a
//!   value nested deeper than [`MAX_DEPTH`](crate::value::MAX_DEPTH) levels and a task
//!   name, queue or unique name holding a NUL byte or longer than
//!   [`MAX_NAME_BYTES`](crate::value::MAX_NAME_BYTES), with [`StoreError::InvalidValue`]
//!   (one shared check, [`check_new_tasks`] / [`check_checkpoint`]); nothing is stored.
//!   The queue management calls refuse such a queue name the same way
//!   ([`check_queue_name`]).
//! - A stored row that does not decode (edited by hand, or written by another version)
//!   never fails a call about other rows: [`Store::claim`] hands it out with
//!   [`ClaimedTask::decode_error`] set (the worker sends it dead with that reason), and the
//!   management calls show the undecodable value as its raw text in a JSON string.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::time::{Clock, Timestamp};

pub use schedule::{Fire, NewSchedule, ScheduleInfo};

pub mod admission;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod schedule;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod tombstone;
mod url;

pub use url::StoreUrl;

/// The identifier of a task (and, for an iterative task, of its run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub i64);

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for TaskId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(TaskId)
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for its `run_at` (first run, a delay, or a retry after backoff).
    Pending,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Finished with `Ok`.
    Done,
    /// Ended by a fatal error; never retried.
    Failed,
    /// Out of attempts and age, or undecodable, or of an unknown task name.
    Dead,
    /// Cancelled by a person ([`Queue::cancel`](crate::Queue::cancel): a pending task, a running one
    /// through its worker, or an iteration run), or a step of a run that had ended.
    Cancelled,
}

impl TaskState {
    /// Every state, in display order.
    pub const ALL: [TaskState; 6] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Dead,
        TaskState::Cancelled,
    ];

    /// The lowercase name stored in databases and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Whether the task can still run (pending or running).
    pub fn is_live(self) -> bool {
        matches!(self, TaskState::Pending | TaskState::Running)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s.trim())
            .ok_or_else(|| {
                format!("unknown task state `{s}`; expected one of: pending, running, done, failed, dead, cancelled")
            })
    }
}

/// A task to be stored by [`Store::enqueue`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    /// The registered task name (`module::fn` by default).
    pub task: String,
    /// The queue it runs on.
    pub queue: String,
    /// The task's arguments as a JSON object keyed by parameter name.
    pub payload: serde_json::Value,
    /// Higher runs first among due tasks of the same queues.
    pub priority: i32,
    /// Not claimable before this time.
    pub run_at: Timestamp,
    /// A de-duplication name: refused while a task of this name is live or inside its
    /// tombstone window.
    pub unique_name: Option<String>,
    /// How long a finished task's unique name stays taken.
    pub tombstone: Duration,
    /// Set for the first step of an iterative run: creates the run's progress record.
    pub iteration: Option<NewIteration>,
    /// The trace context of the code that started the task: a W3C `traceparent` value
    /// (`00-{32 hex trace id}-{16 hex span id}-{2 hex flags}`), stored with the task and
    /// handed back by every claim of it ([`ClaimedTask::trace`]) and its continuation
    /// steps, so each attempt's span joins the starter's trace (see [`crate::trace`]).
    /// `None`: no trace context. At most
    /// [`MAX_NAME_BYTES`](crate::value::MAX_NAME_BYTES), no NUL byte.
    pub trace: Option<String>,
}

/// The iteration record created with an iterative task's first step.
#[derive(Clone, Debug, PartialEq)]
pub struct NewIteration {
    /// The model's filter, as JSON (also kept inside the payload).
    pub filter: serde_json::Value,
}

/// What [`Store::claim`] is asked for.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// Queues to claim from; empty means every queue.
    pub queues: Vec<String>,
    /// Who claims (shown in each attempt's [`AttemptInfo::worker`]).
    pub worker: String,
    /// How many tasks at most.
    pub limit: usize,
    /// The lease each claimed task gets; renewed by [`Store::heartbeat`].
    pub lease: Duration,
    /// The caller's time.
    pub now: Timestamp,
}

/// Proof of holding a task: its id and the fencing token handed out by the claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The task.
    pub id: TaskId,
    /// The token of this claim; any later claim of the same task has another one.
    pub token: i64,
}

/// A task handed to a worker by [`Store::claim`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedTask {
    /// The lease to present when finishing.
    pub lease: Lease,
    /// The registered task name.
    pub task: String,
    /// Its queue.
    pub queue: String,
    /// Its arguments.
    pub payload: serde_json::Value,
    /// This attempt's number, starting at 1 (lapsed leases count).
    pub attempt: u32,
    /// When the task was (last) put into the queue: first start, or a retry from dead.
    /// The age limit is measured from here.
    pub enqueued_at: Timestamp,
    /// For a step of an iterative run: the run's state when this step was claimed.
    pub iteration: Option<IterationCursor>,
    /// Set when this row's stored payload or cursor does not decode (the row was edited
    /// by hand, or written by another version of taskq): why, for people. The worker
    /// sends such a task dead with this reason without running it; `payload` then holds
    /// the raw text as a JSON string and the cursor is `None`. Always `None` on the
    /// memory store.
    pub decode_error: Option<String>,
    /// When the task was due: its stored `run_at` (when it was started, its delay or ETA,
    /// or the end of a retry's backoff). A task taken back after its lease lapsed keeps
    /// the `run_at` of its earlier claim. The worker measures the start-to-run latency
    /// from here ([`crate::metrics::START_TO_RUN`]).
    pub run_at: Timestamp,
    /// The trace context stored with the task when it was started ([`NewTask::trace`]).
    pub trace: Option<String>,
}

/// Where an iterative run stands, as a step sees it when claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct IterationCursor {
    /// The run (the id of its first step).
    pub run: TaskId,
    /// The key of the last processed entity; `None` before the first batch.
    pub cursor: Option<serde_json::Value>,
    /// Entities processed so far.
    pub processed: u64,
    /// Batches processed so far.
    pub batches: u64,
    /// The model's total count, once known.
    pub total: Option<u64>,
}

/// A checkpoint written after each batch of an iterative step, atomically with the lease
/// check: the new cursor and the progress it made.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The key of the last entity of the batch.
    pub cursor: serde_json::Value,
    /// Entities in the batch, added to the run's count (which saturates at [`MAX_COUNT`]).
    pub processed: u64,
    /// Set when the model could count the run's entities; kept up to [`MAX_COUNT`].
    pub total: Option<u64>,
}

/// The largest count a store keeps for an iteration run's `processed` and `total`: what a
/// database integer (`i64`) holds. A larger total is kept as this, and `processed` stops
/// here instead of overflowing, the same on every store.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// How an attempt ended, as recorded by [`Store::finish`].
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Success: the task is done (for an iterative step: the whole run is done).
    Done,
    /// A fatal error: failed, never retried.
    Failed {
        /// The error, for people.
        error: String,
    },
    /// A retryable error: pending again at `run_at`.
    Retry {
        /// The error, for people.
        error: String,
        /// When to run again (after backoff).
        run_at: Timestamp,
    },
    /// No more tries: dead, with the reason.
    Dead {
        /// Why.
        error: String,
    },
    /// Graceful shutdown: pending again at once; the attempt does not count.
    Release,
    /// An iterative step used its time slice: this step is done and a continuation step of
    /// the same run is stored, due at `run_at`, in the same transaction.
    Continue {
        /// When the continuation is due.
        run_at: Timestamp,
    },
    /// An iterative step stopped before calling the user's function again, because its
    /// run had ended (cancelled, or finished by another step) or its lease was lost: the
    /// step ends cancelled with [`policy::STOPPED`](crate::policy::STOPPED)'s reason, no
    /// continuation is stored and nothing is retried; the run is left as it is. A store
    /// records this for any outcome of a step whose run has ended.
    Stopped,
}

/// One finished attempt for [`Store::finish`].
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// The lease of the attempt.
    pub lease: Lease,
    /// How it ended.
    pub outcome: Outcome,
    /// When the attempt began running.
    pub started_at: Timestamp,
}

/// Counts and settings of one queue.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// Number of tasks in each state (states with no task are absent or zero).
    pub counts: Vec<(TaskState, u64)>,
    /// Whether claims from it are paused.
    pub paused: bool,
    /// Its settings.
    pub config: QueueConfig,
}

impl QueueInfo {
    /// The count for one state.
    pub fn count(&self, state: TaskState) -> u64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == state)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
}

/// Settings of a queue, enforced by [`Store::claim`] across every worker of a store.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueConfig {
    /// Sustained claims per second (token bucket refill); `None` = unlimited.
    pub rate: Option<f64>,
    /// Bucket size: how many claims may happen at once after idling. Defaults to
    /// `max(1, rate)` when a rate is set.
    pub burst: Option<u32>,
    /// At most this many tasks of the queue running at once; `None` = unlimited.
    pub max_concurrent: Option<u32>,
    /// How long the queue's finished tasks are kept before a prune deletes them; `None` =
    /// the defaults ([`Retention::DEFAULT`](crate::retention::Retention::DEFAULT): done
    /// and cancelled 24 hours, failed and dead 7 days, from when each finished);
    /// `Some(Retention::OFF)` keeps them for ever. See [`crate::retention`].
    #[serde(default)]
    pub retention: Option<crate::retention::Retention>,
}

/// What [`Store::prune`] removed.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PruneReport {
    /// Tasks removed (with their attempts), by the state they were in: done, failed, dead
    /// or cancelled. States with none removed are absent.
    pub tasks: Vec<(TaskState, u64)>,
    /// Progress records of iterative runs removed.
    pub runs: u64,
    /// Tombstones removed because their hold on a name had passed.
    pub tombstones: u64,
    /// PostgreSQL only: the prune stopped early because another process was pruning the
    /// same store at that moment (it removes the same rows); what this call removed before
    /// that is counted above.
    pub busy: bool,
}

impl PruneReport {
    /// How many tasks in `state` were removed.
    pub fn count(&self, state: TaskState) -> u64 {
        self.tasks
            .iter()
            .find(|(s, _)| *s == state)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    /// How many tasks were removed in all.
    pub fn total_tasks(&self) -> u64 {
        self.tasks.iter().map(|(_, n)| *n).sum()
    }

    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.total_tasks() == 0 && self.runs == 0 && self.tombstones == 0
    }

    /// Adds `n` removed tasks in `state` (a store's bookkeeping).
    pub fn add(&mut self, state: TaskState, n: u64) {
        if n == 0 {
            return;
        }
        match self.tasks.iter_mut().find(|(s, _)| *s == state) {
            Some((_, m)) => *m += n,
            None => {
                self.tasks.push((state, n));
                self.tasks.sort();
            }
        }
    }
}

/// Which tasks [`Store::list_tasks`] returns, newest first.
///
/// Listings page by key: pass the last id of a page as `before` to get the next one.
/// Every store reads a page through an index whatever filters are given (queue, state,
/// task name, any of them together): a page costs about `limit` rows (on the SQL stores,
/// pending or running tasks of one queue cost at most that queue's live tasks) however
/// long the history is; and it leaves payloads out unless `with_payload` asks for them.
/// The arguments' filter ([`TaskQuery::args_contains`]) is checked on the rows that read
/// gives, so it costs more (see there).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<TaskState>,
    /// Only this task name.
    pub task: Option<String>,
    /// Only tasks with an id below this (for paging).
    pub before: Option<TaskId>,
    /// At most this many (0 means 100).
    pub limit: usize,
    /// Whether to return each task's payload. Default `false`: [`TaskInfo::payload`] is
    /// `null` and the store does not read payloads at all (a page of large payloads
    /// costs what a page of small ones does). [`Store::task`] always returns it.
    pub with_payload: bool,
    /// Only tasks whose arguments contain this text. Matched the same way on every
    /// store, against the payload's JSON text as stored: compact JSON as `serde_json`
    /// writes it (no spaces; object keys sorted by name, or in insertion order where
    /// serde_json's `preserve_order` feature is on; `"`, `\` and control characters
    /// escaped, every other character as it is), so
    /// `to":"ada@` matches the task started with `to = "ada@example.org"`. The match is
    /// case-sensitive and literal, character for character: `%`, `_` and `\` are no
    /// wildcards (the SQL stores use `instr` (SQLite) and `strpos` (PostgreSQL), not
    /// `LIKE`, so there is nothing to escape). An empty text matches every task; a text
    /// with a NUL character matches none (JSON text escapes it as `\u0000`). A payload
    /// that does not decode is matched on its raw stored text. `None` (the default): no
    /// filter.
    ///
    /// This filter reads payloads: a page costs the rows the other filters select,
    /// newest first, until `limit` of them match (at worst every such row; retention
    /// keeps that bounded).
    pub args_contains: Option<String>,
}

/// One task as the management API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Its id.
    pub id: TaskId,
    /// Registered task name.
    pub task: String,
    /// Queue.
    pub queue: String,
    /// State.
    pub state: TaskState,
    /// Arguments (the JSON object of the task's arguments). `null` in a listing that
    /// did not ask for payloads ([`TaskQuery::with_payload`]).
    pub payload: serde_json::Value,
    /// Priority.
    pub priority: i32,
    /// Attempts made so far (since the last retry from dead).
    pub attempts: u32,
    /// The de-duplication name, if any.
    pub unique_name: Option<String>,
    /// When it was first stored.
    pub created_at: Timestamp,
    /// When it was last put into the queue (start, or retry from dead).
    pub enqueued_at: Timestamp,
    /// When it is (or was) due.
    pub run_at: Timestamp,
    /// When it reached done, failed, dead or cancelled.
    pub finished_at: Option<Timestamp>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The run it is a step of, for iterative tasks.
    pub run: Option<TaskId>,
    /// The worker holding it, while running.
    pub worker: Option<String>,
    /// Until when that worker's lease holds.
    pub lease_until: Option<Timestamp>,
    /// Whether a person cancelled the task while it ran ([`Store::cancel`]): its worker is
    /// told and stops it, and it ends cancelled. Stays set on the cancelled task.
    #[serde(default)]
    pub cancel_requested: bool,
}

/// What [`Store::cancel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelOutcome {
    /// The task was pending, or running with its lease lapsed (its worker is gone): it is
    /// cancelled now and will not run.
    Cancelled,
    /// The task was running: the cancel is stored; its worker is told
    /// (`ctx.is_cancelled()`) at its next lease renewal (sooner where the store can notify,
    /// [`Store::wait_for_cancel`]), stops it after its cancel grace, and the task ends
    /// cancelled whatever the attempt returns.
    Requested,
    /// The task is running and its cancel was requested before: nothing changed (a second
    /// cancel, counted once in the metrics). `already_requested` in JSON.
    #[serde(rename = "already_requested")]
    AlreadyRequested,
}

/// What [`Store::renew`] answers: the leases it could not extend and, among those it did,
/// the tasks a person cancelled while they ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Ids whose lease was lost (nothing was extended for them).
    pub lost: Vec<TaskId>,
    /// Ids whose lease was extended and whose task has a cancel requested
    /// ([`TaskInfo::cancel_requested`]): the worker tells them to stop.
    pub cancel_requested: Vec<TaskId>,
}

/// One attempt of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptInfo {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Who ran it.
    pub worker: String,
    /// When it began.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// `done`, `failed`, `retry`, `dead`, `released`, `continued`, `stopped` or `lease lapsed`.
    pub outcome: String,
    /// The error, if it had one.
    pub error: Option<String>,
}

/// A task with its whole history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The task.
    pub info: TaskInfo,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptInfo>,
}

/// State of an iterative run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Steps are still to run.
    Running,
    /// Every entity was processed.
    Done,
    /// A step failed fatally.
    Failed,
    /// A step ran out of attempts.
    Dead,
    /// A person cancelled it.
    Cancelled,
}

impl RunState {
    /// The lowercase name stored in databases.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Dead => "dead",
            RunState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(RunState::Running),
            "done" => Ok(RunState::Done),
            "failed" => Ok(RunState::Failed),
            "dead" => Ok(RunState::Dead),
            "cancelled" => Ok(RunState::Cancelled),
            other => Err(format!("unknown run state `{other}`")),
        }
    }
}

/// Progress of an iterative run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IterationInfo {
    /// The run's id (its first step's task id).
    pub run: TaskId,
    /// The iterative task's name.
    pub task: String,
    /// The queue its steps run on.
    pub queue: String,
    /// The model filter.
    pub filter: serde_json::Value,
    /// The key of the last processed entity.
    pub cursor: Option<serde_json::Value>,
    /// Entities processed (an entity of a redone batch counts again).
    pub processed: u64,
    /// Batches processed.
    pub batches: u64,
    /// Steps (task executions) so far, the current one included.
    pub steps: u64,
    /// The model's total count, when it gives one.
    pub total: Option<u64>,
    /// State.
    pub state: RunState,
    /// When the run was started.
    pub started_at: Timestamp,
    /// When progress was last recorded.
    pub updated_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The error that ended it, if any.
    pub error: Option<String>,
}

impl IterationInfo {
    /// Percentage done, where the model gave a total.
    pub fn percent(&self) -> Option<f64> {
        match (self.total, self.state) {
            (_, RunState::Done) => Some(100.0),
            (Some(0), _) => Some(100.0),
            (Some(t), _) => Some((self.processed as f64 * 100.0 / t as f64).min(100.0)),
            (None, _) => None,
        }
    }
}

/// How many tasks finished in one minute, by how they ended: an entry of
/// [`Store::finished_per_minute`] (and of [`Queue::throughput`](crate::Queue::throughput),
/// which the console's throughput chart draws).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FinishedMinute {
    /// The minute's start: a multiple of 60,000 ms since the Unix epoch (minutes are
    /// aligned to the epoch, so UTC minutes).
    pub minute: Timestamp,
    /// Tasks that ended done in it.
    pub done: u64,
    /// Tasks that ended failed (a fatal error) in it.
    pub failed: u64,
    /// Tasks that ended dead (out of attempts or age, undecodable, unknown name) in it.
    pub dead: u64,
}

/// Milliseconds in a minute: the bucket of [`FinishedMinute`].
pub const MINUTE_MS: i64 = 60_000;

impl FinishedMinute {
    /// The start of the minute that holds `t` (floored, also before 1970).
    pub fn minute_of(t: Timestamp) -> Timestamp {
        Timestamp(t.0.div_euclid(MINUTE_MS).saturating_mul(MINUTE_MS))
    }

    /// Sorts `(minute start, state, count)` rows a store read into minutes, oldest first
    /// (states other than done, failed and dead are ignored).
    pub(crate) fn tally(rows: impl IntoIterator<Item = (Timestamp, TaskState, u64)>) -> Vec<Self> {
        let mut by_minute: std::collections::BTreeMap<Timestamp, FinishedMinute> =
            std::collections::BTreeMap::new();
        for (minute, state, n) in rows {
            let m = by_minute.entry(minute).or_insert(FinishedMinute {
                minute,
                ..FinishedMinute::default()
            });
            match state {
                TaskState::Done => m.done += n,
                TaskState::Failed => m.failed += n,
                TaskState::Dead => m.dead += n,
                _ => {}
            }
        }
        by_minute.into_values().collect()
    }
}

/// Errors of the storage layer. Its `Debug` form is its message.
#[derive(thiserror::Error)]
pub enum StoreError {
    /// A unique task name is live or inside its tombstone window.
    #[error("a task named `{0}` already exists (it is live or finished within its tombstone window); pick another name or wait")]
    AlreadyExists(String),
    /// The store URL could not be understood.
    #[error("bad store URL `{url}`: {reason}")]
    BadUrl {
        /// The URL given, its password (if any) replaced by `***`.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The database holds a newer schema than this build knows.
    #[error("the store's schema is version {found}, newer than version {known} that this taskq knows; upgrade taskq before opening it")]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// No such task, run or queue.
    #[error("{0} not found")]
    NotFound(String),
    /// The operation does not apply to the task's state.
    #[error("{0}")]
    Conflict(String),
    /// The lease is no longer held (it lapsed and another worker claimed the task, or a
    /// person deleted or cancelled it).
    #[error("lease on task {0} lost: another worker holds it now, or it was deleted or cancelled")]
    LeaseLost(TaskId),
    /// A value no store can hold faithfully, refused before anything was stored: a
    /// payload, filter or cursor nested deeper than
    /// [`MAX_DEPTH`](crate::value::MAX_DEPTH) levels, or a task name, queue or unique name
    /// with a NUL byte or longer than [`MAX_NAME_BYTES`](crate::value::MAX_NAME_BYTES).
    /// The message says which and why; it is the same on every store.
    #[error("{0}")]
    InvalidValue(String),
    /// The backend failed (I/O, connection, SQL).
    #[error("store backend error: {0}")]
    Backend(String),
}

crate::error::debug_as_display!(StoreError);

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    /// Whether trying again later may succeed (connection trouble, a busy database).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// Refuses a name the databases cannot hold: PostgreSQL text cannot contain a NUL byte,
/// and its indexes cannot hold a name longer than
/// [`MAX_NAME_BYTES`](crate::value::MAX_NAME_BYTES), so no store accepts either (the same
/// error everywhere).
fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    check_name_pub(what, name)
}

/// [`check_name`] for the other modules of `store` (schedules).
pub(crate) fn check_name_pub(what: &str, name: &str) -> Result<(), StoreError> {
    let max = crate::value::MAX_NAME_BYTES;
    if name.len() > max {
        let mut head = 40;
        while !name.is_char_boundary(head) {
            head -= 1;
        }
        return Err(StoreError::InvalidValue(format!(
            "the {what} {:?}… is {} bytes long; a store keeps names of at most {max} bytes (taskq_runtime::value::MAX_NAME_BYTES)",
            &name[..head],
            name.len()
        )));
    }
    if name.contains('\0') {
        return Err(StoreError::InvalidValue(format!(
            "the {what} {name:?} contains a NUL byte, which PostgreSQL cannot store in text; taskq refuses it on every store"
        )));
    }
    Ok(())
}

/// Refuses a stored document nested deeper than [`MAX_DEPTH`](crate::value::MAX_DEPTH):
/// every store must be able to read back what it accepted.
fn check_depth(what: impl FnOnce() -> String, v: &serde_json::Value) -> Result<(), StoreError> {
    let depth = crate::value::depth(v);
    if depth > crate::value::MAX_DEPTH {
        return Err(StoreError::InvalidValue(format!(
            "{} nests arrays and objects {depth} levels deep; a store keeps values nested at most {} levels (taskq_runtime::value::MAX_DEPTH), so that it can read back what it accepted",
            what(),
            crate::value::MAX_DEPTH
        )));
    }
    Ok(())
}

/// Refuses a stored document larger than
/// [`MAX_PAYLOAD_BYTES`](crate::value::MAX_PAYLOAD_BYTES) of JSON, naming its largest
/// member (an argument of a payload; inside `args` for an iterative task's payload).
fn check_size(
    what: impl FnOnce() -> String,
    v: &serde_json::Value,
    is_payload: bool,
) -> Result<(), StoreError> {
    let max = crate::value::MAX_PAYLOAD_BYTES;
    let size = crate::value::json_len(v);
    if size <= max {
        return Ok(());
    }
    // The largest member, one level into `args` when that is the largest (an iterative
    // task's payload wraps its arguments there).
    fn largest(v: &serde_json::Value) -> Option<(String, usize, &serde_json::Value)> {
        v.as_object().and_then(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), crate::value::json_len(v), v))
                .max_by_key(|(_, n, _)| *n)
        })
    }
    let part = largest(v).map(|(k, n, inner)| match (k.as_str(), largest(inner)) {
        ("args", Some((arg, m, _))) if is_payload => format!(" (argument `{arg}` is {m} bytes)"),
        _ if is_payload => format!(" (argument `{k}` is {n} bytes)"),
        _ => format!(" (`{k}` is {n} bytes)"),
    });
    Err(StoreError::InvalidValue(format!(
        "{} is {size} bytes of JSON{}; a store keeps values of at most {max} bytes (taskq_runtime::value::MAX_PAYLOAD_BYTES): keep large data elsewhere and pass its key",
        what(),
        part.unwrap_or_default()
    )))
}

/// The one check every backend's [`Store::enqueue`] makes before storing anything: no
/// NUL byte in a task name, queue or unique name, no payload or filter nested deeper
/// than [`MAX_DEPTH`](crate::value::MAX_DEPTH) or larger than
/// [`MAX_PAYLOAD_BYTES`](crate::value::MAX_PAYLOAD_BYTES) of JSON. Fails with
/// [`StoreError::InvalidValue`] naming the first offending task (by its position in the
/// call and its name), and for a payload too large, its largest argument and the sizes.
pub fn check_new_tasks(tasks: &[NewTask]) -> Result<(), StoreError> {
    for (i, t) in tasks.iter().enumerate() {
        check_name("task name", &t.task)?;
        check_name("queue name", &t.queue)?;
        if let Some(n) = &t.unique_name {
            check_name("unique name", n)?;
        }
        if let Some(c) = &t.trace {
            check_name("trace context", c)?;
        }
        let payload = || format!("the payload of task #{i} (`{}`)", t.task);
        check_depth(payload, &t.payload)?;
        check_size(payload, &t.payload, true)?;
        if let Some(it) = &t.iteration {
            let filter = || format!("the filter of task #{i} (`{}`)", t.task);
            check_depth(filter, &it.filter)?;
            check_size(filter, &it.filter, false)?;
        }
    }
    Ok(())
}

/// The check every backend's [`Store::configure_queue`], [`Store::set_paused`] and
/// [`Store::purge`] make on the queue name, as [`check_new_tasks`] does for a task's
/// queue: no NUL byte and at most [`MAX_NAME_BYTES`](crate::value::MAX_NAME_BYTES), or
/// [`StoreError::InvalidValue`].
pub fn check_queue_name(queue: &str) -> Result<(), StoreError> {
    check_name("queue name", queue)
}

/// The check every backend's [`Store::replace_pending`] makes, as [`check_new_tasks`]
/// does for a new task's unique name and payload ([`StoreError::InvalidValue`]).
pub fn check_replacement(name: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
    check_name("unique name", name)?;
    let what = || format!("the payload replacing that of `{name}`");
    check_depth(what, payload)?;
    check_size(what, payload, true)
}

/// The check every backend's [`Store::checkpoint`] makes before storing a cursor: nested
/// at most [`MAX_DEPTH`](crate::value::MAX_DEPTH) levels and at most
/// [`MAX_PAYLOAD_BYTES`](crate::value::MAX_PAYLOAD_BYTES) of JSON, or
/// [`StoreError::InvalidValue`].
pub fn check_checkpoint(lease: Lease, cp: &Checkpoint) -> Result<(), StoreError> {
    let cursor = || format!("the cursor of step {}", lease.id);
    check_depth(cursor, &cp.cursor)?;
    check_size(cursor, &cp.cursor, false)
}

/// Decodes JSON text a database store read back, or says why it does not decode.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode_stored(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_str(text)
}

/// Stored JSON text for the management calls: the value, or, when it does not decode, the
/// raw text as a JSON string, so that one bad row never fails a listing.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn stored_or_raw(text: &str) -> serde_json::Value {
    decode_stored(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// Why the stored `what` (payload, cursor) of task `id` does not decode (`e`: the JSON
/// error, or what else is wrong with the stored value), for [`ClaimedTask::decode_error`]
/// and the dead task's error.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode_failure(what: &str, id: i64, e: &dyn std::fmt::Display) -> String {
    format!(
        "the stored {what} of task {id} does not decode ({e}): the row was edited by hand or written by another version of taskq"
    )
}

/// The storage contract every backend implements.
///
/// It is semantic: claim, finish, heartbeat, checkpoint and the management queries. Each
/// backend keeps its SQL beside itself. Backends must be cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name of the backend: `memory`, `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// The clock of a store that hosts share, when it keeps one: PostgreSQL's is the
    /// database server's clock as this process estimates it
    /// ([`RemoteClock`](crate::time::RemoteClock)). `None`, the default (memory and SQLite,
    /// which one host uses), means the caller's clock decides. A worker or
    /// [`Queue`](crate::Queue) given a real clock reads this one instead, and one given a
    /// virtual clock keeps it ([`Clock::for_store`]); the store itself always takes the
    /// caller's `now`. A store that wraps another should return the inner store's clock.
    fn clock(&self) -> Option<Clock> {
        None
    }

    /// Stores tasks, all or none, and returns their ids in order. Values and names are
    /// checked first by [`check_new_tasks`] ([`StoreError::InvalidValue`]). A task with a
    /// `unique_name` that is live, or finished within its tombstone window, or deleted
    /// within its window (see [`tombstone`]), or named twice in `tasks`, fails the whole
    /// call with [`StoreError::AlreadyExists`], naming the first such task in `tasks`
    /// (taken, or repeating an earlier one's name). The name of an iterative run is taken while
    /// the run is live, and its window counts from the run's end. A name is free again at
    /// the window's end exactly (taken while `end + window > now`).
    async fn enqueue(&self, tasks: Vec<NewTask>, now: Timestamp)
        -> Result<Vec<TaskId>, StoreError>;

    /// Claims up to `limit` due tasks: pending with `run_at <= now`, or running with a
    /// lapsed lease (`lease_until <= now`) (recorded as a `lease lapsed` attempt). Honours paused queues, each
    /// queue's `max_concurrent` and its token bucket (the rules of [`admission`]). Orders by
    /// priority (high first), then `run_at`, then id, across every queue it covers, limited
    /// or not; a queue whose allowance is spent is passed over and the others go on.
    /// Claimed tasks become running with a new token, `attempts + 1`, and
    /// `lease_until = now + lease`.
    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError>;

    /// Extends the leases still held to `until`; returns the ids whose lease was lost.
    async fn heartbeat(
        &self,
        leases: &[Lease],
        worker: &str,
        until: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError>;

    /// [`Store::heartbeat`] that also says which of the renewed tasks a person cancelled
    /// while they ran ([`Store::cancel`]), in the same call: what the worker's lease
    /// renewal calls. The default calls [`Store::heartbeat`] and reports no cancel (a
    /// store that keeps cancels must override it; a store that wraps another should
    /// forward it).
    async fn renew(
        &self,
        leases: &[Lease],
        worker: &str,
        until: Timestamp,
    ) -> Result<Renewal, StoreError> {
        Ok(Renewal {
            lost: self.heartbeat(leases, worker, until).await?,
            cancel_requested: Vec::new(),
        })
    }

    /// Records finished attempts, each atomically with its state change (and, for an
    /// iterative step, with its run's state). Returns one entry per input: `Ok` if applied,
    /// `Err(LeaseLost)` if that lease was no longer held (nothing changed for it). Entries
    /// apply in order: a lease listed twice applies once, and the continuation steps of
    /// [`Outcome::Continue`] entries are stored (and get their ids) in the batch's order.
    /// A held step whose run is no longer running is recorded as [`Outcome::Stopped`]
    /// whatever its outcome ([`Outcome::transition_for_step`]): no continuation, no retry.
    /// A held task a person cancelled while it ran ([`Store::cancel`]) is recorded as
    /// cancelled whatever its outcome ([`Outcome::transition_cancelled`]).
    async fn finish(
        &self,
        finished: Vec<Finish>,
        worker: &str,
        now: Timestamp,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    /// Records an iterative step's progress after a batch, atomically with the lease check.
    /// A cursor nested deeper than [`MAX_DEPTH`](crate::value::MAX_DEPTH) is refused with
    /// [`StoreError::InvalidValue`] ([`check_checkpoint`]).
    /// Progress also sets the task's attempt count to 1: an iterative step's attempts count
    /// the tries at its current cursor, so a long run that keeps moving is never sent to
    /// dead by failures spread over many batches.
    async fn checkpoint(
        &self,
        lease: Lease,
        checkpoint: Checkpoint,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Whether the attempt under `lease` may go on: `Ok(())` while it holds its task
    /// (running under this token) and, for a step of an iterative run, the run is still
    /// running; [`StoreError::LeaseLost`] otherwise. Reads only. The step runner asks it
    /// before it calls the user's function on a step's first batch (each later batch is
    /// confirmed by the checkpoint of the one before), so a run cancelled after its step
    /// was claimed does not call the function again.
    async fn confirm(&self, lease: Lease) -> Result<(), StoreError>;

    /// The earliest `run_at` of pending tasks (or lease expiry of running ones) in these
    /// queues (all if empty), ignoring paused queues. The harness uses it to move time.
    async fn next_due(&self, queues: &[String]) -> Result<Option<Timestamp>, StoreError>;

    /// Waits until a task may have become due in these queues, or `timeout` passes.
    /// Backends with notifications (memory, LISTEN/NOTIFY) return early on new work;
    /// the default just sleeps.
    async fn wait_for_work(&self, queues: &[String], timeout: Duration) {
        let _ = queues;
        tokio::time::sleep(timeout).await;
    }

    // ---- management -------------------------------------------------------------------

    /// Every queue that has tasks or settings, by name, with counts by state (states with
    /// no task left out). The counts are exact and cost what the number of queues does,
    /// never a read of the whole history: kept with the rows (memory, SQLite), or for
    /// PostgreSQL counted through an index for pending and running tasks and kept with
    /// the rows for finished ones.
    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError>;
    /// Saves a queue's settings (creating the queue if needed).
    async fn configure_queue(&self, queue: &str, config: QueueConfig) -> Result<(), StoreError>;
    /// Pauses or resumes claims from a queue (creating the queue if needed).
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError>;
    /// Deletes every pending task of a queue; returns how many. An iterative run whose
    /// pending step is purged ends as cancelled (its error says so). A purged named task
    /// keeps its name taken for its tombstone window from `now` ([`tombstone`]).
    async fn purge(&self, queue: &str, now: Timestamp) -> Result<u64, StoreError>;
    /// Lists tasks, newest first, a page of at most `query.limit` after the key
    /// `query.before`, payloads left out unless `query.with_payload` (see [`TaskQuery`]).
    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskInfo>, StoreError>;
    /// One task with every attempt.
    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError>;
    /// Makes a pending task due now. `NotFound` if absent, `Conflict` if not pending.
    async fn run_now(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError>;
    /// Deletes a task in any state (a running one's worker then loses its lease). Deleting
    /// the live step of an iterative run ends the run as cancelled (its error says so).
    /// A deleted named task keeps its name taken ([`tombstone`]): a live one for its
    /// tombstone window from `now`, a finished one for what is left of its window, a step
    /// of a run while the run is live and for the window after it ends.
    async fn delete(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError>;
    /// Puts a dead or failed task back to pending, due now, with its attempt count reset
    /// and `enqueued_at = now`; its attempt history is kept. For a step of an iterative
    /// run, the run becomes running again.
    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError>;

    /// Progress of one iterative run.
    async fn iteration(&self, run: TaskId) -> Result<Option<IterationInfo>, StoreError>;
    /// Iterative runs, newest first, at most `limit`.
    async fn iterations(&self, limit: usize) -> Result<Vec<IterationInfo>, StoreError>;
    /// Cancels a running iterative run and, in the same transaction, every live step of
    /// it: a pending step is cancelled, a running one loses its lease (its worker's next
    /// checkpoint, confirm, heartbeat or finish is refused). A step handing over at the
    /// same moment either finished first, and its continuation is cancelled here, or is
    /// refused. Once this returns, no step of the run is live and none can be stored.
    /// `NotFound` for an unknown run, `Conflict` for one that is not running.
    async fn cancel_iteration(&self, run: TaskId, now: Timestamp) -> Result<(), StoreError>;

    /// Cancels a task that is not a step of an iterative run, atomically with reading its
    /// state:
    /// - pending: it ends cancelled now (`finished_at = now`, `last_error` is
    ///   [`policy::CANCELLED_PENDING`](crate::policy::CANCELLED_PENDING)), no attempt is
    ///   recorded; [`CancelOutcome::Cancelled`];
    /// - running: it is marked (`cancel_requested`, reported by [`Store::renew`], and waking
    ///   [`Store::wait_for_cancel`]); its attempt's outcome is then recorded as cancelled
    ///   whatever it is, and any claim that finds its lease lapsed (whatever the claim's
    ///   queues, paused ones included) ends it cancelled instead of taking it;
    ///   [`CancelOutcome::Requested`] ([`CancelOutcome::AlreadyRequested`] for a second
    ///   cancel: nothing changes);
    /// - running with its lease lapsed at `now` (its worker died or stalled): it ends
    ///   cancelled now, the lapse recorded as its attempt
    ///   ([`policy::CANCEL_LAPSED`](crate::policy::CANCEL_LAPSED)); [`CancelOutcome::Cancelled`].
    ///
    /// An attempt whose outcome was recorded before the cancel keeps it: a task already
    /// done is refused, one pending again for a retry is cancelled as pending.
    ///
    /// Errors: [`StoreError::NotFound`] for an unknown id; [`StoreError::Conflict`] for a
    /// finished task (done, failed, dead or cancelled) and for a step of an iterative run
    /// (cancel its run with [`Store::cancel_iteration`]:
    /// [`Queue::cancel`](crate::Queue::cancel) does that).
    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<CancelOutcome, StoreError>;

    /// Waits until a cancel of a running task may have been requested in this store
    /// ([`Store::cancel`]), or forever: the worker then renews its leases at once, and so
    /// learns of the cancel before its next scheduled renewal. Memory and SQLite wake on
    /// cancels made through the same store value (SQLite: in this process; other
    /// processes learn at their next renewal), PostgreSQL on a `NOTIFY taskq_cancel` from
    /// any process. The default never completes.
    async fn wait_for_cancel(&self) {
        std::future::pending::<()>().await
    }

    /// Deletes what retention no longer keeps at `now` ([`crate::retention`]): finished
    /// tasks past their queue's retention, with their attempts (a named one leaves a
    /// tombstone while its window lasts), run records that went with the step that ended
    /// them, and tombstones whose hold has passed. Never a pending or running task.
    /// Deletes at most `batch` rows (0 means [`PRUNE_BATCH`](crate::retention::PRUNE_BATCH))
    /// per transaction, and repeats until nothing prunable is left; returns what it
    /// removed. On PostgreSQL one process prunes a store at a time: a call that finds
    /// another one pruning stops and says so ([`PruneReport::busy`]).
    async fn prune(&self, now: Timestamp, batch: usize) -> Result<PruneReport, StoreError>;

    /// Retries those of `ids` that are dead or failed, each as [`Store::retry`] does
    /// (pending, due at `now`, attempts reset, `enqueued_at = now`, a step's run running
    /// again), and returns how many. The others are left as they are, without an error:
    /// absent, in another state, listed a second time, or whose unique name another live
    /// task holds. Fails only on a backend error (then, on the SQL stores, none of the
    /// batch is retried). Callers pass small batches
    /// ([`Queue::retry_matching`](crate::Queue::retry_matching) passes
    /// [`RETRY_BATCH`](crate::queue::RETRY_BATCH)): SQLite retries them in one
    /// transaction, PostgreSQL in one statement that locks their rows in id order. The
    /// default calls [`Store::retry`] for each.
    async fn retry_many(&self, ids: &[TaskId], now: Timestamp) -> Result<u64, StoreError> {
        let mut retried = 0;
        for id in ids {
            match self.retry(*id, now).await {
                Ok(()) => retried += 1,
                Err(StoreError::NotFound(_) | StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(retried)
    }
    /// Tasks that ended done, failed or dead with `since <= finished_at < until`, counted by
    /// the minute of their finish time ([`FinishedMinute::minute_of`]), oldest minute
    /// first; minutes with none are left out. It reads the rows' finish times through the
    /// (state, finish time) index retention uses, so it costs the rows in the window, never
    /// the history. A task retried from dead or failed is counted again when it ends
    /// again (its finish time is its last end); rows already pruned are not counted (the
    /// default retention keeps a day of done tasks, so the last hour is whole unless a
    /// queue keeps less).
    async fn finished_per_minute(
        &self,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<FinishedMinute>, StoreError>;

    /// The newest task (highest id) whose de-duplication name is `name` and that holds
    /// it at `now` by itself: pending or running, or finished with `finished_at` plus its
    /// tombstone window after `now`. `None` when no stored task does (a deleted task's
    /// tombstone, or a live iterative run whose named first step has ended, may still hold
    /// the name). Used to name the holder of a refused unique key ([`crate::unique`]).
    async fn unique_holder(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<(TaskId, TaskState)>, StoreError>;

    /// Sets the payload and due time (`run_at`) of the pending task whose de-duplication
    /// name is `name` (not a step of an iterative run) and returns its id, atomically: a
    /// task claimed meanwhile is not changed (`None`), as is a name no pending task has.
    /// Id, priority, attempts and `enqueued_at` stay. Workers waiting for work are woken
    /// (the due time may have come closer). The payload is checked as
    /// [`Store::enqueue`] checks one ([`check_new_tasks`]). Replace mode of
    /// [`crate::unique`].
    async fn replace_pending(
        &self,
        name: &str,
        payload: &serde_json::Value,
        run_at: Timestamp,
    ) -> Result<Option<TaskId>, StoreError>;

    // ---- periodic tasks (`crate::schedule`) ------------------------------------------

    /// Creates or updates schedules, all or none. A new one is stored
    /// unpaused with `next_tick` and no last tick; an existing one takes the new task,
    /// queue, priority, arguments, policy and origin, keeps its pause, its last tick and
    /// last task, and takes the new expression, time zone and `next_tick` only when the
    /// expression or the time zone changed. With `known_tasks` (what a starting worker
    /// knows), every schedule's `task_missing` is then set to whether its task is absent
    /// from the list (a write of its own on PostgreSQL). Names and arguments are checked
    /// first, the arguments as a task's payload is at enqueue (depth, size:
    /// [`StoreError::InvalidValue`]).
    async fn upsert_schedules(
        &self,
        schedules: Vec<NewSchedule>,
        known_tasks: Option<Vec<String>>,
    ) -> Result<(), StoreError>;

    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError>;

    /// Fires a schedule: if it exists, is not paused and its next tick is still
    /// `fire.expected`, sets its next tick to `fire.next_tick` (and, when given, its last
    /// tick and last task) and stores `fire.tasks` as [`Store::enqueue`] does, in one
    /// transaction, and returns their ids; otherwise changes nothing and returns `None`
    /// (another worker fired that tick first). So each tick fires once however many
    /// workers race for it.
    async fn fire_schedule(
        &self,
        fire: Fire,
        now: Timestamp,
    ) -> Result<Option<Vec<TaskId>>, StoreError>;

    /// Pauses a schedule, or resumes it with its next tick set to `next_tick` (required
    /// to resume: the ticks of the pause are not fired). `NotFound` for an unknown name.
    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<(), StoreError>;

    /// Removes a schedule (the tasks it started stay). `NotFound` for an unknown name.
    async fn remove_schedule(&self, name: &str) -> Result<(), StoreError>;
}

/// Opens a store from a URL: `memory://`, `sqlite://PATH` (created if missing; `sqlite::memory:`
/// is not supported, use `memory://`), or `postgres://user@host/db`.
///
/// Each `memory://` open is a new, empty store that lives in this process only: its tasks
/// vanish when the process exits. The URL is read by [`StoreUrl::parse`] first, so a URL
/// it refuses (an unknown scheme, a bad option, a backend whose Cargo feature, `sqlite` or
/// `postgres`, is off) fails with [`StoreError::BadUrl`] saying why, before anything is
/// opened; its password never shows in the error.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match StoreUrl::parse(url)? {
        StoreUrl::Memory => Ok(std::sync::Arc::new(memory::MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite { path } => {
            Ok(std::sync::Arc::new(sqlite::SqliteStore::open(&path).await?))
        }
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres { url } => Ok(std::sync::Arc::new(
            postgres::PostgresStore::open(&url).await?,
        )),
        #[allow(unreachable_patterns)]
        _ => Err(url::bad_url(
            url,
            "this build of taskq-runtime cannot open it",
        )),
    }
}
