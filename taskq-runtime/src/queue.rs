//! [`Queue`]: the handle to start tasks and manage them (the management API: list and
//! filter, inspect, run now, cancel, delete, retry one or every match, pause, resume, purge,
//! configure, prune, throughput, iteration runs and their cancellation). The `taskq`
//! command (`taskq-cli`) and the web console (feature `console`) are built on it.

use std::sync::Arc;
use std::time::Duration;

use crate::error::StartError;
use crate::store::{
    self, CancelOutcome, FinishedMinute, IterationInfo, NewIteration, NewTask, PruneReport,
    QueueConfig, QueueInfo, Store, StoreError, TaskDetail, TaskId, TaskInfo, TaskQuery, TaskState,
};
use crate::task::{TaskDef, TaskKind};
use crate::time::{Clock, Timestamp};
use crate::unique::{self, Admission, OnConflict, Started, UniqueArgs};

/// How many tasks [`Queue::retry_matching`] reads per batch.
pub const RETRY_BATCH: usize = 100;

/// How long a finished (or deleted) named task keeps its name taken, unless the builder
/// says otherwise.
pub const DEFAULT_TOMBSTONE: Duration = Duration::from_secs(3600);

/// A handle on a store, to start tasks and manage them. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    store: Arc<dyn Store>,
    clock: Clock,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("store", &self.store.backend())
            .finish()
    }
}

/// The tasks of a batch start (`method`, for the error), each builder turned into its
/// stored form at `now`; a builder in replace mode ([`OnConflict::Replace`]) is refused
/// with [`StartError::Unique`] before anything is stored: replacing is one task's
/// [`TaskBuilder::start`].
fn batch_tasks(
    builders: impl IntoIterator<Item = TaskBuilder>,
    now: Timestamp,
    method: &str,
) -> Result<Vec<NewTask>, StartError> {
    builders
        .into_iter()
        .map(|b| {
            if b.on_conflict == OnConflict::Replace {
                return Err(StartError::Unique {
                    task: b.def.name.to_string(),
                    reason: format!("`{method}` cannot replace a pending task (on_conflict replace); start it with `start`"),
                });
            }
            b.into_new_task(now)
        })
        .collect()
}

impl Queue {
    /// A queue on a store, on real time: the store's own clock when it keeps one
    /// (PostgreSQL: the database's), else the wall clock.
    pub fn new(store: Arc<dyn Store>) -> Queue {
        Queue::with_clock(store, Clock::system())
    }

    /// A queue on a store with the given clock (the test harness passes a virtual one). A
    /// real clock gives way to the store's own clock when it keeps one
    /// ([`Clock::for_store`]): on PostgreSQL, delays, tombstone windows and `run_now` count
    /// in the database's time.
    pub fn with_clock(store: Arc<dyn Store>, clock: Clock) -> Queue {
        let clock = clock.for_store(&*store);
        Queue { store, clock }
    }

    /// Opens the store at `url` (`memory://`, `sqlite://PATH`, `postgres://...`); see
    /// [`store::open`]. A `memory://` store lives in this process only: its tasks vanish
    /// when the process exits.
    pub async fn open(url: &str) -> Result<Queue, StoreError> {
        Ok(Queue::new(store::open(url).await?))
    }

    /// The store behind this queue.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock this queue reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Starts many tasks in one call (one transaction): all are stored or none; returns
    /// their ids in the builders' order.
    ///
    /// Unique keys ([`crate::unique`]) hold inside the batch as against the store: a key
    /// that a stored task holds, or that an earlier builder of the same call has, refuses
    /// the whole call with [`StartError::Duplicate`] for the first such builder, and
    /// nothing is stored. A builder in replace mode ([`OnConflict::Replace`]) is refused
    /// with [`StartError::Unique`] before anything is stored: replacing is one task's
    /// [`TaskBuilder::start`].
    pub async fn start_many(
        &self,
        builders: impl IntoIterator<Item = TaskBuilder>,
    ) -> Result<Vec<TaskId>, StartError> {
        let now = self.clock.now();
        let tasks = batch_tasks(builders, now, "start_many")?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<(String, String)> = tasks
            .iter()
            .map(|t| (t.task.clone(), t.queue.clone()))
            .collect();
        let keys: Vec<Option<String>> = tasks.iter().map(|t| t.unique_name.clone()).collect();
        let ids = match self.store.enqueue(tasks, now).await {
            Ok(ids) => ids,
            Err(StoreError::AlreadyExists(n)) => {
                // The task refused is the first one with that key.
                let task = keys
                    .iter()
                    .position(|k| k.as_deref() == Some(n.as_str()))
                    .and_then(|i| names.get(i))
                    .map(|(t, _)| t.clone())
                    .unwrap_or_default();
                return Err(self.refused(task, n).await);
            }
            Err(e) => return Err(e.into()),
        };
        crate::metrics::started(names.iter().map(|(t, q)| (t.as_str(), q.as_str())));
        Ok(ids)
    }

    /// Starts many tasks, skipping those whose unique key (or name) is taken: by a stored
    /// task or tombstone, or by an earlier builder of the same call. Returns one
    /// [`Admission`] per builder, in order: [`Admission::Started`] with the id of each
    /// task stored, [`Admission::Duplicate`] for each skipped. The tasks started are
    /// stored in one transaction, all or none (a store error stores none).
    ///
    /// Repeats within the call are found before the store is asked. Each key found taken
    /// in the store costs one more transaction (the refused one stores nothing, and the
    /// rest are stored again without that builder), so a call with `k` taken keys makes
    /// `k + 1` transactions. Refused before anything is stored, as in
    /// [`Queue::start_many`]: a builder in replace mode, and a builder whose arguments or
    /// key cannot be made.
    pub async fn start_many_skip_duplicates(
        &self,
        builders: impl IntoIterator<Item = TaskBuilder>,
    ) -> Result<Vec<Admission>, StartError> {
        let now = self.clock.now();
        let tasks = batch_tasks(builders, now, "start_many_skip_duplicates")?;
        let mut out: Vec<Option<Admission>> = vec![None; tasks.len()];
        // A key repeated in the call: the first builder with it keeps it.
        let mut first_with: std::collections::HashMap<&str, usize> = Default::default();
        let mut left: Vec<usize> = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            match t.unique_name.as_deref() {
                Some(k) if first_with.contains_key(k) => {}
                Some(k) => {
                    first_with.insert(k, i);
                    left.push(i);
                }
                None => left.push(i),
            }
        }
        while !left.is_empty() {
            let batch = left.iter().map(|&i| tasks[i].clone()).collect();
            match self.store.enqueue(batch, now).await {
                Ok(ids) => {
                    for (&i, id) in left.iter().zip(ids) {
                        out[i] = Some(Admission::Started(id));
                    }
                    crate::metrics::started(
                        left.iter()
                            .map(|&i| (tasks[i].task.as_str(), tasks[i].queue.as_str())),
                    );
                    break;
                }
                Err(StoreError::AlreadyExists(name)) => {
                    let Some(pos) = left
                        .iter()
                        .position(|&i| tasks[i].unique_name.as_deref() == Some(name.as_str()))
                    else {
                        // Not a name of this call: nothing to skip, so the error stands.
                        return Err(StoreError::AlreadyExists(name).into());
                    };
                    let i = left.remove(pos);
                    let existing = match self.store.unique_holder(&name, self.clock.now()).await {
                        Ok(Some((id, _))) => Some(id),
                        _ => None,
                    };
                    out[i] = Some(Admission::Duplicate {
                        key: name,
                        existing,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Repeats within the call: held by what their first builder became.
        for (i, t) in tasks.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let key = t.unique_name.clone().unwrap_or_default();
            let existing = first_with.get(key.as_str()).and_then(|&f| match &out[f] {
                Some(Admission::Started(id)) => Some(*id),
                Some(Admission::Duplicate { existing, .. }) => *existing,
                None => None,
            });
            out[i] = Some(Admission::Duplicate { key, existing });
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// The error of a start refused because its unique name `name` is taken: for a unique
    /// key, [`StartError::Duplicate`] with the holder the store has now; for a name given
    /// with [`TaskBuilder::name`], [`StoreError::AlreadyExists`] as ever.
    async fn refused(&self, task: String, name: String) -> StartError {
        if !name.starts_with(unique::KEY_PREFIX) {
            return StartError::Store(StoreError::AlreadyExists(name));
        }
        // Best effort: the refusal stands even if this read fails.
        let existing = match self.store.unique_holder(&name, self.clock.now()).await {
            Ok(Some((id, _))) => Some(id),
            _ => None,
        };
        StartError::Duplicate {
            task,
            key: name,
            existing,
        }
    }

    /// Every queue with its counts by state, pause flag and settings.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.store.queues().await
    }

    /// Sets a queue's settings, replacing the ones saved before: its rate, burst and
    /// concurrency limits (enforced across all workers) and its retention (how long its
    /// finished tasks are kept; `None` for the defaults, see [`crate::retention`]).
    pub async fn configure(&self, queue: &str, config: QueueConfig) -> Result<(), StoreError> {
        if let Some(rate) = config.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(StoreError::Conflict(format!(
                    "queue `{queue}`: rate must be a positive number of tasks per second, not {rate}"
                )));
            }
        }
        if config.burst == Some(0) || config.max_concurrent == Some(0) {
            return Err(StoreError::Conflict(format!(
                "queue `{queue}`: burst and max_concurrent must be at least 1 (leave them unset for no limit)"
            )));
        }
        self.store.configure_queue(queue, config).await
    }

    /// Lists tasks, newest first: a page of `query.limit` (100 if 0) before `query.before`,
    /// without payloads (`null`) unless `query.with_payload` (see [`TaskQuery`]).
    pub async fn list(&self, query: &TaskQuery) -> Result<Vec<TaskInfo>, StoreError> {
        self.store.list_tasks(query).await
    }

    /// One task with every attempt and its error.
    pub async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
        self.store.task(id).await
    }

    /// Makes a pending task due now.
    pub async fn run_now(&self, id: TaskId) -> Result<(), StoreError> {
        self.store.run_now(id, self.clock.now()).await
    }

    /// Deletes a task. A named task's name stays taken for its tombstone window (from now
    /// if it was live, from its end if it had finished), as App Engine and Cloud Tasks do.
    pub async fn delete(&self, id: TaskId) -> Result<(), StoreError> {
        self.store.delete(id, self.clock.now()).await
    }

    /// Puts a dead or failed task back in its queue with fresh attempts.
    pub async fn retry(&self, id: TaskId) -> Result<(), StoreError> {
        self.store.retry(id, self.clock.now()).await
    }

    /// Puts every dead or failed task matching `query` back in its queue with fresh
    /// attempts, as [`Queue::retry`] does for one; returns how many it retried.
    ///
    /// `query` selects as in [`Queue::list`] (queue, task name, [`TaskQuery::args_contains`],
    /// ids below `before`), with its state `None` (dead and failed) or `Some(Dead)` or
    /// `Some(Failed)`; another state fails with [`StoreError::Conflict`] before anything
    /// changes. `limit` and `with_payload` are ignored: every matching task is retried,
    /// not one page. It goes newest first in batches of [`RETRY_BATCH`] ids, each batch
    /// read in one short query and retried in one short transaction
    /// ([`Store::retry_many`]), so no lock is held for long and workers claim the retried
    /// tasks while it goes on. A task
    /// that stops matching meanwhile (retried, deleted, or pruned by someone else), or
    /// whose unique name another live task holds, is left as it is and not counted; a
    /// task that becomes dead or failed while it runs is retried if its id is below the
    /// batch being read. Fails with the first store error, the batches before it
    /// retried.
    pub async fn retry_matching(&self, query: &TaskQuery) -> Result<u64, StoreError> {
        let states = match query.state {
            None => vec![TaskState::Dead, TaskState::Failed],
            Some(s @ (TaskState::Dead | TaskState::Failed)) => vec![s],
            Some(s) => {
                return Err(StoreError::Conflict(format!(
                    "only dead or failed tasks can be retried, not {s} ones"
                )))
            }
        };
        let mut retried = 0;
        for state in states {
            let mut page = TaskQuery {
                state: Some(state),
                limit: RETRY_BATCH,
                with_payload: false,
                ..query.clone()
            };
            loop {
                let batch = self.store.list_tasks(&page).await?;
                let ids: Vec<TaskId> = batch.iter().map(|t| t.id).collect();
                retried += self.store.retry_many(&ids, self.clock.now()).await?;
                match batch.last() {
                    Some(last) if batch.len() == RETRY_BATCH => page.before = Some(last.id),
                    _ => break,
                }
            }
        }
        Ok(retried)
    }

    /// Stops workers claiming from a queue.
    pub async fn pause(&self, queue: &str) -> Result<(), StoreError> {
        self.store.set_paused(queue, true).await
    }

    /// Lets workers claim from a queue again.
    pub async fn resume(&self, queue: &str) -> Result<(), StoreError> {
        self.store.set_paused(queue, false).await
    }

    /// Deletes every pending task of a queue; returns how many. The names of purged named
    /// tasks stay taken for their tombstone windows from now.
    pub async fn purge(&self, queue: &str) -> Result<u64, StoreError> {
        self.store.purge(queue, self.clock.now()).await
    }

    /// Progress of an iterative run.
    pub async fn iteration(&self, run: TaskId) -> Result<IterationInfo, StoreError> {
        self.store
            .iteration(run)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("iteration run {run}")))
    }

    /// Recent iterative runs, newest first.
    pub async fn iterations(&self, limit: usize) -> Result<Vec<IterationInfo>, StoreError> {
        self.store.iterations(limit).await
    }

    /// Cancels an iterative run and every live step of it, at once. Once this returns, the
    /// task's function is not called again for the run: a step between batches stops
    /// before its next call (it asks the store first), and a step running a batch is
    /// stopped by its worker at its next lease renewal (within a quarter of the lease)
    /// or, if the batch ends first, its checkpoint is refused. That batch's progress is
    /// not counted. Nothing of the run is retried or continued.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown run and
    /// [`StoreError::Conflict`] for a run that is not running (done, failed, dead, or
    /// cancelled already).
    pub async fn cancel_iteration(&self, run: TaskId) -> Result<(), StoreError> {
        self.store.cancel_iteration(run, self.clock.now()).await?;
        // Counted once per run, with the run's labels (a read of the run record; a run
        // pruned in between is left uncounted).
        if let Ok(Some(info)) = self.store.iteration(run).await {
            crate::metrics::cancelled(&info.task, &info.queue);
        }
        Ok(())
    }

    /// Cancels a task: pending, running, or an iterative run.
    ///
    /// - A pending task ends `cancelled` at once and never runs:
    ///   [`CancelOutcome::Cancelled`].
    /// - A running task is marked, atomically: [`CancelOutcome::Requested`]
    ///   ([`CancelOutcome::AlreadyRequested`] when it was marked before). Its worker
    ///   learns of it at its next lease renewal (every quarter of the lease: within 7.5 s
    ///   with the default 30 s lease), or at once where the store can say so (memory, and
    ///   SQLite within the process that cancels; PostgreSQL from any process, through
    ///   `NOTIFY`), and sets `ctx.is_cancelled()`. A task that does not return within the
    ///   worker's cancel grace ([`WorkerBuilder::cancel_grace`](crate::WorkerBuilder::cancel_grace),
    ///   default 10 s) is stopped. Whatever the attempt then ends with (`Ok`, an error, a
    ///   panic, being stopped), it is recorded with its outcome in the error and the task
    ///   ends `cancelled`, never retried. If its worker died, the task ends `cancelled` when
    ///   its lease lapses (at the next claim, of any queue), or at once if its lease had
    ///   lapsed before the cancel ([`CancelOutcome::Cancelled`]), without running again. An attempt recorded before the cancel
    ///   keeps its outcome: a task that finished first is refused (below); one pending
    ///   again for a retry is cancelled as pending.
    /// - An iterative run's id, or the id of any step of it: the run is cancelled as
    ///   [`Queue::cancel_iteration`] does ([`CancelOutcome::Cancelled`]).
    ///
    /// Counted once in [`taskq_tasks_cancelled_total`](crate::metrics::CANCELLED) when it
    /// succeeds (the cancel decides the task's end from then on); a repeated cancel
    /// ([`CancelOutcome::AlreadyRequested`]) is not counted again.
    ///
    /// Errors: [`StoreError::NotFound`] for an unknown id; [`StoreError::Conflict`] for a
    /// task that has finished (done, failed, dead or cancelled) or a run that is not
    /// running.
    pub async fn cancel(&self, id: TaskId) -> Result<CancelOutcome, StoreError> {
        match self.store.cancel(id, self.clock.now()).await {
            Ok(outcome) => {
                // Labels for the counter: a read (a task pruned in between is left
                // uncounted, as for runs). A repeated cancel changed nothing: not counted.
                if outcome == CancelOutcome::AlreadyRequested {
                    return Ok(outcome);
                }
                if let Ok(Some(d)) = self.store.task(id).await {
                    crate::metrics::cancelled(&d.info.task, &d.info.queue);
                }
                Ok(outcome)
            }
            Err(e @ (StoreError::NotFound(_) | StoreError::Conflict(_))) => {
                // An iteration run's id (its first step's, which may have been pruned
                // while the run goes on), or a step of a run: the run.
                let run = match self.store.iteration(id).await? {
                    Some(_) => Some(id),
                    None => match &e {
                        StoreError::Conflict(_) => {
                            self.store.task(id).await?.and_then(|d| d.info.run)
                        }
                        _ => None,
                    },
                };
                match run {
                    Some(run) => {
                        self.cancel_iteration(run).await?;
                        Ok(CancelOutcome::Cancelled)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Tasks done, failed and dead per minute over the last `minutes` minutes, by their
    /// finish times: exactly `minutes` entries, oldest first, each a whole UTC minute, the
    /// last one the current minute (still filling); minutes with nothing finished count
    /// zero. The console's throughput chart asks for 60 (the last hour). See
    /// [`Store::finished_per_minute`] for what is counted.
    pub async fn throughput(&self, minutes: u32) -> Result<Vec<FinishedMinute>, StoreError> {
        let current = FinishedMinute::minute_of(self.clock.now());
        let first = Timestamp(
            current
                .0
                .saturating_sub(i64::from(minutes.saturating_sub(1)) * store::MINUTE_MS),
        );
        let until = Timestamp(current.0.saturating_add(store::MINUTE_MS));
        let found = self.store.finished_per_minute(first, until).await?;
        Ok((0..i64::from(minutes))
            .map(|i| {
                let minute = Timestamp(first.0.saturating_add(i * store::MINUTE_MS));
                found
                    .iter()
                    .find(|m| m.minute == minute)
                    .copied()
                    .unwrap_or(FinishedMinute {
                        minute,
                        ..FinishedMinute::default()
                    })
            })
            .collect())
    }

    /// Deletes now what retention no longer keeps (workers also do it about every minute):
    /// finished tasks past their queue's retention (by default done and cancelled ones 24
    /// hours after they finished, failed and dead ones 7 days; see [`crate::retention`]),
    /// with their attempts and run records, and tombstones whose hold has passed. Never a
    /// pending or running task; a pruned named task's name stays taken until its tombstone
    /// window ends. Deletes [`PRUNE_BATCH`](crate::retention::PRUNE_BATCH) rows per
    /// transaction and returns what it removed, by state. On PostgreSQL, when another
    /// process is pruning the same store at that moment, it stops and sets
    /// [`PruneReport::busy`] (the other one removes the same rows).
    pub async fn prune(&self) -> Result<PruneReport, StoreError> {
        self.store
            .prune(self.clock.now(), crate::retention::PRUNE_BATCH)
            .await
    }
}

/// When a task should first be due.
#[derive(Clone, Copy, Debug, PartialEq)]
enum When {
    Now,
    After(Duration),
    At(Timestamp),
}

/// Options for starting one task, made by the generated `NAME::builder(args..)`.
#[derive(Debug)]
#[must_use = "a TaskBuilder does nothing until `.start(&queue)` is awaited"]
pub struct TaskBuilder {
    def: &'static TaskDef,
    payload: Result<serde_json::Value, StartError>,
    filter: Option<serde_json::Value>,
    when: When,
    unique_name: Option<String>,
    tombstone: Duration,
    unique: Option<UniqueArgs>,
    unique_for: Option<Duration>,
    on_conflict: OnConflict,
    queue: Option<String>,
    priority: Option<i32>,
    trace: Option<String>,
}

impl TaskBuilder {
    /// A builder for `def` with an encoded payload (used by generated code).
    #[doc(hidden)]
    pub fn new(
        def: &'static TaskDef,
        payload: Result<serde_json::Value, StartError>,
    ) -> TaskBuilder {
        TaskBuilder {
            def,
            payload,
            filter: None,
            when: When::Now,
            unique_name: None,
            tombstone: DEFAULT_TOMBSTONE,
            unique: None,
            unique_for: None,
            on_conflict: OnConflict::Refuse,
            queue: None,
            priority: None,
            // Taken here, in the caller's span (the builder is made where the task is
            // started): see `crate::trace`.
            trace: crate::trace::current(),
        }
    }

    /// A builder for the first step of an iterative run (used by generated code).
    #[doc(hidden)]
    pub fn new_iterative(
        def: &'static TaskDef,
        filter: Result<serde_json::Value, StartError>,
        args: Result<serde_json::Value, StartError>,
    ) -> TaskBuilder {
        let (payload, filter) = match (filter, args) {
            (Ok(f), Ok(a)) => (
                Ok(serde_json::json!({ "filter": f.clone(), "args": a })),
                Some(f),
            ),
            (Err(e), _) | (_, Err(e)) => (Err(e), None),
        };
        let mut b = TaskBuilder::new(def, payload);
        b.filter = filter;
        b
    }

    /// Not due before `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.when = When::After(delay);
        self
    }

    /// Not due before `eta`, on the store's clock: compute it from
    /// [`Queue::clock`]`().now()` (on PostgreSQL the database's time, not this host's).
    pub fn at(mut self, eta: Timestamp) -> Self {
        self.when = When::At(eta);
        self
    }

    /// A de-duplication name: starting it again while the task is live, or within the
    /// tombstone window after it finished or was deleted or purged (1 hour unless
    /// [`TaskBuilder::tombstone`] says otherwise), returns an "already exists" error.
    /// A name may not start with [`KEY_PREFIX`](unique::KEY_PREFIX) (`args-sha256:`), which
    /// marks the keys of [`TaskBuilder::unique_args`]; nor go with a unique key.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.unique_name = Some(name.into());
        self
    }

    /// How long the name stays taken after the task finished, or was deleted or purged.
    pub fn tombstone(mut self, window: Duration) -> Self {
        self.tombstone = window;
        self
    }

    /// Unique by all its arguments: refused while a task of the same task name, queue and
    /// arguments is pending or running, or ended within [`TaskBuilder::unique_for`]
    /// (default zero). See [`crate::unique`] for the key and the rules. Not with
    /// [`TaskBuilder::name`] (the start fails with [`StartError::Unique`]).
    pub fn unique_args(mut self) -> Self {
        self.unique = Some(UniqueArgs::All);
        self
    }

    /// Unique by the named arguments only (in any order), as [`TaskBuilder::unique_args`]
    /// is by all. A name that is not one of the task's arguments fails the start with
    /// [`StartError::Unique`] (the macro's `unique = [..]` checks it at compile time).
    pub fn unique_by<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.unique = Some(UniqueArgs::Only(args.into_iter().map(Into::into).collect()));
        self
    }

    /// How long a finished task keeps its unique key taken, counted from its end
    /// (milliseconds are kept; default [`DEFAULT_UNIQUE_FOR`](unique::DEFAULT_UNIQUE_FOR),
    /// zero: only while pending or running). Needs [`TaskBuilder::unique_args`] or
    /// [`TaskBuilder::unique_by`], else the start fails with [`StartError::Unique`].
    pub fn unique_for(mut self, period: Duration) -> Self {
        self.unique_for = Some(period);
        self
    }

    /// What a start whose unique key is taken does: refuse (the default), or replace the
    /// arguments and due time of the pending task holding it ([`OnConflict::Replace`];
    /// [`TaskBuilder::submit`] tells which happened). Needs a unique key.
    pub fn on_conflict(mut self, mode: OnConflict) -> Self {
        self.on_conflict = mode;
        self
    }

    /// Another queue than the task's default.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Another priority than the task's default (higher runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The trace context to store with the task, as a W3C `traceparent` value
    /// (`00-{trace id}-{span id}-{flags}`, e.g. the header of the request that starts it):
    /// each attempt's span joins that trace ([`crate::trace`]). Default: the current
    /// span's OpenTelemetry context when the builder was made, with the `opentelemetry`
    /// feature; none without it. At most
    /// [`MAX_NAME_BYTES`](crate::value::MAX_NAME_BYTES), no NUL byte (else the start fails
    /// with [`StoreError::InvalidValue`]); a value that is not a valid `traceparent` is
    /// stored and shown but links nothing.
    pub fn trace_parent(mut self, traceparent: impl Into<String>) -> Self {
        self.trace = Some(traceparent.into());
        self
    }

    /// Stores the task; returns its id (for an iterative task, the run's id), or, when a
    /// pending task was replaced ([`OnConflict::Replace`]), that task's id. A unique key
    /// that is taken fails with [`StartError::Duplicate`] ([`crate::unique`]).
    pub async fn start(self, queue: &Queue) -> Result<TaskId, StartError> {
        self.submit(queue).await.map(Started::id)
    }

    /// Stores the task as [`TaskBuilder::start`] does, and says whether it was inserted
    /// or replaced a pending one ([`OnConflict::Replace`]).
    ///
    /// Replace: the pending task holding the key takes the new arguments and due time
    /// (one atomic update); if none is pending, the task is inserted; if the insert finds
    /// the key taken (by a running or recently finished task), the start is refused with
    /// [`StartError::Duplicate`]. A start racing another's insert of the same key tries
    /// the update again (up to three rounds), so two concurrent replacing starts leave
    /// one pending task.
    pub async fn submit(self, queue: &Queue) -> Result<Started, StartError> {
        let now = queue.clock.now();
        let replace = self.on_conflict == OnConflict::Replace;
        let task = self.into_new_task(now)?;
        let (name, queue_name) = (task.task.clone(), task.queue.clone());
        let key = task.unique_name.clone();
        if let (true, Some(key)) = (replace, key.as_deref()) {
            store::check_new_tasks(std::slice::from_ref(&task))?;
            for _ in 0..3 {
                if let Some(id) = queue
                    .store
                    .replace_pending(key, &task.payload, task.run_at)
                    .await?
                {
                    return Ok(Started::Replaced(id));
                }
                match queue.store.enqueue(vec![task.clone()], now).await {
                    Ok(ids) => {
                        crate::metrics::started([(name.as_str(), queue_name.as_str())]);
                        return first_id(ids).map(Started::Inserted);
                    }
                    Err(StoreError::AlreadyExists(_)) => {
                        match queue.store.unique_holder(key, now).await? {
                            // Inserted by a concurrent start: replace it in the next round.
                            Some((_, TaskState::Pending)) => continue,
                            _ => break,
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return Err(queue.refused(name, key.to_string()).await);
        }
        match queue.store.enqueue(vec![task], now).await {
            Ok(ids) => {
                crate::metrics::started([(name.as_str(), queue_name.as_str())]);
                first_id(ids).map(Started::Inserted)
            }
            Err(StoreError::AlreadyExists(n)) => Err(queue.refused(name, n).await),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts the task inside the application's own PostgreSQL transaction: it exists if
    /// and only if `tx` commits, and workers are woken at that commit.
    ///
    /// ```no_run
    /// # use taskq_runtime::{task, TaskError};
    /// # #[task] async fn send_email(to: String) -> Result<(), TaskError> { Ok(()) }
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use taskq_runtime::store::postgres::PostgresStore;
    /// use taskq_runtime::tokio_postgres::{self, NoTls};
    ///
    /// let store = PostgresStore::open("postgres://app@127.0.0.1/app").await?;
    /// let (mut client, conn) = tokio_postgres::connect("host=127.0.0.1 user=app dbname=app", NoTls).await?;
    /// tokio::spawn(conn);
    /// let tx = client.transaction().await?;
    /// tx.execute("INSERT INTO users (email) VALUES ($1)", &[&"ada@example.org"]).await?;
    /// send_email::builder("ada@example.org".into()).start_in(&store, &tx).await?;
    /// tx.commit().await?; // the user and the welcome email, or neither
    /// # Ok(()) }
    /// # fn main() {}
    /// ```
    #[cfg(feature = "postgres")]
    pub async fn start_in(
        self,
        store: &crate::store::postgres::PostgresStore,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<TaskId, StartError> {
        // The database's time, as every other start on PostgreSQL uses.
        let now = store.now();
        if self.on_conflict == OnConflict::Replace {
            return Err(StartError::Unique {
                task: self.def.name.to_string(),
                reason: "`start_in` cannot replace a pending task (on_conflict replace); start it with `start`".into(),
            });
        }
        let task = self.into_new_task(now)?;
        let (name, queue_name) = (task.task.clone(), task.queue.clone());
        let ids = match store.enqueue_in(tx, vec![task], now).await {
            Ok(ids) => ids,
            Err(StoreError::AlreadyExists(n)) if n.starts_with(unique::KEY_PREFIX) => {
                let existing = match crate::store::Store::unique_holder(store, &n, now).await {
                    Ok(Some((id, _))) => Some(id),
                    _ => None,
                };
                return Err(StartError::Duplicate {
                    task: name,
                    key: n,
                    existing,
                });
            }
            Err(e) => return Err(e.into()),
        };
        // Counted when stored in the transaction: a rollback afterwards still counts.
        crate::metrics::started([(name.as_str(), queue_name.as_str())]);
        ids.into_iter().next().ok_or_else(|| {
            StartError::Store(StoreError::Backend("the store returned no id".into()))
        })
    }

    pub(crate) fn into_new_task(self, now: Timestamp) -> Result<NewTask, StartError> {
        let payload = self.payload?;
        let task = self.def.name;
        let fail = |reason: &str| {
            Err(StartError::Unique {
                task: task.to_string(),
                reason: reason.to_string(),
            })
        };
        let queue = self.queue.unwrap_or_else(|| self.def.queue.to_string());
        let (unique_name, tombstone) = match (&self.unique, self.unique_name) {
            (Some(_), Some(_)) => {
                return fail("a task has a de-duplication name or a unique key, not both")
            }
            (Some(u), None) => {
                if self.on_conflict == OnConflict::Replace
                    && matches!(self.def.kind, TaskKind::Iterative { .. })
                {
                    return fail("an iterative task cannot replace a pending one (on_conflict replace): its filter is fixed when the run starts");
                }
                // An iterative run's payload is `{"filter": .., "args": {..}}`: all of it
                // for `unique_args`, its arguments for `unique_by`.
                let keyed = match (u, self.def.kind, payload.get("args")) {
                    (UniqueArgs::Only(_), TaskKind::Iterative { .. }, Some(args)) => args,
                    _ => &payload,
                };
                let key =
                    unique::key(task, &queue, keyed, u).map_err(|reason| StartError::Unique {
                        task: task.to_string(),
                        reason: format!("cannot make its unique key: {reason}"),
                    })?;
                (
                    Some(key),
                    self.unique_for.unwrap_or(unique::DEFAULT_UNIQUE_FOR),
                )
            }
            (None, name) => {
                if self.unique_for.is_some() || self.on_conflict == OnConflict::Replace {
                    return fail("`unique_for` and `on_conflict` need a unique key: call `unique_args` or `unique_by`");
                }
                if name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(unique::KEY_PREFIX))
                {
                    return fail(&format!(
                        "a de-duplication name cannot start with `{}`, which marks unique keys",
                        unique::KEY_PREFIX
                    ));
                }
                (name, self.tombstone)
            }
        };
        let run_at = match self.when {
            When::Now => now,
            When::After(d) => now.add(d),
            When::At(t) => t,
        };
        let iteration = match self.def.kind {
            TaskKind::Iterative { .. } => Some(NewIteration {
                filter: self.filter.unwrap_or(serde_json::Value::Null),
            }),
            TaskKind::Plain => None,
        };
        Ok(NewTask {
            task: task.to_string(),
            queue,
            payload,
            priority: self.priority.unwrap_or(self.def.options.priority),
            run_at,
            unique_name,
            tombstone,
            iteration,
            trace: self.trace,
        })
    }
}

/// The one id of a one-task enqueue.
fn first_id(ids: Vec<TaskId>) -> Result<TaskId, StartError> {
    ids.into_iter()
        .next()
        .ok_or_else(|| StartError::Store(StoreError::Backend("the store returned no id".into())))
}
