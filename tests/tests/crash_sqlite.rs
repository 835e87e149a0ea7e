//! kill -9 of a worker process on SQLite: nothing that start() acknowledged is lost.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskq_runtime::{Queue, TaskState, Worker};
use taskq_tests::tasks::{
    append_line, assert_only_in_flight_tasks_ran_twice, read_effects, read_log, EffectLog,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    let log = dir.path().join("effects.log");
    const N: u64 = 1500;
    let ids = {
        let q = Queue::open(&url).await.expect("open");
        q.start_many((0..N).map(|n| append_line::builder(n, 2)))
            .await
            .expect("start")
    };

    // A worker in another process, killed with SIGKILL once it is well into the work.
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskq-test-worker"))
        .arg(&url)
        .arg(&log)
        .arg("1000")
        .arg("8")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker");
    let start = Instant::now();
    while read_log(&log).len() < 300 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the child worker made no progress"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child worker exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let before = read_log(&log).len() as u64;
    assert!(before < N, "killed mid-run ({before} of {N} done)");

    // A new worker finishes everything.
    let q = Queue::open(&url).await.expect("reopen");
    let w = Worker::builder(q.store().clone())
        .state(EffectLog(log.clone()))
        .lease(Duration::from_millis(1000))
        .poll_interval(Duration::from_millis(50))
        .concurrency(8)
        .build()
        .expect("worker")
        .spawn();
    let start = Instant::now();
    loop {
        let qs = q.queues().await.expect("queues");
        let crash = qs.iter().find(|x| x.name == "crash").expect("crash queue");
        if crash.count(TaskState::Done) == N {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not finished: {crash:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.shutdown().await.expect("shutdown");

    let qs = q.queues().await.expect("queues");
    let crash = qs.iter().find(|x| x.name == "crash").expect("crash queue");
    assert_eq!(crash.count(TaskState::Done), N);
    assert_eq!(
        crash.count(TaskState::Dead) + crash.count(TaskState::Failed),
        0
    );
    let effects = read_effects(&log);
    assert_only_in_flight_tasks_ran_twice(&q, &ids, &effects).await;
}
