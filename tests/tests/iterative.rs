//! `#[iterative_task]` behaviour over a real SQLite table (`taskq_tests::models::Item`):
//! exactly-once without failures, at-least-once and nothing skipped with failures, time
//! slices and continuation steps, keyset semantics under inserts and deletes, cancel.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskq_runtime::store::{IterationInfo, RunState, TaskQuery};
use taskq_runtime::testing::Harness;
use taskq_runtime::{iterative_task, Context, Queue, Store, TaskError, TaskId, Worker};
use taskq_tests::models::{AllTickets, Gate, Item, ItemDb, ItemFilter, Ticket};

/// A change to the table made by a batch, once.
type Hook = Box<dyn FnOnce() + Send>;

/// What the test tasks do per batch, given to the worker (or harness) as state.
#[derive(Default)]
struct Knobs {
    /// Every processed id, with the step and attempt that processed it.
    effects: Mutex<Vec<(i64, TaskId, u32)>>,
    /// Percentage of batches that fail (once each) with a retryable error.
    fail_pct: u64,
    /// Batches (by first id) that already failed once.
    failed: Mutex<HashSet<i64>>,
    /// How many batches failed.
    failures: AtomicU64,
    /// Pretend work per batch.
    work: Duration,
    /// Runs once, on the first batch whose last id is at least the given id.
    hook: Mutex<Option<(i64, Hook)>>,
    /// Every batch that did its work: its run, its ids and when it was in flight.
    batches: Mutex<Vec<Batch>>,
}

/// One batch that did its work ([`Knobs::batches`]).
struct Batch {
    run: Option<TaskId>,
    ids: Vec<i64>,
    /// From the call of the task's function to the end of its work.
    start: Instant,
    end: Instant,
}

impl Knobs {
    fn ids(&self) -> Vec<i64> {
        self.effects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| e.0)
            .collect()
    }

    async fn on_batch(&self, ctx: &Context, items: Vec<Item>) -> Result<(), TaskError> {
        let start = Instant::now();
        let first = items.first().map(|i| i.id).unwrap_or_default();
        let last = items.last().map(|i| i.id).unwrap_or_default();
        // A deterministic fraction of batches fails the first time it is seen: half of
        // them after doing their work (so their entities are processed twice), half before.
        let fails = self.fail_pct > 0
            && (first.unsigned_abs().wrapping_mul(2_654_435_761) >> 7) % 100 < self.fail_pct
            && self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(first);
        if fails && (first / 100) % 2 == 0 {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(TaskError::retry(format!(
                "injected failure before batch {first}..={last}"
            )));
        }
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        {
            let mut e = self.effects.lock().unwrap_or_else(|p| p.into_inner());
            for it in &items {
                e.push((it.id, ctx.id(), ctx.attempt()));
            }
        }
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Batch {
                run: ctx.run(),
                ids: items.iter().map(|i| i.id).collect(),
                start,
                end: Instant::now(),
            });
        let hook = {
            let mut h = self.hook.lock().unwrap_or_else(|p| p.into_inner());
            match h.as_ref() {
                Some((at, _)) if last >= *at => h.take().map(|(_, f)| f),
                _ => None,
            }
        };
        if let Some(f) = hook {
            f();
        }
        if fails {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(TaskError::retry(format!(
                "injected failure after batch {first}..={last}"
            )));
        }
        Ok(())
    }
}

/// Batches of 100, a generous timeout: one step unless something fails.
#[iterative_task(
    model = Item,
    batch_size = 100,
    queue = "walk",
    max_attempts = 50,
    min_backoff = "10ms",
    max_backoff = "100ms"
)]
async fn walk(ctx: Context, items: Vec<Item>, tag: String) -> Result<(), TaskError> {
    assert_eq!(tag, "t", "the extra argument arrives");
    let k = ctx.state::<Arc<Knobs>>()?.clone();
    k.on_batch(&ctx, items).await
}

/// Batches of 50 and a 200 ms soft deadline: a 100 ms time slice per step.
#[iterative_task(
    model = Item,
    batch_size = 50,
    queue = "slow",
    timeout = "200ms",
    min_backoff = "10ms",
    max_backoff = "100ms"
)]
async fn slow_walk(ctx: Context, items: Vec<Item>) -> Result<(), TaskError> {
    let k = ctx.state::<Arc<Knobs>>()?.clone();
    k.on_batch(&ctx, items).await
}

fn items_db() -> (tempfile::TempDir, ItemDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ItemDb::open(dir.path().join("items.db"));
    (dir, db)
}

/// 10,000 items over three groups; `a` has 5,000 of them.
fn fill_groups(db: &ItemDb) {
    let groups = ["a", "b", "a", "c"];
    db.insert((1..=10_000).map(|i| (i, groups[(i % 4) as usize])));
}

fn counts(ids: &[i64]) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(*id).or_insert(0) += 1;
    }
    m
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

/// Steps of a run with their attempts' outcomes.
async fn steps_of(q: &Queue, run: TaskId) -> Vec<Vec<String>> {
    let tasks = q
        .list(&TaskQuery {
            limit: 10_000,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    let mut out = Vec::new();
    for t in tasks.into_iter().filter(|t| t.run == Some(run)) {
        let d = q.task(t.id).await.expect("task").expect("exists");
        out.push(d.attempts.into_iter().map(|a| a.outcome).collect());
    }
    out
}

fn assert_exactly_once(knobs: &Knobs, expected: &[i64]) {
    let seen = counts(&knobs.ids());
    let want: BTreeMap<i64, usize> = expected.iter().map(|i| (*i, 1)).collect();
    assert_eq!(seen.len(), want.len(), "distinct entities processed");
    assert_eq!(seen, want, "every matching entity exactly once, no other");
}

fn check_done_progress(it: &IterationInfo, expected: &[i64], batch: u64) {
    let n = expected.len() as u64;
    assert_eq!(it.state, RunState::Done, "{it:?}");
    assert_eq!(it.processed, n);
    assert_eq!(it.total, Some(n));
    assert_eq!(it.percent(), Some(100.0));
    assert_eq!(it.batches, n.div_ceil(batch));
    assert_eq!(
        it.cursor,
        Some(serde_json::json!(expected.last().copied().expect("some")))
    );
    assert!(it.finished_at.is_some() && it.error.is_none(), "{it:?}");
    assert!(it.updated_at >= it.started_at);
}

#[tokio::test]
async fn ten_thousand_entities_exactly_once_on_the_harness() {
    let (_dir, db) = items_db();
    fill_groups(&db);
    let knobs = Arc::new(Knobs::default());
    let h = Harness::new().state(db.clone()).state(knobs.clone());
    let q = h.queue();
    let filter = ItemFilter {
        grp: Some("a".into()),
    };
    let run = walk::start(&q, filter, "t".into()).await.expect("start");
    let before = q.iteration(run).await.expect("progress");
    assert_eq!(
        (
            before.state,
            before.processed,
            before.batches,
            before.cursor.clone()
        ),
        (RunState::Running, 0, 0, None)
    );
    let report = h.drain().await.expect("drain");
    assert_eq!(report.count("done"), 1, "{:?}", report.runs);
    assert_eq!(report.count("retry"), 0);

    let expected = db.ids(Some("a"));
    assert_eq!(expected.len(), 5_000);
    assert_exactly_once(&knobs, &expected);
    let it = q.iteration(run).await.expect("progress");
    check_done_progress(&it, &expected, 100);
    assert_eq!(it.steps, 1);
    assert_eq!(it.filter, serde_json::json!({ "grp": "a" }));
}

/// Two runs at the same time on one worker: one over every item (100 batches), one over
/// group `b` (25 batches). Each processes its own entities exactly once, and the runs
/// truly overlap: some batch of one is in flight while a batch of the other is (from the
/// recorded instants of every batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_entities_exactly_once_with_a_worker_on_sqlite() {
    let (_dir, db) = items_db();
    fill_groups(&db);
    // A little pretend work per batch, so that each run lasts a while.
    let knobs = Arc::new(Knobs {
        work: Duration::from_millis(2),
        ..Knobs::default()
    });
    let store: Arc<dyn Store> = taskq_tests::sqlite_store().await;
    let q = Queue::new(store.clone());
    let all = walk::start(&q, ItemFilter::default(), "t".into())
        .await
        .expect("start");
    let b = walk::start(
        &q,
        ItemFilter {
            grp: Some("b".into()),
        },
        "t".into(),
    )
    .await
    .expect("start");
    let w = Worker::builder(store)
        .state(db.clone())
        .state(knobs.clone())
        .queues(["walk"])
        .concurrency(4)
        .poll_interval(Duration::from_millis(10))
        .build()
        .expect("worker")
        .spawn();
    let it_all = wait_run(&q, all, Duration::from_secs(60)).await;
    let it_b = wait_run(&q, b, Duration::from_secs(60)).await;
    w.shutdown().await.expect("shutdown");

    let batches = std::mem::take(&mut *knobs.batches.lock().unwrap_or_else(|p| p.into_inner()));
    for (run, it, grp, n) in [(all, &it_all, None, 10_000), (b, &it_b, Some("b"), 2_500)] {
        let expected = db.ids(grp);
        assert_eq!(expected.len(), n);
        check_done_progress(it, &expected, 100);
        let mut seen: Vec<i64> = batches
            .iter()
            .filter(|x| x.run == Some(run))
            .flat_map(|x| x.ids.iter().copied())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, expected, "run {run}: its entities, each exactly once");
    }
    let of = |run| batches.iter().filter(move |x| x.run == Some(run));
    let overlapping = of(all)
        .flat_map(|x| of(b).filter(move |y| x.start < y.end && y.start < x.end))
        .count();
    assert!(
        overlapping > 0,
        "the two runs took turns: no batch of one was in flight during a batch of the other"
    );
}

#[tokio::test]
async fn injected_failures_skip_nothing_and_show_in_attempts() {
    let (_dir, db) = items_db();
    fill_groups(&db);
    let knobs = Arc::new(Knobs {
        fail_pct: 20,
        ..Knobs::default()
    });
    let store = taskq_tests::sqlite_store().await;
    let h = Harness::with_store(store)
        .state(db.clone())
        .state(knobs.clone());
    let q = h.queue();
    let run = walk::start(&q, ItemFilter::default(), "t".into())
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");

    let failures = knobs.failures.load(Ordering::SeqCst);
    assert!(failures >= 5, "the test injects failures ({failures})");
    assert_eq!(
        report.count("retry") as u64,
        failures,
        "each failure is one retry"
    );
    let it = q.iteration(run).await.expect("progress");
    assert_eq!(it.state, RunState::Done, "{it:?}");
    assert_eq!(it.cursor, Some(serde_json::json!(10_000)));

    // At least once, nothing skipped; twice only for batches that failed after their work.
    let expected = db.ids(None);
    let seen = counts(&knobs.ids());
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        expected,
        "none skipped"
    );
    let failed = knobs
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let failed_after: HashSet<i64> = failed
        .iter()
        .copied()
        .filter(|f| (f / 100) % 2 != 0)
        .collect();
    for (id, n) in &seen {
        let batch_first = (id - 1) / 100 * 100 + 1;
        let want = if failed_after.contains(&batch_first) {
            2
        } else {
            1
        };
        assert_eq!(*n, want, "entity {id} (batch from {batch_first})");
    }
    // Progress counts redone batches again, and only checkpointed ones.
    assert_eq!(it.processed, 10_000);
    assert_eq!(it.batches, 100);

    // The retries are in the steps' attempt history, with their errors.
    let steps = steps_of(&q, run).await;
    let retries: usize = steps.iter().flatten().filter(|o| *o == "retry").count();
    assert_eq!(retries as u64, failures, "{steps:?}");
    let detail = q.task(run).await.expect("task").expect("first step");
    assert!(
        detail.attempts.iter().any(|a| a
            .error
            .as_deref()
            .is_some_and(|e| e.contains("injected failure"))),
        "{:?}",
        detail.attempts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_slices_chain_continuation_steps() {
    let (_dir, db) = items_db();
    db.insert((1..=1_000).map(|i| (i, "a")));
    let knobs = Arc::new(Knobs {
        work: Duration::from_millis(15),
        ..Knobs::default()
    });
    let store = taskq_tests::sqlite_store().await;
    let q = Queue::new(store.clone());
    let run = slow_walk::start(&q, ItemFilter::default())
        .await
        .expect("start");
    let w = Worker::builder(store)
        .state(db.clone())
        .state(knobs.clone())
        .queues(["slow"])
        .poll_interval(Duration::from_millis(10))
        .build()
        .expect("worker")
        .spawn();
    let it = wait_run(&q, run, Duration::from_secs(60)).await;
    w.shutdown().await.expect("shutdown");

    let expected = db.ids(None);
    check_done_progress(&it, &expected, 50);
    assert_exactly_once(&knobs, &expected);
    // 20 batches of >= 15 ms each cannot fit one 100 ms slice.
    assert!(it.steps > 1, "continuations: {it:?}");
    let steps = steps_of(&q, run).await;
    assert_eq!(steps.len() as u64, it.steps);
    let continued = steps
        .iter()
        .filter(|s| s.last().map(String::as_str) == Some("continued"))
        .count();
    assert_eq!(continued as u64, it.steps - 1, "{steps:?}");
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.last().map(String::as_str) == Some("done"))
            .count(),
        1
    );
    // Every step processed whole batches in order: each step's ids continue the last one's.
    let effects = knobs
        .effects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let step_ids: Vec<TaskId> = effects.iter().map(|e| e.1).collect();
    let mut distinct = step_ids.clone();
    distinct.dedup();
    // (The last step may find nothing left when the slice ended right after a full batch.)
    assert!(distinct.len() as u64 >= it.steps - 1, "{distinct:?}");
    let unique: HashSet<TaskId> = distinct.iter().copied().collect();
    assert_eq!(
        unique.len(),
        distinct.len(),
        "steps took turns, none overlapped"
    );
    assert!(
        effects.windows(2).all(|w| w[0].0 < w[1].0),
        "keyset order across steps"
    );
}

#[tokio::test]
async fn rows_inserted_and_deleted_during_a_run_follow_keyset_order() {
    let (_dir, db) = items_db();
    // Even ids 2..=2000, so there is room to insert.
    db.insert((1..=1_000).map(|i| (i * 2, "a")));
    let knobs = Arc::new(Knobs::default());
    {
        let db = db.clone();
        // After the batch that ends at 1000 (cursor = 1000).
        *knobs.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            1_000,
            Box::new(move || {
                db.insert([(11, "a"), (1_501, "a"), (2_001, "a")]); // behind, ahead, ahead at the end
                db.delete(1_800); // ahead
                db.delete(500); // behind, already processed
            }),
        ));
    }
    let h = Harness::new().state(db.clone()).state(knobs.clone());
    let q = h.queue();
    let run = walk::start(&q, ItemFilter::default(), "t".into())
        .await
        .expect("start");
    h.drain().await.expect("drain");

    let seen = counts(&knobs.ids());
    assert!(
        !seen.contains_key(&11),
        "inserted behind the cursor: not visited"
    );
    assert_eq!(
        seen.get(&1_501),
        Some(&1),
        "inserted ahead of the cursor: visited"
    );
    assert_eq!(
        seen.get(&2_001),
        Some(&1),
        "inserted ahead, at the end: visited"
    );
    assert!(
        !seen.contains_key(&1_800),
        "deleted ahead of the cursor: not visited"
    );
    assert_eq!(
        seen.get(&500),
        Some(&1),
        "deleted behind: was visited before"
    );
    let mut want: Vec<i64> = (1..=1_000).map(|i| i * 2).filter(|i| *i != 1_800).collect();
    want.extend([1_501, 2_001]);
    want.sort_unstable();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), want);
    assert!(seen.values().all(|n| *n == 1));
    let it = q.iteration(run).await.expect("progress");
    assert_eq!((it.state, it.processed), (RunState::Done, 1_001));
    assert_eq!(
        it.total,
        Some(1_000),
        "the total is counted when the run starts"
    );
    assert_eq!(it.cursor, Some(serde_json::json!(2_001)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops() {
    let (_dir, db) = items_db();
    db.insert((1..=2_000).map(|i| (i, "a")));
    let knobs = Arc::new(Knobs {
        work: Duration::from_millis(20),
        ..Knobs::default()
    });
    let store = taskq_tests::sqlite_store().await;
    let q = Queue::new(store.clone());
    let run = slow_walk::start(&q, ItemFilter::default())
        .await
        .expect("start");
    let w = Worker::builder(store)
        .state(db.clone())
        .state(knobs.clone())
        .queues(["slow"])
        .poll_interval(Duration::from_millis(10))
        .build()
        .expect("worker")
        .spawn();
    let start = Instant::now();
    while q.iteration(run).await.expect("progress").processed < 200 {
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    q.cancel_iteration(run).await.expect("cancel");
    let at_cancel = knobs.ids().len();
    let it = q.iteration(run).await.expect("progress");
    assert_eq!(it.state, RunState::Cancelled);
    let processed_at_cancel = it.processed;
    assert!(it.finished_at.is_some());

    // No step of the run is left to run: every one ends cancelled, continued, or with its
    // lease lost at its next checkpoint.
    let start = Instant::now();
    loop {
        let live = q
            .list(&TaskQuery {
                limit: 1_000,
                ..TaskQuery::default()
            })
            .await
            .expect("list")
            .into_iter()
            .filter(|t| t.run == Some(run) && t.state.is_live())
            .count();
        if live == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "steps still live after cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The batch in flight at the cancel may finish (its checkpoint is then refused); nothing
    // after it runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = knobs.ids().len();
    assert!(
        n - at_cancel <= 50,
        "at most the batch in flight ran after the cancel: {at_cancel} -> {n}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        knobs.ids().len(),
        n,
        "nothing processed after the run stopped"
    );
    w.shutdown().await.expect("shutdown");
    let it = q.iteration(run).await.expect("progress");
    assert_eq!(it.state, RunState::Cancelled, "stays cancelled: {it:?}");
    assert!(it.processed < 2_000, "stopped early: {it:?}");
    assert_eq!(
        it.processed, processed_at_cancel,
        "no checkpoint after the cancel"
    );
    assert!(n < 2_000);
    assert!(
        q.cancel_iteration(run).await.is_err(),
        "cancelling twice is refused"
    );
}

/// Waits, in its first call, until the model's read of the next batch has started, then
/// lets that read go on: it ends only if the step reads ahead while the function runs.
#[iterative_task(model = Ticket, batch_size = 10, queue = "ahead")]
async fn read_ahead_walk(ctx: Context, tickets: Vec<Ticket>) -> Result<(), TaskError> {
    let gate = ctx.state::<Arc<Gate>>()?;
    if gate.calls.fetch_add(1, Ordering::SeqCst) == 0 {
        gate.wait_entered(Duration::from_secs(60)).await;
        gate.release.add_permits(1);
    }
    let _ = tickets;
    Ok(())
}

/// The next batch is read while the task's function runs on this one (the step waits for
/// the longer of the two, not their sum), and every entity is still walked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_read_while_the_function_runs() {
    // 25 tickets in batches of 10: the second read (after ticket 10) is the one held.
    let gate = Gate::new(25, 2);
    let h = Harness::new().state(gate.clone());
    let q = h.queue();
    let run = read_ahead_walk::start(&q, AllTickets).await.expect("start");
    let report = tokio::time::timeout(Duration::from_secs(120), h.drain())
        .await
        .expect("the run ends")
        .expect("drain");
    assert_eq!(report.count("done"), 1, "{:?}", report.runs);
    let it = q.iteration(run).await.expect("iteration");
    assert_eq!(
        (it.state, it.processed, it.batches),
        (RunState::Done, 25, 3)
    );
    assert_eq!(gate.calls(), 3);
}
