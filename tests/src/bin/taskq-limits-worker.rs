//! A worker process for the queue-limit tests (`tests/tests/limits_across_workers.rs`):
//! several workers, each on a store connection of its own, serve the probe queues until
//! stdin closes. Every execution of a probe task appends one line to the log.
//!
//! `taskq-limits-worker STORE_URL LOG_PATH WORKERS CONCURRENCY`
//!
//! It prints `ready` on stdout once every worker runs. A log line is
//! `ID QUEUE CLAIM_MS START_NS END_NS`: the task, its queue, the `now` of the claim that
//! took it (milliseconds since the Unix epoch, read back from the lease: `lease_until`
//! minus [`LEASE`], before any renewal), and when the task's function began and ended
//! (nanoseconds since the Unix epoch, wall clock: one clock for every process of the
//! machine).

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskq_runtime::{task, Context, TaskError, Worker};

/// The lease of every worker: far longer than a probe runs, so no lease is renewed (the
/// claim's `now` stays readable from `lease_until`) and none lapses.
const LEASE: Duration = Duration::from_secs(60);

/// Where probe executions are logged (app state of every worker).
#[derive(Clone)]
struct Log(Arc<Mutex<std::fs::File>>);

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One execution: note the start, read the claim's `now` back, run for `ms`, log a line.
async fn probe(ctx: &Context, ms: u64) -> Result<(), TaskError> {
    let start = now_ns();
    let row = ctx
        .store()
        .task(ctx.id())
        .await
        .map_err(TaskError::retry)?
        .ok_or_else(|| TaskError::fatal("the probe's own row is gone"))?;
    let lease_until = row
        .info
        .lease_until
        .ok_or_else(|| TaskError::fatal("a running probe without a lease"))?;
    let claim_ms = lease_until.0 - LEASE.as_millis() as i64;
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let end = now_ns();
    let line = format!("{} {} {claim_ms} {start} {end}\n", ctx.id(), ctx.queue());
    let log = ctx.state::<Log>()?;
    let mut file = log.0.lock().unwrap_or_else(|p| p.into_inner());
    // One write per line: the line is whole in the file, whatever else runs.
    file.write_all(line.as_bytes()).map_err(TaskError::fatal)?;
    Ok(())
}

/// A probe on the queue with `max_concurrent` only.
#[task(queue = "limits-capped", max_attempts = 1)]
async fn capped(ctx: Context, ms: u64) -> Result<(), TaskError> {
    probe(&ctx, ms).await
}

/// A probe on the queue with a rate and burst only.
#[task(queue = "limits-rated", max_attempts = 1)]
async fn rated(ctx: Context, ms: u64) -> Result<(), TaskError> {
    probe(&ctx, ms).await
}

/// A probe on the queue with a rate, a burst and `max_concurrent`.
#[task(queue = "limits-both", max_attempts = 1)]
async fn both(ctx: Context, ms: u64) -> Result<(), TaskError> {
    probe(&ctx, ms).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: taskq-limits-worker STORE_URL LOG_PATH WORKERS CONCURRENCY";
    let args: Vec<String> = std::env::args().collect();
    let [_, url, log, workers, concurrency] = args.as_slice() else {
        return Err(usage.into());
    };
    let workers: usize = workers.parse()?;
    let concurrency: usize = concurrency.parse()?;
    let log = Log(Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?,
    )));
    let mut handles = Vec::new();
    for i in 0..workers {
        // A store of its own per worker: its own SQLite connection, its own PostgreSQL pool.
        let store = taskq_runtime::store::open(url).await?;
        let worker = Worker::builder(store)
            .name(format!("p{}-w{i}", std::process::id()))
            .queues(["limits-capped", "limits-rated", "limits-both"])
            .concurrency(concurrency)
            .lease(LEASE)
            .poll_interval(Duration::from_millis(20))
            .state(log.clone())
            .build()?;
        handles.push(worker.spawn());
    }
    println!("ready");
    std::io::stdout().flush()?;
    // Serve until the test closes stdin (or dies).
    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await?;
    for h in handles {
        h.shutdown().await?;
    }
    Ok(())
}
