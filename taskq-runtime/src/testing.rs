//! A test harness: run every due task, retries and delays included, on virtual time.
//!
//! ```
//! use std::time::Duration;
//! use taskq_runtime::{task, testing::Harness, Context, TaskError};
//!
//! #[task(min_backoff = "1h")]
//! async fn send_email(ctx: Context, to: String) -> Result<(), TaskError> {
//!     if ctx.attempt() == 1 {
//!         return Err(TaskError::retry("smtp busy"));
//!     }
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let h = Harness::new();
//!     send_email::start(&h.queue(), "ada@example.org".into()).await?;
//!     let report = h.drain().await?; // an hour of backoff, no real sleeping
//!     assert_eq!(report.count("retry"), 1);
//!     assert_eq!(report.count("done"), 1);
//!     assert!(report.runs[1].at.since(report.runs[0].at) >= Duration::from_secs(1800));
//!     Ok(())
//! }
//! ```
//!
//! The harness claims and runs tasks itself, with the worker's own execution and retry
//! policy, one at a time in claim order. When nothing is due it moves its virtual clock to
//! the next due time instead of sleeping, so a task retried with an hour of backoff costs
//! no wall-clock time. (The hard deadline of a running attempt is still real time.)
//!
//! # A drain is honest or it fails
//! - Every outcome in a [`DrainReport`] was recorded by the store. When the store refuses
//!   one (its `finish` answers [`StoreError::LeaseLost`] for it, or any other per-outcome
//!   error), the drain stops with [`HarnessError::OutcomeRefused`], naming the attempt,
//!   instead of counting an outcome the store never kept. A test that means a lease to be
//!   lost (a task that deletes itself) matches that error.
//! - When the store's `next_due` says work is due but `claim` hands out nothing, the
//!   harness moves the clock forward by [`IDLE_STEP`] (a rate-limited queue's tokens need
//!   time to refill) or to the time `next_due` named. After
//!   [`Harness::max_idle_rounds`] such rounds in a row without a claim (default
//!   [`DEFAULT_MAX_IDLE_ROUNDS`]), the drain stops with [`HarnessError::Stalled`] instead of
//!   looping for ever: the store's `next_due` and `claim` disagree, or a queue limit holds
//!   due tasks longer than that.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::Queue;
use crate::registry::{DuplicateTask, Registry};
use crate::store::memory::MemoryStore;
use crate::store::{ClaimRequest, Finish, Lease, Store, StoreError, TaskId};
use crate::task::{tokio_util_cancel::Flag, Context, ContextInner, State, TaskKind};
use crate::time::{Clock, Timestamp};
use crate::worker::Exec;

/// One attempt the harness ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Ran {
    /// The task.
    pub id: TaskId,
    /// Its registered name.
    pub task: String,
    /// The attempt number.
    pub attempt: u32,
    /// `done`, `failed`, `retry`, `dead`, `continued` or `stopped`.
    pub outcome: &'static str,
    /// The error, if the attempt had one.
    pub error: Option<String>,
    /// Virtual time at which it ran.
    pub at: Timestamp,
}

/// What [`Harness::drain`] ran, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrainReport {
    /// Every attempt.
    pub runs: Vec<Ran>,
}

impl DrainReport {
    /// How many attempts ended with `outcome`.
    pub fn count(&self, outcome: &str) -> usize {
        self.runs.iter().filter(|r| r.outcome == outcome).count()
    }

    /// The attempts of one task.
    pub fn of(&self, id: TaskId) -> Vec<&Ran> {
        self.runs.iter().filter(|r| r.id == id).collect()
    }
}

/// How far [`Harness::drain`] moves the virtual clock when tasks are due but none could be
/// claimed (a queue's token bucket refilling): 10 ms.
pub const IDLE_STEP: Duration = Duration::from_millis(10);

/// The default of [`Harness::max_idle_rounds`]: 100,000 rounds, which at [`IDLE_STEP`] is
/// 1,000 s of virtual time (a queue limited to one task per 16 minutes still drains).
pub const DEFAULT_MAX_IDLE_ROUNDS: u32 = 100_000;

/// Runs tasks in-process on a virtual clock. See the [module docs](self).
pub struct Harness {
    store: Arc<dyn Store>,
    clock: Clock,
    state: State,
    max_runs: usize,
    max_idle_rounds: u32,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("store", &self.store.backend())
            .field("now", &self.clock.now())
            .finish()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    /// A harness on a fresh memory store, its virtual clock set to the current time.
    pub fn new() -> Harness {
        Harness::with_store(Arc::new(MemoryStore::new()))
    }

    /// A harness on the given store.
    pub fn with_store(store: Arc<dyn Store>) -> Harness {
        Harness {
            store,
            clock: Clock::manual(Timestamp::now()),
            state: State::default(),
            max_runs: 100_000,
            max_idle_rounds: DEFAULT_MAX_IDLE_ROUNDS,
        }
    }

    /// A harness on a fresh memory store and the given clock.
    pub(crate) fn with_clock(clock: Clock) -> Harness {
        Harness {
            clock,
            ..Harness::new()
        }
    }

    /// A [`Context`] for calling a task function directly in a unit test, with this
    /// harness's app state, store and clock: attempt 1, the default 10-minute soft deadline
    /// ([`TaskOptions::DEFAULT`](crate::TaskOptions)), a plain (not iterative) task.
    ///
    /// ```
    /// use taskq_runtime::{task, testing::Harness, Context, TaskError};
    ///
    /// struct Mailer;
    ///
    /// #[task]
    /// async fn welcome(ctx: Context, to: String) -> Result<(), TaskError> {
    ///     let _mailer = ctx.state::<Mailer>()?;
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ctx = Harness::new().state(Mailer).context();
    /// welcome(ctx, "ada@example.org".into()).await?;
    /// # Ok(()) }
    /// ```
    pub fn context(&self) -> Context {
        let now = self.clock.now();
        Context {
            inner: Arc::new(ContextInner {
                id: TaskId(0),
                task: "taskq::testing::context",
                queue: "default".into(),
                attempt: 1,
                started_at: now,
                deadline: now.add(crate::task::TaskOptions::DEFAULT.timeout),
                clock: self.clock.clone(),
                state: Arc::new(self.state.clone()),
                store: self.store.clone(),
                lease: Lease {
                    id: TaskId(0),
                    token: 0,
                },
                kind: TaskKind::Plain,
                iteration: None,
                cancelled: Flag::default(),
                progressed: Flag::default(),
            }),
        }
    }

    /// Adds app state for tasks (as `Worker::builder(..).state(..)` does).
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Stops a drain after this many attempts (a guard against tasks that retry forever).
    /// Default 100,000.
    pub fn max_runs(mut self, n: usize) -> Self {
        self.max_runs = n;
        self
    }

    /// Stops a drain with [`HarnessError::Stalled`] after this many rounds in a row in
    /// which the store's `next_due` named a time but `claim` handed out nothing (each
    /// round moves the clock to that time, or by [`IDLE_STEP`] when it has passed).
    /// Default [`DEFAULT_MAX_IDLE_ROUNDS`]; at least 1.
    pub fn max_idle_rounds(mut self, n: u32) -> Self {
        self.max_idle_rounds = n.max(1);
        self
    }

    /// A queue on this harness's store and virtual clock.
    pub fn queue(&self) -> Queue {
        Queue::with_clock(self.store.clone(), self.clock.clone())
    }

    /// The virtual clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Moves virtual time forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance_to(self.clock.now().add(d));
    }

    /// Runs every task that is due now, without moving time; repeats until none is due.
    pub async fn run_due(&self) -> Result<DrainReport, HarnessError> {
        self.drive(false).await
    }

    /// Runs every task until none is left pending: when nothing is due, moves the virtual
    /// clock to the next due time (delays, ETAs, backoff). Paused queues are left alone.
    pub async fn drain(&self) -> Result<DrainReport, HarnessError> {
        self.drive(true).await
    }

    /// Moves virtual time to `until`, firing periodic tasks on the way
    /// ([`crate::schedule`]) as workers do, and running every task due on the way: at
    /// each tick and each due time in turn, the due schedules fire, then the due tasks
    /// run. The schedules of the tasks declared with `cron` are registered first (as a
    /// worker does when it starts). A time earlier than now only runs what is due now.
    /// Returns every attempt run; stops with [`HarnessError::TooManyRuns`] after
    /// [`Harness::max_runs`] attempts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskq_runtime::{task, testing::Harness, TaskError};
    ///
    /// #[task(cron = "0 3 * * *", timezone = "Europe/Paris")]
    /// async fn nightly_report() -> Result<(), TaskError> { Ok(()) }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let h = Harness::new();
    /// let report = h.run_for(Duration::from_secs(7 * 86_400)).await?; // a week, at once
    /// assert_eq!(report.runs.iter().filter(|r| r.task == nightly_report::NAME).count(), 7);
    /// # Ok(()) }
    /// ```
    pub async fn run_until(&self, until: Timestamp) -> Result<DrainReport, HarnessError> {
        let registry = Registry::collect()?;
        crate::schedule::register_declared(&*self.store, &registry, self.clock.now()).await?;
        let mut report = DrainReport::default();
        loop {
            let now = self.clock.now();
            let pass = crate::schedule::fire_due(&*self.store, &registry, now).await?;
            let ran = self.drive(false).await?;
            report.runs.extend(ran.runs);
            if report.runs.len() > self.max_runs {
                return Err(HarnessError::TooManyRuns(self.max_runs));
            }
            let due = self.store.next_due(&[]).await?.filter(|t| *t > now);
            let next = match (pass.next.filter(|t| *t > now), due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(t) if t <= until => self.clock.advance_to(t),
                _ if now < until => self.clock.advance_to(until),
                _ => return Ok(report),
            }
        }
    }

    /// [`Harness::run_until`] `d` from now.
    pub async fn run_for(&self, d: Duration) -> Result<DrainReport, HarnessError> {
        self.run_until(self.clock.now().add(d)).await
    }

    async fn drive(&self, move_time: bool) -> Result<DrainReport, HarnessError> {
        let exec = Exec {
            store: self.store.clone(),
            clock: self.clock.clone(),
            state: Arc::new(self.state.clone()),
            registry: Arc::new(Registry::collect()?),
            worker: "harness".into(),
            deadline_grace: Duration::from_secs(5),
            unknown: Arc::default(),
        };
        let mut report = DrainReport::default();
        // Rounds in a row in which `next_due` named a time and `claim` found nothing.
        let mut idle_rounds = 0u32;
        loop {
            let now = self.clock.now();
            let claimed = self
                .store
                .claim(&ClaimRequest {
                    queues: Vec::new(),
                    worker: "harness".into(),
                    limit: 64,
                    lease: Duration::from_secs(24 * 3600),
                    now,
                })
                .await?;
            if claimed.is_empty() {
                if !move_time {
                    return Ok(report);
                }
                match self.store.next_due(&[]).await? {
                    Some(t) => {
                        if idle_rounds >= self.max_idle_rounds {
                            return Err(HarnessError::Stalled {
                                rounds: idle_rounds,
                                next_due: t,
                                now,
                            });
                        }
                        idle_rounds += 1;
                        // A rate-limited queue can have due tasks the bucket refuses now:
                        // move at least a little so its tokens refill.
                        let to = if t > now { t } else { now.add(IDLE_STEP) };
                        self.clock.advance_to(to);
                        continue;
                    }
                    None => return Ok(report),
                }
            }
            idle_rounds = 0;
            for mut task in claimed {
                if report.runs.len() >= self.max_runs {
                    return Err(HarnessError::TooManyRuns(self.max_runs));
                }
                let started_at = self.clock.now();
                let payload = std::mem::take(&mut task.payload);
                let outcome = exec
                    .run(&task, payload, started_at, Flag::default(), Flag::default())
                    .await;
                let recorded = outcome.transition(self.clock.now());
                let ran = Ran {
                    id: task.lease.id,
                    task: task.task.clone(),
                    attempt: task.attempt,
                    outcome: recorded.label,
                    error: recorded.error,
                    at: started_at,
                };
                let answer = self
                    .store
                    .finish(
                        vec![Finish {
                            lease: task.lease,
                            outcome,
                            started_at,
                        }],
                        "harness",
                        self.clock.now(),
                    )
                    .await?;
                // One entry per outcome sent; a store that answers none recorded none.
                match answer.into_iter().next() {
                    Some(Ok(())) => report.runs.push(ran),
                    Some(Err(reason)) => {
                        return Err(HarnessError::OutcomeRefused {
                            ran: Box::new(ran),
                            reason,
                        })
                    }
                    None => {
                        return Err(HarnessError::OutcomeRefused {
                            ran: Box::new(ran),
                            reason: StoreError::Backend(
                                "finish answered no entry for the outcome".into(),
                            ),
                        })
                    }
                }
            }
        }
    }
}

/// Why a drain stopped early. Its `Debug` form is its message.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Two tasks share a name.
    #[error(transparent)]
    Duplicate(#[from] DuplicateTask),
    /// More attempts than `max_runs`: some task keeps retrying or continuing.
    #[error("the drain ran {0} attempts and stopped: a task keeps retrying or continuing; raise Harness::max_runs if that is expected")]
    TooManyRuns(usize),
    /// The store refused to record an attempt's outcome (for instance
    /// [`StoreError::LeaseLost`]: the task was deleted or its run cancelled while it ran).
    /// The attempt is not in any report: the harness counts only recorded outcomes.
    #[error("the store refused the outcome `{}` of attempt {} of task {} ({}): {reason}; the drain stopped, since the store did not record it", ran.outcome, ran.attempt, ran.id, ran.task)]
    OutcomeRefused {
        /// The attempt whose outcome was refused (`outcome` is what it would have recorded).
        ran: Box<Ran>,
        /// The store's answer for it.
        reason: StoreError,
    },
    /// The store's `next_due` kept naming a time while `claim` handed out nothing, for
    /// [`Harness::max_idle_rounds`] rounds in a row.
    #[error("the drain stalled: for {rounds} rounds in a row the store's next_due said a task is due (last at {next_due}, virtual time {now}) but claim handed out nothing; the store's next_due and claim disagree, or a queue limit holds due tasks for longer (raise Harness::max_idle_rounds if that is expected)")]
    Stalled {
        /// How many rounds in a row found nothing to claim.
        rounds: u32,
        /// The last time `next_due` named.
        next_due: Timestamp,
        /// The virtual time of the last claim.
        now: Timestamp,
    },
}

crate::error::debug_as_display!(HarnessError);
