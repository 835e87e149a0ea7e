//! An iterative task over an in-memory model: sum the multiples of 7 among 0..10,000, in
//! batches of 250, with the cursor, batches and progress visible while it runs.
//!
//! `cargo run -p taskq-examples --bin iterate`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq_runtime::store::RunState;
use taskq_runtime::{iterative_task, Context, Model, Queue, TaskError, Worker};

/// The "table": numbers, sorted by key.
struct Numbers(Vec<u64>);

/// One entity.
struct Number(u64);

/// Which numbers a run walks through.
#[derive(Serialize, Deserialize)]
struct MultiplesOf(u64);

impl Model for Number {
    type Key = u64;
    type Filter = MultiplesOf;
    type Source = Arc<Numbers>;

    fn key(&self) -> u64 {
        self.0
    }

    async fn batch(
        src: &Arc<Numbers>,
        f: &MultiplesOf,
        after: Option<&u64>,
        limit: usize,
    ) -> Result<Vec<Number>, TaskError> {
        // Keyset paging: the first entry after the cursor, then filter and take.
        let start = match after {
            Some(k) => src.0.partition_point(|n| n <= k),
            None => 0,
        };
        Ok(src.0[start..]
            .iter()
            .filter(|n| *n % f.0 == 0)
            .take(limit)
            .map(|n| Number(*n))
            .collect())
    }

    async fn count(src: &Arc<Numbers>, f: &MultiplesOf) -> Result<Option<u64>, TaskError> {
        Ok(Some(src.0.iter().filter(|n| *n % f.0 == 0).count() as u64))
    }
}

/// The running sum, app state.
#[derive(Default)]
struct Sum(AtomicU64);

#[iterative_task(model = Number, batch_size = 250, queue = "numbers")]
async fn add_up(ctx: Context, numbers: Vec<Number>, scale: u64) -> Result<(), TaskError> {
    let sum = ctx.state::<Arc<Sum>>()?;
    let batch: u64 = numbers.iter().map(|n| n.0 * scale).sum();
    sum.0.fetch_add(batch, Ordering::Relaxed);
    // Slow enough to watch the progress move.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open("memory://").await?;
    let numbers = Arc::new(Numbers((0..10_000).collect()));
    let sum = Arc::new(Sum::default());
    let worker = Worker::builder(queue.store().clone())
        .state(numbers.clone())
        .state(sum.clone())
        .queues(["numbers"])
        .poll_interval(Duration::from_millis(10))
        .build()?
        .spawn();

    let run = add_up::start(&queue, MultiplesOf(7), 1).await?;
    println!("started run {run} of {}", add_up::NAME);
    let info = loop {
        let it = queue.iteration(run).await?;
        println!(
            "  {:>9}: processed {:>4} of {}, {:>2} batches, cursor {}",
            it.state.as_str(),
            it.processed,
            it.total
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".into()),
            it.batches,
            it.cursor
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into())
        );
        if it.state != RunState::Running {
            break it;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    };
    worker.shutdown().await?;
    let expected: u64 = (0..10_000u64).filter(|n| n % 7 == 0).sum();
    println!(
        "run {run} {} in {} step(s): sum of multiples of 7 = {} (expected {expected})",
        info.state.as_str(),
        info.steps,
        sum.0.load(Ordering::Relaxed)
    );
    Ok(())
}
