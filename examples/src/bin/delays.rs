//! Delays and ETAs: a task due in 300 ms, one due at a given time, one due now.
//!
//! `cargo run -p taskq-examples --bin delays`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskq_examples::wait_finished;
use taskq_runtime::{task, Context, Queue, TaskError, Worker};

/// When each reminder ran, in ms after start-up.
struct Log(Instant, Mutex<Vec<(String, u128)>>);

#[task(queue = "reminders")]
async fn remind(ctx: Context, what: String) -> Result<(), TaskError> {
    let log = ctx.state::<Arc<Log>>()?;
    let ms = log.0.elapsed().as_millis();
    log.1
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((what, ms));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open("memory://").await?;
    let log = Arc::new(Log(Instant::now(), Mutex::new(Vec::new())));
    let worker = Worker::builder(queue.store().clone())
        .state(log.clone())
        .queues(["reminders"])
        .poll_interval(Duration::from_millis(10))
        .build()?
        .spawn();

    let later = remind::builder("in 300 ms (delay)".into())
        .delay(Duration::from_millis(300))
        .start(&queue)
        .await?;
    // An ETA on the queue's clock: on PostgreSQL the database's, which decides when it is due.
    let eta = queue.clock().now().add(Duration::from_millis(600));
    let at = remind::builder("at now + 600 ms (eta)".into())
        .at(eta)
        .start(&queue)
        .await?;
    let now = remind::start(&queue, "right away".into()).await?;
    let t = queue.task(later).await?.ok_or("task vanished")?;
    println!(
        "task {later} is {} until run_at {} ms from now",
        t.info.state,
        t.info.run_at.0 - queue.clock().now().0
    );

    for id in [now, later, at] {
        wait_finished(&queue, id, Duration::from_secs(10)).await?;
    }
    worker.shutdown().await?;
    for (what, ms) in log.1.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("  ran `{what}` at {ms} ms");
    }
    Ok(())
}
