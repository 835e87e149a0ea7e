//! Named tasks de-duplicate: starting a name that is live, or finished within its
//! tombstone window, returns an "already exists" error.
//!
//! `cargo run -p taskq-examples --bin named_tasks`

use std::time::Duration;

use taskq_examples::wait_finished;
use taskq_runtime::store::StoreError;
use taskq_runtime::{task, Queue, StartError, TaskError, Worker};

#[task(queue = "welcome")]
async fn send_welcome(user: String) -> Result<(), TaskError> {
    println!("  (worker) welcome mail to {user}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open("memory://").await?;
    let start = || {
        send_welcome::builder("ada".into())
            .name("welcome-ada")
            .tombstone(Duration::from_millis(500))
            .start(&queue)
    };
    let id = start().await?;
    println!("started `welcome-ada` as task {id}");

    // A double click, a retried HTTP request: the same name again while it is pending.
    match start().await {
        Err(StartError::Store(StoreError::AlreadyExists(name))) => {
            println!("second start of `{name}` refused: already exists")
        }
        other => return Err(format!("expected an already-exists error, got {other:?}").into()),
    }

    let worker = Worker::builder(queue.store().clone())
        .queues(["welcome"])
        .poll_interval(Duration::from_millis(10))
        .build()?
        .spawn();
    wait_finished(&queue, id, Duration::from_secs(10)).await?;
    println!("task {id} is done");

    // Finished, but inside its 500 ms tombstone window: still refused.
    match start().await {
        Err(e) => println!("start right after it finished refused: {e}"),
        Ok(id) => return Err(format!("started again as {id} inside the tombstone window").into()),
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = start().await?;
    println!("after the tombstone window the name is free again: task {again}");
    wait_finished(&queue, again, Duration::from_secs(10)).await?;
    worker.shutdown().await?;
    Ok(())
}
