//! On PostgreSQL the database's clock decides lease, due, bucket and tombstone times: a
//! worker or a queue whose host clock is off (here [`Clock::ahead`] / [`Clock::behind`])
//! never takes over a running task, never stalls a rate-limited queue, and writes due
//! times, lease ends, backoff and tombstone windows in the database's time.
//!
//! The lease scenario keeps the meaning of the (a worker 25 s ahead, a lease of
//! 5 s, a 20 s task) at a smaller scale in CI: skew > lease > renewal period, and the task
//! runs longer than the skew. `TASKQ_CLOCK_FULL=1` runs the issue's own figures.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskq_runtime::store::{QueueConfig, TaskState};
use taskq_runtime::tokio_postgres::{self, NoTls};
use taskq_runtime::{
    task, Clock, Queue, StartError, Store, StoreError, TaskError, TaskId, Timestamp, Worker,
};
use taskq_tests::{all_in_state, wait_until};

const HOUR: Duration = Duration::from_secs(3600);

/// The lease scenario's figures.
struct Scale {
    skew: Duration,
    lease: Duration,
    task: Duration,
}

fn scale() -> Scale {
    if std::env::var("TASKQ_CLOCK_FULL").is_ok_and(|v| v == "1") {
        Scale {
            skew: Duration::from_secs(25),
            lease: Duration::from_secs(5),
            task: Duration::from_secs(20),
        }
    } else {
        Scale {
            skew: Duration::from_secs(10),
            lease: Duration::from_secs(5),
            task: Duration::from_secs(12),
        }
    }
}

/// The database server's clock, read directly.
async fn db_now() -> Timestamp {
    let (client, conn) = tokio_postgres::connect(&taskq_tests::postgres_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::int8",
            &[],
        )
        .await
        .expect("read the database clock");
    Timestamp(row.get::<_, i64>(0))
}

/// Two stores on one fresh schema, as two hosts would have.
async fn two_stores() -> (Arc<dyn Store>, Arc<dyn Store>) {
    let url = taskq_tests::postgres_store_url();
    let a = taskq_runtime::store::open(&url).await.expect("open store");
    let b = taskq_runtime::store::open(&url).await.expect("open store");
    (a, b)
}

/// Executions running now, the most at once, and how many began.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
    starts: AtomicUsize,
}

impl Gauge {
    async fn run(&self, d: Duration) {
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        let _leave = Leave(&self.now);
        self.peak.fetch_max(n, Ordering::SeqCst);
        self.starts.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(d).await;
    }
}

static AHEAD: Gauge = Gauge {
    now: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    starts: AtomicUsize::new(0),
};
static BEHIND: Gauge = Gauge {
    now: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    starts: AtomicUsize::new(0),
};

#[task(queue = "clock_lease_ahead", max_attempts = 20)]
async fn long_task_ahead(ms: u64) -> Result<(), TaskError> {
    AHEAD.run(Duration::from_millis(ms)).await;
    Ok(())
}

#[task(queue = "clock_lease_behind", max_attempts = 20)]
async fn long_task_behind(ms: u64) -> Result<(), TaskError> {
    BEHIND.run(Duration::from_millis(ms)).await;
    Ok(())
}

fn worker(store: Arc<dyn Store>, queue: &str, name: &str, lease: Duration, clock: Clock) -> Worker {
    Worker::builder(store)
        .queues([queue])
        .name(name)
        .lease(lease)
        .poll_interval(Duration::from_millis(100))
        .clock(clock)
        .build()
        .expect("worker")
}

/// Runs one long task under two workers, `first` claiming it before `second` starts; the
/// task must run once, under `first`.
async fn runs_once(
    queue_name: &str,
    gauge: &Gauge,
    start: impl std::future::Future<Output = Result<TaskId, StartError>>,
    queue: &Queue,
    first: Worker,
    second: Worker,
    s: &Scale,
) {
    let first_name = first.name().to_string();
    let id = start.await.expect("start");
    let first = first.spawn();
    wait_until(
        "the first worker runs the task",
        Duration::from_secs(30),
        || async { gauge.starts.load(Ordering::SeqCst) == 1 },
    )
    .await;
    let second = second.spawn();
    wait_until("the task is done", s.task + Duration::from_secs(60), || {
        all_in_state(queue, [id], TaskState::Done)
    })
    .await;
    second.shutdown().await.expect("shutdown");
    first.shutdown().await.expect("shutdown");
    assert_eq!(
        gauge.peak.load(Ordering::SeqCst),
        1,
        "{queue_name}: two executions ran at once"
    );
    assert_eq!(
        gauge.starts.load(Ordering::SeqCst),
        1,
        "{queue_name}: the task ran more than once"
    );
    let detail = queue.task(id).await.expect("task").expect("exists");
    let outcomes: Vec<(&str, &str)> = detail
        .attempts
        .iter()
        .map(|a| (a.outcome.as_str(), a.worker.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [("done", first_name.as_str())],
        "{queue_name}: one attempt, done, by the worker that claimed it first"
    );
}

/// A worker whose clock is ahead of the database (and of the other worker) by more than a
/// lease never takes over the task the other one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_ahead_never_takes_over_a_running_task() {
    let s = scale();
    let (sa, sb) = two_stores().await;
    let queue = Queue::new(sa.clone());
    let q = "clock_lease_ahead";
    let honest = worker(sa, q, "honest", s.lease, Clock::system());
    let ahead = worker(sb, q, "ahead", s.lease, Clock::system().ahead(s.skew));
    let start = long_task_ahead::start(&queue, s.task.as_millis() as u64);
    runs_once(q, &AHEAD, start, &queue, honest, ahead, &s).await;
}

/// A worker whose clock is behind the database by more than a lease claims a task with a
/// lease the database's clock honours: the other worker never takes it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_behind_keeps_the_task_it_runs() {
    let s = scale();
    let (sa, sb) = two_stores().await;
    let queue = Queue::new(sa.clone());
    let q = "clock_lease_behind";
    let behind = worker(sb, q, "behind", s.lease, Clock::system().behind(s.skew));
    let honest = worker(sa, q, "honest", s.lease, Clock::system());
    let start = long_task_behind::start(&queue, s.task.as_millis() as u64);
    runs_once(q, &BEHIND, start, &queue, behind, honest, &s).await;
}

#[task(queue = "clock_rate")]
async fn limited_task(n: u64) -> Result<(), TaskError> {
    let _ = n;
    Ok(())
}

/// A worker an hour ahead refills the token bucket of a rate-limited queue: the other
/// workers (honest, or an hour behind) still get tokens at the queue's rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_an_hour_ahead_does_not_stall_a_rate_limited_queue() {
    let (store, _) = two_stores().await;
    let queue = Queue::new(store.clone());
    queue
        .configure(
            "clock_rate",
            QueueConfig {
                rate: Some(2.0),
                burst: Some(1),
                max_concurrent: None,
                retention: None,
            },
        )
        .await
        .expect("configure");
    let phases = [
        ("an hour ahead", Clock::system().ahead(HOUR), 1u64),
        ("an hour behind", Clock::system().behind(HOUR), 2),
        ("on time", Clock::system(), 2),
    ];
    let mut n = 0;
    for (what, clock, tasks) in phases {
        let mut ids = Vec::new();
        for _ in 0..tasks {
            n += 1;
            ids.push(limited_task::start(&queue, n).await.expect("start"));
        }
        let w = worker(
            store.clone(),
            "clock_rate",
            what,
            Duration::from_secs(30),
            clock,
        )
        .spawn();
        wait_until(
            &format!("a worker {what} to get tokens for {tasks} tasks of a queue of 2 per second"),
            Duration::from_secs(30),
            || all_in_state(&queue, ids.clone(), TaskState::Done),
        )
        .await;
        w.shutdown().await.expect("shutdown");
    }
}

/// When each task of `delayed_task` ran, by its number.
static RAN: Mutex<Vec<(u64, Instant)>> = Mutex::new(Vec::new());

#[task(queue = "clock_delay")]
async fn delayed_task(n: u64) -> Result<(), TaskError> {
    RAN.lock().expect("lock").push((n, Instant::now()));
    Ok(())
}

/// A delay given to a queue whose clock is off counts from the database's clock, and a
/// worker whose clock is off runs the task when the database's clock says it is due: not
/// before, and not an hour late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_starts_become_due_at_database_time() {
    let delay = Duration::from_secs(3);
    let slack = Duration::from_secs(1);
    let (store, _) = two_stores().await;

    // The due times stored by skewed queues.
    for (what, clock) in [
        ("an hour ahead", Clock::system().ahead(HOUR)),
        ("an hour behind", Clock::system().behind(HOUR)),
    ] {
        let queue = Queue::with_clock(store.clone(), clock);
        let before = db_now().await;
        let id = delayed_task::builder(0)
            .queue("clock_delay_nobody")
            .delay(delay)
            .start(&queue)
            .await
            .expect("start");
        let after = db_now().await;
        let run_at = queue
            .task(id)
            .await
            .expect("task")
            .expect("exists")
            .info
            .run_at;
        assert!(
            run_at >= before.add(delay).sub(slack) && run_at <= after.add(delay).add(slack),
            "a queue {what} stored run_at {run_at}, not the database's {before}..{after} plus {delay:?}"
        );
    }

    // Skewed workers run delayed tasks at the database's due time.
    let queue = Queue::new(store.clone());
    let started = Instant::now();
    let ahead = delayed_task::builder(1)
        .queue("clock_delay_ahead")
        .delay(delay)
        .start(&queue)
        .await
        .expect("start");
    let behind = delayed_task::builder(2)
        .queue("clock_delay_behind")
        .delay(delay)
        .start(&queue)
        .await
        .expect("start");
    let w1 = worker(
        store.clone(),
        "clock_delay_ahead",
        "ahead",
        Duration::from_secs(30),
        Clock::system().ahead(HOUR),
    )
    .spawn();
    let w2 = worker(
        store.clone(),
        "clock_delay_behind",
        "behind",
        Duration::from_secs(30),
        Clock::system().behind(HOUR),
    )
    .spawn();
    wait_until(
        "a worker an hour behind runs a task due in 3 s",
        Duration::from_secs(30),
        || all_in_state(&queue, [ahead, behind], TaskState::Done),
    )
    .await;
    w1.shutdown().await.expect("shutdown");
    w2.shutdown().await.expect("shutdown");
    let ran = RAN.lock().expect("lock").clone();
    for n in [1, 2] {
        let at = ran
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, at)| *at)
            .expect("ran");
        // The store's estimates of the database clock differ by milliseconds; a claim
        // before the due time would show here as a run well before the delay.
        assert!(
            at.duration_since(started) >= delay - Duration::from_millis(500),
            "task {n} ran {:?} after its start, before its {delay:?} delay",
            at.duration_since(started)
        );
    }
}

#[task(queue = "clock_tomb")]
async fn named_task() -> Result<(), TaskError> {
    Ok(())
}

/// A named task deleted through a queue whose clock is off keeps its name for its window
/// in the database's time: not freed at once (behind), not held for an hour (ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_count_in_database_time() {
    let window = Duration::from_secs(5);
    let (store, _) = two_stores().await;
    let honest = Queue::new(store.clone());
    for (what, clock) in [
        ("an hour ahead", Clock::system().ahead(HOUR)),
        ("an hour behind", Clock::system().behind(HOUR)),
    ] {
        let name = format!("tomb {what}");
        let skewed = Queue::with_clock(store.clone(), clock);
        let id = named_task::builder()
            .name(&name)
            .tombstone(window)
            .start(&honest)
            .await
            .expect("start");
        // Before the call: the window counts from the `now` the call takes.
        let deleted = Instant::now();
        skewed.delete(id).await.expect("delete");
        let again = named_task::builder()
            .name(&name)
            .tombstone(window)
            .start(&honest)
            .await;
        assert!(
            matches!(again, Err(StartError::Store(StoreError::AlreadyExists(_)))),
            "deleted through a queue {what}, the name was free at once: {again:?}"
        );
        wait_until(
            &format!("the name deleted through a queue {what} to be free after its 5 s window"),
            Duration::from_secs(20),
            || async {
                named_task::builder()
                    .name(&name)
                    .tombstone(window)
                    .start(&honest)
                    .await
                    .is_ok()
            },
        )
        .await;
        assert!(
            deleted.elapsed() >= window - Duration::from_millis(500),
            "deleted through a queue {what}, the name was free after {:?}",
            deleted.elapsed()
        );
    }
}

static TIMES_RUNNING: AtomicBool = AtomicBool::new(false);
static TIMES_RELEASE: AtomicBool = AtomicBool::new(false);

#[task(queue = "clock_times", min_backoff = "30s", max_backoff = "30s")]
async fn failing_task() -> Result<(), TaskError> {
    TIMES_RUNNING.store(true, Ordering::SeqCst);
    while !TIMES_RELEASE.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(TaskError::retry("try later"))
}

/// The lease end and the backoff due time a worker an hour ahead writes are in the
/// database's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_worker_writes_lease_and_backoff_in_database_time() {
    let lease = Duration::from_secs(5);
    let slack = Duration::from_secs(1);
    let (store, _) = two_stores().await;
    let queue = Queue::new(store.clone());
    let id = failing_task::start(&queue).await.expect("start");
    let w = worker(
        store.clone(),
        "clock_times",
        "ahead",
        lease,
        Clock::system().ahead(HOUR),
    )
    .spawn();
    wait_until("the attempt runs", Duration::from_secs(30), || async {
        TIMES_RUNNING.load(Ordering::SeqCst)
    })
    .await;
    let info = queue.task(id).await.expect("task").expect("exists").info;
    let now = db_now().await;
    let until = info.lease_until.expect("a running task has a lease");
    assert!(
        until <= now.add(lease).add(slack),
        "lease until {until}, more than {lease:?} after the database's {now}"
    );
    TIMES_RELEASE.store(true, Ordering::SeqCst);
    wait_until("the retry is recorded", Duration::from_secs(30), || {
        all_in_state(&queue, [id], TaskState::Pending)
    })
    .await;
    w.shutdown().await.expect("shutdown");
    let info = queue.task(id).await.expect("task").expect("exists").info;
    let now = db_now().await;
    // Backoff of 30 s with jitter on its upper half: due 15 to 30 s after the attempt.
    assert!(
        info.run_at <= now.add(Duration::from_secs(30)).add(slack),
        "the retry is due at {}, more than 30 s after the database's {now}",
        info.run_at
    );
    assert!(
        info.run_at >= now.add(Duration::from_secs(15)).sub(slack * 5),
        "the retry is due at {}, less than its backoff after the database's {now}",
        info.run_at
    );
}

#[task(queue = "clock_virtual")]
async fn virtual_task() -> Result<(), TaskError> {
    Ok(())
}

/// Virtual time stays virtual on PostgreSQL: the harness's clock is kept (a delay of an
/// hour costs no real time), while a queue on real time reads the database's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_time_is_kept_on_postgres() {
    let (store, _) = two_stores().await;
    assert!(Queue::new(store.clone()).clock().is_remote());
    assert!(
        Queue::with_clock(store.clone(), Clock::system().ahead(HOUR))
            .clock()
            .is_remote()
    );
    let h = taskq_runtime::testing::Harness::with_store(store.clone());
    let queue = h.queue();
    assert!(queue.clock().is_manual());
    let t0 = h.clock().now();
    let id = virtual_task::builder()
        .delay(HOUR)
        .start(&queue)
        .await
        .expect("start");
    let started = Instant::now();
    let report = h.drain().await.expect("drain");
    assert!(
        started.elapsed() < Duration::from_secs(600),
        "no real hour passed"
    );
    let runs = report.of(id);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, "done");
    assert!(
        runs[0].at >= t0.add(HOUR),
        "ran at virtual {}, an hour after {t0}",
        runs[0].at
    );
}

/// The store's estimate of the database clock agrees with a direct reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_clock_estimates_the_database_clock() {
    let (store, _) = two_stores().await;
    let clock = store.clock().expect("PostgreSQL keeps a clock");
    for _ in 0..3 {
        let before = db_now().await;
        let estimate = clock.now();
        let after = db_now().await;
        // The estimate's error is at most half its reading's round trip (local: below a
        // millisecond); slack for a loaded machine.
        let slack = Duration::from_millis(250);
        assert!(
            estimate >= before.sub(slack) && estimate <= after.add(slack),
            "estimate {estimate} outside the database's {before}..{after}"
        );
    }
}
