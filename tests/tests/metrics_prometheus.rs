//! `taskq_runtime::metrics::install_prometheus` (feature `prometheus`): the handle's
//! `render()` is the text a `/metrics` route serves. The recorder is global: one test.

use std::sync::Arc;
use std::time::Duration;

use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::{task, Queue, Store, TaskError, TaskState, Worker};
use taskq_tests::wait_until;

#[task(queue = "prom")]
async fn ok() -> Result<(), TaskError> {
    Ok(())
}

#[tokio::test]
async fn the_prometheus_handle_renders_taskq_metrics() {
    let handle = taskq_runtime::metrics::install_prometheus().expect("install");
    // A second recorder cannot be installed.
    assert!(taskq_runtime::metrics::install_prometheus().is_err());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let id = ok::start(&q).await.expect("start");
    let w = Worker::builder(store.clone())
        .queues(["prom"])
        .build()
        .expect("worker")
        .spawn();
    wait_until("done", Duration::from_secs(20), || async {
        q.task(id).await.ok().flatten().map(|t| t.info.state) == Some(TaskState::Done)
    })
    .await;
    w.shutdown().await.expect("shutdown");
    // What a scrape handler does: refresh the gauge, then render.
    taskq_runtime::metrics::record_queue_depth(&q)
        .await
        .expect("queue depth");
    let text = handle.render();
    let labels = format!("task=\"{}::ok\",queue=\"prom\"", module_path!());
    for line in [
        "# TYPE taskq_tasks_done_total counter".to_string(),
        "# HELP taskq_tasks_done_total Attempts recorded done.".to_string(),
        format!("taskq_tasks_started_total{{{labels}}} 1"),
        format!("taskq_tasks_claimed_total{{{labels}}} 1"),
        format!("taskq_tasks_done_total{{{labels}}} 1"),
        format!("taskq_attempt_duration_seconds_count{{{labels}}} 1"),
        format!("taskq_start_to_run_seconds_count{{{labels}}} 1"),
        "taskq_queue_depth{queue=\"prom\",state=\"done\"} 1".to_string(),
        "taskq_queue_depth{queue=\"prom\",state=\"pending\"} 0".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line `{line}` in:\n{text}"
        );
    }
}
