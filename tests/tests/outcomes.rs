//! What an attempt's result does to a task, on every store: an error text a database
//! cannot hold, an outcome batch the store refuses, and a task name the worker does not
//! register (a rolling deploy).

use std::sync::Arc;
use std::time::Duration;

use taskq_runtime::store::NewTask;
use taskq_runtime::testing::Harness;
use taskq_runtime::{task, Queue, Store, TaskError, TaskId, TaskState, Timestamp, Worker};
use taskq_tests::faulty::Faulty;
use taskq_tests::{all_in_state, wait_until};
use taskq_tests::{memory_store, postgres_store, sqlite_store};

#[task(
    queue = "nul",
    max_attempts = 2,
    min_backoff = "10ms",
    max_backoff = "20ms"
)]
async fn says_nul() -> Result<(), TaskError> {
    Err(TaskError::retry("upstream said: bin\0ary"))
}

#[task(queue = "nul")]
async fn plain(n: u64) -> Result<(), TaskError> {
    let _ = n;
    Ok(())
}

/// The text every store records for the error `upstream said: bin\0ary`.
const STORED: &str = "upstream said: bin\u{FFFD}ary";

fn unknown_task(queue: &str) -> NewTask {
    NewTask {
        task: "app::added_in_v2".into(),
        queue: queue.into(),
        payload: serde_json::json!({}),
        priority: 0,
        run_at: Timestamp::now(),
        unique_name: None,
        tombstone: Duration::ZERO,
        iteration: None,
        trace: None,
    }
}

/// A task failing with a NUL byte in its error, a task no worker registers, and 20 plain
/// tasks, on one worker (concurrency 4, lease 3 s): the plain tasks are done exactly once,
/// the NUL error is recorded as the same text on every store and the task goes dead as its
/// policy says; the unknown task is retried, not dead.
async fn nul_error_and_unknown_task(store: Arc<dyn Store>) {
    let queue = Queue::new(store.clone());
    let bad = says_nul::start(&queue).await.expect("start");
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(plain::start(&queue, n).await.expect("start"));
    }
    let unknown = store
        .enqueue(vec![unknown_task("nul")], Timestamp::now())
        .await
        .expect("enqueue")[0];
    let worker = Worker::builder(store.clone())
        .queues(["nul"])
        .concurrency(4)
        .lease(Duration::from_secs(3))
        .name("w-nul")
        .build()
        .expect("worker")
        .spawn();
    wait_until("every task to be recorded", Duration::from_secs(30), || {
        let queue = queue.clone();
        let ids = ids.clone();
        async move {
            let all = all_in_state(&queue, [bad], TaskState::Dead).await
                && all_in_state(&queue, ids.clone(), TaskState::Done).await;
            let tried = matches!(queue.task(unknown).await, Ok(Some(t)) if !t.attempts.is_empty());
            all && tried
        }
    })
    .await;
    worker.shutdown().await.expect("shutdown");

    for id in &ids {
        let t = queue.task(*id).await.expect("task").expect("exists");
        let outcomes: Vec<&str> = t.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["done"], "task {id} ran exactly once");
    }
    let t = queue.task(bad).await.expect("task").expect("exists");
    let errors: Vec<Option<&str>> = t.attempts.iter().map(|a| a.error.as_deref()).collect();
    assert_eq!(
        errors,
        [
            Some(STORED),
            Some(format!("gave up after 2 attempts: {STORED}").as_str())
        ]
    );
    assert_eq!(t.info.state, TaskState::Dead);

    let t = queue.task(unknown).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Pending, "{t:?}");
    assert_eq!(t.attempts[0].outcome, "retry");
    let error = t.info.last_error.unwrap_or_default();
    assert!(
        error.contains("`app::added_in_v2`") && error.contains("`w-nul`"),
        "the error names the task and the worker: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_error_and_unknown_task_memory() {
    nul_error_and_unknown_task(memory_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_error_and_unknown_task_sqlite() {
    nul_error_and_unknown_task(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_error_and_unknown_task_postgres() {
    nul_error_and_unknown_task(postgres_store().await).await;
}

/// A task name no worker registers is retried with backoff under the default policy and
/// goes dead only when that is spent (25 attempts), on virtual time.
async fn unknown_task_spends_the_default_policy(store: Arc<dyn Store>) {
    let h = Harness::with_store(store.clone());
    let id = store
        .enqueue(vec![unknown_task("v2")], h.clock().now())
        .await
        .expect("enqueue")[0];
    let first = h.run_due().await.expect("run");
    assert_eq!(first.runs.len(), 1);
    assert_eq!(first.runs[0].outcome, "retry");
    assert_eq!(state(&h, id).await, TaskState::Pending);

    let report = h.drain().await.expect("drain");
    assert_eq!(report.runs.len(), 24, "the remaining attempts of 25");
    let t = h.queue().task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Dead);
    assert_eq!(t.info.attempts, 25);
    let error = t.info.last_error.unwrap_or_default();
    assert!(
        error.starts_with("gave up after 25 attempts: no task named `app::added_in_v2`"),
        "{error}"
    );
    // Backoff between attempts: the run took hours of virtual time, not a burst.
    let spent = report.runs[23].at.since(first.runs[0].at);
    assert!(spent > Duration::from_secs(3600), "{spent:?}");
}

async fn state(h: &Harness, id: TaskId) -> TaskState {
    h.queue()
        .task(id)
        .await
        .expect("task")
        .expect("exists")
        .info
        .state
}

#[tokio::test]
async fn unknown_task_spends_the_default_policy_memory() {
    unknown_task_spends_the_default_policy(memory_store().await).await;
}

#[tokio::test]
async fn unknown_task_spends_the_default_policy_sqlite() {
    unknown_task_spends_the_default_policy(sqlite_store().await).await;
}

#[tokio::test]
async fn unknown_task_spends_the_default_policy_postgres() {
    unknown_task_spends_the_default_policy(postgres_store().await).await;
}

#[task(queue = "refuse")]
async fn refused(n: u64) -> Result<(), TaskError> {
    let _ = n;
    Ok(())
}

/// One outcome the store refuses never holds up the others: 40 tasks, one of whose
/// outcomes every `finish` refuses; the 39 others are each recorded done exactly once,
/// and the worker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_store_refuses_holds_up_no_other() {
    let store = Arc::new(Faulty::default());
    let queue = Queue::new(store.clone());
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(refused::start(&queue, n).await.expect("start"));
    }
    let poison = ids.remove(7);
    store
        .faults
        .refuse_finish_of
        .lock()
        .expect("lock")
        .insert(poison);
    let worker = Worker::builder(store.clone())
        .queues(["refuse"])
        .concurrency(4)
        .lease(Duration::from_millis(600))
        .build()
        .expect("worker")
        .spawn();
    wait_until("the 39 others to be done", Duration::from_secs(20), || {
        all_in_state(&queue, ids.clone(), TaskState::Done)
    })
    .await;
    // Tasks started now still run: the outcome writer is not stuck on the refused one.
    let later = refused::start(&queue, 99).await.expect("start");
    wait_until(
        "a task started later to be done",
        Duration::from_secs(10),
        || all_in_state(&queue, [later], TaskState::Done),
    )
    .await;
    worker.shutdown().await.expect("shutdown");
    for id in &ids {
        let t = queue.task(*id).await.expect("task").expect("exists");
        let outcomes: Vec<&str> = t.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["done"], "task {id} ran exactly once");
    }
    assert!(
        store
            .faults
            .refused
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    let t = queue.task(poison).await.expect("task").expect("exists");
    assert_ne!(
        t.info.state,
        TaskState::Done,
        "its outcome was never recorded"
    );
}
