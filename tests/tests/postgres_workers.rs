//! Many worker processes on one PostgreSQL: exactly once without crashes; nothing lost and
//! duplicates only among in-flight tasks when one process is SIGKILLed.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use taskq_runtime::{Queue, TaskId, TaskState};
use taskq_tests::tasks::{
    append_line, assert_only_in_flight_tasks_ran_twice, read_effects, read_log,
};

fn spawn_worker(url: &str, log: &Path, lease_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskq-test-worker"))
        .arg(url)
        .arg(log)
        .arg(lease_ms.to_string())
        .arg("8")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker process")
}

async fn done_count(q: &Queue) -> u64 {
    q.queues()
        .await
        .expect("queues")
        .iter()
        .find(|x| x.name == "crash")
        .map(|x| x.count(TaskState::Done))
        .unwrap_or(0)
}

async fn start_tasks(q: &Queue, n: u64) -> Vec<TaskId> {
    let mut ids = Vec::new();
    let all: Vec<u64> = (0..n).collect();
    for chunk in all.chunks(2000) {
        ids.extend(
            q.start_many(chunk.iter().map(|i| append_line::builder(*i, 0)))
                .await
                .expect("start"),
        );
    }
    ids
}

async fn wait_all_done(q: &Queue, n: u64, children: &mut [Child], limit: Duration) {
    let start = Instant::now();
    loop {
        let done = done_count(q).await;
        if done == n {
            return;
        }
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("a worker process exited early: {status}");
            }
        }
        assert!(
            start.elapsed() < limit,
            "only {done} of {n} done after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stop(children: Vec<Child>) {
    for mut c in children {
        // SIGTERM: graceful shutdown.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let _ = c.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_do_20000_tasks_exactly_once() {
    let url = taskq_tests::postgres_store_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("effects.log");
    let q = Queue::open(&url).await.expect("open");
    const N: u64 = 20_000;
    start_tasks(&q, N).await;
    let mut children: Vec<Child> = (0..4).map(|_| spawn_worker(&url, &log, 30_000)).collect();
    wait_all_done(&q, N, &mut children, Duration::from_secs(600)).await;
    stop(children);
    let effects = read_log(&log);
    let distinct: HashSet<u64> = effects.iter().copied().collect();
    assert_eq!(distinct.len() as u64, N, "every task ran");
    assert_eq!(effects.len() as u64, N, "no task ran twice");
    // The work was shared: more than one process recorded attempts.
    let mut workers = HashSet::new();
    for t in q
        .list(&taskq_runtime::store::TaskQuery {
            limit: 400,
            ..Default::default()
        })
        .await
        .expect("list")
    {
        let d = q.task(t.id).await.expect("task").expect("exists");
        workers.extend(d.attempts.into_iter().map(|a| a.worker));
    }
    assert!(
        workers.len() >= 2,
        "the tasks were shared between processes: {workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_process_loses_nothing() {
    let url = taskq_tests::postgres_store_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("effects.log");
    let q = Queue::open(&url).await.expect("open");
    const N: u64 = 20_000;
    let ids = start_tasks(&q, N).await;
    let mut children: Vec<Child> = (0..4).map(|_| spawn_worker(&url, &log, 2_000)).collect();
    let start = Instant::now();
    while read_log(&log).len() < 4_000 {
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut victim = children.remove(0);
    victim.kill().expect("SIGKILL");
    victim.wait().expect("reap");
    wait_all_done(&q, N, &mut children, Duration::from_secs(600)).await;
    stop(children);
    let effects = read_effects(&log);
    assert_only_in_flight_tasks_ran_twice(&q, &ids, &effects).await;
}
