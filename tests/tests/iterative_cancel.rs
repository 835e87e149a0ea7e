//! Cancelling an iterative run while one of its steps sits between its claim (or its last
//! checkpoint) and the next call of the task's function: once `cancel_iteration` has
//! returned, the function is never called again for that run, on every store. And a step
//! left live under a run that has ended (what the old PostgreSQL race between cancel and a
//! step's hand-over left behind, or a hand edit) stops without calling the function and
//! without a retry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use taskq_runtime::store::{RunState, TaskQuery};
use taskq_runtime::testing::{Harness, HarnessError};
use taskq_runtime::{
    iterative_task, Context, Queue, Store, StoreError, TaskError, TaskId, TaskState,
};
use taskq_tests::models::{AllTickets, Gate, Ticket};

/// One ticket per batch; quick retries, so a step that were retried would show at once.
#[iterative_task(
    model = Ticket,
    batch_size = 1,
    queue = "tickets",
    max_attempts = 5,
    min_backoff = "10ms",
    max_backoff = "10ms"
)]
async fn punch(ctx: Context, tickets: Vec<Ticket>) -> Result<(), TaskError> {
    let gate = ctx.state::<Arc<Gate>>()?;
    gate.calls.fetch_add(1, Ordering::SeqCst);
    let _ = tickets;
    Ok(())
}

const LIMIT: Duration = Duration::from_secs(60);

/// No step of `run` is pending or running.
async fn no_live_step(q: &Queue, run: TaskId) {
    let live: Vec<_> = q
        .list(&TaskQuery {
            limit: 1_000,
            ..TaskQuery::default()
        })
        .await
        .expect("list")
        .into_iter()
        .filter(|t| t.run == Some(run) && t.state.is_live())
        .collect();
    assert!(live.is_empty(), "steps live under the ended run: {live:?}");
}

/// Starts a run of three tickets, holds the `hold`-th read of the model (so the step waits
/// right before a call of the function), cancels the run, lets the read go on, and checks
/// that the function was not called after the cancel and that the step stopped without a
/// retry.
async fn cancel_while_a_read_is_held(store: Arc<dyn Store>, hold: usize) {
    let gate = Gate::new(3, hold);
    let h = Arc::new(Harness::with_store(store).state(gate.clone()).max_runs(20));
    let q = h.queue();
    let run = punch::start(&q, AllTickets).await.expect("start");
    let driver = {
        let h = h.clone();
        tokio::spawn(async move { h.run_due().await })
    };
    gate.wait_entered(LIMIT).await;
    let before = gate.calls();
    assert_eq!(before, hold - 1, "every batch before the held read ran");
    q.cancel_iteration(run).await.expect("cancel");
    gate.release.add_permits(1);
    let drained = tokio::time::timeout(LIMIT, driver)
        .await
        .expect("the step ends")
        .expect("join");
    assert_eq!(
        gate.calls(),
        before,
        "the task's function was called after cancel_iteration returned"
    );
    // The cancel took the running step's lease, so the step's own `stopped` outcome is
    // refused; the harness reports exactly that, and nothing ran after it (no retry).
    match drained {
        Err(HarnessError::OutcomeRefused { ran, reason }) => {
            assert_eq!(ran.outcome, "stopped", "{ran:?}");
            assert_eq!(ran.attempt, 1, "one attempt, no retry: {ran:?}");
            assert!(matches!(reason, StoreError::LeaseLost(_)), "{reason}");
        }
        other => panic!("the cancelled step's outcome should be refused: {other:?}"),
    }
    assert!(
        h.run_due().await.expect("run_due").runs.is_empty(),
        "no retry"
    );
    let it = q.iteration(run).await.expect("iteration");
    assert_eq!(it.state, RunState::Cancelled, "{it:?}");
    // A batch's checkpoint follows the read of the next batch: the one whose checkpoint
    // came after the cancel is not counted.
    assert_eq!(it.processed, hold.saturating_sub(2) as u64, "{it:?}");
    no_live_step(&q, run).await;
    let step = q.task(run).await.expect("task").expect("exists");
    assert_eq!(step.info.state, TaskState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cancel_before_the_first_batch_calls_nothing() {
    cancel_while_a_read_is_held(taskq_tests::memory_store().await, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cancel_between_batches_calls_nothing_more() {
    cancel_while_a_read_is_held(taskq_tests::memory_store().await, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancel_before_the_first_batch_calls_nothing() {
    cancel_while_a_read_is_held(taskq_tests::sqlite_store().await, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancel_between_batches_calls_nothing_more() {
    cancel_while_a_read_is_held(taskq_tests::sqlite_store().await, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancel_before_the_first_batch_calls_nothing() {
    cancel_while_a_read_is_held(taskq_tests::postgres_store().await, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancel_between_batches_calls_nothing_more() {
    cancel_while_a_read_is_held(taskq_tests::postgres_store().await, 2).await;
}

/// A pending step whose run has ended (made by hand here, as the old race left it) is
/// claimed once, ends cancelled without calling the function, and is not retried; the run
/// keeps its state.
async fn a_step_of_an_ended_run_stops(q: Queue, end_run: impl AsyncFnOnce(TaskId)) {
    let gate = Gate::new(3, 0);
    let run = punch::start(&q, AllTickets).await.expect("start");
    end_run(run).await;
    let h = Harness::with_store(q.store().clone())
        .state(gate.clone())
        .max_runs(20);
    let report = h.drain().await.expect("drain");
    assert_eq!(
        gate.calls(),
        0,
        "the function was called under an ended run"
    );
    assert_eq!(report.runs.len(), 1, "one attempt, no retry: {report:?}");
    let step = q.task(run).await.expect("task").expect("exists");
    assert_eq!(step.info.state, TaskState::Cancelled, "{step:?}");
    assert_eq!(step.attempts.len(), 1, "{step:?}");
    assert_eq!(step.attempts[0].outcome, "stopped");
    let why = step.info.last_error.clone().unwrap_or_default();
    assert!(why.contains("run had ended"), "{why}");
    let it = q.iteration(run).await.expect("iteration");
    assert_eq!((it.state, it.processed), (RunState::Cancelled, 0), "{it:?}");
    no_live_step(&q, run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_step_of_an_ended_run_stops_without_calling_or_retrying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orphan.db");
    let q = Queue::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    a_step_of_an_ended_run_stops(q, async |run: TaskId| {
        let c = rusqlite::Connection::open(&path).expect("open the file");
        let n = c
            .execute(
                "UPDATE taskq_iterations SET state = 'cancelled', finished_at = updated_at \
                 WHERE run = ?1",
                [run.0],
            )
            .expect("end the run by hand");
        assert_eq!(n, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_step_of_an_ended_run_stops_without_calling_or_retrying() {
    use taskq_runtime::store::postgres::PostgresStore;
    use taskq_runtime::tokio_postgres::{self, NoTls};

    let url = taskq_tests::postgres_url();
    let schema = taskq_tests::unique_name("orphan");
    let store = PostgresStore::open_in_schema(&url, &schema)
        .await
        .expect("open");
    let q = Queue::new(Arc::new(store));
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    a_step_of_an_ended_run_stops(q, async |run: TaskId| {
        let n = client
            .execute(
                &format!(
                    "UPDATE \"{schema}\".taskq_iterations SET state = 'cancelled', \
                     finished_at = updated_at WHERE run_id = $1"
                ),
                &[&run.0],
            )
            .await
            .expect("end the run by hand");
        assert_eq!(n, 1);
    })
    .await;
}

/// What [`linger`] saw: calls started, calls that ran to their end, calls dropped midway.
#[derive(Default)]
struct Lingering {
    started: std::sync::atomic::AtomicUsize,
    finished: std::sync::atomic::AtomicUsize,
    dropped: std::sync::atomic::AtomicUsize,
}

/// Counts a call as dropped unless it ran to its end.
struct DropGuard<'a>(&'a Lingering, bool);

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A batch that takes a minute (unless stopped).
#[iterative_task(model = Ticket, batch_size = 1, queue = "linger")]
async fn linger(ctx: Context, tickets: Vec<Ticket>) -> Result<(), TaskError> {
    let l = ctx.state::<Arc<Lingering>>()?.clone();
    l.started.fetch_add(1, Ordering::SeqCst);
    let mut guard = DropGuard(&l, false);
    tokio::time::sleep(Duration::from_secs(60)).await;
    guard.1 = true;
    l.finished.fetch_add(1, Ordering::SeqCst);
    let _ = tickets;
    Ok(())
}

/// A step running a batch when its run is cancelled is stopped by its worker at the next
/// lease renewal (the store reports the lease lost: the cancel ended the step), well
/// before the batch would end, and nothing of the run starts again.
async fn a_running_step_is_stopped_at_its_next_heartbeat(store: Arc<dyn Store>) {
    let lingering = Arc::new(Lingering::default());
    let q = Queue::new(store.clone());
    let run = linger::start(&q, AllTickets).await.expect("start");
    let w = taskq_runtime::Worker::builder(store)
        .state(Gate::new(3, 0))
        .state(lingering.clone())
        .queues(["linger"])
        .lease(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("worker")
        .spawn();
    taskq_tests::wait_until("the batch started", LIMIT, || async {
        lingering.started.load(Ordering::SeqCst) == 1
    })
    .await;
    q.cancel_iteration(run).await.expect("cancel");
    // A renewal runs every half second (a quarter of the lease).
    taskq_tests::wait_until("the batch stopped", Duration::from_secs(20), || async {
        lingering.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    w.shutdown().await.expect("shutdown");
    assert_eq!(lingering.started.load(Ordering::SeqCst), 1);
    assert_eq!(lingering.finished.load(Ordering::SeqCst), 0);
    no_live_step(&q, run).await;
    let it = q.iteration(run).await.expect("iteration");
    assert_eq!((it.state, it.processed), (RunState::Cancelled, 0), "{it:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_running_step_is_stopped_at_its_next_heartbeat() {
    a_running_step_is_stopped_at_its_next_heartbeat(taskq_tests::memory_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_running_step_is_stopped_at_its_next_heartbeat() {
    a_running_step_is_stopped_at_its_next_heartbeat(taskq_tests::postgres_store().await).await;
}
