//! Issue 7, item 8: an iterative run ends only when its model has nothing after the
//! cursor, not at the first batch shorter than `batch_size`. The model pages an API that
//! never returns more than 50 entities per call; the task asks for 200. On every store,
//! through the test harness.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use taskq_runtime::store::RunState;
use taskq_runtime::testing::Harness;
use taskq_runtime::{iterative_task, Context, Store, TaskError};
use taskq_tests::models::{AllListings, Catalogue, Listing};

/// Every id processed, in order.
#[derive(Default)]
struct Seen(Mutex<Vec<i64>>);

#[iterative_task(model = Listing, batch_size = 200, queue = "listings")]
async fn walk_listings(ctx: Context, listings: Vec<Listing>) -> Result<(), TaskError> {
    let seen = ctx.state::<Arc<Seen>>()?;
    seen.0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(listings.iter().map(|l| l.id));
    Ok(())
}

async fn every_entity_once_through_short_batches(store: Arc<dyn Store>) {
    let catalogue = Arc::new(Catalogue::new(1_000, 50));
    let seen = Arc::new(Seen::default());
    let h = Harness::with_store(store)
        .state(catalogue.clone())
        .state(seen.clone());
    let q = h.queue();
    let run = walk_listings::start(&q, AllListings).await.expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(report.count("done"), 1, "{:?}", report.runs);

    let ids = seen.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for id in &ids {
        *counts.entry(*id).or_default() += 1;
    }
    assert_eq!(ids.len(), 1_000, "processed {} entities", ids.len());
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), catalogue.ids);
    assert!(counts.values().all(|n| *n == 1), "each exactly once");

    let it = q.iteration(run).await.expect("progress");
    assert_eq!(it.state, RunState::Done, "{it:?}");
    assert_eq!(it.processed, 1_000);
    assert_eq!(it.batches, 20, "twenty pages of 50");
    assert_eq!(it.cursor, Some(serde_json::json!(1_000)));
    // Twenty pages, then one call that finds nothing after the cursor ends the run; every
    // call asked for the task's batch size.
    let limits = catalogue.limits.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(limits.len(), 21, "{limits:?}");
    assert!(limits.iter().all(|l| *l == 200), "{limits:?}");
}

#[tokio::test]
async fn short_batches_on_memory() {
    every_entity_once_through_short_batches(taskq_tests::memory_store().await).await;
}

#[tokio::test]
async fn short_batches_on_sqlite() {
    every_entity_once_through_short_batches(taskq_tests::sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_batches_on_postgres() {
    every_entity_once_through_short_batches(taskq_tests::postgres_store().await).await;
}
