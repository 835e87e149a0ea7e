//! Each tick of a periodic task fires exactly once however many workers run (issue 13):
//! three worker processes of `taskq-cron-worker` (each registers the every-second
//! schedule of its declared task at start and fires due ticks, with no scheduler process)
//! serve one SQLite file, or one PostgreSQL schema, for one minute of ticks (the two
//! stores in parallel; `TASKQ_CRON_SECONDS=N` for another length).
//!
//! Asserted from the store afterwards: the tasks the schedule started have due times
//! (their ticks) that are whole seconds, distinct, and without a gap from the first to the
//! last, which is the schedule's last tick; each ran once and is done.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use taskq_runtime::{Queue, TaskQuery, TaskState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TASK: &str = "taskq_cron_worker::every_second";

async fn each_tick_fires_once(url: &str) {
    let seconds: u64 = std::env::var("TASKQ_CRON_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let queue = Queue::open(url).await.expect("open the store");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut children = Vec::new();
    for p in 0..3 {
        let stderr =
            std::fs::File::create(dir.path().join(format!("worker-{p}.err"))).expect("stderr file");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskq-cron-worker"))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn taskq-cron-worker");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("worker process {p} not ready in 60 s"));
        assert_eq!(
            ready.ok().flatten().as_deref(),
            Some("ready"),
            "worker process {p}: {}",
            std::fs::read_to_string(dir.path().join(format!("worker-{p}.err"))).unwrap_or_default()
        );
        children.push(child);
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    // Stop them all (stdin closes), then wait for each to exit.
    for c in &mut children {
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.shutdown().await;
        }
    }
    for (p, c) in children.iter_mut().enumerate() {
        let status = tokio::time::timeout(Duration::from_secs(60), c.wait())
            .await
            .unwrap_or_else(|_| panic!("worker process {p} did not stop in 60 s"))
            .expect("wait");
        assert!(
            status.success(),
            "worker process {p}: {status}: {}",
            std::fs::read_to_string(dir.path().join(format!("worker-{p}.err"))).unwrap_or_default()
        );
    }

    let tasks = queue
        .list(&TaskQuery {
            task: Some(TASK.into()),
            limit: 100_000,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    let ticks: Vec<i64> = tasks.iter().map(|t| t.run_at.0).collect();
    let distinct: BTreeSet<i64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    assert!(
        distinct.len() as u64 >= seconds.saturating_sub(4),
        "{} ticks in {seconds} s",
        distinct.len()
    );
    let first = *distinct.first().expect("ticks");
    let last = *distinct.last().expect("ticks");
    assert!(
        ticks.iter().all(|t| t % 1000 == 0),
        "ticks are whole seconds"
    );
    assert_eq!(
        (last - first) / 1000 + 1,
        distinct.len() as i64,
        "a tick is missing between the first and the last: {distinct:?}"
    );
    let schedules = queue.schedules().await.expect("schedules");
    let s = schedules
        .iter()
        .find(|s| s.name == TASK)
        .expect("the declared schedule");
    assert_eq!(s.last_tick.map(|t| t.0), Some(last));
    assert!(s.declared && !s.task_missing);
    // Every tick's task ran once (attempts 1), whichever process claimed it; the last
    // ones may still be pending, claimed by no one after the workers stopped.
    for t in &tasks {
        assert!(
            t.attempts <= 1 && matches!(t.state, TaskState::Done | TaskState::Pending),
            "{t:?}"
        );
    }
    assert!(
        tasks.iter().filter(|t| t.state == TaskState::Done).count() + 3 >= tasks.len(),
        "the workers ran the ticks' tasks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_fires_once_across_three_processes_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("cron.db").display());
    each_tick_fires_once(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_fires_once_across_three_processes_on_postgres() {
    each_tick_fires_once(&taskq_tests::postgres_store_url()).await;
}
