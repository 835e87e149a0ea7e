//! Retries with backoff: a flaky task that succeeds on its third attempt, and a broken one
//! that runs out of attempts and goes dead. Prints every attempt.
//!
//! `cargo run -p taskq-examples --bin retries`

use std::time::Duration;

use taskq_examples::{print_attempts, wait_finished};
use taskq_runtime::{task, Context, Queue, TaskError, Worker};

/// Fails twice (a transient error: retried with backoff), then succeeds.
#[task(queue = "retries", min_backoff = "100ms", max_backoff = "1s")]
async fn flaky_upload(ctx: Context, file: String) -> Result<(), TaskError> {
    if ctx.attempt() < 3 {
        return Err(TaskError::retry(format!(
            "upload of {file}: 503 Service Unavailable"
        )));
    }
    Ok(())
}

/// Always fails with an ordinary error (`?` on any error type retries too); after three
/// attempts it is dead, with every error kept.
#[task(queue = "retries", max_attempts = 3, min_backoff = "50ms")]
async fn broken_report(week: u32) -> Result<(), std::io::Error> {
    Err(std::io::Error::other(format!(
        "week {week}: the report template is missing"
    )))
}

/// A fatal error is never retried: failed after one attempt.
#[task(queue = "retries")]
async fn bad_input(email: String) -> Result<(), TaskError> {
    Err(TaskError::fatal(format!(
        "`{email}` is not an email address"
    )))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open("memory://").await?;
    let flaky = flaky_upload::start(&queue, "photo.jpg".into()).await?;
    let broken = broken_report::start(&queue, 17).await?;
    let bad = bad_input::start(&queue, "not-an-address".into()).await?;
    let worker = Worker::builder(queue.store().clone())
        .queues(["retries"])
        .poll_interval(Duration::from_millis(20))
        .build()?
        .spawn();
    let mut tasks = Vec::new();
    for id in [flaky, broken, bad] {
        tasks.push(wait_finished(&queue, id, Duration::from_secs(20)).await?);
    }
    let stats = worker.stats().clone();
    worker.shutdown().await?;
    println!("attempt history:");
    for t in &tasks {
        print_attempts(t);
    }
    println!(
        "worker: {} done, {} retried, {} dead, {} failed",
        stats.done.load(std::sync::atomic::Ordering::Relaxed),
        stats.retried.load(std::sync::atomic::Ordering::Relaxed),
        stats.dead.load(std::sync::atomic::Ordering::Relaxed),
        stats.failed.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}
