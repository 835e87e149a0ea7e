//! [`Worker`]: the claim loop, lease renewal, execution with deadlines, the retry policy,
//! batched completion and graceful shutdown.
//!
//! - The claim loop asks the store for as many due tasks as there are free slots (in one
//!   batch), then runs each on the tokio runtime.
//! - Lease renewal: one heartbeat task renews every held lease each `lease / 3`; a lease
//!   found lost aborts that task (another worker owns it now).
//! - Completion: finished attempts go through a channel to one finisher, which records
//!   them with one `Store::finish` call per batch.
//! - What an attempt's result does to its task is decided in [`crate::policy`], shared
//!   with the test harness.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, Notify, Semaphore};
use tracing::Instrument;

use crate::error::TaskError;
use crate::policy;
use crate::registry::{DuplicateTask, Registry};
use crate::store::{ClaimRequest, ClaimedTask, Finish, Lease, Outcome, Store, StoreError, TaskId};
use crate::task::{tokio_util_cancel::Flag, Context, ContextInner, State};
use crate::time::{Clock, Timestamp};

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
}

impl WorkerStats {
    fn count(&self, outcome: &Outcome) {
        let c = match outcome {
            Outcome::Done | Outcome::Continue { .. } => &self.done,
            Outcome::Failed { .. } => &self.failed,
            Outcome::Retry { .. } => &self.retried,
            Outcome::Dead { .. } => &self.dead,
            Outcome::Release => &self.released,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the worker and the harness need to run one claimed task.
#[derive(Clone)]
pub(crate) struct Exec {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub state: Arc<State>,
    pub registry: Arc<Registry>,
    pub worker: String,
    pub deadline_grace: Duration,
    /// Task names claimed that no registered task has, warned about once each.
    pub unknown: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Exec {
    /// Runs one claimed task to its outcome: never panics, never returns early without one.
    pub(crate) async fn run(&self, claimed: &ClaimedTask, cancel: Flag) -> Outcome {
        if let Some(reason) = &claimed.decode_error {
            return policy::undecodable(reason);
        }
        let now = self.clock.now();
        let Some(def) = self.registry.get(&claimed.task) else {
            let first = self
                .unknown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(claimed.task.clone());
            if first {
                tracing::warn!(
                    worker = %self.worker, task = %claimed.task,
                    "claimed a task named `{}`, which this binary does not register: it is retried with backoff until a worker that knows it runs it (a rolling deploy), and goes dead if none does",
                    claimed.task
                );
            }
            return policy::unknown_task(claimed, &self.worker, now);
        };
        if let Some(outcome) = policy::before_run(&def.options, claimed, now) {
            return outcome;
        }
        let deadline = now.add(def.options.timeout);
        let ctx = Context {
            inner: Arc::new(ContextInner {
                id: claimed.lease.id,
                task: def.name,
                queue: claimed.queue.clone(),
                attempt: claimed.attempt,
                started_at: now,
                deadline,
                clock: self.clock.clone(),
                state: self.state.clone(),
                store: self.store.clone(),
                lease: claimed.lease,
                kind: def.kind,
                iteration: claimed.iteration.clone(),
                cancelled: cancel,
                progressed: Flag::default(),
            }),
        };
        let progressed = ctx.inner.progressed.clone();
        let fut = match (def.handler)(ctx, claimed.payload.clone()) {
            Ok(f) => f,
            Err(e) => return policy::undecodable(e),
        };
        let hard = def.options.timeout + self.deadline_grace;
        let result = match tokio::time::timeout(hard, AssertUnwindSafe(fut).catch_unwind()).await {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => Err(TaskError::retry(format!("panicked: {}", panic_message(&panic)))),
            Err(_) => Err(TaskError::retry(format!(
                "hard deadline exceeded: the attempt ran past its {:?} timeout and {:?} of grace, and was cancelled",
                def.options.timeout, self.deadline_grace
            ))),
        };
        policy::decide_attempt(
            &def.options,
            claimed,
            result,
            progressed.is_set(),
            self.clock.now(),
        )
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
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
    clock: Clock,
    name: Option<String>,
}

impl WorkerBuilder {
    /// Adds app state that tasks read with [`Context::state`] (and models use as their
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

    /// The lease a claimed task gets, renewed every third of it. Default 30 s. A task whose
    /// worker died runs again this long after the last renewal.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often an idle worker polls the store when nothing woke it. Default 1 s.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// At shutdown, how long running tasks may take to finish before they are cancelled
    /// and released to run again. Default 30 s.
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

    /// The worker's name, shown in each attempt's [`AttemptInfo::worker`](crate::AttemptInfo::worker)
    /// and in the worker's log lines. Default `host-pid-random`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Another clock than the wall clock.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the settings and the registry: duplicate task names are refused here, and so
    /// is a binary in which no task is registered ([`WorkerError::Config`] with setting
    /// `tasks`).
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
        if self.lease < Duration::from_millis(30) {
            return Err(WorkerError::Config {
                setting: "lease",
                reason: format!("{:?} is too short to renew; use at least 30ms", self.lease),
            });
        }
        let name = self.name.unwrap_or_else(default_worker_name);
        Ok(Worker {
            exec: Exec {
                store: self.store,
                clock: self.clock,
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

/// A running task's concurrency slot: dropping it (when the task's future ends or is
/// dropped) frees the slot and wakes the claim loop waiting for one.
struct Slot {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.freed.notify_one();
    }
}

struct InFlight {
    lease: Lease,
    cancel: Flag,
    abort: Option<tokio::task::AbortHandle>,
    claimed: ClaimedTask,
    started_at: Timestamp,
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
            shutdown_grace: Duration::from_secs(30),
            deadline_grace: Duration::from_secs(5),
            clock: Clock::system(),
            name: None,
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

    /// Runs until `shutdown` completes: then stops claiming, lets running tasks finish for
    /// up to the shutdown grace, cancels the rest and releases them to run again at once.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        let exec = self.exec.clone();
        self.announce();
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let inflight: Arc<Mutex<HashMap<TaskId, InFlight>>> = Arc::default();
        let freed = Arc::new(Notify::new());
        // Bounded: when the store falls behind, finished tasks wait to hand over their
        // outcome while holding their slot, so the worker stops claiming more.
        let (done_tx, done_rx) = mpsc::channel::<Pending>(self.concurrency.max(16));

        let finisher = tokio::spawn(finisher(
            exec.clone(),
            done_rx,
            self.stats.clone(),
            self.lease,
        ));
        let heartbeat = tokio::spawn(heartbeat(exec.clone(), inflight.clone(), self.lease));

        tokio::pin!(shutdown);
        let mut store_backoff = Duration::from_millis(50);
        loop {
            // Wait for a free slot (or shutdown).
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = freed.notified() => continue,
                }
            }
            let req = ClaimRequest {
                queues: self.queues.clone(),
                worker: exec.worker.clone(),
                limit: free.min(self.claim_batch),
                lease: self.lease,
                now: exec.clock.now(),
            };
            // A claim is not abandoned when shutdown comes while it runs: a store may
            // commit it anyway (SQLite runs it on the blocking pool, PostgreSQL on the
            // server), and tasks claimed but never run would wait for their leases to lapse
            // and lose an attempt. Let it finish (within the grace) and release what it took.
            let claim = exec.store.claim(&req);
            tokio::pin!(claim);
            let (claimed, stopping) = tokio::select! {
                _ = &mut shutdown => {
                    match tokio::time::timeout(self.shutdown_grace, &mut claim).await {
                        Ok(r) => (r, true),
                        Err(_) => break,
                    }
                }
                r = &mut claim => (r, false),
            };
            if stopping {
                if let Ok(tasks) = claimed {
                    for task in tasks {
                        let at = exec.clock.now();
                        release(&done_tx, task, at, self.shutdown_grace).await;
                    }
                }
                break;
            }
            let claimed = match claimed {
                Ok(c) => {
                    store_backoff = Duration::from_millis(50);
                    c
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?store_backoff, "claim failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(store_backoff) => {}
                    }
                    store_backoff = (store_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if claimed.is_empty() {
                let wait = self.idle_wait(&exec).await;
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = exec.store.wait_for_work(&self.queues, wait) => {}
                }
                continue;
            }
            for task in claimed {
                self.stats.claimed.fetch_add(1, Ordering::Relaxed);
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    // Cannot happen (we claimed at most the free slots); release to be safe.
                    let at = exec.clock.now();
                    release(&done_tx, task, at, self.shutdown_grace).await;
                    continue;
                };
                let cancel = Flag::default();
                let started_at = exec.clock.now();
                let id = task.lease.id;
                inflight.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    id,
                    InFlight {
                        lease: task.lease,
                        cancel: cancel.clone(),
                        abort: None,
                        claimed: task.clone(),
                        started_at,
                    },
                );
                let exec2 = exec.clone();
                let tx = done_tx.clone();
                let inflight2 = inflight.clone();
                let slot = Slot {
                    permit: Some(permit),
                    freed: freed.clone(),
                };
                let span = tracing::info_span!(
                    "taskq.attempt",
                    task = %task.task,
                    id = %id,
                    attempt = task.attempt,
                    queue = %task.queue,
                    outcome = tracing::field::Empty
                );
                let handle = tokio::spawn(
                    async move {
                        // Frees the slot however this future ends: finished, or dropped
                        // because its lease was lost (aborted by the heartbeat).
                        let _slot = slot;
                        let outcome = exec2.run(&task, cancel).await;
                        tracing::Span::current().record("outcome", outcome.label());
                        if let Outcome::Retry { error, .. }
                        | Outcome::Failed { error }
                        | Outcome::Dead { error } = &outcome
                        {
                            tracing::warn!(error = %error, "attempt failed");
                        }
                        // Remove from in-flight before reporting, so shutdown never
                        // releases a task that already has an outcome.
                        let was_inflight = inflight2
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id)
                            .is_some();
                        if was_inflight {
                            // Waits (holding the slot) while the outcome writer is behind.
                            let _ = tx
                                .send((
                                    Finish {
                                        lease: task.lease,
                                        outcome,
                                        started_at,
                                    },
                                    task,
                                ))
                                .await;
                        }
                    }
                    .instrument(span),
                );
                if let Some(f) = inflight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&id)
                {
                    f.abort = Some(handle.abort_handle());
                }
            }
        }

        // Graceful shutdown: wait for running tasks up to the grace period.
        tracing::info!(worker = %exec.worker, "taskq worker shutting down");
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        loop {
            let n = inflight.lock().unwrap_or_else(|p| p.into_inner()).len();
            if n == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, freed.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        // Cancel what is left and release it so it runs again at once elsewhere.
        let left: Vec<InFlight> = inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, v)| v)
            .collect();
        for f in left {
            f.cancel.set();
            if let Some(a) = &f.abort {
                a.abort();
            }
            release(&done_tx, f.claimed, f.started_at, self.shutdown_grace).await;
        }
        drop(done_tx);
        heartbeat.abort();
        // Record the last outcomes; if the store stays unreachable past the grace period,
        // give up: those tasks run again when their leases lapse (at least once).
        if tokio::time::timeout(self.shutdown_grace, finisher)
            .await
            .is_err()
        {
            tracing::warn!(
                worker = %exec.worker,
                "could not record the last outcomes before the shutdown grace ran out; those tasks will run again when their leases lapse"
            );
        }
        tracing::info!(worker = %exec.worker, "taskq worker stopped");
        Ok(())
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
            tasks = ?names, "taskq worker started: serving {serves} with {} known tasks", names.len()
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
    async fn idle_wait(&self, exec: &Exec) -> Duration {
        match exec.store.next_due(&self.queues).await {
            Ok(Some(t)) => t
                .since(exec.clock.now())
                .clamp(MIN_IDLE_WAIT, self.poll_interval.max(MIN_IDLE_WAIT)),
            _ => self.poll_interval,
        }
    }
}

/// The shortest idle wait between claims while due tasks are held back by a queue's rate
/// or concurrency limit.
pub const MIN_IDLE_WAIT: Duration = Duration::from_millis(20);

/// Renews the leases of every running task; aborts tasks whose lease was lost.
async fn heartbeat(exec: Exec, inflight: Arc<Mutex<HashMap<TaskId, InFlight>>>, lease: Duration) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let leases: Vec<Lease> = inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|f| f.lease)
            .collect();
        if leases.is_empty() {
            continue;
        }
        let until = exec.clock.now().add(lease);
        match exec.store.heartbeat(&leases, &exec.worker, until).await {
            Ok(lost) => {
                let mut g = inflight.lock().unwrap_or_else(|p| p.into_inner());
                for id in lost {
                    if let Some(f) = g.remove(&id) {
                        tracing::warn!(id = %id, "lease lost (another worker holds the task now, or it was deleted); cancelling it here");
                        f.cancel.set();
                        if let Some(a) = f.abort {
                            a.abort();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
        }
    }
}

/// Hands a claimed task back to the outcome writer as released (pending again at once, the
/// attempt not counted), waiting at most `limit` for room.
async fn release(
    tx: &mpsc::Sender<Pending>,
    task: ClaimedTask,
    started_at: Timestamp,
    limit: Duration,
) {
    let finish = Finish {
        lease: task.lease,
        outcome: Outcome::Release,
        started_at,
    };
    let _ = tokio::time::timeout(limit, tx.send((finish, task))).await;
}

/// An attempt's outcome on its way to the store.
type Pending = (Finish, ClaimedTask);

/// Records outcomes in batches: everything waiting in the channel goes in one call.
///
/// A batch the store refuses is not retried as a whole forever: each outcome is then
/// written alone, so one outcome the store cannot take never holds up the others, and
/// those that still fail are retried with backoff for up to `give_up_after` (the lease:
/// past it another worker may hold the task anyway). An outcome given up is logged; its
/// task runs again when its lease lapses (at least once).
async fn finisher(
    exec: Exec,
    mut rx: mpsc::Receiver<Pending>,
    stats: Arc<WorkerStats>,
    give_up_after: Duration,
) {
    let mut batch: Vec<Pending> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < FINISH_BATCH {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        record(&exec, std::mem::take(&mut batch), &stats, give_up_after).await;
    }
}

/// The most outcomes one `Store::finish` call records.
const FINISH_BATCH: usize = 512;

/// Writes one batch of outcomes; see [`finisher`].
async fn record(
    exec: &Exec,
    mut pending: Vec<Pending>,
    stats: &WorkerStats,
    give_up_after: Duration,
) {
    let give_up_at = tokio::time::Instant::now() + give_up_after;
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = match write(exec, &pending, stats).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if pending.len() > 1 {
            // One outcome may be what the store refuses: write each alone, keep the failures.
            let mut failed = Vec::new();
            for p in pending {
                if write(exec, std::slice::from_ref(&p), stats).await.is_err() {
                    failed.push(p);
                }
            }
            pending = failed;
            if pending.is_empty() {
                return;
            }
        }
        if tokio::time::Instant::now() + backoff > give_up_at {
            for (f, task) in &pending {
                tracing::error!(
                    id = %f.lease.id, task = %task.task, error = %error,
                    "could not record this attempt's outcome within a lease; giving up: the task runs again when its lease lapses"
                );
            }
            return;
        }
        tracing::warn!(error = %error, outcomes = pending.len(), retry_in = ?backoff, "recording outcomes failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One `Store::finish` call; counts what it recorded.
async fn write(exec: &Exec, pending: &[Pending], stats: &WorkerStats) -> Result<(), StoreError> {
    let finishes: Vec<Finish> = pending.iter().map(|(f, _)| f.clone()).collect();
    let results = exec
        .store
        .finish(finishes, &exec.worker, exec.clock.now())
        .await?;
    for ((f, _), r) in pending.iter().zip(results) {
        match r {
            Ok(()) => stats.count(&f.outcome),
            Err(e) => tracing::warn!(id = %f.lease.id, error = %e, "outcome not recorded"),
        }
    }
    Ok(())
}

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
