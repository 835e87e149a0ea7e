//! The worker on real time: concurrency, leases, deadlines, shutdown, tracing.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::store::{ClaimRequest, TaskQuery};
use taskq_runtime::{task, Context, Queue, Store, TaskError, TaskState, Timestamp, Worker};
use taskq_tests::wait_until;

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[task(queue = "conc")]
async fn busy(ms: u64) -> Result<(), TaskError> {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    PEAK.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

static LONG_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "lease")]
async fn long_task(ms: u64) -> Result<(), TaskError> {
    LONG_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

#[task(queue = "deadline", timeout = "100ms", max_attempts = 1)]
async fn overruns(ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

#[task(queue = "soft", timeout = "80ms", max_attempts = 1)]
async fn watches_deadline(ctx: Context) -> Result<(), TaskError> {
    let left = ctx.remaining();
    if left > Duration::from_millis(80) || left < Duration::from_millis(40) {
        return Err(TaskError::fatal(format!("remaining {left:?} at start")));
    }
    while !ctx.deadline_exceeded() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Wrap up within the grace period, as Melange's DeadlineExceededError handlers did.
    Ok(())
}

#[task(queue = "shutdown")]
async fn sleepy(ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

async fn count(q: &Queue, queue: &str, state: TaskState) -> u64 {
    q.queues()
        .await
        .expect("queues")
        .iter()
        .find(|x| x.name == queue)
        .map(|x| x.count(state))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_is_honoured() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    q.start_many((0..40).map(|_| busy::builder(20)))
        .await
        .expect("start");
    let w = Worker::builder(store)
        .queues(["conc"])
        .concurrency(4)
        .build()
        .expect("worker")
        .spawn();
    wait_until("40 done", Duration::from_secs(30), || async {
        count(&q, "conc", TaskState::Done).await == 40
    })
    .await;
    let stats = w.stats().clone();
    w.shutdown().await.expect("shutdown");
    assert!(
        PEAK.load(Ordering::SeqCst) <= 4,
        "peak {}",
        PEAK.load(Ordering::SeqCst)
    );
    assert!(PEAK.load(Ordering::SeqCst) >= 2, "ran concurrently");
    assert_eq!(stats.done.load(Ordering::Relaxed), 40);
    assert_eq!(stats.claimed.load(Ordering::Relaxed), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_a_task_runs() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let id = long_task::start(&q, 1200).await.expect("start");
    let w = Worker::builder(store.clone())
        .queues(["lease"])
        .lease(Duration::from_millis(300))
        .build()
        .expect("worker")
        .spawn();
    // Meanwhile another "worker" keeps trying to claim: the renewed lease never lapses.
    let mut stolen = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = store
            .claim(&ClaimRequest {
                queues: vec!["lease".into()],
                worker: "thief".into(),
                limit: 10,
                lease: Duration::from_secs(60),
                now: Timestamp::now(),
            })
            .await
            .expect("claim");
        stolen += c.len();
    }
    assert_eq!(stolen, 0);
    wait_until("done", Duration::from_secs(10), || async {
        q.task(id).await.ok().flatten().map(|t| t.info.state) == Some(TaskState::Done)
    })
    .await;
    w.shutdown().await.expect("shutdown");
    assert_eq!(LONG_RUNS.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_task_runs_again_when_its_lease_lapses() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let id = sleepy::start(&q, 1).await.expect("start");
    // A worker claims it and "dies": it never renews nor finishes.
    let c = store
        .claim(&ClaimRequest {
            queues: vec![],
            worker: "doomed".into(),
            limit: 1,
            lease: Duration::from_millis(300),
            now: Timestamp::now(),
        })
        .await
        .expect("claim");
    assert_eq!(c.len(), 1);
    let w = Worker::builder(store.clone())
        .queues(["shutdown"])
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("worker")
        .spawn();
    wait_until(
        "re-run after the lapse",
        Duration::from_secs(10),
        || async { q.task(id).await.ok().flatten().map(|t| t.info.state) == Some(TaskState::Done) },
    )
    .await;
    w.shutdown().await.expect("shutdown");
    let t = q.task(id).await.expect("task").expect("exists");
    let outcomes: Vec<_> = t.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["lease lapsed", "done"]);
    assert_eq!(t.attempts[0].worker, "doomed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_deadline_cancels_the_attempt() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let id = overruns::start(&q, 10_000).await.expect("start");
    let started = std::time::Instant::now();
    let w = Worker::builder(store)
        .queues(["deadline"])
        .deadline_grace(Duration::from_millis(100))
        .build()
        .expect("worker")
        .spawn();
    wait_until("dead", Duration::from_secs(5), || async {
        q.task(id).await.ok().flatten().map(|t| t.info.state) == Some(TaskState::Dead)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled long before its 10 s sleep"
    );
    w.shutdown().await.expect("shutdown");
    let t = q.task(id).await.expect("task").expect("exists");
    let err = t.attempts[0].error.clone().unwrap_or_default();
    assert!(err.contains("hard deadline exceeded"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deadline_is_observable_through_context() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let id = watches_deadline::start(&q).await.expect("start");
    let w = Worker::builder(store)
        .queues(["soft"])
        .deadline_grace(Duration::from_secs(5))
        .build()
        .expect("worker")
        .spawn();
    wait_until("finished", Duration::from_secs(5), || async {
        q.task(id)
            .await
            .ok()
            .flatten()
            .map(|t| !t.info.state.is_live())
            == Some(true)
    })
    .await;
    w.shutdown().await.expect("shutdown");
    let t = q.task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Done, "{:?}", t.attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_short_tasks_and_releases_long_ones() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let short = sleepy::start(&q, 50).await.expect("start");
    let long = sleepy::start(&q, 60_000).await.expect("start");
    let w = Worker::builder(store.clone())
        .queues(["shutdown"])
        .shutdown_grace(Duration::from_millis(400))
        .build()
        .expect("worker")
        .spawn();
    wait_until("both running", Duration::from_secs(5), || async {
        count(&q, "shutdown", TaskState::Running).await == 2
    })
    .await;
    let t = std::time::Instant::now();
    w.shutdown().await.expect("shutdown");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(
        q.task(short).await.expect("t").expect("e").info.state,
        TaskState::Done
    );
    let l = q.task(long).await.expect("t").expect("e");
    assert_eq!(
        l.info.state,
        TaskState::Pending,
        "released to run again at once"
    );
    assert_eq!(l.info.attempts, 0, "a released attempt does not count");
    assert!(l.info.run_at <= Timestamp::now());
    assert_eq!(
        l.attempts.last().map(|a| a.outcome.as_str()),
        Some("released")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_serving_after_bad_payloads() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let now = Timestamp::now();
    let bad = store
        .enqueue(
            vec![taskq_runtime::store::NewTask {
                task: sleepy::NAME.into(),
                queue: "shutdown".into(),
                payload: serde_json::json!({ "ms": "soon" }),
                priority: 0,
                run_at: now,
                unique_name: None,
                tombstone: Duration::ZERO,
                iteration: None,
                trace: None,
            }],
            now,
        )
        .await
        .expect("enqueue")[0];
    let good = sleepy::start(&q, 1).await.expect("start");
    let w = Worker::builder(store)
        .queues(["shutdown"])
        .build()
        .expect("worker")
        .spawn();
    wait_until("good one done", Duration::from_secs(5), || async {
        q.task(good).await.ok().flatten().map(|t| t.info.state) == Some(TaskState::Done)
    })
    .await;
    w.shutdown().await.expect("shutdown");
    let b = q.task(bad).await.expect("t").expect("e");
    assert_eq!(b.info.state, TaskState::Dead);
    assert!(b
        .info
        .last_error
        .unwrap_or_default()
        .contains("argument `ms`"));
}

#[tokio::test]
async fn list_tasks_through_the_queue() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store);
    for i in 0..5 {
        sleepy::start(&q, i).await.expect("start");
    }
    let l = q
        .list(&TaskQuery {
            state: Some(TaskState::Pending),
            limit: 3,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(l.len(), 3);
    assert!(l[0].id > l[1].id);
}

#[task(queue = "timely")]
async fn timely(n: u32) -> Result<(), TaskError> {
    let _ = n;
    Ok(())
}

/// On real time, with a poll interval far longer than the test (600 s), a delayed task
/// runs at its due time and a rate-limited queue drains at its rate: only the worker's own
/// wake-ups (it waits until `next_due`) can do that. The delayed task (1 s, on a queue of
/// its own) falls due after the rated queue drained, so the worker is idle when it does.
/// Lateness is bounded: the delayed task starts within 2 s of its due time (generous for a loaded machine, and 300 times shorter
/// than the poll interval), and the 20 rated tasks (50/s, burst 1) are all claimed within
/// 20 × 20 ms + 2 s of their start, one token at a time (20 ms apart at least).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_run_on_time_and_rate_limits_do_not_wait_for_the_poll() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    q.configure(
        "timely",
        taskq_runtime::store::QueueConfig {
            rate: Some(50.0),
            burst: Some(1),
            max_concurrent: None,
            retention: None,
        },
    )
    .await
    .expect("configure");
    let delay = Duration::from_secs(1);
    let delayed = timely::builder(0)
        .queue("timely-later")
        .delay(delay)
        .start(&q)
        .await
        .expect("start");
    let rated = q
        .start_many((1..=20).map(timely::builder))
        .await
        .expect("start");
    let w = Worker::builder(store)
        .queues(["timely", "timely-later"])
        .poll_interval(Duration::from_secs(600))
        .build()
        .expect("worker")
        .spawn();
    // A generous wait: the assertions below bound the lateness, not this.
    wait_until("all 21 done", Duration::from_secs(60), || async {
        count(&q, "timely", TaskState::Done).await == 20
            && count(&q, "timely-later", TaskState::Done).await == 1
    })
    .await;
    w.shutdown().await.expect("shutdown");
    let late = Duration::from_secs(2);
    let t = q.task(delayed).await.expect("task").expect("exists");
    let due = t.info.created_at.add(delay);
    let ran = t.attempts[0].started_at;
    assert!(ran >= due, "not before its delay: due {due}, ran {ran}");
    assert!(
        ran <= due.add(late),
        "on time: due {due}, ran {ran} ({:?} late)",
        ran.since(due)
    );
    let mut claims = Vec::new();
    let mut created = t.info.created_at;
    for id in rated {
        let t = q.task(id).await.expect("task").expect("exists");
        created = created.min(t.info.created_at);
        claims.push(t.attempts[0].started_at);
    }
    claims.sort();
    let gaps: Vec<Duration> = claims.windows(2).map(|w| w[1].since(w[0])).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(20)),
        "one token every 20 ms: {gaps:?}"
    );
    let last = claims[claims.len() - 1];
    let bound = created.add(Duration::from_millis(20 * 20) + late);
    assert!(
        last <= bound,
        "the rate-limited queue drains at its rate, not at the poll: last claim at {last}, {:?} after the first start",
        last.since(created)
    );
}

/// On virtual time a worker claims a delayed task at its due time exactly: not at 1 ms
/// before it, and at it (the claim's `now` is the due time, since the clock stands still).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_runs_at_its_due_time_exactly_on_virtual_time() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = taskq_runtime::Clock::manual(Timestamp(1_800_000_000_000));
    let q = Queue::with_clock(store.clone(), clock.clone());
    let delay = Duration::from_secs(60);
    let id = timely::builder(0)
        .delay(delay)
        .start(&q)
        .await
        .expect("start");
    let due = clock.now().add(delay);
    let w = Worker::builder(store)
        .queues(["timely"])
        .clock(clock.clone())
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("worker")
        .spawn();
    clock.advance_to(Timestamp(due.0 - 1));
    // Many claims at 1 ms before its due time (one every 20 ms of real time): none takes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = q.task(id).await.expect("task").expect("exists");
    assert_eq!(
        (t.info.state, t.attempts.len()),
        (TaskState::Pending, 0),
        "not claimed 1 ms early"
    );
    clock.advance_to(due);
    wait_until("the delayed task runs", Duration::from_secs(30), || {
        taskq_tests::all_in_state(&q, [id], TaskState::Done)
    })
    .await;
    w.shutdown().await.expect("shutdown");
    let t = q.task(id).await.expect("task").expect("exists");
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attempts[0].started_at, due, "claimed at its due time");
}

#[task(queue = "lost")]
async fn stuck(ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// A task aborted because its lease was lost (here: deleted by a person) frees its slot:
/// a worker whose every slot held such a task goes on claiming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_frees_its_slot() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let first = stuck::start(&q, 60_000).await.expect("start");
    let w = Worker::builder(store.clone())
        .queues(["lost"])
        .concurrency(1)
        .lease(Duration::from_millis(150))
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("worker")
        .spawn();
    wait_until("the first task runs", Duration::from_secs(5), || async {
        count(&q, "lost", TaskState::Running).await == 1
    })
    .await;
    q.delete(first).await.expect("delete");
    let second = stuck::start(&q, 1).await.expect("start");
    wait_until(
        "the second task runs once the first one's lease is lost",
        Duration::from_secs(5),
        || async {
            q.task(second)
                .await
                .expect("task")
                .expect("exists")
                .info
                .state
                == TaskState::Done
        },
    )
    .await;
    w.shutdown().await.expect("shutdown");
}

/// Shutdown while a claim is in flight: what the claim took is released, not left running
/// until its lease lapses. The store (a `Faulty` one) claims the task and then holds its
/// answer, as a database that committed and whose reply is still on its way (SQLite's claim
/// on the blocking pool, PostgreSQL's on the server): the test sees the claim made and
/// unanswered before it asks for shutdown, so the claim was in flight when shutdown came.
/// A worker that stopped waiting for the claim would leave the task running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_claim_releases_what_it_claimed() {
    let store = Arc::new(taskq_tests::faulty::Faulty::default());
    store.faults.hold_claims.store(true, Ordering::SeqCst);
    let q = Queue::new(store.clone());
    let id = sleepy::start(&q, 1).await.expect("start");
    let w = Worker::builder(store.clone())
        .queues(["shutdown"])
        .shutdown_grace(Duration::from_secs(5))
        .build()
        .expect("worker")
        .spawn();
    wait_until(
        "a claim took the task and holds its answer",
        Duration::from_secs(10),
        || async { store.faults.claims_held.load(Ordering::SeqCst) == 1 },
    )
    .await;
    assert_eq!(store.faults.claimed.lock().expect("lock").clone(), vec![id]);
    assert_eq!(store.faults.claims.load(Ordering::SeqCst), 1);
    let t = q.task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Running, "claimed in the store");
    let stopping = tokio::spawn(w.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "shutdown waits for the claim");
    store.faults.release_claims();
    stopping.await.expect("join").expect("shutdown");
    let t = q.task(id).await.expect("task").expect("exists");
    assert_eq!(
        t.info.state,
        TaskState::Pending,
        "not left running by a stopped worker: {:?}",
        t.attempts
    );
    assert_eq!(t.info.attempts, 0, "a released claim does not count");
    let outcomes: Vec<_> = t.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["released"], "claimed once, then released");
    assert_eq!(
        store.faults.claims.load(Ordering::SeqCst),
        1,
        "no claim after"
    );
}

/// A worker name or served queue holding a NUL byte is refused when the worker is built,
/// like a NUL in a task's queue: PostgreSQL cannot store it, so such a worker would fail
/// every claim there (silently retrying for ever) while memory and SQLite ran it.
#[test]
fn a_nul_byte_in_the_worker_name_or_a_queue_is_refused_at_build() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let e = Worker::builder(store.clone())
        .name("w\0orker")
        .build()
        .expect_err("a NUL in the name");
    assert!(e.to_string().starts_with("worker setting `name`"), "{e}");
    let e = Worker::builder(store)
        .queues(["ok", "bad\0"])
        .build()
        .expect_err("a NUL in a queue");
    assert!(e.to_string().starts_with("worker setting `queues`"), "{e}");
}

#[task(queue = "arrival")]
async fn arrives() -> Result<(), TaskError> {
    Ok(())
}

/// Work stored between a worker's empty claim and its idle wait wakes no one: the store's
/// wake-up goes to whoever waits at that moment, and the worker does not wait yet. When
/// `next_due` then says work is due now, the worker claims again at once instead of
/// waiting (the minimum idle wait, or until the poll): the task is claimed before any
/// `wait_for_work` call. The store (a `Faulty` one) stores the task when `next_due` is
/// called and logs the calls in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_due_after_an_empty_claim_is_claimed_before_waiting() {
    let store = Arc::new(taskq_tests::faulty::Faulty::default());
    store
        .faults
        .arrive_at_next_due
        .lock()
        .expect("lock")
        .push(taskq_runtime::store::NewTask {
            task: arrives::NAME.into(),
            queue: "arrival".into(),
            payload: serde_json::json!({}),
            priority: 0,
            run_at: Timestamp::now(),
            unique_name: None,
            tombstone: Duration::ZERO,
            iteration: None,
            trace: None,
        });
    let w = Worker::builder(store.clone())
        .queues(["arrival"])
        .poll_interval(Duration::from_secs(30))
        .build()
        .expect("worker")
        .spawn();
    wait_until(
        "the arriving task to be done",
        Duration::from_secs(10),
        || async { w.stats().done.load(Ordering::SeqCst) == 1 },
    )
    .await;
    w.shutdown().await.expect("shutdown");
    let calls = store.faults.calls.lock().expect("lock").clone();
    assert_eq!(
        calls.get(..3).map(|c| c.to_vec()),
        Some(vec![
            "claim 0".to_string(),
            "next_due".to_string(),
            "claim 1".to_string()
        ]),
        "claimed again at once, before any wait: {calls:?}"
    );
}
