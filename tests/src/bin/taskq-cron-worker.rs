//! A worker process for the periodic-task test (`tests/tests/cron_across_workers.rs`): one
//! worker on its own store connection, with one task declared to run every second. The
//! worker registers that schedule when it starts and fires its ticks, as every worker
//! does; the test runs three of these on one store and checks each tick fired once.
//!
//! `taskq-cron-worker STORE_URL`: prints `ready` on stdout once the worker runs, and
//! serves until stdin closes.

use std::io::{BufRead, Write};
use std::time::Duration;

use taskq_runtime::{task, TaskError, Worker};

/// Every second (a six-field expression), on a queue of its own.
#[task(cron = "* * * * * *", queue = "cron-probe", max_attempts = 1)]
async fn every_second() -> Result<(), TaskError> {
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: taskq-cron-worker STORE_URL";
    let args: Vec<String> = std::env::args().collect();
    let [_, url] = args.as_slice() else {
        return Err(usage.into());
    };
    let store = taskq_runtime::store::open(url).await?;
    let worker = Worker::builder(store)
        .name(format!("cron-{}", std::process::id()))
        .queues(["cron-probe"])
        .poll_interval(Duration::from_millis(100))
        .prune(false)
        .build()?
        .spawn();
    println!("ready");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await?;
    worker.shutdown().await?;
    Ok(())
}
