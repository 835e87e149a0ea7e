//! A task that kills its worker at every attempt (SIGKILL of the process running it) ends
//! dead after `max_attempts` lapsed leases, its reason saying the lease lapsed, and no
//! further worker dies for it. On SQLite and PostgreSQL (the memory store lives in one
//! process, which this test kills).

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use taskq_runtime::policy::LEASE_LAPSED;
use taskq_runtime::{Queue, TaskState};
use taskq_tests::tasks::{kill_my_worker, worker_pid};

/// `kill_my_worker`'s `max_attempts`.
const MAX_ATTEMPTS: u32 = 3;

fn spawn_worker(url: &str, log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskq-test-worker"))
        .arg(url)
        .arg(log)
        .arg("500")
        .arg("2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker process")
}

async fn poison_ends_dead(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("effects.log");
    let q = Queue::open(url).await.expect("open");
    let id = kill_my_worker::start(&q).await.expect("start");

    // One worker process at a time: each claims the task (once the last one's lease
    // lapsed), runs it and dies of it.
    let mut killed = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        let mut child = spawn_worker(url, &log);
        let pid = child.id();
        let status = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            loop {
                if let Some(s) = child.try_wait().expect("wait") {
                    return s;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    panic!("the worker process did not die of the poison task within 60 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .expect("wait for the worker");
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
        killed.push(pid);
    }

    // The next worker finds every attempt spent by lapsed leases: dead, without running it.
    let mut last = spawn_worker(url, &log);
    let start = Instant::now();
    let detail = loop {
        let d = q.task(id).await.expect("task").expect("exists");
        if d.info.state == TaskState::Dead {
            break d;
        }
        if let Some(s) = last.try_wait().expect("wait") {
            panic!("the last worker died too ({s}): {:?}", d.attempts);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not dead after 60 s: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // It is still alive: the task did not run again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        last.try_wait().expect("wait").is_none(),
        "the last worker lives"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(last.id().to_string())
        .status();
    let _ = last.wait();

    let outcomes: Vec<(u32, &str, Option<u32>)> = detail
        .attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), worker_pid(&a.worker)))
        .collect();
    let mut expected: Vec<(u32, &str, Option<u32>)> = killed
        .iter()
        .enumerate()
        .map(|(i, pid)| (i as u32 + 1, LEASE_LAPSED.0, Some(*pid)))
        .collect();
    expected.push((MAX_ATTEMPTS + 1, "dead", None));
    assert_eq!(outcomes.len(), expected.len(), "{:?}", detail.attempts);
    for (got, want) in outcomes.iter().zip(&expected) {
        assert_eq!(got.0, want.0, "attempt numbers: {:?}", detail.attempts);
        assert_eq!(got.1, want.1, "outcomes: {:?}", detail.attempts);
        if want.2.is_some() {
            assert_eq!(
                got.2, want.2,
                "the killed process held it: {:?}",
                detail.attempts
            );
        }
    }
    for a in &detail.attempts[..MAX_ATTEMPTS as usize] {
        assert_eq!(a.error.as_deref(), Some(LEASE_LAPSED.1));
    }
    let reason = detail.info.last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("lease lapsed") && reason.contains(&MAX_ATTEMPTS.to_string()),
        "the reason says the lease lapsed, {MAX_ATTEMPTS} times: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_task_killing_its_worker_ends_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("poison.db").display());
    poison_ends_dead(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_task_killing_its_worker_ends_dead() {
    poison_ends_dead(&taskq_tests::postgres_store_url()).await;
}
