//! Issue 13, cancelling a running task, through a real worker on each store: the task is
//! told (`ctx.is_cancelled()`), ends cancelled and is not retried whatever it returns; a
//! task that ignores the cancel is stopped after the worker's cancel grace. Each case
//! prints how long the cancel took to reach the task (the report's figures; no bound is
//! asserted on it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskq_runtime::policy::CANCELLED;
use taskq_runtime::{task, CancelOutcome, Context, Queue, Store, TaskError, TaskState, Worker};
use taskq_tests::wait_until;

/// When each store's watching task saw the cancel, by queue.
static SEEN: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());
static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs until told to stop, then returns a retryable error (which must not be retried).
#[task(queue = "cancel-watch", max_attempts = 5)]
async fn watches_cancel(ctx: Context) -> Result<(), TaskError> {
    STARTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(ctx.queue().to_string());
    while !ctx.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    SEEN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((ctx.queue().to_string(), Instant::now()));
    Err(TaskError::retry("stopped on request"))
}

static IGNORED_DROPPED: AtomicBool = AtomicBool::new(false);

/// Sets [`IGNORED_DROPPED`] when its future is dropped (stopped by the worker).
struct OnDrop;
impl Drop for OnDrop {
    fn drop(&mut self) {
        IGNORED_DROPPED.store(true, Ordering::SeqCst);
    }
}

/// Ignores the cancel: sleeps an hour.
#[task(queue = "cancel-ignore", max_attempts = 5)]
async fn ignores_cancel(ctx: Context) -> Result<(), TaskError> {
    STARTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(ctx.queue().to_string());
    let _guard = OnDrop;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

fn started(queue: &str) -> bool {
    STARTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|q| q == queue)
}

fn seen(queue: &str) -> Option<Instant> {
    SEEN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(q, _)| q == queue)
        .map(|(_, t)| *t)
}

/// A watching task on `queue` (each store its own queue, the tests share the process),
/// cancelled while it runs, sees `ctx.is_cancelled()`, and ends cancelled with its one
/// attempt recorded, though it returned a retryable error.
async fn running_task_sees_the_cancel(store: Arc<dyn Store>, queue: &str) {
    let q = Queue::new(store.clone());
    let id = watches_cancel::builder()
        .queue(queue)
        .start(&q)
        .await
        .expect("start");
    let w = Worker::builder(store)
        .queues([queue])
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("worker")
        .spawn();
    wait_until("the task runs", Duration::from_secs(60), || async {
        started(queue)
    })
    .await;
    let asked = Instant::now();
    assert_eq!(
        q.cancel(id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    wait_until("the task ends", Duration::from_secs(120), || async {
        q.task(id)
            .await
            .ok()
            .flatten()
            .is_some_and(|d| !d.info.state.is_live())
    })
    .await;
    let reached = seen(queue).expect("the task saw ctx.is_cancelled()");
    eprintln!(
        "{queue}: the cancel reached the running task in {:?}",
        reached.saturating_duration_since(asked)
    );
    let d = q.task(id).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Cancelled, "{d:?}");
    assert_eq!(d.attempts.len(), 1, "{:?}", d.attempts);
    assert_eq!(d.attempts[0].outcome, CANCELLED.0);
    let error = d.attempts[0].error.clone().unwrap_or_default();
    assert!(
        error.starts_with(CANCELLED.1) && error.contains("stopped on request"),
        "{error}"
    );
    assert_eq!(w.stats().cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(w.stats().retried.load(Ordering::SeqCst), 0);
    w.shutdown().await.expect("shutdown");
    assert!(
        matches!(
            q.cancel(id).await,
            Err(taskq_runtime::StoreError::Conflict(_))
        ),
        "a cancelled task cannot be cancelled again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_sees_the_cancel_memory() {
    running_task_sees_the_cancel(taskq_tests::memory_store().await, "cancel-watch-memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_sees_the_cancel_sqlite() {
    running_task_sees_the_cancel(taskq_tests::sqlite_store().await, "cancel-watch-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_sees_the_cancel_postgres() {
    running_task_sees_the_cancel(taskq_tests::postgres_store().await, "cancel-watch-pg").await;
}

/// Another process's cancel reaches a SQLite worker at its next lease renewal (no
/// in-process wake-up): here a second store value on the same file stands for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_sqlite_handle_reaches_the_worker_at_its_renewal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("taskq.db").display());
    let worker_store = taskq_runtime::store::open(&url).await.expect("open");
    let other = Queue::open(&url).await.expect("open again");
    let queue = "cancel-watch-sqlite-other";
    let id = watches_cancel::builder()
        .queue(queue)
        .start(&other)
        .await
        .expect("start");
    let w = Worker::builder(worker_store)
        .queues([queue])
        .lease(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("worker")
        .spawn();
    wait_until("the task runs", Duration::from_secs(60), || async {
        started(queue)
    })
    .await;
    let asked = Instant::now();
    assert_eq!(
        other.cancel(id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    wait_until("the task ends", Duration::from_secs(120), || async {
        other
            .task(id)
            .await
            .ok()
            .flatten()
            .is_some_and(|d| !d.info.state.is_live())
    })
    .await;
    let reached = seen(queue).expect("the task saw ctx.is_cancelled()");
    eprintln!(
        "{queue} (2 s lease): the cancel reached the running task in {:?}",
        reached.saturating_duration_since(asked)
    );
    assert_eq!(
        other
            .task(id)
            .await
            .expect("task")
            .expect("exists")
            .info
            .state,
        TaskState::Cancelled
    );
    w.shutdown().await.expect("shutdown");
}

/// A task that ignores the cancel is stopped (its future dropped) after the worker's
/// cancel grace, and ends cancelled with its attempt recorded, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ignores_the_cancel_is_stopped_after_the_grace() {
    let store = taskq_tests::memory_store().await;
    let q = Queue::new(store.clone());
    let queue = "cancel-ignore";
    let id = ignores_cancel::builder().start(&q).await.expect("start");
    let grace = Duration::from_millis(300);
    let w = Worker::builder(store)
        .queues([queue])
        .cancel_grace(grace)
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("worker")
        .spawn();
    wait_until("the task runs", Duration::from_secs(60), || async {
        started(queue)
    })
    .await;
    let asked = Instant::now();
    let cancelled_at = q.clock().now();
    assert_eq!(
        q.cancel(id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    wait_until("the task ends", Duration::from_secs(120), || async {
        q.task(id)
            .await
            .ok()
            .flatten()
            .is_some_and(|d| !d.info.state.is_live())
    })
    .await;
    eprintln!(
        "a task ignoring the cancel ended after {:?} (grace {grace:?})",
        asked.elapsed()
    );
    assert!(
        IGNORED_DROPPED.load(Ordering::SeqCst),
        "its future was dropped"
    );
    let d = q.task(id).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Cancelled, "{d:?}");
    assert_eq!(d.attempts.len(), 1, "{:?}", d.attempts);
    let error = d.attempts[0].error.clone().unwrap_or_default();
    assert!(error.contains("cancel grace"), "{error}");
    let ended = d.info.finished_at.expect("finished");
    assert!(
        ended >= cancelled_at.add(grace),
        "stopped before the grace: cancelled at {cancelled_at:?}, ended at {ended:?}"
    );
    // Nothing runs again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        STARTED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|q| *q == queue)
            .count(),
        1
    );
    w.shutdown().await.expect("shutdown");
}

/// `Queue::cancel` of a continuation step's id (not the run's) cancels its run, as
/// `cancel_iteration` does; the store itself refuses a step with `Conflict`.
#[tokio::test]
async fn cancelling_a_step_cancels_its_run() {
    use taskq_runtime::store::{ClaimRequest, Finish, NewIteration, NewTask, Outcome, RunState};
    let store = taskq_tests::memory_store().await;
    let q = Queue::new(store.clone());
    let now = q.clock().now();
    let run = store
        .enqueue(
            vec![NewTask {
                task: "cancel::walk".into(),
                queue: "steps".into(),
                payload: serde_json::json!({ "filter": {}, "args": {} }),
                priority: 0,
                run_at: now,
                unique_name: None,
                tombstone: Duration::from_secs(60),
                iteration: Some(NewIteration {
                    filter: serde_json::json!({}),
                }),
                trace: None,
            }],
            now,
        )
        .await
        .expect("enqueue")[0];
    let claim = ClaimRequest {
        queues: vec!["steps".into()],
        worker: "w".into(),
        limit: 1,
        lease: Duration::from_secs(60),
        now,
    };
    let c = store.claim(&claim).await.expect("claim");
    let r = store
        .finish(
            vec![Finish {
                lease: c[0].lease,
                outcome: Outcome::Continue { run_at: now },
                started_at: now,
            }],
            "w",
            now,
        )
        .await
        .expect("finish");
    assert!(r.iter().all(Result::is_ok));
    let step = store.claim(&claim).await.expect("claim")[0].lease.id;
    assert_ne!(step, run);
    assert!(matches!(
        store.cancel(step, now).await,
        Err(taskq_runtime::StoreError::Conflict(_))
    ));
    assert_eq!(
        q.cancel(step).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        q.iteration(run).await.expect("run").state,
        RunState::Cancelled
    );
    assert_eq!(
        q.task(step)
            .await
            .expect("task")
            .expect("exists")
            .info
            .state,
        TaskState::Cancelled
    );
}

/// Ignores the cancel and the shutdown: sleeps an hour.
#[task(queue = "cancel-shutdown", max_attempts = 5)]
async fn ignores_cancel_and_shutdown(ctx: Context) -> Result<(), TaskError> {
    STARTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(ctx.queue().to_string());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

/// A graceful shutdown right after a cancel, before the cancel grace ends: the worker
/// releases the task (pending again, for an ordinary task), but a cancelled one ends
/// cancelled, its attempt recorded, and no later worker runs it again (SQLite file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_right_after_a_cancel_ends_the_task_cancelled() {
    let store = taskq_tests::sqlite_store().await;
    let q = Queue::new(store.clone());
    let queue = "cancel-shutdown";
    let id = ignores_cancel_and_shutdown::builder()
        .start(&q)
        .await
        .expect("start");
    let worker = |store: Arc<dyn Store>| {
        Worker::builder(store)
            .queues([queue])
            .cancel_grace(Duration::from_secs(600))
            .shutdown_grace(Duration::from_millis(500))
            .poll_interval(Duration::from_millis(50))
            .build()
            .expect("worker")
            .spawn()
    };
    let w = worker(store.clone());
    wait_until("the task runs", Duration::from_secs(60), || async {
        started(queue)
    })
    .await;
    assert_eq!(
        q.cancel(id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    w.shutdown().await.expect("shutdown");
    let d = q.task(id).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Cancelled, "{d:?}");
    assert_eq!(d.attempts.len(), 1, "{:?}", d.attempts);
    assert_eq!(d.attempts[0].outcome, CANCELLED.0);
    let error = d.attempts[0].error.clone().unwrap_or_default();
    assert!(error.contains("released it at shutdown"), "{error}");
    // A new worker on the queue finds nothing to run.
    let w = worker(store);
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.shutdown().await.expect("shutdown");
    let runs = STARTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|q| *q == queue)
        .count();
    assert_eq!(runs, 1);
}
