//! A worker process for the iterative crash test: serves `crash_walk` over an items
//! database until it is killed or gets SIGTERM.
//!
//! `taskq-iter-worker STORE_URL ITEMS_DB LOG_PATH [LEASE_MS]`

use std::time::Duration;

use taskq_runtime::{Queue, Worker};
use taskq_tests::models::{crash_walk, ItemDb, IterLog};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(items), Some(log)) = (args.get(1), args.get(2), args.get(3)) else {
        return Err("usage: taskq-iter-worker STORE_URL ITEMS_DB LOG_PATH [LEASE_MS]".into());
    };
    let lease_ms: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let queue = Queue::open(url).await?;
    let worker = Worker::builder(queue.store().clone())
        .state(ItemDb::open(items))
        .state(IterLog(log.into()))
        .queues(["crash-iter"])
        .lease(Duration::from_millis(lease_ms))
        .concurrency(4)
        .poll_interval(Duration::from_millis(20))
        .build()?;
    // Naming the task keeps its registration linked into this binary.
    eprintln!(
        "taskq-iter-worker {} serving {}",
        worker.name(),
        crash_walk::NAME
    );
    worker.run_until_shutdown().await?;
    Ok(())
}
