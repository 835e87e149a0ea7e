//! A worker process for the crash tests: serves the shared test tasks from a store until
//! it is killed or gets SIGTERM.
//!
//! `taskq-test-worker STORE_URL LOG_PATH [LEASE_MS] [CONCURRENCY]`

use std::time::Duration;

use taskq_runtime::{queue::Queue, Worker};
use taskq_tests::tasks::EffectLog;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(log)) = (args.get(1), args.get(2)) else {
        return Err("usage: taskq-test-worker STORE_URL LOG_PATH [LEASE_MS] [CONCURRENCY]".into());
    };
    let lease_ms: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let concurrency: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let queue = Queue::open(url).await?;
    let worker = Worker::builder(queue.store().clone())
        .state(EffectLog(log.into()))
        .lease(Duration::from_millis(lease_ms))
        .concurrency(concurrency)
        .poll_interval(Duration::from_millis(50))
        .build()?;
    eprintln!("taskq-test-worker {} ready", worker.name());
    worker.run_until_shutdown().await?;
    Ok(())
}
