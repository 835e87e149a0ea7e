//! An iterative step's attempts count the tries at its cursor: a long run whose batches
//! each fail once still finishes, while a batch that keeps failing goes dead.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use taskq_runtime::store::RunState;
use taskq_runtime::testing::Harness;
use taskq_runtime::{iterative_task, Context, Model, TaskError};

/// A number in an in-memory table.
#[derive(Debug, Clone)]
struct Num(i64);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct All;

/// The table: numbers 1..=n, and how often each batch (by first key) was tried.
struct Table {
    n: i64,
    tries: Mutex<HashMap<i64, u32>>,
}

impl Model for Num {
    type Key = i64;
    type Filter = All;
    type Source = Table;
    fn key(&self) -> i64 {
        self.0
    }
    async fn batch(
        t: &Table,
        _f: &All,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Num>, TaskError> {
        let start = after.copied().unwrap_or(0) + 1;
        Ok((start..=t.n).take(limit).map(Num).collect())
    }
}

#[iterative_task(model = Num, batch_size = 10, max_attempts = 2, min_backoff = "1s")]
async fn fails_each_batch_once(ctx: Context, nums: Vec<Num>, poison: i64) -> Result<(), TaskError> {
    let t = ctx.state::<Table>()?;
    let first = nums[0].0;
    let mut tries = t.tries.lock().map_err(|_| TaskError::fatal("lock"))?;
    let n = tries.entry(first).or_default();
    *n += 1;
    if first == poison || *n == 1 {
        return Err(TaskError::retry(format!(
            "batch at {first} failed (try {n})"
        )));
    }
    Ok(())
}

#[tokio::test]
async fn every_batch_failing_once_still_finishes_with_two_attempts() {
    let h = Harness::new().state(Table {
        n: 500,
        tries: Mutex::default(),
    });
    let run = fails_each_batch_once::start(&h.queue(), All, -1)
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    let it = h.queue().iteration(run).await.expect("progress");
    assert_eq!(it.state, RunState::Done, "{:?}", it.error);
    assert_eq!(it.processed, 500);
    assert_eq!(it.batches, 50);
    assert_eq!(report.count("retry"), 50, "each batch failed once");
    assert_eq!(report.count("dead"), 0);
}

#[tokio::test]
async fn a_batch_that_keeps_failing_goes_dead_after_max_attempts_at_its_cursor() {
    let h = Harness::new().state(Table {
        n: 100,
        tries: Mutex::default(),
    });
    let run = fails_each_batch_once::start(&h.queue(), All, 51)
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    let it = h.queue().iteration(run).await.expect("progress");
    assert_eq!(it.state, RunState::Dead);
    assert_eq!(
        it.processed, 50,
        "stopped at the poisoned batch, nothing skipped"
    );
    assert_eq!(it.cursor, Some(serde_json::json!(50)));
    assert!(it.error.unwrap_or_default().contains("batch at 51 failed"));
    assert_eq!(report.count("dead"), 1);
}
