//! Retention from the user's side (issue 10): `Queue::prune` on virtual time, a worker
//! that does not prune, the worker's setting checked. The store rules are conformance
//! cases (`tests/src/conformance.rs`), run on every store.

use std::time::Duration;

use taskq_runtime::testing::Harness;
use taskq_runtime::{task, QueueConfig, Retention, TaskError, TaskState, Worker};

#[task(queue = "mail")]
async fn mail(n: u32) -> Result<(), TaskError> {
    if n == 0 {
        return Err(TaskError::fatal("no recipient"));
    }
    Ok(())
}

/// The management call prunes on the queue's clock and says what it removed, by state;
/// a queue configured to keep everything is left alone.
#[tokio::test]
async fn queue_prune_removes_what_retention_no_longer_keeps(
) -> Result<(), Box<dyn std::error::Error>> {
    let h = Harness::new();
    let q = h.queue();
    let ids = q.start_many((0..4).map(mail::builder)).await?;
    let kept = mail::builder(7).queue("archive").start(&q).await?;
    q.configure(
        "archive",
        QueueConfig {
            retention: Some(Retention::OFF),
            ..QueueConfig::default()
        },
    )
    .await?;
    let report = h.drain().await?;
    assert_eq!((report.count("done"), report.count("failed")), (4, 1));

    assert!(q.prune().await?.is_empty(), "nothing is a day old yet");
    h.advance(Duration::from_secs(24 * 3600));
    let pruned = q.prune().await?;
    assert_eq!(pruned.tasks, vec![(TaskState::Done, 3)], "{pruned:?}");
    for id in &ids[1..] {
        assert!(q.task(*id).await?.is_none());
    }
    assert!(
        q.task(ids[0]).await?.is_some(),
        "the failed one is kept a week"
    );
    h.advance(Duration::from_secs(6 * 24 * 3600));
    assert_eq!(q.prune().await?.count(TaskState::Failed), 1);
    assert!(q.task(ids[0]).await?.is_none());
    assert!(
        q.task(kept).await?.is_some(),
        "retention is off for `archive`"
    );
    Ok(())
}

/// A worker told not to prune leaves prunable tasks alone, however long it runs.
#[tokio::test]
async fn a_worker_with_pruning_off_does_not_prune() -> Result<(), Box<dyn std::error::Error>> {
    let h = Harness::new();
    let q = h.queue();
    let id = mail::start(&q, 1).await?;
    h.drain().await?;
    h.advance(Duration::from_secs(30 * 24 * 3600));
    let worker = Worker::builder(q.store().clone())
        .clock(h.clock().clone())
        .prune(false)
        .prune_interval(Duration::from_millis(10))
        .build()?
        .spawn();
    // Twenty prune intervals and more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.shutdown().await?;
    assert!(q.task(id).await?.is_some());
    // The same store and clock prune as soon as asked.
    assert_eq!(q.prune().await?.total_tasks(), 1);
    Ok(())
}

#[tokio::test]
async fn a_prune_interval_below_10ms_is_refused() {
    let h = Harness::new();
    let e = Worker::builder(h.store().clone())
        .prune_interval(Duration::from_millis(1))
        .build()
        .expect_err("refused");
    assert!(e.to_string().contains("prune_interval"), "{e}");
    // Off, the interval does not matter.
    Worker::builder(h.store().clone())
        .prune(false)
        .prune_interval(Duration::ZERO)
        .build()
        .expect("a worker that does not prune");
}
