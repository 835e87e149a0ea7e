//! `#[iterative_task]` over a PostgreSQL table (`taskq_tests::pg_models::PgItem`) with the
//! PostgresStore in the same schema: exactly once without failures, at least once and
//! nothing skipped with injected batch failures. Each test has a schema of its own.
//! Also cancel against a step's hand-over, ordered deterministically by a side connection
//! that holds the run's row lock.
//!
//! These need the test server (`TASKQ_TEST_POSTGRES_URL`, set by `./test.sh` or
//! `source .ci/postgres.sh`); without it they fail, they never skip.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskq_runtime::store::postgres::PostgresStore;
use taskq_runtime::store::{
    ClaimRequest, Finish, IterationInfo, Outcome, RunState, StoreError, TaskQuery,
};
use taskq_runtime::testing::Harness;
use taskq_runtime::tokio_postgres::{self, Client, NoTls};
use taskq_runtime::{iterative_task, Context, Queue, Store, TaskError, TaskId, Timestamp, Worker};
use taskq_tests::models::{AllTickets, Gate, Ticket};
use taskq_tests::pg_models::{PgItem, PgItemDb, PgItemFilter};

/// Batch size of [`pg_walk`].
const BATCH: u64 = 100;

/// What [`pg_walk`] does per batch, given to the worker as state.
#[derive(Default)]
struct Knobs {
    /// Percentage of batches that fail (once each) with a retryable error.
    fail_pct: u64,
    /// Batches (by first id) that already failed once.
    failed: Mutex<HashSet<i64>>,
    /// How many batches failed.
    failures: AtomicU64,
}

impl Knobs {
    /// Whether the batch starting at `first` fails now: a deterministic share of batches,
    /// the first time each is seen.
    fn fails(&self, first: i64) -> bool {
        self.fail_pct > 0
            && (first.unsigned_abs().wrapping_mul(2_654_435_761) >> 7) % 100 < self.fail_pct
            && self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(first)
    }

    /// Failing batches whose first id is in an even hundred fail before their work
    /// (nothing written), the others after it (their effects are written twice).
    fn fails_before_work(first: i64) -> bool {
        (first / 100) % 2 == 0
    }
}

/// Writes one `effects` row per item; may fail as the knobs say.
#[iterative_task(
    model = PgItem,
    batch_size = 100,
    queue = "pg-walk",
    max_attempts = 50,
    min_backoff = "10ms",
    max_backoff = "100ms"
)]
async fn pg_walk(ctx: Context, items: Vec<PgItem>) -> Result<(), TaskError> {
    let db = ctx.state::<PgItemDb>()?.clone();
    let knobs = ctx.state::<Arc<Knobs>>()?.clone();
    let first = items.first().map(|i| i.id).unwrap_or_default();
    let last = items.last().map(|i| i.id).unwrap_or_default();
    let fails = knobs.fails(first);
    if fails && Knobs::fails_before_work(first) {
        knobs.failures.fetch_add(1, Ordering::SeqCst);
        return Err(TaskError::retry(format!(
            "injected failure before batch {first}..={last}"
        )));
    }
    db.record(&items, ctx.id().0, ctx.attempt() as i32).await?;
    if fails {
        knobs.failures.fetch_add(1, Ordering::SeqCst);
        return Err(TaskError::retry(format!(
            "injected failure after batch {first}..={last}"
        )));
    }
    Ok(())
}

/// A PostgresStore and the app's tables in one fresh schema, with 10,000 items over
/// groups `a` (5,000), `b` and `c` (2,500 each).
async fn setup() -> (Arc<dyn Store>, PgItemDb) {
    let url = taskq_tests::postgres_store_url();
    let store = taskq_runtime::store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("open the test PostgreSQL store at {url}: {e}"));
    assert_eq!(store.backend(), "postgres");
    let db = PgItemDb::connect(&url).await;
    db.fill(10_000, &["a", "b", "a", "c"]).await;
    (store, db)
}

fn worker(
    store: Arc<dyn Store>,
    db: &PgItemDb,
    knobs: &Arc<Knobs>,
) -> taskq_runtime::worker::WorkerHandle {
    Worker::builder(store)
        .state(db.clone())
        .state(knobs.clone())
        .queues(["pg-walk"])
        .poll_interval(Duration::from_millis(10))
        .build()
        .expect("worker")
        .spawn()
}

async fn wait_run(q: &Queue, run: TaskId, timeout: Duration) -> IterationInfo {
    let start = Instant::now();
    loop {
        let it = q.iteration(run).await.expect("iteration");
        if it.state != RunState::Running {
            return it;
        }
        assert!(
            start.elapsed() < timeout,
            "run not finished in {timeout:?}: {it:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_every_matching_entity_exactly_once() {
    let (store, db) = setup().await;
    let q = Queue::new(store.clone());
    let knobs = Arc::new(Knobs::default());
    let filter = PgItemFilter {
        grp: Some("a".into()),
    };
    let run = pg_walk::start(&q, filter).await.expect("start");
    let before = q.iteration(run).await.expect("progress");
    assert_eq!(
        (before.state, before.processed, before.cursor.clone()),
        (RunState::Running, 0, None)
    );

    let w = worker(store, &db, &knobs);
    let it = wait_run(&q, run, Duration::from_secs(120)).await;
    w.shutdown().await.expect("shutdown");

    let expected = db.ids(Some("a")).await;
    assert_eq!(expected.len(), 5_000);
    let seen = db.effect_counts().await;
    let want: BTreeMap<i64, usize> = expected.iter().map(|id| (*id, 1)).collect();
    assert_eq!(seen.len(), want.len(), "distinct entities processed");
    assert_eq!(
        seen, want,
        "every entity of group `a` exactly once, no entity of `b` or `c`"
    );

    let n = expected.len() as u64;
    assert_eq!(it.state, RunState::Done, "{it:?}");
    assert_eq!(it.processed, n);
    assert_eq!(it.total, Some(n));
    assert_eq!(it.percent(), Some(100.0));
    assert_eq!(it.batches, n.div_ceil(BATCH));
    assert_eq!(
        it.cursor,
        Some(serde_json::json!(expected[expected.len() - 1]))
    );
    assert_eq!(it.filter, serde_json::json!({ "grp": "a" }));
    assert!(it.finished_at.is_some() && it.error.is_none(), "{it:?}");
    assert_eq!(knobs.failures.load(Ordering::SeqCst), 0);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_batch_failures_skip_nothing() {
    let (store, db) = setup().await;
    let q = Queue::new(store.clone());
    let knobs = Arc::new(Knobs {
        fail_pct: 20,
        ..Knobs::default()
    });
    let run = pg_walk::start(&q, PgItemFilter::default())
        .await
        .expect("start");
    let w = worker(store, &db, &knobs);
    let it = wait_run(&q, run, Duration::from_secs(120)).await;
    w.shutdown().await.expect("shutdown");

    let failures = knobs.failures.load(Ordering::SeqCst);
    assert!(failures >= 5, "the test injects failures ({failures})");
    assert_eq!(it.state, RunState::Done, "{it:?}");
    assert_eq!(it.cursor, Some(serde_json::json!(10_000)));
    assert_eq!(it.percent(), Some(100.0));
    assert!(it.error.is_none(), "{it:?}");

    // At least once, none skipped; twice only for batches that failed after their work.
    let expected = db.ids(None).await;
    assert_eq!(expected.len(), 10_000);
    let seen = db.effect_counts().await;
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        expected,
        "every entity processed, none skipped"
    );
    let failed_after: HashSet<i64> = knobs
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .filter(|f| !Knobs::fails_before_work(*f))
        .collect();
    assert!(
        !failed_after.is_empty(),
        "some batches fail after their work"
    );
    for (id, n) in &seen {
        let batch_first = (id - 1) / 100 * 100 + 1;
        let want = if failed_after.contains(&batch_first) {
            2
        } else {
            1
        };
        assert_eq!(*n, want, "entity {id} (batch from {batch_first})");
    }
    // Progress counts only checkpointed batches: each once.
    assert_eq!(it.processed, 10_000);
    assert_eq!(it.batches, 100);

    // Each failure is one retried attempt in the steps' history, with its error.
    let tasks = q
        .list(&TaskQuery {
            limit: 10_000,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    let mut retries = 0u64;
    let mut errors = Vec::new();
    for t in tasks.into_iter().filter(|t| t.run == Some(run)) {
        let d = q.task(t.id).await.expect("task").expect("exists");
        for a in d.attempts {
            if a.outcome == "retry" {
                retries += 1;
                errors.extend(a.error);
            }
        }
    }
    assert_eq!(retries, failures, "each failure is one retry");
    assert!(
        errors.iter().all(|e| e.contains("injected failure")),
        "{errors:?}"
    );
    db.drop_schema().await;
}

/// Counts its calls in the [`Gate`]; one ticket per batch.
#[iterative_task(
    model = Ticket,
    batch_size = 1,
    queue = "pg-tickets",
    max_attempts = 5,
    min_backoff = "10ms",
    max_backoff = "10ms"
)]
async fn pg_punch(ctx: Context, tickets: Vec<Ticket>) -> Result<(), TaskError> {
    let gate = ctx.state::<Arc<Gate>>()?;
    gate.calls.fetch_add(1, Ordering::SeqCst);
    let _ = tickets;
    Ok(())
}

/// A plain connection to the test server.
async fn side_connection(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Waits until `n` backends wait for a lock in a statement naming `schema`.
async fn wait_lock_waiters(watch: &Client, schema: &str, n: i64) {
    let start = Instant::now();
    loop {
        let row = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND position($1 in query) > 0",
                &[&schema],
            )
            .await
            .expect("pg_stat_activity");
        let waiting: i64 = row.get(0);
        if waiting >= n {
            assert_eq!(waiting, n, "more lock waiters than calls in flight");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{n} lock waiters not seen (now {waiting})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Which call queues first behind the side connection's lock on the run's row.
#[derive(Clone, Copy, Debug)]
enum First {
    HandOver,
    Cancel,
}

/// A side connection holds the run's row lock while a step hands over (`Continue`) and a
/// cancel is issued, queued in the order `first` says; then it lets go. Both calls answer
/// (no deadlock), the run ends cancelled, no live step remains, and nothing due calls the
/// task's function for the run again.
async fn hand_over_against_cancel(first: First) {
    let url = taskq_tests::postgres_url();
    let schema = taskq_tests::unique_name("handover");
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::open_in_schema(&url, &schema)
            .await
            .expect("open"),
    );
    let q = Queue::new(store.clone());
    let run = pg_punch::start(&q, AllTickets).await.expect("start");
    // Act as the worker of the first step: claimed, its time slice used, about to hand over.
    let now = Timestamp::now();
    let claimed = store
        .claim(&ClaimRequest {
            queues: vec!["pg-tickets".into()],
            worker: "w".into(),
            limit: 1,
            lease: Duration::from_secs(600),
            now,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let lease = claimed[0].lease;

    let mut side = side_connection(&url).await;
    let watch = side_connection(&url).await;
    let tx = side.transaction().await.expect("begin");
    tx.query(
        &format!("SELECT 1 FROM \"{schema}\".taskq_iterations WHERE run_id = $1 FOR UPDATE"),
        &[&run.0],
    )
    .await
    .expect("lock the run's row");

    let hand_over = {
        let store = store.clone();
        async move {
            let f = Finish {
                lease,
                outcome: Outcome::Continue { run_at: now },
                started_at: now,
            };
            let mut r = store.finish(vec![f], "w", now).await?;
            r.pop().unwrap_or(Ok(()))
        }
    };
    let cancel = {
        let q = q.clone();
        async move { q.cancel_iteration(run).await }
    };
    let (hand_over, cancel) = match first {
        First::HandOver => {
            let h = tokio::spawn(hand_over);
            wait_lock_waiters(&watch, &schema, 1).await;
            let c = tokio::spawn(cancel);
            wait_lock_waiters(&watch, &schema, 2).await;
            (h, c)
        }
        First::Cancel => {
            let c = tokio::spawn(cancel);
            wait_lock_waiters(&watch, &schema, 1).await;
            let h = tokio::spawn(hand_over);
            wait_lock_waiters(&watch, &schema, 2).await;
            (h, c)
        }
    };
    tx.commit().await.expect("release the run's row");
    let bound = Duration::from_secs(60);
    let hand_over = tokio::time::timeout(bound, hand_over)
        .await
        .expect("the hand-over answers")
        .expect("join");
    let cancel = tokio::time::timeout(bound, cancel)
        .await
        .expect("the cancel answers")
        .expect("join");
    assert!(cancel.is_ok(), "{first:?}: cancel: {cancel:?}");
    match first {
        First::HandOver => assert!(hand_over.is_ok(), "{first:?}: {hand_over:?}"),
        First::Cancel => assert!(
            matches!(hand_over, Err(StoreError::LeaseLost(_))),
            "{first:?}: the hand-over after the cancel is refused: {hand_over:?}"
        ),
    }

    let it = q.iteration(run).await.expect("iteration");
    assert_eq!(it.state, RunState::Cancelled, "{first:?}: {it:?}");
    let live: Vec<_> = q
        .list(&TaskQuery::default())
        .await
        .expect("list")
        .into_iter()
        .filter(|t| t.run == Some(run) && t.state.is_live())
        .collect();
    assert!(live.is_empty(), "{first:?}: live continuation: {live:?}");

    // Whatever is due runs now: nothing of the cancelled run calls the function.
    let gate = Gate::new(3, 0);
    let report = Harness::with_store(store.clone())
        .state(gate.clone())
        .max_runs(20)
        .run_due()
        .await
        .expect("run what is due");
    assert_eq!(
        gate.calls(),
        0,
        "{first:?}: called after the cancel: {report:?}"
    );
    assert!(report.runs.is_empty(), "{first:?}: {report:?}");
    watch
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop the schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_behind_a_hand_over_cancels_the_continuation() {
    hand_over_against_cancel(First::HandOver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_queued_behind_a_cancel_is_refused_without_deadlock() {
    hand_over_against_cancel(First::Cancel).await;
}
