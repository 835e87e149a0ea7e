//! Poison tasks (issue 9, the fault campaign): a task that always panics, one that awaits
//! forever, one that loops with a sleep and never returns, one whose argument decoding
//! panics and one that blocks its runtime thread past its deadline. On every store each
//! ends dead after its `max_attempts`, with its cause in its error text, while the same
//! worker goes on serving ordinary tasks started all along: some finish during each
//! poison task's retries, and every one of them finishes.
//!
//! Wall time is kept small with short deadlines and leases, two or three attempts and
//! backoffs of a second or two (long enough that "during the retries" is a window a
//! loaded machine still serves tasks in).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use taskq_runtime::store::TaskDetail;
use taskq_runtime::{task, Queue, Store, TaskError, TaskId, TaskState, Worker};
use taskq_tests::{all_in_state, wait_until};

/// How long `blocks_its_thread` holds its thread: well past its hard deadline plus the
/// lease (1.1 s), when the worker gives it up.
const BLOCK: Duration = Duration::from_secs(3);

#[task(queue = "poison", max_attempts = 3, min_backoff = "1s")]
async fn always_panics(n: u32) -> Result<(), TaskError> {
    panic!("poison {n} always panics");
}

#[task(
    queue = "poison",
    max_attempts = 2,
    timeout = "300ms",
    min_backoff = "2s"
)]
async fn awaits_forever() -> Result<(), TaskError> {
    std::future::pending::<()>().await;
    Ok(())
}

#[task(
    queue = "poison",
    max_attempts = 2,
    timeout = "300ms",
    min_backoff = "2s"
)]
async fn loops_with_a_sleep() -> Result<(), TaskError> {
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An argument whose `Deserialize` panics (after reading its number).
#[derive(Debug, Serialize)]
struct Explosive(u32);

impl<'de> Deserialize<'de> for Explosive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        panic!("Explosive({n}) refuses to be decoded");
    }
}

#[task(queue = "poison", max_attempts = 2, min_backoff = "2s")]
async fn panics_in_decode(x: Explosive) -> Result<(), TaskError> {
    let _ = x;
    Ok(())
}

#[task(
    queue = "poison",
    max_attempts = 2,
    timeout = "50ms",
    min_backoff = "200ms"
)]
async fn blocks_its_thread() -> Result<(), TaskError> {
    std::thread::sleep(BLOCK);
    Ok(())
}

#[task(queue = "ordinary")]
async fn ordinary(n: u32) -> Result<(), TaskError> {
    let _ = n;
    Ok(())
}

/// One poison task: its id, what it is, and what its last error must say.
struct Poison {
    id: TaskId,
    what: &'static str,
    attempts: u32,
    says: &'static [&'static str],
}

async fn campaign(store: Arc<dyn Store>) {
    let queue = Queue::new(store.clone());
    let poison = vec![
        Poison {
            id: always_panics::start(&queue, 7).await.expect("start"),
            what: "always panics",
            attempts: 3,
            says: &[
                "gave up after 3 attempts",
                "panicked: poison 7 always panics",
            ],
        },
        Poison {
            id: awaits_forever::start(&queue).await.expect("start"),
            what: "awaits forever",
            attempts: 2,
            says: &["gave up after 2 attempts", "hard deadline exceeded"],
        },
        Poison {
            id: loops_with_a_sleep::start(&queue).await.expect("start"),
            what: "loops with a sleep",
            attempts: 2,
            says: &["gave up after 2 attempts", "hard deadline exceeded"],
        },
        Poison {
            id: panics_in_decode::start(&queue, Explosive(9))
                .await
                .expect("start"),
            what: "panics in decode",
            attempts: 2,
            says: &[
                "gave up after 2 attempts",
                "panicked while decoding the arguments: Explosive(9) refuses to be decoded",
            ],
        },
        Poison {
            id: blocks_its_thread::start(&queue).await.expect("start"),
            what: "blocks its thread",
            attempts: 2,
            says: &[
                "gave up after 2 attempts",
                "hard deadline",
                "blocks its thread",
            ],
        },
    ];

    let worker = Worker::builder(store.clone())
        .queues(["poison", "ordinary"])
        .concurrency(8)
        .lease(Duration::from_secs(1))
        .deadline_grace(Duration::from_millis(50))
        .poll_interval(Duration::from_millis(100))
        .shutdown_grace(Duration::from_secs(2))
        .build()
        .expect("worker")
        .spawn();

    // Ordinary tasks, started every 25 ms for as long as any poison task lives.
    let stop = Arc::new(AtomicBool::new(false));
    let fed = Arc::new(Mutex::new(Vec::new()));
    let feeder = tokio::spawn({
        let (queue, stop, fed) = (queue.clone(), stop.clone(), fed.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = ordinary::start(&queue, n)
                    .await
                    .expect("start an ordinary task");
                fed.lock().expect("lock").push(id);
                n += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });

    let ids: Vec<TaskId> = poison.iter().map(|p| p.id).collect();
    wait_until("every poison task dead", Duration::from_secs(60), || {
        all_in_state(&queue, ids.clone(), TaskState::Dead)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    feeder.await.expect("feeder");
    let fed = fed.lock().expect("lock").clone();
    wait_until("every ordinary task done", Duration::from_secs(30), || {
        all_in_state(&queue, fed.clone(), TaskState::Done)
    })
    .await;
    worker.shutdown().await.expect("shutdown");

    let mut ordinary_done = Vec::new();
    for id in &fed {
        let t = queue.task(*id).await.expect("task").expect("exists");
        assert_eq!(t.attempts.len(), 1, "ran once: {:?}", t.attempts);
        ordinary_done.push(t.info.finished_at.expect("a done task has finished_at"));
    }
    for p in &poison {
        let t: TaskDetail = queue.task(p.id).await.expect("task").expect("exists");
        let error = t.info.last_error.clone().unwrap_or_default();
        for s in p.says {
            assert!(
                error.contains(s),
                "{} ({}): the reason should say {s:?}; it is {error:?}; attempts {:#?}",
                p.what,
                store.backend(),
                t.attempts
            );
        }
        assert_eq!(
            t.attempts.last().map(|a| a.outcome.as_str()),
            Some("dead"),
            "{}: {:#?}",
            p.what,
            t.attempts
        );
        let tries = t.attempts.iter().filter(|a| a.outcome != "dead").count() as u32;
        assert!(
            tries == p.attempts || tries + 1 == p.attempts,
            "{}: {} attempts before dead: {:#?}",
            p.what,
            p.attempts,
            t.attempts
        );
        // The worker served ordinary tasks while this one was being retried: between the
        // end of its first attempt and its death.
        let first_end = t.attempts[0].finished_at;
        let dead_at = t.info.finished_at.expect("a dead task has finished_at");
        let served = ordinary_done
            .iter()
            .filter(|d| **d > first_end && **d < dead_at)
            .count();
        assert!(
            served > 0,
            "{} ({}): no ordinary task finished while it was retried ({first_end} .. {dead_at}); ordinary tasks finished at {ordinary_done:?}",
            p.what,
            store.backend()
        );
    }
    eprintln!(
        "{}: {} ordinary tasks served beside {} poison tasks",
        store.backend(),
        fed.len(),
        poison.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_tasks_end_dead_and_the_worker_serves_the_rest_memory() {
    campaign(taskq_tests::memory_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_tasks_end_dead_and_the_worker_serves_the_rest_sqlite() {
    campaign(taskq_tests::sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_tasks_end_dead_and_the_worker_serves_the_rest_postgres() {
    campaign(taskq_tests::postgres_store().await).await;
}
