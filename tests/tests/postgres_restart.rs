//! A PostgreSQL restart under a running worker, while tasks are in flight: it reconnects,
//! the tasks that ran through the outage finish once, and no task is lost or left stuck.
//! Its own test binary, so stopping the server disturbs no other test.
//!
//! It restarts the cluster `.ci/postgres.sh` recorded in `target/taskq-pg.env` (or the
//! file `TASKQ_TEST_POSTGRES_ENV` names), and only after checking, through SQL, that this
//! cluster is the server at `TASKQ_TEST_POSTGRES_URL` (same data directory and port): it
//! never restarts a server other than the one under test.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskq_runtime::{Queue, TaskState, Timestamp, Worker};
use taskq_tests::tasks::{
    append_line, assert_only_in_flight_tasks_ran_twice, read_effects, read_log, EffectLog,
};

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

/// The env file of the cluster to restart.
fn env_file() -> PathBuf {
    match std::env::var_os("TASKQ_TEST_POSTGRES_ENV") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/taskq-pg.env"),
    }
}

/// The test cluster's env file written by `.ci/postgres.sh`.
fn cluster_env() -> HashMap<String, String> {
    let path = env_file();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the restart test needs the cluster of .ci/postgres.sh (or TASKQ_TEST_POSTGRES_ENV naming its env file)",
            path.display()
        )
    });
    let env: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            )
        })
        .collect();
    for key in ["PGBIN", "PGDATA", "PGPORT", "PGUSER_OS"] {
        assert!(env.contains_key(key), "{}: no {key}", path.display());
    }
    env
}

/// Fails unless the server at `url` is the cluster `env` describes: its data directory and
/// port, as the server itself reports them.
async fn assert_is_the_server_under_test(url: &str, env: &HashMap<String, String>) {
    use taskq_runtime::tokio_postgres::{connect, NoTls};
    let (base, _) = taskq_tests::pg_models::split_schema(url);
    let (client, conn) = connect(&base, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {base}: {e}"));
    let driver = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT current_setting('data_directory'), current_setting('port')",
            &[],
        )
        .await
        .expect("ask the server for its data directory and port");
    let (data, port): (String, String) = (row.get(0), row.get(1));
    drop(client);
    let _ = driver.await;
    let canonical = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
    assert_eq!(
        (canonical(&data), port.as_str()),
        (canonical(&env["PGDATA"]), env["PGPORT"].as_str()),
        "the server at TASKQ_TEST_POSTGRES_URL ({base}) is not the cluster {} names: refusing to restart it",
        env_file().display()
    );
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

/// Long tasks (longer than the outage) that are running when the server stops.
const LONG: u64 = 4;
/// How long each runs.
const LONG_MS: u64 = 8_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_a_server_restart() {
    let env = cluster_env();
    let url = taskq_tests::postgres_store_url();
    assert_is_the_server_under_test(&url, &env).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("effects.log");
    let q = Queue::open(&url).await.expect("open");
    const N: u64 = 3_000;
    // Tasks 0..LONG are long and claimed first; the rest are short.
    let mut ids = q
        .start_many((0..LONG).map(|i| append_line::builder(i, LONG_MS).priority(10)))
        .await
        .expect("start");
    ids.extend(
        q.start_many((LONG..N).map(|i| append_line::builder(i, 1)))
            .await
            .expect("start"),
    );
    // A lease well beyond the outage: the tasks in flight keep theirs through it. (A task
    // whose lease cannot be renewed is stopped at a quarter of the lease left; on a loaded
    // machine the stop, the start and the reconnection back-off of up to 5 s took more
    // than the 7.5 s a 10 s lease leaves.)
    let w = Worker::builder(q.store().clone())
        .state(EffectLog(log.clone()))
        .lease(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(100))
        .concurrency(8)
        .build()
        .expect("worker")
        .spawn();
    let start = Instant::now();
    loop {
        let mut running = 0;
        for id in &ids[..LONG as usize] {
            let t = q.task(*id).await.expect("task").expect("exists");
            running += usize::from(t.info.state == TaskState::Running);
        }
        if running == LONG as usize && read_log(&log).len() >= 100 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The long tasks run now, and none has written its effect yet.
    let logged: HashSet<u64> = read_log(&log).into_iter().collect();
    assert!(
        (0..LONG).all(|i| !logged.contains(&i)),
        "the long tasks are still running"
    );

    // Stop the server for a while, then bring it back.
    let down_at = Timestamp::now();
    let env2 = env.clone();
    tokio::task::spawn_blocking(move || pg_ctl(&env2, "stop"))
        .await
        .expect("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let env2 = env.clone();
    tokio::task::spawn_blocking(move || pg_ctl(&env2, "start"))
        .await
        .expect("start");
    let up_at = Timestamp::now();
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

    // The outage hit mid-run: each long task's one attempt began before the server went
    // down and ended after it came back, done, its effect written once.
    for (i, id) in ids[..LONG as usize].iter().enumerate() {
        let d = q.task(*id).await.expect("task").expect("exists");
        assert_eq!(d.attempts.len(), 1, "task {i} ran once: {:?}", d.attempts);
        let a = &d.attempts[0];
        assert_eq!(a.outcome, "done");
        assert!(
            a.started_at < down_at && a.finished_at > up_at,
            "task {i}'s attempt ({:?}..{:?}) spans the outage ({down_at:?}..{up_at:?})",
            a.started_at,
            a.finished_at
        );
    }
    let effects = read_effects(&log);
    let distinct: HashSet<u64> = effects.iter().map(|e| e.n).collect();
    assert_eq!(distinct.len() as u64, N);
    assert_only_in_flight_tasks_ran_twice(&q, &ids, &effects).await;
    let qs = q.queues().await.expect("queues");
    let crash = qs.iter().find(|x| x.name == "crash").expect("queue");
    assert_eq!(
        crash.count(TaskState::Running) + crash.count(TaskState::Pending),
        0,
        "nothing left stuck"
    );
}
