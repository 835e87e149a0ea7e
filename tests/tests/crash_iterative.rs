//! kill -9 of a worker process in the middle of an iterative run on SQLite: a new worker
//! finishes the run, no entity is skipped, and only the batch in flight at the kill is
//! processed twice.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskq_runtime::store::RunState;
use taskq_runtime::{Queue, Worker};
use taskq_tests::models::{crash_walk, read_iter_log, ItemDb, ItemFilter, IterLog, CRASH_BATCH};
use taskq_tests::tasks::read_ids;

const N: i64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_iteration_redoes_only_the_batch_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let items_path = dir.path().join("items.db");
    let log = dir.path().join("effects.log");
    let db = ItemDb::open(&items_path);
    db.insert((1..=N).map(|i| (i, "a")));

    let q = Queue::open(&url).await.expect("open store");
    let run = crash_walk::start(&q, ItemFilter::default(), 3)
        .await
        .expect("start");

    // The worker in another process, killed once it is well into the run.
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskq-iter-worker"))
        .arg(&url)
        .arg(&items_path)
        .arg(&log)
        .arg("1000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker");
    let start = Instant::now();
    while read_iter_log(&log).len() < 6_000 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the child worker made no progress"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child worker exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    // What the store says was done when the worker died: the last checkpoint.
    let at_kill = q.iteration(run).await.expect("progress");
    assert_eq!(at_kill.state, RunState::Running);
    let cursor: i64 =
        serde_json::from_value(at_kill.cursor.clone().expect("a checkpoint")).expect("cursor");
    // The worker is dead: the log is final for now, and a torn line fails the test.
    let before = read_ids(&log);
    assert!(
        (before.len() as i64) < N,
        "killed mid-run ({} of {N} done)",
        before.len()
    );
    assert_eq!(
        at_kill.processed as i64, cursor,
        "every checkpointed entity was processed once"
    );
    // Logged beyond the checkpoint: part (or all) of the one batch in flight.
    let in_flight: Vec<i64> = before.iter().copied().filter(|id| *id > cursor).collect();
    assert!(
        in_flight.len() <= CRASH_BATCH,
        "more than one batch in flight: {}",
        in_flight.len()
    );
    assert!(
        in_flight
            .iter()
            .all(|id| *id <= cursor + CRASH_BATCH as i64),
        "logged ids beyond the next batch"
    );
    assert!(
        before.iter().take(cursor as usize).copied().eq(1..=cursor),
        "the checkpointed part is 1..=cursor, in order"
    );

    // A new worker finishes the run once the dead worker's lease lapses.
    let w = Worker::builder(q.store().clone())
        .state(db.clone())
        .state(IterLog(log.clone()))
        .queues(["crash-iter"])
        .lease(Duration::from_millis(1000))
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("worker")
        .spawn();
    let start = Instant::now();
    let done = loop {
        let it = q.iteration(run).await.expect("progress");
        if it.state != RunState::Running {
            break it;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not finished: {it:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    w.shutdown().await.expect("shutdown");
    assert_eq!(done.state, RunState::Done, "{done:?}");
    assert_eq!(done.cursor, Some(serde_json::json!(N)));
    assert_eq!(done.total, Some(N as u64));

    let effects = read_ids(&log);
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for id in &effects {
        *counts.entry(*id).or_insert(0) += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>(),
        "every entity processed, none skipped"
    );
    let twice: Vec<i64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(counts.values().all(|n| *n <= 2), "nothing ran three times");
    assert_eq!(
        twice, in_flight,
        "processed twice: exactly the part of the batch in flight at the kill"
    );
    // The first step's history shows the dead worker's lapsed lease.
    let steps = q
        .list(&taskq_runtime::store::TaskQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    let mut lapsed = 0;
    for t in steps.iter().filter(|t| t.run == Some(run)) {
        let d = q.task(t.id).await.expect("task").expect("exists");
        lapsed += d
            .attempts
            .iter()
            .filter(|a| a.outcome == "lease lapsed")
            .count();
    }
    assert_eq!(lapsed, 1, "one step was cut short by the kill");
    eprintln!(
        "killed at cursor {cursor}; {} in flight redone; run done in {} steps",
        twice.len(),
        done.steps
    );
}
