//! Storage faults on SQLite (issue 9, the fault campaign): a database file whose write
//! lock another process holds, and a full disk. In both, `start()` fails within a bounded
//! time with an error that names the condition, nothing is half-written (the tasks
//! acknowledged before are intact, a refused `start_many` stored none of its batch), and
//! the worker, running all along, recovers once the condition ends.
//!
//! The full disk is a file size limit (`RLIMIT_FSIZE`, lowered in a child process that
//! ignores `SIGXFSZ`): a size-limited file system cannot be mounted without root. SQLite
//! sees the same thing either way, a write that cannot grow its file (`ENOSPC` on a full
//! disk, `EFBIG` past the limit); "space returns" is the child raising its limit again.
//!
//! Both children are the `taskq-fault-child` binary (`tests/src/bin/taskq-fault-child.rs`):
//! `lock-holder DB` and `full-disk DB`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskq_runtime::store::TaskQuery;
use taskq_runtime::{task, Queue, StartError, TaskError, TaskId, TaskState, Worker};
use taskq_tests::{all_in_state, wait_until};

#[task(queue = "faults")]
async fn record(n: u32, pad: String) -> Result<(), TaskError> {
    let _ = (n, pad);
    Ok(())
}

/// Runs the `taskq-fault-child` binary as `what` on `db`; through `sh` first when `shell`
/// is set (to ignore `SIGXFSZ`).
fn child(what: &str, db: &std::path::Path, shell: bool) -> Command {
    let exe = env!("CARGO_BIN_EXE_taskq-fault-child");
    let mut c = if shell {
        // An ignored signal stays ignored across exec: the child survives writes past
        // its file size limit and sees them fail (EFBIG) instead.
        let mut c = Command::new("sh");
        c.arg("-c").arg("trap '' XFSZ; exec \"$0\" \"$@\"").arg(exe);
        c
    } else {
        Command::new(exe)
    };
    c.arg(what).arg(db);
    c
}

/// The error text of a refused start, which must be a store error.
fn store_error(r: Result<impl std::fmt::Debug, StartError>) -> String {
    match r {
        Err(StartError::Store(e)) => e.to_string(),
        other => panic!("expected a store error, got {other:?}"),
    }
}

/// How many tasks the store holds, by listing them (reads work beside a writer's lock and
/// on a full disk).
async fn all_tasks(queue: &Queue) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = queue
        .list(&TaskQuery {
            limit: 100_000,
            ..TaskQuery::default()
        })
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.sort();
    ids
}

// ---- a database locked by another process -------------------------------------------

/// Runs a start, failing the test if it hangs; with how long it took.
async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, StartError>>,
) -> (Result<T, StartError>, Duration) {
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("a start returns while the database is locked (it must not hang)");
    (r, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_fails_start_clearly_and_the_worker_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("taskq.db");
    let queue = Queue::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let worker = Worker::builder(queue.store().clone())
        .queues(["faults"])
        .poll_interval(Duration::from_millis(100))
        .build()
        .expect("worker")
        .spawn();
    let mut before = Vec::new();
    for n in 0..5 {
        before.push(
            record::start(&queue, n, String::new())
                .await
                .expect("start"),
        );
    }
    wait_until("the first tasks done", Duration::from_secs(30), || {
        all_in_state(&queue, before.clone(), TaskState::Done)
    })
    .await;

    let mut holder = child("lock-holder", &path, false)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the lock holder");
    let mut out = BufReader::new(holder.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("LOCKED") {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read the child") > 0,
            "the lock holder ended before taking the lock"
        );
    }

    // While it holds the lock: start() and start_many(), called at once, each fail within
    // the busy timeout counted from its call (the second is not given another timeout
    // after queueing behind the first), with an error that names the lock.
    let bound = Duration::from_secs(15);
    let ((one, waited), (many, waited_many)) = tokio::join!(
        timed(record::start(&queue, 100, String::new())),
        timed(queue.start_many((0..3).map(|n| record::builder(200 + n, String::new())))),
    );
    let (one, many) = (store_error(one), store_error(many));
    assert!(
        waited < bound && waited_many < bound,
        "each call is bounded by the busy timeout (10 s) from its start: {waited:?}, {waited_many:?}"
    );
    for text in [&one, &many] {
        for says in ["locked", "another connection or process", "nothing"] {
            assert!(text.contains(says), "the error should say {says:?}: {text}");
        }
    }
    assert_eq!(
        all_tasks(&queue).await,
        before,
        "nothing of the refused starts was stored"
    );

    // The lock goes away: starts work again and the worker, running all along, runs them.
    drop(holder.stdin.take());
    let status = holder.wait().expect("the lock holder ends");
    assert!(status.success(), "the lock holder failed: {status}");
    let after = queue
        .start_many((0..3).map(|n| record::builder(300 + n, String::new())))
        .await
        .expect("start_many after the lock was released");
    wait_until(
        "the tasks started after the lock done",
        Duration::from_secs(60),
        || all_in_state(&queue, after.clone(), TaskState::Done),
    )
    .await;
    let mut all = before.clone();
    all.extend(&after);
    assert_eq!(all_tasks(&queue).await, all);
    worker.shutdown().await.expect("shutdown");
    eprintln!(
        "locked database: start() failed after {waited:?}, start_many() after {waited_many:?}: {one}"
    );
}

// ---- a full disk ----------------------------------------------------------------------

#[test]
fn a_full_disk_fails_start_clearly_and_the_worker_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("taskq.db");
    // Files, not pipes: a child that writes much cannot block on a full pipe.
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut c = child("full-disk", &path, true)
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn the child");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = c.try_wait().expect("wait for the child") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            break c.wait().expect("wait for the killed child");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    assert!(
        status.success() && stdout.contains("FULL-DISK-OK"),
        "the child failed ({status}):\n{stdout}\n{stderr}"
    );
    eprintln!(
        "{}",
        stdout
            .lines()
            .find(|l| l.contains("FULL-DISK-OK"))
            .unwrap_or_default()
    );
    // The file is sound after it all, read by another connection.
    let conn = rusqlite::Connection::open(&path).expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let done: i64 = conn
        .query_row(
            "SELECT count(*) FROM taskq_tasks WHERE state = 'done'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(done, 80, "20 + 10 tasks before, 50 after");
}
