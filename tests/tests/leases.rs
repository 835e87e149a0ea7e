//! Leases that hold when calls hang and code blocks: a task never runs twice at once on a
//! worker, a decode panic ends its attempt, a blocked task's lease is not renewed forever,
//! shutdown tells running tasks at once, and a panic in the worker's background parts does
//! not end them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use taskq_runtime::testing::Harness;
use taskq_runtime::{task, Context, Queue, TaskError, TaskState, Worker};
use taskq_tests::faulty::Faulty;
use taskq_tests::{all_in_state, wait_until};

/// Executions of `hung_heartbeat_task` running now, the most at once, and how many were
/// told to stop.
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOLD: AtomicUsize = AtomicUsize::new(0);
static STARTS: AtomicUsize = AtomicUsize::new(0);

/// Decrements [`NOW`] however the execution ends (finished or dropped).
struct Running;
impl Drop for Running {
    fn drop(&mut self) {
        NOW.fetch_sub(1, Ordering::SeqCst);
    }
}

#[task(queue = "hung", max_attempts = 100)]
async fn hung_heartbeat_task(ctx: Context) -> Result<(), TaskError> {
    let n = NOW.fetch_add(1, Ordering::SeqCst) + 1;
    let _running = Running;
    PEAK.fetch_max(n, Ordering::SeqCst);
    STARTS.fetch_add(1, Ordering::SeqCst);
    let mut told = false;
    for _ in 0..200 {
        if ctx.is_cancelled() && !told {
            told = true;
            TOLD.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A heartbeat that never returns: the worker cannot renew its lease, so it must tell the
/// task and stop it before the lease lapses, and its own re-claim never runs beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_heartbeat_never_lets_a_task_run_twice_at_once() {
    let store = Arc::new(Faulty::default());
    store.faults.hang_heartbeat.store(true, Ordering::SeqCst);
    let queue = Queue::new(store.clone());
    hung_heartbeat_task::start(&queue).await.expect("start");
    let worker = Worker::builder(store.clone())
        .queues(["hung"])
        .concurrency(4)
        .lease(Duration::from_millis(300))
        .build()
        .expect("worker")
        .spawn();
    wait_until("three executions", Duration::from_secs(10), || async {
        STARTS.load(Ordering::SeqCst) >= 3
    })
    .await;
    worker.shutdown().await.expect("shutdown");
    assert_eq!(
        PEAK.load(Ordering::SeqCst),
        1,
        "never two executions at once"
    );
    assert!(
        TOLD.load(Ordering::SeqCst) >= 1,
        "the task was told before it was stopped"
    );
}

/// An argument whose `Deserialize` panics.
#[derive(Debug, Serialize)]
struct Explosive(u32);

impl<'de> Deserialize<'de> for Explosive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        panic!("Explosive({n}) refuses to be decoded");
    }
}

#[task(queue = "decode", max_attempts = 2, min_backoff = "1s")]
async fn decode_panics(x: Explosive) -> Result<(), TaskError> {
    let _ = x;
    Ok(())
}

#[tokio::test]
async fn a_panic_while_decoding_ends_the_attempt_like_a_panic_in_the_body() {
    let h = Harness::new();
    let id = decode_panics::start(&h.queue(), Explosive(7))
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    let outcomes: Vec<&str> = report.runs.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, ["retry", "dead"]);
    let t = h.queue().task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Dead);
    let error = t.info.last_error.unwrap_or_default();
    assert!(
        error.contains("panicked while decoding the arguments: Explosive(7) refuses to be decoded"),
        "{error}"
    );
}

#[task(queue = "blocks", timeout = "50ms", max_attempts = 100)]
async fn blocks_its_thread(ms: u64) -> Result<(), TaskError> {
    std::thread::sleep(Duration::from_millis(ms));
    Ok(())
}

/// A task that blocks its thread never reaches the hard deadline's check; its lease is not
/// renewed past the hard deadline plus one lease: the worker gives the attempt up and
/// records why (the poison campaign in `poison.rs` follows such a task to dead).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_task_is_not_renewed_forever() {
    let store = Arc::new(Faulty::default());
    let queue = Queue::new(store.clone());
    let id = blocks_its_thread::start(&queue, 1_500)
        .await
        .expect("start");
    let worker = Worker::builder(store.clone())
        .queues(["blocks"])
        .concurrency(1)
        .lease(Duration::from_millis(200))
        .deadline_grace(Duration::from_millis(50))
        .build()
        .expect("worker")
        .spawn();
    wait_until(
        "the attempt to be given up",
        Duration::from_secs(10),
        || {
            let queue = queue.clone();
            async move {
                matches!(queue.task(id).await, Ok(Some(t))
                if t.attempts.iter().any(|a| a.outcome == "retry"
                    && a.error.as_deref().unwrap_or_default().contains("blocks its thread")))
            }
        },
    )
    .await;
    worker.shutdown().await.expect("shutdown");
}

static TOLD_AT_SHUTDOWN: AtomicUsize = AtomicUsize::new(0);

#[task(queue = "polite")]
async fn stops_when_told(ctx: Context) -> Result<(), TaskError> {
    for _ in 0..1_000 {
        if ctx.is_cancelled() {
            TOLD_AT_SHUTDOWN.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(TaskError::retry("never told"))
}

/// Shutdown tells running tasks at once (not only when their grace is over): a task that
/// watches `ctx.is_cancelled()` wraps up and is recorded done, well inside the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_running_tasks_at_once() {
    let store = taskq_tests::memory_store().await;
    let queue = Queue::new(store.clone());
    let id = stops_when_told::start(&queue).await.expect("start");
    let worker = Worker::builder(store.clone())
        .queues(["polite"])
        .shutdown_grace(Duration::from_secs(8))
        .build()
        .expect("worker")
        .spawn();
    wait_until("the task to run", Duration::from_secs(5), || {
        let queue = queue.clone();
        async move { matches!(queue.task(id).await, Ok(Some(t)) if t.info.state == TaskState::Running) }
    })
    .await;
    let t0 = std::time::Instant::now();
    worker.shutdown().await.expect("shutdown");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(TOLD_AT_SHUTDOWN.load(Ordering::SeqCst), 1);
    let t = queue.task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Done);
}

#[task(queue = "supervised")]
async fn outlives_a_lease(ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// A panic in the heartbeat and one in the outcome writer do not end them: the leases of
/// a task longer than several leases keep being renewed (no lapse), and outcomes keep
/// being recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_and_the_outcome_writer_survive_a_panic() {
    let store = Arc::new(Faulty::default());
    store.faults.panic_heartbeats.store(1, Ordering::SeqCst);
    store.faults.panic_finishes.store(1, Ordering::SeqCst);
    let queue = Queue::new(store.clone());
    let first = outlives_a_lease::start(&queue, 10).await.expect("start");
    let worker = Worker::builder(store.clone())
        .queues(["supervised"])
        .lease(Duration::from_millis(300))
        .build()
        .expect("worker")
        .spawn();
    // The first outcome is lost with the writer's panic: it runs again once its lease lapses.
    let long = outlives_a_lease::start(&queue, 1_200).await.expect("start");
    wait_until("both tasks done", Duration::from_secs(15), || {
        all_in_state(&queue, [first, long], TaskState::Done)
    })
    .await;
    worker.shutdown().await.expect("shutdown");
    let t = queue.task(long).await.expect("task").expect("exists");
    let outcomes: Vec<&str> = t.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["done"], "renewed throughout, never lapsed");
    assert_eq!(
        store.faults.panic_heartbeats.load(Ordering::SeqCst),
        0,
        "the panic happened"
    );
    assert_eq!(
        store.faults.panic_finishes.load(Ordering::SeqCst),
        0,
        "the panic happened"
    );
}

// ---- review: store calls outside the heartbeat that can stall a worker ----------------

#[task(queue = "hung-finish")]
async fn quick_after_hung_finish(n: u32) -> Result<(), TaskError> {
    let _ = n;
    Ok(())
}

/// A `finish` call that never returns (a half-open connection) must not wedge the outcome
/// writer for the life of the worker: the call is bounded like the heartbeat, retried, and
/// the outcomes are recorded once the store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_finish_does_not_wedge_the_worker() {
    let store = Arc::new(Faulty::default());
    store.faults.hang_finishes.store(1, Ordering::SeqCst);
    let queue = Queue::new(store.clone());
    let a = quick_after_hung_finish::start(&queue, 1)
        .await
        .expect("start");
    let worker = Worker::builder(store.clone())
        .queues(["hung-finish"])
        .lease(Duration::from_millis(400))
        .build()
        .expect("worker")
        .spawn();
    let b = quick_after_hung_finish::start(&queue, 2)
        .await
        .expect("start");
    wait_until("both tasks done", Duration::from_secs(10), || {
        all_in_state(&queue, [a, b], TaskState::Done)
    })
    .await;
    assert_eq!(store.faults.hang_finishes.load(Ordering::SeqCst), 0);
    worker.shutdown().await.expect("shutdown");
}

#[task(queue = "hung-next-due")]
async fn runs_after_hung_next_due() -> Result<(), TaskError> {
    Ok(())
}

/// A `next_due` call that never returns (asked when the worker is idle) must neither stop
/// the worker from claiming new work nor hold up its shutdown past the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_next_due_neither_stalls_claims_nor_shutdown() {
    let store = Arc::new(Faulty::default());
    store.faults.hang_next_due.store(true, Ordering::SeqCst);
    let queue = Queue::new(store.clone());
    let worker = Worker::builder(store.clone())
        .queues(["hung-next-due"])
        .poll_interval(Duration::from_millis(100))
        .shutdown_grace(Duration::from_secs(1))
        .build()
        .expect("worker")
        .spawn();
    // Let the idle worker ask `next_due` (which hangs), then give it work.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = runs_after_hung_next_due::start(&queue)
        .await
        .expect("start");
    wait_until("the task to run", Duration::from_secs(5), || {
        all_in_state(&queue, [id], TaskState::Done)
    })
    .await;
    let r = tokio::time::timeout(Duration::from_secs(5), worker.shutdown()).await;
    assert!(
        matches!(r, Ok(Ok(()))),
        "shutdown did not return within 5 s: {r:?}"
    );
}

#[task(queue = "hung-claim")]
async fn ignores_shutdown() -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

/// A claim that hangs when shutdown comes may not use up the whole grace: the grace keeps
/// the time to stop what still runs and to write its release, so the task is pending again
/// (the attempt not counted) when `shutdown()` returns, not left for its lease to lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_claim_at_shutdown_leaves_time_to_release() {
    let store = Arc::new(Faulty::default());
    let queue = Queue::new(store.clone());
    let id = ignores_shutdown::start(&queue).await.expect("start");
    let worker = Worker::builder(store.clone())
        .queues(["hung-claim"])
        .concurrency(2)
        .poll_interval(Duration::from_millis(50))
        .shutdown_grace(Duration::from_secs(1))
        .build()
        .expect("worker")
        .spawn();
    wait_until("the task to run", Duration::from_secs(5), || {
        let queue = queue.clone();
        async move { matches!(queue.task(id).await, Ok(Some(t)) if t.info.state == TaskState::Running) }
    })
    .await;
    store.faults.hang_claims.store(true, Ordering::SeqCst);
    // Let the worker's next claim start (and hang).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = std::time::Instant::now();
    worker.shutdown().await.expect("shutdown");
    assert!(
        t0.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t0.elapsed()
    );
    let t = queue.task(id).await.expect("task").expect("exists");
    assert_eq!(
        (t.info.state, t.info.attempts),
        (TaskState::Pending, 0),
        "released within the grace: {:?}",
        t.attempts
    );
}

// ---- review: leases between the end of an attempt and its recorded outcome -------------

/// Executions of `short_then_recorded`.
static RECORDED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[task(queue = "slow-outcome")]
async fn short_then_recorded() -> Result<(), TaskError> {
    RECORDED_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// An outcome that waits for a store refusing outcomes for longer than a lease: the lease
/// of the finished task stays renewed until the outcome is recorded, so no worker runs it
/// again meanwhile (before, the lease lapsed behind the waiting outcome and a second worker
/// ran the task again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_keeps_its_lease_until_its_outcome_is_recorded() {
    let store = Arc::new(Faulty::default());
    store
        .faults
        .refuse_all_finishes
        .store(true, Ordering::SeqCst);
    let queue = Queue::new(store.clone());
    let id = short_then_recorded::start(&queue).await.expect("start");
    let lease = Duration::from_millis(1_000);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            Worker::builder(store.clone())
                .queues(["slow-outcome"])
                .lease(lease)
                .poll_interval(Duration::from_millis(20))
                .build()
                .expect("worker")
                .spawn()
        })
        .collect();
    wait_until("the task ran", Duration::from_secs(15), || async {
        RECORDED_RUNS.load(Ordering::SeqCst) > 0
    })
    .await;
    // Longer than a lease: the old behaviour let the lease lapse meanwhile.
    tokio::time::sleep(lease * 14 / 10).await;
    assert!(
        store.faults.refused.load(Ordering::SeqCst) > 0,
        "outcomes were refused"
    );
    store
        .faults
        .refuse_all_finishes
        .store(false, Ordering::SeqCst);
    wait_until("the task done", Duration::from_secs(15), || {
        all_in_state(&queue, [id], TaskState::Done)
    })
    .await;
    for w in workers {
        w.shutdown().await.expect("shutdown");
    }
    assert_eq!(RECORDED_RUNS.load(Ordering::SeqCst), 1, "ran exactly once");
    let t = queue.task(id).await.expect("task").expect("exists");
    let outcomes: Vec<&str> = t.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["done"]);
}

/// Executions of `after_a_slow_claim`.
static SLOW_CLAIM_RUNS: AtomicUsize = AtomicUsize::new(0);

#[task(queue = "slow-claim")]
async fn after_a_slow_claim() -> Result<(), TaskError> {
    SLOW_CLAIM_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    Ok(())
}

/// A claim that answers after most of the lease has gone: the worker renews the fresh
/// leases at once instead of stopping the tasks at its first check (before, the task was
/// stopped a tick after it began, its lease lapsed and it ran a second attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_claim_renews_at_once_instead_of_stopping_its_tasks() {
    let store = Arc::new(Faulty::default());
    store.faults.slow_claims.store(1, Ordering::SeqCst);
    store.faults.claim_delay_ms.store(700, Ordering::SeqCst);
    let queue = Queue::new(store.clone());
    let id = after_a_slow_claim::start(&queue).await.expect("start");
    let worker = Worker::builder(store.clone())
        .queues(["slow-claim"])
        .lease(Duration::from_millis(1_000))
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("worker")
        .spawn();
    wait_until("the task done", Duration::from_secs(15), || {
        all_in_state(&queue, [id], TaskState::Done)
    })
    .await;
    worker.shutdown().await.expect("shutdown");
    assert_eq!(
        store.faults.slow_claims.load(Ordering::SeqCst),
        0,
        "the slow claim happened"
    );
    assert_eq!(
        SLOW_CLAIM_RUNS.load(Ordering::SeqCst),
        1,
        "ran exactly once"
    );
    let t = queue.task(id).await.expect("task").expect("exists");
    let outcomes: Vec<&str> = t.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["done"]);
}
