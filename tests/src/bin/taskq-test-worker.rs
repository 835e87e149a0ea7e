//! A worker process for the crash tests: serves the shared test tasks from a store until
//! it is killed or gets SIGTERM.
//!
//! `taskq-test-worker STORE_URL LOG_PATH [LEASE_MS] [CONCURRENCY] [ITEMS_DB WALK_LOG]`
//!
//! - `LOG_PATH`: the [`EffectLog`] of `append_line`.
//! - `LEASE_MS` (default 1000) and `CONCURRENCY` (default 8): the worker's settings.
//! - `ITEMS_DB WALK_LOG`: the items database and [`WalkLog`] of `crash_walk_logged`, the
//!   crash campaign's iterative task (without them its steps fail and are retried).
//!
//! The worker keeps its default name (`host-pid-random`): the crash checks read the
//! process id from it. It may run `kill_my_worker` ([`MayKillMe`]), which SIGKILLs it.

use std::time::Duration;

use taskq_runtime::{queue::Queue, Worker};
use taskq_tests::models::ItemDb;
use taskq_tests::tasks::{crash_walk_logged, EffectLog, MayKillMe, WalkLog};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: taskq-test-worker STORE_URL LOG_PATH [LEASE_MS] [CONCURRENCY] [ITEMS_DB WALK_LOG]";
    let (Some(url), Some(log)) = (args.get(1), args.get(2)) else {
        return Err(usage.into());
    };
    let lease_ms: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let concurrency: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let queue = Queue::open(url).await?;
    let mut builder = Worker::builder(queue.store().clone())
        .state(EffectLog(log.into()))
        .state(MayKillMe)
        .lease(Duration::from_millis(lease_ms))
        .concurrency(concurrency)
        .poll_interval(Duration::from_millis(50));
    match (args.get(5), args.get(6)) {
        (Some(items), Some(walk)) => {
            builder = builder
                .state(ItemDb::open(items))
                .state(WalkLog(walk.into()));
        }
        (None, None) => {}
        _ => return Err(usage.into()),
    }
    let worker = builder.build()?;
    // Naming the task keeps its registration linked into this binary.
    eprintln!(
        "taskq-test-worker {} ready (serving {} too)",
        worker.name(),
        crash_walk_logged::NAME
    );
    worker.run_until_shutdown().await?;
    Ok(())
}
