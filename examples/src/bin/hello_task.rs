//! The smallest taskq program: declare a task, start it, run a worker, see it done.
//!
//! `cargo run -p taskq-examples --bin hello_task`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskq_examples::wait_finished;
use taskq_runtime::{task, Context, Queue, TaskError, Worker};

/// What the task writes to, given to the worker as app state.
#[derive(Default)]
struct Greetings(Mutex<Vec<String>>);

/// Greets someone. The arguments after `Context` are stored as JSON.
#[task(queue = "hello")]
async fn greet(ctx: Context, name: String, times: u32) -> Result<(), TaskError> {
    let out = ctx.state::<Arc<Greetings>>()?;
    for _ in 0..times {
        out.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!(
                "hello, {name}! (task {}, attempt {})",
                ctx.id(),
                ctx.attempt()
            ));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open("memory://").await?;
    // Typed start helper, generated next to the function: rustc checks the arguments.
    let id = greet::start(&queue, "Ada".into(), 2).await?;
    println!("started task {id} ({})", greet::NAME);

    let greetings = Arc::new(Greetings::default());
    let worker = Worker::builder(queue.store().clone())
        .state(greetings.clone())
        .queues(["hello"])
        .build()?
        .spawn();
    let t = wait_finished(&queue, id, Duration::from_secs(10)).await?;
    worker.shutdown().await?;

    for line in greetings.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("  {line}");
    }
    println!(
        "task {id} is {} after {} attempt(s); payload {}",
        t.info.state, t.info.attempts, t.info.payload
    );
    // The function stays an ordinary async fn, callable (and unit-testable) directly.
    Ok(())
}
