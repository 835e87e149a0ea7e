//! The child processes of `tests/tests/storage_faults.rs`:
//!
//! - `taskq-fault-child lock-holder DB`: holds DB's write lock (`BEGIN EXCLUSIVE`) until
//!   its stdin closes, after printing `LOCKED`.
//! - `taskq-fault-child full-disk DB`: a worker and its starts on a disk that fills up (a
//!   file size limit, `RLIMIT_FSIZE`; run it with `SIGXFSZ` ignored), then has room again;
//!   prints `FULL-DISK-OK ...` when every check held, and panics otherwise.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use taskq_runtime::store::TaskQuery;
use taskq_runtime::{task, Queue, StartError, TaskError, TaskId, TaskState, Worker};
use taskq_tests::{all_in_state, wait_until};

#[task(queue = "faults")]
async fn record(n: u32, pad: String) -> Result<(), TaskError> {
    let _ = (n, pad);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("lock-holder"), Some(db)) => lock_holder(Path::new(db)),
        (Some("full-disk"), Some(db)) => full_disk(Path::new(db)),
        _ => {
            eprintln!("usage: taskq-fault-child lock-holder|full-disk DB");
            std::process::exit(2);
        }
    }
}

/// The error text of a refused start, which must be a store error.
fn store_error(r: Result<impl std::fmt::Debug, StartError>) -> String {
    match r {
        Err(StartError::Store(e)) => e.to_string(),
        other => panic!("expected a store error, got {other:?}"),
    }
}

/// The ids of every task the store holds, sorted.
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

/// The child: holds the write lock (`BEGIN EXCLUSIVE`) until its stdin closes.
fn lock_holder(db: &Path) {
    let c = rusqlite::Connection::open(db).expect("open");
    c.execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    println!("LOCKED");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    while std::io::stdin()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
    c.execute_batch("ROLLBACK").expect("release the write lock");
}

/// Sets the soft file size limit of this process (`None`: no limit, up to the hard one).
fn set_file_size_limit(bytes: Option<u64>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Fsize);
    let current = match (bytes, old.maximum) {
        (Some(b), Some(max)) => Some(b.min(max)),
        (Some(b), None) => Some(b),
        (None, max) => max,
    };
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current,
            maximum: old.maximum,
        },
    )
    .expect("setrlimit(RLIMIT_FSIZE)");
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The child: a worker and its starts on a disk that fills up, then has room again.
fn full_disk(path: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let queue = Queue::open(&format!("sqlite://{}", path.display()))
            .await
            .expect("open");
        let worker = Worker::builder(queue.store().clone())
            .queues(["faults"])
            .lease(Duration::from_secs(2))
            .poll_interval(Duration::from_millis(100))
            .build()
            .expect("worker")
            .spawn();
        let mut before = Vec::new();
        for n in 0..20 {
            before.push(
                record::start(&queue, n, "x".repeat(100))
                    .await
                    .expect("start"),
            );
        }
        wait_until("the first tasks done", Duration::from_secs(30), || {
            all_in_state(&queue, before.clone(), TaskState::Done)
        })
        .await;
        // Acknowledged, due while the disk is full: the worker meets the fault too.
        let due_later =
            queue
                .start_many((0..10).map(|n| {
                    record::builder(50 + n, String::new()).delay(Duration::from_millis(300))
                }))
                .await
                .expect("start the delayed tasks");
        before.extend(&due_later);

        // The disk fills: no file may grow past its size now (plus a little).
        let wal = path.with_extension("db-wal");
        let limit = file_len(path).max(file_len(&wal)) + 16 * 1024;
        set_file_size_limit(Some(limit));
        let batch_bytes = 4 * limit as usize + 256 * 1024;
        let pad = "p".repeat(batch_bytes / 50);
        let batch = || (0..50).map(|n| record::builder(1_000 + n, pad.clone()));
        let many = store_error(queue.start_many(batch()).await);
        let one = store_error(record::start(&queue, 999, "q".repeat(batch_bytes)).await);
        for text in [&many, &one] {
            assert!(
                text.contains("disk") && text.contains("full") && text.contains("file size limit"),
                "the error should name the full disk and the file size limit: {text}"
            );
            assert!(
                text.contains("nothing"),
                "the error should say nothing was stored: {text}"
            );
        }
        assert_eq!(
            all_tasks(&queue).await,
            before,
            "the acknowledged tasks are all there, and none of the refused ones"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Space returns: the same batch is stored, and the worker runs everything.
        set_file_size_limit(None);
        let after = queue
            .start_many(batch())
            .await
            .expect("start_many once there is room again");
        let mut all = before.clone();
        all.extend(&after);
        wait_until("every task done", Duration::from_secs(60), || {
            all_in_state(&queue, all.clone(), TaskState::Done)
        })
        .await;
        assert_eq!(all_tasks(&queue).await, all);
        worker.shutdown().await.expect("shutdown");
        println!(
            "FULL-DISK-OK limit {limit} bytes; a {batch_bytes}-byte start_many failed with: {many}"
        );
    });
}
