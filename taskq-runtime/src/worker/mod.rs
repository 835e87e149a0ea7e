//! [`Worker`]: the claim loop and graceful shutdown (this file), with its parts each in one
//! file:
//!
//! - The claim loop ([`Worker::run`]) asks the store for as many due tasks as there are
//!   free slots (in one batch), then runs each on the tokio runtime. While tasks run, it
//!   gathers freed slots until a full batch is free (for at most about one claim's
//!   time), so a busy worker does not pay one store call per finished task.
//! - `slots.rs` counts the concurrency slots and wakes the claim loop once enough are
//!   free (about once per batch, not once per task).
//! - `exec.rs` runs one claimed task: deadlines, the panic guard (argument decoding
//!   included).
//! - `leases.rs` is lease renewal: the tasks in flight keyed by their lease, and the
//!   heartbeat that renews them (each call bounded) or stops a task whose lease it cannot
//!   hold, before another worker may take it.
//! - `nudge.rs` keeps the runtime's timers running while a task blocks a thread (tokio
//!   would otherwise stall them all, the heartbeat's included).
//! - `outcomes.rs` is the outcome writer: finished attempts go through a bounded channel
//!   to one writer, which records them with one `Store::finish` call per batch.
//! - `retention.rs` prunes the store about every minute ([`crate::retention`]).
//! - `schedules.rs` registers declared schedules and fires due ticks ([`crate::schedule`]).
//! - `telemetry.rs` is the worker's side of [`crate::metrics`] and [`crate::trace`]: the
//!   attempt's span (a child of the starter's trace context), claim counts and latencies,
//!   the queue-depth gauge.
//! - What an attempt's result does to its task is decided in [`crate::policy`], shared
//!   with the test harness.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, Notify};
use tracing::Instrument;

use crate::registry::{DuplicateTask, Registry};
use crate::store::{ClaimRequest, ClaimedTask, Finish, Outcome, Store, StoreError};
use crate::task::{tokio_util_cancel::Flag, State};
use crate::time::Clock;

mod exec;
mod leases;
mod nudge;
mod outcomes;
mod retention;
mod schedules;
mod slots;
mod telemetry;

pub(crate) use exec::Exec;
use leases::{InFlight, Running};
use outcomes::{release, Pending};
use slots::{Slot, Slots};

/// Errors that stop a worker from starting or running. Its `Debug` form is its message.
#[derive(thiserror::Error)]
pub enum WorkerError {
    /// Two tasks share a name.
    #[error(transparent)]
    Duplicate(#[from] DuplicateTask),
    /// A setting is out of range.
    #[error("worker setting `{setting}`: {reason}")]
    Config {
        /// Which setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The store failed in a way the worker cannot ride out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::error::debug_as_display!(WorkerError);

/// Counters a metrics exporter (or the demo's summary) can read while the worker runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Tasks claimed.
    pub claimed: AtomicU64,
    /// Attempts that ended done (an iterative step that continued counts here too).
    pub done: AtomicU64,
    /// Attempts that ended failed (fatal).
    pub failed: AtomicU64,
    /// Attempts that will be retried.
    pub retried: AtomicU64,
    /// Attempts that sent their task to dead.
    pub dead: AtomicU64,
    /// Tasks released at shutdown.
    pub released: AtomicU64,
    /// Attempts of tasks a person cancelled while they ran, as this worker knew when it
    /// recorded them (told by a lease renewal; the store records them cancelled whatever
    /// they returned). Not counted in the other counters.
    pub cancelled: AtomicU64,
    /// Iterative steps recorded as stopped: their run had ended (see
    /// [`Outcome::Stopped`]). A step of a run cancelled while it ran is not counted here:
    /// its outcome is refused, the cancel having ended the step already.
    pub stopped: AtomicU64,
}

impl WorkerStats {
    fn count(&self, outcome: &Outcome) {
        let c = match outcome {
            Outcome::Done | Outcome::Continue { .. } => &self.done,
            Outcome::Failed { .. } => &self.failed,
            Outcome::Retry { .. } => &self.retried,
            Outcome::Dead { .. } => &self.dead,
            Outcome::Release => &self.released,
            Outcome::Stopped => &self.stopped,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    store: Arc<dyn Store>,
    state: State,
    queues: Vec<String>,
    concurrency: usize,
    claim_batch: Option<usize>,
    lease: Duration,
    poll_interval: Duration,
    shutdown_grace: Duration,
    deadline_grace: Duration,
    cancel_grace: Duration,
    clock: Clock,
    name: Option<String>,
    prune: bool,
    prune_interval: Duration,
    queue_depth_interval: Duration,
    schedules: bool,
}

impl WorkerBuilder {
    /// Adds app state that tasks read with [`Context::state`](crate::Context::state) (and models use as their
    /// `Source`). One value per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// The queues to serve. Default: every queue.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// How many tasks run at once. Default 16.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// At most this many tasks per claim. Default: the concurrency.
    pub fn claim_batch(mut self, n: usize) -> Self {
        self.claim_batch = Some(n);
        self
    }

    /// The lease a claimed task gets. Default 30 s. It is renewed every quarter of it; a
    /// task whose lease could not be renewed is told at half a lease left and stopped at a
    /// quarter left. A task whose worker died runs again this long after the last renewal.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often an idle worker polls the store when nothing woke it. Default 1 s.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// The whole graceful shutdown's deadline: running tasks are told at once
    /// (`ctx.is_cancelled()`), may finish until a fifth of it (at most 5 s) is left, then
    /// are stopped and released to run again, and the last outcomes are written, all
    /// within it. Default 25 s, inside the 30 s an orchestrator (Docker, Kubernetes,
    /// systemd) waits between SIGTERM and SIGKILL.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.shutdown_grace = d;
        self
    }

    /// How long after a task's soft deadline its future is dropped (the hard deadline).
    /// Default 5 s.
    pub fn deadline_grace(mut self, d: Duration) -> Self {
        self.deadline_grace = d;
        self
    }

    /// How long a task a person cancelled ([`Queue::cancel`](crate::Queue::cancel)) may go
    /// on after this worker has told it (`ctx.is_cancelled()`) before it is stopped (its
    /// future dropped, as at the hard deadline). Either way the task ends cancelled, its
    /// attempt recorded. Default 10 s ([`DEFAULT_CANCEL_GRACE`]); `Duration::ZERO` stops
    /// it at the first check after the worker learns of the cancel (checks run every
    /// eighth of the lease).
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cancel_grace = d;
        self
    }

    /// The worker's name, shown in each attempt's [`AttemptInfo::worker`](crate::AttemptInfo::worker)
    /// and in the worker's log lines. Default `host-pid-random`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Another clock than the wall clock. A real clock gives way to the store's own clock
    /// when it keeps one ([`Clock::for_store`]: PostgreSQL's database clock decides lease,
    /// due, backoff and bucket times); a virtual one ([`Clock::manual`]) is kept.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether this worker prunes the store: deletes what retention no longer keeps
    /// (finished tasks past their queue's retention, see [`crate::retention`]), every
    /// prune interval, for every queue of the store (not only those it serves). Default
    /// on. Any number of workers may prune (on PostgreSQL one at a time, the others
    /// skip); turn it off to leave pruning to other workers or to
    /// [`Queue::prune`](crate::Queue::prune). To keep a queue's tasks for ever, set its
    /// retention to [`Retention::OFF`](crate::Retention::OFF) instead: every worker agrees
    /// on that.
    pub fn prune(mut self, on: bool) -> Self {
        self.prune = on;
        self
    }

    /// How often this worker prunes. Default 60 s
    /// ([`PRUNE_INTERVAL`](crate::retention::PRUNE_INTERVAL)); each wait is scaled by a
    /// random factor between 0.75 and 1.25, and the first prune comes one such wait after
    /// the worker starts. At least 10 ms.
    pub fn prune_interval(mut self, d: Duration) -> Self {
        self.prune_interval = d;
        self
    }

    /// How often this worker sets the queue-depth gauge
    /// ([`metrics::QUEUE_DEPTH`](crate::metrics::QUEUE_DEPTH)) from the store's counts
    /// (one [`Store::queues`] call, which reads kept counts, not rows). Default 15 s, a
    /// common scrape interval; `Duration::ZERO` turns it off (for instance when a
    /// `/metrics` handler calls [`crate::metrics::record_queue_depth`] on each scrape).
    /// The first reading is taken when the worker starts. With no metrics recorder
    /// installed it costs only the store call.
    pub fn queue_depth_interval(mut self, every: Duration) -> Self {
        self.queue_depth_interval = every;
        self
    }

    /// Whether this worker fires periodic tasks ([`crate::schedule`]): registers the
    /// schedules of the tasks declared with `cron` when it starts, and fires the due
    /// ticks of every schedule whose task it knows. Default on; any number of workers may
    /// (each tick fires once). Off: it neither registers nor fires (others still do).
    pub fn schedules(mut self, on: bool) -> Self {
        self.schedules = on;
        self
    }

    /// Checks the settings and the registry: duplicate task names are refused here, and so
    /// is a binary in which no task is registered ([`WorkerError::Config`] with setting
    /// `tasks`), and a worker name or served queue holding a NUL byte (setting `name` or
    /// `queues`).
    pub fn build(self) -> Result<Worker, WorkerError> {
        let registry = Registry::collect()?;
        if registry.all().is_empty() {
            return Err(WorkerError::Config {
                setting: "tasks",
                reason: "no task is registered in this binary, so this worker could run nothing; declare tasks with #[task] or #[iterative_task] in code this binary links (tasks in another crate register only when this binary uses something from that crate)".into(),
            });
        }
        if self.concurrency == 0 {
            return Err(WorkerError::Config {
                setting: "concurrency",
                reason: "must be at least 1".into(),
            });
        }
        if self.prune && self.prune_interval < Duration::from_millis(10) {
            return Err(WorkerError::Config {
                setting: "prune_interval",
                reason: format!(
                    "{:?} would prune without pause; use at least 10ms",
                    self.prune_interval
                ),
            });
        }
        if self.lease < Duration::from_millis(30) {
            return Err(WorkerError::Config {
                setting: "lease",
                reason: format!("{:?} is too short to renew; use at least 30ms", self.lease),
            });
        }
        // The name and the queues are stored with every claim and attempt: PostgreSQL text
        // cannot hold a NUL byte, so such a worker would fail every claim there (the
        // stores refuse it in task names and queues for the same reason).
        if let Some(q) = self.queues.iter().find(|q| q.contains('\0')) {
            return Err(WorkerError::Config {
                setting: "queues",
                reason: format!(
                    "the queue name {q:?} contains a NUL byte, which no queue can have"
                ),
            });
        }
        let name = self.name.unwrap_or_else(default_worker_name);
        if name.is_empty() || name.contains('\0') {
            return Err(WorkerError::Config {
                setting: "name",
                reason: format!("{name:?} cannot name a worker: give a non-empty name without NUL bytes (it is stored with every attempt)"),
            });
        }
        Ok(Worker {
            exec: Exec {
                clock: self.clock.for_store(&*self.store),
                store: self.store,
                state: Arc::new(self.state),
                registry: Arc::new(registry),
                worker: name,
                deadline_grace: self.deadline_grace,
                unknown: Arc::default(),
            },
            queues: self.queues,
            concurrency: self.concurrency,
            claim_batch: self.claim_batch.unwrap_or(self.concurrency).max(1),
            lease: self.lease,
            poll_interval: self.poll_interval,
            shutdown_grace: self.shutdown_grace,
            cancel_grace: self.cancel_grace,
            prune_interval: self.prune.then_some(self.prune_interval),
            queue_depth_interval: (!self.queue_depth_interval.is_zero())
                .then_some(self.queue_depth_interval),
            schedules: self.schedules,
            stats: Arc::new(WorkerStats::default()),
        })
    }
}

fn default_worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// Serves queues: claims due tasks, runs them with deadlines and records their outcomes.
pub struct Worker {
    exec: Exec,
    queues: Vec<String>,
    concurrency: usize,
    claim_batch: usize,
    lease: Duration,
    poll_interval: Duration,
    shutdown_grace: Duration,
    /// How long a cancelled task may run on after it was told.
    cancel_grace: Duration,
    /// How often it prunes; `None`: it does not.
    prune_interval: Option<Duration>,
    /// How often it sets the queue-depth gauge; `None`: it does not.
    queue_depth_interval: Option<Duration>,
    /// Whether it registers and fires schedules.
    schedules: bool,
    stats: Arc<WorkerStats>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.exec.worker)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// A running worker, from [`Worker::spawn`].
#[derive(Debug)]
pub struct WorkerHandle {
    shutdown: Arc<Notify>,
    join: tokio::task::JoinHandle<Result<(), WorkerError>>,
    stats: Arc<WorkerStats>,
}

impl WorkerHandle {
    /// Its counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Asks it to stop (graceful) and waits until it has.
    pub async fn shutdown(self) -> Result<(), WorkerError> {
        self.shutdown.notify_one();
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(WorkerError::Store(StoreError::Backend(format!(
                "worker task ended abnormally: {e}"
            )))),
        }
    }
}

impl Worker {
    /// Starts building a worker on `store`.
    pub fn builder(store: Arc<dyn Store>) -> WorkerBuilder {
        WorkerBuilder {
            store,
            state: State::default(),
            queues: Vec::new(),
            concurrency: 16,
            claim_batch: None,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(25),
            deadline_grace: Duration::from_secs(5),
            cancel_grace: DEFAULT_CANCEL_GRACE,
            clock: Clock::system(),
            name: None,
            prune: true,
            prune_interval: crate::retention::PRUNE_INTERVAL,
            queue_depth_interval: Duration::from_secs(15),
            schedules: true,
        }
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.exec.worker
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Runs until Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_shutdown(self) -> Result<(), WorkerError> {
        self.run(shutdown_signal()).await
    }

    /// Runs on the tokio runtime in the background; stop it with [`WorkerHandle::shutdown`].
    pub fn spawn(self) -> WorkerHandle {
        let shutdown = Arc::new(Notify::new());
        let stats = self.stats.clone();
        let s = shutdown.clone();
        let join = tokio::spawn(async move { self.run(async move { s.notified().await }).await });
        WorkerHandle {
            shutdown,
            join,
            stats,
        }
    }

    /// Runs until `shutdown` completes, then shuts down gracefully within one deadline,
    /// the shutdown grace: it stops claiming and tells every running task at once
    /// (`ctx.is_cancelled()`), lets them finish until a few seconds before the deadline,
    /// stops the rest and releases them to run again at once, and writes the last outcomes,
    /// all before the deadline.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        let exec = self.exec.clone();
        // What each task's future holds: one reference count per task instead of a copy.
        let task_exec = Arc::new(exec.clone());
        self.announce();
        let slots = Slots::new(self.concurrency);
        let inflight = InFlight::default();
        // Bounded: when the store falls behind, finished tasks wait to hand over their
        // outcome while holding their slot, so the worker stops claiming more. Room for one
        // full batch of the writer (or four per slot), so a fast store never waits on it.
        let (done_tx, done_rx) =
            mpsc::channel::<Pending>((self.concurrency * 4).max(outcomes::FINISH_BATCH));

        let writer = tokio::spawn(outcomes::outcome_writer(
            exec.clone(),
            inflight.clone(),
            done_rx,
            self.stats.clone(),
            // The leases of finished tasks are renewed while their outcome is retried.
            self.lease * 2,
        ));
        let heartbeat = tokio::spawn(supervised("lease renewal", {
            let (exec, inflight, lease) = (exec.clone(), inflight.clone(), self.lease);
            let grace = self.cancel_grace;
            let done = done_tx.downgrade();
            move || leases::heartbeat(exec.clone(), inflight.clone(), lease, grace, done.clone())
        }));
        let pruner = self.prune_interval.map(|interval| {
            tokio::spawn(supervised("pruning", {
                let exec = exec.clone();
                move || {
                    retention::prune_periodically(
                        exec.store.clone(),
                        exec.clock.clone(),
                        interval,
                        exec.worker.clone(),
                    )
                }
            }))
        });

        let ticker = self.schedules.then(|| {
            let exec = exec.clone();
            tokio::spawn(supervised("schedules", move || {
                schedules::run(exec.clone())
            }))
        });

        let depth = self.queue_depth_interval.map(|every| {
            let store = exec.store.clone();
            tokio::spawn(supervised("queue-depth gauge", move || {
                let store = store.clone();
                async move { telemetry::queue_depth(&*store, every).await }
            }))
        });

        // Keeps the runtime's timers (the heartbeat's among them) running while a task
        // blocks a thread; stops with this function.
        let _nudge = nudge::start((self.lease / 8).clamp(NUDGE_MIN, NUDGE_MAX));

        // Keep a few seconds of the shutdown grace to stop what is left and write its release.
        let reserve = (self.shutdown_grace / 5).min(Duration::from_secs(5));
        tokio::pin!(shutdown);
        let mut store_backoff = Duration::from_millis(50);
        let mut claiming: Option<Vec<ClaimedTask>> = None;
        let mut shutdown_at = None;
        // One request for the life of the loop: each claim sets its limit and time.
        let mut req = ClaimRequest {
            queues: self.queues.clone(),
            worker: exec.worker.clone(),
            limit: 0,
            lease: self.lease,
            now: exec.clock.now(),
        };
        // Batching claims: see `GATHER_MAX`.
        let full_batch = self.claim_batch.min(self.concurrency);
        let mut last_claim = Duration::ZERO;
        let mut gather_until: Option<tokio::time::Instant> = None;
        // The last claim found nothing and was made again at once because `next_due` said
        // work was due (see `idle_wait`).
        let mut rechecked = false;
        loop {
            // Wait for a free slot (or shutdown).
            let free = slots.free();
            if free == 0 {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = slots.wait_for(1) => continue,
                }
            }
            // While tasks run, gather free slots until a full batch is free, for at most
            // as long as the last claim took (within `GATHER_MAX`): claiming each slot as
            // it frees would cost one store call per task.
            if free < full_batch && free < self.concurrency {
                let until = *gather_until.get_or_insert_with(|| {
                    tokio::time::Instant::now() + last_claim.min(GATHER_MAX)
                });
                if tokio::time::Instant::now() < until {
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = slots.wait_for(full_batch) => continue,
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
            }
            gather_until = None;
            req.limit = free.min(self.claim_batch);
            req.now = exec.clock.now();
            // A claim is not abandoned when shutdown comes while it runs: a store may
            // commit it anyway (SQLite runs it on the blocking pool, PostgreSQL on the
            // server), and tasks claimed but never run would wait for their leases to lapse
            // and lose an attempt. Let it finish (within the grace, less the reserve kept
            // to stop and release what runs) and release what it took. A claim that does
            // not answer within a lease is given up (its tasks, if it took any, run again
            // when their leases lapse).
            let claimed_at = tokio::time::Instant::now();
            let claim = tokio::time::timeout(self.lease, exec.store.claim(&req));
            tokio::pin!(claim);
            let claimed = tokio::select! {
                _ = &mut shutdown => {
                    shutdown_at = Some(tokio::time::Instant::now());
                    inflight.cancel_all();
                    let limit = self.shutdown_grace.saturating_sub(reserve);
                    if let Ok(Ok(Ok(tasks))) = tokio::time::timeout(limit, &mut claim).await {
                        claiming = Some(tasks);
                    }
                    break;
                }
                r = &mut claim => r,
            };
            let claimed = match claimed {
                Ok(Ok(c)) => {
                    store_backoff = Duration::from_millis(50);
                    last_claim = claimed_at.elapsed();
                    c
                }
                Ok(Err(e)) => {
                    let e = e.to_string();
                    tracing::warn!(error = %e, retry_in = ?store_backoff, "claim failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(store_backoff) => {}
                    }
                    store_backoff = (store_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(_) => {
                    tracing::warn!(timeout = ?self.lease, "claim did not answer within a lease; retrying");
                    continue;
                }
            };
            if claimed.is_empty() {
                // Asking when work is next due is a store call too: shutdown must not wait
                // for it.
                let wait = tokio::select! {
                    _ = &mut shutdown => break,
                    wait = self.idle_wait(&exec, !rechecked) => wait,
                };
                let Some(wait) = wait else {
                    // Work fell due since the claim (its wake-up found no one waiting):
                    // claim again at once, once.
                    rechecked = true;
                    continue;
                };
                rechecked = false;
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = exec.store.wait_for_work(&self.queues, wait) => {}
                }
                continue;
            }
            rechecked = false;
            self.stats
                .claimed
                .fetch_add(claimed.len() as u64, Ordering::Relaxed);
            telemetry::claimed(&claimed, req.now);
            for task in claimed {
                if slots.free() == 0 {
                    // Cannot happen (we claimed at most the free slots); release to be safe.
                    let at = exec.clock.now();
                    release(&done_tx, Arc::new(task), at, self.shutdown_grace).await;
                    continue;
                }
                let slot = slots.take();
                self.start(&task_exec, &inflight, &done_tx, task, slot, claimed_at);
            }
        }

        // Graceful shutdown, within one deadline.
        tracing::info!(worker = %exec.worker, "taskq worker shutting down");
        if let Some(p) = pruner {
            // A prune cut short is harmless: each of its batches commits alone.
            p.abort();
        }
        if let Some(d) = depth {
            d.abort();
        }
        if let Some(t) = ticker {
            // A fire cut short rolls back whole: the tick is fired by the next worker.
            t.abort();
        }
        let deadline = shutdown_at.unwrap_or_else(tokio::time::Instant::now) + self.shutdown_grace;
        inflight.cancel_all();
        for task in claiming.take().unwrap_or_default() {
            let at = exec.clock.now();
            release(
                &done_tx,
                Arc::new(task),
                at,
                deadline.saturating_duration_since(tokio::time::Instant::now()),
            )
            .await;
        }
        while inflight.len() > 0 {
            if tokio::time::timeout_at(deadline - reserve, slots.wait_freed())
                .await
                .is_err()
            {
                break;
            }
        }
        // Stop what is left and release it so it runs again at once elsewhere.
        for r in inflight.drain() {
            r.cancel.set();
            if let Some(a) = &r.abort {
                a.abort();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            release(&done_tx, r.claimed, r.started_at, left).await;
        }
        drop(done_tx);
        // Record the last outcomes; if the store stays unreachable past the deadline, give
        // up: those tasks run again when their leases lapse (at least once).
        if tokio::time::timeout_at(deadline, writer).await.is_err() {
            tracing::warn!(
                worker = %exec.worker,
                "could not record the last outcomes before the shutdown grace ran out; those tasks will run again when their leases lapse"
            );
        }
        heartbeat.abort();
        tracing::info!(worker = %exec.worker, "taskq worker stopped");
        Ok(())
    }

    /// Runs one claimed task on the tokio runtime, in its slot, under its lease.
    ///
    /// The payload moves to the task's code; the rest of the claim is shared (not copied)
    /// by the task's future, its in-flight entry and its outcome.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        exec: &Arc<Exec>,
        inflight: &InFlight,
        done_tx: &mpsc::Sender<Pending>,
        mut task: ClaimedTask,
        slot: Slot,
        claimed_at: tokio::time::Instant,
    ) {
        let cancel = Flag::default();
        let progressed = Flag::default();
        let started_at = exec.clock.now();
        let lease = task.lease;
        let payload = std::mem::take(&mut task.payload);
        let task = Arc::new(task);
        let timeout = exec
            .registry
            .get(&task.task)
            .map(|d| d.options.timeout)
            .unwrap_or(crate::task::TaskOptions::DEFAULT.timeout);
        let running = Running {
            lease,
            cancel: cancel.clone(),
            abort: None,
            claimed: task.clone(),
            started_at,
            // The store's lease counts from the claim's `now`, taken before the call.
            held_until: claimed_at + self.lease,
            renew_until: tokio::time::Instant::now() + timeout + exec.deadline_grace + self.lease,
            progressed: progressed.clone(),
            finishing: false,
            cancel_requested_at: None,
        };
        let exec2 = exec.clone();
        let tx = done_tx.clone();
        let inflight2 = inflight.clone();
        let lease_time = self.lease;
        let span = telemetry::attempt_span(&task);
        let attempt = async move {
            // Frees the slot however this future ends: finished, or dropped because its
            // lease was lost (stopped by the lease renewal).
            let _slot = slot;
            let began = std::time::Instant::now();
            let outcome = exec2
                .run(&task, payload, started_at, cancel, progressed)
                .await;
            crate::metrics::attempt_ran(&task.task, &task.queue, began.elapsed());
            tracing::Span::current().record("outcome", outcome.label());
            if let Outcome::Retry { error, .. }
            | Outcome::Failed { error }
            | Outcome::Dead { error } = &outcome
            {
                tracing::warn!(error = %error, "attempt failed");
            }
            // Marked ended before reporting, so shutdown never releases a task that already
            // has an outcome, while its lease is still renewed until the outcome writer has
            // recorded it; an execution whose lease was taken from it (stopped, or replaced
            // by a newer claim) reports nothing.
            if inflight2.finished(lease, lease_time) {
                // Waits (holding the slot) while the outcome writer is behind.
                let finish = Finish {
                    lease,
                    outcome,
                    started_at,
                };
                if tx.send((finish, task)).await.is_err() {
                    inflight2.remove(lease);
                }
            }
        }
        .instrument(span);
        inflight.start(running, self.lease, || tokio::spawn(attempt).abort_handle());
    }
}

/// Runs a background part of the worker (lease renewal, pruning), restarting it when it
/// panics: a panic there must not end it silently for the life of the worker.
async fn supervised<F, Fut>(what: &'static str, part: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        match AssertUnwindSafe(part()).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => tracing::error!(
                panic = %exec::panic_message(&panic),
                "the worker's {what} panicked; restarting it"
            ),
        }
    }
}

impl Worker {
    /// Says at start which queues the worker serves and which tasks it knows, and warns
    /// once about known tasks whose queue it does not serve (they wait for another worker).
    fn announce(&self) {
        let tasks = self.exec.registry.all();
        let names: Vec<&str> = tasks.iter().map(|d| d.name).collect();
        let serves = if self.queues.is_empty() {
            "every queue".to_string()
        } else {
            self.queues.join(", ")
        };
        tracing::info!(
            worker = %self.exec.worker, queues = %serves, concurrency = self.concurrency,
            tasks = ?names, "taskq worker started: serving {serves}; it knows {} task{}", names.len(), if names.len() == 1 { "" } else { "s" }
        );
        if self.queues.is_empty() {
            return;
        }
        for d in tasks {
            if !self.queues.iter().any(|q| q == d.queue) {
                tracing::warn!(
                    worker = %self.exec.worker, task = d.name, queue = d.queue,
                    "task `{}` runs on queue `{}`, which this worker does not serve: its tasks wait for a worker that does (add \"{}\" to `.queues([..])`)",
                    d.name, d.queue, d.queue
                );
            }
        }
    }

    /// How long an idle worker waits before claiming again (new work wakes it earlier):
    /// until the next task falls due (a delay, a backoff, a lease that lapses), so delayed
    /// tasks run on time; at least [`MIN_IDLE_WAIT`] when tasks are due but were not
    /// claimable (a rate or concurrency limit holds them); at most the poll interval.
    ///
    /// `None` (when `recheck`): a task is due already. It may have been stored after the
    /// claim that found nothing, its wake-up gone to no one since the worker was not
    /// waiting yet; the worker claims again at once rather than wait. Asked once per idle
    /// spell, so a due task a limit holds back costs one more claim, not a busy loop.
    ///
    /// The call is bounded by the poll interval: one that does not answer (a half-open
    /// connection) has already idled that long, so the worker claims again at once.
    async fn idle_wait(&self, exec: &Exec, recheck: bool) -> Option<Duration> {
        let next = tokio::time::timeout(self.poll_interval, exec.store.next_due(&self.queues));
        Some(match next.await {
            Ok(Ok(Some(t))) => {
                let until = t.since(exec.clock.now());
                if recheck && until.is_zero() {
                    return None;
                }
                until.clamp(MIN_IDLE_WAIT, self.poll_interval.max(MIN_IDLE_WAIT))
            }
            Ok(_) => self.poll_interval,
            Err(_) => Duration::ZERO,
        })
    }
}

/// The shortest and longest period of the runtime nudge ([`nudge`]): an eighth of the
/// lease, within these bounds, so a task blocking a thread stalls the others' timers at
/// most this long.
const NUDGE_MIN: Duration = Duration::from_millis(5);
/// See [`NUDGE_MIN`].
const NUDGE_MAX: Duration = Duration::from_millis(100);

/// The longest a worker with tasks running waits for a full claim batch of free slots
/// before it claims for fewer: each wait is at most as long as its last claim took (a
/// claim's cost is mostly per call, so waiting about one call for a fuller batch at most
/// doubles the time a due task waits for a slot), and never longer than this. A worker
/// with every slot free claims at once.
const GATHER_MAX: Duration = Duration::from_millis(10);

/// How long a cancelled task may go on after its worker told it, by default
/// ([`WorkerBuilder::cancel_grace`]).
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(10);

/// The shortest idle wait between claims while due tasks are held back by a queue's rate
/// or concurrency limit.
pub const MIN_IDLE_WAIT: Duration = Duration::from_millis(20);

/// Completes on Ctrl-C (SIGINT) or SIGTERM (what `docker stop`, systemd and Kubernetes
/// send): the signal [`Worker::run_until_shutdown`] stops on. An app that serves HTTP beside
/// a spawned worker can give it to its server's graceful shutdown, then shut the worker down.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
