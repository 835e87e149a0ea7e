//! A PostgreSQL restart under a running worker: it reconnects, and no task is lost or
//! left stuck. Its own test binary, so stopping the server disturbs no other test.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskq_runtime::{Queue, TaskState, Worker};
use taskq_tests::tasks::{append_line, read_log, EffectLog};

async fn done_count(q: &Queue) -> u64 {
    q.queues()
        .await
        .map(|qs| {
            qs.iter()
                .find(|x| x.name == "crash")
                .map(|x| x.count(TaskState::Done))
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The test cluster's env file written by `.ci/postgres.sh`.
fn cluster_env() -> HashMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/taskq-pg.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the restart test needs the cluster of .ci/postgres.sh",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            )
        })
        .collect()
}

fn pg_ctl(env: &HashMap<String, String>, action: &str) {
    let bin = format!("{}/pg_ctl", env["PGBIN"]);
    let log = format!("{}/../server.log", env["PGDATA"]);
    let args = [
        "-D",
        env["PGDATA"].as_str(),
        "-m",
        "fast",
        "-w",
        "-t",
        "60",
        "-l",
        log.as_str(),
        action,
    ];
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let status = if is_root {
        Command::new("runuser")
            .args(["-u", env["PGUSER_OS"].as_str(), "--", bin.as_str()])
            .args(args)
            .current_dir("/")
            .stdout(Stdio::null())
            .status()
    } else {
        Command::new(&bin).args(args).stdout(Stdio::null()).status()
    };
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "pg_ctl {action} failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_a_server_restart() {
    let env = cluster_env();
    let url = taskq_tests::postgres_store_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("effects.log");
    let q = Queue::open(&url).await.expect("open");
    const N: u64 = 3_000;
    q.start_many((0..N).map(|i| append_line::builder(i, 1)))
        .await
        .expect("start");
    let w = Worker::builder(q.store().clone())
        .state(EffectLog(log.clone()))
        .lease(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(100))
        .concurrency(4)
        .build()
        .expect("worker")
        .spawn();
    let start = Instant::now();
    while read_log(&log).len() < 300 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stop the server for a while, then bring it back.
    let env2 = env.clone();
    tokio::task::spawn_blocking(move || pg_ctl(&env2, "stop"))
        .await
        .expect("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let env2 = env.clone();
    tokio::task::spawn_blocking(move || pg_ctl(&env2, "start"))
        .await
        .expect("start");
    let start = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), done_count(&q)).await {
            Ok(n) if n == N => break,
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "tasks stuck after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.shutdown().await.expect("shutdown");
    let distinct: HashSet<u64> = read_log(&log).into_iter().collect();
    assert_eq!(distinct.len() as u64, N);
    let qs = q.queues().await.expect("queues");
    let crash = qs.iter().find(|x| x.name == "crash").expect("queue");
    assert_eq!(
        crash.count(TaskState::Running) + crash.count(TaskState::Pending),
        0,
        "nothing left stuck"
    );
}
