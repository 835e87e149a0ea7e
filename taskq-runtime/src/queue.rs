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

    /// Starts many tasks in one call (one transaction): all are stored or none.
    pub async fn start_many(
        &self,
        builders: impl IntoIterator<Item = TaskBuilder>,
    ) -> Result<Vec<TaskId>, StartError> {
        let now = self.clock.now();
        let mut tasks = Vec::new();
        for b in builders {
            tasks.push(b.into_new_task(now)?);
        }
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<(String, String)> = tasks
            .iter()
            .map(|t| (t.task.clone(), t.queue.clone()))
            .collect();
        let ids = self.store.enqueue(tasks, now).await?;
        crate::metrics::started(names.iter().map(|(t, q)| (t.as_str(), q.as_str())));
        Ok(ids)
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
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.unique_name = Some(name.into());
        self
    }

    /// How long the name stays taken after the task finished, or was deleted or purged.
    pub fn tombstone(mut self, window: Duration) -> Self {
        self.tombstone = window;
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

    /// Stores the task; returns its id (for an iterative task, the run's id).
    pub async fn start(self, queue: &Queue) -> Result<TaskId, StartError> {
        let now = queue.clock.now();
        let task = self.into_new_task(now)?;
        let (name, queue_name) = (task.task.clone(), task.queue.clone());
        let ids = queue.store.enqueue(vec![task], now).await?;
        crate::metrics::started([(name.as_str(), queue_name.as_str())]);
        ids.into_iter().next().ok_or_else(|| {
            StartError::Store(StoreError::Backend("the store returned no id".into()))
        })
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
        let task = self.into_new_task(now)?;
        let (name, queue_name) = (task.task.clone(), task.queue.clone());
        let ids = store.enqueue_in(tx, vec![task], now).await?;
        // Counted when stored in the transaction: a rollback afterwards still counts.
        crate::metrics::started([(name.as_str(), queue_name.as_str())]);
        ids.into_iter().next().ok_or_else(|| {
            StartError::Store(StoreError::Backend("the store returned no id".into()))
        })
    }

    pub(crate) fn into_new_task(self, now: Timestamp) -> Result<NewTask, StartError> {
        let payload = self.payload?;
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
            task: self.def.name.to_string(),
            queue: self.queue.unwrap_or_else(|| self.def.queue.to_string()),
            payload,
            priority: self.priority.unwrap_or(self.def.options.priority),
            run_at,
            unique_name: self.unique_name,
            tombstone: self.tombstone,
            iteration,
            trace: self.trace,
        })
    }
}
