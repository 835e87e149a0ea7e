//! The README's tour: declare a task, start it twice (once by name), run a worker until
//! the work is done. It finishes by itself and can be run again and again.

use std::time::Duration;

use taskq_runtime::{task, Context, Queue, StartError, StoreError, TaskError, TaskState, Worker};
use tracing_subscriber::EnvFilter;

/// Pretends to send a mail. The arguments after `Context` are stored as JSON.
#[task(queue = "email", max_attempts = 5, timeout = "30s")]
async fn send_email(ctx: Context, to: String, subject: String) -> Result<(), TaskError> {
    if to.is_empty() {
        return Err(TaskError::fatal("no recipient")); // failed, never retried
    }
    println!("mail {to}: {subject} (attempt {})", ctx.attempt());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The worker logs through `tracing`: show its lines at `info` unless RUST_LOG says otherwise.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    // Creates taskq.db in the current directory (a SQLite file) the first time.
    let queue = Queue::open("sqlite://taskq.db").await?;

    let id = send_email::start(&queue, "ada@example.org".into(), "Hello".into()).await?;
    println!("started task {id}");

    // A named start de-duplicates: the name stays taken while the task is pending or running
    // and for an hour after it finished (its tombstone window), so a second run of this
    // tour within the hour is told it already exists.
    match send_email::builder("ada@example.org".into(), "Welcome".into())
        .name("welcome-ada")
        .start(&queue)
        .await
    {
        Ok(id) => println!("started task {id} as `welcome-ada`"),
        Err(StartError::Store(StoreError::AlreadyExists(name))) => {
            println!("`{name}` was already started (it is live, or finished within the hour)")
        }
        Err(e) => return Err(e.into()),
    }

    // A worker in the background of this process; a service would call
    // `.run_until_shutdown().await?` instead (it stops on Ctrl-C or SIGTERM).
    let worker = Worker::builder(queue.store().clone())
        .queues(["email"])
        .build()?
        .spawn();

    // Wait until nothing is pending or running, then stop the worker gracefully.
    loop {
        let busy: u64 = queue
            .queues()
            .await?
            .iter()
            .map(|q| q.count(TaskState::Pending) + q.count(TaskState::Running))
            .sum();
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown().await?;
    println!("all done; run me again");
    Ok(())
}
